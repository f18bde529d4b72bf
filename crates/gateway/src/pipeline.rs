//! One call through the gateway, in order: route → identify the app (bearer token or any
//! signature scheme) → app and merchant active → IP allowlist → grant → end-user token
//! when the API needs one → rate limits → forward → envelope → record.

use std::{borrow::Cow, net::SocketAddr, pin::Pin, sync::Arc, time::Instant};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{HeaderName, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use portico_auth::signed_request::AppKeys;
use portico_core::{http::ApiError, id::new_id, time::now_ms, Code};
use portico_signing::header as sig_header;
use portico_store::calls::BusinessKeyRecord;
use serde_json::Value;
use tokio::time::Sleep;

use portico_oauth::TokenInfo;
use portico_signing::identity::{Identity, PREFIX};

use crate::{
    envelope, http1,
    limiter::Decision,
    records::{CallFacts, Record},
    snapshot::{ApiEntry, AppEntry, Snapshot},
    upstream::{self, ForwardError},
    Gateway,
};

/// Parameters that belong to the platform, not to the business call.
const COMMON: &[&str] = &["app_key", "method", "v", "timestamp", "sign_method", "sign", "nonce", "session", "format", "biz_content"];

/// A client must send its body within this time (slow clients hold no worker for long).
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A gateway call as the pipeline reads it, borrowed from whichever loop parsed it.
pub struct Inbound<'a> {
    pub method: Method,
    /// The request target: path and query, as sent.
    pub target: &'a str,
    /// Header names (as sent, in any case) and values.
    pub headers: &'a [(&'a str, &'a [u8])],
    pub body: Bytes,
    pub peer: SocketAddr,
    pub trace_id: &'a str,
    /// When the call arrived (its head and body read), on the monotonic clock and in
    /// milliseconds since the epoch: read once for everything that asks the time of the
    /// call (trace id, token expiry, rate limits, identity timestamp, quotas, business
    /// keys, pooled connections' age, the upstream deadline, latency).
    pub arrived: Instant,
    pub at: i64,
}

impl Inbound<'_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }
}

/// The answer to a call, ready for the wire.
pub struct Reply {
    pub status: StatusCode,
    /// Header lines (`name: value\r\n` each) without framing headers, `Date` or the trace
    /// id, which the writer adds.
    pub lines: Vec<u8>,
    pub body: Bytes,
}

impl Reply {
    /// The same answer from a `Response` whose body is already whole (the envelope of a
    /// refusal).
    pub async fn from_response(response: Response) -> Reply {
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
        let mut lines = Vec::with_capacity(128);
        http1::write_headers(&mut lines, &parts.headers);
        Reply { status: parts.status, lines, body }
    }

    pub fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        let mut lines = self.lines;
        lines.extend_from_slice(b"\r\n");
        let mut slots = [httparse::EMPTY_HEADER; http1::MAX_HEADERS];
        // The lines were written by the gateway from headers parsed before: they parse.
        if let Ok(httparse::Status::Complete((_, parsed))) = httparse::parse_headers(&lines, &mut slots) {
            for h in parsed {
                if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_bytes(h.value)) {
                    response.headers_mut().append(k, v);
                }
            }
        }
        response
    }
}

/// The axum fallback of the public listener (paths the short path hands to the router
/// but no route takes).
pub async fn handle(State(gw): State<Gateway>, ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request) -> Response {
    serve_request(gw, peer, req).await
}

/// A call that came through hyper: its body is read (within a time limit), then it goes
/// through [`serve`].
pub async fn serve_request(gw: Gateway, peer: SocketAddr, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, gw.settings().max_body_bytes)).await;
    let body = match read {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return ApiError::new(Code::BodyTooLarge, "the request body is larger than the limit").into_response(),
        Err(_) => return ApiError::new(Code::InvalidJson, "the request body did not arrive in time").into_response(),
    };
    let headers: Vec<(&str, &[u8])> = parts.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())).collect();
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let trace_id = portico_core::trace::current().unwrap_or_else(portico_core::trace::new_trace_id);
    let call = Inbound { method: parts.method.clone(), target, headers: &headers, body, peer, trace_id: &trace_id, arrived: Instant::now(), at: now_ms() };
    // Set to the upstream deadline before it is polled.
    let timer = tokio::time::sleep(BODY_READ_TIMEOUT);
    tokio::pin!(timer);
    serve(&gw, call, timer).await.into_response()
}

