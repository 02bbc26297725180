//! The embedded store: one SQLite file in WAL mode, so the CLI can change users while a gateway
//! runs. Calls run on tokio's blocking pool, never on the proxy's event loop.

mod captchas;
mod events;
mod outbox;
mod recovery;
mod remember;
mod second_factors;
mod secrets;
mod sessions;
mod throttle;
mod users;

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::migrations::{self, Steps};
use super::*;
use crate::core::counter::Counter;
use crate::core::event::Event;
use crate::core::identity::{NewUser, User};
use crate::core::secret::SessionHash;
use crate::core::time::UnixTime;

/// Every aggregate's steps, in the order they are applied.
const SCHEMA: [Steps; 10] = [
    ("users", users::MIGRATIONS),
    ("sessions", sessions::MIGRATIONS),
    ("remember", remember::MIGRATIONS),
    ("events", events::MIGRATIONS),
    ("throttle", throttle::MIGRATIONS),
    ("captchas", captchas::MIGRATIONS),
    ("secrets", secrets::MIGRATIONS),
    ("second_factors", second_factors::MIGRATIONS),
    ("recovery", recovery::MIGRATIONS),
    ("outbox", outbox::MIGRATIONS),
];

/// What each `PRAGMA user_version` of the single-number era added (released: 1 to 3).
const LEGACY: [&[(&str, usize)]; 3] = [
    &[
        ("users", 1),
        ("sessions", 1),
        ("remember", 1),
        ("events", 1),
    ],
    &[("throttle", 1), ("captchas", 1)],
    &[("sessions", 2)],
];

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        use rusqlite::Error::*;
        match e {
            // A row whose values cannot be what the schema says: never read as a default.
            FromSqlConversionFailure(_, _, cause) => StoreError::Corrupt(cause.to_string()),
            InvalidColumnType(..) | IntegralValueOutOfRange(..) => {
                StoreError::Corrupt(e.to_string())
            }
            other => unavailable(other),
        }
    }
}

impl SqliteStore {
    /// Opens the file, creating its directory, the file and the schema when needed.
    pub async fn open(path: &Path) -> StoreResult<SqliteStore> {
        let path = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || -> StoreResult<Connection> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
            }
            // Two processes opening a new file at once can meet where SQLite answers "busy"
            // without waiting (switching to WAL, or migrating): the later one tries again.
            let mut tries = 0;
            loop {
                let mut conn = Connection::open(&path)
                    .map_err(|e| unavailable(format!("cannot open {}: {e}", path.display())))?;
                match prepare(&mut conn) {
                    Ok(()) => return Ok(conn),
                    Err(StoreError::Unavailable(m))
                        if m.contains("locked") && tries < OPEN_TRIES =>
                    {
                        tries += 1;
                        drop(conn);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        .map_err(unavailable)??;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| unavailable("a previous store call panicked"))?;
            f(&mut guard)
        })
        .await
        .map_err(unavailable)?
    }
}

/// Tries of opening a file another process is setting up at the same moment.
const OPEN_TRIES: u32 = 100;

/// A new connection's settings, and the schema brought up to date.
fn prepare(conn: &mut Connection) -> StoreResult<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrate(conn)
}

/// Brings every aggregate's schema up to date in one transaction (`store::migrations`).
fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let fresh = tx.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE name = 'schema_versions'",
        [],
        |r| r.get::<_, i64>(0),
    )? == 0;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_versions (aggregate TEXT PRIMARY KEY, version INTEGER NOT NULL)",
    )?;
    let record = |tx: &rusqlite::Transaction, aggregate: &str, version: usize| {
        tx.execute(
            "INSERT INTO schema_versions (aggregate, version) VALUES (?1, ?2)
             ON CONFLICT (aggregate) DO UPDATE SET version = excluded.version",
            params![aggregate, version as i64],
        )
    };
    if fresh {
        let old: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (aggregate, version) in
            migrations::legacy(&LEGACY, usize::try_from(old).unwrap_or(usize::MAX))?
        {
            record(&tx, aggregate, version)?;
        }
    }
    let plans = migrations::plan(&SCHEMA, |aggregate| {
        tx.query_row(
            "SELECT version FROM schema_versions WHERE aggregate = ?1",
            [aggregate],
            |r| r.get::<_, i64>(0),
        )
        .optional()
        .ok()
        .flatten()
        .map_or(0, |v| usize::try_from(v).unwrap_or(usize::MAX))
    })?;
    for plan in plans {
        for sql in plan.pending {
            tx.execute_batch(sql)?;
        }
        record(&tx, plan.aggregate, plan.version)?;
    }
    tx.commit()?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.with(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }
}
