//! The demo's app: a TCP echo server and a client that calls it.
//!
//! Plain TCP on purpose: the app knows nothing about the mesh, and everything the demo
//! shows about identities and TLS happens in the sidecars around it. `meshctl` runs
//! itself as this app (`meshctl demo-app ...`) so the demo needs no other program.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs as _};
use std::time::{Duration, Instant};

/// Echoes every connection back to its sender until killed, logging each one.
pub fn echo(port: u16) -> std::io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    println!("echo: listening on {}", listener.local_addr()?);
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(conn) => conn,
            Err(error) => {
                eprintln!("echo: accept failed: {error}");
                continue;
            }
        };
        std::thread::spawn(move || {
            let peer = conn.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            println!("echo: connection from {peer}");
            let copied = conn.try_clone().and_then(|mut writer| {
                let mut reader = conn;
                std::io::copy(&mut reader, &mut writer)
            });
            match copied {
                Ok(bytes) => println!("echo: {peer} closed after {bytes} bytes"),
                Err(error) => println!("echo: {peer} failed: {error}"),
            }
        });
    }
    Ok(())
}

/// Sends `count` lines to the echo server at `addr` (`HOST:PORT`, where HOST may be a
/// name the system resolves, such as a service's in the pod's hosts file) over one
/// connection and checks that each comes back. Prints one line per round trip; `Ok`
/// with the number echoed.
pub fn call(addr: &str, count: u32, out: &mut impl std::io::Write) -> std::io::Result<u32> {
    let timeout = Duration::from_secs(5);
    let (stream, resolved) = connect(addr, timeout)?;
    if resolved.to_string() != addr {
        writeln!(out, "call: {addr} is {resolved}")?;
    }
    stream.set_read_timeout(Some(timeout))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut echoed = 0;
    for i in 1..=count {
        let message = format!("hello #{i} from the demo client");
        let started = Instant::now();
        writer.write_all(format!("{message}\n").as_bytes())?;
        let mut reply = String::new();
        reader.read_line(&mut reply)?;
        let reply = reply.trim_end();
        if reply != message {
            writeln!(out, "call: sent {message:?} but got {reply:?} back")?;
            continue;
        }
        echoed += 1;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        writeln!(out, "call: {resolved} echoed {message:?} in {ms:.1} ms")?;
    }
    writeln!(out, "call: {echoed}/{count} echoes came back")?;
    Ok(echoed)
}

/// Connects to the first address `addr` resolves to that answers.
fn connect(addr: &str, timeout: Duration) -> std::io::Result<(TcpStream, SocketAddr)> {
    let mut last_error = None;
    for resolved in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&resolved, timeout) {
            Ok(stream) => return Ok((stream, resolved)),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{addr} resolves to no address"),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_gets_every_line_back_from_the_echo_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut writer = conn.try_clone().unwrap();
            let mut reader = conn;
            std::io::copy(&mut reader, &mut writer).unwrap();
        });
        let mut transcript = Vec::new();
        let by_name = format!("localhost:{}", addr.port());
        assert_eq!(call(&by_name, 3, &mut transcript).unwrap(), 3);
        let transcript = String::from_utf8(transcript).unwrap();
        assert!(
            transcript.starts_with(&format!("call: {by_name} is 127.0.0.1:")),
            "{transcript}"
        );
        assert!(
            transcript.ends_with("call: 3/3 echoes came back\n"),
            "{transcript}"
        );
    }
}
