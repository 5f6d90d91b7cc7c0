//! Authenticating a ServiceAccount token by asking the API server
//! (`--token-review`): an `authentication.k8s.io/v1` TokenReview.
//!
//! Where the JWKS path checks the signature itself, this one lets the cluster decide,
//! which also catches what a signature cannot: a token whose pod or ServiceAccount
//! has been deleted since it was minted. The review names our audience, and, as the
//! API's documentation asks of every client that does, the answer must say that the
//! token is valid for it (`status.audiences`), so that a server which ignores
//! audiences cannot make a token minted for another service pass here.
//!
//! A token the API server does not authenticate is refused as UNAUTHENTICATED, like a
//! bad JWT. An API server that cannot be asked (unreachable, or refusing the
//! controller's own credentials) is the controller's problem, not the proxy's: it is
//! UNAVAILABLE, so the proxy retries, and the log says what to check.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};

use super::{MAX_TOKEN_LEN, ServiceAccount};
use crate::{Refusal, TokenError};

/// How long one review may take: a proxy waits for its certificate meanwhile.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// The key under which the API server names the pod a bound token belongs to.
const POD_NAME: &str = "authentication.kubernetes.io/pod-name";

/// Reviews tokens with the API server the client talks to.
pub struct TokenReviewer {
    api: Api<TokenReview>,
    /// The audience a token must be valid for (`--token-audience`).
    audience: String,
}

impl TokenReviewer {
    pub fn new(client: kube::Client, audience: &str) -> Self {
        TokenReviewer {
            api: Api::all(client),
            audience: audience.to_string(),
        }
    }

    /// Asks the API server who `token` speaks for.
    pub async fn review(&self, token: &str) -> Result<ServiceAccount, Refusal> {
        if token.is_empty() {
            return Err(TokenError::Missing.into());
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed(format!(
                "it is {} bytes long, more than {MAX_TOKEN_LEN}",
                token.len()
            ))
            .into());
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let answer = tokio::time::timeout(
            REVIEW_TIMEOUT,
            self.api.create(&PostParams::default(), &review),
        )
        .await
        .map_err(|_| {
            Refusal::ReviewUnavailable(format!(
                "the API server did not answer within {}s",
                REVIEW_TIMEOUT.as_secs()
            ))
        })?
        .map_err(unavailable)?;
        Ok(service_account(
            answer.status.unwrap_or_default(),
            &self.audience,
        )?)
    }
}

/// The ServiceAccount an answered review names, if it authenticates the token for
/// `audience`.
fn service_account(
    status: TokenReviewStatus,
    audience: &str,
) -> Result<ServiceAccount, TokenError> {
    if status.authenticated != Some(true) {
        return Err(TokenError::NotAuthenticated(
            status
                .error
                .filter(|error| !error.is_empty())
                .unwrap_or_else(|| "no reason given".into()),
        ));
    }
    let for_us = status
        .audiences
        .as_ref()
        .is_some_and(|audiences| audiences.iter().any(|a| a == audience));
    if !for_us {
        return Err(TokenError::WrongAudience(audience.to_string()));
    }
    let user = status.user.unwrap_or_default();
    let username = user.username.unwrap_or_default();
    let (namespace, name) = username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .filter(|(namespace, name)| !namespace.is_empty() && !name.is_empty())
        .ok_or_else(|| TokenError::NotServiceAccount(username.clone()))?;
    let pod = user
        .extra
        .as_ref()
        .and_then(|extra| extra.get(POD_NAME))
        .and_then(|values| values.first())
        .cloned();
    Ok(ServiceAccount {
        namespace: namespace.to_string(),
        name: name.to_string(),
        pod,
    })
}

/// Why the API server could not be asked, with what to check.
fn unavailable(error: kube::Error) -> Refusal {
    let hint = match &error {
        kube::Error::Api(status) if status.code == 401 => {
            "; the API server does not accept the controller's own credentials"
        }
        kube::Error::Api(status) if status.code == 403 => {
            "; the controller's ServiceAccount needs `create` on tokenreviews.authentication.k8s.io \
             (bind it to the system:auth-delegator ClusterRole)"
        }
        _ => "",
    };
    Refusal::ReviewUnavailable(format!("{error}{hint}"))
}

#[cfg(test)]
mod tests;
