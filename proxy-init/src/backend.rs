//! The three ways of programming the kernel (legacy iptables, iptables over nf_tables,
//! native nftables), and installing or removing Trellis with each.
//!
//! An iptables backend works one family at a time: `iptables-restore` for IPv4, then
//! `ip6tables-restore` for IPv6, each one transaction. Every binary is checked and every
//! table read before the first change, and if the second pass is still rejected, the
//! first is undone (its saved nat table put back), so a failed run leaves the rules as
//! they were rather than half of them. Both passes run before the app starts, so no
//! connection sees the moment between them. Native nftables needs no such care: one
//! `inet` table, one transaction.

use std::path::PathBuf;

use tracing::{debug, info, warn};

use crate::cidr::Family;
use crate::error::Error;
use crate::iptables::Iptables;
use crate::nft::Nft;
use crate::nftables::{render_nftables, render_nftables_cleanup};
use crate::restore::{has_trellis, nat_section, render, render_cleanup};
use crate::settings::Settings;

/// What `--backend` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// Pick what the network namespace already uses (see `detect.rs`).
    Auto,
    /// `iptables-legacy-*`: the x_tables kernel interface.
    Legacy,
    /// `iptables-nft-*`: iptables syntax, nf_tables underneath.
    Nft,
    /// `nft` itself, one `table inet trellis`.
    Nftables,
}

impl BackendChoice {
    pub fn parse(value: &str) -> Result<BackendChoice, Error> {
        match value.trim() {
            "auto" => Ok(BackendChoice::Auto),
            "legacy" => Ok(BackendChoice::Legacy),
            "nft" => Ok(BackendChoice::Nft),
            "nftables" => Ok(BackendChoice::Nftables),
            _ => Err(Error::UnknownBackend {
                value: value.to_owned(),
            }),
        }
    }
}

/// The two kinds of iptables binaries: same language, different kernel interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// `iptables-legacy-*`: the x_tables interface. Reading a table loads it.
    Legacy,
    /// `iptables-nft-*`: nf_tables underneath.
    Nft,
}

impl Flavour {
    /// As in the binaries' names: `legacy`, `nft`.
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Legacy => "legacy",
            Flavour::Nft => "nft",
        }
    }
}

/// The binaries proxy-init may run. Paths given by flags replace the iptables flavour's
/// own names, and `auto` then uses them without looking further: naming a binary is
/// choosing it.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub iptables_save: Option<PathBuf>,
    pub iptables_restore: Option<PathBuf>,
    pub ip6tables_save: Option<PathBuf>,
    pub ip6tables_restore: Option<PathBuf>,
    pub nft: PathBuf,
}

impl Default for Binaries {
    fn default() -> Self {
        Binaries {
            iptables_save: None,
            iptables_restore: None,
            ip6tables_save: None,
            ip6tables_restore: None,
            nft: PathBuf::from("nft"),
        }
    }
}

impl Binaries {
    /// Whether any iptables binary was named by a flag.
    pub fn named(&self) -> bool {
        self.iptables_save.is_some()
            || self.iptables_restore.is_some()
            || self.ip6tables_save.is_some()
            || self.ip6tables_restore.is_some()
    }

    /// The iptables backend of `flavour`, with named binaries taking the place of its
    /// own.
    pub fn iptables(&self, flavour: Flavour) -> Backend {
        let name = flavour.name();
        let pick = |named: &Option<PathBuf>, default: String| {
            named.clone().unwrap_or_else(|| PathBuf::from(default))
        };
        Backend::Iptables {
            flavour,
            v4: Iptables::for_family(
                Family::V4,
                pick(&self.iptables_save, format!("iptables-{name}-save")),
                pick(&self.iptables_restore, format!("iptables-{name}-restore")),
            ),
            v6: Iptables::for_family(
                Family::V6,
                pick(&self.ip6tables_save, format!("ip6tables-{name}-save")),
                pick(&self.ip6tables_restore, format!("ip6tables-{name}-restore")),
            ),
        }
    }

    pub fn nftables(&self) -> Backend {
        Backend::Nftables(Nft::new(&self.nft))
    }
}

/// A backend, ready to run.
#[derive(Debug, Clone)]
pub enum Backend {
    Iptables {
        /// Which `iptables-<flavour>-*` binaries, unless named.
        flavour: Flavour,
        v4: Iptables,
        v6: Iptables,
    },
    Nftables(Nft),
}

