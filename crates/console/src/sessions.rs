//! Console sign-in: email and password (argon2id), bearer tokens for the API (access
//! 30 min, refresh 7 days, rotated on every refresh) and cookie sessions for browsers.
//! Failed sign-ins in a row are slowed and then lock the account for a while.

use std::time::Duration;

use portico_auth::{password, token};
use portico_core::{
    domain::{Email, Password},
    id::new_id,
    time::{now_ms, rfc3339},
    Error,
};
use portico_store::{accounts, accounts::AccountRecord, sessions, sessions::SessionRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{platform::blocking, Platform, Principal, Role};

const ACCESS_PREFIX: &str = "pt_at_";
const REFRESH_PREFIX: &str = "pt_rt_";
const BROWSER_PREFIX: &str = "pt_ss_";

/// Email and password.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SignInIn {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshIn {
    pub refresh_token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PasswordChangeIn {
    pub current_password: String,
    pub new_password: String,
}

/// A console account on the wire.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountOut {
    pub id: String,
    pub email: String,
    /// `operator` or `member`.
    pub kind: String,
    pub role: Role,
    pub merchant_id: Option<String>,
    pub display_name: Option<String>,
    /// `active` or `disabled`.
    pub status: String,
    pub created_at: String,
}

impl From<&AccountRecord> for AccountOut {
    fn from(a: &AccountRecord) -> Self {
        AccountOut {
            id: a.id.clone(),
            email: a.email.clone(),
            kind: a.kind.clone(),
            role: Role::parse(&a.role).unwrap_or(Role::Developer),
            merchant_id: a.merchant_id.clone(),
            display_name: a.display_name.clone(),
            status: a.status.clone(),
            created_at: rfc3339(a.created_at),
        }
    }
}

/// Tokens for the API.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokensOut {
    pub access_token: String,
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Seconds until the refresh token expires.
    pub refresh_expires_in: u64,
    pub account: AccountOut,
}

/// A browser session: the cookie value and its lifetime.
#[derive(Debug)]
pub struct BrowserSession {
    pub token: String,
    pub max_age: Duration,
    pub account: AccountOut,
}

/// Which kind of session a sign-in opens.
enum Opens {
    Tokens,
    Browser,
}

enum Opened {
    Tokens(TokensOut),
    Browser(BrowserSession),
}

impl Platform {
    /// Signs in for the API: returns an access and a refresh token.
    pub async fn sign_in(&self, input: SignInIn) -> Result<TokensOut, Error> {
        match self.sign_in_as(input, Opens::Tokens).await? {
            Opened::Tokens(t) => Ok(t),
            Opened::Browser(_) => unreachable!("asked for tokens"),
        }
    }

    /// Signs in a browser: returns the value of the session cookie.
    pub async fn sign_in_browser(&self, input: SignInIn) -> Result<BrowserSession, Error> {
        match self.sign_in_as(input, Opens::Browser).await? {
            Opened::Browser(b) => Ok(b),
            Opened::Tokens(_) => unreachable!("asked for a browser session"),
        }
    }

    async fn sign_in_as(&self, input: SignInIn, opens: Opens) -> Result<Opened, Error> {
        let Ok(email) = Email::parse(&input.email) else {
            return Err(Error::InvalidCredentials);
        };
        if input.password.is_empty() || input.password.len() > 1024 {
            return Err(Error::InvalidCredentials);
        }
        let account = {
            let mut conn = self.store().read().await?;
            accounts::find_by_email(&mut conn, email.as_str()).await?
        };
        let found = account.as_ref().map(|a| (a.locked_until, a.password_hash.clone()));
        self.check_password(found, input.password, |now, lock_after, lock_ms| {
            let (store, id) = (self.store().clone(), account.as_ref().map(|a| a.id.clone()).unwrap_or_default());
            async move {
                let mut tx = store.begin().await?;
                let failures = accounts::record_failed_login(&mut tx, &id, now, lock_after, lock_ms).await?;
                portico_store::commit(tx).await?;
                Ok(failures)
            }
        })
        .await?;
        let account = account.ok_or(Error::InvalidCredentials)?;
        let now = now_ms();
        if account.status != "active" {
            return Err(Error::Forbidden("this account is disabled".into()));
        }
        let mut tx = self.store().begin().await?;
        accounts::reset_failed_logins(&mut tx, &account.id).await?;
        let family = new_id("sfam");
        let opened = match opens {
            Opens::Tokens => Opened::Tokens(self.issue_tokens(&mut tx, &account, &family, now).await?),
            Opens::Browser => {
                let ttl = self.settings().access_token_ttl;
                let token = self.issue(&mut tx, &account.id, &family, "browser", BROWSER_PREFIX, ttl, now).await?;
                Opened::Browser(BrowserSession { token, max_age: ttl, account: AccountOut::from(&account) })
            }
        };
        portico_store::commit(tx).await?;
        Ok(opened)
    }

