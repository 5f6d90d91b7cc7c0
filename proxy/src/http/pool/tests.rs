//! The pools against real sockets: local servers that answer, close, or are absent.

use std::time::Duration;

use http_body_util::BodyExt as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
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
        send(&pool, addr).await.unwrap();
        tokio::time::sleep(Duration::from_micros(19_000 + (i % 40) * 50)).await;
        if let Err(failure) = send(&pool, addr).await {
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
