//! Real TLS 1.3 handshakes over an in-memory pipe between the mesh's server and
//! client configurations: the identity checks hold end to end, not only in
//! `verify_chain`.

use std::sync::Arc;

use rcgen::KeyPair;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;
use crate::testing::{Ca, anchors, ca, leaf_with_key, tomorrow};

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
const CHECKOUT: &str = "spiffe://cluster.local/ns/shop/sa/checkout";

/// Always presents one fixed certificate.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl ResolvesClientCert for Fixed {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

fn workload(ca: &Ca, id: &str, not_after: OffsetDateTime) -> Arc<Fixed> {
    presenting(ca, &[id], not_after)
}

/// A leaf with the URI SANs `sans` (a workload certificate has exactly one).
fn presenting(ca: &Ca, sans: &[&str], not_after: OffsetDateTime) -> Arc<Fixed> {
    let (cert, key): (CertificateDer<'static>, KeyPair) = leaf_with_key(ca, sans, not_after);
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = rustls::crypto::ring::sign::any_ecdsa_type(&private).unwrap();
    Arc::new(Fixed(Arc::new(CertifiedKey::new(
        vec![cert, ca.issuer.der().clone()],
        signer,
    ))))
}

/// What each side concluded: the client's view of the server, the server's view of
/// the client.
struct Outcome {
    client: Result<SpiffeId, String>,
    server: Result<SpiffeId, String>,
}

async fn handshake(
    server_anchors: &TrustAnchors,
    server: Arc<Fixed>,
    client_anchors: &TrustAnchors,
    client: Arc<Fixed>,
    expected_server: &str,
) -> Outcome {
    let server = server_config(server_anchors, server, &[MESH_ALPN]).unwrap();
    connect(server, client_anchors, Some(client), expected_server).await
}

/// A handshake with `server`, by a client that presents `client` if any.
async fn connect(
    server: ServerConfig,
    client_anchors: &TrustAnchors,
    client: Option<Arc<Fixed>>,
    expected_server: &str,
) -> Outcome {
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let client = client.map(|c| c as Arc<dyn ResolvesClientCert>);
    let connector = TlsConnector::from(Arc::new(
        client_config(client_anchors, client, &[MESH_ALPN]).unwrap(),
    ));
    let expected: SpiffeId = expected_server.parse().unwrap();
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);

    let server = async move {
        let mut tls = acceptor
            .accept(server_io)
            .await
            .map_err(|e| e.to_string())?;
        let id = peer_identity(tls.get_ref().1.peer_certificates()).map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(id)
    };
    let client = async move {
        let name = ServerName::try_from("10.0.0.1").unwrap();
        let mut tls = connector
            .connect(name, client_io)
            .await
            .map_err(|e| e.to_string())?;
        let id = expect_peer(tls.get_ref().1.peer_certificates(), &expected)
            .map_err(|e| e.to_string())?;
        tls.write_all(b"x").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        // Hold the connection until the server is done with it (it answers with
        // session tickets after the handshake, which must not hit a closed pipe).
        let _ = tls.read(&mut [0u8; 1]).await;
        Ok::<_, String>(id)
    };
    let (client, server) = tokio::join!(client, server);
    Outcome { client, server }
}

#[tokio::test]
async fn two_workloads_of_one_mesh_learn_each_others_identity() {
    let mesh = ca("mesh");
    let anchors = anchors(&mesh);
    let outcome = handshake(
        &anchors,
        workload(&mesh, WEB, tomorrow()),
        &anchors,
        workload(&mesh, CHECKOUT, tomorrow()),
        WEB,
    )
    .await;
    assert_eq!(outcome.client.unwrap().as_str(), WEB);
    assert_eq!(outcome.server.unwrap().as_str(), CHECKOUT);
}

#[tokio::test]
async fn a_server_with_another_identity_is_refused_by_the_client() {
    let mesh = ca("mesh");
    let anchors = anchors(&mesh);
    let outcome = handshake(
        &anchors,
        workload(&mesh, CHECKOUT, tomorrow()),
        &anchors,
        workload(&mesh, WEB, tomorrow()),
        WEB,
    )
    .await;
    let err = outcome.client.unwrap_err();
    assert!(
        err.contains(&format!("the peer is {CHECKOUT}, but {WEB} was expected")),
        "{err}"
    );
    // The client sent nothing: the server never saw the application byte.
    assert!(outcome.server.is_err());
}

