//! Address ranges as operators write them (`10.0.0.0/8,fd00::/8,192.0.2.7`) and the IP
//! family each belongs to.
//!
//! One flag carries both families, as a pod annotation would; each family's pass takes
//! its own entries. Host bits are cleared on parsing (`10.1.2.3/8` is `10.0.0.0/8`)
//! because that is what iptables stores and nftables insists on, so what we render is
//! what the kernel lists back.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::{CidrListError, Error, env_of};

/// An IP family: iptables and ip6tables are separate programs with separate tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    /// The loopback network: `127.0.0.0/8`, or `::1/128`.
    pub fn loopback(self) -> Cidr {
        match self {
            Family::V4 => Cidr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
            Family::V6 => Cidr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
        }
    }

    /// `IPv4` / `IPv6`, for logs and messages.
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// A network: an address with its host bits cleared, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `prefix` is clamped to the family's width; host bits of `addr` are cleared.
    pub fn new(addr: IpAddr, prefix: u8) -> Cidr {
        match addr {
            IpAddr::V4(v4) => {
                let prefix = prefix.min(32);
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                let network = Ipv4Addr::from(u32::from(v4) & mask);
                Cidr {
                    network: IpAddr::V4(network),
                    prefix,
                }
            }
            IpAddr::V6(v6) => {
                let prefix = prefix.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                let network = Ipv6Addr::from(u128::from(v6) & mask);
                Cidr {
                    network: IpAddr::V6(network),
                    prefix,
                }
            }
        }
    }

    /// `10.0.0.0/8`, `fd00::/8`, or a bare address, which is a one-host network.
    pub fn parse(text: &str) -> Result<Cidr, CidrListError> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrListError::NotAnAddress(text.to_owned()))?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                match digits.parse::<u8>() {
                    Ok(prefix) if prefix <= width => prefix,
                    _ => return Err(CidrListError::BadPrefix(text.to_owned())),
                }
            }
            Some(_) => return Err(CidrListError::BadPrefix(text.to_owned())),
        };
        Ok(Cidr::new(addr, prefix))
    }

    pub fn family(&self) -> Family {
        match self.network {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

impl fmt::Display for Cidr {
    /// Always with the prefix (`10.1.2.3/32`), as iptables-save and nft print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// A comma-separated list of networks of either family, in the order given, without
/// duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidrList(Vec<Cidr>);

impl CidrList {
    /// An empty or all-blank string is the empty list.
    pub fn parse(text: &str) -> Result<CidrList, CidrListError> {
        let mut cidrs = Vec::new();
        if text.trim().is_empty() {
            return Ok(CidrList(cidrs));
        }
        for entry in text.split(',').map(str::trim) {
            if entry.is_empty() {
                return Err(CidrListError::EmptyEntry);
            }
            let cidr = Cidr::parse(entry)?;
            if !cidrs.contains(&cidr) {
                cidrs.push(cidr);
            }
        }
        Ok(CidrList(cidrs))
    }

    /// [`CidrList::parse`] for the value of `flag`, with an error naming the flag and its
    /// environment variable.
    pub fn for_flag(flag: &'static str, text: &str) -> Result<CidrList, Error> {
        CidrList::parse(text).map_err(|reason| Error::InvalidCidrs {
            flag,
            env: env_of(flag),
            value: text.to_owned(),
            reason,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries of one family, in order.
    pub fn of(&self, family: Family) -> impl Iterator<Item = Cidr> + '_ {
        self.0.iter().copied().filter(move |c| c.family() == family)
    }
}

impl fmt::Display for CidrList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cidrs: Vec<String> = self.0.iter().map(Cidr::to_string).collect();
        f.write_str(&cidrs.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> Vec<String> {
        let cidrs = CidrList::parse(text).expect("valid list");
        Family::BOTH
            .into_iter()
            .flat_map(|family| cidrs.of(family).map(|c| c.to_string()).collect::<Vec<_>>())
            .collect()
    }

    #[test]
    fn both_families_share_one_list_and_keep_their_order() {
        assert_eq!(
            list(" 10.0.0.0/8 , fd00::/8,192.168.1.0/24, 2001:db8::1"),
            [
                "10.0.0.0/8",
                "192.168.1.0/24",
                "fd00::/8",
                "2001:db8::1/128"
            ]
        );
        assert!(list("").is_empty());
    }

    #[test]
    fn host_bits_are_cleared_and_a_bare_address_is_one_host() {
        assert_eq!(list("10.1.2.3/8"), ["10.0.0.0/8"]);
        assert_eq!(list("10.1.2.3"), ["10.1.2.3/32"]);
        assert_eq!(list("fd00:1:2::3/48"), ["fd00:1:2::/48"]);
        assert_eq!(list("0.0.0.0/0,::/0"), ["0.0.0.0/0", "::/0"]);
        assert_eq!(list("10.0.0.0/8,10.9.9.9/8"), ["10.0.0.0/8"], "one entry");
    }

    #[test]
    fn malformed_entries_say_what_is_wrong() {
        let cases = [
            ("10.0.0.0/8,", CidrListError::EmptyEntry),
            ("10.0.0/8", CidrListError::NotAnAddress("10.0.0/8".into())),
            (
                "example.com",
                CidrListError::NotAnAddress("example.com".into()),
            ),
            (
                "10.0.0.0/33",
                CidrListError::BadPrefix("10.0.0.0/33".into()),
            ),
            ("fd00::/129", CidrListError::BadPrefix("fd00::/129".into())),
            ("10.0.0.0/", CidrListError::BadPrefix("10.0.0.0/".into())),
            (
                "10.0.0.0/+8",
                CidrListError::BadPrefix("10.0.0.0/+8".into()),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(CidrList::parse(text), Err(expected), "parsing {text:?}");
        }
    }

    #[test]
    fn the_error_names_the_flag_and_its_environment_variable() {
        let err = CidrList::for_flag("--skip-outbound-cidrs", "10.0.0.0/8,10.300.0.0/16")
            .expect_err("malformed");
        assert_eq!(
            err.to_string(),
            "invalid --skip-outbound-cidrs (env TRELLIS_SKIP_OUTBOUND_CIDRS) \
             \"10.0.0.0/8,10.300.0.0/16\": \"10.300.0.0/16\" is not an IP address; \
             expected e.g. 10.0.0.0/8,fd00::/8"
        );
        assert_eq!(err.exit_code(), crate::error::EXIT_BAD_CIDR);
    }

    #[test]
    fn each_family_knows_its_loopback() {
        assert_eq!(Family::V4.loopback().to_string(), "127.0.0.0/8");
        assert_eq!(Family::V6.loopback().to_string(), "::1/128");
    }
}
