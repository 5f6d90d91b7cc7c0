//! The real controller over TLS on 127.0.0.1:0, called the way a proxy calls it
//! ([`crate::fixtures::connect`]).

use std::net::SocketAddr;

use rcgen::KeyPair;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use tonic::Code;
use trellis_identity::tls::client_config;
use trellis_identity::{Presenter, TrustAnchors, verify_chain};
use trellis_proto::identity::v1::CertifyRequest;
use trellis_proto::identity::v1::identity_client::IdentityClient;

use super::*;
use crate::IdentityService;
use crate::fixtures::{CHECKOUT, ScratchDir, Signers, TRUST_DOMAIN, checkout_claims, connect, csr};
use crate::{CaSource, Config, LogFormat};

/// The leaf the controller presents on a fresh connection.
async fn serving_leaf(addr: SocketAddr, anchors: &TrustAnchors) -> CertificateDer<'static> {
    let config = Arc::new(client_config(anchors, None, &[b"h2"]).unwrap());
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = TlsConnector::from(config).connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

#[tokio::test]
async fn a_proxy_gets_its_certificate_over_tls_from_the_real_server() {
    let dir = ScratchDir::new("server");
    let signers = Signers::new();
    std::fs::create_dir_all(dir.path()).unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, signers.jwks()).unwrap();
    let ca_dir = dir.path().join("ca");
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        trust_domain: TRUST_DOMAIN.into(),
        ca: CaSource::Dev(ca_dir.clone()),
        token_auth: crate::TokenAuth::Jwks(jwks),
        token_audience: crate::fixtures::AUDIENCE.into(),
        cert_lifetime: Duration::from_secs(3600),
        log_format: LogFormat::Plain,
        config_dir: None,
        kubernetes: false,
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        debounce: Duration::from_millis(50),
    };
    let listener = TcpListener::bind(config.listen).await.unwrap();
    let admin = TcpListener::bind(config.admin_addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let controller = tokio::spawn(async move {
        let listeners = crate::Listeners {
            grpc: listener,
            admin,
        };
        crate::run(&config, listeners, async {
            let _ = stopped.await;
        })
        .await
    });

    // A proxy knows the controller only through ca.crt, given as --trust-anchors. The
    // controller writes it before it listens; wait for it.
    let ca_crt = ca_dir.join(crate::ca::dev::ROOT_CERT);
    let anchors = loop {
        // The file may exist before it is fully written: retry until it parses.
        if let Ok(pem) = std::fs::read(&ca_crt)
            && let Ok(anchors) = TrustAnchors::from_pem(&pem)
        {
            break anchors;
        }
        assert!(!controller.is_finished(), "the controller stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let controller_id = controller_identity(TRUST_DOMAIN).unwrap();
    let channel = connect(addr, &anchors, controller_id.clone())
        .await
        .unwrap();
    let mut client = IdentityClient::new(channel);

    let key = KeyPair::generate().unwrap();
    let response = client
        .certify(CertifyRequest {
            csr_der: csr(&key, &[]),
            token: signers.es256(&checkout_claims()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.spiffe_id, CHECKOUT);
    let chain: Vec<CertificateDer<'static>> = response
        .chain_der
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let id = verify_chain(
        &chain[0],
        &chain[1..],
        &anchors,
        UnixTime::now(),
        Presenter::Server,
    )
    .unwrap();
    assert_eq!(id.as_str(), CHECKOUT);

    // Refusals cross the wire with their code.
    let status = client
        .certify(CertifyRequest {
            csr_der: csr(&key, &[]),
            token: "not.a.token".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // A proxy expecting another identity hangs up before sending anything.
    let impostor =
        SpiffeId::for_service_account(TRUST_DOMAIN, "trellis-system", "impostor").unwrap();
    assert!(connect(addr, &anchors, impostor).await.is_err());

    // Someone speaking plain HTTP fails the handshake; the server keeps accepting.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = plain.read_to_end(&mut sink).await;
    let channel = connect(addr, &anchors, controller_id).await.unwrap();
    let response = IdentityClient::new(channel)
        .certify(CertifyRequest {
            csr_der: csr(&key, &[CHECKOUT]),
            token: signers.rs256(&checkout_claims()),
        })
        .await
        .unwrap();
    assert_eq!(response.into_inner().spiffe_id, CHECKOUT);

    stop.send(()).unwrap();
    controller.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_serving_certificate_is_renewed_before_it_expires() {
    let (_dir, ca) = crate::fixtures::dev_ca();
    let ca = Arc::new(ca);
    let anchors = ca.anchors().clone();
    let lifetime = Duration::from_secs(6);
    let id = controller_identity(TRUST_DOMAIN).unwrap();
    let serving = Arc::new(ServingCert::new(ca.clone(), id, lifetime).unwrap());
    let tls = Arc::new(tls_config(serving).unwrap());
    let service = IdentityService::new(
        ca,
        Arc::new(Signers::new().verifier().into()),
        TRUST_DOMAIN,
        lifetime,
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let routes = Routes::new(service.into_server());
    let server = tokio::spawn(serve(listener, tls, routes, async {
        let _ = stopped.await;
    }));

    let first = serving_leaf(addr, &anchors).await;
    assert_eq!(
        serving_leaf(addr, &anchors).await,
        first,
        "not renewed early"
    );
    tokio::time::sleep(lifetime.mul_f64(0.8)).await;
    let renewed = serving_leaf(addr, &anchors).await;
    assert_ne!(renewed, first);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
