//! The rules of one pod, as values: which connections return untouched and which are
//! redirected to the proxy, in order, for each IP family.
//!
//! Rules are data first and text second: `restore.rs` renders them for
//! `iptables-restore` and `nftables.rs` for `nft -f`, so both backends install the same
//! decisions in the same order, and a golden test of either checks both the decision
//! and its spelling. The reasons for each rule are in the crate documentation and the
//! README; the comments here say what each match is for.

use crate::cidr::{Cidr, Family};
use crate::ports::{PortList, PortSpec};
use crate::settings::Settings;

/// Which of Trellis's two chains a rule belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chain {
    /// Jumped to from `PREROUTING`: connections arriving at the pod.
    Inbound,
    /// Jumped to from `OUTPUT`: connections opened by processes in the pod.
    Outbound,
}

/// One rule of a Trellis chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub chain: Chain,
    /// All must match. Rendering order; a port match must come after [`Match::Tcp`].
    pub matches: Vec<Match>,
    pub target: Target,
    /// Rendered as `trellis/<comment>`: says in the listing why the rule is there.
    pub comment: &'static str,
}

/// What a rule matches on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Match {
    /// The proxy only handles TCP; UDP (DNS) and ICMP pass untouched.
    Tcp,
    /// Destination port in the list. iptables packs at most 15 slots into one
    /// `multiport` match, so its renderer may split one rule into several.
    DestinationPorts(PortList),
    UidOwner(u32),
    GidOwner(u32),
    OutInterface(&'static str),
    Destination(Cidr),
    NotDestination(Cidr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// Leave the Trellis chain: the connection continues as if Trellis were not there.
    Return,
    /// Rewrite the destination to this port on the pod itself (`REDIRECT`).
    Redirect(u16),
}

impl Rule {
    fn new(chain: Chain, matches: Vec<Match>, target: Target, comment: &'static str) -> Rule {
        Rule {
            chain,
            matches,
            target,
            comment,
        }
    }
}

/// The inbound chain, the same for both families, in order: the proxy's own ports,
/// skipped ports, redirect (all ports, or the listed ones).
pub(crate) fn inbound_rules(settings: &Settings) -> Vec<Rule> {
    let chain = Chain::Inbound;
    let mut rules = vec![skip_proxy_ports(chain, settings)];
    if !settings.skip_inbound_ports.is_empty() {
        rules.push(Rule::new(
            chain,
            vec![
                Match::Tcp,
                Match::DestinationPorts(settings.skip_inbound_ports.clone()),
            ],
            Target::Return,
            "skip-inbound-ports",
        ));
    }
    let redirect = Target::Redirect(settings.inbound_port);
    if settings.redirect_inbound_ports.is_empty() {
        rules.push(Rule::new(
            chain,
            vec![Match::Tcp],
            redirect,
            "redirect-inbound",
        ));
    } else {
        rules.push(Rule::new(
            chain,
            vec![
                Match::Tcp,
                Match::DestinationPorts(settings.redirect_inbound_ports.clone()),
            ],
            redirect,
            "redirect-inbound-ports",
        ));
    }
    rules
}

/// The outbound chain for `family`, in order: the proxy's own ports; the proxy calling
/// its own pod; the proxy's own traffic; loopback; skipped ports and networks; redirect
/// (everything, or the included networks).
pub(crate) fn outbound_rules(settings: &Settings, family: Family) -> Vec<Rule> {
    let chain = Chain::Outbound;
    let mut owners = vec![Match::UidOwner(settings.proxy_uid)];
    owners.extend(settings.proxy_gid.map(Match::GidOwner));

    let mut rules = vec![skip_proxy_ports(chain, settings)];
    // Before the owner RETURNs, which would otherwise take these connections: the proxy
    // dialling its own pod IP (the app called itself through its service) is sent to
    // its own inbound listener, which terminates the mesh TLS the app could not read.
    for owner in &owners {
        let comment = match owner {
            Match::GidOwner(_) => "proxy-gid-to-own-pod",
            _ => "proxy-uid-to-own-pod",
        };
        rules.push(Rule::new(
            chain,
            vec![
                Match::OutInterface("lo"),
                Match::NotDestination(family.loopback()),
                Match::Tcp,
                owner.clone(),
            ],
            Target::Redirect(settings.inbound_port),
            comment,
        ));
    }
    for owner in owners {
        let comment = match owner {
            Match::GidOwner(_) => "skip-proxy-gid",
            _ => "skip-proxy-uid",
        };
        rules.push(Rule::new(chain, vec![owner], Target::Return, comment));
    }
    rules.push(Rule::new(
        chain,
        vec![Match::OutInterface("lo")],
        Target::Return,
        "skip-loopback",
    ));
    if !settings.skip_outbound_ports.is_empty() {
        rules.push(Rule::new(
            chain,
            vec![
                Match::Tcp,
                Match::DestinationPorts(settings.skip_outbound_ports.clone()),
            ],
            Target::Return,
            "skip-outbound-ports",
        ));
    }
    for cidr in settings.skip_outbound_cidrs.of(family) {
        rules.push(Rule::new(
            chain,
            vec![Match::Destination(cidr)],
            Target::Return,
            "skip-outbound-cidrs",
        ));
    }
    let redirect = Target::Redirect(settings.outbound_port);
    if settings.include_outbound_cidrs.is_empty() {
        rules.push(Rule::new(
            chain,
            vec![Match::Tcp],
            redirect,
            "redirect-outbound",
        ));
    } else {
        // A family with no included network gets no redirect at all: "only these".
        for cidr in settings.include_outbound_cidrs.of(family) {
            rules.push(Rule::new(
                chain,
                vec![Match::Destination(cidr), Match::Tcp],
                redirect,
                "redirect-outbound-cidrs",
            ));
        }
    }
    rules
}

fn skip_proxy_ports(chain: Chain, settings: &Settings) -> Rule {
    Rule::new(
        chain,
        vec![Match::Tcp, Match::DestinationPorts(settings.proxy_ports())],
        Target::Return,
        "skip-proxy-ports",
    )
}

/// One chain for both families, for nftables' `inet` tables: a rule both families
/// share appears once, and each family's own rules (address matches, which limit an
/// `inet` rule to their family) keep their place, IPv4's before IPv6's.
///
/// Both lists come from the same generator, so they are the same sequence of blocks
/// (runs of rules with one comment), except that a family may lack a block (no IPv6
/// network skipped). The merge walks the blocks side by side.
pub(crate) fn merge_families(v4: &[Rule], v6: &[Rule]) -> Vec<Rule> {
    let (v4, v6) = (blocks(v4), blocks(v6));
    let mut merged = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < v4.len() || j < v6.len() {
        match (v4.get(i), v6.get(j)) {
            (Some(a), Some(b)) if a[0].comment == b[0].comment => {
                merged.extend_from_slice(a);
                if a != b {
                    merged.extend_from_slice(b);
                }
                i += 1;
                j += 1;
            }
            // A block only IPv6 has comes before the IPv4 block the IPv6 list still has
            // ahead of it; otherwise the IPv4 block is the one missing from IPv6.
            (Some(a), Some(b)) if v6[j..].iter().any(|later| later[0].comment == a[0].comment) => {
                merged.extend_from_slice(b);
                j += 1;
            }
            (Some(a), _) => {
                merged.extend_from_slice(a);
                i += 1;
            }
            (None, Some(b)) => {
                merged.extend_from_slice(b);
                j += 1;
            }
            (None, None) => break,
        }
    }
    merged
}

/// Consecutive rules with the same comment, together.
fn blocks(rules: &[Rule]) -> Vec<&[Rule]> {
    rules.chunk_by(|a, b| a.comment == b.comment).collect()
}

/// `ports` packed greedily into as few groups of at most `slots` multiport slots as fit.
pub(crate) fn port_groups(ports: &[PortSpec], slots: usize) -> Vec<Vec<PortSpec>> {
    let mut groups: Vec<Vec<PortSpec>> = Vec::new();
    // Starts "full" so that the first port opens the first group.
    let mut used = slots;
    for &port in ports {
        if used + port.slots() > slots {
            groups.push(Vec::new());
            used = 0;
        }
        used += port.slots();
        if let Some(group) = groups.last_mut() {
            group.push(port);
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cidr::CidrList;

    /// The family a rule is limited to by an address match, if any.
    fn family(rule: &Rule) -> Option<Family> {
        rule.matches.iter().find_map(|m| match m {
            Match::Destination(cidr) | Match::NotDestination(cidr) => Some(cidr.family()),
            _ => None,
        })
    }

    fn comments(rules: &[Rule]) -> Vec<&'static str> {
        rules.iter().map(|rule| rule.comment).collect()
    }

    #[test]
    fn the_outbound_chain_checks_the_proxy_before_loopback_and_loopback_before_skips() {
        let settings = Settings {
            proxy_gid: Some(2103),
            skip_outbound_ports: PortList::of(&[443]),
            skip_outbound_cidrs: CidrList::parse("10.0.0.0/8").expect("valid"),
            ..Settings::default()
        };
        assert_eq!(
            comments(&outbound_rules(&settings, Family::V4)),
            [
                "skip-proxy-ports",
                "proxy-uid-to-own-pod",
                "proxy-gid-to-own-pod",
                "skip-proxy-uid",
                "skip-proxy-gid",
                "skip-loopback",
                "skip-outbound-ports",
                "skip-outbound-cidrs",
                "redirect-outbound",
            ]
        );
        // No IPv6 network was skipped.
        assert!(!comments(&outbound_rules(&settings, Family::V6)).contains(&"skip-outbound-cidrs"));
    }

    #[test]
    fn included_networks_of_the_other_family_leave_this_one_unredirected() {
        let settings = Settings {
            include_outbound_cidrs: CidrList::parse("10.0.0.0/8").expect("valid"),
            ..Settings::default()
        };
        let v6 = outbound_rules(&settings, Family::V6);
        assert!(
            v6.iter()
                .all(|r| !matches!(r.target, Target::Redirect(4140))),
            "{v6:?}"
        );
        let v4 = outbound_rules(&settings, Family::V4);
        assert_eq!(
            v4.last().map(|r| r.comment),
            Some("redirect-outbound-cidrs")
        );
    }

    #[test]
    fn merging_keeps_shared_rules_once_and_each_familys_own_in_place() {
        let settings = Settings {
            skip_outbound_cidrs: CidrList::parse("fd00::/8,10.0.0.0/8,192.168.0.0/16")
                .expect("valid"),
            ..Settings::default()
        };
        let merged = merge_families(
            &outbound_rules(&settings, Family::V4),
            &outbound_rules(&settings, Family::V6),
        );
        let described: Vec<String> = merged
            .iter()
            .map(|rule| format!("{}{:?}", rule.comment, family(rule)))
            .collect();
        assert_eq!(
            described,
            [
                "skip-proxy-portsNone",
                "proxy-uid-to-own-podSome(V4)",
                "proxy-uid-to-own-podSome(V6)",
                "skip-proxy-uidNone",
                "skip-loopbackNone",
                "skip-outbound-cidrsSome(V4)",
                "skip-outbound-cidrsSome(V4)",
                "skip-outbound-cidrsSome(V6)",
                "redirect-outboundNone",
            ]
        );
    }

    #[test]
    fn a_block_only_one_family_has_keeps_its_place() {
        let settings = Settings {
            skip_outbound_cidrs: CidrList::parse("fd00::/8").expect("valid"),
            include_outbound_cidrs: CidrList::parse("10.0.0.0/8,2001:db8::/32").expect("valid"),
            ..Settings::default()
        };
        let merged = merge_families(
            &outbound_rules(&settings, Family::V4),
            &outbound_rules(&settings, Family::V6),
        );
        let tail: Vec<String> = merged[merged.len() - 3..]
            .iter()
            .map(|rule| format!("{}{:?}", rule.comment, family(rule)))
            .collect();
        assert_eq!(
            tail,
            [
                "skip-outbound-cidrsSome(V6)",
                "redirect-outbound-cidrsSome(V4)",
                "redirect-outbound-cidrsSome(V6)",
            ]
        );
    }

    #[test]
    fn port_groups_never_exceed_their_slots_and_keep_every_port_in_order() {
        let list: Vec<String> = (1..=40u16)
            .map(|n| {
                if n % 3 == 0 {
                    format!("{}-{}", n * 100, n * 100 + 1)
                } else {
                    n.to_string()
                }
            })
            .collect();
        let ports = PortList::parse(&list.join(",")).expect("valid");
        let groups = port_groups(ports.specs(), 15);
        for group in &groups {
            let slots: usize = group.iter().map(|p| p.slots()).sum();
            assert!(slots <= 15, "{slots} slots in {group:?}");
        }
        assert_eq!(groups.concat(), ports.specs(), "every port, once, in order");
    }
}
