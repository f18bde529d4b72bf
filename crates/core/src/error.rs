//! Domain errors and the stable table of business codes.
//!
//! Domain code returns [`Error`]; the HTTP edge turns it into the platform envelope
//! (`http::ApiError`). The numeric codes are a public contract: they are documented in
//! `docs/error-codes.md` and never renumbered.

use serde::Serialize;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Business codes. `0` is success; every failure has its own number and HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[repr(u32)]
pub enum Code {
    Ok = 0,
    // 10xxx: the request itself is malformed.
    InvalidJson = 10001,
    ValidationFailed = 10002,
    BodyTooLarge = 10003,
    RouteNotFound = 10004,
    MethodNotAllowed = 10005,
    UnsupportedMediaType = 10006,
    MalformedHttp = 10007,
    // 20xxx: who is calling.
    Unauthenticated = 20001,
    InvalidCredentials = 20002,
    AccountLocked = 20003,
    Forbidden = 20004,
    TokenExpired = 20005,
    CsrfRejected = 20006,
    // 21xxx: request signatures (shared/spec/signing.md).
    MissingParameter = 21001,
    UnknownAppKey = 21002,
    AppDisabled = 21003,
    BadSignature = 21004,
    StaleTimestamp = 21005,
    ReplayedNonce = 21006,
    UnsupportedSignMethod = 21007,
    MalformedAuthorization = 21008,
    // 30xxx: the state of the platform's objects.
    NotFound = 30001,
    Conflict = 30002,
    InvalidStateTransition = 30003,
    MerchantNotActive = 30004,
    // 40xxx: the gateway's decisions.
    UnknownApi = 40001,
    NotGranted = 40002,
    RateLimited = 40003,
    IpNotAllowed = 40004,
    UserTokenRequired = 40005,
    ApiRetired = 40006,
    QuotaExceeded = 40007,
    // 41xxx: the upstream service behind the gateway.
    UpstreamUnavailable = 41001,
    UpstreamTimeout = 41002,
    UpstreamError = 41003,
    // 50xxx: the platform itself.
    Internal = 50001,
    Unavailable = 50003,
}

impl Code {
    pub fn as_u32(self) -> u32 {
        self as u32
    }

    /// The HTTP status that carries this code.
    pub fn http_status(self) -> u16 {
        match self {
            Code::Ok => 200,
            Code::InvalidJson | Code::ValidationFailed | Code::MalformedHttp => 400,
            Code::BodyTooLarge => 413,
            Code::RouteNotFound | Code::NotFound => 404,
            Code::MethodNotAllowed => 405,
            Code::UnsupportedMediaType => 415,
            Code::Unauthenticated | Code::InvalidCredentials | Code::TokenExpired => 401,
            Code::AccountLocked => 423,
            Code::Forbidden | Code::CsrfRejected | Code::AppDisabled => 403,
            Code::MissingParameter | Code::UnsupportedSignMethod | Code::MalformedAuthorization => 400,
            Code::UnknownAppKey | Code::BadSignature | Code::StaleTimestamp | Code::ReplayedNonce => 401,
            Code::Conflict | Code::InvalidStateTransition | Code::MerchantNotActive => 409,
            Code::UnknownApi => 404,
            Code::NotGranted | Code::IpNotAllowed => 403,
            Code::RateLimited | Code::QuotaExceeded => 429,
            Code::UserTokenRequired => 401,
            Code::ApiRetired => 410,
            Code::UpstreamUnavailable => 503,
            Code::UpstreamTimeout => 504,
            Code::UpstreamError => 502,
            Code::Internal => 500,
            Code::Unavailable => 503,
        }
    }

    /// Every code, for the documentation test that keeps `docs/error-codes.md` complete.
    pub const ALL: &'static [Code] = &[
        Code::Ok,
        Code::InvalidJson,
        Code::ValidationFailed,
        Code::BodyTooLarge,
        Code::RouteNotFound,
        Code::MethodNotAllowed,
        Code::UnsupportedMediaType,
        Code::MalformedHttp,
        Code::Unauthenticated,
        Code::InvalidCredentials,
        Code::AccountLocked,
        Code::Forbidden,
        Code::TokenExpired,
        Code::CsrfRejected,
        Code::MissingParameter,
        Code::UnknownAppKey,
        Code::AppDisabled,
        Code::BadSignature,
        Code::StaleTimestamp,
        Code::ReplayedNonce,
        Code::UnsupportedSignMethod,
        Code::MalformedAuthorization,
        Code::NotFound,
        Code::Conflict,
        Code::InvalidStateTransition,
        Code::MerchantNotActive,
        Code::UnknownApi,
        Code::NotGranted,
        Code::RateLimited,
        Code::IpNotAllowed,
        Code::UserTokenRequired,
        Code::ApiRetired,
        Code::QuotaExceeded,
        Code::UpstreamUnavailable,
        Code::UpstreamTimeout,
        Code::UpstreamError,
        Code::Internal,
        Code::Unavailable,
    ];
}

/// A failure in domain terms. No HTTP in here: the edge maps each variant to a [`Code`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// An input field failed validation; `field` is its path in the request (`ip_allowlist[2]`).
    #[error("{field}: {message}")]
    Validation { field: String, message: String },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    InvalidState(String),
    #[error("the merchant is not active")]
    MerchantNotActive,
    #[error("authentication required")]
    Unauthenticated,
    #[error("wrong email or password")]
    InvalidCredentials,
    /// Too many failed sign-ins; carries the seconds until the lock ends.
    #[error("too many failed sign-ins; try again in {retry_after_secs} s")]
    AccountLocked { retry_after_secs: u64 },
    #[error("the token has expired")]
    TokenExpired,
    #[error("{0}")]
    Forbidden(String),
    /// The database (or another dependency) cannot be reached right now.
    #[error("the service is temporarily unavailable")]
    Unavailable(String),
    /// A bug or an unexpected failure; the message is logged, never shown to the caller.
    #[error("internal error")]
    Internal(String),
}

impl Error {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Validation { field: field.into(), message: message.into() }
    }

    pub fn code(&self) -> Code {
        match self {
            Error::Validation { .. } => Code::ValidationFailed,
            Error::NotFound(_) => Code::NotFound,
            Error::Conflict(_) => Code::Conflict,
            Error::InvalidState(_) => Code::InvalidStateTransition,
            Error::MerchantNotActive => Code::MerchantNotActive,
            Error::Unauthenticated => Code::Unauthenticated,
            Error::InvalidCredentials => Code::InvalidCredentials,
            Error::AccountLocked { .. } => Code::AccountLocked,
            Error::TokenExpired => Code::TokenExpired,
            Error::Forbidden(_) => Code::Forbidden,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Internal(_) => Code::Internal,
        }
    }

    /// Re-labels a validation error's field, for errors raised by a newtype parser that
    /// does not know where in the request its input came from.
    pub fn at(self, field: &str) -> Self {
        match self {
            Error::Validation { message, .. } => Error::Validation { field: field.to_string(), message },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table in docs/error-codes.md is the public contract: every code is in it.
    #[test]
    fn every_code_is_documented() {
        let doc = include_str!("../../../docs/error-codes.md");
        for code in Code::ALL {
            let row = format!("| {} | ", code.as_u32());
            assert!(doc.contains(&row), "docs/error-codes.md lacks {code:?} ({})", code.as_u32());
            let name = format!("{code:?}");
            assert!(doc.contains(&format!("| {name} |")), "docs/error-codes.md lacks the name {name}");
        }
    }
}
