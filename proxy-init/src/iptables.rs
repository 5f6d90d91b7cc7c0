//! One family's `iptables-save` / `iptables-restore` pair (or `ip6tables-*`): reading
//! the nat table and applying a document to it in one transaction.

use std::path::PathBuf;

use crate::cidr::Family;
use crate::command::Binary;
use crate::error::Error;

/// The flags that set each binary, named in errors.
pub(crate) const SAVE_FLAG: &str = "--iptables-save";
pub(crate) const RESTORE_FLAG: &str = "--iptables-restore";
pub(crate) const SAVE6_FLAG: &str = "--ip6tables-save";
pub(crate) const RESTORE6_FLAG: &str = "--ip6tables-restore";

/// The pair of binaries that read and write one family's rules in the current network
/// namespace.
#[derive(Debug, Clone)]
pub struct Iptables {
    family: Family,
    save: Binary,
    restore: Binary,
}

impl Iptables {
    /// The IPv4 pair; names are looked up in `PATH` unless they contain a `/`.
    pub fn new(save: impl Into<PathBuf>, restore: impl Into<PathBuf>) -> Iptables {
        Iptables::for_family(Family::V4, save, restore)
    }

    /// The pair for `family` (`ip6tables-*` for IPv6).
    pub fn for_family(
        family: Family,
        save: impl Into<PathBuf>,
        restore: impl Into<PathBuf>,
    ) -> Iptables {
        let (save_flag, restore_flag) = match family {
            Family::V4 => (SAVE_FLAG, RESTORE_FLAG),
            Family::V6 => (SAVE6_FLAG, RESTORE6_FLAG),
        };
        Iptables {
            family,
            save: Binary::new(save, save_flag, "iptables"),
            restore: Binary::new(restore, restore_flag, "iptables"),
        }
    }

    pub fn family(&self) -> Family {
        self.family
    }

    /// Both binaries can be found (see [`Binary::check_present`]).
    pub fn check_present(&self) -> Result<(), Error> {
        self.save.check_present()?;
        self.restore.check_present()
    }

    /// The current nat table, as `iptables-save -t nat` prints it.
    pub fn save_nat(&self) -> Result<String, Error> {
        self.save.read(&["-t", "nat"])
    }

    /// The whole ruleset, every table, as `iptables-save` prints it.
    pub fn save_all(&self) -> Result<String, Error> {
        self.save.read(&[])
    }

    /// Applies `document` with `iptables-restore -w --noflush`: one transaction, so it
    /// either all applies or nothing changes. `-w` waits for the xtables lock instead of
    /// failing when kube-proxy or a CNI plugin holds it (legacy; nft ignores it).
    pub fn restore(&self, document: &str) -> Result<(), Error> {
        self.restore.write(&["-w", "--noflush"], document)
    }

    /// Replaces the tables named in `document` with its contents (no `--noflush`): how
    /// a saved nat table is put back exactly.
    pub fn replace(&self, document: &str) -> Result<(), Error> {
        self.restore.write(&["-w"], document)
    }

    /// How [`restore`](Self::restore) is invoked, for `--dry-run` to print.
    pub fn restore_command(&self) -> String {
        format!("{} -w --noflush", self.restore.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::EXIT_NO_BINARY;

    #[test]
    fn a_missing_binary_names_its_flag() {
        let iptables = Iptables::new(
            "/nonexistent/iptables-save",
            "/nonexistent/iptables-restore",
        );
        let err = iptables.save_nat().expect_err("no such binary");
        assert_eq!(err.exit_code(), EXIT_NO_BINARY);
        assert_eq!(
            err.to_string(),
            "/nonexistent/iptables-save not found: install iptables, or point --iptables-save \
             (env TRELLIS_IPTABLES_SAVE) at the binary"
        );
        let err = iptables
            .restore("*nat\nCOMMIT\n")
            .expect_err("no such binary");
        assert!(err.to_string().contains("--iptables-restore"), "{err}");
    }

    #[test]
    fn the_ipv6_pair_names_the_ipv6_flags() {
        let ip6tables = Iptables::for_family(Family::V6, "/nonexistent/a", "/nonexistent/b");
        let err = ip6tables.check_present().expect_err("no such binary");
        assert!(err.to_string().contains("--ip6tables-save"), "{err}");
        assert_eq!(ip6tables.restore_command(), "/nonexistent/b -w --noflush");
    }
}