/// One call, start to finish, record included. `timer` is the connection's, free for
/// the call's upstream deadline.
pub async fn serve(gw: &Gateway, req: Inbound<'_>, timer: Pin<&mut Sleep>) -> Reply {
    let trace_id = req.trace_id;
    let bytes_in = req.body.len();
    let snap = gw.snapshot();
    let mut call = Call { started: req.arrived, at: req.at, app: None, api: None, bytes_out: 0, code: 0 };
    let reply = match gw.process(&snap, &req, trace_id, &mut call, timer).await {
        Ok(r) => r,
        Err(e) => {
            call.code = e.code.as_u32() as i64;
            Reply::from_response(e.into_response()).await
        }
    };
    gw.recorder().record(Record::Call(CallFacts {
        at: call.at,
        trace_id: trace_id.to_string(),
        app: call.app,
        api: call.api,
        status: reply.status.as_u16(),
        code: call.code,
        latency_us: call.started.elapsed().as_micros() as i64,
        bytes_in,
        bytes_out: call.bytes_out,
        client_ip: req.peer.ip(),
    }));
    reply
}

/// What the record of a call needs to know, filled in as the pipeline learns it.
struct Call {
    /// When the call arrived ([`Inbound::arrived`], [`Inbound::at`]).
    started: Instant,
    at: i64,
    app: Option<Arc<AppEntry>>,
    api: Option<Arc<ApiEntry>>,
    bytes_out: usize,
    /// The business code of the answer.
    code: i64,
}

/// Who is calling, once identified.
struct Caller {
    app: Arc<AppEntry>,
    /// The access token presented: as the bearer token, or in a signed call's `session`.
    token: Option<Arc<TokenInfo>>,
    /// Whether the token's scopes bound the call (bearer tokens); signed calls carry the
    /// app's grants.
    scoped: bool,
}

impl Caller {
    fn user_id(&self) -> Option<&str> {
        self.token.as_ref().and_then(|t| t.user_id.as_deref())
    }

    fn token_scope(&self) -> Option<&str> {
        self.token.as_ref().filter(|_| self.scoped).map(|t| t.scope.as_str())
    }
}

fn refuse(code: Code, msg: impl Into<String>) -> ApiError {
    ApiError::new(code, msg)
}

impl Gateway {
    async fn process(&self, snap: &Snapshot, req: &Inbound<'_>, trace_id: &str, call: &mut Call, timer: Pin<&mut Sleep>) -> Result<Reply, ApiError> {
        // Route.
        let (path, query) = req.target.split_once('?').unwrap_or((req.target, ""));
        let method = &req.method;
        let body = &req.body;
        let single_entry = path == "/router/rest";
        // Parameters borrow the query and the form body unless they had to be decoded.
        // Room for a signed call's dozen up front (collecting grew the vector twice).
        let mut params: Vec<(Cow<str>, Cow<str>)> = Vec::with_capacity(if query.is_empty() { 0 } else { 16 });
        params.extend(form_pairs(query.as_bytes()));
        let is_form = req.header("content-type").is_some_and(|c| c.starts_with(b"application/x-www-form-urlencoded"));
        if single_entry {
            if !matches!(*method, Method::GET | Method::POST) {
                return Err(refuse(Code::MethodNotAllowed, "the single entry takes GET and POST only"));
            }
            if is_form {
                params.extend(form_pairs(body));
            }
        }
        let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_ref()).filter(|v| !v.is_empty());
        let api = if single_entry {
            let name = param("method").ok_or_else(|| ApiError::from(portico_core::Error::validation("method", "is required on /router/rest")))?;
            snap.api(name, param("v")).cloned().ok_or_else(|| refuse(Code::UnknownApi, format!("no published API {name}")))?
        } else if let Some(rest) = path.strip_prefix("/api/") {
            let (service, tail) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            snap.api_by_upstream(service, method, tail).cloned().ok_or_else(|| refuse(Code::UnknownApi, format!("no published API at {method} {path}")))?
        } else {
            catalog_path(snap, path).ok_or_else(|| refuse(Code::UnknownApi, format!("no published API at {path}")))?
        };
        call.api = Some(api.clone());
        if api.retired {
            return Err(refuse(Code::ApiRetired, format!("{} was retired", api.label)));
        }
        if !single_entry && *method != api.method {
            return Err(refuse(Code::MethodNotAllowed, format!("{} takes {}", api.label, api.method)));
        }

