//! The rules as one native nftables table, `table inet trellis`, for `nft -f`.
//!
//! One `inet` table serves both IP families, so where iptables needs two programs and
//! two transactions, nftables needs one of each: the document deletes and recreates the
//! table in a single atomic batch, which installs, repairs a half-written table and
//! re-runs identically all at once. Removing Trellis is deleting the table; nothing
//! outside it is ever touched, so other tables (kube-proxy's, a CNI's) are safe.
//!
//! The table hooks `prerouting` and `output` at priority -100, where iptables' nat
//! table sits, and its chains hold the same rules as the iptables chains, in the same
//! order (`rules.rs`).

use crate::cidr::{Cidr, Family};
use crate::rules::{Chain, Match, Rule, Target, inbound_rules, merge_families, outbound_rules};
use crate::settings::Settings;

/// The table's family and name, as `nft` commands write them.
pub const NFT_TABLE: &str = "inet trellis";

/// The `nft -f` document that installs the rules of `settings`, replacing whatever
/// `table inet trellis` held. Pure: the same settings always give the same document.
pub fn render_nftables(settings: &Settings) -> String {
    let outbound = if settings.ipv6 {
        merge_families(
            &outbound_rules(settings, Family::V4),
            &outbound_rules(settings, Family::V6),
        )
    } else {
        outbound_rules(settings, Family::V4)
    };
    // Declaring the table first makes the delete valid when it does not exist yet; the
    // three statements are one transaction.
    let mut doc = format!("table {NFT_TABLE}\ndelete table {NFT_TABLE}\ntable {NFT_TABLE} {{\n");
    for (name, hook, target) in [
        ("prerouting", "prerouting", "inbound"),
        ("output", "output", "outbound"),
    ] {
        doc.push_str(&format!(
            "\tchain {name} {{\n\t\ttype nat hook {hook} priority -100; policy accept;\n"
        ));
        if !settings.ipv6 {
            doc.push_str("\t\tmeta nfproto ipv6 return comment \"trellis/ipv6-off\"\n");
        }
        doc.push_str(&format!(
            "\t\tjump {target} comment \"trellis/{target}-jump\"\n\t}}\n"
        ));
    }
    for (name, rules) in [("inbound", inbound_rules(settings)), ("outbound", outbound)] {
        doc.push_str(&format!("\tchain {name} {{\n"));
        for rule in &rules {
            debug_assert!(matches!(
                (name, rule.chain),
                ("inbound", Chain::Inbound) | ("outbound", Chain::Outbound)
            ));
            doc.push_str(&format!("\t\t{}\n", statement(rule)));
        }
        doc.push_str("\t}\n");
    }
    doc.push_str("}\n");
    doc
}

/// The `nft -f` document that removes Trellis: the whole table, and only it. Declaring
/// it first makes the delete harmless where there is nothing to remove.
pub fn render_nftables_cleanup() -> String {
    format!("table {NFT_TABLE}\ndelete table {NFT_TABLE}\n")
}

/// One rule in nft syntax: matches, verdict, comment.
fn statement(rule: &Rule) -> String {
    let has_ports = rule
        .matches
        .iter()
        .any(|m| matches!(m, Match::DestinationPorts(_)));
    let mut parts: Vec<String> = Vec::new();
    for m in &rule.matches {
        match m {
            // `tcp dport` already restricts the rule to TCP.
            Match::Tcp if has_ports => {}
            Match::Tcp => parts.push("meta l4proto tcp".to_owned()),
            Match::DestinationPorts(ports) => {
                let specs: Vec<String> = ports.specs().iter().map(|p| p.nft()).collect();
                parts.push(match specs.as_slice() {
                    [one] => format!("tcp dport {one}"),
                    many => format!("tcp dport {{ {} }}", many.join(", ")),
                });
            }
            Match::UidOwner(uid) => parts.push(format!("meta skuid {uid}")),
            Match::GidOwner(gid) => parts.push(format!("meta skgid {gid}")),
            Match::OutInterface(name) => parts.push(format!("oifname \"{name}\"")),
            Match::Destination(cidr) => parts.push(format!("{} {cidr}", daddr(*cidr))),
            Match::NotDestination(cidr) => parts.push(format!("{} != {cidr}", daddr(*cidr))),
        }
    }
    parts.push(match rule.target {
        Target::Return => "return".to_owned(),
        Target::Redirect(port) => format!("redirect to :{port}"),
    });
    parts.push(format!("comment \"trellis/{}\"", rule.comment));
    parts.join(" ")
}

