//! An IPv4 address together with the prefix length of its subnet.
//!
//! `ip addr add` wants exactly this (`10.199.0.2/24`), and the same value tells a
//! caller the subnet, its gateway and which host addresses remain.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::Error;

/// `10.199.0.2/24`: an interface address and the length of its network prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// `None` when `prefix` is over 32.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32).then_some(Ipv4Cidr { addr, prefix })
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The subnet's own address (host bits zero).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The `index`-th address of the subnet with the same prefix (`network() + index`),
    /// or `None` when it would be the broadcast address or fall outside the subnet.
    pub fn host(&self, index: u32) -> Option<Ipv4Cidr> {
        let size = 1u64 << (32 - u32::from(self.prefix));
        if index == 0 || u64::from(index) >= size.saturating_sub(1) {
            return None;
        }
        let addr = Ipv4Addr::from(u32::from(self.network()) + index);
        Some(Ipv4Cidr {
            addr,
            prefix: self.prefix,
        })
    }

    /// Whether `addr` lies in this subnet.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.mask() == u32::from(self.network())
    }

    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self, Error> {
        let invalid = || Error::InvalidCidr {
            value: value.to_string(),
        };
        let (addr, prefix) = value.split_once('/').ok_or_else(invalid)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        Ipv4Cidr::new(addr, prefix).ok_or_else(invalid)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subnet_knows_its_network_and_hosts() {
        let subnet: Ipv4Cidr = "10.199.0.0/24".parse().unwrap();
        assert_eq!(subnet.network(), Ipv4Addr::new(10, 199, 0, 0));
        assert_eq!(subnet.host(1).unwrap().to_string(), "10.199.0.1/24");
        assert_eq!(
            subnet.host(254).unwrap().addr(),
            Ipv4Addr::new(10, 199, 0, 254)
        );
        assert_eq!(subnet.host(255), None, "the broadcast address is no host");
        assert_eq!(subnet.host(0), None, "the network address is no host");
        assert!(subnet.contains(Ipv4Addr::new(10, 199, 0, 77)));
        assert!(!subnet.contains(Ipv4Addr::new(10, 199, 1, 77)));
    }

    #[test]
    fn an_interface_address_keeps_its_host_bits() {
        let gateway: Ipv4Cidr = "10.199.0.1/24".parse().unwrap();
        assert_eq!(gateway.addr(), Ipv4Addr::new(10, 199, 0, 1));
        assert_eq!(gateway.network(), Ipv4Addr::new(10, 199, 0, 0));
        assert_eq!(
            gateway.host(9).unwrap().addr(),
            Ipv4Addr::new(10, 199, 0, 9)
        );
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "10.199.0.1",
            "10.199.0.1/33",
            "10.199.0/24",
            "x/24",
            "10.0.0.1/",
        ] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad} should be refused");
        }
    }
}
