//! Platform operator accounts (super admin, business manager, product manager) and the
//! first super admin, created on the first start.

use portico_auth::password;
use portico_core::{
    domain::{Email, Password, Text},
    page::{Page, PageRequest},
    time::now_ms,
    Error,
};
use portico_store::accounts;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::{audit, merchants::new_account, platform::blocking, sessions::AccountOut, Platform, Principal, Role};

/// A new operator account.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OperatorIn {
    pub email: String,
    pub password: String,
    /// `super_admin`, `business_manager` or `product_manager`.
    pub role: Role,
    pub display_name: Option<String>,
}

/// What the first start did about the super admin.
#[derive(Debug)]
pub enum Bootstrap {
    /// A super admin already existed.
    Existing,
    /// Created with the configured password.
    Created { email: String },
    /// Created with a generated password, to be shown once.
    CreatedWithGeneratedPassword { email: String, password: String },
}

impl Platform {
    /// Creates the first super admin unless one exists. The password comes from
    /// `configured_password` or is generated; the caller prints a generated one once.
    pub async fn bootstrap_super_admin(&self, email: &str, configured_password: Option<&str>) -> Result<Bootstrap, Error> {
        {
            let mut conn = self.store().read().await?;
            if accounts::count_by_role(&mut conn, Role::SuperAdmin.as_str()).await? > 0 {
                return Ok(Bootstrap::Existing);
            }
        }
        let email = Email::parse(email).map_err(|e| e.at("admin.email"))?;
        let (password, generated) = match configured_password {
            Some(p) => (Password::parse(p).map_err(|e| e.at("admin.password"))?, false),
            None => (Password::parse(&portico_core::id::random_token("", 12))?, true),
        };
        let plain = password.expose().to_string();
        let hash = blocking(move || password::hash(password.expose())).await?;
        let account = new_account(&email, hash, Role::SuperAdmin, None, Some("Super admin".into()), now_ms());
        let mut tx = self.store().begin().await?;
        accounts::insert(&mut tx, &account).await?;
        audit::record(
            &mut tx,
            &Principal::System,
            audit::Event {
                merchant_id: None,
                action: "operator.bootstrapped",
                target_type: "account",
                target_id: &account.id,
                reason: None,
                detail: json!({ "email": account.email }),
            },
        )
        .await?;
        portico_store::commit(tx).await?;
        let email = account.email;
        Ok(if generated { Bootstrap::CreatedWithGeneratedPassword { email, password: plain } } else { Bootstrap::Created { email } })
    }

    /// Creates an operator account (super admins only).
    pub async fn create_operator(&self, actor: &Principal, input: OperatorIn) -> Result<AccountOut, Error> {
        actor.require(&[], "create operator accounts")?;
        if !input.role.is_operator() {
            return Err(Error::validation("role", "must be super_admin, business_manager or product_manager"));
        }
        let email = Email::parse(&input.email)?;
        let password = Password::parse(&input.password)?;
        let display_name = input.display_name.as_deref().map(|d| Text::parse("display_name", d, 100)).transpose()?;
        let hash = blocking(move || password::hash(password.expose())).await?;
        let account = new_account(&email, hash, input.role, None, display_name.map(Text::into_string), now_ms());
        let mut tx = self.store().begin().await?;
        accounts::insert(&mut tx, &account).await?;
        audit::record(
            &mut tx,
            actor,
            audit::Event {
                merchant_id: None,
                action: "operator.created",
                target_type: "account",
                target_id: &account.id,
                reason: None,
                detail: json!({ "email": account.email, "role": account.role }),
            },
        )
        .await?;
        portico_store::commit(tx).await?;
        Ok(AccountOut::from(&account))
    }

    pub async fn operators(&self, actor: &Principal, page: &PageRequest) -> Result<Page<AccountOut>, Error> {
        actor.require(&[], "list operator accounts")?;
        let mut conn = self.store().read().await?;
        let rows = accounts::list_operators(&mut conn, page).await?;
        Ok(Page::from_rows(rows, page.limit, |a| a.id.clone()).map(|a| AccountOut::from(&a)))
    }
}