#[tokio::test]
async fn a_client_from_another_mesh_is_refused_by_the_server() {
    let mesh = ca("mesh");
    let stranger = ca("stranger");
    let outcome = handshake(
        &anchors(&mesh),
        workload(&mesh, WEB, tomorrow()),
        &anchors(&mesh),
        workload(&stranger, CHECKOUT, tomorrow()),
        WEB,
    )
    .await;
    let err = outcome.server.unwrap_err();
    assert!(
        err.contains("UnknownIssuer") || err.contains("invalid peer certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn a_server_from_another_mesh_is_refused_by_the_client() {
    let mesh = ca("mesh");
    let stranger = ca("stranger");
    let outcome = handshake(
        &anchors(&stranger),
        workload(&stranger, WEB, tomorrow()),
        &anchors(&mesh),
        workload(&mesh, CHECKOUT, tomorrow()),
        WEB,
    )
    .await;
    let err = outcome.client.unwrap_err();
    assert!(
        err.contains("does not chain to the mesh trust anchors"),
        "{err}"
    );
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused() {
    let mesh = ca("mesh");
    let anchors = anchors(&mesh);
    let expired = OffsetDateTime::now_utc() - Duration::minutes(1);
    let outcome = handshake(
        &anchors,
        workload(&mesh, WEB, expired),
        &anchors,
        workload(&mesh, CHECKOUT, tomorrow()),
        WEB,
    )
    .await;
    let err = outcome.client.unwrap_err();
    assert!(err.contains("Expired"), "{err}");
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    let mesh = ca("mesh");
    let anchors = anchors(&mesh);
    let expired = OffsetDateTime::now_utc() - Duration::minutes(1);
    let outcome = handshake(
        &anchors,
        workload(&mesh, WEB, tomorrow()),
        &anchors,
        workload(&mesh, CHECKOUT, expired),
        WEB,
    )
    .await;
    let err = outcome.server.unwrap_err();
    assert!(err.contains("Expired") || err.contains("expired"), "{err}");
}

#[tokio::test]
async fn an_optional_client_certificate_is_verified_when_presented() {
    let mesh = ca("mesh");
    let stranger = ca("stranger");
    let anchors = anchors(&mesh);
    let server = workload(&mesh, WEB, tomorrow());
    let with = |client: Option<Arc<Fixed>>| {
        let config = server_config_optional_client(&anchors, server.clone(), &[MESH_ALPN]);
        connect(config.unwrap(), &anchors, client, WEB)
    };

    // No certificate: let in, and the connection has no identity.
    let anonymous = with(None).await;
    assert_eq!(anonymous.client.unwrap().as_str(), WEB);
    assert_eq!(
        anonymous.server.unwrap_err(),
        VerifyError::NoCertificate.to_string()
    );

    // A valid workload certificate: its SPIFFE ID is the connection's identity.
    let valid = with(Some(workload(&mesh, CHECKOUT, tomorrow()))).await;
    assert_eq!(valid.server.unwrap().as_str(), CHECKOUT);

    // A certificate of another CA, or of this CA without a SPIFFE ID: the handshake
    // fails rather than letting the client in as anonymous.
    let foreign = with(Some(workload(&stranger, CHECKOUT, tomorrow()))).await;
    let err = foreign.server.unwrap_err();
    assert!(
        err.contains("does not chain to the mesh trust anchors"),
        "{err}"
    );
    let nameless = with(Some(presenting(&mesh, &[], tomorrow()))).await;
    let err = nameless.server.unwrap_err();
    assert!(err.contains("carries no SPIFFE ID"), "{err}");
}

#[test]
fn mesh_tls_prefers_aes_128_gcm_with_sha_256() {
    let first = provider().cipher_suites[0].suite();
    assert_eq!(first, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
}
