//! `--backend auto`: using what the network namespace already uses, as kube-proxy's
//! iptables wrapper does.
//!
//! Two programs adding nat rules through different kernel interfaces both run, and which
//! one's REDIRECT wins is an accident of hook order; so proxy-init joins whatever is
//! already there. It looks at the namespace it runs in (the pod's), in this order:
//!
//! 1. where Trellis's own rules already are (a re-run repairs rather than duplicates):
//!    `table inet trellis`, then iptables-nft, then legacy;
//! 2. native nftables tables (anything `nft list tables` shows that iptables-nft,
//!    ebtables-nft or arptables-nft did not make): `nftables`;
//! 3. more legacy rules than iptables-nft rules (kube-proxy's own test): `legacy`;
//! 4. otherwise iptables-nft, the default of every current distribution, where it can
//!    read this kernel's tables; else legacy iptables; else nft itself.
//!
//! Nothing here changes the kernel. Legacy tables are read only where
//! `/proc/net/ip_tables_names` lists them, because reading a legacy table loads it. A
//! tool that cannot run here counts as holding nothing; only a missing privilege stops
//! the search, since then nothing can be known.

use tracing::debug;

use crate::backend::{Backend, Binaries, Flavour, kernel_has_ipv6, unless_denied};
use crate::cidr::Family;
use crate::error::Error;
use crate::nft::Nft;

/// The backend `auto` picks here, and why (for the log).
pub fn detect(binaries: &Binaries) -> Result<(Backend, &'static str), Error> {
    let nftables = Nft::new(&binaries.nft);
    // `None`: nft cannot run here (not installed, or no nf_tables in the kernel).
    let nft_tables = match nftables.check_present() {
        Ok(()) => unless_denied(nftables.tables().map(Some), None)?,
        Err(_) => None,
    };
    let legacy = binaries.iptables(Flavour::Legacy);
    let nft = binaries.iptables(Flavour::Nft);

    let tables = nft_tables.as_deref().unwrap_or_default();
    if tables.iter().any(|t| t == crate::nftables::NFT_TABLE) {
        return Ok((
            binaries.nftables(),
            "Trellis's nftables table is already here",
        ));
    }
    if nft.has_trellis()? {
        return Ok((nft, "Trellis's rules are already here in iptables-nft"));
    }
    if legacy.has_trellis()? {
        return Ok((
            legacy,
            "Trellis's rules are already here in iptables-legacy",
        ));
    }
    if tables.iter().any(|table| !made_by_xtables(table)) {
        return Ok((binaries.nftables(), "this namespace uses nftables natively"));
    }
    let legacy_rules = rule_count(&legacy)?;
    let nft_rules = rule_count(&nft)?;
    debug!(legacy_rules, nft_rules, "counted existing iptables rules");
    if legacy_rules > nft_rules {
        return Ok((
            legacy,
            "this namespace has more legacy iptables rules than nft ones",
        ));
    }
    if nft_works(&nft)? {
        return Ok((nft, "the default: iptables over nf_tables"));
    }
    if present(&legacy) {
        return Ok((legacy, "iptables-nft cannot run here; legacy iptables can"));
    }
    if nft_tables.is_some() {
        return Ok((binaries.nftables(), "only nft is installed"));
    }
    Err(Error::NoBackend)
}

/// Whether iptables-nft is installed and can read this kernel's nat table (a kernel
/// without nf_tables refuses).
fn nft_works(nft: &Backend) -> Result<bool, Error> {
    let Backend::Iptables { v4, .. } = nft else {
        return Ok(false);
    };
    if v4.check_present().is_err() {
        return Ok(false);
    }
    unless_denied(v4.save_nat().map(|_| true), false)
}

/// Whether the legacy (x_tables) nat table of `family` exists in this namespace.
pub fn legacy_has_nat(family: Family) -> bool {
    legacy_tables(family).iter().any(|table| table == "nat")
}

fn legacy_tables(family: Family) -> Vec<String> {
    let path = match family {
        Family::V4 => "/proc/net/ip_tables_names",
        Family::V6 => "/proc/net/ip6_tables_names",
    };
    std::fs::read_to_string(path)
        .map(|names| names.lines().map(|l| l.trim().to_owned()).collect())
        .unwrap_or_default()
}

/// Tables the iptables family of tools creates in nf_tables, by family and name; any
/// other table was written in nft's own language.
fn made_by_xtables(table: &str) -> bool {
    matches!(
        table.split_once(' '),
        Some((
            "ip" | "ip6",
            "filter" | "nat" | "mangle" | "raw" | "security"
        )) | Some(("bridge", "filter" | "nat" | "broute"))
            | Some(("arp", "filter"))
    )
}

fn present(backend: &Backend) -> bool {
    match backend {
        Backend::Iptables { v4, .. } => v4.check_present().is_ok(),
        Backend::Nftables(nft) => nft.check_present().is_ok(),
    }
}

/// How many rules this iptables backend holds, in every table of both families.
fn rule_count(backend: &Backend) -> Result<usize, Error> {
    let Backend::Iptables { flavour, v4, v6 } = backend else {
        return Ok(0);
    };
    let mut count = 0;
    for iptables in [v4, v6] {
        let family = iptables.family();
        let readable = iptables.check_present().is_ok()
            && (family == Family::V4 || kernel_has_ipv6())
            && (*flavour != Flavour::Legacy || !legacy_tables(family).is_empty());
        if readable {
            let dump = unless_denied(iptables.save_all(), String::new())?;
            count += dump.lines().filter(|l| l.starts_with("-A ")).count();
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_made_by_iptables_nft_are_not_native_nftables() {
        for table in [
            "ip nat",
            "ip6 filter",
            "ip mangle",
            "bridge filter",
            "arp filter",
        ] {
            assert!(made_by_xtables(table), "{table}");
        }
        for table in [
            "inet kube-proxy",
            "ip kube-proxy",
            "inet firewalld",
            "ip6 calico",
        ] {
            assert!(!made_by_xtables(table), "{table}");
        }
    }
}