/// An address match also limits an `inet` rule to its family.
fn daddr(cidr: Cidr) -> &'static str {
    match cidr.family() {
        Family::V4 => "ip daddr",
        Family::V6 => "ip6 daddr",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cidr::CidrList;
    use crate::ports::PortList;

    #[test]
    fn the_default_table_covers_both_families_in_one_document() {
        let expected = r#"table inet trellis
delete table inet trellis
table inet trellis {
	chain prerouting {
		type nat hook prerouting priority -100; policy accept;
		jump inbound comment "trellis/inbound-jump"
	}
	chain output {
		type nat hook output priority -100; policy accept;
		jump outbound comment "trellis/outbound-jump"
	}
	chain inbound {
		tcp dport { 4191, 4143, 4140 } return comment "trellis/skip-proxy-ports"
		meta l4proto tcp redirect to :4143 comment "trellis/redirect-inbound"
	}
	chain outbound {
		tcp dport { 4191, 4143, 4140 } return comment "trellis/skip-proxy-ports"
		oifname "lo" ip daddr != 127.0.0.0/8 meta l4proto tcp meta skuid 2102 redirect to :4143 comment "trellis/proxy-uid-to-own-pod"
		oifname "lo" ip6 daddr != ::1/128 meta l4proto tcp meta skuid 2102 redirect to :4143 comment "trellis/proxy-uid-to-own-pod"
		meta skuid 2102 return comment "trellis/skip-proxy-uid"
		oifname "lo" return comment "trellis/skip-loopback"
		meta l4proto tcp redirect to :4140 comment "trellis/redirect-outbound"
	}
}
"#;
        assert_eq!(render_nftables(&Settings::default()), expected);
    }

    #[test]
    fn every_setting_reaches_the_table() {
        let settings = Settings {
            inbound_port: 15006,
            outbound_port: 15001,
            admin_port: 15020,
            proxy_uid: 1337,
            proxy_gid: Some(1338),
            skip_inbound_ports: PortList::parse("25,8000-8100").expect("valid"),
            skip_outbound_ports: PortList::parse("443").expect("valid"),
            skip_outbound_cidrs: CidrList::parse("10.96.0.0/12,fd00::/8").expect("valid"),
            include_outbound_cidrs: CidrList::parse("10.0.0.0/8,2001:db8::/32").expect("valid"),
            redirect_inbound_ports: PortList::parse("8080,9000-9100").expect("valid"),
            ipv6: true,
        };
        let expected = r#"	chain inbound {
		tcp dport { 15020, 15006, 15001 } return comment "trellis/skip-proxy-ports"
		tcp dport { 25, 8000-8100 } return comment "trellis/skip-inbound-ports"
		tcp dport { 8080, 9000-9100 } redirect to :15006 comment "trellis/redirect-inbound-ports"
	}
	chain outbound {
		tcp dport { 15020, 15006, 15001 } return comment "trellis/skip-proxy-ports"
		oifname "lo" ip daddr != 127.0.0.0/8 meta l4proto tcp meta skuid 1337 redirect to :15006 comment "trellis/proxy-uid-to-own-pod"
		oifname "lo" ip6 daddr != ::1/128 meta l4proto tcp meta skuid 1337 redirect to :15006 comment "trellis/proxy-uid-to-own-pod"
		oifname "lo" ip daddr != 127.0.0.0/8 meta l4proto tcp meta skgid 1338 redirect to :15006 comment "trellis/proxy-gid-to-own-pod"
		oifname "lo" ip6 daddr != ::1/128 meta l4proto tcp meta skgid 1338 redirect to :15006 comment "trellis/proxy-gid-to-own-pod"
		meta skuid 1337 return comment "trellis/skip-proxy-uid"
		meta skgid 1338 return comment "trellis/skip-proxy-gid"
		oifname "lo" return comment "trellis/skip-loopback"
		tcp dport 443 return comment "trellis/skip-outbound-ports"
		ip daddr 10.96.0.0/12 return comment "trellis/skip-outbound-cidrs"
		ip6 daddr fd00::/8 return comment "trellis/skip-outbound-cidrs"
		ip daddr 10.0.0.0/8 meta l4proto tcp redirect to :15001 comment "trellis/redirect-outbound-cidrs"
		ip6 daddr 2001:db8::/32 meta l4proto tcp redirect to :15001 comment "trellis/redirect-outbound-cidrs"
	}
}
"#;
        let doc = render_nftables(&settings);
        assert!(doc.ends_with(expected), "{doc}");
    }

    #[test]
    fn with_ipv6_off_the_table_lets_ipv6_through_untouched() {
        let settings = Settings {
            ipv6: false,
            skip_outbound_cidrs: CidrList::parse("fd00::/8").expect("valid"),
            ..Settings::default()
        };
        let doc = render_nftables(&settings);
        assert!(doc.contains(
            "\t\ttype nat hook output priority -100; policy accept;\n\
             \t\tmeta nfproto ipv6 return comment \"trellis/ipv6-off\"\n\
             \t\tjump outbound comment \"trellis/outbound-jump\"\n"
        ));
        assert_eq!(doc.matches("trellis/ipv6-off").count(), 2, "{doc}");
        assert!(!doc.contains("ip6 daddr"), "{doc}");
    }

    #[test]
    fn cleanup_deletes_the_table_whether_or_not_it_exists() {
        assert_eq!(
            render_nftables_cleanup(),
            "table inet trellis\ndelete table inet trellis\n"
        );
    }
}
