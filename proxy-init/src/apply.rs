//! Running `iptables-save` and `iptables-restore`: the only place the crate touches the
//! kernel.
//!
//! Both binaries are settings rather than names baked in, because which one is right
//! (nft-backed or legacy) depends on the node, and a later issue adds the choice. Their
//! failures are sorted into the causes an operator can act on: missing binary, missing
//! privilege, rejected rules.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};

use crate::error::{Error, env_of};

/// The flag that sets the `iptables-save` binary (named in errors).
pub(crate) const SAVE_FLAG: &str = "--iptables-save";
/// The flag that sets the `iptables-restore` binary (named in errors).
pub(crate) const RESTORE_FLAG: &str = "--iptables-restore";

/// The pair of binaries that read and write the current network namespace's rules.
#[derive(Debug, Clone)]
pub struct Iptables {
    save: PathBuf,
    restore: PathBuf,
}

impl Iptables {
    /// `save` and `restore` are looked up in `PATH` unless they contain a `/`.
    pub fn new(save: impl Into<PathBuf>, restore: impl Into<PathBuf>) -> Iptables {
        Iptables {
            save: save.into(),
            restore: restore.into(),
        }
    }

    /// The current nat table, as `iptables-save -t nat` prints it.
    pub fn save_nat(&self) -> Result<String, Error> {
        let child = spawn(
            Command::new(&self.save)
                .args(["-t", "nat"])
                .stdin(Stdio::null()),
            &self.save,
            SAVE_FLAG,
        )?;
        let output = child.wait_with_output().map_err(|source| Error::Pipe {
            binary: display(&self.save),
            source,
        })?;
        if !output.status.success() {
            return Err(failure(&self.save, &output, |binary, status, detail| {
                Error::SaveFailed {
                    binary,
                    status,
                    detail,
                }
            }));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Applies `document` with `iptables-restore -w --noflush`: one transaction, so it
    /// either all applies or nothing changes. `-w` waits for the xtables lock instead of
    /// failing when kube-proxy or a CNI plugin holds it (legacy backend; nft ignores it).
    pub fn restore(&self, document: &str) -> Result<(), Error> {
        let mut command = Command::new(&self.restore);
        command.args(["-w", "--noflush"]).stdin(Stdio::piped());
        let mut child = spawn(&mut command, &self.restore, RESTORE_FLAG)?;
        let pipe_error = |source| Error::Pipe {
            binary: display(&self.restore),
            source,
        };
        let output: Output = std::thread::scope(|scope| {
            // Written from another thread so that a child which stops reading (it failed
            // early) cannot leave both processes blocked on full pipes.
            let writer = child
                .stdin
                .take()
                .map(|mut stdin| scope.spawn(move || stdin.write_all(document.as_bytes())));
            let output = child.wait_with_output().map_err(pipe_error)?;
            let written = match writer.map(|handle| handle.join()) {
                Some(Ok(result)) => result,
                Some(Err(_)) => Err(io::Error::other("stdin writer thread panicked")),
                None => Err(io::Error::other("stdin was not captured")),
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
        })?;
        if !output.status.success() {
            return Err(failure(&self.restore, &output, |binary, status, detail| {
                Error::RestoreFailed {
                    binary,
                    status,
                    detail,
                }
            }));
        }
        Ok(())
    }
}

fn spawn(command: &mut Command, binary: &Path, flag: &'static str) -> Result<Child, Error> {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => Error::BinaryNotFound {
                binary: display(binary),
                flag,
                env: env_of(flag),
            },
            _ => Error::CannotRun {
                binary: display(binary),
                flag,
                env: env_of(flag),
                source,
            },
        })
}

/// The error for a run of `binary` that exited non-zero: a permission problem, which
/// has its own exit code and advice, or else what `other` makes of it.
fn failure(
    binary: &Path,
    output: &Output,
    other: impl FnOnce(String, ExitStatus, String) -> Error,
) -> Error {
    let detail = one_line(&output.stderr);
    if is_permission_problem(&detail) {
        Error::PermissionDenied {
            binary: display(binary),
            detail,
        }
    } else {
        other(display(binary), output.status, detail)
    }
}

/// How iptables (both backends) words a missing privilege: nft says "Permission denied
/// (you must be root)", legacy says "Permission denied" or "Operation not permitted",
/// and the legacy lock file adds its own "Permission denied".
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
fn one_line(stderr: &[u8]) -> String {
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

fn display(binary: &Path) -> String {
    binary.display().to_string()
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
    fn permission_problems_are_recognised_in_both_backends() {
        assert!(is_permission_problem(
            "iptables-save v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)"
        ));
        assert!(is_permission_problem(
            "iptables-restore v1.8.9 (legacy): iptables-restore: unable to initialize table 'nat'; Operation not permitted"
        ));
        assert!(!is_permission_problem("too many ports specified"));
    }

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
}
