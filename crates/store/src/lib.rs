//! Database access for both engines. The backend comes from the URL (`sqlite://…` or
//! `postgres://…`); migrations are portable by construction (see `migrations/`); every
//! query uses `$n` placeholders, which both engines accept.
//!
//! Each module holds one table's queries. Queries on a merchant's objects take the
//! merchant id as a required argument and put it in the `WHERE` clause: tenancy lives in
//! the queries, not in the callers.

pub mod accounts;
pub mod apps;
pub mod audit;
pub mod calls;
pub mod catalog;
pub mod merchants;
pub mod messaging;
pub mod oauth;
pub mod registry;
mod migrate;
pub mod paced;
pub mod sessions;

use std::{str::FromStr, time::Duration};

use portico_core::Error;
use sqlx::{
    any::{AnyConnectOptions, AnyPoolOptions, AnyRow},
    AnyConnection, AnyPool, ConnectOptions, Connection, Executor, Row, Transaction,
};

pub use migrate::MIGRATIONS;

pub type Conn = AnyConnection;
pub type Tx = Transaction<'static, sqlx::Any>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// The platform's database. On SQLite, writes go through a pool of one connection so
/// that writers queue in the process instead of failing with `SQLITE_BUSY`; reads use
/// their own pool (WAL lets them run beside the writer). On PostgreSQL both are one pool.
///
/// The gateway's call records and business keys (`calls`) have a database of their own
/// on SQLite: a file beside the main one (`portico.db` → `portico-records.db`, see
/// [`records_url`]), written by the gateway's record writer alone through a connection of
/// its own ([`Store::records_writer`]). Its inserts, tens of thousands of calls a second
/// packed in a few rows, then run on the record writer's spare-CPU thread without ever
/// holding the write lock of the database every other write needs. On PostgreSQL (and an
/// SQLite database in memory) the records share the main database.
#[derive(Clone, Debug)]
pub struct Store {
    writer: AnyPool,
    reader: AnyPool,
    engine: Engine,
    records: Records,
}

#[derive(Clone, Debug)]
struct Records {
    /// How the record writer connects: to the records' file, or to the main database.
    writer: AnyConnectOptions,
    /// Whether `writer` goes through the paced VFS (`paced`).
    paced: bool,
    /// Reads: the records' own pool, or the main reader.
    reader: AnyPool,
}