    /// The password check shared by every sign-in (console accounts and end users):
    /// `found` is the account's lock time and password hash, or `None` for an unknown
    /// email, which costs the same time as a wrong password. A failure is counted by
    /// `record_failure(now, lock_after, lock_ms)`, which returns the failures in a row;
    /// each one in a row adds a delay, and at the limit the account locks.
    pub async fn check_password<F, Fut>(&self, found: Option<(i64, String)>, presented: String, record_failure: F) -> Result<(), Error>
    where
        F: FnOnce(i64, i64, i64) -> Fut,
        Fut: std::future::Future<Output = Result<i64, Error>>,
    {
        let Some((locked_until, phc)) = found else {
            blocking(move || password::verify_dummy(&presented)).await?;
            return Err(Error::InvalidCredentials);
        };
        let now = now_ms();
        if locked_until > now {
            return Err(Error::AccountLocked { retry_after_secs: ((locked_until - now) as u64).div_ceil(1000) });
        }
        if blocking(move || password::verify(&presented, &phc)).await? {
            return Ok(());
        }
        let s = self.settings();
        let failures = record_failure(now, s.lock_after_failures as i64, s.lock_duration.as_millis() as i64).await?;
        tokio::time::sleep(s.failed_login_delay * failures.clamp(0, 5) as u32).await;
        if failures >= s.lock_after_failures as i64 {
            tracing::warn!("account locked after repeated failed sign-ins");
            return Err(Error::AccountLocked { retry_after_secs: s.lock_duration.as_secs() });
        }
        Err(Error::InvalidCredentials)
    }

    async fn issue(
        &self,
        conn: &mut portico_store::Conn,
        account_id: &str,
        family: &str,
        kind: &str,
        prefix: &str,
        ttl: Duration,
        now: i64,
    ) -> Result<String, Error> {
        let value = token::generate(prefix);
        sessions::insert(
            conn,
            &SessionRecord {
                id: new_id("ses"),
                account_id: account_id.to_string(),
                family_id: family.to_string(),
                kind: kind.to_string(),
                token_digest: token::digest(&value),
                expires_at: now + ttl.as_millis() as i64,
                revoked_at: None,
                created_at: now,
            },
        )
        .await?;
        Ok(value)
    }

    async fn issue_tokens(&self, conn: &mut portico_store::Conn, account: &AccountRecord, family: &str, now: i64) -> Result<TokensOut, Error> {
        let s = self.settings().clone();
        let access_token = self.issue(conn, &account.id, family, "access", ACCESS_PREFIX, s.access_token_ttl, now).await?;
        let refresh_token = self.issue(conn, &account.id, family, "refresh", REFRESH_PREFIX, s.refresh_token_ttl, now).await?;
        Ok(TokensOut {
            access_token,
            refresh_token,
            token_type: "Bearer",
            expires_in: s.access_token_ttl.as_secs(),
            refresh_expires_in: s.refresh_token_ttl.as_secs(),
            account: AccountOut::from(account),
        })
    }

    /// Resolves an access token (`kind = "access"`) or a browser session cookie
    /// (`kind = "browser"`) to the principal behind it.
    pub async fn authenticate(&self, presented: &str, kind: &str) -> Result<Principal, Error> {
        let expected_prefix = if kind == "browser" { BROWSER_PREFIX } else { ACCESS_PREFIX };
        if !presented.starts_with(expected_prefix) || presented.len() > 200 {
            return Err(Error::Unauthenticated);
        }
        let found = {
            let mut conn = self.store().read().await?;
            sessions::find(&mut conn, &token::digest(presented)).await?
        };
        let Some((session, account)) = found else {
            return Err(Error::Unauthenticated);
        };
        if session.kind != kind || session.revoked_at.is_some() || account.status != "active" {
            return Err(Error::Unauthenticated);
        }
        if session.expires_at <= now_ms() {
            return Err(Error::TokenExpired);
        }
        principal_of(&account)
    }

