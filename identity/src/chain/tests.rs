//! Chain verification against real certificates made with rcgen: a root, an issuer
//! under it, and leaves under the issuer, as the controller issues them.

use rustls_pki_types::UnixTime;
use time::{Duration, OffsetDateTime};

use super::*;
use crate::testing::{anchors, ca, leaf, tomorrow};

const CHECKOUT: &str = "spiffe://cluster.local/ns/shop/sa/checkout";

#[test]
fn a_chain_to_the_anchors_yields_its_spiffe_id() {
    let ca = ca("mesh");
    let cert = leaf(&ca, &[CHECKOUT], tomorrow());
    for presenter in [Presenter::Client, Presenter::Server] {
        let id = verify_chain(
            &cert,
            &[ca.issuer.der().clone()],
            &anchors(&ca),
            UnixTime::now(),
            presenter,
        )
        .unwrap();
        assert_eq!(id.as_str(), CHECKOUT);
    }
}

#[test]
fn a_chain_to_other_anchors_is_untrusted() {
    let mesh = ca("mesh");
    let stranger = ca("stranger");
    let cert = leaf(&stranger, &[CHECKOUT], tomorrow());
    let err = verify_chain(
        &cert,
        &[stranger.issuer.der().clone()],
        &anchors(&mesh),
        UnixTime::now(),
        Presenter::Client,
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::Untrusted(_)), "{err}");
}

#[test]
fn a_chain_without_its_issuer_is_untrusted() {
    let ca = ca("mesh");
    let cert = leaf(&ca, &[CHECKOUT], tomorrow());
    let err = verify_chain(
        &cert,
        &[],
        &anchors(&ca),
        UnixTime::now(),
        Presenter::Client,
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::Untrusted(_)), "{err}");
}

#[test]
fn an_expired_certificate_is_refused() {
    let ca = ca("mesh");
    let cert = leaf(
        &ca,
        &[CHECKOUT],
        OffsetDateTime::now_utc() - Duration::minutes(1),
    );
    let err = verify_chain(
        &cert,
        &[ca.issuer.der().clone()],
        &anchors(&ca),
        UnixTime::now(),
        Presenter::Server,
    )
    .unwrap_err();
    assert!(
        matches!(&err, VerifyError::Untrusted(e) if e.contains("Expired")),
        "{err}"
    );
}

#[test]
fn a_certificate_without_exactly_one_spiffe_uri_is_refused() {
    let ca = ca("mesh");
    let issuer = [ca.issuer.der().clone()];
    let none = leaf(&ca, &[], tomorrow());
    let two = leaf(
        &ca,
        &[CHECKOUT, "spiffe://cluster.local/ns/shop/sa/admin"],
        tomorrow(),
    );
    let odd = leaf(&ca, &["spiffe://cluster.local/checkout"], tomorrow());
    let check = |cert| {
        verify_chain(
            cert,
            &issuer,
            &anchors(&ca),
            UnixTime::now(),
            Presenter::Client,
        )
    };
    assert_eq!(check(&none).unwrap_err(), VerifyError::NoSpiffeId);
    assert_eq!(check(&two).unwrap_err(), VerifyError::SeveralUris(2));
    assert!(matches!(
        check(&odd).unwrap_err(),
        VerifyError::InvalidSpiffeId(_)
    ));
}
