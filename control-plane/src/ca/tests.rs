//! The CA with real keys: the development CA on disk, loading an operator's files,
//! and the shape of the leaves it signs.

use std::os::unix::fs::PermissionsExt;

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::X509Certificate;

use super::dev::{DevCaFiles, ISSUER_CERT, ROOT_CERT};
use super::*;
use crate::fixtures::{CHECKOUT, ScratchDir, dev_ca};

fn parse(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der).unwrap().1
}

fn checkout() -> SpiffeId {
    CHECKOUT.parse().unwrap()
}

fn days(seconds: i64) -> i64 {
    seconds / 86_400
}

#[test]
fn the_dev_ca_is_generated_once_with_private_keys_0600() {
    let dir = ScratchDir::new("dev-ca");
    let first = dev::load_or_generate(dir.path()).unwrap();
    let files = DevCaFiles::in_dir(dir.path());
    for key in [&files.root_key, &files.issuer_key] {
        let mode = std::fs::metadata(key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", key.display());
    }
    let root_pem = std::fs::read(&files.root_cert).unwrap();
    let issuer_pem = std::fs::read(&files.issuer_cert).unwrap();

    // The second start re-uses the files: same root, and its leaves verify against
    // the anchors proxies got from the first.
    let second = dev::load_or_generate(dir.path()).unwrap();
    assert_eq!(std::fs::read(&files.root_cert).unwrap(), root_pem);
    assert_eq!(std::fs::read(&files.issuer_cert).unwrap(), issuer_pem);
    let key = KeyPair::generate().unwrap();
    let leaf = second
        .issue(&key, &checkout(), Duration::from_secs(3600))
        .unwrap();
    let id = verify_chain(
        &leaf.chain[0],
        &leaf.chain[1..],
        first.anchors(),
        UnixTime::now(),
        Presenter::Client,
    )
    .unwrap();
    assert_eq!(id, checkout());
}

#[test]
fn the_dev_root_and_issuer_have_the_documented_shape() {
    let (dir, _ca) = dev_ca();
    let root_der = CertificateDer::from_pem_file(dir.path().join(ROOT_CERT)).unwrap();
    let issuer_der = CertificateDer::from_pem_file(dir.path().join(ISSUER_CERT)).unwrap();
    let (root, issuer) = (parse(&root_der), parse(&issuer_der));

    let root_bc = root.basic_constraints().unwrap().unwrap().value;
    assert!(root_bc.ca);
    assert_eq!(root_bc.path_len_constraint, None);
    let issuer_bc = issuer.basic_constraints().unwrap().unwrap().value;
    assert!(issuer_bc.ca);
    assert_eq!(issuer_bc.path_len_constraint, Some(0));

    for cert in [&root, &issuer] {
        let spki = cert.public_key();
        assert_eq!(
            spki.algorithm
                .parameters
                .as_ref()
                .unwrap()
                .as_oid()
                .unwrap(),
            x509_parser::oid_registry::OID_EC_P256
        );
    }
    let lifetime = |c: &X509Certificate<'_>| {
        days(c.validity().not_after.timestamp() - c.validity().not_before.timestamp())
    };
    assert!(
        (3649..=3651).contains(&lifetime(&root)),
        "{}",
        lifetime(&root)
    );
    assert!(
        (364..=366).contains(&lifetime(&issuer)),
        "{}",
        lifetime(&issuer)
    );
    issuer.verify_signature(Some(root.public_key())).unwrap();
    assert_eq!(issuer.issuer(), root.subject());
}

#[test]
fn a_partial_dev_ca_is_refused_rather_than_replaced() {
    let (dir, _ca) = dev_ca();
    std::fs::remove_file(dir.path().join(ISSUER_CERT)).unwrap();
    let error = dev::load_or_generate(dir.path()).err().unwrap();
    assert!(
        matches!(&error, Error::PartialDevCa { missing, .. } if missing == ISSUER_CERT),
        "{error}"
    );
}

