//! The pools against real sockets: local servers that answer, close, or are absent.

use std::time::Duration;

use http_body_util::BodyExt as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::local::MIN_PRUNE;
use super::*;

fn pool() -> LocalPool {
    LocalPool::new(Direction::Inbound, Arc::new(Metrics::new()))
}

fn get(addr: SocketAddr) -> Request<Body> {
    Request::builder()
        .uri("/")
        .header(http::header::HOST, addr.to_string())
        .body(super::super::empty())
        .unwrap()
}

/// Reads one request head from `conn`; false if the connection ended first.
async fn read_head(conn: &mut tokio::net::TcpStream) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    true
}

/// An HTTP/1.1 app that keeps each connection open after answering, and closes it
/// once it has been idle for `idle`, as most servers do (nginx's
/// `keepalive_timeout`, Go's `IdleTimeout`). Each answer says which connection
/// carried it.
async fn closes_idle_connections(idle: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for n in 0u32.. {
            let mut conn = match listener.accept().await {
                Ok((conn, _)) => conn,
                // Said and survived: an app that stopped accepting would leave the
                // pool's next connection waiting for ever in the listen queue.
                Err(error) => {
                    eprintln!("the test app could not accept: {error}");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
            };
            tokio::spawn(async move {
                while let Ok(true) = tokio::time::timeout(idle, read_head(&mut conn)).await {
                    let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n{}", n % 10);
                    if conn.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
                // Idle too long (or the client left): close, as the app would.
            });
        }
    });
    addr
}

async fn send(pool: &LocalPool, addr: SocketAddr) -> Result<String, Failure> {
    let response = pool
        .send(addr, Version::Http1, get(addr))
        .await
        .map_err(SendError::into_failure)?;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_racing_the_apps_close_of_an_idle_connection_get_through() {
    // The app closes a connection idle for 20 ms; each second request goes out on the
    // pooled connection at about that moment, so that some meet the close: hyper
    // hands some back unsent, and finds others answered by the connection's end.
    let addr = closes_idle_connections(Duration::from_millis(20)).await;
    let pool = pool();
    let mut failed = Vec::new();
    for i in 0..RACES {
        finishes(format!("race {i}: the first request"), send(&pool, addr))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_micros(19_000 + (i % 40) * 50)).await;
        let racing = finishes(format!("race {i}: the racing request"), send(&pool, addr));
        if let Err(failure) = racing.await {
            failed.push(failure.to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {RACES} failed: {failed:?}",
        failed.len()
    );
}

/// Requests sent as the app closes their connection, in the test above: enough that
/// many meet the close.
const RACES: u64 = 150;

/// Awaits `step`, which must finish: a request that never ends (one CI run of
/// 2026-12-03 stalled in the test above, all threads parked) fails the test naming
/// the step, instead of stalling the whole run. Not a bound on speed: a step takes
/// milliseconds.
async fn finishes<T>(what: String, step: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(30), step).await {
        Ok(done) => done,
        Err(_) => panic!("{what} never finished"),
    }
}

#[tokio::test]
async fn a_request_after_the_app_closed_an_idle_connection_gets_through() {
    let addr = closes_idle_connections(Duration::from_millis(50)).await;
    let pool = pool();
    assert_eq!(send(&pool, addr).await.unwrap(), "0");
    // The app closes the pooled connection while it idles.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(send(&pool, addr).await.unwrap(), "1");
}

/// An HTTP/1.1 app that answers every request with `Connection: close`.
async fn closes_after_each_answer() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_head(&mut conn).await {
                    let answer =
                        "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\nx";
                    let _ = conn.write_all(answer.as_bytes()).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn addresses_whose_connections_all_closed_are_forgotten() {
    let pool = pool();
    for _ in 0..3 * MIN_PRUNE {
        let addr = closes_after_each_answer().await;
        assert_eq!(send(&pool, addr).await.unwrap(), "x");
    }
    // Each address was called once, and each connection closed after its answer:
    // the map is swept as it grows instead of keeping all of them.
    let held = pool.idle_addresses();
    assert!(held <= MIN_PRUNE, "{held} addresses held");

    // An address whose last connection closed goes at its next checkout.
    let addr = closes_after_each_answer().await;
    send(&pool, addr).await.unwrap();
    let before = pool.idle_addresses();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(pool.idle_http1(addr).is_none());
    assert_eq!(pool.idle_addresses(), before - 1);
}

/// An HTTP/2 server answering every request with 200; each connection's task is
/// kept so that a test can cut the connection.
async fn h2_server() -> (SocketAddr, Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
    let tasks = conns.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = hyper::service::service_fn(|_request| async {
                Ok::<_, std::convert::Infallible>(Response::new(super::super::empty()))
            });
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service);
            lock(&tasks).push(tokio::spawn(async move {
                let _ = conn.await;
            }));
        }
    });
    (addr, conns)
}