impl Store {
    /// Connects to `url` and runs pending migrations (the records' database first).
    pub async fn open(url: &str, max_connections: u32) -> Result<Store, Error> {
        sqlx::any::install_default_drivers();
        let engine = if url.starts_with("sqlite:") {
            Engine::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Engine::Postgres
        } else {
            return Err(Error::validation("database.url", "must start with sqlite: or postgres:"));
        };
        let options = connect_options(url)?;
        let pool = |max: u32| pool_options(engine, max, "").connect_with(options.clone());
        // On SQLite the records' own file: its URL, connection options and file name.
        let records = match engine {
            Engine::Sqlite => records_url(url),
            Engine::Postgres => None,
        }
        .map(|records_url| {
            let file = sqlx::sqlite::SqliteConnectOptions::from_str(&records_url).map_err(|e| Error::validation("database.url", e.to_string()))?;
            Ok::<_, Error>((connect_options(&records_url)?, file.get_filename().to_string_lossy().into_owned()))
        })
        .transpose()?;
        // It is migrated first: the main database's migration 9 moves the records it held
        // into it.
        if let Some((records_options, _)) = &records {
            let pool = pool_options(engine, 1, "").connect_with(records_options.clone()).await.map_err(connect_error)?;
            migrate::run(&pool, engine, migrate::Database::Records).await?;
            pool.close().await;
        }
        let records_file = records.as_ref().map(|(_, file)| file.as_str());
        let main = migrate::Database::Main { records_file };
        let (writer, reader) = match engine {
            Engine::Sqlite => {
                let writer = pool(1).await.map_err(connect_error)?;
                migrate::run(&writer, engine, main).await?;
                (writer, pool(max_connections.max(2)).await.map_err(connect_error)?)
            }
            Engine::Postgres => {
                let p = pool(max_connections.max(2)).await.map_err(connect_error)?;
                migrate::run(&p, engine, main).await?;
                (p.clone(), p)
            }
        };
        let records = match records {
            Some((records_options, _)) => {
                let reader = pool_options(engine, max_connections.clamp(2, 4), "").connect_lazy_with(records_options.clone());
                let (writer, paced) = paced_writer(records_options)?;
                Records { writer, paced, reader }
            }
            None => Records { writer: options, paced: false, reader: reader.clone() },
        };
        Ok(Store { writer, reader, engine, records })
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// How many write transactions can be open at once: 1 on SQLite, the pool's size
    /// on PostgreSQL.
    pub fn write_connections(&self) -> u32 {
        self.writer.options().get_max_connections()
    }

    /// A transaction on the writer. Every multi-row change runs in one.
    pub async fn begin(&self) -> Result<Tx, Error> {
        self.writer.begin().await.db()
    }

    /// A connection for reads.
    pub async fn read(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, Error> {
        self.reader.acquire().await.db()
    }

    /// A connection for reading call records and business keys (`calls`).
    pub async fn read_records(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, Error> {
        self.records.reader.acquire().await.db()
    }

    /// A writer of call records and business keys: one connection of its own to the
    /// records' database, made when first used by the thread that uses it (on SQLite the
    /// connection's worker thread is made there, and takes its scheduling class).
    pub fn records_writer(&self) -> calls::Writer {
        let paced = self.records.paced;
        let pool = pool_options(self.engine, 1, if paced { paced::PRAGMAS } else { "" })
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(self.records.writer.clone());
        calls::Writer { pool, engine: self.engine, paced }
    }

    /// Whether the database answers, for `/readyz`.
    pub async fn ping(&self) -> bool {
        match self.reader.acquire().await {
            Ok(mut c) => c.ping().await.is_ok(),
            Err(_) => false,
        }
    }

    /// Closes both pools; later calls fail as if the database were down.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
        self.records.reader.close().await;
    }

    /// The versions of the migrations applied, oldest first.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>, Error> {
        let mut c = self.read().await?;
        let rows = sqlx::query("SELECT version FROM portico_migrations ORDER BY version").fetch_all(&mut *c).await.db()?;
        rows.iter().map(|r| r.try_get::<i64, _>(0)).collect::<Result<_, _>>().db()
    }
}

fn connect_options(url: &str) -> Result<AnyConnectOptions, Error> {
    Ok(AnyConnectOptions::from_str(url).map_err(|e| Error::validation("database.url", e.to_string()))?.disable_statement_logging())
}

/// The record writer's connection options and whether they pace it: through the paced
/// VFS (`paced`), or as they are if SQLite will not register it.
fn paced_writer(options: AnyConnectOptions) -> Result<(AnyConnectOptions, bool), Error> {
    if let Err(e) = paced::register() {
        tracing::warn!(error = %e, "the records' paced VFS is unavailable; the record writer uses SQLite's default");
        return Ok((options, false));
    }
    let mut url = options.database_url.clone();
    url.query_pairs_mut().append_pair("vfs", paced::NAME);
    Ok((connect_options(url.as_str())?, true))
}

/// A pool's settings: its size, and on SQLite the pragmas every connection starts with,
/// then `more`.
fn pool_options(engine: Engine, max: u32, more: &'static str) -> AnyPoolOptions {
    AnyPoolOptions::new().max_connections(max).acquire_timeout(Duration::from_secs(5)).after_connect(move |conn, _| {
        Box::pin(async move {
            if engine == Engine::Sqlite {
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; \
                     PRAGMA cache_size = -16384; PRAGMA mmap_size = 268435456; PRAGMA temp_store = MEMORY;",
                )
                .await?;
                if !more.is_empty() {
                    conn.execute(more).await?;
                }
            }
            Ok(())
        })
    })
}

