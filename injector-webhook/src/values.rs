//! The value syntaxes operators write in annotations and in the mesh config: port lists
//! (`25,443,8000-8100`), network lists (`10.0.0.0/8,fd00::/8`), Kubernetes resource
//! quantities (`100m`, `64Mi`) and TCP congestion controls (`reno`, `keep`).
//!
//! They are checked here, at admission, with the same rules `trellis-proxy-init` and
//! the API server apply later: a value that would fail there fails here instead, with
//! the annotation's name, before a pod is created that can never start. Errors are
//! plain reasons; the caller adds the annotation or field they came from.

use std::fmt;
use std::net::IpAddr;

/// One entry of a port list: a port or an inclusive range, as proxy-init takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// A comma-separated list of ports and ranges, in the order given, without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortList(Vec<PortRange>);

impl PortList {
    /// An empty or blank string is the empty list; whitespace around entries is ignored.
    pub fn parse(text: &str) -> Result<PortList, String> {
        let mut list = PortList::default();
        for entry in entries(text) {
            let range = match entry.split_once('-') {
                Some((first, last)) => {
                    let (first, last) = (port(first.trim())?, port(last.trim())?);
                    if first > last {
                        return Err(format!("range {entry:?} ends before it starts"));
                    }
                    PortRange { first, last }
                }
                None => {
                    let port = port(entry)?;
                    PortRange {
                        first: port,
                        last: port,
                    }
                }
            };
            list.push(range);
        }
        Ok(list)
    }

    /// The entries of `self`, then those of `other` not already in it.
    pub fn union(&self, other: &PortList) -> PortList {
        let mut list = self.clone();
        for range in &other.0 {
            list.push(*range);
        }
        list
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The single ports of the list, or an error naming the first range: the proxy's
    /// `--opaque-ports` takes ports only.
    pub fn single_ports(&self) -> Result<Vec<u16>, String> {
        self.0
            .iter()
            .map(|range| match range.first == range.last {
                true => Ok(range.first),
                false => Err(format!("{range} is a range; list single ports")),
            })
            .collect()
    }

    fn push(&mut self, range: PortRange) {
        if !self.0.contains(&range) {
            self.0.push(range);
        }
    }
}

impl fmt::Display for PortList {
    /// `25,443,8000-8100`: the spelling proxy-init's port flags accept.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        join(f, &self.0)
    }
}

/// A port, 1–65535, in decimal digits only (no sign, no spaces inside).
pub fn port(text: &str) -> Result<u16, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not a port number"));
    }
    match text.parse::<u32>() {
        Ok(port @ 1..=65535) => Ok(port as u16),
        _ => Err(format!("port {text} is out of range 1-65535")),
    }
}

/// A comma-separated list of networks of either family (`10.0.0.0/8`, `fd00::/8`, or a
/// bare address meaning one host), in the order given, without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidrList(Vec<String>);

impl CidrList {
    pub fn parse(text: &str) -> Result<CidrList, String> {
        let mut list = CidrList::default();
        for entry in entries(text) {
            let (addr, prefix) = match entry.split_once('/') {
                Some((addr, prefix)) => (addr, Some(prefix)),
                None => (entry, None),
            };
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("{entry:?} is not an IP address or network"))?;
            let width = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => width,
                Some(digits)
                    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    match digits.parse::<u8>() {
                        Ok(prefix) if prefix <= width => prefix,
                        _ => return Err(format!("{entry:?}: the prefix must be 0-{width}")),
                    }
                }
                Some(_) => return Err(format!("{entry:?}: the prefix must be 0-{width}")),
            };
            // Written with its prefix, as proxy-init (and iptables-save) will show it.
            let cidr = format!("{addr}/{prefix}");
            if !list.0.contains(&cidr) {
                list.0.push(cidr);
            }
        }
        Ok(list)
    }

    /// The entries of `self`, then those of `other` not already in it.
    pub fn union(&self, other: &CidrList) -> CidrList {
        let mut list = self.clone();
        for cidr in &other.0 {
            if !list.0.contains(cidr) {
                list.0.push(cidr.clone());
            }
        }
        list
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for CidrList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        join(f, &self.0)
    }
}

