//! The congestion control of connections inside the pod: after proxy-init, every
//! connection to one of the pod's own addresses (loopback, its pod IPs) runs the
//! algorithm `--local-congestion-control` names, at both ends, while a connection to
//! another host keeps the namespace's default; a second run changes nothing, and
//! `--cleanup` takes the algorithm off again.

use std::net::{SocketAddr, TcpListener, TcpStream};

use anyhow::{Context as _, bail};
use nix::sys::socket::{getsockopt, sockopt};
use trellis_netns::run_in;

use crate::support::{Backend, PEER_IP, PEER_IP6, POD_IP, POD_IP6, Pod};

/// The backend does not matter here; the one `auto` picks on a fresh node.
const BACKEND: Backend = Backend::Nft;

/// Connections to other hosts are not redirected, so that one can be opened to the
/// peer and its algorithm read.
const SKIP_PEER: [&str; 2] = ["--skip-outbound-cidrs", "10.230.0.0/24,fd00:230::/64"];

/// The addresses a connection inside the pod can go to: each of the pod's own.
fn local_addrs() -> [String; 4] {
    [
        "127.0.0.1:0".to_owned(),
        "[::1]:0".to_owned(),
        format!("{POD_IP}:0"),
        format!("[{POD_IP6}]:0"),
    ]
}

#[test]
fn connections_inside_the_pod_run_the_named_algorithm_and_others_the_default() -> anyhow::Result<()>
{
    let Some(pod) = Pod::create(BACKEND)? else {
        return Ok(());
    };
    let default = pod.default_congestion_control()?;
    let algorithm = pod.an_algorithm_other_than(&default)?;
    for addr in local_addrs() {
        assert_eq!(
            pod.algorithms_of_a_connection_to(&addr)?,
            (default.clone(), default.clone()),
            "{addr} before"
        );
    }

    pod.proxy_init(
        BACKEND,
        &[&SKIP_PEER[..], &["--local-congestion-control", &algorithm]].concat(),
    )?;
    for addr in local_addrs() {
        assert_eq!(
            pod.algorithms_of_a_connection_to(&addr)?,
            (algorithm.clone(), algorithm.clone()),
            "{addr}: (client, server)"
        );
    }
    for peer in [PEER_IP, PEER_IP6] {
        assert_eq!(pod.algorithm_towards_the_peer(peer)?, default, "to {peer}");
    }
    Ok(())
}

#[test]
fn a_second_run_changes_no_route_and_cleanup_takes_the_algorithm_off() -> anyhow::Result<()> {
    let Some(pod) = Pod::create(BACKEND)? else {
        return Ok(());
    };
    let default = pod.default_congestion_control()?;
    let algorithm = pod.an_algorithm_other_than(&default)?;
    // The kernel adds the link-local address (and its local route) on its own time;
    // one appearing between the two runs would look like a change.
    pod.wait_for_a_link_local_address()?;
    let flags = ["--local-congestion-control", algorithm.as_str()];
    pod.proxy_init(BACKEND, &flags)?;
    let installed = pod.local_routes()?;
    let local: Vec<&str> = installed
        .lines()
        .filter(|line| line.starts_with("local "))
        .collect();
    assert!(
        local.len() == 6
            && local
                .iter()
                .all(|line| line.contains(&format!("congctl {algorithm} "))),
        "127.0.0.0/8, 127.0.0.1, ::1, the two pod IPs and the link-local one name it:\n{installed}"
    );

    pod.proxy_init(BACKEND, &flags)?;
    assert_eq!(
        pod.local_routes()?,
        installed,
        "a second run changed the routes"
    );

    pod.proxy_init(BACKEND, &[&flags[..], &["--cleanup"]].concat())?;
    let cleaned = pod.local_routes()?;
    assert!(!cleaned.contains("congctl"), "{cleaned}");
    for addr in local_addrs() {
        assert_eq!(
            pod.algorithms_of_a_connection_to(&addr)?,
            (default.clone(), default.clone()),
            "{addr} after cleanup"
        );
    }
    Ok(())
}