        // Identify the app.
        let now = call.at;
        let caller = self.identify(snap, req, &params, now).await?;
        call.app = Some(caller.app.clone());
        let app = &caller.app;
        if !app.usable {
            return Err(ApiError::from(portico_auth::signed_request::Rejection::AppDisabled));
        }
        if !app.allowlist.allows(req.peer.ip()) {
            return Err(refuse(Code::IpNotAllowed, format!("{} is not in the app's IP allowlist", req.peer.ip())));
        }
        let granted = app.grants.contains(&api.group) && caller.token_scope().is_none_or(|s| s.split(' ').any(|x| x == api.group));
        if !granted {
            return Err(refuse(Code::NotGranted, format!("the app is not granted the API group {}", api.group)));
        }
        if api.needs_user && caller.user_id().is_none() {
            return Err(refuse(Code::UserTokenRequired, format!("{} needs an end user's access token", api.label)));
        }

        // Rate limits: per app, and per app × API.
        let mut limit_headers = None;
        let app_rate = self.settings().app_rate_limit_per_second;
        if app_rate > 0 {
            limit_headers = Some(self.limit(&["app:", &app.app_id], app_rate, call.started).await?);
        }
        if let Some(rate) = api.rate_limit_per_second {
            limit_headers = Some(self.limit(&["api:", &api.id, ":", &app.app_id], rate, call.started).await?);
        }
        if let Some(quota) = api.daily_quota {
            if let Some(retry) = self.limiter().over_quota(&format!("{}:{}", api.id, app.app_id), quota).await {
                let mut e = refuse(Code::QuotaExceeded, format!("the daily quota of {quota} calls to {} is used up", api.label));
                e.data = serde_json::json!({ "quota": quota, "retry_after_secs": retry });
                e.retry_after_secs = Some(retry);
                return Err(e);
            }
        }

        // Validate the input against the API's request schema: the JSON body
        // (`biz_content` on the single entry), or else the business parameters as an
        // object of strings.
        if let Some(schema) = &api.request_schema {
            let json_input = if single_entry { param("biz_content").map(|b| b.as_bytes()) } else { (!body.is_empty()).then_some(&body[..]) };
            let doc: Value = match json_input {
                Some(raw) => serde_json::from_slice(raw).map_err(|e| refuse(Code::InvalidJson, format!("the input is not JSON: {e}")))?,
                None => Value::Object(params.iter().filter(|(k, _)| !COMMON.contains(&k.as_ref())).map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect()),
            };
            let first = schema.iter_errors(&doc).next().map(|error| (error.instance_path().to_string(), error.to_string()));
            if let Some((path, reason)) = first {
                let field = if path.is_empty() { "body".to_string() } else { path.trim_start_matches('/').replace('/', ".") };
                return Err(ApiError::from(portico_core::Error::validation(field, reason)));
            }
        }

