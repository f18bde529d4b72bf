//! A small migration runner: numbered SQL files embedded in the binary, applied in order,
//! each in its own transaction, recorded in `portico_migrations`. On PostgreSQL an
//! advisory lock keeps two instances starting at once from racing. The records' database
//! of SQLite (`Store`) has a list of its own.

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
    (9, "records_apart", include_str!("../migrations/0009_records_apart.sql")),
];

/// The records' own database on SQLite: the tables of `calls` as migrations 4 and 7
/// left them in the main one.
pub const RECORDS_MIGRATIONS: &[(i64, &str, &str)] = &[(1, "records", include_str!("../migrations/records/0001_records.sql"))];

/// Which database a run migrates.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Database<'a> {
    /// The main one; on SQLite with the records' file when the records live apart.
    Main { records_file: Option<&'a str> },
    /// The records' own (SQLite).
    Records,
}

const LOCK_ID: i64 = 0x0070_6f72_7469_636f; // "portico"

pub(crate) async fn run(pool: &AnyPool, engine: Engine, db: Database<'_>) -> Result<(), Error> {
    let mut conn = pool.acquire().await.db()?;
    if engine == Engine::Postgres {
        sqlx::query("SELECT pg_advisory_lock($1)").bind(LOCK_ID).execute(&mut *conn).await.db()?;
    }
    let result = apply(&mut conn, engine, db, i64::MAX).await;
    if engine == Engine::Postgres {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)").bind(LOCK_ID).execute(&mut *conn).await;
    }
    result
}

