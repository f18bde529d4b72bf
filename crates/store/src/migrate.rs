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
    (7, "call_segments", include_str!("../migrations/0007_call_segments.sql")),
    (8, "drop_api_calls", include_str!("../migrations/0008_drop_api_calls.sql")),
];

const LOCK_ID: i64 = 0x0070_6f72_7469_636f; // "portico"

pub(crate) async fn run(pool: &AnyPool, engine: Engine) -> Result<(), Error> {
    let mut conn = pool.acquire().await.db()?;
    if engine == Engine::Postgres {
        sqlx::query("SELECT pg_advisory_lock($1)").bind(LOCK_ID).execute(&mut *conn).await.db()?;
    }
    let result = apply(&mut conn, engine, i64::MAX).await;
    if engine == Engine::Postgres {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)").bind(LOCK_ID).execute(&mut *conn).await;
    }
    result
}

/// Applies the migrations not yet applied, up to version `last`.
async fn apply(conn: &mut sqlx::AnyConnection, engine: Engine, last: i64) -> Result<(), Error> {
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
        if applied.contains(version) || *version > last {
            continue;
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await.db()?;
        for statement in split_statements(sql) {
            tx.execute(statement.as_str()).await.map_err(|e| Error::Internal(format!("migration {version} {name}: {e}")))?;
        }
        // The one migration with a step SQL cannot say portably: packing rows.
        if *version == 7 {
            crate::calls::fold_rows(&mut tx, engine).await.map_err(|e| Error::Internal(format!("migration {version} {name}: {e}")))?;
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

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;
    use crate::{calls, Store};

    /// A database left by a release that kept a row per call: migration 7 moves the rows
    /// into segments, 8 drops the old table.
    #[tokio::test]
    async fn call_rows_of_an_older_release_move_into_segments() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        apply(&mut conn, Engine::Sqlite, 6).await.unwrap();
        let now = portico_core::time::now_ms();
        let rows = [
            ("cal_0001", "mch_a", format!("{now:012x}0123456789abcdef0123")),
            ("cal_0002", "mch_b", "client-trace-1".to_string()),
            ("cal_0003", "mch_a", "client-trace-2".to_string()),
        ];
        for (id, merchant, trace) in &rows {
            sqlx::query(
                "INSERT INTO api_calls (id, at, trace_id, merchant_id, app_id, api, status, code, latency_us, bytes_in, bytes_out, client_ip) \
                 VALUES ($1, $2, $3, $4, 'app_1', 'order.get@1.0', 200, 0, 5, 1, 2, '127.0.0.1')",
            )
            .bind(*id)
            .bind(now)
            .bind(trace)
            .bind(*merchant)
            .execute(&mut conn)
            .await
            .unwrap();
        }
        conn.close().await.unwrap();

        let store = Store::open(&url, 2).await.unwrap();
        assert_eq!(store.applied_migrations().await.unwrap(), MIGRATIONS.iter().map(|m| m.0).collect::<Vec<_>>());
        let mut conn = store.read().await.unwrap();
        let page = portico_core::page::PageRequest { limit: 10, after: None };
        let ids = |rows: Vec<calls::CallRecord>| rows.into_iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(calls::calls(&mut conn, None, None, &page).await.unwrap()), ["cal_0003", "cal_0002", "cal_0001"]);
        assert_eq!(ids(calls::calls(&mut conn, Some("mch_a"), None, &page).await.unwrap()), ["cal_0003", "cal_0001"]);
        for (id, merchant, trace) in &rows {
            let found = calls::calls(&mut conn, Some(merchant), Some(trace), &page).await.unwrap();
            assert_eq!(ids(found), [*id], "{trace}");
        }
        let old = sqlx::query("SELECT name FROM sqlite_master WHERE name = 'api_calls'").fetch_optional(&mut *conn).await.unwrap();
        assert!(old.is_none(), "the old table is dropped");
    }
}