        // Forward.
        let pool = snap.service(&api.service).cloned().ok_or_else(|| refuse(Code::UpstreamUnavailable, format!("no instance of {} is registered", api.service)))?;
        let (upstream_path, upstream_body, content_type) = if single_entry {
            let business: Vec<(&str, &str)> = params.iter().filter(|(k, _)| !COMMON.contains(&k.as_ref())).map(|(k, v)| (k.as_ref(), v.as_ref())).collect();
            let mut p = api.upstream_path.clone();
            if !business.is_empty() {
                p.push('?');
                p.push_str(&url::form_urlencoded::Serializer::new(String::new()).extend_pairs(business).finish());
            }
            match param("biz_content") {
                Some(b) => (p, Bytes::copy_from_slice(b.as_bytes()), Some(&b"application/json"[..])),
                None => (p, Bytes::new(), None),
            }
        } else {
            let p = if query.is_empty() { api.upstream_path.clone() } else { format!("{}?{query}", api.upstream_path) };
            (p, body.clone(), req.header("content-type"))
        };
        // The upstream request's header lines: the client's own (less hop-by-hop, framing,
        // credentials and anything posing as ours), then the signed identity.
        let mut lines = Vec::with_capacity(1024);
        for &(name, value) in req.headers {
            let ours = name.as_bytes().get(..PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(PREFIX.as_bytes()));
            let framing_or_credentials = ["x-trace-id", "authorization", "host", "content-type", "content-length"].iter().any(|h| h.eq_ignore_ascii_case(name));
            if !ours && !framing_or_credentials && !http1::is_hop_by_hop(name) {
                http1::write_header(&mut lines, name.as_bytes(), value);
            }
        }
        if let Some(ct) = content_type {
            http1::write_header(&mut lines, b"content-type", ct);
        }
        let identity = Identity {
            app_id: app.app_id.as_str(),
            merchant_id: &app.merchant_id,
            internal_user_id: app.internal_user_id.as_deref().unwrap_or_default(),
            user_id: caller.user_id().unwrap_or_default(),
            scope: caller.token_scope().unwrap_or(&api.group),
            environment: &app.environment,
            trace_id,
            timestamp: now / 1000,
        };
        identity.each_header(self.identity_key(), |k, v| {
            // Every field is the platform's own; a value no header can carry is left out.
            if http1::is_valid_value(v) {
                http1::write_header(&mut lines, k.as_bytes(), v);
            }
        });
        let up_method = if single_entry { api.method.clone() } else { method.clone() };
        // The answer, body included, must arrive within the API's timeout of the call's arrival.
        let deadline = tokio::time::Instant::from_std(call.started) + api.timeout;
        let answer = upstream::forward(self.client(), self.health(), &pool, &up_method, &upstream_path, &lines, &upstream_body, call.started, deadline, timer).await.map_err(|e| match e {
            ForwardError::NoInstance => refuse(Code::UpstreamUnavailable, format!("no healthy instance of {}", api.service)),
            ForwardError::Unreachable(why) => {
                tracing::warn!(service = %api.service, %why, "upstream unreachable");
                refuse(Code::UpstreamUnavailable, format!("{} is unreachable", api.service))
            }
            ForwardError::BadAnswer(why) => {
                tracing::warn!(service = %api.service, %why, "upstream answer unreadable");
                refuse(Code::UpstreamError, format!("{} sent an unreadable or oversized response", api.service))
            }
            ForwardError::Timeout => refuse(Code::UpstreamTimeout, format!("{} did not answer within {} ms", api.service, api.timeout.as_millis())),
        })?;

        // Envelope.
        let upstream::Answer { status: upstream_status, lines: mut reply_lines, body: upstream_body } = answer;
        // Only a scan of the top level: is it already the envelope? The body is parsed
        // into a full document only when it must be wrapped or a business key read.
        let (status, body, code, doc) = if let Some(code) = envelope::code(&upstream_body) {
            let doc = if api.business_key.is_some() { serde_json::from_slice(&upstream_body).ok() } else { None };
            (upstream_status, upstream_body, code, doc)
        } else {
            let json: Option<Value> = serde_json::from_slice(&upstream_body).ok();
            let data = json.unwrap_or_else(|| Value::String(String::from_utf8_lossy(&upstream_body).into_owned()));
            if upstream_status.is_success() {
                let doc = serde_json::json!({ "code": 0, "msg": "ok", "data": data, "trace_id": trace_id });
                (upstream_status, Bytes::from(doc.to_string()), 0, Some(doc))
            } else {
                let msg = format!("{} answered {}", api.service, upstream_status);
                let doc = serde_json::json!({ "code": Code::UpstreamError.as_u32(), "msg": msg, "data": data, "trace_id": trace_id });
                (StatusCode::BAD_GATEWAY, Bytes::from(doc.to_string()), Code::UpstreamError.as_u32() as u64, Some(doc))
            }
        };

