use super::*;
use http::Request;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::try_from(*name).unwrap(),
            HeaderValue::try_from(*value).unwrap(),
        );
    }
    map
}

#[test]
fn hop_by_hop_headers_and_those_connection_names_are_removed() {
    let mut h = headers(&[
        ("connection", "keep-alive, x-session"),
        ("keep-alive", "timeout=5"),
        ("x-session", "abc"),
        ("transfer-encoding", "chunked"),
        ("proxy-connection", "keep-alive"),
        ("upgrade", "websocket"),
        ("te", "gzip"),
        ("content-type", "text/plain"),
        ("trailer", "x-checksum"),
    ]);
    strip_hop_by_hop(&mut h);
    let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    assert_eq!(left, ["content-type", "trailer"]);
}

#[test]
fn te_trailers_survives_for_grpc() {
    let mut h = headers(&[("te", "trailers"), ("content-type", "application/grpc")]);
    strip_hop_by_hop(&mut h);
    assert_eq!(h["te"], "trailers");
    assert!(is_grpc(&h));
    assert!(is_grpc(&headers(&[(
        "content-type",
        "application/grpc+proto"
    )])));
    assert!(!is_grpc(&headers(&[("content-type", "application/json")])));
}

#[test]
fn an_upgrade_needs_the_header_and_the_connection_token() {
    assert!(is_upgrade(&headers(&[
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket"),
    ])));
    assert!(!is_upgrade(&headers(&[("upgrade", "websocket")])));
    assert!(!is_upgrade(&headers(&[("connection", "upgrade")])));
}

fn parts(uri: &str, host: Option<&str>) -> http::request::Parts {
    let mut builder = Request::builder().uri(uri);
    if let Some(host) = host {
        builder = builder.header(header::HOST, host);
    }
    builder.body(()).unwrap().into_parts().0
}

#[test]
fn http1_requests_become_http2_with_the_host_as_authority() {
    let fallback: SocketAddr = "10.96.0.1:80".parse().unwrap();
    let mut p = parts("/cart?id=7", Some("web.shop:8080"));
    shape_for(&mut p, pool::Version::Http2, fallback);
    assert_eq!(p.uri.to_string(), "http://web.shop:8080/cart?id=7");
    assert!(p.headers.get(header::HOST).is_none());
    assert_eq!(p.version, http::Version::HTTP_2);

    // HTTP/1.0 without Host: the address the app connected to.
    let mut p = parts("/", None);
    shape_for(&mut p, pool::Version::Http2, fallback);
    assert_eq!(p.uri.to_string(), "http://10.96.0.1:80/");
}

#[test]
fn http2_requests_become_http1_with_origin_form_and_host() {
    let fallback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let mut p = parts("http://web.shop:8080/cart?id=7", None);
    shape_for(&mut p, pool::Version::Http1, fallback);
    assert_eq!(p.uri.to_string(), "/cart?id=7");
    assert_eq!(p.headers[header::HOST], "web.shop:8080");
    assert_eq!(p.version, http::Version::HTTP_11);

    // A Host the caller sent is kept as it was.
    let mut p = parts("http://other/x", Some("web.shop"));
    shape_for(&mut p, pool::Version::Http1, fallback);
    assert_eq!(p.headers[header::HOST], "web.shop");
}

#[test]
fn an_upgrade_keeps_only_the_hop_by_hop_headers_that_ask_for_the_switch() {
    let mut h = headers(&[
        ("connection", "Upgrade, X-Hop"),
        ("upgrade", "websocket"),
        ("x-hop", "secret"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("te", "gzip"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ]);
    strip_for_upgrade(&mut h);
    let mut left: Vec<(&str, &str)> = h
        .iter()
        .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
        .collect();
    left.sort_unstable();
    assert_eq!(
        left,
        [
            ("connection", "upgrade"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("upgrade", "websocket"),
        ]
    );
    assert!(is_upgrade(&h));
}

/// Sends `request` to an HTTP/1.1 connection served as the proxy serves apps, and
/// returns the status line of the answer.
async fn status_line_for(request: Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (mut client, server) = tokio::io::duplex(1024 * 1024);
    let service = hyper::service::service_fn(|_request| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(full("ok")))
    });
    let shutdown = tokio_util::sync::CancellationToken::new();
    let serving = tokio::spawn(serve_connection(
        server,
        pool::Version::Http1,
        service,
        shutdown,
    ));
    client.write_all(&request).await.unwrap();
    let mut answer = vec![0; 1024];
    let n = client.read(&mut answer).await.unwrap();
    serving.abort();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    answer.lines().next().unwrap_or_default().to_string()
}

fn request_with_header_of(len: usize) -> Vec<u8> {
    format!(
        "GET / HTTP/1.1\r\nhost: app\r\nx-large: {}\r\n\r\n",
        "a".repeat(len)
    )
    .into_bytes()
}

/// The read buffer's bound is also the bound on a request's head: hyper checks it
/// between reads, so a head a little over it may still pass in one read, and one of
/// several times it is refused (hyper's default bound, about 400 KiB, let it in).
#[tokio::test]
async fn request_heads_within_the_read_buffer_pass_and_far_larger_ones_get_431() {
    assert_eq!(
        status_line_for(request_with_header_of(MAX_BUF / 2)).await,
        "HTTP/1.1 200 OK"
    );
    assert_eq!(
        status_line_for(request_with_header_of(4 * MAX_BUF)).await,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
}

#[test]
fn each_hop_by_hop_header_alone_is_removed_and_the_others_stay() {
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
    ] {
        let mut h = headers(&[("host", "web"), (name, "x"), ("x-trace", "1")]);
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["host", "x-trace"], "{name}");
    }
    let mut h = headers(&[("host", "web"), ("x-trace", "1"), ("x-trace", "2")]);
    strip_hop_by_hop(&mut h);
    assert_eq!(h.len(), 3);
}

#[test]
fn remove_all_removes_each_name_given_and_only_those() {
    let mut h = headers(&[
        ("expect", "100-continue"),
        ("trellis-dst-port", "8080"),
        ("trellis-dst-port", "9090"),
        ("content-type", "text/plain"),
    ]);
    remove_all(&mut h, &[header::EXPECT, DST_PORT, ORIG_PROTO]);
    let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    assert_eq!(left, ["content-type"]);

    let mut h = headers(&[("content-type", "text/plain")]);
    remove_all(&mut h, &[header::EXPECT, DST_PORT, ORIG_PROTO]);
    assert_eq!(h.len(), 1);
}
