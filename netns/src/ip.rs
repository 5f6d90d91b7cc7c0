//! Running `ip` and `iptables`, and turning their failures into errors a person can act on.
//!
//! We shell out rather than speak rtnetlink: the commands are the ones an operator would
//! type to inspect or repair the same state, so every error can quote one verbatim.

use std::ffi::OsStr;
use std::process::{Command, Output};

use crate::Error;

/// Runs `program args...` to completion; its stdout on success.
pub(crate) fn run<I, S>(program: &str, args: I) -> Result<String, Error>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(program);
    command.args(args);
    let output = output_of(&mut command)?;
    check(&command, output)
}

/// Runs `ip args...`.
pub(crate) fn ip<I, S>(args: I) -> Result<String, Error>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run("ip", args)
}

/// Runs `ip args...` and reports whether it succeeded, for the "does it exist" questions
/// `ip` answers only through its exit status. Failing to start `ip` is still an error.
pub(crate) fn ip_succeeds<I, S>(args: I) -> Result<bool, Error>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new("ip");
    command.args(args);
    Ok(output_of(&mut command)?.status.success())
}

/// Whether a link of that name exists in the caller's (host) network namespace.
pub(crate) fn link_exists(name: &str) -> Result<bool, Error> {
    ip_succeeds(["link", "show", "dev", name])
}

pub(crate) fn output_of(command: &mut Command) -> Result<Output, Error> {
    command.output().map_err(|source| Error::Spawn {
        command: display(command),
        source,
    })
}

pub(crate) fn check(command: &Command, output: Output) -> Result<String, Error> {
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(Error::CommandFailed {
        command: display(command),
        status: output.status,
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    })
}

/// `program arg arg`, as it would be typed.
pub fn display(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_command_is_reported_with_its_status_and_stderr() {
        let err = run("sh", ["-c", "echo nope >&2; exit 3"]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`sh -c echo nope >&2; exit 3`"), "{text}");
        assert!(text.contains("exit status: 3"), "{text}");
        assert!(text.contains("nope"), "{text}");
    }

    #[test]
    fn a_missing_program_is_reported_as_such() {
        let err = run("trellis-no-such-program", ["x"]).unwrap_err();
        assert!(matches!(err, Error::Spawn { .. }), "{err}");
        assert!(
            err.to_string().contains("trellis-no-such-program x"),
            "{err}"
        );
    }
}
