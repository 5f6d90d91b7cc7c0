//! Real objects for the tests: a development CA in a scratch directory, token signing
//! keys (ES256 made here, RS256 from `testdata/`) with their JWKS, tokens shaped like
//! projected ServiceAccount tokens, CSRs, a gRPC channel to the controller made the
//! way a proxy makes it, and an HTTPS server playing the Kubernetes API
//! (`api_server.rs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{CertificateParams, KeyPair, SanType};
use ring::signature::{RsaKeyPair, RsaPublicKeyComponents};
use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, ServerName,
};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};
use trellis_identity::tls::{client_config, expect_peer};
use trellis_identity::{SpiffeId, TrustAnchors};

pub mod api_server;

use crate::server::CONTROLLER_DNS_NAMES;
use crate::token::mint;
use crate::{Ca, TokenVerifier};

pub const AUDIENCE: &str = "identity.trellis.io";
pub const TRUST_DOMAIN: &str = "cluster.local";
pub const ES_KID: &str = "es256-key";
pub const RSA_KID: &str = "rs256-key";
pub const CHECKOUT: &str = "spiffe://cluster.local/ns/shop/sa/checkout";

/// A 2048-bit RSA key made once with `openssl genrsa -traditional 2048` (ring cannot
/// generate RSA keys); PKCS#1, as ring signs with.
const RSA_PEM: &[u8] = include_bytes!("testdata/token-signer-rsa.pem");

/// A directory removed when the test ends.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "trellis-control-plane-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        ScratchDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A development CA, generated into its own scratch directory.
pub fn dev_ca() -> (ScratchDir, Ca) {
    let dir = ScratchDir::new("ca");
    let ca = crate::ca::dev::load_or_generate(dir.path()).unwrap();
    (dir, ca)
}

/// The keys the "API server" signs tokens with, and a stranger's key.
pub struct Signers {
    pub es256: KeyPair,
    rsa_pkcs1: Vec<u8>,
    pub stranger: KeyPair,
}

impl Signers {
    pub fn new() -> Self {
        let rsa_pkcs1 = PrivatePkcs1KeyDer::from_pem_slice(RSA_PEM)
            .unwrap()
            .secret_pkcs1_der()
            .to_vec();
        Signers {
            es256: KeyPair::generate().unwrap(),
            rsa_pkcs1,
            stranger: KeyPair::generate().unwrap(),
        }
    }

    /// The JWKS an API server would publish: both keys, with their `kid`s.
    pub fn jwks(&self) -> String {
        let rsa = RsaKeyPair::from_der(&self.rsa_pkcs1).unwrap();
        let public: RsaPublicKeyComponents<Vec<u8>> = rsa.public().into();
        let rsa_jwk = json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": RSA_KID,
            "n": URL_SAFE_NO_PAD.encode(&public.n),
            "e": URL_SAFE_NO_PAD.encode(&public.e),
        });
        let es_jwk = mint::es256_jwk(self.es256.public_key_raw(), ES_KID).unwrap();
        mint::jwks(&[rsa_jwk, es_jwk])
    }

    pub fn verifier(&self) -> TokenVerifier {
        TokenVerifier::from_jwks(&self.jwks(), AUDIENCE).unwrap()
    }

    pub fn es256(&self, claims: &Value) -> String {
        mint::sign_es256(&self.es256.serialize_der(), ES_KID, claims).unwrap()
    }

    pub fn rs256(&self, claims: &Value) -> String {
        self.rs256_as(RSA_KID, claims)
    }

    /// An RS256 token claiming to be signed by key `kid`.
    pub fn rs256_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.into());
        let key = EncodingKey::from_rsa_der(&self.rsa_pkcs1);
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    /// A token signed by `key` with header `header`, whatever they are.
    pub fn es256_with(&self, key: &KeyPair, header: Header, claims: &Value) -> String {
        let key = EncodingKey::from_ec_der(&key.serialize_der());
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }
}

/// Claims for shop/checkout, valid for an hour from now, for [`AUDIENCE`].
pub fn checkout_claims() -> Value {
    mint::service_account_claims(
        "shop",
        "checkout",
        Some("checkout-7d9f-abcde"),
        AUDIENCE,
        Duration::from_secs(3600),
    )
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A CSR for `key` asking for `uris` as URI SANs.
pub fn csr(key: &KeyPair, uris: &[&str]) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.subject_alt_names = uris
        .iter()
        .map(|uri| SanType::URI((*uri).try_into().unwrap()))
        .collect();
    params.serialize_request(key).unwrap().der().to_vec()
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Dials the controller as a proxy does: TCP, TLS with the identity crate's client
/// configuration, and `expect_peer` on the controller's SPIFFE ID; fails unless it
/// proves to be `expected`.
pub async fn connect(
    addr: SocketAddr,
    anchors: &TrustAnchors,
    expected: SpiffeId,
) -> Result<Channel, tonic::transport::Error> {
    connect_presenting(addr, anchors, expected, None).await
}

/// A client certificate chain and its key, as a proxy presents its workload
/// certificate.
#[derive(Debug)]
pub struct Presenting(pub Arc<CertifiedKey>);

impl Presenting {
    /// `chain` (leaf first) over `key`, a P-256 key.
    pub fn new(chain: Vec<CertificateDer<'static>>, key: &KeyPair) -> Arc<Self> {
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = rustls::crypto::ring::sign::any_ecdsa_type(&der).unwrap();
        Arc::new(Presenting(Arc::new(CertifiedKey::new(chain, signing))))
    }
}

impl ResolvesClientCert for Presenting {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// [`connect`], presenting `client` as the TLS client certificate if given.
pub async fn connect_presenting(
    addr: SocketAddr,
    anchors: &TrustAnchors,
    expected: SpiffeId,
    client: Option<Arc<Presenting>>,
) -> Result<Channel, tonic::transport::Error> {
    let client = client.map(|c| c as Arc<dyn ResolvesClientCert>);
    let config = Arc::new(client_config(anchors, client, &[b"h2"]).unwrap());
    let connector = tower::service_fn(move |_: Uri| {
        let config = config.clone();
        let expected = expected.clone();
        async move {
            let tcp = TcpStream::connect(addr).await?;
            let name = ServerName::try_from(CONTROLLER_DNS_NAMES[0])?.to_owned();
            let tls = TlsConnector::from(config).connect(name, tcp).await?;
            expect_peer(tls.get_ref().1.peer_certificates(), &expected)?;
            Ok::<_, BoxError>(TokioIo::new(tls))
        }
    });
    Endpoint::from_static("http://trellis-controller.trellis-system.svc:8086")
        .connect_with_connector(connector)
        .await
}

/// The body of `GET path` on an HTTP/1.1 server at `addr`, which must answer 200.
pub async fn get_text(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: controller\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// What `model` would push now, as `Kind namespace/name` → resource: how the source
/// tests see the result of what they fed it.
pub fn pushed_objects(
    model: &crate::model::Model,
) -> std::collections::BTreeMap<String, trellis_proto::discovery::v1::resource::Kind> {
    model.rebuild();
    let snapshot = model.current().expect("the sources have synced");
    let mut objects = std::collections::BTreeMap::new();
    for kind in crate::model::Kind::ALL {
        for named in &snapshot.get(kind).resources {
            let object = named.resource.kind.clone().expect("a resource has a kind");
            objects.insert(format!("{kind} {}", named.name), object);
        }
    }
    objects
}
