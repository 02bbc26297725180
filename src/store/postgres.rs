//! The PostgreSQL store, for several gateways sharing one database (SPEC §11). Same interface
//! and semantics as SQLite; every multi-row change is one transaction. Connections live on a
//! runtime of the store's own, so they outlive whichever runtime made the first call, and every
//! call is bounded in time: an unreachable database is an error within seconds, never a hang.
//! Revocations are announced with NOTIFY; `changes` wakes the gateways that LISTEN.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::watch;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, NoTls, Row};

use super::{
    CaptchaRecord, CounterUpdate, EventFilter, NewUser, Purged, RememberRecord, Revocation,
    Revoked, SessionBounds, SessionRecord, Store, StoreError, StoreResult, UnixTime, User,
    UserChange, duplicate_message, groups_from, hash_from, key, new_secret, secret_from,
};
use crate::audit::Event;
use crate::throttle::Counter;
use crate::token::SessionHash;

/// Schema versions, applied in the transaction that records them. An advisory lock held by
/// that transaction makes two gateways starting at once apply them one after the other.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    login TEXT NOT NULL,
    login_key TEXT NOT NULL UNIQUE,
    email TEXT NOT NULL,
    email_key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL DEFAULT '',
    phone TEXT NOT NULL DEFAULT '',
    groups TEXT NOT NULL DEFAULT '[]',
    password_hash TEXT NOT NULL,
    dismissed BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);
CREATE TABLE sessions (
    id_hash BYTEA PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    remember_selector TEXT,
    ip TEXT NOT NULL DEFAULT '',
    user_agent TEXT NOT NULL DEFAULT ''
);
CREATE INDEX sessions_by_user ON sessions(user_id);
CREATE INDEX sessions_by_last_seen ON sessions(last_seen);
CREATE TABLE remember_tokens (
    selector TEXT PRIMARY KEY,
    validator_hash BYTEA NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL
);
CREATE INDEX remember_by_user ON remember_tokens(user_id);
CREATE TABLE revocations (
    seq BIGSERIAL PRIMARY KEY,
    user_id BIGINT,
    session_hash BYTEA,
    created_at BIGINT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    uncounted BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX revocations_by_time ON revocations(created_at);
CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    ts BIGINT NOT NULL,
    event TEXT NOT NULL,
    login TEXT NOT NULL DEFAULT '',
    ip TEXT NOT NULL DEFAULT '',
    user_agent TEXT NOT NULL DEFAULT '',
    session TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX events_by_ts ON events(ts);
CREATE TABLE throttle (
    key TEXT PRIMARY KEY,
    failures BIGINT NOT NULL,
    last_failure BIGINT NOT NULL,
    locked_until BIGINT NOT NULL,
    budget_full_at BIGINT NOT NULL
);
CREATE TABLE captchas (
    id TEXT PRIMARY KEY,
    answer_hash BYTEA NOT NULL,
    png BYTEA NOT NULL,
    expires_at BIGINT NOT NULL
);
"#,
    r#"
ALTER TABLE remember_tokens ADD COLUMN previous_hash BYTEA;
ALTER TABLE remember_tokens ADD COLUMN rotated_at BIGINT NOT NULL DEFAULT 0;
CREATE TABLE secrets (
    name TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
ALTER TABLE captchas ADD COLUMN seq BIGSERIAL;
CREATE INDEX captchas_by_expiry ON captchas(expires_at, seq);
"#,
];

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

async fn migrate(mut client: deadpool_postgres::Object) -> StoreResult<()> {
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_CLASS, &MIGRATION_LOCK],
    )
    .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS portcullis_schema (version INTEGER NOT NULL)")
        .await?;
    let done: i32 = match tx
        .query_opt("SELECT version FROM portcullis_schema", &[])
        .await?
    {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO portcullis_schema (version) VALUES (0)", &[])
                .await?;
            0
        }
    };
    let done = usize::try_from(done).unwrap_or(usize::MAX);
    if done > MIGRATIONS.len() {
        return Err(unavailable(format!(
            "the store was written by a newer Portcullis (schema {done}, this one knows {})",
            MIGRATIONS.len()
        )));
    }
    for sql in &MIGRATIONS[done..] {
        tx.batch_execute(sql).await?;
    }
    let version = MIGRATIONS.len() as i32;
    tx.execute("UPDATE portcullis_schema SET version = $1", &[&version])
        .await?;
    tx.commit().await?;
    Ok(())
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