#[test]
fn an_issuer_from_another_root_is_refused_at_load() {
    let (ours, _) = dev_ca();
    let (theirs, _) = dev_ca();
    let ours = DevCaFiles::in_dir(ours.path());
    let theirs = DevCaFiles::in_dir(theirs.path());
    let error = Ca::from_files(&ours.root_cert, &theirs.issuer_cert, &theirs.issuer_key)
        .err()
        .unwrap();
    assert!(matches!(error, Error::IssuerUntrusted(_)), "{error}");

    // Our issuer certificate with their issuer key: leaves would not verify.
    let error = Ca::from_files(&ours.root_cert, &ours.issuer_cert, &theirs.issuer_key)
        .err()
        .unwrap();
    assert!(matches!(error, Error::IssuerUntrusted(_)), "{error}");
}

#[test]
fn unreadable_ca_files_name_the_file() {
    let (dir, _) = dev_ca();
    let files = DevCaFiles::in_dir(dir.path());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM").unwrap();
    let missing = dir.path().join("missing.pem");

    for (anchors, cert, key) in [
        (&garbage, &files.issuer_cert, &files.issuer_key),
        (&files.root_cert, &garbage, &files.issuer_key),
        (&files.root_cert, &files.issuer_cert, &garbage),
        (&files.root_cert, &files.issuer_cert, &missing),
    ] {
        let message = Ca::from_files(anchors, cert, key)
            .err()
            .unwrap()
            .to_string();
        let named = if anchors == &garbage || cert == &garbage || key == &garbage {
            &garbage
        } else {
            &missing
        };
        assert!(message.contains(&named.display().to_string()), "{message}");
    }
}

#[test]
fn a_workload_leaf_is_a_p256_spiffe_certificate_for_both_directions() {
    let (_dir, ca) = dev_ca();
    let key = KeyPair::generate().unwrap();
    let before = OffsetDateTime::now_utc().unix_timestamp();
    let issued = ca
        .issue(&key, &checkout(), Duration::from_secs(24 * 3600))
        .unwrap();
    assert_eq!(issued.chain.len(), 2);
    for presenter in [Presenter::Client, Presenter::Server] {
        let id = verify_chain(
            &issued.chain[0],
            &issued.chain[1..],
            ca.anchors(),
            UnixTime::now(),
            presenter,
        )
        .unwrap();
        assert_eq!(id, checkout());
    }

    let leaf = parse(&issued.chain[0]);
    let uris: Vec<&str> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::URI(uri) => *uri,
            other => panic!("unexpected SAN {other}"),
        })
        .collect();
    assert_eq!(uris, [CHECKOUT]);
    assert!(!leaf.basic_constraints().unwrap().unwrap().value.ca);
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );

    let not_before = leaf.validity().not_before.timestamp();
    let not_after = leaf.validity().not_after.timestamp();
    assert!((before - 62..=before - 58).contains(&not_before));
    assert!((before + 24 * 3600 - 2..=before + 24 * 3600 + 2).contains(&not_after));
    assert_eq!(issued.not_after.unix_timestamp(), not_after);
    assert_eq!(issued.serial, hex(leaf.raw_serial()));
}

#[test]
fn serials_are_random() {
    let (_dir, ca) = dev_ca();
    let key = KeyPair::generate().unwrap();
    let serials: std::collections::HashSet<String> = (0..8)
        .map(|_| {
            ca.issue(&key, &checkout(), Duration::from_secs(60))
                .unwrap()
                .serial
        })
        .collect();
    assert_eq!(serials.len(), 8);
    assert!(serials.iter().all(|s| s.len() == 32), "{serials:?}");
}

#[test]
fn a_leaf_never_outlives_its_issuer() {
    let (_dir, ca) = dev_ca();
    let key = KeyPair::generate().unwrap();
    let issued = ca
        .issue(&key, &checkout(), Duration::from_secs(5 * 365 * 86_400))
        .unwrap();
    assert_eq!(issued.not_after, ca.issuer_not_after);
    let forever = ca.issue(&key, &checkout(), Duration::MAX).unwrap();
    assert_eq!(forever.not_after, ca.issuer_not_after);
}

#[test]
fn the_serving_certificate_adds_dns_names_and_serves_only() {
    let (_dir, ca) = dev_ca();
    let key = KeyPair::generate().unwrap();
    let issued = ca
        .issue_server(
            &key,
            &checkout(),
            &["trellis-controller.trellis-system.svc", "localhost"],
            Duration::from_secs(60),
        )
        .unwrap();
    let leaf = parse(&issued.chain[0]);
    let names = &leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert_eq!(names.len(), 3);
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
}
