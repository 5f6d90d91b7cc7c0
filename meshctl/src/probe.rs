//! Asking a process whether it is up: TCP connects and a bare HTTP/1.0 GET.
//!
//! The admin endpoints (`/ready`, `/metrics`) answer plain HTTP on a known address, so
//! a dozen lines over a `TcpStream` are enough and keep meshctl free of an HTTP stack.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::{Error, signals};

/// A response's status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// `GET path` on `addr` with HTTP/1.0, so the server closes after the body.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    // One write: a request split over several segments confuses naive servers.
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response"))
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next()?;
    let mut parts = status_line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    Some(Response {
        status,
        body: body.to_string(),
    })
}

/// Calls `check` every 100 ms until it returns `Some`, `timeout` passes, or Ctrl-C.
pub fn wait_for<T>(
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<Option<T>, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        signals::check()?;
        if let Some(value) = check() {
            return Ok(Some(value));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether something accepts TCP connections at `addr`.
pub fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Whether `GET /ready` on the admin address answers 200.
pub fn is_ready(admin: SocketAddr) -> bool {
    http_get(admin, "/ready", Duration::from_secs(1)).is_ok_and(|r| r.status == 200)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_plain_http_response_gives_its_status_and_body() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = [0u8; 256];
            let n = conn.read(&mut request).unwrap();
            assert!(request[..n].starts_with(b"GET /ready HTTP/1.0\r\n"));
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nready\n")
                .unwrap();
        });
        let response = http_get(addr, "/ready", Duration::from_secs(2)).unwrap();
        assert_eq!(
            response,
            Response {
                status: 200,
                body: "ready\n".into()
            }
        );
        server.join().unwrap();
    }

    #[test]
    fn garbage_is_not_a_response() {
        assert_eq!(parse_response(b"SSH-2.0-OpenSSH\r\n"), None);
    }
}
