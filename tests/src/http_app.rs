//! An HTTP app running on a thread "inside" a pod, as [`EchoServer`](crate::EchoServer)
//! does for TCP: it speaks HTTP/1.1 and h2c (prior knowledge) on one port, like most
//! real servers, and answers every request with its name, so a client calling a
//! service sees which endpoint answered.
//!
//! What it does depends on the path:
//! - `/who`: `200`, the app's name as the body.
//! - `/headers`: every request header it received, one `name: value` a line.
//! - `/upload`: reads the body, checks it is the [`pattern`], and says how many bytes
//!   came and whether they were intact.
//! - `/download/N`: N bytes of the [`pattern`], streamed, never held whole.
//! - `/trailers`: reads the body and answers with its length and the request's
//!   trailers, one `name: value` a line; its own answer ends with the trailer
//!   `x-app-trailer: done`.
//! - `/status/CODE`: that status.
//! - `/slow/MS`: waits MS milliseconds before its response headers.
//! - `/hold`: waits until the test calls [`HttpApp::release`], so a test can see how
//!   many requests are in flight at once.
//!
//! Every response carries `x-app-name` (whose app answered) and `x-app-protocol`
//! (`HTTP/1.1` or `HTTP/2.0`: what reached the app, after the sidecars).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{oneshot, watch};

/// The byte at `offset` of every body the app checks or sends: a cycle of 251, a
/// prime, so a lost, repeated or reordered chunk of any power-of-two size shows.
pub fn pattern_byte(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// The first `len` bytes of the pattern, for a client to upload.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len as u64).map(pattern_byte).collect()
}

/// The offset of the first byte of `bytes` that breaks the pattern, `bytes` starting
/// at `offset`; `None` if every byte fits.
pub fn pattern_break(bytes: &[u8], offset: u64) -> Option<u64> {
    (offset..)
        .zip(bytes)
        .find(|(at, byte)| pattern_byte(*at) != **byte)
        .map(|(at, _)| at)
}

/// The app; stopped when dropped.
pub struct HttpApp {
    /// What the test reads (counts) and steers (the release of held requests).
    state: Arc<State>,
    /// Ends the accept loop when the app is dropped.
    stop: Option<oneshot::Sender<()>>,
    /// The thread running the app's runtime, joined on drop.
    thread: Option<JoinHandle<()>>,
}

/// What the handlers share with the test.
struct State {
    name: String,
    /// Requests that reached the app, of any path.
    requests: AtomicUsize,
    /// `/hold` requests waiting for [`HttpApp::release`].
    waiting: AtomicUsize,
    release: watch::Sender<bool>,
}

type AppBody = BoxBody<Bytes, Infallible>;

impl HttpApp {
    /// Binds `0.0.0.0:port` inside `netns` and serves there as `name`.
    pub fn start_in(netns: &str, port: u16, name: &str) -> anyhow::Result<HttpApp> {
        let listener = trellis_netns::run_in(netns, move || {
            std::net::TcpListener::bind(("0.0.0.0", port))
        })?
        .with_context(|| format!("binding the HTTP app to port {port} in {netns}"))?;
        listener.set_nonblocking(true)?;
        let state = Arc::new(State {
            name: name.to_string(),
            requests: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            release: watch::Sender::new(false),
        });
        let (stop, stopped) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let thread = {
            let state = state.clone();
            std::thread::spawn(move || {
                runtime.block_on(serve(listener, state, stopped));
                // Connections still open (a held request, a stalled upload) end here.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
        };
        Ok(HttpApp {
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// How many requests reached the app.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// How many `/hold` requests are waiting for [`release`](Self::release).
    pub fn waiting(&self) -> usize {
        self.state.waiting.load(Ordering::SeqCst)
    }

    /// Lets every `/hold` request, waiting or still to come, be answered.
    pub fn release(&self) {
        self.state.release.send_replace(true);
    }
}

impl Drop for HttpApp {
    fn drop(&mut self) {
        self.release();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    state: Arc<State>,
    mut stopped: oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let conn = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((conn, _)) => conn,
                Err(_) => continue,
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(&state, request).await) }
            });
            // Both protocols on one port: the h2 preface or an HTTP/1 request line.
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(conn), service)
                .await;
        });
    }
}