/// One step of a run: the command that applies it and the exact document it is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    pub command: String,
    pub document: String,
}

/// Whether this kernel has IPv6 at all. Without it there is no IPv6 traffic to redirect,
/// and ip6tables could not be run.
pub fn kernel_has_ipv6() -> bool {
    std::path::Path::new("/proc/net/if_inet6").exists()
}

impl Backend {
    /// `iptables-legacy`, `iptables-nft`, `nftables`: for logs.
    pub fn name(&self) -> String {
        match self {
            Backend::Iptables { flavour, .. } => format!("iptables-{}", flavour.name()),
            Backend::Nftables(_) => "nftables".to_owned(),
        }
    }

    /// Installs the rules of `settings`, all of them or none: see the module docs. With
    /// `dry_run`, nothing changes and the passes that would run are returned.
    pub fn install(&self, settings: &Settings, dry_run: bool) -> Result<Vec<Pass>, Error> {
        match self {
            Backend::Nftables(nft) => {
                let pass = Pass {
                    command: nft.apply_command(),
                    document: render_nftables(settings),
                };
                if !dry_run {
                    nft.check_present()?;
                    nft.apply(&pass.document)?;
                }
                Ok(vec![pass])
            }
            Backend::Iptables { flavour, v4, v6 } => {
                let mut passes = vec![(v4, Some(settings))];
                if settings.ipv6 {
                    if kernel_has_ipv6() || dry_run {
                        passes.push((v6, Some(settings)));
                    } else {
                        info!("this kernel has no IPv6; only IPv4 is redirected");
                    }
                } else if !dry_run
                    && readable(*flavour, v6)
                    && unless_denied(v6.save_nat().map(|dump| has_trellis(&dump)), false)?
                {
                    // An earlier run's IPv6 rules go, so the tables match this run's
                    // settings.
                    passes.push((v6, None));
                }
                run_passes(&passes, dry_run)
            }
        }
    }

    /// Removes Trellis's rules (both families) and nothing else; with `dry_run`, only
    /// returns the passes that would.
    pub fn cleanup(&self, dry_run: bool) -> Result<Vec<Pass>, Error> {
        match self {
            Backend::Nftables(nft) => {
                let pass = Pass {
                    command: nft.apply_command(),
                    document: render_nftables_cleanup(),
                };
                if !dry_run {
                    nft.check_present()?;
                    nft.apply(&pass.document)?;
                }
                Ok(vec![pass])
            }
            Backend::Iptables { flavour, v4, v6 } => {
                let mut passes = Vec::new();
                // A legacy nat table the kernel never loaded holds nothing of ours.
                if *flavour != Flavour::Legacy || crate::detect::legacy_has_nat(Family::V4) {
                    passes.push((v4, None));
                }
                if readable(*flavour, v6) {
                    passes.push((v6, None));
                }
                run_passes(&passes, dry_run)
            }
        }
    }

