//! The rules as `iptables-restore --noflush` documents, one per IP family, and the
//! documents that remove them again.
//!
//! Rendering is pure: settings and the current `iptables-save -t nat` dump in, document
//! out, so every case is a golden test that needs no kernel (`restore/tests.rs`).
//!
//! In `--noflush` mode a `:CHAIN - [0:0]` line creates the chain or, if it exists,
//! flushes it, so Trellis's chains are always rewritten whole, in the same transaction
//! that fills them: a chain left half-written by an earlier, interrupted run is simply
//! written again. The jumps from `PREROUTING` and `OUTPUT` live in chains other software
//! shares, so they are reconciled instead: added when missing, duplicates and old
//! spellings deleted, anything else left alone.

use crate::cidr::Family;
use crate::rules::{Chain, Match, Rule, Target, inbound_rules, outbound_rules, port_groups};
use crate::settings::Settings;
use crate::table::NatTable;

/// Trellis's inbound chain, jumped to from `PREROUTING`.
pub const INBOUND_CHAIN: &str = "TRELLIS_INBOUND";
/// Trellis's outbound chain, jumped to from `OUTPUT`.
pub const OUTPUT_CHAIN: &str = "TRELLIS_OUTPUT";
/// Every chain Trellis owns; cleanup removes exactly these and the jumps to them.
const OWN_CHAINS: [&str; 2] = [INBOUND_CHAIN, OUTPUT_CHAIN];

/// The kernel's `xt_multiport` holds at most 15 ports per match, a range taking two.
pub(crate) const MULTIPORT_SLOTS: usize = 15;

/// A jump from a built-in chain into one of ours.
struct Jump {
    from: &'static str,
    to: &'static str,
    comment: &'static str,
}

impl Jump {
    fn spec(&self) -> String {
        format!(
            "-m comment --comment \"trellis/{}\" -j {}",
            self.comment, self.to
        )
    }
}

const JUMPS: [Jump; 2] = [
    Jump {
        from: "PREROUTING",
        to: INBOUND_CHAIN,
        comment: "inbound-jump",
    },
    Jump {
        from: "OUTPUT",
        to: OUTPUT_CHAIN,
        comment: "outbound-jump",
    },
];

/// The `iptables-restore --noflush` document (for `ip6tables-restore` when `family` is
/// IPv6) that installs the rules of `settings`, given `existing`, the output of
/// `iptables-save -t nat`.
///
/// Rendered again against the result, the document has no jump lines and rewrites the
/// chains with the rules they already hold: running twice leaves the table as the first
/// run did.
pub fn render(settings: &Settings, family: Family, existing: &str) -> String {
    let table = NatTable::parse(existing);
    let mut doc = String::from("*nat\n");
    for chain in OWN_CHAINS {
        doc.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for rule in inbound_rules(settings)
        .iter()
        .chain(&outbound_rules(settings, family))
    {
        for spec in specs(rule) {
            doc.push_str(&format!("-A {} {spec}\n", chain_name(rule.chain)));
        }
    }
    for jump in &JUMPS {
        reconcile_jump(&table, jump, &mut doc);
    }
    doc.push_str("COMMIT\n");
    doc
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

/// Whether the dump shows any of Trellis's chains.
pub(crate) fn has_trellis(existing: &str) -> bool {
    let table = NatTable::parse(existing);
    OWN_CHAINS.iter().any(|chain| table.has_chain(chain))
}

/// The `*nat` section of an `iptables-save` dump, which `iptables-restore` (without
/// `--noflush`) puts back exactly: the undo of a pass whose partner failed. `None` when
/// the dump has no nat table to put back.
pub(crate) fn nat_section(dump: &str) -> Option<String> {
    let mut section = String::new();
    let mut inside = false;
    for line in dump.lines() {
        let trimmed = line.trim();
        if let Some(table) = trimmed.strip_prefix('*') {
            inside = table == "nat";
        }
        if inside {
            section.push_str(trimmed);
            section.push('\n');
            if trimmed == "COMMIT" {
                return Some(section);
            }
        }
    }
    None
}

fn chain_name(chain: Chain) -> &'static str {
    match chain {
        Chain::Inbound => INBOUND_CHAIN,
        Chain::Outbound => OUTPUT_CHAIN,
    }
}

/// The rule as iptables arguments, without the `-A <chain>` that places it: one line,
/// or several when its port list needs more than one `multiport` match.
fn specs(rule: &Rule) -> Vec<String> {
    let ports = rule.matches.iter().find_map(|m| match m {
        Match::DestinationPorts(ports) => Some(ports),
        _ => None,
    });
    let groups = match ports {
        Some(ports) => port_groups(ports.specs(), MULTIPORT_SLOTS),
        None => vec![Vec::new()],
    };
    groups
        .iter()
        .map(|group| {
            let mut parts: Vec<String> = rule
                .matches
                .iter()
                .map(|m| match m {
                    Match::Tcp => "-p tcp".to_owned(),
                    Match::DestinationPorts(_) => {
                        let list: Vec<String> = group.iter().map(ToString::to_string).collect();
                        format!("-m multiport --dports {}", list.join(","))
                    }
                    Match::UidOwner(uid) => format!("-m owner --uid-owner {uid}"),
                    Match::GidOwner(gid) => format!("-m owner --gid-owner {gid}"),
                    Match::OutInterface(name) => format!("-o {name}"),
                    Match::Destination(cidr) => format!("-d {cidr}"),
                    Match::NotDestination(cidr) => format!("! -d {cidr}"),
                })
                .collect();
            parts.push(format!("-m comment --comment \"trellis/{}\"", rule.comment));
            parts.push(match rule.target {
                Target::Return => "-j RETURN".to_owned(),
                Target::Redirect(port) => format!("-j REDIRECT --to-ports {port}"),
            });
            parts.join(" ")
        })
        .collect()
}

/// Appends the lines that leave exactly one `jump` in its chain: keep the first
/// existing copy, delete every other rule there that jumps to the same Trellis chain
/// (duplicates, or older spellings without our comment), append it if none was kept.
fn reconcile_jump(table: &NatTable, jump: &Jump, doc: &mut String) {
    let wanted = jump.spec();
    let existing: Vec<_> = table
        .rules()
        .iter()
        .filter(|rule| rule.chain == jump.from && rule.target() == Some(jump.to))
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
        doc.push_str(&format!("-A {} {}\n", jump.from, wanted));
    }
}

#[cfg(test)]
mod tests;
