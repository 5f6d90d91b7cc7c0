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
