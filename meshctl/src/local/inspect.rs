//! Looking into pods: running a command inside one, listing them, reading their logs.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, Output};

use trellis_netns::{command_line, exec_in, netns_exists};

use super::objects::{members_of, service_ports};
use super::{ADMIN_PORT, Local, split_command};
use crate::probe::is_ready;
use crate::state::{Phase, PodRecord, ServiceRecord, read_json};
use crate::{Error, process};

impl Local {
    /// Runs `command` inside pod `name` in the foreground, as root: its outbound
    /// traffic goes through the pod's sidecar like the app's. Returns its exit code
    /// (128 + the signal's number if a signal ended it, as a shell would).
    pub fn exec(&self, name: &str, command: &[OsString]) -> Result<i32, Error> {
        let mut child = self.command_in(name, command)?;
        let status = child.status().map_err(|error| Error::Spawn {
            command: command_line(&child),
            error,
        })?;
        Ok(status
            .code()
            .or_else(|| status.signal().map(|signal| 128 + signal))
            .unwrap_or(1))
    }

    /// Like [`exec`](Self::exec), but returns the command's output instead of showing it.
    pub fn exec_output(&self, name: &str, command: &[OsString]) -> Result<Output, Error> {
        let mut child = self.command_in(name, command)?;
        child.output().map_err(|error| Error::Spawn {
            command: command_line(&child),
            error,
        })
    }

    fn command_in(&self, name: &str, command: &[OsString]) -> Result<Command, Error> {
        let pod = self.pod(name)?;
        if !netns_exists(&pod.netns) {
            return Err(Error::NoSuchPod(name.to_string()));
        }
        let Some((program, args)) = split_command(command) else {
            return Err(Error::InvalidFlag {
                flag: "command",
                value: String::new(),
                reason: "give the command to run after `--`".into(),
            });
        };
        let mut child = exec_in(&pod.netns, program);
        child.args(args);
        Ok(child)
    }

    /// Prints the table of `meshctl local ls`.
    pub fn ls(&self, out: &mut impl std::io::Write) -> Result<(), Error> {
        self.state.load_settings()?;
        let rows: Vec<[String; 5]> = self
            .state
            .pods()?
            .into_iter()
            .map(|pod| {
                let files = self.state.pod(&pod.name);
                let ready = is_ready(SocketAddr::from((pod.ip, ADMIN_PORT)));
                let app = match (pod.command.is_empty(), process::running(&files.app_pid())) {
                    (true, _) => "-".to_string(),
                    (false, Some(pid)) => format!("running (pid {pid})"),
                    (false, None) => "exited".to_string(),
                };
                [
                    pod.name,
                    pod.ip.to_string(),
                    pod.identity,
                    if ready { "yes" } else { "no" }.to_string(),
                    app,
                ]
            })
            .collect();
        let header = ["NAME", "IP", "IDENTITY", "READY", "APP"].map(String::from);
        let mut text = crate::table::render(&header, &rows);
        let services = self.state.services()?;
        if !services.is_empty() {
            text.push('\n');
            text.push_str(&self.services_table(&services)?);
        }
        out.write_all(text.as_bytes())
            .map_err(Error::io("cannot write to", "stdout"))
    }

    /// SERVICE (as pods call it), VIP, PORTS, and the addresses of its ready pods.
    fn services_table(&self, services: &[ServiceRecord]) -> Result<String, Error> {
        let pods = self.state.pods()?;
        let rows: Vec<[String; 4]> = services
            .iter()
            .map(|service| {
                let members = members_of(&pods, &service.namespace, &service.name);
                let ports: Vec<String> =
                    service_ports(&members).iter().map(u16::to_string).collect();
                let ready: Vec<String> = members
                    .iter()
                    .filter(|p| p.phase == Phase::Ready)
                    .map(|p| p.ip.to_string())
                    .collect();
                [
                    format!("{}.{}", service.name, service.namespace),
                    service.vip.to_string(),
                    ports.join(","),
                    if ready.is_empty() {
                        "<none ready>".to_string()
                    } else {
                        ready.join(",")
                    },
                ]
            })
            .collect();
        let header = ["SERVICE", "VIP", "PORTS", "ENDPOINTS"].map(String::from);
        Ok(crate::table::render(&header, &rows))
    }

    /// The service `pod` is an endpoint of, if any.
    pub fn service_of(&self, pod: &PodRecord) -> Result<Option<ServiceRecord>, Error> {
        let Some(name) = &pod.service else {
            return Ok(None);
        };
        read_json(&self.state.service(&pod.namespace, name), "service record").map(Some)
    }

    /// The app's (or with `proxy`, the sidecar's) log of pod `name`.
    pub fn logs(
        &self,
        name: &str,
        proxy: bool,
        out: &mut impl std::io::Write,
    ) -> Result<(), Error> {
        self.pod(name)?;
        let files = self.state.pod(name);
        let path = if proxy {
            files.proxy_log()
        } else {
            files.app_log()
        };
        match std::fs::read(&path) {
            Ok(text) => out
                .write_all(&text)
                .map_err(Error::io("cannot write to", "stdout")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let what = if proxy { "proxy" } else { "app" };
                writeln!(out, "(pod {name} has no {what} log yet)")
                    .map_err(Error::io("cannot write to", "stdout"))
            }
            Err(e) => Err(Error::io("cannot read", path)(e)),
        }
    }

    /// The record of pod `name`.
    pub fn pod(&self, name: &str) -> Result<PodRecord, Error> {
        self.state.load_settings()?;
        let record = self.state.pod(name).record();
        if !record.exists() {
            return Err(Error::NoSuchPod(name.to_string()));
        }
        read_json(&record, "pod record")
    }
}