/// `slot`'s sender, counting in `connects` each time it had to connect to `addr`.
async fn sender_of(
    slot: &H2Slot,
    addr: SocketAddr,
    connects: &std::sync::atomic::AtomicUsize,
) -> Result<http2::SendRequest<Body>, Failure> {
    slot.sender(|| async {
        connects.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let tcp = connect(addr)
            .await
            .map_err(|e| Failure::Connect(e.to_string()))?;
        h2_handshake(tcp, addr.to_string()).await
    })
    .await
}

#[tokio::test]
async fn a_slot_shares_its_connection_and_replaces_it_when_it_breaks() {
    let (addr, conns) = h2_server().await;
    let slot = H2Slot::default();
    let connects = std::sync::atomic::AtomicUsize::new(0);
    let count = || connects.load(std::sync::atomic::Ordering::SeqCst);

    let mut first = sender_of(&slot, addr, &connects).await.unwrap();
    let response = first.send_request(get(addr)).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    sender_of(&slot, addr, &connects).await.unwrap();
    assert_eq!(count(), 1, "the second request shares the first connection");

    // The server end goes away: the next request gets a new connection.
    for conn in lock(&conns).drain(..) {
        conn.abort();
    }
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while !first.is_closed() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    closed
        .await
        .expect("the client noticed the connection ended");
    let mut second = sender_of(&slot, addr, &connects).await.unwrap();
    assert_eq!(count(), 2);
    second.ready().await.unwrap();
    let response = second.send_request(get(addr)).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
}

#[tokio::test]
async fn a_peer_that_cannot_be_reached_is_retried_only_after_a_backoff() {
    // A port nothing listens on: connects are refused.
    let refused = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = refused.local_addr().unwrap();
    drop(refused);
    let slot = H2Slot::default();
    let connects = std::sync::atomic::AtomicUsize::new(0);
    let count = || connects.load(std::sync::atomic::Ordering::SeqCst);

    let failure = sender_of(&slot, addr, &connects).await.unwrap_err();
    assert!(matches!(failure, Failure::Connect(_)), "{failure}");
    assert_eq!(count(), 1);
    // Within the backoff, a request fails at once, without trying to connect.
    let failure = sender_of(&slot, addr, &connects).await.unwrap_err();
    assert!(failure.to_string().contains("next attempt in"), "{failure}");
    assert_eq!(count(), 1);

    // Once the backoff (100 ms, +25 % at most) has passed and the peer is back, the
    // next request connects, and the backoff is forgotten.
    let listener = TcpListener::bind(addr).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let service = hyper::service::service_fn(|_request| async {
            Ok::<_, std::convert::Infallible>(Response::new(super::super::empty()))
        });
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(tcp), service);
        let _ = tx.send(());
        let _ = conn.await;
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    sender_of(&slot, addr, &connects).await.unwrap();
    assert_eq!(count(), 2);
    rx.await.unwrap();
    sender_of(&slot, addr, &connects).await.unwrap();
    assert_eq!(count(), 2, "the live connection is shared again");
}

#[test]
fn slots_nobody_uses_are_forgotten_as_new_peers_come() {
    let slots = Slots::<u16>::new();
    let held = slots.get(&0);
    for peer in 1..100 {
        drop(slots.get(&peer));
    }
    // The slot still held stays; the idle ones went as each new peer came.
    assert_eq!(slots.len(), 2);
    assert!(Arc::ptr_eq(&held, &slots.get(&0)));
}
