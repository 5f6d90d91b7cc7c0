//! Detection against real ClientHellos written by rustls, and against what a
//! confused or hostile client might send instead.

use std::sync::Arc;

use super::*;

fn client_hello(alpn: &[&[u8]]) -> Vec<u8> {
    let mut config = rustls::ClientConfig::builder_with_provider(trellis_identity::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), "server.example".try_into().unwrap())
            .unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

async fn detect_bytes(bytes: Vec<u8>) -> (Protocol, Vec<u8>) {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    tokio::io::AsyncWriteExt::write_all(&mut client, &bytes)
        .await
        .unwrap();
    drop(client);
    let (protocol, mut replay) = detect(server, Duration::from_secs(5)).await.unwrap();
    let mut seen = Vec::new();
    replay.read_to_end(&mut seen).await.unwrap();
    (protocol, seen)
}

#[tokio::test]
async fn a_hello_offering_the_mesh_alpn_is_mesh_tls_and_is_replayed_whole() {
    let hello = client_hello(&[b"h2", MESH_ALPN]);
    let (protocol, replayed) = detect_bytes(hello.clone()).await;
    assert_eq!(protocol, Protocol::MeshTls);
    assert_eq!(replayed, hello);
}

#[tokio::test]
async fn the_apps_own_tls_is_opaque() {
    for alpn in [&[b"h2" as &[u8], b"http/1.1"][..], &[]] {
        let (protocol, _) = detect_bytes(client_hello(alpn)).await;
        assert_eq!(protocol, Protocol::Opaque);
    }
}

#[tokio::test]
async fn plaintext_is_opaque_and_arrives_intact() {
    let request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    let (protocol, replayed) = detect_bytes(request.clone()).await;
    assert_eq!(protocol, Protocol::Opaque);
    assert_eq!(replayed, request);
}

#[tokio::test]
async fn truncated_or_lying_hellos_are_opaque_not_a_panic() {
    let hello = client_hello(&[MESH_ALPN]);
    for cut in [1, 3, 5, 9, 40, hello.len() - 1] {
        let (protocol, replayed) = detect_bytes(hello[..cut].to_vec()).await;
        assert_eq!(protocol, Protocol::Opaque, "cut at {cut}");
        assert_eq!(replayed, hello[..cut]);
    }
    // A record that claims the maximum length but holds garbage.
    let mut junk = vec![0x16, 0x03, 0x01, 0xff, 0xff];
    junk.extend(std::iter::repeat_n(0xab, 300));
    assert_eq!(detect_bytes(junk).await.0, Protocol::Opaque);
    // A handshake message whose inner lengths overflow the record.
    let mut liar = hello.clone();
    liar[6..9].copy_from_slice(&[0xff, 0xff, 0xff]);
    assert_eq!(detect_bytes(liar).await.0, Protocol::Opaque);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_waits_for_the_server_goes_opaque_after_the_timeout() {
    let (_client, server) = tokio::io::duplex(1024);
    let (protocol, _) = detect(server, Duration::from_millis(500)).await.unwrap();
    assert_eq!(protocol, Protocol::Opaque);
}