        // Data closure: the business key the API names in its response.
        if let (Some(pointer), Some(doc)) = (&api.business_key, &doc) {
            let key = match pointer.resolve(doc) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            if let Some(business_key) = key.filter(|k| k.len() <= 256) {
                self.recorder().record(Record::BusinessKey(BusinessKeyRecord {
                    id: new_id("bkey"),
                    merchant_id: app.merchant_id.clone(),
                    app_id: app.app_id.clone(),
                    api: api.label.clone(),
                    business_key,
                    trace_id: trace_id.to_string(),
                    at: now,
                }));
            }
        }

        call.bytes_out = body.len();
        call.code = code as i64;
        // The instance's headers (already without framing, `Content-Type` and `Date`), then ours.
        http1::write_header(&mut reply_lines, b"content-type", b"application/json");
        if api.deprecated {
            http1::write_header(&mut reply_lines, b"deprecation", b"true");
        }
        if let Some((limit, remaining)) = limit_headers {
            http1::write_number_header(&mut reply_lines, b"ratelimit-limit", limit);
            http1::write_number_header(&mut reply_lines, b"ratelimit-remaining", remaining);
        }
        Ok(Reply { status, lines: reply_lines, body })
    }

    async fn identify(&self, snap: &Snapshot, req: &Inbound<'_>, params: &[(Cow<'_, str>, Cow<'_, str>)], now_ms: i64) -> Result<Caller, ApiError> {
        // A signature's app, as the verifier's lookup found it (found once, not again
        // by its key after verification).
        let mut found = None;
        let lookup = |key: &str| {
            let e = snap.app(key)?;
            found = Some(e);
            Some(AppKeys {
                secrets: if e.previous_until > now_ms { &e.secrets } else { &e.secrets[..e.secrets.len().min(1)] },
                rsa_public_key: e.rsa_public_key.as_ref(),
                sandbox: e.environment == "sandbox",
                usable: e.usable,
            })
        };
        let now = now_ms / 1000;
        if let Some(auth) = req.header("authorization") {
            let auth = std::str::from_utf8(auth).map_err(|_| refuse(Code::Unauthenticated, "the Authorization header is not text"))?;
            if let Some(token) = auth.strip_prefix("Bearer ") {
                let info = self.oauth().validate_at(token.trim(), now_ms).await?.ok_or_else(|| refuse(Code::Unauthenticated, "the access token is invalid, expired or revoked"))?;
                let app = snap.app(&info.client_id).cloned().ok_or_else(|| refuse(Code::Unauthenticated, "the token's app is unknown"))?;
                return Ok(Caller { app, token: Some(info), scoped: true });
            }
            if sig_header::is_header_style(auth) {
                self.verifier().verify_header(auth, req.method.as_str(), req.target, &req.body, lookup, now).await.map_err(ApiError::from)?;
                let app = found.cloned().ok_or_else(|| refuse(Code::Unauthenticated, "unknown app_key"))?;
                return Ok(Caller { app, token: None, scoped: false });
            }
            return Err(refuse(Code::Unauthenticated, "Authorization must be `Bearer <token>` or a PORTICO-* signature"));
        }
        if params.iter().any(|(k, _)| k == "sign") {
            self.verifier().verify_params(req.method == Method::GET, params, lookup, now).await.map_err(ApiError::from)?;
            let app = found.cloned().ok_or_else(|| refuse(Code::Unauthenticated, "unknown app_key"))?;
            // `session` carries an end user's access token, as on Taobao.
            let token = match params.iter().find(|(k, _)| k == "session").map(|(_, v)| v.as_ref()) {
                Some(s) => {
                    let info = self.oauth().validate_at(s, now_ms).await?.ok_or_else(|| refuse(Code::Unauthenticated, "the session token is invalid, expired or revoked"))?;
                    if info.app_id != app.app_id {
                        return Err(refuse(Code::Unauthenticated, "the session token belongs to another app"));
                    }
                    Some(info)
                }
                None => None,
            };
            return Ok(Caller { app, token, scoped: false });
        }
        Err(refuse(Code::Unauthenticated, "authenticate with a bearer token or a signature"))
    }

    async fn limit(&self, key: &[&str], rate: u64, at: Instant) -> Result<(u64, u64), ApiError> {
        match self.limiter().check(key, rate, at).await {
            Decision::Allow { remaining } => Ok((rate, remaining)),
            Decision::Deny { retry_after } => {
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                let mut e = refuse(Code::RateLimited, format!("rate limit of {rate}/s reached; retry in {secs} s"));
                e.data = serde_json::json!({ "limit": rate, "retry_after_secs": secs });
                e.retry_after_secs = Some(secs);
                e.extra_headers = vec![("ratelimit-limit", rate.to_string()), ("ratelimit-remaining", "0".into()), ("ratelimit-reset", secs.to_string())];
                Err(e)
            }
        }
    }
}

