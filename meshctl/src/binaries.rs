//! Finding the mesh's other binaries.
//!
//! `cargo build --workspace --bins` and a release archive both put `trellis-controller`,
//! `trellis-proxy` and `trellis-proxy-init` next to `meshctl`, so that directory is the
//! default; `--bin-dir` (TRELLIS_BIN_DIR) points elsewhere.

use std::path::{Path, PathBuf};

use crate::Error;

pub const CONTROLLER: &str = "trellis-controller";
pub const PROXY: &str = "trellis-proxy";
pub const PROXY_INIT: &str = "trellis-proxy-init";

/// The directory the mesh binaries are taken from.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// `dir`, or else the directory of the running `meshctl`.
    pub fn locate(dir: Option<PathBuf>) -> Result<Self, Error> {
        let dir = match dir {
            Some(dir) => dir,
            None => {
                let exe = std::env::current_exe().map_err(Error::CurrentExe)?;
                exe.parent().map(Path::to_path_buf).unwrap_or_default()
            }
        };
        Ok(Binaries { dir })
    }

    /// The path of binary `name`, which must exist.
    pub fn path(&self, name: &'static str) -> Result<PathBuf, Error> {
        let path = self.dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(Error::MissingBinary { name, path })
        }
    }

    /// Fails on the first of the three mesh binaries that is missing.
    pub fn check_all(&self) -> Result<(), Error> {
        for name in [CONTROLLER, PROXY, PROXY_INIT] {
            self.path(name)?;
        }
        Ok(())
    }
}

/// The running `meshctl`, which the demo runs inside pods as its app.
pub fn meshctl() -> Result<PathBuf, Error> {
    std::env::current_exe().map_err(Error::CurrentExe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_is_named_with_the_build_command() {
        let bins = Binaries::locate(Some(PathBuf::from("/nonexistent/bin"))).unwrap();
        let err = bins.path(PROXY).unwrap_err().to_string();
        assert!(err.contains("`trellis-proxy`"), "{err}");
        assert!(err.contains("/nonexistent/bin/trellis-proxy"), "{err}");
        assert!(err.contains("cargo build --workspace --bins"), "{err}");
    }
}