#[test]
fn keep_and_an_unknown_algorithm_leave_the_routes_alone_and_the_rules_in_place()
-> anyhow::Result<()> {
    let Some(pod) = Pod::create(BACKEND)? else {
        return Ok(());
    };
    let before = pod.local_routes()?;
    pod.proxy_init(BACKEND, &["--local-congestion-control", "keep"])?;
    assert_eq!(pod.local_routes()?, before, "keep changed the routes");

    let output = pod.proxy_init_output(BACKEND, &["--local-congestion-control", "nosuchalgo"])?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("WARN") && stderr.contains("--local-congestion-control"),
        "the warning names the flag: {stderr}"
    );
    assert_eq!(
        pod.local_routes()?,
        before,
        "a rejected algorithm changed the routes"
    );
    assert!(
        pod.ruleset(BACKEND)?
            .to_lowercase()
            .contains("trellis/redirect-outbound"),
        "the redirect rules are installed all the same"
    );
    Ok(())
}

impl Pod {
    /// The namespace's own default, which connections get without a route's choice.
    fn default_congestion_control(&self) -> anyhow::Result<String> {
        Ok(self
            .run("cat", ["/proc/sys/net/ipv4/tcp_congestion_control"])?
            .trim()
            .to_owned())
    }

    /// An algorithm this kernel has that is not `default`, so that a connection shows
    /// which of the two it got: Reno unless that is the default.
    fn an_algorithm_other_than(&self, default: &str) -> anyhow::Result<String> {
        let available = self.run(
            "cat",
            ["/proc/sys/net/ipv4/tcp_available_congestion_control"],
        )?;
        let mut names = available.split_whitespace().filter(|name| *name != default);
        match names
            .clone()
            .find(|name| *name == "reno")
            .or_else(|| names.next())
        {
            Some(name) => Ok(name.to_owned()),
            None => bail!("this kernel offers no algorithm but {default}: {available}"),
        }
    }

    fn wait_for_a_link_local_address(&self) -> anyhow::Result<()> {
        for _ in 0..50 {
            if !self
                .run("ip", ["-6", "addr", "show", "dev", "eth0", "scope", "link"])?
                .is_empty()
            {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        bail!("eth0 has no link-local address after 5 s")
    }

    /// The local table of both families, as `ip` prints it.
    fn local_routes(&self) -> anyhow::Result<String> {
        Ok(self.run("ip", ["-4", "route", "show", "table", "local"])?
            + &self.run("ip", ["-6", "route", "show", "table", "local"])?)
    }

    /// Opens a connection from the pod to a listener on `addr` in the pod; the
    /// algorithms of its client and server ends.
    fn algorithms_of_a_connection_to(&self, addr: &str) -> anyhow::Result<(String, String)> {
        let addr: SocketAddr = addr.parse().context("a socket address")?;
        run_in(&self.netns, move || -> anyhow::Result<(String, String)> {
            let listener = TcpListener::bind(addr)?;
            let client = TcpStream::connect(listener.local_addr()?)?;
            let (server, _) = listener.accept()?;
            Ok((algorithm(&client)?, algorithm(&server)?))
        })?
    }

    /// The algorithm of a connection from the pod to a listener in the peer.
    fn algorithm_towards_the_peer(&self, peer: &str) -> anyhow::Result<String> {
        let ip: std::net::IpAddr = peer.parse().context("an address")?;
        let listener = run_in(&self.peer, move || TcpListener::bind((ip, 0)))??;
        let addr = listener.local_addr()?;
        run_in(&self.netns, move || -> anyhow::Result<String> {
            algorithm(&TcpStream::connect(addr)?)
        })?
    }
}

fn algorithm(stream: &TcpStream) -> anyhow::Result<String> {
    let name = getsockopt(stream, sockopt::TcpCongestion).context("TCP_CONGESTION")?;
    Ok(name.to_string_lossy().trim_end_matches('\0').to_owned())
}
