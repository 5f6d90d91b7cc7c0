//! The response timeout (`--response-timeout`), counted from the moment the request
//! body has been sent in full, as Envoy's route timeout is.
//!
//! Counting from the request's start would turn a slow upload of a large body into a
//! 504 that no server without a proxy would give, and would cut a streaming request
//! whose body never ends (a gRPC client stream, a long poll upload). So the proxy
//! watches the request body on its way out: the clock starts when the body ends (at
//! once for a request without one), and a request whose body never ends is never
//! timed out by the proxy. What a client waits for is then only the server's answer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::oneshot;

use super::{Body, BoxError, boxed};

/// Whether a request's body has been sent in full yet.
pub struct Sent(Option<oneshot::Receiver<()>>);

impl Sent {
    /// Resolves once the body has ended, failed, or been dropped by the connection.
    async fn wait(&mut self) {
        if let Some(done) = self.0.as_mut() {
            // A dropped sender (the body was dropped unfinished) counts as the end.
            let _ = done.await;
            self.0 = None;
        }
    }
}

/// The request, its body watched: the [`Sent`] resolves when the body has been sent
/// in full. A request without a body costs nothing (no channel, no wrapper).
pub fn watch<B>(request: Request<B>) -> (Request<Body>, Sent)
where
    B: HttpBody<Data = Bytes> + Unpin + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    if request.body().is_end_stream() {
        return (request.map(boxed), Sent(None));
    }
    let (tx, rx) = oneshot::channel();
    let request = request.map(|inner| {
        boxed(Watched {
            inner,
            done: Some(tx),
        })
    });
    (request, Sent(Some(rx)))
}

/// `response`, unless it is not ready `timeout` after the request body was sent in
/// full (`None`).
///
/// The caller pins `response` where it lives: taken by value, it would occupy this
/// future's state twice (once as the argument, once as the awaited local), and
/// every request's future is moved whole when it is handed to a connection or a task.
pub async fn within<F: Future>(
    timeout: Duration,
    sent: &mut Sent,
    response: Pin<&mut F>,
) -> Option<F::Output> {
    let deadline = async {
        sent.wait().await;
        tokio::time::sleep(timeout).await;
    };
    tokio::select! {
        biased;
        output = response => Some(output),
        () = deadline => None,
    }
}

/// A request body that tells its [`Sent`] when it ends.
struct Watched<B> {
    inner: B,
    done: Option<oneshot::Sender<()>>,
}

impl<B> Watched<B> {
    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}

impl<B> HttpBody for Watched<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Pending => false,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            // The last frame was read, or the body failed: either way nothing more
            // will be sent.
            Poll::Ready(None | Some(Err(_))) => true,
        };
        if ended {
            this.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt as _, StreamBody};
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;

    type Chunks = StreamBody<ReceiverStream<Result<Frame<Bytes>, std::convert::Infallible>>>;

    /// A request whose body is whatever the test sends on the returned channel.
    fn streaming() -> (
        Request<Chunks>,
        mpsc::Sender<Result<Frame<Bytes>, std::convert::Infallible>>,
    ) {
        let (tx, rx) = mpsc::channel(4);
        (Request::new(StreamBody::new(ReceiverStream::new(rx))), tx)
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_takes_longer_than_the_timeout_is_not_cut() {
        let (request, chunks) = streaming();
        let (request, mut sent) = watch(request);
        let mut body = request.into_body();
        let timeout = Duration::from_secs(1);
        // The "server" reads the body for ten timeouts, then answers.
        let answer = async {
            for _ in 0..10 {
                chunks
                    .send(Ok(Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .unwrap();
                body.frame().await.unwrap().unwrap();
                tokio::time::sleep(timeout).await;
            }
            drop(chunks);
            assert!(body.frame().await.is_none());
            "answered"
        };
        assert_eq!(
            within(timeout, &mut sent, std::pin::pin!(answer)).await,
            Some("answered")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_starts_when_the_body_ends() {
        let (request, chunks) = streaming();
        let (request, mut sent) = watch(request);
        let mut body = request.into_body();
        chunks
            .send(Ok(Frame::data(Bytes::from_static(b"x"))))
            .await
            .unwrap();
        drop(chunks);
        let never = async {
            while body.frame().await.is_some() {}
            std::future::pending::<()>().await;
        };
        let started = tokio::time::Instant::now();
        assert_eq!(
            within(Duration::from_secs(1), &mut sent, std::pin::pin!(never)).await,
            None
        );
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_without_a_body_is_timed_from_the_start() {
        let (request, mut sent) = watch(Request::new(http_body_util::Empty::<Bytes>::new()));
        assert!(sent.0.is_none(), "no channel for an empty body");
        assert!(request.body().is_end_stream());
        let never = std::future::pending::<()>();
        assert_eq!(
            within(Duration::from_secs(1), &mut sent, std::pin::pin!(never)).await,
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_ends_is_never_timed_out() {
        let (request, _chunks) = streaming();
        let (_request, mut sent) = watch(request);
        let slow = tokio::time::sleep(Duration::from_secs(3600));
        assert_eq!(
            within(Duration::from_secs(1), &mut sent, std::pin::pin!(slow)).await,
            Some(())
        );
    }
}