/// Applies the migrations not yet applied, up to version `last`.
async fn apply(conn: &mut sqlx::AnyConnection, engine: Engine, db: Database<'_>, last: i64) -> Result<(), Error> {
    let list = match db {
        Database::Main { .. } => MIGRATIONS,
        Database::Records => RECORDS_MIGRATIONS,
    };
    conn.execute(
        "CREATE TABLE IF NOT EXISTS portico_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .await
    .db()?;
    let rows = sqlx::query("SELECT version FROM portico_migrations").fetch_all(&mut *conn).await.db()?;
    let applied: Vec<i64> = rows.iter().map(|r| r.try_get::<i64, _>(0)).collect::<Result<_, _>>().db()?;
    if let Some(newest) = applied.iter().max() {
        let known = list.last().map(|m| m.0).unwrap_or(0);
        if *newest > known {
            return Err(Error::Internal(format!(
                "the database is at migration {newest}, newer than this binary knows ({known}); upgrade portico"
            )));
        }
    }
    for (version, name, sql) in list {
        if applied.contains(version) || *version > last {
            continue;
        }
        let fail = |e: &dyn std::fmt::Display| Error::Internal(format!("migration {version} {name}: {e}"));
        // Migration 9 moves the records into their own file: attached (which SQLite
        // allows only outside a transaction) for the transaction's length.
        let records_file = match db {
            Database::Main { records_file: Some(file) } if *version == 9 => Some(file),
            _ => None,
        };
        if let Some(file) = records_file {
            sqlx::query("ATTACH DATABASE $1 AS records").bind(file).execute(&mut *conn).await.map_err(|e| fail(&e))?;
        }
        let result = async {
            let mut tx = sqlx::Connection::begin(&mut *conn).await.db()?;
            for statement in split_statements(sql) {
                tx.execute(statement.as_str()).await.map_err(|e| fail(&e))?;
            }
            // The steps SQL cannot say portably: packing rows, moving them to a file.
            if matches!(db, Database::Main { .. }) && *version == 7 {
                crate::calls::fold_rows(&mut tx, engine).await.map_err(|e| fail(&e))?;
            }
            if records_file.is_some() {
                move_records(&mut tx).await.map_err(|e| fail(&e))?;
            }
            sqlx::query("INSERT INTO portico_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
                .bind(*version)
                .bind(*name)
                .bind(portico_core::time::now_ms())
                .execute(&mut *tx)
                .await
                .db()?;
            tx.commit().await.db()
        }
        .await;
        if records_file.is_some() {
            let _ = conn.execute("DETACH DATABASE records").await;
        }
        result?;
        tracing::info!(version, name, "applied migration");
    }
    Ok(())
}

/// Migration 9 on SQLite: copies the records into the attached records' database and
/// drops them from the main one. SQLite commits the two files one after the other (WAL),
/// so a crash between them leaves the rows in both and the migration to run again: the
/// copy skips the rows already there.
async fn move_records(tx: &mut sqlx::AnyConnection) -> Result<(), sqlx::Error> {
    copy_records(tx).await?;
    for table in ["call_segments", "call_traces", "business_keys"] {
        tx.execute(format!("DROP TABLE main.{table}").as_str()).await?;
    }
    Ok(())
}

/// Copies the main database's records into the attached records' database, skipping
/// those already there.
async fn copy_records(tx: &mut sqlx::AnyConnection) -> Result<(), sqlx::Error> {
    const SEGMENT: &str = "id, merchant_id, first_id, last_id, first_at, last_at, calls, body";
    const KEY: &str = "id, merchant_id, app_id, api, business_key, trace_id, at";
    for sql in [
        format!("INSERT OR IGNORE INTO records.call_segments ({SEGMENT}) SELECT {SEGMENT} FROM main.call_segments"),
        "INSERT INTO records.call_traces (trace_id, segment_id) SELECT trace_id, segment_id FROM main.call_traces t \
         WHERE NOT EXISTS (SELECT 1 FROM records.call_traces r WHERE r.trace_id = t.trace_id AND r.segment_id = t.segment_id)"
            .to_string(),
        format!("INSERT OR IGNORE INTO records.business_keys ({KEY}) SELECT {KEY} FROM main.business_keys"),
    ] {
        tx.execute(sql.as_str()).await?;
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

    /// A database of an older release at migration `version`, with three calls (a row per
    /// call, moved into segments by migration 7) and a business key.
    async fn older_database(url: &str, version: i64) -> [(&'static str, &'static str, String); 3] {
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
        apply(&mut conn, Engine::Sqlite, Database::Main { records_file: None }, 6).await.unwrap();
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
        sqlx::query("INSERT INTO business_keys (id, merchant_id, app_id, api, business_key, trace_id, at) VALUES ('bk_1', 'mch_a', 'app_1', 'order.get@1.0', 'order-7', 'client-trace-2', 5)")
            .execute(&mut conn)
            .await
            .unwrap();
        apply(&mut conn, Engine::Sqlite, Database::Main { records_file: None }, version).await.unwrap();
        conn.close().await.unwrap();
        rows
    }

    /// Every call, business key and `call_traces` row of the store, each once.
    async fn check_records(store: &Store, rows: &[(&str, &str, String)]) {
        let mut conn = store.read_records().await.unwrap();
        let page = portico_core::page::PageRequest { limit: 10, after: None };
        let ids = |rows: Vec<calls::CallRecord>| rows.into_iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(calls::calls(&mut conn, None, None, &page).await.unwrap()), ["cal_0003", "cal_0002", "cal_0001"]);
        assert_eq!(ids(calls::calls(&mut conn, Some("mch_a"), None, &page).await.unwrap()), ["cal_0003", "cal_0001"]);
        for (id, merchant, trace) in rows {
            let found = calls::calls(&mut conn, Some(merchant), Some(trace), &page).await.unwrap();
            assert_eq!(ids(found), [*id], "{trace}");
        }
        let traces: i64 = sqlx::query("SELECT COUNT(*) FROM call_traces").fetch_one(&mut *conn).await.unwrap().get(0);
        assert_eq!(traces, 2, "the client's two trace ids");
        let keys = calls::business_keys(&mut conn, "mch_a", None, &page).await.unwrap();
        assert_eq!(keys.iter().map(|k| k.business_key.as_str()).collect::<Vec<_>>(), ["order-7"]);
    }

    /// A database left by a release that kept a row per call: migration 7 moves the rows
    /// into segments, 8 drops the old table, 9 moves the records to their own file.
    #[tokio::test]
    async fn records_of_an_older_release_move_into_segments_in_their_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
        let rows = older_database(&url, 6).await;

        let store = Store::open(&url, 2).await.unwrap();
        assert_eq!(store.applied_migrations().await.unwrap(), MIGRATIONS.iter().map(|m| m.0).collect::<Vec<_>>());
        check_records(&store, &rows).await;
        let mut main = store.read().await.unwrap();
        for table in ["api_calls", "call_segments", "call_traces", "business_keys"] {
            let old = sqlx::query("SELECT name FROM sqlite_master WHERE name = $1").bind(table).fetch_optional(&mut *main).await.unwrap();
            assert!(old.is_none(), "{table} is dropped from the main database");
        }
        drop(main);
        store.close().await;

        // The records' file, deleted while stopped, is made anew and empty.
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(dir.path().join(format!("old-records.db{suffix}")));
        }
        let store = Store::open(&url, 2).await.unwrap();
        let page = portico_core::page::PageRequest { limit: 10, after: None };
        assert!(calls::calls(&mut store.read_records().await.unwrap(), None, None, &page).await.unwrap().is_empty());
        calls::write(&store.records_writer(), &[calls::CallRecord { id: "cal_0004".to_string(), at: 1, trace_id: "t".into(), merchant_id: None, app_id: None, api: None, status: 200, code: 0, latency_us: 1, bytes_in: 0, bytes_out: 0, client_ip: "::1".into() }], &[])
            .await
            .unwrap();
        assert_eq!(calls::calls(&mut store.read_records().await.unwrap(), None, None, &page).await.unwrap().len(), 1);
    }

    /// A move cut short after the records' file committed its copy (SQLite commits the
    /// two files one after the other) runs again without copying anything twice.
    #[tokio::test]
    async fn a_move_cut_short_runs_again_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
        let rows = older_database(&url, 8).await;
        let records = dir.path().join("old-records.db");
        let mut conn = sqlx::AnyConnection::connect(&format!("sqlite://{}?mode=rwc", records.display())).await.unwrap();
        apply(&mut conn, Engine::Sqlite, Database::Records, i64::MAX).await.unwrap();
        conn.close().await.unwrap();
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        sqlx::query("ATTACH DATABASE $1 AS records").bind(records.to_string_lossy().as_ref()).execute(&mut conn).await.unwrap();
        copy_records(&mut conn).await.unwrap();
        conn.close().await.unwrap();

        let store = Store::open(&url, 2).await.unwrap();
        assert_eq!(store.applied_migrations().await.unwrap(), MIGRATIONS.iter().map(|m| m.0).collect::<Vec<_>>());
        check_records(&store, &rows).await;
        let segments: i64 = sqlx::query("SELECT COUNT(*) FROM call_segments").fetch_one(&mut *store.read_records().await.unwrap()).await.unwrap().get(0);
        assert_eq!(segments, 2, "a segment per merchant, once");
    }
}
