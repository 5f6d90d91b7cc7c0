//! Running the firewall's own programs (`iptables-*-save`, `iptables-*-restore`, `nft`)
//! and sorting their failures into the causes an operator can act on: missing binary,
//! missing privilege, rejected rules.
//!
//! Every binary is a setting rather than a name baked in, because which one is right
//! depends on the node, so each [`Binary`] also knows the flag that set it: an error
//! can then say what to change.

use std::io::{self, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};

use crate::error::{Error, env_of};

/// A program proxy-init runs, and where it came from.
#[derive(Debug, Clone)]
pub struct Binary {
    /// Looked up in `PATH` unless it contains a `/`.
    pub path: PathBuf,
    /// The flag that sets it, named in errors.
    pub flag: &'static str,
    /// The Debian package that provides it, named when it is missing.
    pub package: &'static str,
}

impl Binary {
    pub fn new(path: impl Into<PathBuf>, flag: &'static str, package: &'static str) -> Binary {
        Binary {
            path: path.into(),
            flag,
            package,
        }
    }

    pub fn name(&self) -> String {
        self.path.display().to_string()
    }

    /// Whether the binary can be found, without running it: checked for every binary a
    /// run needs before the first rule changes, so a missing one cannot stop it halfway.
    pub fn check_present(&self) -> Result<(), Error> {
        let executable = |path: &Path| {
            path.metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        };
        let found = if self.path.components().count() > 1 {
            executable(&self.path)
        } else {
            std::env::var_os("PATH").is_some_and(|paths| {
                std::env::split_paths(&paths).any(|dir| executable(&dir.join(&self.path)))
            })
        };
        if found { Ok(()) } else { Err(self.not_found()) }
    }

    fn not_found(&self) -> Error {
        Error::BinaryNotFound {
            binary: self.name(),
            package: self.package,
            flag: self.flag,
            env: env_of(self.flag),
        }
    }

    /// Runs the binary with `args`, feeding it `stdin`, and returns its output whatever
    /// its exit status; only failing to start or to exchange data is an error here.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<Output, Error> {
        let mut command = Command::new(&self.path);
        command
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => self.not_found(),
            _ => Error::CannotRun {
                binary: self.name(),
                flag: self.flag,
                env: env_of(self.flag),
                source,
            },
        })?;
        let pipe_error = |source| Error::Pipe {
            binary: self.name(),
            source,
        };
        std::thread::scope(|scope| {
            // Written from another thread so that a child which stops reading (it failed
            // early) cannot leave both processes blocked on full pipes.
            let writer = match (child.stdin.take(), stdin) {
                (Some(mut pipe), Some(text)) => {
                    Some(scope.spawn(move || pipe.write_all(text.as_bytes())))
                }
                _ => None,
            };
            let output = child.wait_with_output().map_err(pipe_error)?;
            let written = match writer.map(|handle| handle.join()) {
                None => Ok(()),
                Some(Ok(result)) => result,
                Some(Err(_)) => Err(io::Error::other("stdin writer thread panicked")),
            };
            match written {
                // A child that exits before reading everything closes the pipe; its exit
                // status and stderr say why, which is the error worth reporting.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe && !output.status.success() => {
                    Ok(output)
                }
                Err(e) => Err(pipe_error(e)),
                Ok(()) => Ok(output),
            }
        })
    }

    /// The error for a run that exited non-zero: a permission problem, which has its own
    /// exit code and advice, or else what `other` makes of the status and stderr.
    pub fn failure(
        &self,
        output: &Output,
        other: impl FnOnce(String, ExitStatus, String) -> Error,
    ) -> Error {
        let detail = one_line(&output.stderr);
        if is_permission_problem(&detail) {
            Error::PermissionDenied {
                binary: self.name(),
                detail,
            }
        } else {
            other(self.name(), output.status, detail)
        }
    }

    /// Runs the binary to read state: its stdout, or [`Error::SaveFailed`].
    pub fn read(&self, args: &[&str]) -> Result<String, Error> {
        let output = self.run(args, None)?;
        if !output.status.success() {
            let command = format!("{} {}", self.name(), args.join(" "));
            return Err(
                self.failure(&output, |_, status, detail| Error::SaveFailed {
                    command,
                    status,
                    detail,
                }),
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs the binary to change state from `document`, or [`Error::RestoreFailed`].
    pub fn write(&self, args: &[&str], document: &str) -> Result<(), Error> {
        let output = self.run(args, Some(document))?;
        if !output.status.success() {
            return Err(
                self.failure(&output, |binary, status, detail| Error::RestoreFailed {
                    binary,
                    status,
                    detail,
                }),
            );
        }
        Ok(())
    }
}

/// How iptables (both backends) and nft word a missing privilege: iptables-nft says
/// "Permission denied (you must be root)", legacy says "Permission denied" or
/// "Operation not permitted", nft says "Operation not permitted".
fn is_permission_problem(stderr: &str) -> bool {
    let stderr = stderr.to_lowercase();
    [
        "permission denied",
        "you must be root",
        "operation not permitted",
    ]
    .iter()
    .any(|needle| stderr.contains(needle))
}

/// A child's stderr as one line, so the error stays one line too.
pub(crate) fn one_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        "no error output".to_owned()
    } else {
        lines.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::EXIT_NO_BINARY;

    #[test]
    fn stderr_becomes_one_line() {
        let stderr = b"iptables-restore v1.8.9 (nf_tables): too many ports specified\nError occurred at line: 4\n\n";
        assert_eq!(
            one_line(stderr),
            "iptables-restore v1.8.9 (nf_tables): too many ports specified; Error occurred at line: 4"
        );
        assert_eq!(one_line(b""), "no error output");
    }

    #[test]
    fn permission_problems_are_recognised_in_every_backend() {
        assert!(is_permission_problem(
            "iptables-save v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)"
        ));
        assert!(is_permission_problem(
            "iptables-restore v1.8.9 (legacy): iptables-restore: unable to initialize table 'nat'; Operation not permitted"
        ));
        assert!(is_permission_problem(
            "Error: Could not process rule: Operation not permitted"
        ));
        assert!(!is_permission_problem("too many ports specified"));
    }

    #[test]
    fn a_missing_binary_names_its_flag_and_package() {
        let binary = Binary::new("/nonexistent/nft", "--nft", "nftables");
        let err = binary.check_present().expect_err("no such binary");
        assert_eq!(err.exit_code(), EXIT_NO_BINARY);
        assert_eq!(
            err.to_string(),
            "/nonexistent/nft not found: install nftables, or point --nft (env TRELLIS_NFT) \
             at the binary"
        );
        let err = binary
            .read(&["list", "tables"])
            .expect_err("no such binary");
        assert_eq!(err.exit_code(), EXIT_NO_BINARY);
    }

    #[test]
    fn binaries_are_found_on_path_or_by_path() {
        assert!(Binary::new("sh", "--x", "dash").check_present().is_ok());
        assert!(
            Binary::new("/bin/sh", "--x", "dash")
                .check_present()
                .is_ok()
        );
        assert!(
            Binary::new("trellis-no-such-binary", "--x", "x")
                .check_present()
                .is_err()
        );
    }
}
