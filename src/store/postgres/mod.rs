//! The PostgreSQL store, for several gateways sharing one database (docs/reference.md, Store
//! and cluster). Same interface and semantics as SQLite; every multi-row change is one transaction. Connections live on a
//! runtime of the store's own, so they outlive whichever runtime made the first call, and every
//! call is bounded in time: an unreachable database is an error within seconds, never a hang.
//! Revocations are announced with NOTIFY; `changes` wakes the gateways that LISTEN.

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

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::watch;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, NoTls, Row};

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

/// What each version of the single-number era (`portcullis_schema`) added (released: 1).
const LEGACY: [&[(&str, usize)]; 1] = [&[
    ("users", 1),
    ("sessions", 1),
    ("remember", 1),
    ("events", 1),
    ("throttle", 1),
    ("captchas", 1),
]];

/// Advisory locks of Portcullis are (this class, a key); the class keeps them apart from other
/// applications' in the same database.
const LOCK_CLASS: i32 = 0x7063_6c73;
/// Keys within the class (counters use the hash of their own key).
const MIGRATION_LOCK: i32 = 1;
const REVOCATION_LOCK: i32 = 2;
const CAPTCHA_LOCK: i32 = 3;
/// The NOTIFY channel for revocations.
const CHANNEL: &str = "portcullis_revocations";
/// The longest any store call may take, connecting included.
const CALL_LIMIT: Duration = Duration::from_secs(5);

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        // The driver's text for a lost server is "db error" or "connection closed"; the
        // source says why.
        match e.as_db_error() {
            Some(db) => unavailable(db.message()),
            None => {
                unavailable(std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string()))
            }
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> StoreError {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            deadpool_postgres::PoolError::Timeout(_) => {
                unavailable("no connection to PostgreSQL within 2s")
            }
            other => unavailable(other),
        }
    }
}

/// A runtime on a thread of its own, for the connections and their driver tasks. It stops when
/// the store is dropped.
struct DbRuntime {
    handle: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl DbRuntime {
    /// The runtime is built, run and dropped on its own thread, never inside async code.
    fn start() -> StoreResult<DbRuntime> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (started, handle) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("portcullis-db".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("portcullis-db")
                    .enable_all()
                    .build();
                let runtime = match runtime {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = started.send(Err(unavailable(e)));
                        return;
                    }
                };
                let _ = started.send(Ok(runtime.handle().clone()));
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                runtime.shutdown_background();
            })
            .map_err(unavailable)?;
        let handle = handle
            .recv()
            .map_err(|_| unavailable("the database thread did not start"))??;
        Ok(DbRuntime {
            handle,
            _stop: stop,
        })
    }
}

pub struct PostgresStore {
    pool: Pool,
    runtime: DbRuntime,
    changes: watch::Receiver<u64>,
}

impl PostgresStore {
    /// Connects, migrates (safely when several gateways start at once) and starts listening
    /// for revocations. The URL is never part of an error message: it may hold a password.
    pub async fn open(url: &str) -> StoreResult<PostgresStore> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| unavailable(format!("store.url is not a PostgreSQL URL: {e}")))?;
        // The server gives up on a statement, a lock wait or an abandoned transaction before
        // the gateway gives up on the call; a peer gone silent (a partition, not a clean
        // close) is dropped by the kernel within seconds rather than minutes.
        config
            .connect_timeout(Duration::from_secs(2))
            .tcp_user_timeout(Duration::from_secs(5))
            .keepalives_idle(Duration::from_secs(30))
            .options(
                "-c statement_timeout=4500 -c lock_timeout=3000 \
                 -c idle_in_transaction_session_timeout=10000",
            )
            .application_name("portcullis");
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let wait = Some(Duration::from_secs(2));
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .wait_timeout(wait)
            .create_timeout(wait)
            .recycle_timeout(wait)
            .build()
            .map_err(unavailable)?;
        let runtime = DbRuntime::start()?;
        let (notify, changes) = watch::channel(0);
        let store = PostgresStore {
            pool,
            runtime,
            changes,
        };
        store.run(migrate).await?;
        store.runtime.handle.spawn(listen(config, notify));
        Ok(store)
    }

    /// Runs `f` with a pooled connection on the store's runtime, within `CALL_LIMIT`.
    async fn run<T, F, Fut>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = StoreResult<T>> + Send,
    {
        let pool = self.pool.clone();
        let call = self.runtime.handle.spawn(async move {
            let client = pool.get().await?;
            tokio::time::timeout(CALL_LIMIT, f(client))
                .await
                .map_err(|_| unavailable("PostgreSQL did not answer within 5s"))?
        });
        call.await.map_err(unavailable)?
    }
}

