//! Commands that start a program inside a pod.
//!
//! `ip netns exec` enters the namespace (and bind-mounts `/etc/netns/NAME/*` over
//! `/etc`, which is how a pod later gets its own hosts file), then execs the program, so
//! the child's pid is the program's pid. `setpriv` likewise execs after switching ids,
//! which is how the proxy runs as its own uid: the uid the pod's iptables rules exempt.

use std::ffi::OsStr;
use std::process::Command;

/// `ip netns exec NETNS PROGRAM`; add the program's arguments with `.arg`/`.args`.
pub fn exec_in(netns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", netns]).arg(program);
    command
}

/// `ip netns exec NETNS setpriv --reuid UID --regid GID --clear-groups -- PROGRAM`:
/// the program runs inside the pod as `uid`/`gid` with no supplementary groups.
pub fn exec_in_as(netns: &str, uid: u32, gid: u32, program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", netns, "setpriv"])
        .args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()])
        .args(["--clear-groups", "--"])
        .arg(program);
    command
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ip::display;

    #[test]
    fn a_program_runs_in_the_pod_as_root_or_as_a_given_user() {
        let mut root = exec_in("pod-a", "echo");
        root.arg("hi");
        assert_eq!(display(&root), "ip netns exec pod-a echo hi");
        let mut proxy = exec_in_as("pod-a", 2102, 2102, "/bin/trellis-proxy");
        proxy.arg("--help");
        assert_eq!(
            display(&proxy),
            "ip netns exec pod-a setpriv --reuid 2102 --regid 2102 --clear-groups -- /bin/trellis-proxy --help"
        );
    }
}
