//! Reading the TCP payloads out of a classic pcap file, and TLS records out of a
//! reassembled stream: enough to assert what a wire carried.

use std::net::{Ipv4Addr, SocketAddrV4};

/// One captured TCP segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSegment {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub seq: u32,
    pub syn: bool,
    pub payload: Vec<u8>,
}

const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_LINUX_SLL: u32 = 113;

/// Every IPv4 TCP segment in a pcap file (microsecond or nanosecond, either byte order).
pub fn tcp_segments(pcap: &[u8]) -> Result<Vec<TcpSegment>, String> {
    let magic = pcap.get(..4).ok_or("shorter than a pcap header")?;
    let big_endian = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => false,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => true,
        _ => {
            return Err(format!(
                "not a pcap file (magic {magic:02x?}); pcapng is not read"
            ));
        }
    };
    let u32_at = |bytes: &[u8], at: usize| -> Option<u32> {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    let link_type = u32_at(pcap, 20).ok_or("truncated pcap header")?;
    let link_header = match link_type {
        LINKTYPE_ETHERNET => 14,
        LINKTYPE_LINUX_SLL => 16,
        other => return Err(format!("link type {other} is not read")),
    };
    let mut segments = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let captured = u32_at(pcap, at + 8).ok_or("truncated record header")? as usize;
        let frame = pcap
            .get(at + 16..at + 16 + captured)
            .ok_or("truncated packet (capture cut short?)")?;
        at += 16 + captured;
        if let Some(segment) = parse_frame(frame, link_header) {
            segments.push(segment);
        }
    }
    Ok(segments)
}

/// The IPv4/TCP inside one frame; `None` for anything else (ARP, IPv6, UDP...).
fn parse_frame(frame: &[u8], link_header: usize) -> Option<TcpSegment> {
    let ethertype = u16::from_be_bytes(frame.get(link_header - 2..link_header)?.try_into().ok()?);
    if ethertype != 0x0800 {
        return None;
    }
    let ip = frame.get(link_header..)?;
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if ip.first()? >> 4 != 4 || *ip.get(9)? != 6 {
        return None;
    }
    // The total length, not the frame's, ends the packet: short frames carry padding.
    let total = usize::from(u16::from_be_bytes(ip.get(2..4)?.try_into().ok()?));
    let ip = ip.get(..total.min(ip.len()))?;
    let src_ip = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst_ip = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let tcp = ip.get(ihl..)?;
    let port = |at: usize| Some(u16::from_be_bytes(tcp.get(at..at + 2)?.try_into().ok()?));
    let data_offset = usize::from(tcp.get(12)? >> 4) * 4;
    Some(TcpSegment {
        src: SocketAddrV4::new(src_ip, port(0)?),
        dst: SocketAddrV4::new(dst_ip, port(2)?),
        seq: u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?),
        syn: tcp.get(13)? & 0x02 != 0,
        payload: tcp.get(data_offset..)?.to_vec(),
    })
}

/// The bytes `from` sent to `to`, in sequence order, each byte once (retransmissions
/// are dropped). Stops at a gap: what follows it could not be read in order anyway.
pub fn stream(segments: &[TcpSegment], from: SocketAddrV4, to: SocketAddrV4) -> Vec<u8> {
    let one_way: Vec<&TcpSegment> = segments
        .iter()
        .filter(|s| s.src == from && s.dst == to)
        .collect();
    let Some(first) = one_way
        .iter()
        .find(|s| s.syn)
        .map(|s| s.seq.wrapping_add(1))
        .or_else(|| {
            one_way
                .iter()
                .find(|s| !s.payload.is_empty())
                .map(|s| s.seq)
        })
    else {
        return Vec::new();
    };
    let mut pieces: Vec<(u32, &[u8])> = one_way
        .iter()
        .filter(|s| !s.payload.is_empty())
        .map(|s| (s.seq.wrapping_sub(first), s.payload.as_slice()))
        .collect();
    pieces.sort_by_key(|(offset, _)| *offset);
    let mut bytes = Vec::new();
    for (offset, payload) in pieces {
        let offset = offset as usize;
        let end = offset + payload.len();
        if offset > bytes.len() {
            break;
        }
        if end > bytes.len() {
            bytes.extend_from_slice(&payload[bytes.len() - offset..]);
        }
    }
    bytes
}

