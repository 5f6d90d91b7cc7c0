//! Each pod's `/etc/hosts`: how a service's name finds its virtual IP without DNS.
//!
//! `ip netns exec NETNS` bind-mounts every file of `/etc/netns/NETNS/` over its
//! namesake in `/etc` for the program it starts, so the app and the sidecar of a pod
//! see `/etc/netns/NETNS/hosts` as `/etc/hosts`. The file must exist before the
//! pod's first program starts (a bind mount is made then or never), and it is
//! rewritten in place from then on: a bind mount holds on to the inode it was made
//! with, so a new file renamed over it would stay invisible to running programs.
//!
//! A service is known as `SVC.NS` and `SVC.NS.svc.cluster.local` everywhere, and as
//! plain `SVC` in its own namespace, as a Kubernetes pod's DNS search path resolves
//! it. The `svc.cluster.local` suffix is Kubernetes' DNS domain, which does not
//! change with the mesh's trust domain.

use std::fs::{self, OpenOptions};
use std::io::{Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::state::{PodRecord, ServiceRecord, make_dir};

/// Where `ip netns exec` looks for a namespace's own `/etc` files.
const NETNS_ETC: &str = "/etc/netns";

/// `/etc/netns/NETNS`.
pub fn dir_of(netns: &str) -> PathBuf {
    PathBuf::from(NETNS_ETC).join(netns)
}

/// The hosts file of `pod`, given every service of the mesh.
pub fn render(pod: &PodRecord, services: &[ServiceRecord]) -> String {
    let mut text = format!(
        "# /etc/hosts of pod {} in namespace {}, written by meshctl local.\n\
         # Service names resolve to their virtual IPs; rewritten when a service comes or goes.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         {}\t{}\n",
        pod.name, pod.namespace, pod.ip, pod.name
    );
    for service in services {
        let (name, namespace) = (&service.name, &service.namespace);
        text.push_str(&format!(
            "{}\t{name}.{namespace} {name}.{namespace}.svc.cluster.local",
            service.vip
        ));
        if *namespace == pod.namespace {
            text.push_str(&format!(" {name}"));
        }
        text.push('\n');
    }
    text
}

/// Writes `pod`'s hosts file, in place if it exists.
pub fn write(pod: &PodRecord, services: &[ServiceRecord]) -> Result<(), Error> {
    let dir = dir_of(&pod.netns);
    make_dir(&dir)?;
    rewrite_in_place(&dir.join("hosts"), &render(pod, services))
}

/// Replaces the contents of `path` (created 0644 if absent) without replacing its
/// inode.
fn rewrite_in_place(path: &Path, contents: &str) -> Result<(), Error> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o644)
        .open(path)
        .map_err(Error::io("cannot write", path))?;
    // The new text first, then the length: a reader in between sees the new entries
    // and at worst a stale tail, never an empty file.
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.write_all(contents.as_bytes()))
        .and_then(|()| file.set_len(contents.len() as u64))
        .map_err(Error::io("cannot write", path))
}

/// Removes `/etc/netns/NETNS/`; an absent directory is fine.
pub fn remove(netns: &str) -> Result<(), Error> {
    let dir = dir_of(netns);
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io("cannot remove", dir)(e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Phase;

    #[test]
    fn a_service_is_known_by_its_short_name_only_in_its_own_namespace() {
        let pod = PodRecord {
            name: "client".into(),
            namespace: "demo".into(),
            service_account: "client".into(),
            identity: "spiffe://example.org/ns/demo/sa/client".into(),
            ip: [10, 199, 1, 3].into(),
            netns: "trellisdemo-client".into(),
            host_veth: "trellisdemov3".into(),
            ports: vec![],
            command: vec![],
            service: None,
            phase: Phase::Ready,
        };
        let services = [
            ServiceRecord {
                namespace: "demo".into(),
                name: "echo".into(),
                vip: [10, 199, 1, 254].into(),
            },
            ServiceRecord {
                namespace: "shop".into(),
                name: "web".into(),
                vip: [10, 199, 1, 253].into(),
            },
        ];
        let text = render(&pod, &services);
        let entries: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            entries,
            [
                "127.0.0.1\tlocalhost",
                "::1\tlocalhost ip6-localhost ip6-loopback",
                "10.199.1.3\tclient",
                "10.199.1.254\techo.demo echo.demo.svc.cluster.local echo",
                "10.199.1.253\tweb.shop web.shop.svc.cluster.local",
            ]
        );
    }

    #[test]
    fn a_rewrite_keeps_the_inode_that_a_bind_mount_holds() {
        let dir = std::env::temp_dir().join(format!("meshctl-hosts-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hosts");
        rewrite_in_place(&path, "a much longer first version of the file\n").unwrap();
        let before = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap());
        rewrite_in_place(&path, "short\n").unwrap();
        let after = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap());
        assert_eq!(before, after);
        assert_eq!(fs::read_to_string(&path).unwrap(), "short\n");
        fs::remove_dir_all(&dir).unwrap();
    }
}