    /// Whether Trellis's rules are installed with this backend. A backend that cannot
    /// run here (binaries missing, or a kernel without its interface) holds none; only
    /// a missing privilege is an error, since then nothing can be known.
    pub fn has_trellis(&self) -> Result<bool, Error> {
        match self {
            Backend::Nftables(nft) => match nft.check_present() {
                Ok(()) => unless_denied(nft.has_trellis(), false),
                Err(_) => Ok(false),
            },
            Backend::Iptables { flavour, v4, v6 } => {
                for iptables in [v4, v6] {
                    if readable(*flavour, iptables)
                        && unless_denied(iptables.save_nat().map(|dump| has_trellis(&dump)), false)?
                    {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        }
    }

    /// The resulting rules, for the log: the nat tables, or the Trellis table.
    pub fn listing(&self) -> Vec<(String, String)> {
        let shown = |result: Result<String, Error>| match result {
            Ok(text) => text.trim_end().to_owned(),
            Err(err) => format!("(cannot list: {err})"),
        };
        match self {
            Backend::Nftables(nft) => vec![("inet".to_owned(), shown(nft.list_trellis()))],
            Backend::Iptables { v4, v6, .. } => {
                let mut tables = vec![(Family::V4.name().to_owned(), shown(v4.save_nat()))];
                if kernel_has_ipv6() {
                    tables.push((Family::V6.name().to_owned(), shown(v6.save_nat())));
                }
                tables
            }
        }
    }
}

/// `result`, or `otherwise` where it failed for any reason but a missing privilege: for
/// questions about a backend that may not work on this host at all.
pub(crate) fn unless_denied<T>(result: Result<T, Error>, otherwise: T) -> Result<T, Error> {
    match result {
        Err(err @ Error::PermissionDenied { .. }) => Err(err),
        Err(err) => {
            debug!(error = %err, "treating as absent");
            Ok(otherwise)
        }
        Ok(value) => Ok(value),
    }
}

/// Whether `iptables` could hold rules of ours and may be read to find out: its binaries
/// exist, the kernel has its family, and, for legacy, the kernel already has a nat table
/// (reading one would create it).
fn readable(flavour: Flavour, iptables: &Iptables) -> bool {
    let family = iptables.family();
    iptables.check_present().is_ok()
        && (family == Family::V4 || kernel_has_ipv6())
        && (flavour != Flavour::Legacy || crate::detect::legacy_has_nat(family))
}

/// Runs one iptables pass per family: `Some(settings)` installs, `None` removes. Reads
/// every table before changing any, and undoes applied passes if a later one fails.
fn run_passes(
    passes: &[(&Iptables, Option<&Settings>)],
    dry_run: bool,
) -> Result<Vec<Pass>, Error> {
    let mut planned = Vec::new();
    for (iptables, settings) in passes {
        if !dry_run {
            iptables.check_present()?;
        }
        let before = match iptables.save_nat() {
            Ok(before) => before,
            // A dry run is for reading, possibly where the rules cannot be read; the
            // document for a fresh namespace is still worth printing.
            Err(err) if dry_run => {
                warn!(error = %err, "cannot read the nat table; rendering for an empty one");
                String::new()
            }
            Err(err) => return Err(err),
        };
        let document = match settings {
            Some(settings) => render(settings, iptables.family(), &before),
            None => render_cleanup(&before),
        };
        planned.push((*iptables, before, document));
    }
    let passes_out = planned
        .iter()
        .map(|(iptables, _, document)| Pass {
            command: iptables.restore_command(),
            document: document.clone(),
        })
        .collect();
    if dry_run {
        return Ok(passes_out);
    }
    for (index, (iptables, _, document)) in planned.iter().enumerate() {
        if let Err(failed) = iptables.restore(document) {
            for (done, before, _) in planned[..index].iter().rev() {
                if let Err(undo) = undo(done, before) {
                    return Err(Error::RollbackFailed {
                        failed: Box::new(failed),
                        family: done.family().name(),
                        undo: Box::new(undo),
                    });
                }
            }
            return Err(failed);
        }
    }
    Ok(passes_out)
}

/// Puts a family's nat table back as `before` showed it.
fn undo(iptables: &Iptables, before: &str) -> Result<(), Error> {
    match nat_section(before) {
        Some(table) => iptables.replace(&table),
        // No nat table before (legacy, never loaded): removing ours restores the rest.
        None => iptables.restore(&render_cleanup(&iptables.save_nat()?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::EXIT_UNKNOWN_BACKEND;

    #[test]
    fn backends_are_named_as_the_issue_names_them() {
        for (text, choice) in [
            ("auto", BackendChoice::Auto),
            ("legacy", BackendChoice::Legacy),
            ("nft", BackendChoice::Nft),
            ("nftables", BackendChoice::Nftables),
        ] {
            assert_eq!(BackendChoice::parse(text).ok(), Some(choice));
        }
        let err = BackendChoice::parse("ipfw").expect_err("unknown");
        assert_eq!(err.exit_code(), EXIT_UNKNOWN_BACKEND);
        assert_eq!(
            err.to_string(),
            "unknown --backend (env TRELLIS_BACKEND) \"ipfw\": expected legacy, nft, nftables or auto"
        );
    }

    #[test]
    fn named_binaries_replace_the_flavours_own() {
        let binaries = Binaries {
            ip6tables_restore: Some(PathBuf::from("/opt/ip6r")),
            ..Binaries::default()
        };
        assert!(binaries.named());
        let Backend::Iptables { v4, v6, .. } = binaries.iptables(Flavour::Legacy) else {
            panic!("an iptables backend");
        };
        assert_eq!(v4.restore_command(), "iptables-legacy-restore -w --noflush");
        assert_eq!(v6.restore_command(), "/opt/ip6r -w --noflush");
    }
}