/// Brings every aggregate's schema up to date in one transaction (`store::migrations`); an
/// advisory lock makes gateways starting at once do it one after the other.
async fn migrate(mut client: deadpool_postgres::Object) -> StoreResult<()> {
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_CLASS, &MIGRATION_LOCK],
    )
    .await?;
    let fresh = tx
        .query_one(
            "SELECT to_regclass('portcullis_schema_versions') IS NULL",
            &[],
        )
        .await?
        .try_get::<_, bool>(0)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS portcullis_schema_versions (aggregate TEXT PRIMARY KEY, version INTEGER NOT NULL)",
    )
    .await?;
    let mut recorded = std::collections::HashMap::new();
    if fresh {
        // (An error would end the transaction: look before reading.)
        let single_number = tx
            .query_one("SELECT to_regclass('portcullis_schema') IS NOT NULL", &[])
            .await?
            .try_get::<_, bool>(0)?;
        let old: i32 = match single_number {
            true => match tx
                .query_opt("SELECT version FROM portcullis_schema", &[])
                .await?
            {
                Some(row) => row.try_get(0)?,
                None => 0,
            },
            // Neither table: a new store.
            false => 0,
        };
        for (aggregate, version) in migrations::legacy(&LEGACY, usize::try_from(old).unwrap_or(0))?
        {
            recorded.insert(aggregate.to_string(), version);
        }
    } else {
        for row in tx
            .query(
                "SELECT aggregate, version FROM portcullis_schema_versions",
                &[],
            )
            .await?
        {
            let version: i32 = row.try_get(1)?;
            recorded.insert(
                row.try_get(0)?,
                usize::try_from(version).unwrap_or(usize::MAX),
            );
        }
    }
    let plans = migrations::plan(&SCHEMA, |a| recorded.get(a).copied().unwrap_or(0))?;
    for plan in plans {
        for sql in plan.pending {
            tx.batch_execute(sql).await?;
        }
        let version = plan.version as i32;
        tx.execute(
            "INSERT INTO portcullis_schema_versions (aggregate, version) VALUES ($1, $2)
             ON CONFLICT (aggregate) DO UPDATE SET version = excluded.version",
            &[&plan.aggregate, &version],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Column `i` of a row, as the schema says it is: anything else is a corrupt row, never a
/// panic and never a default.
fn col<'a, T: tokio_postgres::types::FromSql<'a>>(r: &'a Row, i: usize) -> StoreResult<T> {
    r.try_get(i)
        .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
}

/// Keeps a connection that LISTENs for revocations, bumping `notify` on each one and whenever
/// the connection is made again (a notification may have been missed meanwhile).
async fn listen(config: tokio_postgres::Config, notify: watch::Sender<u64>) {
    loop {
        match tokio::time::timeout(CALL_LIMIT, config.connect(NoTls)).await {
            Ok(Ok((client, mut connection))) => {
                let driver = async {
                    while let Some(message) =
                        std::future::poll_fn(|cx| connection.poll_message(cx)).await
                    {
                        match message {
                            Ok(AsyncMessage::Notification(_)) => notify.send_modify(|n| *n += 1),
                            Ok(_) => {}
                            Err(e) => return e.to_string(),
                        }
                    }
                    "connection closed".to_string()
                };
                let subscribe = async {
                    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
                    notify.send_modify(|n| *n += 1);
                    std::future::pending::<Result<(), tokio_postgres::Error>>().await
                };
                let why = tokio::select! {
                    why = driver => why,
                    Err(e) = subscribe => e.to_string(),
                };
                tracing::warn!(error = %why, "lost the PostgreSQL revocation listener; reconnecting");
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %StoreError::from(e), "cannot listen for revocations yet");
            }
            Err(_) => tracing::debug!("cannot listen for revocations yet: no answer within 5s"),
        }
        if notify.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> StoreResult<()> {
        self.run(|c| async move {
            c.simple_query("SELECT 1").await?;
            Ok(())
        })
        .await
    }
}
