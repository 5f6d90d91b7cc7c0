//! The rules of one pod, as values, and their rendering as one `iptables-restore`
//! document.
//!
//! Rules are data ([`Rule`]) first and text second, so that the backends and modes still
//! to come (nft, ip6tables, a `validate` that compares installed with wanted) render or
//! compare the same list instead of deriving it again; a CIDR match is one more
//! [`Match`] variant. Rendering is pure: settings and the current `iptables-save -t nat`
//! dump in, document out, so every case is a golden test that needs no kernel.

use crate::settings::{PortSpec, Settings};
use crate::table::NatTable;

/// Trellis's inbound chain, jumped to from `PREROUTING`.
pub const INBOUND_CHAIN: &str = "TRELLIS_INBOUND";
/// Trellis's outbound chain, jumped to from `OUTPUT`.
pub const OUTPUT_CHAIN: &str = "TRELLIS_OUTPUT";
/// Every chain Trellis owns; cleanup removes exactly these and the jumps to them.
const OWN_CHAINS: [&str; 2] = [INBOUND_CHAIN, OUTPUT_CHAIN];

/// The kernel's `xt_multiport` holds at most 15 ports per match, a range taking two.
const MULTIPORT_SLOTS: usize = 15;

/// One rule, appended to `chain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub chain: &'static str,
    pub matches: Vec<Match>,
    pub target: Target,
    /// Rendered as `trellis/<comment>`: says in `iptables-save` why the rule is there
    /// and marks it as Trellis's.
    pub comment: &'static str,
}

