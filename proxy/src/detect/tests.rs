//! Detection against what real clients send (curl, an h2c client, rustls), and
//! against what a confused or hostile client might send instead.
//!
//! Most tests feed the bytes and then keep the connection open and silent under
//! paused time: a detection that wanted one byte more than it needed would end in
//! the timeout, and `timed_out` would say so.

use std::sync::Arc;

use super::*;

const TIMEOUT: Duration = Duration::from_secs(10);

/// What curl 8 sends for `curl http://localhost:8080/`.
const CURL: &[u8] =
    b"GET / HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";

/// What an h2c prior-knowledge client (hyper, `curl --http2-prior-knowledge`) sends
/// first: the preface, then an empty SETTINGS frame.
fn h2_preface() -> Vec<u8> {
    let mut bytes = H2_PREFACE.to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 0x04, 0, 0, 0, 0, 0]);
    bytes
}

fn client_hello(alpn: &[&[u8]]) -> Vec<u8> {
    let mut config = rustls::ClientConfig::builder_with_provider(trellis_identity::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), "server.example".try_into().unwrap())
            .unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

/// A client that sends `bytes` at most `step` bytes per read, then neither sends
/// more nor closes.
struct Trickle {
    bytes: Vec<u8>,
    pos: usize,
    step: usize,
}

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos == this.bytes.len() {
            // Silent from here on; only the detection timeout ends the wait.
            return Poll::Pending;
        }
        let n = this
            .step
            .min(buf.remaining())
            .min(this.bytes.len() - this.pos);
        buf.put_slice(&this.bytes[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// Detects `bytes` arriving `step` at a time, then reads them back through the
/// returned stream (from its replayed prefix, then from the client).
async fn detect_fed(bytes: &[u8], step: usize) -> (Detection, Vec<u8>) {
    let client = Trickle {
        bytes: bytes.to_vec(),
        pos: 0,
        step,
    };
    let (detection, mut replay) = detect(client, TIMEOUT).await.unwrap();
    let mut seen = vec![0; bytes.len()];
    // Bytes lost by detection would leave this read waiting on the silent client.
    tokio::time::timeout(TIMEOUT, replay.read_exact(&mut seen))
        .await
        .expect("every byte sent can be read back")
        .unwrap();
    (detection, seen)
}

fn decided(protocol: Protocol) -> Detection {
    Detection {
        protocol,
        timed_out: false,
    }
}

/// Every protocol from realistic bytes: the decision, and the stream replayed intact
/// afterwards, whether the bytes arrive in one read or one byte per read.
#[tokio::test(start_paused = true)]
async fn each_protocol_is_told_from_real_bytes_and_replayed_intact() {
    let cases = [
        (
            "mesh TLS",
            client_hello(&[b"h2", MESH_ALPN]),
            Protocol::MeshTls,
        ),
        (
            "app TLS",
            client_hello(&[b"h2", b"http/1.1"]),
            Protocol::Tls,
        ),
        ("app TLS, no ALPN", client_hello(&[]), Protocol::Tls),
        ("curl", CURL.to_vec(), Protocol::Http1),
        ("h2c", h2_preface(), Protocol::Http2),
        ("ssh", b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(), Protocol::Opaque),
        ("redis", b"*1\r\n$4\r\nPING\r\n".to_vec(), Protocol::Opaque),
        (
            "postgres SSLRequest",
            vec![0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f],
            Protocol::Opaque,
        ),
    ];
    for (name, bytes, protocol) in cases {
        for step in [usize::MAX, 1] {
            let (detection, replayed) = detect_fed(&bytes, step).await;
            assert_eq!(detection, decided(protocol), "{name}, step {step}");
            assert_eq!(replayed, bytes, "{name}, step {step}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn request_lines_of_every_form_are_http1() {
    for line in [
        &b"HEAD /healthz?verbose=1 HTTP/1.0\r\n"[..],
        b"POST /api/v1/items HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        b"GET http://example.com/ HTTP/1.1\r\n",
        b"CONNECT example.com:443 HTTP/1.1\r\n",
        b"OPTIONS * HTTP/1.1\r\n",
        b"PRI /not-the-preface HTTP/1.1\r\n",
        b"M-SEARCH * HTTP/1.1\r\n",
    ] {
        let (detection, replayed) = detect_fed(line, 1).await;
        assert_eq!(
            detection,
            decided(Protocol::Http1),
            "{}",
            line.escape_ascii()
        );
        assert_eq!(replayed, line);
    }
}

#[tokio::test(start_paused = true)]
async fn near_misses_of_a_request_line_are_opaque_without_waiting() {
    for bytes in [
        &b"GET / HTTP/2.0\r\n"[..],
        b"GET / HTTP/1.1\n",
        b"GET  / HTTP/1.1\r\n",
        b"GET / HTTP/1.1 \r\n",
        b"GET /a\tb HTTP/1.1\r\n",
        b" GET / HTTP/1.1\r\n",
        b"GET\r\n",
        b"hello\n",
        b"PRI * HTTP/2.0\r\n\r\nXX",
    ] {
        let (detection, replayed) = detect_fed(bytes, 1).await;
        assert_eq!(
            detection,
            decided(Protocol::Opaque),
            "{}",
            bytes.escape_ascii()
        );
        assert_eq!(replayed, bytes);
    }
}

#[tokio::test(start_paused = true)]
async fn a_byte_that_starts_no_protocol_decides_opaque_at_once() {
    let started = tokio::time::Instant::now();
    for first in [0x00, 0x05, b'\r', b' ', 0x80, 0xff] {
        assert_eq!(detect_fed(&[first], 1).await.0, decided(Protocol::Opaque));
    }
    // A record that is not a TLS handshake, or claims more than TLS allows.
    for tls_like in [
        &[0x16, 0x02][..],
        &[0x16, 0x03, 0x01, 0xff, 0xff],
        &[0x16, 0x03, 0x01, 0x00, 0x30, 0x02],
    ] {
        assert_eq!(detect_fed(tls_like, 1).await.0, decided(Protocol::Opaque));
    }
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "nothing waited for a timer"
    );
}

#[test]
fn a_partial_h2_preface_waits_instead_of_passing_for_http1() {
    for cut in 1..H2_PREFACE.len() {
        assert_eq!(classify(&H2_PREFACE[..cut]), None, "cut at {cut}");
    }
    assert_eq!(classify(H2_PREFACE), Some(Protocol::Http2));
}

#[tokio::test(start_paused = true)]
async fn a_client_stalled_inside_the_h2_preface_times_out_with_its_bytes_kept() {
    let (detection, replayed) = detect_fed(b"PRI * HTT", 1).await;
    assert_eq!(
        detection,
        Detection {
            protocol: Protocol::Opaque,
            timed_out: true
        }
    );
    assert_eq!(replayed, b"PRI * HTT");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_waits_for_the_server_times_out_opaque() {
    let (_client, server) = tokio::io::duplex(1024);
    let started = tokio::time::Instant::now();
    let (detection, _) = detect(server, TIMEOUT).await.unwrap();
    assert_eq!(
        detection,
        Detection {
            protocol: Protocol::Opaque,
            timed_out: true
        }
    );
    assert_eq!(started.elapsed(), TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_closes_before_deciding_is_opaque_not_timed_out() {
    let (mut client, server) = tokio::io::duplex(1024);
    tokio::io::AsyncWriteExt::write_all(&mut client, b"GET / HT")
        .await
        .unwrap();
    drop(client);
    let (detection, mut replay) = detect(server, TIMEOUT).await.unwrap();
    assert_eq!(detection, decided(Protocol::Opaque));
    let mut seen = Vec::new();
    replay.read_to_end(&mut seen).await.unwrap();
    assert_eq!(seen, b"GET / HT");
}

#[tokio::test(start_paused = true)]
async fn an_over_long_request_line_goes_opaque_at_the_cap_not_the_timeout() {
    let mut long = b"GET /".to_vec();
    long.extend(std::iter::repeat_n(b'a', MAX_REQUEST_LINE));
    long.extend_from_slice(b" HTTP/1.1\r\n");
    let (detection, replayed) = detect_fed(&long, 1000).await;
    assert_eq!(detection, decided(Protocol::Opaque));
    assert_eq!(replayed, long);

    // Just under the cap is still a request line.
    let mut long_ok = b"GET /".to_vec();
    long_ok.extend(std::iter::repeat_n(b'a', MAX_REQUEST_LINE - 32));
    long_ok.extend_from_slice(b" HTTP/1.1\r\n");
    assert_eq!(detect_fed(&long_ok, 1000).await.0, decided(Protocol::Http1));

    // A method past its cap does not wait for the line cap.
    let shout = vec![b'A'; MAX_METHOD + 1];
    assert_eq!(detect_fed(&shout, 1).await.0, decided(Protocol::Opaque));
}

#[tokio::test(start_paused = true)]
async fn truncated_or_lying_hellos_are_opaque_not_a_panic() {
    let hello = client_hello(&[MESH_ALPN]);
    for cut in [1, 3, 5, 9, 40, hello.len() - 1] {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        tokio::io::AsyncWriteExt::write_all(&mut client, &hello[..cut])
            .await
            .unwrap();
        drop(client);
        let (detection, mut replay) = detect(server, TIMEOUT).await.unwrap();
        assert_eq!(detection, decided(Protocol::Opaque), "cut at {cut}");
        let mut seen = Vec::new();
        replay.read_to_end(&mut seen).await.unwrap();
        assert_eq!(seen, hello[..cut]);
    }
    // A handshake message whose inner lengths overflow the record.
    let mut liar = hello.clone();
    liar[6..9].copy_from_slice(&[0xff, 0xff, 0xff]);
    assert_eq!(detect_fed(&liar, 7).await.0, decided(Protocol::Opaque));
    // A whole record of garbage after a ClientHello type byte.
    let mut junk = vec![0x16, 0x03, 0x01, 0x01, 0x00, 0x01];
    junk.extend(std::iter::repeat_n(0xab, 255));
    assert_eq!(detect_fed(&junk, 64).await.0, decided(Protocol::Opaque));
}