/// `application/x-www-form-urlencoded` pairs, exactly as `form_urlencoded::parse` reads
/// them, but a pair with nothing to decode borrows its bytes instead of going through
/// percent-decoding and a lossy UTF-8 pass (a signed call has a dozen such pairs).
fn form_pairs(input: &[u8]) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    // The separators found with `memchr` (vector code), not byte by byte.
    let mut rest = Some(input);
    let pieces = std::iter::from_fn(move || {
        let s = rest?;
        let (piece, next) = match memchr::memchr(b'&', s) {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        rest = next;
        Some(piece)
    });
    // The whole input checked once: text with nothing to decode (a signed call's query,
    // as a rule) lends every piece as it is, without a check per piece.
    let plain = if memchr::memchr2(b'%', b'+', input).is_none() { std::str::from_utf8(input).ok() } else { None };
    pieces.filter(|piece| !piece.is_empty()).map(move |piece| {
        let text = match plain {
            // The piece lies between separators, which are ASCII: a slice of the text.
            Some(all) => {
                let start = piece.as_ptr() as usize - input.as_ptr() as usize;
                Some(&all[start..start + piece.len()])
            }
            None => std::str::from_utf8(piece).ok().filter(|_| memchr::memchr2(b'%', b'+', piece).is_none()),
        };
        match text {
            Some(text) => {
                let (k, v) = memchr::memchr(b'=', piece).map_or((text, ""), |i| (&text[..i], &text[i + 1..]));
                (Cow::Borrowed(k), Cow::Borrowed(v))
            }
            // One piece holds one pair: the general parser decodes it.
            None => url::form_urlencoded::parse(piece).next().unwrap_or_default(),
        }
    })
}

/// `/order/create` (newest version) or `/order/create/v2` (that version). A last segment
/// that looks like a version but names no version of the rest is read as part of the
/// name (an API may be called `report.v2`).
fn catalog_path(snap: &Snapshot, path: &str) -> Option<Arc<ApiEntry>> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return None;
    }
    if let Some((base, last)) = trimmed.rsplit_once('/') {
        if last.len() > 1 && last.starts_with('v') && last[1..].bytes().all(|c| c.is_ascii_digit() || c == b'.') {
            if let Some(api) = snap.api(&base.replace('/', "."), Some(&last[1..])) {
                return Some(api.clone());
            }
        }
    }
    snap.api(&trimmed.replace('/', "."), None).cloned()
}


#[cfg(test)]
mod tests {
    use super::*;
    use portico_store::catalog::ApiRecord;
    use proptest::prelude::*;

