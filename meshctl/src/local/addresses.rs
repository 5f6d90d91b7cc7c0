//! Which address a new pod or a new service's virtual IP gets in the mesh's subnet.
//!
//! Pods count up from the subnet's second host address (the first is the bridge's);
//! virtual IPs count down from its last (`.254`, `.253`, … in a /24). Both share the
//! one subnet until they meet, and then the next `run` fails and says so.
//!
//! Why virtual IPs come from the pod subnet rather than a range of their own, as
//! Kubernetes' cluster IPs do: a VIP must never be routed off this host. Every pod
//! reaches its subnet on its own link, so a connection to a VIP that no sidecar takes
//! (the sidecar is down or not started yet, or the caller is the proxy's own uid)
//! asks for the address on the bridge, finds nobody and fails right there. An address
//! outside the subnet would follow the pod's default route to the host, which (with
//! `ip_forward` on, as on most container hosts) would send it on towards whoever owns
//! that address out there.

use std::net::Ipv4Addr;

use trellis_netns::Ipv4Cidr;

/// The lowest free host index from 2 up, and its address; `None` when none is free.
pub fn pod_address(subnet: Ipv4Cidr, taken: &[Ipv4Addr]) -> Option<(u32, Ipv4Addr)> {
    (2..=last_index(subnet)?)
        .filter_map(|index| Some((index, subnet.host(index)?.addr())))
        .find(|(_, ip)| !taken.contains(ip))
}

/// The highest free host address, counting down; `None` when none is free.
pub fn service_vip(subnet: Ipv4Cidr, taken: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    (2..=last_index(subnet)?)
        .rev()
        .filter_map(|index| Some(subnet.host(index)?.addr()))
        .find(|ip| !taken.contains(ip))
}

/// The index of the subnet's last host address (the one before the broadcast).
fn last_index(subnet: Ipv4Cidr) -> Option<u32> {
    let size = 1u64 << (32 - u32::from(subnet.prefix()));
    u32::try_from(size.checked_sub(2)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 199, 0, last)
    }

    #[test]
    fn pods_count_up_from_two_and_vips_count_down_from_the_last_host() {
        let subnet: Ipv4Cidr = "10.199.0.0/24".parse().unwrap();
        assert_eq!(pod_address(subnet, &[]), Some((2, ip(2))));
        assert_eq!(pod_address(subnet, &[ip(2), ip(254)]), Some((3, ip(3))));
        assert_eq!(service_vip(subnet, &[]), Some(ip(254)));
        assert_eq!(service_vip(subnet, &[ip(2), ip(254)]), Some(ip(253)));
    }

    #[test]
    fn a_freed_address_is_taken_again_and_a_full_subnet_has_none_left() {
        // A /29: the bridge .1, then .2 to .6 for pods and VIPs.
        let subnet: Ipv4Cidr = "10.199.0.0/29".parse().unwrap();
        let pods = [ip(2), ip(4)];
        let vips = [ip(6), ip(5)];
        let taken: Vec<Ipv4Addr> = pods.iter().chain(&vips).copied().collect();
        assert_eq!(pod_address(subnet, &taken), Some((3, ip(3))));
        assert_eq!(service_vip(subnet, &taken), Some(ip(3)));
        let full: Vec<Ipv4Addr> = (2..=6).map(ip).collect();
        assert_eq!(pod_address(subnet, &full), None);
        assert_eq!(service_vip(subnet, &full), None);
    }
}
