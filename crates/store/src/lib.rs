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
#[derive(Clone, Debug)]
pub struct Store {
    writer: AnyPool,
    reader: AnyPool,
    engine: Engine,
}

impl Store {
    /// Connects to `url` and runs pending migrations.
    pub async fn open(url: &str, max_connections: u32) -> Result<Store, Error> {
        sqlx::any::install_default_drivers();
        let engine = if url.starts_with("sqlite:") {
            Engine::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Engine::Postgres
        } else {
            return Err(Error::validation("database.url", "must start with sqlite: or postgres:"));
        };
        let options = AnyConnectOptions::from_str(url)
            .map_err(|e| Error::validation("database.url", e.to_string()))?
            .disable_statement_logging();
        let pool = |max: u32| {
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(Duration::from_secs(5))
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if engine == Engine::Sqlite {
                            conn.execute(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                 PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; \
                                 PRAGMA cache_size = -16384; PRAGMA mmap_size = 268435456; PRAGMA temp_store = MEMORY;",
                            )
                            .await?;
                        }
                        Ok(())
                    })
                })
                .connect_with(options.clone())
        };
        let (writer, reader) = match engine {
            Engine::Sqlite => {
                let writer = pool(1).await.map_err(connect_error)?;
                migrate::run(&writer, engine).await?;
                (writer, pool(max_connections.max(2)).await.map_err(connect_error)?)
            }
            Engine::Postgres => {
                let p = pool(max_connections.max(2)).await.map_err(connect_error)?;
                migrate::run(&p, engine).await?;
                (p.clone(), p)
            }
        };
        Ok(Store { writer, reader, engine })
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
    }

    /// The versions of the migrations applied, oldest first.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>, Error> {
        let mut c = self.read().await?;
        let rows = sqlx::query("SELECT version FROM portico_migrations ORDER BY version").fetch_all(&mut *c).await.db()?;
        rows.iter().map(|r| r.try_get::<i64, _>(0)).collect::<Result<_, _>>().db()
    }
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