/// The records' database beside an SQLite database: the same URL with `-records` added
/// to the file's name before its extension (`sqlite://data/portico.db?mode=rwc` →
/// `sqlite://data/portico-records.db?mode=rwc`). `None` for a database in memory, whose
/// records stay in it.
pub fn records_url(url: &str) -> Option<String> {
    let prefix = if url.starts_with("sqlite://") { "sqlite://" } else { url.strip_prefix("sqlite:").map(|_| "sqlite:")? };
    let rest = &url[prefix.len()..];
    let (file, params) = match rest.split_once('?') {
        Some((file, params)) => (file, Some(params)),
        None => (rest, None),
    };
    let in_memory = params.is_some_and(|p| p.split('&').any(|kv| kv == "mode=memory"));
    let name_at = file.rfind('/').map_or(0, |i| i + 1);
    if file.is_empty() || file == ":memory:" || in_memory || name_at == file.len() {
        return None;
    }
    let stem_end = match file[name_at..].rfind('.') {
        Some(dot) if dot > 0 => name_at + dot,
        _ => file.len(),
    };
    let mut out = format!("{prefix}{}-records{}", &file[..stem_end], &file[stem_end..]);
    if let Some(p) = params {
        out.push('?');
        out.push_str(p);
    }
    Some(out)
}

fn connect_error(e: sqlx::Error) -> Error {
    Error::Unavailable(format!("cannot connect to the database: {e}"))
}

/// Maps database failures to domain errors: a unique violation is a conflict, an
/// unreachable or busy database is `Unavailable` (503), anything else is internal.
pub trait DbResult<T> {
    fn db(self) -> Result<T, Error>;
}

impl<T> DbResult<T> for Result<T, sqlx::Error> {
    fn db(self) -> Result<T, Error> {
        self.map_err(map_error)
    }
}

pub fn map_error(e: sqlx::Error) -> Error {
    use sqlx::Error as E;
    match &e {
        E::Database(d) if d.is_unique_violation() => Error::Conflict("already exists".into()),
        E::Database(d) if is_busy(d.message()) => Error::Unavailable(e.to_string()),
        E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => Error::Unavailable(e.to_string()),
        E::Protocol(_) => Error::Unavailable(e.to_string()),
        _ => Error::Internal(e.to_string()),
    }
}

fn is_busy(message: &str) -> bool {
    message.contains("database is locked")
        || message.contains("terminating connection")
        || message.contains("the database system is")
}

/// Reads a column, mapping a decoding failure to an internal error.
pub(crate) fn col<'r, T>(row: &'r AnyRow, name: &str) -> Result<T, Error>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(name).map_err(|e| Error::Internal(format!("column {name}: {e}")))
}

/// Counts a failed sign-in on a row of `table` (`accounts` or `end_users`, which share
/// the `failed_logins` and `locked_until` columns); at `lock_after` failures in a row the
/// row locks until `now + lock_ms`. One statement, so concurrent failures all count.
/// Returns the new failure count.
pub(crate) async fn count_failed_sign_in(conn: &mut Conn, table: &'static str, id: &str, now: i64, lock_after: i64, lock_ms: i64) -> Result<i64, Error> {
    sqlx::query(&format!(
        "UPDATE {table} SET failed_logins = failed_logins + 1, \
         locked_until = CASE WHEN failed_logins + 1 >= $1 THEN $2 ELSE locked_until END WHERE id = $3"
    ))
    .bind(lock_after)
    .bind(now + lock_ms)
    .bind(id)
    .execute(&mut *conn)
    .await
    .db()?;
    let row = sqlx::query(&format!("SELECT failed_logins FROM {table} WHERE id = $1")).bind(id).fetch_one(conn).await.db()?;
    col(&row, "failed_logins")
}