/// What a rule matches on. Order in [`Rule::matches`] is rendering order, and a port
/// match must follow [`Match::Tcp`], as iptables requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Match {
    /// `-p tcp`: the proxy only handles TCP; UDP (DNS) and ICMP pass untouched.
    Tcp,
    DestinationPort(u16),
    /// `-m multiport`: at most [`MULTIPORT_SLOTS`] slots, see [`skip_ports`].
    DestinationPorts(Vec<PortSpec>),
    UidOwner(u32),
    OutInterface(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// Leave the Trellis chain: the packet continues as if Trellis were not there.
    Return,
    Redirect(u16),
    Jump(&'static str),
}

impl Rule {
    /// The rule as iptables arguments, without the `-A <chain>` that places it.
    pub fn spec(&self) -> String {
        let mut parts: Vec<String> = self.matches.iter().map(Match::iptables_args).collect();
        parts.push(format!("-m comment --comment \"trellis/{}\"", self.comment));
        parts.push(self.target.iptables_args());
        parts.join(" ")
    }
}

impl Match {
    fn iptables_args(&self) -> String {
        match self {
            Match::Tcp => "-p tcp".to_owned(),
            Match::DestinationPort(port) => format!("--dport {port}"),
            Match::DestinationPorts(ports) => {
                let list: Vec<String> = ports.iter().map(PortSpec::to_string).collect();
                format!("-m multiport --dports {}", list.join(","))
            }
            Match::UidOwner(uid) => format!("-m owner --uid-owner {uid}"),
            Match::OutInterface(name) => format!("-o {name}"),
        }
    }
}

impl Target {
    fn iptables_args(&self) -> String {
        match self {
            Target::Return => "-j RETURN".to_owned(),
            Target::Redirect(port) => format!("-j REDIRECT --to-ports {port}"),
            Target::Jump(chain) => format!("-j {chain}"),
        }
    }
}

/// `TRELLIS_INBOUND`, in order: admin port, skipped ports, redirect.
pub(crate) fn inbound_rules(settings: &Settings) -> Vec<Rule> {
    let mut rules = vec![Rule {
        chain: INBOUND_CHAIN,
        matches: vec![Match::Tcp, Match::DestinationPort(settings.admin_port)],
        target: Target::Return,
        comment: "skip-admin-port",
    }];
    rules.extend(skip_ports(
        INBOUND_CHAIN,
        settings.skip_inbound_ports.specs(),
        "skip-inbound-ports",
    ));
    rules.push(Rule {
        chain: INBOUND_CHAIN,
        matches: vec![Match::Tcp],
        target: Target::Redirect(settings.inbound_port),
        comment: "redirect-inbound",
    });
    rules
}

/// `TRELLIS_OUTPUT`, in order: the proxy's own traffic, loopback, skipped ports, redirect.
pub(crate) fn outbound_rules(settings: &Settings) -> Vec<Rule> {
    let mut rules = vec![
        Rule {
            chain: OUTPUT_CHAIN,
            matches: vec![Match::UidOwner(settings.proxy_uid)],
            target: Target::Return,
            comment: "skip-proxy-uid",
        },
        Rule {
            chain: OUTPUT_CHAIN,
            matches: vec![Match::OutInterface("lo")],
            target: Target::Return,
            comment: "skip-loopback",
        },
    ];
    rules.extend(skip_ports(
        OUTPUT_CHAIN,
        settings.skip_outbound_ports.specs(),
        "skip-outbound-ports",
    ));
    rules.push(Rule {
        chain: OUTPUT_CHAIN,
        matches: vec![Match::Tcp],
        target: Target::Redirect(settings.outbound_port),
        comment: "redirect-outbound",
    });
    rules
}

/// The two jumps that send traffic into Trellis's chains. They live in built-in chains
/// that other software shares, so they are reconciled rather than rewritten.
pub(crate) fn jumps() -> [Rule; 2] {
    [
        Rule {
            chain: "PREROUTING",
            matches: vec![],
            target: Target::Jump(INBOUND_CHAIN),
            comment: "inbound-jump",
        },
        Rule {
            chain: "OUTPUT",
            matches: vec![],
            target: Target::Jump(OUTPUT_CHAIN),
            comment: "outbound-jump",
        },
    ]
}

/// RETURN rules for `ports`, packed greedily into as few multiport matches as fit.
fn skip_ports(chain: &'static str, ports: &[PortSpec], comment: &'static str) -> Vec<Rule> {
    let mut groups: Vec<Vec<PortSpec>> = Vec::new();
    // Starts "full" so that the first port opens the first group.
    let mut used = MULTIPORT_SLOTS;
    for &port in ports {
        if used + port.slots() > MULTIPORT_SLOTS {
            groups.push(Vec::new());
            used = 0;
        }
        used += port.slots();
        if let Some(group) = groups.last_mut() {
            group.push(port);
        }
    }
    groups
        .into_iter()
        .map(|group| Rule {
            chain,
            matches: vec![Match::Tcp, Match::DestinationPorts(group)],
            target: Target::Return,
            comment,
        })
        .collect()
}

/// The `iptables-restore --noflush` document that installs the rules of `settings`,
/// given `existing`, the output of `iptables-save -t nat`.
///
/// In `--noflush` mode a `:CHAIN - [0:0]` line creates the chain or, if it exists,
/// flushes it, so Trellis's chains are always rewritten whole. The jumps from
/// `PREROUTING` and `OUTPUT` are added only when missing, and extra or differently
/// spelled jumps to Trellis's chains are deleted, leaving exactly one of each. Rendered
/// again against the result, the document has no jump lines and rewrites the chains with
/// the rules they already hold: running twice leaves the table as the first run did.
pub fn render(settings: &Settings, existing: &str) -> String {
    let table = NatTable::parse(existing);
    let mut doc = String::from("*nat\n");
    for chain in OWN_CHAINS {
        doc.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for rule in inbound_rules(settings)
        .iter()
        .chain(&outbound_rules(settings))
    {
        doc.push_str(&format!("-A {} {}\n", rule.chain, rule.spec()));
    }
    for jump in jumps() {
        reconcile_jump(&table, &jump, &mut doc);
    }
    doc.push_str("COMMIT\n");
    doc
}

/// Appends the lines that leave exactly one `jump` in its chain: keep the first
/// existing copy, delete every other rule there that jumps to the same Trellis chain
/// (duplicates, or older spellings without our comment), append it if none was kept.
fn reconcile_jump(table: &NatTable, jump: &Rule, doc: &mut String) {
    let Target::Jump(to) = jump.target else {
        return;
    };
    let wanted = jump.spec();
    let existing: Vec<_> = table
        .rules()
        .iter()
        .filter(|rule| rule.chain == jump.chain && rule.target() == Some(to))
        .collect();
    let keep = existing.iter().position(|rule| rule.has_spec(&wanted));
    for (index, rule) in existing.iter().enumerate() {
        // `-D` by spec removes the first identical rule, not necessarily this one;
        // identical rules are interchangeable, so one copy survives all the same.
        if Some(index) != keep {
            doc.push_str(&format!("-D {} {}\n", rule.chain, rule.spec));
        }
    }
    if keep.is_none() {
        doc.push_str(&format!("-A {} {}\n", jump.chain, wanted));
    }
}

/// The `iptables-restore --noflush` document that removes Trellis from the nat table
/// described by `existing`: every jump to a Trellis chain, then the chains themselves.
/// Nothing else is touched; on a table without Trellis it is an empty `*nat` section.
pub fn render_cleanup(existing: &str) -> String {
    let table = NatTable::parse(existing);
    let mut doc = String::from("*nat\n");
    for rule in table.rules() {
        let jumps_to_ours = rule.target().is_some_and(|to| OWN_CHAINS.contains(&to));
        // Rules inside our chains go with the flush below.
        if jumps_to_ours && !OWN_CHAINS.contains(&rule.chain.as_str()) {
            doc.push_str(&format!("-D {} {}\n", rule.chain, rule.spec));
        }
    }
    let present: Vec<&str> = OWN_CHAINS
        .into_iter()
        .filter(|chain| table.has_chain(chain))
        .collect();
    // Flush all before deleting any: a chain cannot be deleted while another still
    // refers to it, and iptables refuses to delete a chain that has rules.
    for chain in &present {
        doc.push_str(&format!("-F {chain}\n"));
    }
    for chain in &present {
        doc.push_str(&format!("-X {chain}\n"));
    }
    doc.push_str("COMMIT\n");
    doc
}

#[cfg(test)]
mod tests;
