//! The SPIFFE ID of a workload.
//!
//! Only the Kubernetes workload shape is accepted: a trust domain and a
//! namespace/service-account pair. Every part is checked against the character set
//! Kubernetes allows in those names, so that a name cannot smuggle `/`, `%` or `..`
//! into a path that policy later compares as a string.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    /// The whole URI, validated at parse time, so that displaying and comparing never
    /// re-format and the parts can be sliced out of it without checks.
    uri: String,
}

impl SpiffeId {
    /// The identity of `service_account` in `namespace` under `trust_domain`.
    pub fn for_service_account(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, Error> {
        format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}").parse()
    }

    pub fn as_str(&self) -> &str {
        &self.uri
    }

    pub fn trust_domain(&self) -> &str {
        self.part(0)
    }

    pub fn namespace(&self) -> &str {
        self.part(2)
    }

    pub fn service_account(&self) -> &str {
        self.part(4)
    }

    /// The `index`th `/`-separated segment after the scheme; parsing guaranteed the
    /// shape `td/ns/NS/sa/SA`.
    fn part(&self, index: usize) -> &str {
        self.uri["spiffe://".len()..]
            .split('/')
            .nth(index)
            .unwrap_or_default()
    }
}

impl FromStr for SpiffeId {
    type Err = Error;

    fn from_str(uri: &str) -> Result<Self, Error> {
        const SCHEME: &str = "spiffe://";
        let Some(rest) = uri.strip_prefix(SCHEME) else {
            return Err(Error::NotSpiffe(uri.to_string()));
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let [trust_domain, "ns", namespace, "sa", service_account] = parts[..] else {
            return Err(Error::NotWorkload(uri.to_string()));
        };
        for (part, value) in [
            ("trust domain", trust_domain),
            ("namespace", namespace),
            ("service account", service_account),
        ] {
            if !is_dns_label_chars(value) {
                return Err(Error::InvalidPart {
                    id: uri.to_string(),
                    part,
                    value: value.to_string(),
                });
            }
        }
        Ok(SpiffeId {
            uri: uri.to_string(),
        })
    }
}

/// Kubernetes names (DNS-1123 subdomains) and trust domains share this alphabet.
fn is_dns_label_chars(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 253
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !value.starts_with(['-', '.'])
        && !value.ends_with(['-', '.'])
        && !value.contains("..")
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workload_id_parses_into_its_parts() {
        let id: SpiffeId = "spiffe://cluster.local/ns/shop/sa/checkout"
            .parse()
            .unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "shop");
        assert_eq!(id.service_account(), "checkout");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/checkout");
        assert_eq!(
            SpiffeId::for_service_account("cluster.local", "shop", "checkout").unwrap(),
            id
        );
    }

    #[test]
    fn other_shapes_are_refused() {
        for bad in [
            "https://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/ns/a/sa/b/extra",
            "spiffe://cluster.local/sa/a/ns/b",
            "spiffe://cluster.local/ns//sa/b",
            "spiffe://cluster.local/ns/A/sa/b",
            "spiffe://cluster.local/ns/a/sa/b%2Fc",
            "spiffe://cluster.local/ns/../sa/b",
            "spiffe://cluster.local/ns/a/sa/-b",
            "spiffe:///ns/a/sa/b",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad} was accepted");
        }
    }
}
