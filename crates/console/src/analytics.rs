//! What the gateway recorded: calls (for traffic views and tracing an error by its trace
//! id) and business keys (data closure: which orders a merchant's calls produced).

use portico_core::{
    page::{Page, PageRequest},
    time::rfc3339,
    Error,
};
use portico_store::calls;
use serde::Serialize;
use utoipa::ToSchema;

use crate::{Platform, Principal, Role};

#[derive(Debug, Serialize, ToSchema)]
pub struct CallOut {
    pub id: String,
    /// When the call arrived.
    pub at: String,
    pub trace_id: String,
    pub merchant_id: Option<String>,
    pub app_id: Option<String>,
    /// `name@version`.
    pub api: Option<String>,
    pub status: i64,
    /// The business code of the response.
    pub code: i64,
    pub latency_us: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub client_ip: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BusinessKeyOut {
    pub id: String,
    pub api: String,
    pub business_key: String,
    pub app_id: String,
    pub trace_id: String,
    pub at: String,
}

impl Platform {
    /// Calls, newest first: one merchant's (its members, operators) or everyone's
    /// (operators), optionally only those of one trace id.
    pub async fn calls(&self, actor: &Principal, merchant_id: Option<&str>, trace_id: Option<&str>, page: &PageRequest) -> Result<Page<CallOut>, Error> {
        match merchant_id {
            Some(m) => actor.can_see(m)?,
            None => actor.require(&[Role::BusinessManager, Role::ProductManager], "read every merchant's calls")?,
        }
        let mut conn = self.store().read_records().await?;
        let rows = calls::calls(&mut conn, merchant_id, trace_id, page).await?;
        Ok(Page::from_rows(rows, page.limit, |c| c.id.clone()).map(|c| CallOut {
            id: c.id,
            at: rfc3339(c.at),
            trace_id: c.trace_id,
            merchant_id: c.merchant_id,
            app_id: c.app_id,
            api: c.api,
            status: c.status,
            code: c.code,
            latency_us: c.latency_us,
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
            client_ip: c.client_ip,
        }))
    }

    /// A merchant's business keys, newest first, optionally of one API (`name@version`).
    pub async fn business_keys(&self, actor: &Principal, merchant_id: &str, api: Option<&str>, page: &PageRequest) -> Result<Page<BusinessKeyOut>, Error> {
        actor.can_see(merchant_id)?;
        let mut conn = self.store().read_records().await?;
        let rows = calls::business_keys(&mut conn, merchant_id, api, page).await?;
        Ok(Page::from_rows(rows, page.limit, |k| k.id.clone()).map(|k| BusinessKeyOut {
            id: k.id,
            api: k.api,
            business_key: k.business_key,
            app_id: k.app_id,
            trace_id: k.trace_id,
            at: rfc3339(k.at),
        }))
    }
}
