//! `trellis-proxy-init validate`: proof, from inside the pod, that the rules work.
//!
//! Rules in the table are not the same as traffic through the proxy: a CNI plugin that
//! rewrites the pod's netfilter state, a runtime that drops `NET_ADMIN` after the init
//! container, or a kernel without the nat modules all leave correct-looking rules that
//! do nothing. So, like Linkerd's network validator, this listens where the proxy's
//! outbound listener will listen, opens a connection to an address outside the pod,
//! and passes only if that very connection (recognised by a random token) arrives on
//! its listener with the address it was sent to as its original destination, the
//! address the proxy will route by. It must run as any user but the proxy's, whose
//! traffic is deliberately not redirected, and before the proxy takes the port.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher as _;
use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::socket::{SockaddrIn, SockaddrIn6, getsockopt, sockopt};

use crate::error::Error;

/// How often the listener looks for a connection while waiting.
const POLL: Duration = Duration::from_millis(10);

/// What to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// The proxy's outbound port: the validator listens there, on loopback.
    pub outbound_port: u16,
    /// Where the test connection goes. Any address outside the pod that the pod has a
    /// route to; it is never reached when the rules work.
    pub connect_addr: SocketAddr,
    /// How long the connection and its arrival may take.
    pub timeout: Duration,
    /// The proxy's UID: running as it would bypass the rules and prove nothing.
    pub proxy_uid: u32,
}

/// Runs the check; `Ok` carries the original destination the listener read.
pub fn validate(check: &Validation) -> Result<SocketAddr, Error> {
    let fail = |reason: String| Error::NotRedirected(reason);
    let euid = nix::unistd::geteuid().as_raw();
    if euid == check.proxy_uid {
        return Err(fail(format!(
            "running as uid {euid}, the proxy's (--proxy-uid), whose connections are never \
             redirected; run validate as any other user"
        )));
    }
    let listen: SocketAddr = match check.connect_addr {
        SocketAddr::V4(_) => (Ipv4Addr::LOCALHOST, check.outbound_port).into(),
        SocketAddr::V6(_) => (Ipv6Addr::LOCALHOST, check.outbound_port).into(),
    };
    let listener = TcpListener::bind(listen).map_err(|e| {
        fail(format!(
            "cannot listen on {listen} ({e}): validate must run before the proxy takes its \
             outbound port"
        ))
    })?;
    let token = format!(
        "trellis-validate-{:016x}",
        RandomState::new().hash_one(euid)
    );
    let deadline = Instant::now() + check.timeout;

    let (arrived_tx, arrived) = mpsc::channel();
    let expected = token.clone();
    std::thread::spawn(move || {
        // The receiver only goes away once validate has returned.
        let _ = arrived_tx.send(receive(&listener, &expected, deadline));
    });

    let mut stream = TcpStream::connect_timeout(&check.connect_addr, check.timeout)
        .map_err(|e| fail(connect_failure(check, listen, &e)))?;
    stream
        .write_all(token.as_bytes())
        .and_then(|()| stream.flush())
        .map_err(|e| {
            fail(format!(
                "connected to {}, but sending failed: {e}",
                check.connect_addr
            ))
        })?;

    let wait = deadline.saturating_duration_since(Instant::now()) + POLL;
    let orig_dst = match arrived.recv_timeout(wait) {
        Ok(Ok(orig_dst)) => orig_dst,
        Ok(Err(e)) => return Err(fail(format!("the listener on {listen} failed: {e}"))),
        Err(_) => {
            return Err(fail(format!(
                "connected to {}, but the connection did not arrive on {listen} within {:?}: \
                 something answered in the proxy's place, so outbound traffic is not \
                 redirected (are the rules installed in this network namespace?)",
                check.connect_addr, check.timeout
            )));
        }
    };
    if orig_dst != check.connect_addr {
        return Err(fail(format!(
            "redirected to {listen}, but the original destination reads as {orig_dst}, not {}: \
             the proxy could not route this connection",
            check.connect_addr
        )));
    }
    Ok(orig_dst)
}

/// Accepts connections until one sends `token`; its original destination.
fn receive(listener: &TcpListener, token: &str, deadline: Instant) -> io::Result<SocketAddr> {
    listener.set_nonblocking(true)?;
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                stream.set_nonblocking(false)?;
                stream.set_read_timeout(Some(
                    deadline.saturating_duration_since(Instant::now()).max(POLL),
                ))?;
                let mut received = vec![0; token.len()];
                // Someone else's connection (a stray client on loopback) is not ours.
                if stream.read_exact(&mut received).is_ok() && received == token.as_bytes() {
                    return original_destination(&stream);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "nothing arrived"));
                }
                std::thread::sleep(POLL);
            }
            Err(e) => return Err(e),
        }
    }
}

/// `SO_ORIGINAL_DST` (`IP6T_SO_ORIGINAL_DST` for IPv6): where the connection was going
/// before the redirect, as the proxy will read it.
fn original_destination(stream: &TcpStream) -> io::Result<SocketAddr> {
    match stream.local_addr()? {
        SocketAddr::V4(_) => {
            let addr = getsockopt(stream, sockopt::OriginalDst)?;
            Ok(SocketAddr::from(SockaddrIn::from(addr)))
        }
        SocketAddr::V6(_) => {
            let addr = getsockopt(stream, sockopt::Ip6tOriginalDst)?;
            Ok(SocketAddr::from(SockaddrIn6::from(addr)))
        }
    }
}

/// Why connecting failed, in terms of the rules.
fn connect_failure(check: &Validation, listen: SocketAddr, error: &io::Error) -> String {
    let addr = check.connect_addr;
    match error.kind() {
        io::ErrorKind::ConnectionRefused => format!(
            "{addr} refused the connection: it reached {addr} (or something on the way) \
             instead of {listen}, so outbound traffic is not redirected; are the rules \
             installed, and did a CNI plugin or a missing NET_ADMIN capability defeat them?"
        ),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => format!(
            "no answer from {addr} within {:?}: the connection was not redirected to \
             {listen}; are the rules installed, and did a CNI plugin or a missing NET_ADMIN \
             capability defeat them?",
            check.timeout
        ),
        io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable => format!(
            "{addr} is unreachable ({error}): the kernel routes before it redirects, so \
             --connect-addr must be an address the pod has a route to"
        ),
        _ => format!("connecting to {addr} failed: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_as_the_proxy_proves_nothing() {
        let check = Validation {
            outbound_port: 1,
            connect_addr: "192.0.2.1:20001".parse().expect("address"),
            timeout: Duration::from_millis(10),
            proxy_uid: nix::unistd::geteuid().as_raw(),
        };
        let err = validate(&check).expect_err("as the proxy uid");
        assert!(
            err.to_string().contains("the proxy's (--proxy-uid)"),
            "{err}"
        );
        assert_eq!(err.exit_code(), crate::error::EXIT_NOT_REDIRECTED);
    }

    #[test]
    fn a_connection_that_was_not_redirected_fails_with_the_reason() {
        // Nothing listens on the refused port, and no rule redirects loopback.
        let refused = TcpListener::bind("127.0.0.1:0").expect("bind");
        let connect_addr = refused.local_addr().expect("addr");
        drop(refused);
        let listener_port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let check = Validation {
            outbound_port: listener_port,
            connect_addr,
            timeout: Duration::from_secs(2),
            proxy_uid: nix::unistd::geteuid().as_raw().wrapping_add(1),
        };
        let err = validate(&check).expect_err("not redirected");
        assert!(err.to_string().contains("refused the connection"), "{err}");
    }
}