/// A successful sign-in clears the failure count (and an expired lock).
pub(crate) async fn clear_failed_sign_ins(conn: &mut Conn, table: &'static str, id: &str) -> Result<(), Error> {
    sqlx::query(&format!("UPDATE {table} SET failed_logins = 0, locked_until = 0 WHERE id = $1 AND failed_logins <> 0"))
        .bind(id)
        .execute(conn)
        .await
        .db()?;
    Ok(())
}

/// `INSERT INTO {table_and_columns} VALUES (…), (…)` with placeholders for `rows` rows of
/// `columns` values.
pub(crate) fn multi_row_insert(engine: Engine, table_and_columns: &str, rows: usize, columns: usize) -> String {
    format!("INSERT INTO {table_and_columns} VALUES {}", values_list(engine, rows, columns))
}

/// `(…), (…)`: placeholders for `rows` rows of `columns` values, numbered from `$1`. On
/// SQLite they are anonymous (`?`): SQLite looks a named one up by walking a list, which
/// made a 600-parameter statement quadratic (the profile in BENCHMARKS.md).
pub(crate) fn values_list(engine: Engine, rows: usize, columns: usize) -> String {
    use std::fmt::Write;
    let mut sql = String::with_capacity(rows * columns * 5);
    for i in 0..rows {
        sql.push_str(if i == 0 { "(" } else { ",(" });
        for c in 0..columns {
            if c > 0 {
                sql.push(',');
            }
            match engine {
                Engine::Sqlite => sql.push('?'),
                Engine::Postgres => {
                    let _ = write!(sql, "${}", i * columns + c + 1);
                }
            }
        }
        sql.push(')');
    }
    sql
}

/// Commits a transaction, mapping failures like every other query.
pub async fn commit(tx: Tx) -> Result<(), Error> {
    tx.commit().await.db()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::records_url;

    #[test]
    fn the_records_file_sits_beside_the_database() {
        for (url, records) in [
            ("sqlite://data/portico.db?mode=rwc", Some("sqlite://data/portico-records.db?mode=rwc")),
            ("sqlite:///var/lib/portico/portico.db", Some("sqlite:///var/lib/portico/portico-records.db")),
            ("sqlite:portico.db", Some("sqlite:portico-records.db")),
            ("sqlite://./dir.v2/portico", Some("sqlite://./dir.v2/portico-records")),
            ("sqlite://data/.portico?mode=rwc&cache=private", Some("sqlite://data/.portico-records?mode=rwc&cache=private")),
            ("sqlite::memory:", None),
            ("sqlite://:memory:", None),
            ("sqlite://shared.db?mode=memory&cache=shared", None),
            ("sqlite://data/", None),
            ("postgres://localhost/db", None),
        ] {
            assert_eq!(records_url(url).as_deref(), records, "{url}");
        }
    }

    proptest! {
        /// Another file in the same folder, with the same parameters.
        #[test]
        fn the_records_url_names_another_file_in_the_same_folder(dir in "(/?[a-z.]{1,8}/){0,3}", name in "[a-z.]{1,12}", params in proptest::option::of("[a-z]=[a-z]{1,4}")) {
            let file = format!("{dir}{name}");
            let url = match &params { Some(p) => format!("sqlite://{file}?{p}"), None => format!("sqlite://{file}") };
            let records = records_url(&url).unwrap();
            let rest = records.strip_prefix("sqlite://").unwrap();
            let (records_file, records_params) = match rest.split_once('?') { Some((f, p)) => (f, Some(p)), None => (rest, None) };
            prop_assert_eq!(records_params, params.as_deref());
            prop_assert_ne!(records_file, file.as_str());
            prop_assert!(records_file.starts_with(dir.as_str()));
            prop_assert!(!records_file[dir.len()..].contains('/'));
        }
    }
}