/// A Kubernetes resource quantity (`100m`, `1.5`, `64Mi`, `1e3`), returned as its value
/// in base units so that a request can be compared with a limit.
///
/// The grammar is the API server's: a non-negative decimal number, then at most one
/// suffix, binary (`Ki`…`Ei`), decimal (`n`, `u`, `m`, `k`, `M`…`E`) or an exponent
/// (`e3`, `E-2`). Negative quantities are refused: no request or limit may be negative.
pub fn quantity(text: &str) -> Result<f64, String> {
    let bad = || format!("{text:?} is not a quantity (such as 100m, 0.5, 64Mi or 1G)");
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let digits = number.strip_prefix('+').unwrap_or(number);
    let valid_number = !digits.is_empty()
        && digits.bytes().any(|b| b.is_ascii_digit())
        && digits.bytes().filter(|&b| b == b'.').count() <= 1
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if !valid_number {
        return Err(bad());
    }
    let value: f64 = digits.parse().map_err(|_| bad())?;
    let multiplier = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent => {
            let digits = exponent
                .strip_prefix(['e', 'E'])
                .ok_or_else(bad)?
                .trim_start_matches(['+', '-']);
            let sign_len = exponent.len() - 1 - digits.len();
            if digits.is_empty() || sign_len > 1 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let exponent: i32 = exponent[1..].parse().map_err(|_| bad())?;
            10f64.powi(exponent)
        }
    };
    Ok(value * multiplier)
}

fn entries(text: &str) -> impl Iterator<Item = &str> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
}

fn join<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lists_keep_order_drop_duplicates_and_refuse_what_proxy_init_would() {
        let list = PortList::parse(" 443, 25,8000-8100,443 ").unwrap();
        assert_eq!(list.to_string(), "443,25,8000-8100");
        assert_eq!(PortList::parse("").unwrap(), PortList::default());
        for bad in ["70000", "0", "-1", "8100-8000", "http", "1-", "4 3"] {
            assert!(PortList::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            PortList::parse("70000").unwrap_err(),
            "port 70000 is out of range 1-65535"
        );
    }

    #[test]
    fn cidr_lists_take_both_families_and_bare_addresses() {
        let list = CidrList::parse("10.0.0.0/8, fd00::/8,192.0.2.7").unwrap();
        assert_eq!(list.to_string(), "10.0.0.0/8,fd00::/8,192.0.2.7/32");
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0/8",
            "10.0.0.0/",
            "example.com",
        ] {
            assert!(CidrList::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn quantities_follow_the_api_server_grammar() {
        assert_eq!(quantity("100m").unwrap(), 0.1);
        assert_eq!(quantity("64Mi").unwrap(), 64.0 * 1024.0 * 1024.0);
        assert_eq!(quantity("1.5").unwrap(), 1.5);
        assert_eq!(quantity("1e3").unwrap(), 1000.0);
        assert_eq!(quantity("2E-1").unwrap(), 0.2);
        assert_eq!(quantity("+1G").unwrap(), 1e9);
        for bad in [
            "", "-1", "1.2.3", "10MB", "Mi", "1 Gi", "1e", "1e+-3", ".", "abc",
        ] {
            assert!(quantity(bad).is_err(), "{bad:?} accepted");
        }
    }
}

/// What proxy-init's `--local-congestion-control` takes: `keep`, or the name of a TCP
/// congestion control, at most 15 letters, digits, `_` or `-` (the kernel's limit).
/// Whether the node's kernel has it, only the node can say.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(into = "String")]
pub struct CongestionControl(String);

impl CongestionControl {
    pub fn parse(text: &str) -> Result<CongestionControl, String> {
        let valid = !text.is_empty()
            && text.len() <= 15
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(CongestionControl(text.to_owned()))
        } else {
            Err(
                "must be keep or the name of a TCP congestion control such as reno or cubic \
                 (at most 15 letters, digits, _ or -)"
                    .to_owned(),
            )
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for CongestionControl {
    /// Reno: built into every kernel, and never paced as BBR paces.
    fn default() -> Self {
        CongestionControl("reno".to_owned())
    }
}

// Checked while the YAML scalar is read, so that the error carries the field's name,
// line and column.
impl<'de> serde::Deserialize<'de> for CongestionControl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = CongestionControl;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("keep or the name of a TCP congestion control")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
                CongestionControl::parse(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

impl From<CongestionControl> for String {
    fn from(value: CongestionControl) -> String {
        value.0
    }
}
