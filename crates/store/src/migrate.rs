//! A small migration runner: numbered SQL files embedded in the binary, applied in order,
//! each in its own transaction, recorded in `portico_migrations`. On PostgreSQL an
//! advisory lock keeps two instances starting at once from racing.

use portico_core::Error;
use sqlx::{AnyPool, Executor, Row};

use crate::{DbResult, Engine};

/// (version, name, SQL), in order. Applied migrations are never edited: add a new one.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "foundation", include_str!("../migrations/0001_foundation.sql")),
    (2, "oauth", include_str!("../migrations/0002_oauth.sql")),
    (3, "jwt_keys", include_str!("../migrations/0003_jwt_keys.sql")),
    (4, "gateway", include_str!("../migrations/0004_gateway.sql")),
    (5, "daily_quota", include_str!("../migrations/0005_daily_quota.sql")),
    (6, "messaging", include_str!("../migrations/0006_messaging.sql")),
];

const LOCK_ID: i64 = 0x0070_6f72_7469_636f; // "portico"

pub(crate) async fn run(pool: &AnyPool, engine: Engine) -> Result<(), Error> {
    let mut conn = pool.acquire().await.db()?;
    if engine == Engine::Postgres {
        sqlx::query("SELECT pg_advisory_lock($1)").bind(LOCK_ID).execute(&mut *conn).await.db()?;
    }
    let result = apply(&mut conn).await;
    if engine == Engine::Postgres {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)").bind(LOCK_ID).execute(&mut *conn).await;
    }
    result
}

async fn apply(conn: &mut sqlx::AnyConnection) -> Result<(), Error> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS portico_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .await
    .db()?;
    let rows = sqlx::query("SELECT version FROM portico_migrations").fetch_all(&mut *conn).await.db()?;
    let applied: Vec<i64> = rows.iter().map(|r| r.try_get::<i64, _>(0)).collect::<Result<_, _>>().db()?;
    if let Some(newest) = applied.iter().max() {
        let known = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        if *newest > known {
            return Err(Error::Internal(format!(
                "the database is at migration {newest}, newer than this binary knows ({known}); upgrade portico"
            )));
        }
    }
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await.db()?;
        for statement in split_statements(sql) {
            tx.execute(statement.as_str()).await.map_err(|e| Error::Internal(format!("migration {version} {name}: {e}")))?;
        }
        sqlx::query("INSERT INTO portico_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
            .bind(*version)
            .bind(*name)
            .bind(portico_core::time::now_ms())
            .execute(&mut *tx)
            .await
            .db()?;
        tx.commit().await.db()?;
        tracing::info!(version, name, "applied migration");
    }
    Ok(())
}

/// Splits a migration into statements at `;` line ends, dropping `--` comments.
fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let line = line.split("--").next().unwrap_or("");
        if line.trim().is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if line.trim_end().ends_with(';') {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out
}