/// A TLS record header: content type (0x16 handshake, 0x17 application data, ...) and
/// the legacy version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsRecord {
    pub content_type: u8,
    pub version: u16,
    pub len: usize,
}

/// Splits a stream into TLS records; an error at the first bytes that are not one
/// (plaintext would fail at once: its first byte is no TLS content type).
pub fn tls_records(stream: &[u8]) -> Result<Vec<TlsRecord>, String> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let header = stream
            .get(at..at + 5)
            .ok_or_else(|| format!("a partial record header at byte {at}"))?;
        let record = TlsRecord {
            content_type: header[0],
            version: u16::from_be_bytes([header[1], header[2]]),
            len: usize::from(u16::from_be_bytes([header[3], header[4]])),
        };
        let valid_type = (0x14..=0x17).contains(&record.content_type);
        if !valid_type || record.version >> 8 != 0x03 || record.len > (1 << 14) + 256 {
            return Err(format!(
                "not a TLS record at byte {at}: {:02x?}",
                &stream[at..(at + 16).min(stream.len())]
            ));
        }
        // The last record may be cut off by the end of the capture.
        at += 5 + record.len;
        records.push(record);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One Ethernet/IPv4/TCP frame as a capture stores it.
    fn frame(src: SocketAddrV4, dst: SocketAddrV4, seq: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let total = u16::try_from(20 + 20 + payload.len()).unwrap();
        f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0]);
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&src.ip().octets());
        f.extend_from_slice(&dst.ip().octets());
        f.extend_from_slice(&src.port().to_be_bytes());
        f.extend_from_slice(&dst.port().to_be_bytes());
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&[
            0,
            0,
            0,
            0,
            0x50,
            if syn { 0x02 } else { 0x18 },
            0xff,
            0xff,
            0,
            0,
            0,
            0,
        ]);
        f.extend_from_slice(payload);
        f
    }

    fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut file = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        file.extend_from_slice(&[0; 8]);
        file.extend_from_slice(&262_144u32.to_le_bytes());
        file.extend_from_slice(&1u32.to_le_bytes());
        for f in frames {
            file.extend_from_slice(&[0; 8]);
            let len = u32::try_from(f.len()).unwrap().to_le_bytes();
            file.extend_from_slice(&len);
            file.extend_from_slice(&len);
            file.extend_from_slice(f);
        }
        file
    }

    #[test]
    fn a_stream_is_reassembled_in_order_without_retransmissions() {
        let c: SocketAddrV4 = "10.0.0.2:40000".parse().unwrap();
        let s: SocketAddrV4 = "10.0.0.3:7070".parse().unwrap();
        let file = pcap(&[
            frame(c, s, 999, true, b""),
            frame(c, s, 1005, false, b"world"),
            frame(c, s, 1000, false, b"hello"),
            frame(c, s, 1000, false, b"hello"),
            frame(s, c, 5000, false, b"other way"),
        ]);
        let segments = tcp_segments(&file).unwrap();
        assert_eq!(segments.len(), 5);
        assert_eq!(stream(&segments, c, s), b"helloworld");
        assert_eq!(stream(&segments, s, c), b"other way");
    }

    #[test]
    fn tls_records_are_told_from_plaintext() {
        let mut tls = vec![0x16, 0x03, 0x01, 0x00, 0x02, 1, 2];
        tls.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x01, 9]);
        let records = tls_records(&tls).unwrap();
        assert_eq!(
            records.iter().map(|r| r.content_type).collect::<Vec<_>>(),
            [0x16, 0x17]
        );
        assert_eq!(records[1].version, 0x0303);
        assert!(tls_records(b"hello #1 from the client").is_err());
    }
}
