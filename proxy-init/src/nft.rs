//! The `nft` program: listing tables, and loading a document in one transaction.

use std::path::PathBuf;

use crate::command::Binary;
use crate::error::Error;
use crate::nftables::NFT_TABLE;

pub(crate) const NFT_FLAG: &str = "--nft";

/// The `nft` binary of the current network namespace.
#[derive(Debug, Clone)]
pub struct Nft {
    binary: Binary,
}

impl Nft {
    /// `path` is looked up in `PATH` unless it contains a `/`.
    pub fn new(path: impl Into<PathBuf>) -> Nft {
        Nft {
            binary: Binary::new(path, NFT_FLAG, "nftables"),
        }
    }

    pub fn check_present(&self) -> Result<(), Error> {
        self.binary.check_present()
    }

    /// Every table as `family name` (`inet trellis`, `ip nat`), in `nft list tables`
    /// order.
    pub fn tables(&self) -> Result<Vec<String>, Error> {
        let listing = self.binary.read(&["list", "tables"])?;
        Ok(listing
            .lines()
            .filter_map(|line| line.trim().strip_prefix("table "))
            .map(str::to_owned)
            .collect())
    }

    /// Whether `table inet trellis` exists.
    pub fn has_trellis(&self) -> Result<bool, Error> {
        Ok(self.tables()?.iter().any(|table| table == NFT_TABLE))
    }

    /// Loads `document` with `nft -f -`: one transaction, all of it or nothing.
    pub fn apply(&self, document: &str) -> Result<(), Error> {
        self.binary.write(&["-f", "-"], document)
    }

    /// `table inet trellis` as `nft list table` prints it, for the log.
    pub fn list_trellis(&self) -> Result<String, Error> {
        self.binary.read(&["list", "table", "inet", "trellis"])
    }

    /// How [`apply`](Self::apply) is invoked, for `--dry-run` to print.
    pub fn apply_command(&self) -> String {
        format!("{} -f -", self.binary.name())
    }
}