async fn answer(state: &State, request: Request<Incoming>) -> Response<AppBody> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let protocol = format!("{:?}", request.version());
    let path = request.uri().path().to_string();
    let mut segments = path.trim_start_matches('/').splitn(2, '/');
    let (status, body) = match (segments.next(), segments.next()) {
        (Some("who"), None) => (StatusCode::OK, text(format!("{}\n", state.name))),
        (Some("headers"), None) => (StatusCode::OK, text(headers_of(&request))),
        (Some("upload"), None) => upload(request.into_body()).await,
        (Some("trailers"), None) => trailers(request.into_body()).await,
        (Some("download"), Some(len)) => match len.parse() {
            Ok(len) => (StatusCode::OK, PatternBody::new(len).boxed()),
            Err(_) => (StatusCode::BAD_REQUEST, text(format!("bad length {len}\n"))),
        },
        (Some("status"), Some(code)) => match code.parse().map(StatusCode::from_u16) {
            Ok(Ok(status)) => (status, text(format!("status {code}\n"))),
            _ => (
                StatusCode::BAD_REQUEST,
                text(format!("bad status {code}\n")),
            ),
        },
        (Some("slow"), Some(ms)) => match ms.parse() {
            Ok(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                (StatusCode::OK, text(format!("slept {ms} ms\n")))
            }
            Err(_) => (StatusCode::BAD_REQUEST, text(format!("bad delay {ms}\n"))),
        },
        (Some("hold"), None) => {
            state.waiting.fetch_add(1, Ordering::SeqCst);
            let mut released = state.release.subscribe();
            let _ = released.wait_for(|released| *released).await;
            state.waiting.fetch_sub(1, Ordering::SeqCst);
            (StatusCode::OK, text("released\n".to_string()))
        }
        _ => (
            StatusCode::NOT_FOUND,
            text(format!("no such path {path}\n")),
        ),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(name) = state.name.parse() {
        headers.insert("x-app-name", name);
    }
    if let Ok(protocol) = protocol.parse() {
        headers.insert("x-app-protocol", protocol);
    }
    if path == "/trailers" {
        // HTTP/1.1 servers send only the trailers they announce.
        headers.insert("trailer", HeaderValue::from_static("x-app-trailer"));
    }
    response
}

fn text(body: String) -> AppBody {
    Full::new(Bytes::from(body)).boxed()
}

fn headers_of(request: &Request<Incoming>) -> String {
    request
        .headers()
        .iter()
        .map(|(name, value)| format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())))
        .collect()
}

/// Reads the body chunk by chunk, as it streams in, checking each against the pattern.
async fn upload(mut body: Incoming) -> (StatusCode, AppBody) {
    let mut received = 0u64;
    let mut broken_at = None;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => {
                let report = format!("the body broke after {received} bytes: {error}\n");
                return (StatusCode::BAD_REQUEST, text(report));
            }
        };
        if let Ok(data) = frame.into_data() {
            broken_at = broken_at.or_else(|| pattern_break(&data, received));
            received += data.len() as u64;
        }
    }
    let verdict = match broken_at {
        None => "pattern intact".to_string(),
        Some(at) => format!("pattern broken at byte {at}"),
    };
    (
        StatusCode::OK,
        text(format!("received {received} bytes, {verdict}\n")),
    )
}

/// Reads the body and its trailers; answers with both, and trailers of its own.
async fn trailers(body: Incoming) -> (StatusCode, AppBody) {
    let collected = match body.collect().await {
        Ok(collected) => collected,
        Err(error) => {
            return (
                StatusCode::BAD_REQUEST,
                text(format!("the body broke: {error}\n")),
            );
        }
    };
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let mut report = format!("received {} bytes\n", collected.to_bytes().len());
    for (name, value) in &trailers {
        report.push_str(&format!(
            "trailer {name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    let mut own = HeaderMap::new();
    own.insert("x-app-trailer", HeaderValue::from_static("done"));
    let body = WithTrailers {
        data: Some(Bytes::from(report)),
        trailers: Some(own),
    };
    (StatusCode::OK, body.boxed())
}

/// One chunk of data, then trailers.
struct WithTrailers {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for WithTrailers {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = match self.data.take() {
            Some(data) => Some(Frame::data(data)),
            None => self.trailers.take().map(Frame::trailers),
        };
        Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

/// `len` bytes of the pattern, made 64 KiB at a time as the connection takes them.
struct PatternBody {
    sent: u64,
    len: u64,
}

impl PatternBody {
    const CHUNK: u64 = 64 * 1024;

    fn new(len: u64) -> PatternBody {
        PatternBody { sent: 0, len }
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let n = Self::CHUNK.min(self.len - self.sent);
        if n == 0 {
            return Poll::Ready(None);
        }
        let chunk: Bytes = (self.sent..self.sent + n).map(pattern_byte).collect();
        self.sent += n;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent == self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len - self.sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_finds_a_lost_or_repeated_chunk() {
        let sent = pattern(10_000);
        assert_eq!(pattern_break(&sent, 0), None);
        assert_eq!(pattern_break(&sent[4096..], 4096), None);
        // A 4 KiB chunk lost: what follows arrives 4096 bytes early.
        let lost: Vec<u8> = [&sent[..4096], &sent[8192..]].concat();
        assert_eq!(pattern_break(&lost, 0), Some(4096));
        let repeated: Vec<u8> = [&sent[..4096], &sent[..4096]].concat();
        assert_eq!(pattern_break(&repeated, 0), Some(4096));
    }
}
