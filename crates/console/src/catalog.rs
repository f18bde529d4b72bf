//! The API catalog (product managers): API groups, the unit apps are granted, and APIs
//! with their upstream, limits and lifecycle (`draft → published → deprecated →
//! retired`); and merchants' requests for API groups, which operators approve or reject.

use portico_core::{domain::Text, id::new_id, time::{now_ms, rfc3339}, Error};
use portico_store::{
    apps,
    catalog::{self, ApiRecord, GrantRequestRecord, GroupRecord},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::{apps::parse_scope, audit, Platform, Principal, Role};

#[derive(Debug, Deserialize, ToSchema)]
pub struct GroupIn {
    pub title: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GroupOut {
    pub name: String,
    pub title: String,
    pub description: String,
}

/// A new API.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ApiIn {
    /// Dotted lower-case name, e.g. `order.create`.
    pub name: String,
    /// e.g. `1.0`, `2`.
    pub version: String,
    /// The API group it belongs to (the unit of grants).
    pub group: String,
    /// The registered service that serves it.
    pub service: String,
    /// The path on the service's instances, starting with `/`.
    pub upstream_path: String,
    /// GET, POST, PUT, PATCH or DELETE.
    pub http_method: String,
    #[serde(default)]
    pub description: String,
    /// Upstream timeout (default 30000).
    pub timeout_ms: Option<u64>,
    /// Calls per second per app (none: unlimited).
    pub rate_limit_per_second: Option<u64>,
    /// Calls per app per day (the platform's day, UTC+8; none: unlimited).
    pub daily_quota: Option<u64>,
    /// Whether a call needs an end user's token.
    #[serde(default)]
    pub needs_user: bool,
    /// RFC 6901 JSON pointer into the response naming the business key (data closure),
    /// e.g. `/data/order_id`.
    pub business_key_pointer: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub request_schema: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub response_schema: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiOut {
    pub id: String,
    pub name: String,
    pub version: String,
    pub group: String,
    pub service: String,
    pub upstream_path: String,
    pub http_method: String,
    pub description: String,
    pub timeout_ms: i64,
    pub rate_limit_per_second: Option<i64>,
    pub daily_quota: Option<i64>,
    pub needs_user: bool,
    pub business_key_pointer: Option<String>,
    /// `draft`, `published`, `deprecated` or `retired`.
    pub state: String,
    /// Where merchants call it: `/router/rest?method=NAME&v=VERSION`, or this REST path.
    pub path: String,
    pub updated_at: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct GrantRequestIn {
    pub group: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GrantRequestOut {
    pub id: String,
    pub app_id: String,
    pub merchant_id: String,
    pub group: String,
    /// `pending`, `approved` or `rejected`.
    pub state: String,
    pub reason: Option<String>,
    pub created_at: String,
    pub decided_at: Option<String>,
}

impl From<&ApiRecord> for ApiOut {
    fn from(a: &ApiRecord) -> Self {
        ApiOut {
            id: a.id.clone(),
            name: a.name.clone(),
            version: a.version.clone(),
            group: a.group_name.clone(),
            service: a.service.clone(),
            upstream_path: a.upstream_path.clone(),
            http_method: a.http_method.clone(),
            description: a.description.clone(),
            timeout_ms: a.timeout_ms,
            rate_limit_per_second: a.rate_limit_per_second,
            daily_quota: a.daily_quota,
            needs_user: a.needs_user != 0,
            business_key_pointer: a.business_key_pointer.clone(),
            state: a.state.clone(),
            path: format!("/{}/v{}", a.name.replace('.', "/"), a.version),
            updated_at: rfc3339(a.updated_at),
        }
    }
}

impl From<&GrantRequestRecord> for GrantRequestOut {
    fn from(r: &GrantRequestRecord) -> Self {
        GrantRequestOut {
            id: r.id.clone(),
            app_id: r.app_id.clone(),
            merchant_id: r.merchant_id.clone(),
            group: r.group_name.clone(),
            state: r.state.clone(),
            reason: r.reason.clone(),
            created_at: rfc3339(r.created_at),
            decided_at: r.decided_at.map(rfc3339),
        }
    }
}

impl Platform {
    pub async fn put_group(&self, actor: &Principal, name: &str, input: GroupIn) -> Result<GroupOut, Error> {
        actor.require(&[Role::ProductManager], "manage the API catalog")?;
        let name = parse_scope(name).map_err(|e| e.at("name"))?;
        let title = Text::parse("title", &input.title, 100)?.into_string();
        let description = if input.description.trim().is_empty() { String::new() } else { Text::parse("description", &input.description, 2000)?.into_string() };
        let now = now_ms();
        let mut tx = self.store().begin().await?;
        catalog::upsert_group(&mut tx, &GroupRecord { name: name.clone(), title: title.clone(), description: description.clone(), created_at: now, updated_at: now }).await?;
        audit::record(&mut tx, actor, audit::Event { merchant_id: None, action: "catalog.group_saved", target_type: "api_group", target_id: &name, reason: None, detail: json!({ "title": title }) }).await?;
        portico_store::commit(tx).await?;
        self.announce(crate::Change::Catalog);
        Ok(GroupOut { name, title, description })
    }

    pub async fn groups(&self) -> Result<Vec<GroupOut>, Error> {
        let mut conn = self.store().read().await?;
        Ok(catalog::groups(&mut conn).await?.into_iter().map(|g| GroupOut { name: g.name, title: g.title, description: g.description }).collect())
    }

    pub async fn create_api(&self, actor: &Principal, input: ApiIn) -> Result<ApiOut, Error> {
        actor.require(&[Role::ProductManager], "manage the API catalog")?;
        let name = parse_api_name(&input.name)?;
        let version = parse_version(&input.version)?;
        let service = parse_service_name(&input.service).map_err(|e| e.at("service"))?;
        if !input.upstream_path.starts_with('/') || input.upstream_path.len() > 512 || input.upstream_path.contains(['?', '#', ' ']) {
            return Err(Error::validation("upstream_path", "must be a path starting with / (no query, fragment or spaces)"));
        }
        let method = input.http_method.to_ascii_uppercase();
        if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
            return Err(Error::validation("http_method", "must be GET, POST, PUT, PATCH or DELETE"));
        }
        let timeout_ms = input.timeout_ms.unwrap_or(30_000);
        if !(1..=300_000).contains(&timeout_ms) {
            return Err(Error::validation("timeout_ms", "must be 1 to 300000"));
        }
        if input.rate_limit_per_second == Some(0) {
            return Err(Error::validation("rate_limit_per_second", "must be at least 1 (leave it out for no limit)"));
        }
        if input.daily_quota == Some(0) {
            return Err(Error::validation("daily_quota", "must be at least 1 (leave it out for no quota)"));
        }
        for (field, schema) in [("request_schema", &input.request_schema), ("response_schema", &input.response_schema)] {
            if let Some(schema) = schema {
                jsonschema::validator_for(schema).map_err(|e| Error::validation(field, format!("is not a valid JSON Schema: {e}")))?;
            }
        }
        if let Some(p) = &input.business_key_pointer {
            portico_core::domain::JsonPointer::parse(p).map_err(|e| e.at("business_key_pointer"))?;
        }
        let now = now_ms();
        let record = ApiRecord {
            id: new_id("api"),
            name,
            version,
            group_name: input.group.clone(),
            service,
            upstream_path: input.upstream_path,
            http_method: method,
            description: input.description,
            request_schema: input.request_schema.map(|v| v.to_string()),
            response_schema: input.response_schema.map(|v| v.to_string()),
            timeout_ms: timeout_ms as i64,
            rate_limit_per_second: input.rate_limit_per_second.map(|r| r as i64),
            needs_user: input.needs_user as i64,
            business_key_pointer: input.business_key_pointer,
            daily_quota: input.daily_quota.map(|q| q.min(i64::MAX as u64) as i64),
            state: "draft".into(),
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.store().begin().await?;
        if !catalog::group_exists(&mut tx, &record.group_name).await? {
            return Err(Error::validation("group", "no such API group"));
        }
        catalog::insert_api(&mut tx, &record).await?;
        audit::record(&mut tx, actor, audit::Event { merchant_id: None, action: "catalog.api_created", target_type: "api", target_id: &record.id, reason: None, detail: json!({ "name": record.name, "version": record.version }) }).await?;
        portico_store::commit(tx).await?;
        self.announce(crate::Change::Catalog);
        Ok(ApiOut::from(&record))
    }

    /// Operators see every API; merchants see what is published or deprecated.
    pub async fn apis(&self, actor: &Principal) -> Result<Vec<ApiOut>, Error> {
        let mut conn = self.store().read().await?;
        let all = catalog::apis(&mut conn).await?;
        Ok(all.iter().filter(|a| actor.is_operator() || a.state == "published" || a.state == "deprecated").map(ApiOut::from).collect())
    }

    /// Moves an API along its lifecycle: `publish`, `deprecate` or `retire`.
    pub async fn set_api_lifecycle(&self, actor: &Principal, id: &str, to: &str) -> Result<ApiOut, Error> {
        actor.require(&[Role::ProductManager], "manage the API catalog")?;
        let mut tx = self.store().begin().await?;
        let mut api = catalog::api(&mut tx, id).await?.ok_or(Error::NotFound("api"))?;
        let allowed = matches!((api.state.as_str(), to), ("draft", "published") | ("published", "deprecated") | ("deprecated", "published") | ("published" | "deprecated", "retired"));
        if !allowed {
            return Err(Error::InvalidState(format!("an API in {} cannot become {to}", api.state)));
        }
        let now = now_ms();
        catalog::set_api_state(&mut tx, id, to, now).await?;
        audit::record(&mut tx, actor, audit::Event { merchant_id: None, action: "catalog.api_state_changed", target_type: "api", target_id: id, reason: None, detail: json!({ "from": api.state, "to": to }) }).await?;
        portico_store::commit(tx).await?;
        api.state = to.to_string();
        api.updated_at = now;
        self.announce(crate::Change::Catalog);
        Ok(ApiOut::from(&api))
    }

    /// A merchant asks for an API group for one of its apps.
    pub async fn request_group(&self, actor: &Principal, merchant_id: &str, app_id: &str, input: GrantRequestIn) -> Result<GrantRequestOut, Error> {
        actor.can_manage_apps(merchant_id)?;
        let mut tx = self.store().begin().await?;
        apps::get(&mut tx, merchant_id, app_id).await?.ok_or(Error::NotFound("app"))?;
        if !catalog::group_exists(&mut tx, &input.group).await? {
            return Err(Error::validation("group", "no such API group"));
        }
        let record = GrantRequestRecord {
            id: new_id("grq"),
            app_id: app_id.to_string(),
            merchant_id: merchant_id.to_string(),
            group_name: input.group,
            state: "pending".into(),
            reason: None,
            decided_by: None,
            created_at: now_ms(),
            decided_at: None,
        };
        catalog::insert_request(&mut tx, &record).await?;
        audit::record(&mut tx, actor, audit::Event { merchant_id: Some(merchant_id), action: "app.group_requested", target_type: "app", target_id: app_id, reason: None, detail: json!({ "group": record.group_name }) }).await?;
        portico_store::commit(tx).await?;
        Ok(GrantRequestOut::from(&record))
    }

    /// Grant requests: all of them (operators, optionally by state) or one merchant's.
    pub async fn grant_requests(&self, actor: &Principal, merchant_id: Option<&str>, state: Option<&str>) -> Result<Vec<GrantRequestOut>, Error> {
        match merchant_id {
            Some(m) => actor.can_see(m)?,
            None => actor.require(&[Role::ProductManager, Role::BusinessManager], "review grant requests")?,
        }
        let mut conn = self.store().read().await?;
        Ok(catalog::requests(&mut conn, merchant_id, state).await?.iter().map(GrantRequestOut::from).collect())
    }

    /// Approves (granting the group to the app) or rejects a pending request.
    pub async fn decide_grant_request(&self, actor: &Principal, id: &str, approve: bool, reason: Option<String>) -> Result<GrantRequestOut, Error> {
        actor.require(&[Role::ProductManager], "decide grant requests")?;
        let reason = reason.map(|r| Text::parse("reason", &r, 1000).map(Text::into_string)).transpose()?;
        let (kind, actor_id, _) = actor.audit_actor();
        let by = actor_id.unwrap_or_else(|| kind.to_string());
        let now = now_ms();
        let mut tx = self.store().begin().await?;
        let mut request = catalog::request(&mut tx, id).await?.ok_or(Error::NotFound("grant request"))?;
        let state = if approve { "approved" } else { "rejected" };
        if !catalog::decide_request(&mut tx, id, state, reason.as_deref(), &by, now).await? {
            return Err(Error::InvalidState(format!("the request is already {}", request.state)));
        }
        if approve {
            apps::grant(&mut tx, &request.merchant_id, &request.app_id, &request.group_name, Some(&by), now).await?;
            apps::touch(&mut tx, &request.app_id, now).await?;
        }
        let action = if approve { "app.group_approved" } else { "app.group_rejected" };
        audit::record(&mut tx, actor, audit::Event { merchant_id: Some(&request.merchant_id), action, target_type: "app", target_id: &request.app_id, reason: reason.as_deref(), detail: json!({ "group": request.group_name }) }).await?;
        portico_store::commit(tx).await?;
        self.announce(crate::Change::App { merchant_id: request.merchant_id.clone(), app_id: request.app_id.clone() });
        request.state = state.into();
        request.reason = reason;
        request.decided_at = Some(now);
        Ok(GrantRequestOut::from(&request))
    }
}

/// `order.create`: dot-separated segments of `a-z 0-9 _`, 2 to 10 segments.
pub fn parse_api_name(s: &str) -> Result<String, Error> {
    let segments: Vec<&str> = s.split('.').collect();
    let ok = s.len() <= 128
        && (2..=10).contains(&segments.len())
        && segments.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(Error::validation("name", "must be dotted lower-case segments, e.g. order.create"))
    }
}

/// `1`, `1.0`, `2.1`: digits and dots.
pub fn parse_version(s: &str) -> Result<String, Error> {
    let ok = !s.is_empty() && s.len() <= 16 && s.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(s.to_string())
    } else {
        Err(Error::validation("version", "must be digits and dots, e.g. 1.0"))
    }
}

/// Service names: 1 to 64 of `a-z 0-9 -`.
pub fn parse_service_name(s: &str) -> Result<String, Error> {
    let ok = !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') && !s.starts_with('-');
    if ok {
        Ok(s.to_string())
    } else {
        Err(Error::validation("service", "must be 1 to 64 of a-z, 0-9 and -"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(parse_api_name("order.create").is_ok());
        assert!(parse_api_name("order").is_err());
        assert!(parse_api_name("Order.Create").is_err());
        assert!(parse_api_name("order..create").is_err());
        assert!(parse_version("1.0").is_ok());
        assert!(parse_version("v2").is_err());
        assert!(parse_service_name("order-service").is_ok());
        assert!(parse_service_name("Order").is_err());
    }
}