const USER_COLUMNS: &str =
    "id, login, email, name, phone, groups, password_hash, dismissed, created_at";

fn user_from_row(row: &Row) -> StoreResult<User> {
    let groups: String = row.try_get(5)?;
    Ok(User {
        id: row.try_get(0)?,
        login: row.try_get(1)?,
        email: row.try_get(2)?,
        name: row.try_get(3)?,
        phone: row.try_get(4)?,
        groups: groups_from(&groups)?,
        password_hash: row.try_get(6)?,
        dismissed: row.try_get(7)?,
        created_at: row.try_get(8)?,
    })
}

fn counter_from_row(r: &Row) -> Counter {
    Counter {
        failures: u32::try_from(r.get::<_, i64>(0)).unwrap_or(u32::MAX),
        last_failure: r.get(1),
        locked_until: r.get(2),
        budget_full_at: r.get(3),
    }
}

fn session_from_row(hash: SessionHash, r: &Row) -> SessionRecord {
    SessionRecord {
        hash,
        user_id: r.get(0),
        created_at: r.get(1),
        last_seen: r.get(2),
        remember_selector: r.get(3),
        ip: r.get(4),
        user_agent: r.get(5),
    }
}

fn event_from_row(r: &Row) -> Event {
    Event {
        ts: r.get(0),
        event: r.get(1),
        login: r.get(2),
        ip: r.get(3),
        user_agent: r.get(4),
        session: r.get(5),
        detail: r.get(6),
    }
}