    /// Exchanges a refresh token for a new pair. The old refresh token stops working at
    /// once; presenting it again is treated as theft and ends the whole sign-in.
    pub async fn refresh(&self, input: RefreshIn) -> Result<TokensOut, Error> {
        if !input.refresh_token.starts_with(REFRESH_PREFIX) || input.refresh_token.len() > 200 {
            return Err(Error::Unauthenticated);
        }
        let now = now_ms();
        let mut tx = self.store().begin().await?;
        let Some((session, account)) = sessions::find(&mut tx, &token::digest(&input.refresh_token)).await? else {
            return Err(Error::Unauthenticated);
        };
        if session.kind != "refresh" {
            return Err(Error::Unauthenticated);
        }
        if session.revoked_at.is_some() {
            sessions::revoke_family(&mut tx, &session.family_id, now).await?;
            portico_store::commit(tx).await?;
            tracing::warn!(account = %account.id, family = %session.family_id, "refresh token reused; sign-in revoked");
            return Err(Error::Unauthenticated);
        }
        if session.expires_at <= now {
            return Err(Error::TokenExpired);
        }
        if account.status != "active" || !sessions::revoke_one(&mut tx, &session.id, now).await? {
            return Err(Error::Unauthenticated);
        }
        let tokens = self.issue_tokens(&mut tx, &account, &session.family_id, now).await?;
        portico_store::commit(tx).await?;
        Ok(tokens)
    }

    /// Ends the sign-in that `presented` (an access, refresh or browser token) belongs to.
    pub async fn sign_out(&self, presented: &str) -> Result<(), Error> {
        let mut tx = self.store().begin().await?;
        if let Some((session, _)) = sessions::find(&mut tx, &token::digest(presented)).await? {
            sessions::revoke_family(&mut tx, &session.family_id, now_ms()).await?;
        }
        portico_store::commit(tx).await?;
        Ok(())
    }

    /// The signed-in account.
    pub async fn me(&self, actor: &Principal) -> Result<AccountOut, Error> {
        let Principal::Account { id, .. } = actor else {
            return Err(Error::Unauthenticated);
        };
        let mut conn = self.store().read().await?;
        let account = accounts::get(&mut conn, id).await?.ok_or(Error::NotFound("account"))?;
        Ok(AccountOut::from(&account))
    }

    /// Changes the caller's password and ends every session it had, this one included.
    pub async fn change_password(&self, actor: &Principal, input: PasswordChangeIn) -> Result<(), Error> {
        let Principal::Account { id, .. } = actor else {
            return Err(Error::Unauthenticated);
        };
        let new_password = Password::parse(&input.new_password).map_err(|e| e.at("new_password"))?;
        let account = {
            let mut conn = self.store().read().await?;
            accounts::get(&mut conn, id).await?.ok_or(Error::NotFound("account"))?
        };
        let (current, phc) = (input.current_password, account.password_hash.clone());
        if !blocking(move || password::verify(&current, &phc)).await? {
            return Err(Error::validation("current_password", "is not the current password"));
        }
        let new_hash = blocking(move || password::hash(new_password.expose())).await?;
        let now = now_ms();
        let mut tx = self.store().begin().await?;
        accounts::set_password(&mut tx, id, &new_hash, now).await?;
        sessions::revoke_account(&mut tx, id, now).await?;
        crate::audit::record(
            &mut tx,
            actor,
            crate::audit::Event {
                merchant_id: account.merchant_id.as_deref(),
                action: "account.password_changed",
                target_type: "account",
                target_id: id,
                reason: None,
                detail: serde_json::json!({}),
            },
        )
        .await?;
        portico_store::commit(tx).await?;
        Ok(())
    }
}

pub(crate) fn principal_of(account: &AccountRecord) -> Result<Principal, Error> {
    let role = Role::parse(&account.role).ok_or_else(|| Error::Internal(format!("unknown role {}", account.role)))?;
    Ok(Principal::Account { id: account.id.clone(), email: account.email.clone(), role, merchant_id: account.merchant_id.clone() })
}
