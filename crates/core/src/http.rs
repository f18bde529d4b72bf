//! The HTTP edge of the envelope: `{"code","msg","data","trace_id"}` on every response,
//! success or failure, and the JSON extractor whose rejections name the offending field.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Value};

use crate::{trace, Code, Error};

/// A failure on its way out as an envelope.
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub msg: String,
    pub data: Value,
    pub retry_after_secs: Option<u64>,
    /// More response headers (e.g. `RateLimit-*` on a 429).
    pub extra_headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        ApiError { code, msg: msg.into(), data: Value::Null, retry_after_secs: None, extra_headers: Vec::new() }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let code = e.code();
        match e {
            Error::Validation { field, message } => ApiError {
                code,
                msg: format!("{field}: {message}"),
                data: json!({ "field": field, "reason": message }),
                retry_after_secs: None,
                extra_headers: Vec::new(),
            },
            Error::AccountLocked { retry_after_secs } => ApiError {
                code,
                msg: format!("too many failed sign-ins; try again in {retry_after_secs} s"),
                data: json!({ "retry_after_secs": retry_after_secs }),
                retry_after_secs: Some(retry_after_secs),
                extra_headers: Vec::new(),
            },
            Error::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                ApiError::new(code, "internal error")
            }
            Error::Unavailable(cause) => {
                tracing::warn!(%cause, "dependency unavailable");
                ApiError { retry_after_secs: Some(1), ..ApiError::new(code, "the service is temporarily unavailable") }
            }
            other => ApiError::new(code, other.to_string()),
        }
    }
}


impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({
            "code": self.code.as_u32(),
            "msg": self.msg,
            "data": self.data,
            "trace_id": trace::current(),
        });
        let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(header::RETRY_AFTER, secs.into());
        }
        for (name, value) in self.extra_headers {
            if let Ok(v) = axum::http::HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, v);
            }
        }
        response
    }
}

/// A successful envelope: `{"code":0,"msg":"ok","data":…,"trace_id":…}`.
pub struct Success<T>(pub T);

/// The same with another status, e.g. `201 Created`.
pub struct Created<T>(pub T);

fn envelope<T: Serialize>(status: StatusCode, data: T) -> Response {
    let body = json!({ "code": 0, "msg": "ok", "data": data, "trace_id": trace::current() });
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

impl<T: Serialize> IntoResponse for Success<T> {
    fn into_response(self) -> Response {
        envelope(StatusCode::OK, self.0)
    }
}

impl<T: Serialize> IntoResponse for Created<T> {
    fn into_response(self) -> Response {
        envelope(StatusCode::CREATED, self.0)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON body. Unlike `axum::Json`, every rejection is an envelope: a malformed document
/// is `InvalidJson` with the line and column, a document of the wrong shape is
/// `ValidationFailed` naming the field's path, and a body over the limit is `BodyTooLarge`.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|ct| {
                let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(Code::UnsupportedMediaType, "expected a body with content-type application/json"));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(Code::BodyTooLarge, "the request body is larger than the limit")
            } else {
                ApiError::new(Code::InvalidJson, format!("could not read the body: {rejection}"))
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// An optional JSON body: an empty body is `None`, anything else is parsed as [`ApiJson`].
pub struct MaybeJson<T>(pub Option<T>);

impl<T, S> FromRequest<S> for MaybeJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let empty = req.headers().get(header::CONTENT_LENGTH).is_some_and(|v| v == "0")
            || (req.headers().get(header::CONTENT_LENGTH).is_none() && req.headers().get(header::TRANSFER_ENCODING).is_none());
        if empty {
            return Ok(MaybeJson(None));
        }
        ApiJson::<T>::from_request(req, state).await.map(|ApiJson(v)| MaybeJson(Some(v)))
    }
}

/// Parses a JSON document, reporting syntax errors and shape errors apart.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
        return Err(ApiError::new(Code::InvalidJson, format!("malformed JSON: {e}")));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde_json appends " at line L column C"; the field path already says where.
        let reason = match inner.rfind(" at line ") {
            Some(i) => inner[..i].to_string(),
            None => inner,
        };
        // A missing field is reported at its parent; name the field itself.
        let missing = reason.strip_prefix("missing field `").and_then(|r| r.split('`').next());
        let field = match (path.as_str(), missing) {
            (".", Some(name)) => name.to_string(),
            (".", None) => "body".to_string(),
            (parent, Some(name)) => format!("{parent}.{name}"),
            (parent, None) => parent.to_string(),
        };
        ApiError::from(Error::validation(field, reason))
    })
}

/// A cookie's value from the request headers.
pub fn cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The token of an `Authorization: Bearer <token>` value (either capitalization of the
/// scheme), trimmed; `None` for any other value.
pub fn bearer(value: &axum::http::HeaderValue) -> Option<&str> {
    let v = value.to_str().ok()?;
    v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).map(str::trim)
}

/// Fallback for unknown routes.
pub async fn route_not_found() -> ApiError {
    ApiError::new(Code::RouteNotFound, "no such route")
}

/// Fallback for a known path with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(Code::MethodNotAllowed, "method not allowed on this route")
}

/// Turns a panic inside a handler into a 500 envelope; the panic itself is logged.
pub fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    tracing::error!(panic = %detail, "handler panicked");
    ApiError::new(Code::Internal, "internal error").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Inner {
        port: u16,
    }
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        items: Vec<Inner>,
    }

    #[test]
    fn syntax_and_shape_errors_differ() {
        let e = parse_json::<Outer>(b"{\"name\": ").unwrap_err();
        assert_eq!(e.code, Code::InvalidJson);
        let e = parse_json::<Outer>(br#"{"name":"a","items":[{"port":1},{"port":"x"}]}"#).unwrap_err();
        assert_eq!(e.code, Code::ValidationFailed);
        assert_eq!(e.data["field"], "items[1].port");
        let e = parse_json::<Outer>(br#"{"items":[]}"#).unwrap_err();
        assert_eq!(e.data["field"], "name");
        let e = parse_json::<Outer>(br#"{"name":"a","items":[{}]}"#).unwrap_err();
        assert_eq!(e.data["field"], "items[0].port");
        let e = parse_json::<Outer>(br#""just a string""#).unwrap_err();
        assert_eq!(e.data["field"], "body");
    }
}