/// Revocations are published one transaction at a time, so that their sequence numbers become
/// visible in order and a gateway reading `seq > last` never skips one still being committed.
async fn publishing_revocation(tx: &deadpool_postgres::Transaction<'_>) -> StoreResult<()> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_CLASS, &REVOCATION_LOCK],
    )
    .await?;
    Ok(())
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
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

    async fn create_user(&self, user: NewUser, now: UnixTime) -> StoreResult<User> {
        self.run(move |mut c| async move {
            let tx = c.transaction().await?;
            // Logins and emails share one namespace; creations take turns so that two at once
            // cannot both find a name free.
            tx.batch_execute("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
                .await?;
            for value in [&user.email, &user.login] {
                let taken: bool = tx
                    .query_one(
                        "SELECT EXISTS(SELECT 1 FROM users WHERE login_key = $1 OR email_key = $1)",
                        &[&key(value)],
                    )
                    .await?
                    .get(0);
                if taken {
                    return Err(StoreError::Duplicate(duplicate_message(value)));
                }
            }
            let groups = serde_json::to_string(&user.groups).map_err(unavailable)?;
            let row = tx
                .query_one(
                    &format!(
                        "INSERT INTO users (login, login_key, email, email_key, name, phone, groups, password_hash, created_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {USER_COLUMNS}"
                    ),
                    &[
                        &user.login,
                        &key(&user.login),
                        &user.email,
                        &key(&user.email),
                        &user.name,
                        &user.phone,
                        &groups,
                        &user.password_hash,
                        &now,
                    ],
                )
                .await
                .map_err(|e| match e.code() {
                    Some(code) if *code == SqlState::UNIQUE_VIOLATION => {
                        StoreError::Duplicate(duplicate_message(&user.email))
                    }
                    _ => e.into(),
                })?;
            tx.commit().await?;
            user_from_row(&row)
        })
        .await
    }

    async fn find_user(&self, login_or_email: &str) -> StoreResult<Option<User>> {
        let k = key(login_or_email);
        self.run(move |c| async move {
            let row = c
                .query_opt(
                    &format!(
                        "SELECT {USER_COLUMNS} FROM users WHERE login_key = $1 OR email_key = $1
                         ORDER BY login_key = $1 DESC LIMIT 1"
                    ),
                    &[&k],
                )
                .await?;
            row.as_ref().map(user_from_row).transpose()
        })
        .await
    }

    async fn get_user(&self, id: i64) -> StoreResult<Option<User>> {
        self.run(move |c| async move {
            let row = c
                .query_opt(
                    &format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"),
                    &[&id],
                )
                .await?;
            row.as_ref().map(user_from_row).transpose()
        })
        .await
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.run(|c| async move {
            let rows = c
                .query(
                    // Byte order, as SQLite sorts, whatever the database's collation.
                    &format!("SELECT {USER_COLUMNS} FROM users ORDER BY login_key COLLATE \"C\""),
                    &[],
                )
                .await?;
            rows.iter().map(user_from_row).collect()
        })
        .await
    }

    async fn set_password_hash(&self, user_id: i64, hash: &str) -> StoreResult<()> {
        let hash = hash.to_string();
        self.run(move |c| async move {
            c.execute(
                "UPDATE users SET password_hash = $1 WHERE id = $2",
                &[&hash, &user_id],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn set_dismissed(&self, user_id: i64, dismissed: bool) -> StoreResult<()> {
        self.run(move |c| async move {
            c.execute(
                "UPDATE users SET dismissed = $1 WHERE id = $2",
                &[&dismissed, &user_id],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn insert_session(&self, s: &SessionRecord) -> StoreResult<()> {
        let s = s.clone();
        self.run(move |c| async move {
            c.execute(
                "INSERT INTO sessions (id_hash, user_id, created_at, last_seen, remember_selector, ip, user_agent)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id_hash) DO NOTHING",
                &[
                    &&s.hash.0[..],
                    &s.user_id,
                    &s.created_at,
                    &s.last_seen,
                    &s.remember_selector,
                    &s.ip,
                    &s.user_agent,
                ],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn get_session(&self, hash: &SessionHash) -> StoreResult<Option<SessionRecord>> {
        let hash = *hash;
        self.run(move |c| async move {
            let row = c
                .query_opt(
                    "SELECT user_id, created_at, last_seen, remember_selector, ip, user_agent
                     FROM sessions WHERE id_hash = $1",
                    &[&&hash.0[..]],
                )
                .await?;
            Ok(row.map(|r| session_from_row(hash, &r)))
        })
        .await
    }

    async fn touch_session(&self, hash: &SessionHash, last_seen: UnixTime) -> StoreResult<bool> {
        let hash = *hash;
        self.run(move |c| async move {
            let n = c
                .execute(
                    "UPDATE sessions s SET last_seen = GREATEST(s.last_seen, $1)
                     FROM users u
                     WHERE s.id_hash = $2 AND u.id = s.user_id AND NOT u.dismissed",
                    &[&last_seen, &&hash.0[..]],
                )
                .await?;
            Ok(n == 1)
        })
        .await
    }

    async fn end_session(&self, hash: &SessionHash, now: UnixTime) -> StoreResult<bool> {
        let hash = *hash;
        self.run(move |mut c| async move {
            let tx = c.transaction().await?;
            publishing_revocation(&tx).await?;
            let n = tx
                .execute("DELETE FROM sessions WHERE id_hash = $1", &[&&hash.0[..]])
                .await?;
            tx.execute(
                "INSERT INTO revocations (session_hash, created_at) VALUES ($1, $2)",
                &[&&hash.0[..], &now],
            )
            .await?;
            tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL]).await?;
            tx.commit().await?;
            Ok(n > 0)
        })
        .await
    }

    async fn end_user_sessions(
        &self,
        user_id: i64,
        now: UnixTime,
        reason: &str,
        change: UserChange,
    ) -> StoreResult<u64> {
        let reason = reason.to_string();
        self.run(move |mut c| async move {
            let tx = c.transaction().await?;
            match change {
                UserChange::Nothing => 0,
                UserChange::Password(hash) => {
                    tx.execute(
                        "UPDATE users SET password_hash = $1 WHERE id = $2",
                        &[&hash, &user_id],
                    )
                    .await?
                }
                UserChange::Dismissed => {
                    tx.execute("UPDATE users SET dismissed = TRUE WHERE id = $1", &[&user_id])
                        .await?
                }
            };
            publishing_revocation(&tx).await?;
            let n = tx
                .execute("DELETE FROM sessions WHERE user_id = $1", &[&user_id])
                .await?;
            tx.execute("DELETE FROM remember_tokens WHERE user_id = $1", &[&user_id])
                .await?;
            tx.execute(
                "INSERT INTO revocations (user_id, created_at, reason, uncounted) VALUES ($1, $2, $3, $4)",
                &[&user_id, &now, &reason, &count(n)],
            )
            .await?;
            tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL]).await?;
            tx.commit().await?;
            Ok(n)
        })
        .await
    }

    async fn purge_sessions(&self, b: SessionBounds) -> StoreResult<Purged> {
        self.run(move |mut c| async move {
            let tx = c.transaction().await?;
            let absolute = match b.created_before {
                Some(before) => {
                    tx.execute("DELETE FROM sessions WHERE created_at < $1", &[&before])
                        .await?
                }
                None => 0,
            };
            let idle = tx
                .execute(
                    "DELETE FROM sessions WHERE last_seen < $1",
                    &[&b.idle_before],
                )
                .await?;
            tx.commit().await?;
            Ok(Purged { idle, absolute })
        })
        .await
    }

    async fn count_sessions(&self, b: SessionBounds) -> StoreResult<u64> {
        self.run(move |c| async move {
            let n: i64 = c
                .query_one(
                    "SELECT COUNT(*) FROM sessions WHERE last_seen >= $1 AND created_at >= $2",
                    &[&b.idle_before, &b.created_before.unwrap_or(i64::MIN)],
                )
                .await?
                .get(0);
            Ok(n.max(0) as u64)
        })
        .await
    }

    async fn insert_remember(&self, t: &RememberRecord) -> StoreResult<()> {
        let t = t.clone();
        self.run(move |c| async move {
            c.execute(
                "INSERT INTO remember_tokens (selector, validator_hash, user_id, expires_at) VALUES ($1, $2, $3, $4)",
                &[&t.selector, &t.validator_hash, &t.user_id, &t.expires_at],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn get_remember(&self, selector: &str) -> StoreResult<Option<RememberRecord>> {
        let selector = selector.to_string();
        self.run(move |c| async move {
            let row = c
                .query_opt(
                    "SELECT validator_hash, user_id, expires_at, previous_hash, rotated_at
                     FROM remember_tokens WHERE selector = $1",
                    &[&selector],
                )
                .await?;
            Ok(row.map(|r| RememberRecord {
                selector,
                validator_hash: r.get(0),
                user_id: r.get(1),
                expires_at: r.get(2),
                previous_hash: r.get(3),
                rotated_at: r.get(4),
            }))
        })
        .await
    }

    async fn rotate_remember(
        &self,
        selector: &str,
        old: &[u8],
        new: &[u8],
        now: UnixTime,
    ) -> StoreResult<bool> {
        let (selector, old, new) = (selector.to_string(), old.to_vec(), new.to_vec());
        self.run(move |c| async move {
            let n = c
                .execute(
                    "UPDATE remember_tokens SET validator_hash = $1, previous_hash = $3, rotated_at = $4
                     WHERE selector = $2 AND validator_hash = $3",
                    &[&new, &selector, &old, &now],
                )
                .await?;
            Ok(n == 1)
        })
        .await
    }

    async fn delete_remember(&self, selector: &str) -> StoreResult<()> {
        let selector = selector.to_string();
        self.run(move |c| async move {
            c.execute(
                "DELETE FROM remember_tokens WHERE selector = $1",
                &[&selector],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn revocations_since(&self, seq: i64) -> StoreResult<Vec<Revocation>> {
        self.run(move |c| async move {
            let rows = c
                .query(
                    "SELECT seq, user_id, session_hash, reason, uncounted FROM revocations
                     WHERE seq > $1 ORDER BY seq",
                    &[&seq],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    let what = match (r.get::<_, Option<i64>>(1), r.get::<_, Option<Vec<u8>>>(2)) {
                        (Some(u), _) => Revoked::User(u),
                        (None, Some(h)) => Revoked::Session(hash_from(h)?),
                        (None, None) => {
                            return Err(StoreError::Corrupt("an empty revocation".into()));
                        }
                    };
                    Ok(Revocation {
                        seq: r.get(0),
                        what,
                        reason: r.get(3),
                        uncounted: r.get::<_, i64>(4).max(0) as u64,
                    })
                })
                .collect()
        })
        .await
    }

    async fn claim_ended(&self, seq: i64) -> StoreResult<u64> {
        self.run(move |c| async move {
            let row = c
                .query_opt(
                    "UPDATE revocations r SET uncounted = 0
                     FROM (SELECT seq, uncounted FROM revocations WHERE seq = $1 FOR UPDATE) old
                     WHERE r.seq = old.seq AND old.uncounted > 0
                     RETURNING old.uncounted",
                    &[&seq],
                )
                .await?;
            Ok(row.map_or(0, |r| r.get::<_, i64>(0).max(0) as u64))
        })
        .await
    }

    async fn purge_revocations(&self, before: UnixTime) -> StoreResult<u64> {
        self.run(move |c| async move {
            Ok(
                c.execute("DELETE FROM revocations WHERE created_at < $1", &[&before])
                    .await?,
            )
        })
        .await
    }

    async fn last_revocation(&self) -> StoreResult<i64> {
        self.run(|c| async move {
            Ok(
                c.query_one("SELECT COALESCE(MAX(seq), 0) FROM revocations", &[])
                    .await?
                    .get(0),
            )
        })
        .await
    }

    async fn counter(&self, key: &str) -> StoreResult<Option<Counter>> {
        let key = key.to_string();
        self.run(move |c| async move {
            let row = c
                .query_opt(
                    "SELECT failures, last_failure, locked_until, budget_full_at FROM throttle WHERE key = $1",
                    &[&key],
                )
                .await?;
            Ok(row.as_ref().map(counter_from_row))
        })
        .await
    }

    async fn update_counter(
        &self,
        key: &str,
        update: CounterUpdate,
    ) -> StoreResult<Option<Counter>> {
        let key = key.to_string();
        self.run(move |mut c| async move {
            let tx = c.transaction().await?;
            // One key at a time across every gateway, whether or not its row exists yet.
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                &[&LOCK_CLASS, &key],
            )
            .await?;
            let before = tx
                .query_opt(
                    "SELECT failures, last_failure, locked_until, budget_full_at FROM throttle WHERE key = $1",
                    &[&key],
                )
                .await?
                .as_ref()
                .map(counter_from_row);
            let after = update(before);
            if after == before {
                return Ok(before);
            }
            match after {
                Some(n) => {
                    tx.execute(
                        "INSERT INTO throttle (key, failures, last_failure, locked_until, budget_full_at)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (key) DO UPDATE SET failures = $2, last_failure = $3,
                            locked_until = $4, budget_full_at = $5",
                        &[
                            &key,
                            &i64::from(n.failures),
                            &n.last_failure,
                            &n.locked_until,
                            &n.budget_full_at,
                        ],
                    )
                    .await?
                }
                None => tx.execute("DELETE FROM throttle WHERE key = $1", &[&key]).await?,
            };
            tx.commit().await?;
            Ok(before)
        })
        .await
    }

    async fn purge_counters(&self, failed_before: i64, now: i64) -> StoreResult<u64> {
        self.run(move |c| async move {
            Ok(c.execute(
                "DELETE FROM throttle
                 WHERE last_failure < $1 AND locked_until <= $2 AND budget_full_at <= $2",
                &[&failed_before, &now],
            )
            .await?)
        })
        .await
    }

    async fn insert_captcha(
        &self,
        ch: &CaptchaRecord,
        limit: u32,
        now: UnixTime,
    ) -> StoreResult<u64> {
        let ch = ch.clone();
        let limit = i64::from(limit);
        self.run(move |mut c| async move {
            let tx = c.transaction().await?;
            // One insertion at a time across the cluster, so the count stays exact.
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, $2)",
                &[&LOCK_CLASS, &CAPTCHA_LOCK],
            )
            .await?;
            tx.execute("DELETE FROM captchas WHERE expires_at <= $1", &[&now])
                .await?;
            let live: i64 = tx
                .query_one("SELECT COUNT(*) FROM captchas", &[])
                .await?
                .try_get(0)?;
            let excess = (live - limit + 1).max(0);
            let evicted = tx
                .execute(
                    "DELETE FROM captchas WHERE id IN
                     (SELECT id FROM captchas ORDER BY expires_at, seq LIMIT $1)",
                    &[&excess],
                )
                .await?;
            tx.execute(
                "INSERT INTO captchas (id, answer_hash, png, expires_at) VALUES ($1, $2, $3, $4)",
                &[&ch.id, &ch.answer_hash, &ch.png, &ch.expires_at],
            )
            .await?;
            tx.commit().await?;
            Ok(evicted)
        })
        .await
    }

    async fn secret(&self, name: &str) -> StoreResult<[u8; 32]> {
        let name = name.to_string();
        self.run(move |c| async move {
            let offered = new_secret().to_vec();
            c.execute(
                "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &offered],
            )
            .await?;
            let row = c
                .query_one("SELECT value FROM secrets WHERE name = $1", &[&name])
                .await?;
            secret_from(row.try_get(0)?)
        })
        .await
    }

    async fn captcha_image(&self, id: &str, now: UnixTime) -> StoreResult<Option<Vec<u8>>> {
        let id = id.to_string();
        self.run(move |c| async move {
            let row = c
                .query_opt(
                    "SELECT png FROM captchas WHERE id = $1 AND expires_at > $2",
                    &[&id, &now],
                )
                .await?;
            Ok(row.map(|r| r.get(0)))
        })
        .await
    }

    async fn take_captcha(&self, id: &str) -> StoreResult<Option<CaptchaRecord>> {
        let id = id.to_string();
        self.run(move |c| async move {
            let row = c
                .query_opt(
                    "DELETE FROM captchas WHERE id = $1 RETURNING answer_hash, png, expires_at",
                    &[&id],
                )
                .await?;
            Ok(row.map(|r| CaptchaRecord {
                id,
                answer_hash: r.get(0),
                png: r.get(1),
                expires_at: r.get(2),
            }))
        })
        .await
    }

    async fn purge_captchas(&self, now: UnixTime) -> StoreResult<u64> {
        self.run(move |c| async move {
            Ok(
                c.execute("DELETE FROM captchas WHERE expires_at <= $1", &[&now])
                    .await?,
            )
        })
        .await
    }

    async fn record_events(&self, events: &[Event]) -> StoreResult<()> {
        let events = events.to_vec();
        self.run(move |mut c| async move {
            let tx = c.transaction().await?;
            let insert = tx
                .prepare(
                    "INSERT INTO events (ts, event, login, ip, user_agent, session, detail)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .await?;
            for e in &events {
                tx.execute(
                    &insert,
                    &[
                        &e.ts,
                        &e.event,
                        &e.login,
                        &e.ip,
                        &e.user_agent,
                        &e.session,
                        &e.detail,
                    ],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn purge_events(&self, before: UnixTime, limit: u32) -> StoreResult<u64> {
        self.run(move |c| async move {
            Ok(c.execute(
                "DELETE FROM events WHERE id IN
                   (SELECT id FROM events WHERE ts < $1 ORDER BY ts LIMIT $2)",
                &[&before, &i64::from(limit)],
            )
            .await?)
        })
        .await
    }

    async fn events(&self, filter: &EventFilter) -> StoreResult<Vec<Event>> {
        let f = filter.clone();
        self.run(move |c| async move {
            let limit = f.limit.map(i64::from);
            let rows = c
                .query(
                    "SELECT ts, event, login, ip, user_agent, session, detail FROM events
                     WHERE ($1::TEXT IS NULL OR lower(login) = lower($1))
                       AND ($2::TEXT IS NULL OR event = $2)
                       AND ($3::BIGINT IS NULL OR ts >= $3)
                     ORDER BY ts DESC, id DESC LIMIT $4",
                    &[&f.login, &f.event, &f.since, &limit],
                )
                .await?;
            Ok(rows.iter().map(event_from_row).collect())
        })
        .await
    }

    fn changes(&self) -> Option<watch::Receiver<u64>> {
        Some(self.changes.clone())
    }
}
