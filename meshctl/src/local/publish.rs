//! Keeping what discovery and the pods' hosts files say in step with the pods and
//! services recorded in the state directory.
//!
//! Every write happens under the state lock and is computed from the records as a
//! whole, so two `meshctl` commands never interleave and a file never reflects half a
//! change. A pod's life, as discovery sees it: `run` records it (phase `Starting`),
//! publishes its own Endpoints and adds it to its service as a not-ready endpoint;
//! once its app listens it becomes ready (`Ready`); `rm` first takes it out
//! (`Stopping`), and only then stops it, so no new connection is sent to a pod that
//! is going away.

use std::fs;

use super::Local;
use super::objects::{members_of, pod_file_name, pod_objects, service_file_name, service_objects};
use super::{addresses, hosts};
use crate::Error;
use crate::state::{LocalSettings, Phase, PodRecord, ServiceRecord, write_file, write_json};

impl Local {
    /// The record of service `name` in `namespace`, creating it (and taking its
    /// virtual IP) if it is new; `true` when it is new. The caller holds the lock and
    /// passes every address already taken.
    pub(super) fn service_or_create(
        &self,
        settings: &LocalSettings,
        namespace: &str,
        name: &str,
        taken: &[std::net::Ipv4Addr],
    ) -> Result<(ServiceRecord, bool), Error> {
        let path = self.state.service(namespace, name);
        if path.exists() {
            return Ok((crate::state::read_json(&path, "service record")?, false));
        }
        let file = service_file_name(namespace, name);
        if let Some(other) = self
            .state
            .services()?
            .into_iter()
            .find(|s| service_file_name(&s.namespace, &s.name) == file)
        {
            return Err(Error::InvalidFlag {
                flag: "service",
                value: name.to_string(),
                reason: format!(
                    "service {name} in {namespace} would share the file {file} with service {} in {}: choose another name",
                    other.name, other.namespace
                ),
            });
        }
        let subnet = settings.subnet()?;
        let vip = addresses::service_vip(subnet, taken).ok_or_else(|| Error::SubnetFull {
            subnet: subnet.to_string(),
            pods: self.state.pods().map(|p| p.len()).unwrap_or(0),
            services: self.state.services().map(|s| s.len()).unwrap_or(0),
        })?;
        let service = ServiceRecord {
            namespace: namespace.to_string(),
            name: name.to_string(),
            vip,
        };
        write_json(&path, &service)?;
        Ok((service, true))
    }

    /// Publishes a newly recorded `pod`: its own Endpoints, its service's file, and
    /// hosts files (every pod's when its service is new, else its own). The caller
    /// holds the lock.
    pub(super) fn publish_new(&self, pod: &PodRecord, new_service: bool) -> Result<(), Error> {
        self.write_pod_objects(pod)?;
        self.sync_service_of(pod)?;
        if new_service {
            self.rewrite_all_hosts()
        } else {
            hosts::write(pod, &self.state.services()?)
        }
    }

    /// Marks pod `name` ready: from now on its service sends it connections.
    pub(super) fn publish_ready(&self, name: &str) -> Result<PodRecord, Error> {
        let _lock = self.state.lock()?;
        let pod = self.set_phase(name, Phase::Ready)?;
        self.write_pod_objects(&pod)?;
        self.sync_service_of(&pod)?;
        Ok(pod)
    }

    /// Takes `pod` out of discovery: its own Endpoints go, its service no longer lists
    /// it, and a service left without pods goes with its name. Its record stays
    /// (as `Stopping`) until the pod is removed.
    pub(super) fn unpublish(&self, pod: &PodRecord) -> Result<(), Error> {
        let _lock = self.state.lock()?;
        let pod = self.set_phase(&pod.name, Phase::Stopping)?;
        let own = self.state.config_dir().join(pod_file_name(&pod.name));
        remove_if_present(&own)?;
        if self.sync_service_of(&pod)? == Membership::Gone {
            self.rewrite_all_hosts()?;
        }
        Ok(())
    }

    fn set_phase(&self, name: &str, phase: Phase) -> Result<PodRecord, Error> {
        let record = self.state.pod(name).record();
        let mut pod: PodRecord = crate::state::read_json(&record, "pod record")?;
        pod.phase = phase;
        write_json(&record, &pod)?;
        Ok(pod)
    }

    fn write_pod_objects(&self, pod: &PodRecord) -> Result<(), Error> {
        let path = self.state.config_dir().join(pod_file_name(&pod.name));
        write_file(&path, pod_objects(pod)?.as_bytes(), 0o644)
    }

    /// Rewrites the file of `pod`'s service from its members, or removes the file and
    /// the service's record when no member is left.
    fn sync_service_of(&self, pod: &PodRecord) -> Result<Membership, Error> {
        let Some(name) = &pod.service else {
            return Ok(Membership::None);
        };
        let record = self.state.service(&pod.namespace, name);
        let file = self
            .state
            .config_dir()
            .join(service_file_name(&pod.namespace, name));
        let pods = self.state.pods()?;
        let members = members_of(&pods, &pod.namespace, name);
        if members.is_empty() {
            remove_if_present(&file)?;
            remove_if_present(&record)?;
            return Ok(Membership::Gone);
        }
        let service: ServiceRecord = crate::state::read_json(&record, "service record")?;
        write_file(
            &file,
            service_objects(&service, &members)?.as_bytes(),
            0o644,
        )?;
        Ok(Membership::Listed)
    }

    /// Every live pod's hosts file, after a service came or went.
    fn rewrite_all_hosts(&self) -> Result<(), Error> {
        let services = self.state.services()?;
        for pod in self.state.pods()? {
            // A stopping pod's hosts directory is about to go: never bring it back.
            if pod.phase != Phase::Stopping {
                hosts::write(&pod, &services)?;
            }
        }
        Ok(())
    }
}

/// What became of a pod's service after its file was brought up to date.
#[derive(Debug, PartialEq, Eq)]
enum Membership {
    /// The pod serves no service.
    None,
    /// The service has pods and its file lists them.
    Listed,
    /// Its last pod went, and the service with it.
    Gone,
}

fn remove_if_present(path: &std::path::Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io("cannot remove", path)(e))
        }
        _ => Ok(()),
    }
}