    fn api(name: &str, version: &str, state: &str) -> ApiRecord {
        ApiRecord {
            id: format!("api_{name}_{version}"),
            name: name.into(),
            version: version.into(),
            group_name: "g".into(),
            service: "svc".into(),
            upstream_path: format!("/{}", name.replace('.', "/")),
            http_method: "GET".into(),
            description: String::new(),
            request_schema: None,
            response_schema: None,
            timeout_ms: 1000,
            rate_limit_per_second: None,
            needs_user: 0,
            business_key_pointer: None,
            daily_quota: None,
            state: state.into(),
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn catalog_paths_pick_versions() {
        let snap = Snapshot::empty().with_catalog(vec![
            api("order.create_order", "1.0", "published"),
            api("order.create_order", "2", "deprecated"),
            api("order.create_order", "3", "draft"),
            api("order.cancel", "1.0", "retired"),
        ]);
        assert_eq!(catalog_path(&snap, "/order/create_order").unwrap().version, "2", "the newest served version");
        assert_eq!(catalog_path(&snap, "/order/create_order/v1.0").unwrap().version, "1.0");
        assert!(catalog_path(&snap, "/order/create_order/v3").is_none(), "drafts are not served");
        assert!(catalog_path(&snap, "/order/cancel").is_none(), "retired versions are not the newest");
        assert!(catalog_path(&snap, "/order/cancel/v1.0").unwrap().retired, "but are found, to answer 410");
        assert!(catalog_path(&snap, "/").is_none());
        assert!(snap.api_by_upstream("svc", &Method::GET, "/order/create_order").is_some());
    }

    proptest! {
        /// The borrowing parser reads every input as the general one does.
        #[test]
        fn form_pairs_match_the_general_parser(input in proptest::collection::vec(prop_oneof![Just(b'&'), Just(b'='), Just(b'%'), Just(b'+'), Just(b'a'), Just(b'2'), Just(b'F'), any::<u8>()], 0..200)) {
            let ours: Vec<_> = form_pairs(&input).collect();
            let general: Vec<_> = url::form_urlencoded::parse(&input).collect();
            prop_assert_eq!(ours, general);
        }

        /// Text with nothing to decode, non-ASCII letters included: every pair lent whole.
        #[test]
        fn plain_pairs_match_the_general_parser(input in "[a-zé=&_.-]{0,200}") {
            let ours: Vec<_> = form_pairs(input.as_bytes()).collect();
            prop_assert!(ours.iter().all(|(k, v)| matches!((k, v), (Cow::Borrowed(_), Cow::Borrowed(_)))));
            let general: Vec<_> = url::form_urlencoded::parse(input.as_bytes()).collect();
            prop_assert_eq!(ours, general);
        }

        /// Long names and values too (the separators are found by vector code past 16 bytes).
        #[test]
        fn long_pairs_match_the_general_parser(pairs in proptest::collection::vec(("[a-z0-9%+=]{0,80}", "[a-zA-Z0-9_.%+=&-]{0,160}"), 0..6)) {
            let input = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
            let ours: Vec<_> = form_pairs(input.as_bytes()).collect();
            let general: Vec<_> = url::form_urlencoded::parse(input.as_bytes()).collect();
            prop_assert_eq!(ours, general);
        }

        #[test]
        fn routing_never_panics(path in "\\PC{0,80}") {
            let snap = Snapshot::empty().with_catalog(vec![api("a.b", "1", "published")]);
            let _ = catalog_path(&snap, &path);
        }

        #[test]
        fn every_published_api_is_found_by_its_paths(
            segments in proptest::collection::vec("[a-z][a-z0-9_]{0,6}", 2..4),
            major in 1u32..20, minor in 0u32..10,
        ) {
            let name = segments.join(".");
            let version = format!("{major}.{minor}");
            let snap = Snapshot::empty().with_catalog(vec![api(&name, &version, "published")]);
            let base = format!("/{}", segments.join("/"));
            prop_assert_eq!(&catalog_path(&snap, &base).unwrap().name, &name);
            prop_assert_eq!(&catalog_path(&snap, &format!("{base}/v{version}")).unwrap().version, &version);
            let unknown = format!("{base}/v{}", major + 100);
            prop_assert!(catalog_path(&snap, &unknown).is_none());
        }
    }
}
