//! A TCP echo app running on a thread "inside" a pod: its listener was bound in the
//! pod's network namespace, so it serves that pod from the test process itself.
//!
//! A named echo app answers each line with its name in front (`a: hello`), so that a
//! client calling a service sees which endpoint answered. A banner app speaks first,
//! as SMTP does: it greets every connection before the client has said anything.

use std::io::{BufRead as _, BufReader, ErrorKind, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;

/// Echoes every connection; counts the connections it accepted.
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Binds `0.0.0.0:port` inside `netns` and starts echoing bytes as they come.
    pub fn start_in(netns: &str, port: u16) -> anyhow::Result<EchoServer> {
        EchoServer::start(netns, port, Reply::Echo)
    }

    /// Binds `0.0.0.0:port` inside `netns` and answers each line as `NAME: line`.
    pub fn start_named_in(netns: &str, port: u16, name: &str) -> anyhow::Result<EchoServer> {
        EchoServer::start(netns, port, Reply::Named(name.to_string()))
    }

    /// Binds `0.0.0.0:port` inside `netns` and, on every connection, first writes
    /// `220 NAME hello` and then answers each line as `250 NAME got LINE`.
    pub fn start_banner_in(netns: &str, port: u16, name: &str) -> anyhow::Result<EchoServer> {
        EchoServer::start(netns, port, Reply::Banner(name.to_string()))
    }

    fn start(netns: &str, port: u16, reply: Reply) -> anyhow::Result<EchoServer> {
        let listener = trellis_netns::run_in(netns, move || TcpListener::bind(("0.0.0.0", port)))?
            .with_context(|| format!("binding the echo app to port {port} in {netns}"))?;
        // Polled, so that dropping the server ends the thread and closes the socket.
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, accepted) = (stop.clone(), accepted.clone());
            std::thread::spawn(move || serve(&listener, &stop, &accepted, &reply))
        };
        Ok(EchoServer {
            stop,
            accepted,
            thread: Some(thread),
        })
    }

    /// How many connections reached the app.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Sends `message` on `conn` and reads as many bytes back: what an echo answers.
pub fn round_trip(conn: &mut TcpStream, message: &str) -> std::io::Result<String> {
    conn.write_all(message.as_bytes())?;
    let mut reply = vec![0u8; message.len()];
    conn.read_exact(&mut reply)?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// Sends `line` to a named echo app and returns its answer, `NAME: line`, without the
/// newline.
pub fn ask(conn: &mut TcpStream, line: &str) -> std::io::Result<String> {
    conn.write_all(format!("{line}\n").as_bytes())?;
    read_line(conn)
}

/// Reads one line from `conn` and returns it without its line ending.
pub fn read_line(conn: &mut TcpStream) -> std::io::Result<String> {
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte: nothing after the newline may be consumed and lost.
    while answer.last() != Some(&b'\n') {
        match conn.read(&mut byte)? {
            0 => break,
            _ => answer.push(byte[0]),
        }
    }
    Ok(String::from_utf8_lossy(&answer).trim_end().to_string())
}

/// Sends `message` on `conn` and reads until the connection ends. `Ok` if it ended
/// (EOF or a reset) with nothing echoed; otherwise what came back instead.
pub fn ends_unanswered(conn: &mut TcpStream, message: &str) -> Result<(), String> {
    // The far end may be gone already: then the write itself meets the reset.
    let _ = conn.write_all(message.as_bytes());
    let mut reply = Vec::new();
    match conn.read_to_end(&mut reply) {
        Ok(_) if reply.is_empty() => Ok(()),
        Ok(_) => Err(format!("it answered {:?}", String::from_utf8_lossy(&reply))),
        Err(e) if is_reset(e.kind()) => Ok(()),
        Err(e) => Err(format!("expected EOF or a reset, got {e} ({:?})", e.kind())),
    }
}

fn is_reset(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
    )
}

/// What the app sends back.
#[derive(Clone)]
enum Reply {
    /// Every byte, as it comes.
    Echo,
    /// Each line, after the app's name.
    Named(String),
    /// A greeting first, then each line after a status code and the app's name.
    Banner(String),
}

fn serve(listener: &TcpListener, stop: &AtomicBool, accepted: &AtomicUsize, reply: &Reply) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) => {
                accepted.fetch_add(1, Ordering::SeqCst);
                let reply = reply.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_nonblocking(false);
                    match reply {
                        Reply::Echo => echo(conn),
                        Reply::Named(name) => answer_lines(conn, &format!("{name}: ")),
                        Reply::Banner(name) => greet(conn, &name),
                    }
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn echo(mut conn: TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = conn.read(&mut buf) {
        if conn.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

fn greet(mut conn: TcpStream, name: &str) {
    if conn
        .write_all(format!("220 {name} hello\r\n").as_bytes())
        .is_ok()
    {
        answer_lines(conn, &format!("250 {name} got "));
    }
}

/// Answers each line with `prefix` in front.
fn answer_lines(conn: TcpStream, prefix: &str) {
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else {
            break;
        };
        if writer
            .write_all(format!("{prefix}{line}\n").as_bytes())
            .is_err()
        {
            break;
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
