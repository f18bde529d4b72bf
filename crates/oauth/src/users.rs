//! End-user accounts: sign-up and sign-in with email and password (argon2id), sessions
//! (a cookie on the consent pages, a bearer token for the account API), password change
//! that ends every older session and token at once, and the list of authorized apps.

use portico_auth::{password, token};
use portico_core::{
    domain::{Email, Password},
    id::new_id,
    time::{now_ms, rfc3339},
    Error,
};
use portico_store::oauth::{self, EndUserRecord};
use serde::{Deserialize, Serialize};

use crate::OAuth;

pub const SESSION_PREFIX: &str = "pus_";

#[derive(Debug, Deserialize)]
pub struct Credentials {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Deserialize)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct UserOut {
    pub id: String,
    pub email: String,
    pub created_at: String,
}

impl From<&EndUserRecord> for UserOut {
    fn from(u: &EndUserRecord) -> Self {
        UserOut { id: u.id.clone(), email: u.email.clone(), created_at: rfc3339(u.created_at) }
    }
}

/// An app the user authorized.
#[derive(Debug, Serialize)]
pub struct AuthorizationOut {
    pub app_id: String,
    pub app_name: String,
    pub merchant_name: String,
    pub scope: String,
    pub granted_at: String,
}

#[derive(Debug, Serialize)]
pub struct SessionOut {
    pub session_token: String,
    pub expires_in: u64,
    pub user: UserOut,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Internal(e.to_string()))
}

impl OAuth {
    pub async fn sign_up_user(&self, input: Credentials) -> Result<UserOut, Error> {
        let email = Email::parse(&input.email)?;
        let password = Password::parse(&input.password)?;
        let hash = blocking(move || password::hash(password.expose())).await?;
        let now = now_ms();
        let user = EndUserRecord {
            id: new_id("usr"),
            email: email.as_str().to_string(),
            password_hash: hash,
            status: "active".into(),
            failed_logins: 0,
            locked_until: 0,
            password_changed_at: now,
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.platform().store().begin().await?;
        oauth::insert_user(&mut tx, &user).await?;
        portico_store::commit(tx).await?;
        Ok(UserOut::from(&user))
    }

    /// Checks email and password (with the per-account lockout and the per-address
    /// limiter) and opens a session.
    pub async fn sign_in_user(&self, input: Credentials, ip: &str) -> Result<SessionOut, Error> {
        let ip_key = format!("ip:{ip}");
        if let Some(wait) = self.limiter().blocked(&[&ip_key]) {
            return Err(Error::AccountLocked { retry_after_secs: wait });
        }
        let Ok(email) = Email::parse(&input.email) else {
            return Err(Error::InvalidCredentials);
        };
        let user = {
            let mut conn = self.platform().store().read().await?;
            oauth::user_by_email(&mut conn, email.as_str()).await?
        };
        let found = user.as_ref().map(|u| (u.locked_until, u.password_hash.clone()));
        let checked = self
            .platform()
            .check_password(found, input.password, |now, lock_after, lock_ms| {
                let (store, id) = (self.platform().store().clone(), user.as_ref().map(|u| u.id.clone()).unwrap_or_default());
                async move {
                    let mut tx = store.begin().await?;
                    let n = oauth::record_failed_user_login(&mut tx, &id, now, lock_after, lock_ms).await?;
                    portico_store::commit(tx).await?;
                    Ok(n)
                }
            })
            .await;
        if let Err(e) = checked {
            if matches!(e, Error::InvalidCredentials) {
                self.limiter().fail(&[&ip_key]);
            }
            return Err(e);
        }
        let user = user.ok_or(Error::InvalidCredentials)?;
        let now = now_ms();
        if user.status != "active" {
            return Err(Error::Forbidden("this account is disabled".into()));
        }
        let session = token::generate(SESSION_PREFIX);
        let ttl = self.settings().user_session_ttl;
        let mut tx = self.platform().store().begin().await?;
        oauth::reset_failed_user_logins(&mut tx, &user.id).await?;
        oauth::insert_user_session(&mut tx, &new_id("uss"), &user.id, &token::digest(&session), now + ttl.as_millis() as i64, now).await?;
        portico_store::commit(tx).await?;
        Ok(SessionOut { session_token: session, expires_in: ttl.as_secs(), user: UserOut::from(&user) })
    }

    /// The user behind a session token, if it is live.
    pub async fn user_of_session(&self, session: &str) -> Result<Option<EndUserRecord>, Error> {
        if !session.starts_with(SESSION_PREFIX) || session.len() > 200 {
            return Ok(None);
        }
        let mut conn = self.platform().store().read().await?;
        Ok(oauth::user_session(&mut conn, &token::digest(session), now_ms()).await?.filter(|u| u.status == "active"))
    }

    pub async fn sign_out_user(&self, session: &str) -> Result<(), Error> {
        let mut tx = self.platform().store().begin().await?;
        oauth::revoke_user_session(&mut tx, &token::digest(session), now_ms()).await?;
        portico_store::commit(tx).await
    }

    /// Changes the password; every session of the user and every token issued for it ends.
    pub async fn change_user_password(&self, user: &EndUserRecord, input: PasswordChange) -> Result<(), Error> {
        let new = Password::parse(&input.new_password).map_err(|e| e.at("new_password"))?;
        let (current, phc) = (input.current_password, user.password_hash.clone());
        if !blocking(move || password::verify(&current, &phc)).await? {
            return Err(Error::validation("current_password", "is not the current password"));
        }
        let hash = blocking(move || password::hash(new.expose())).await?;
        let now = now_ms();
        let mut tx = self.platform().store().begin().await?;
        oauth::set_user_password(&mut tx, &user.id, &hash, now).await?;
        let revoked = oauth::revoke_everything_of_user(&mut tx, &user.id, now).await?;
        portico_store::commit(tx).await?;
        self.forget(&revoked);
        Ok(())
    }

    pub async fn authorizations(&self, user: &EndUserRecord) -> Result<Vec<AuthorizationOut>, Error> {
        let mut conn = self.platform().store().read().await?;
        Ok(oauth::consents_of(&mut conn, &user.id)
            .await?
            .into_iter()
            .map(|(app_id, app_name, merchant_name, scope, at)| AuthorizationOut { app_id, app_name, merchant_name, scope, granted_at: rfc3339(at) })
            .collect())
    }

    /// Withdraws the user's consent for an app and revokes every token it holds for them.
    pub async fn revoke_authorization(&self, user: &EndUserRecord, app_id: &str) -> Result<(), Error> {
        let now = now_ms();
        let mut tx = self.platform().store().begin().await?;
        let had_consent = oauth::delete_consent(&mut tx, &user.id, app_id).await?;
        let revoked = oauth::revoke_user_app(&mut tx, &user.id, app_id, now).await?;
        if !had_consent && revoked.is_empty() {
            return Err(Error::NotFound("authorization"));
        }
        portico_store::commit(tx).await?;
        self.forget(&revoked);
        Ok(())
    }
}
