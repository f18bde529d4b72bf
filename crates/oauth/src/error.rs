//! Errors of the OAuth2 endpoints, in the exact shape OAuth2 clients expect
//! (RFC 6749 §5.2): `{"error": "...", "error_description": "..."}`.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
    /// `WWW-Authenticate: Basic` on `invalid_client` when the client used Basic.
    pub basic_challenge: bool,
    pub retry_after: Option<u64>,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        OAuthError { status, error, description: description.into(), basic_challenge: false, retry_after: None }
    }
    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", d)
    }
    pub fn invalid_client(d: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", d)
    }
    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", d)
    }
    pub fn unauthorized_client(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unauthorized_client", d)
    }
    pub fn unsupported_grant_type(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unsupported_grant_type", d)
    }
    pub fn invalid_scope(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", d)
    }
    pub fn too_many_attempts(retry_after: u64) -> Self {
        OAuthError { retry_after: Some(retry_after), ..Self::new(StatusCode::TOO_MANY_REQUESTS, "invalid_client", "too many failed attempts; try again later") }
    }
    pub fn server_error(d: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", d)
    }
    pub fn temporarily_unavailable() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "the service is temporarily unavailable")
    }
}

impl From<portico_core::Error> for OAuthError {
    fn from(e: portico_core::Error) -> Self {
        use portico_core::Error as E;
        match e {
            E::Unavailable(cause) => {
                tracing::warn!(%cause, "oauth: dependency unavailable");
                OAuthError::temporarily_unavailable()
            }
            E::Validation { field, message } => OAuthError::invalid_request(format!("{field}: {message}")),
            E::InvalidCredentials | E::Unauthenticated => OAuthError::invalid_client("client authentication failed"),
            E::MerchantNotActive | E::Forbidden(_) => OAuthError::unauthorized_client("the client is disabled"),
            other => {
                tracing::error!(error = ?other, "oauth: internal error");
                OAuthError::server_error("internal error")
            }
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.error, "error_description": self.description });
        let mut r = (self.status, [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body.to_string()).into_response();
        if self.basic_challenge {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"portico\""));
        }
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, s.into());
        }
        r
    }
}
