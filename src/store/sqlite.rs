//! The embedded store: one SQLite file in WAL mode, so the CLI can change users while a gateway
//! runs. Calls run on tokio's blocking pool, never on the proxy's event loop.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{
    CaptchaRecord, CounterUpdate, EventFilter, NewUser, Purged, RememberRecord, Revocation,
    Revoked, SessionBounds, SessionRecord, Store, StoreError, StoreResult, UnixTime, User,
    UserChange, duplicate_message, groups_from, hash_from, key, new_secret, secret_from,
};
use crate::audit::Event;
use crate::throttle::Counter;
use crate::token::SessionHash;

/// Schema versions, applied in order; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    login TEXT NOT NULL,
    login_key TEXT NOT NULL UNIQUE,
    email TEXT NOT NULL,
    email_key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL DEFAULT '',
    phone TEXT NOT NULL DEFAULT '',
    groups TEXT NOT NULL DEFAULT '[]',
    password_hash TEXT NOT NULL,
    dismissed INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE TABLE sessions (
    id_hash BLOB PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    remember_selector TEXT,
    ip TEXT NOT NULL DEFAULT '',
    user_agent TEXT NOT NULL DEFAULT ''
);
CREATE INDEX sessions_by_user ON sessions(user_id);
CREATE TABLE remember_tokens (
    selector TEXT PRIMARY KEY,
    validator_hash BLOB NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL
);
CREATE INDEX remember_by_user ON remember_tokens(user_id);
CREATE TABLE revocations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER,
    session_hash BLOB,
    created_at INTEGER NOT NULL
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    event TEXT NOT NULL,
    login TEXT NOT NULL DEFAULT '',
    ip TEXT NOT NULL DEFAULT '',
    user_agent TEXT NOT NULL DEFAULT '',
    session TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX events_by_ts ON events(ts);
"#,
    r#"
CREATE TABLE throttle (
    key TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    last_failure INTEGER NOT NULL,
    locked_until INTEGER NOT NULL,
    budget_full_at INTEGER NOT NULL
);
CREATE TABLE captchas (
    id TEXT PRIMARY KEY,
    answer_hash BLOB NOT NULL,
    png BLOB NOT NULL,
    expires_at INTEGER NOT NULL
);
"#,
    r#"
ALTER TABLE revocations ADD COLUMN reason TEXT NOT NULL DEFAULT '';
ALTER TABLE revocations ADD COLUMN uncounted INTEGER NOT NULL DEFAULT 0;
CREATE INDEX revocations_by_time ON revocations(created_at);
"#,
    r#"
ALTER TABLE remember_tokens ADD COLUMN previous_hash BLOB;
ALTER TABLE remember_tokens ADD COLUMN rotated_at INTEGER NOT NULL DEFAULT 0;
CREATE TABLE secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE INDEX captchas_by_expiry ON captchas(expires_at);
"#,
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
            let mut conn = Connection::open(&path)
                .map_err(|e| unavailable(format!("cannot open {}: {e}", path.display())))?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            migrate(&mut conn)?;
            Ok(conn)
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

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let done: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let done = usize::try_from(done).unwrap_or(usize::MAX);
    if done > MIGRATIONS.len() {
        return Err(unavailable(format!(
            "the store was written by a newer Portcullis (schema {done}, this one knows {})",
            MIGRATIONS.len()
        )));
    }
    for sql in &MIGRATIONS[done..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
    tx.commit()?;
    Ok(())
}

const USER_COLUMNS: &str =
    "id, login, email, name, phone, groups, password_hash, dismissed, created_at";

fn user_from_row(row: &Row) -> rusqlite::Result<User> {
    let groups: String = row.get(5)?;
    Ok(User {
        id: row.get(0)?,
        login: row.get(1)?,
        email: row.get(2)?,
        name: row.get(3)?,
        phone: row.get(4)?,
        groups: groups_from(&groups).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, Box::new(e))
        })?,
        password_hash: row.get(6)?,
        dismissed: row.get(7)?,
        created_at: row.get(8)?,
    })
}

fn counter_from_row(r: &Row) -> rusqlite::Result<Counter> {
    Ok(Counter {
        failures: r.get(0)?,
        last_failure: r.get(1)?,
        locked_until: r.get(2)?,
        budget_full_at: r.get(3)?,
    })
}

fn read_counter(c: &Connection, key: &str) -> rusqlite::Result<Option<Counter>> {
    c.query_row(
        "SELECT failures, last_failure, locked_until, budget_full_at FROM throttle WHERE key = ?1",
        [key],
        counter_from_row,
    )
    .optional()
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

    async fn create_user(&self, user: NewUser, now: UnixTime) -> StoreResult<User> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            // Logins and emails share one namespace: either may be typed at sign-in.
            for value in [&user.email, &user.login] {
                let taken: bool = tx.query_row(
                    "SELECT EXISTS(SELECT 1 FROM users WHERE login_key = ?1 OR email_key = ?1)",
                    [key(value)],
                    |r| r.get(0),
                )?;
                if taken {
                    return Err(StoreError::Duplicate(duplicate_message(value)));
                }
            }
            let groups = serde_json::to_string(&user.groups).map_err(unavailable)?;
            tx.execute(
                "INSERT INTO users (login, login_key, email, email_key, name, phone, groups, password_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    user.login,
                    key(&user.login),
                    user.email,
                    key(&user.email),
                    user.name,
                    user.phone,
                    groups,
                    user.password_hash,
                    now
                ],
            )?;
            let id = tx.last_insert_rowid();
            let created = tx.query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
                [id],
                user_from_row,
            )?;
            tx.commit()?;
            Ok(created)
        })
        .await
    }

    async fn find_user(&self, login_or_email: &str) -> StoreResult<Option<User>> {
        let k = key(login_or_email);
        self.with(move |c| {
            Ok(c.query_row(
                &format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE login_key = ?1 OR email_key = ?1 ORDER BY login_key = ?1 DESC LIMIT 1"
                ),
                [k],
                user_from_row,
            )
            .optional()?)
        })
        .await
    }

    async fn get_user(&self, id: i64) -> StoreResult<Option<User>> {
        self.with(move |c| {
            Ok(c.query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
                [id],
                user_from_row,
            )
            .optional()?)
        })
        .await
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {USER_COLUMNS} FROM users ORDER BY login_key"
            ))?;
            let users = stmt
                .query_map([], user_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(users)
        })
        .await
    }

    async fn set_password_hash(&self, user_id: i64, hash: &str) -> StoreResult<()> {
        let hash = hash.to_string();
        self.with(move |c| {
            c.execute(
                "UPDATE users SET password_hash = ?1 WHERE id = ?2",
                params![hash, user_id],
            )?;
            Ok(())
        })
        .await
    }

    async fn set_dismissed(&self, user_id: i64, dismissed: bool) -> StoreResult<()> {
        self.with(move |c| {
            c.execute(
                "UPDATE users SET dismissed = ?1 WHERE id = ?2",
                params![dismissed, user_id],
            )?;
            Ok(())
        })
        .await
    }

    async fn insert_session(&self, s: &SessionRecord) -> StoreResult<()> {
        let s = s.clone();
        self.with(move |c| {
            c.execute(
                "INSERT INTO sessions (id_hash, user_id, created_at, last_seen, remember_selector, ip, user_agent)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id_hash) DO NOTHING",
                params![
                    &s.hash.0[..],
                    s.user_id,
                    s.created_at,
                    s.last_seen,
                    s.remember_selector,
                    s.ip,
                    s.user_agent
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn get_session(&self, hash: &SessionHash) -> StoreResult<Option<SessionRecord>> {
        let hash = *hash;
        self.with(move |c| {
            let row = c
                .query_row(
                    "SELECT user_id, created_at, last_seen, remember_selector, ip, user_agent
                     FROM sessions WHERE id_hash = ?1",
                    [&hash.0[..]],
                    |r| {
                        Ok(SessionRecord {
                            hash,
                            user_id: r.get(0)?,
                            created_at: r.get(1)?,
                            last_seen: r.get(2)?,
                            remember_selector: r.get(3)?,
                            ip: r.get(4)?,
                            user_agent: r.get(5)?,
                        })
                    },
                )
                .optional()?;
            Ok(row)
        })
        .await
    }

    async fn touch_session(&self, hash: &SessionHash, last_seen: UnixTime) -> StoreResult<bool> {
        let hash = *hash;
        self.with(move |c| {
            let n = c.execute(
                "UPDATE sessions SET last_seen = max(last_seen, ?1)
                 WHERE id_hash = ?2 AND user_id IN (SELECT id FROM users WHERE NOT dismissed)",
                params![last_seen, &hash.0[..]],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn end_session(&self, hash: &SessionHash, now: UnixTime) -> StoreResult<bool> {
        let hash = *hash;
        self.with(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute("DELETE FROM sessions WHERE id_hash = ?1", [&hash.0[..]])?;
            tx.execute(
                "INSERT INTO revocations (session_hash, created_at) VALUES (?1, ?2)",
                params![&hash.0[..], now],
            )?;
            tx.commit()?;
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
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            match change {
                UserChange::Nothing => 0,
                UserChange::Password(hash) => tx.execute(
                    "UPDATE users SET password_hash = ?1 WHERE id = ?2",
                    params![hash, user_id],
                )?,
                UserChange::Dismissed => {
                    tx.execute("UPDATE users SET dismissed = 1 WHERE id = ?1", [user_id])?
                }
            };
            let n = tx.execute("DELETE FROM sessions WHERE user_id = ?1", [user_id])?;
            tx.execute("DELETE FROM remember_tokens WHERE user_id = ?1", [user_id])?;
            tx.execute(
                "INSERT INTO revocations (user_id, created_at, reason, uncounted) VALUES (?1, ?2, ?3, ?4)",
                params![user_id, now, reason, n as i64],
            )?;
            tx.commit()?;
            Ok(n as u64)
        })
        .await
    }

    async fn purge_sessions(&self, b: SessionBounds) -> StoreResult<Purged> {
        self.with(move |c| {
            let tx = c.transaction()?;
            let absolute = match b.created_before {
                Some(before) => {
                    tx.execute("DELETE FROM sessions WHERE created_at < ?1", [before])? as u64
                }
                None => 0,
            };
            let idle =
                tx.execute("DELETE FROM sessions WHERE last_seen < ?1", [b.idle_before])? as u64;
            tx.commit()?;
            Ok(Purged { idle, absolute })
        })
        .await
    }

    async fn count_sessions(&self, b: SessionBounds) -> StoreResult<u64> {
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM sessions WHERE last_seen >= ?1 AND created_at >= ?2",
                params![b.idle_before, b.created_before.unwrap_or(i64::MIN)],
                |r| r.get::<_, i64>(0),
            )? as u64)
        })
        .await
    }

    async fn insert_remember(&self, t: &RememberRecord) -> StoreResult<()> {
        let t = t.clone();
        self.with(move |c| {
            c.execute(
                "INSERT INTO remember_tokens (selector, validator_hash, user_id, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![t.selector, t.validator_hash, t.user_id, t.expires_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn get_remember(&self, selector: &str) -> StoreResult<Option<RememberRecord>> {
        let selector = selector.to_string();
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT validator_hash, user_id, expires_at, previous_hash, rotated_at
                 FROM remember_tokens WHERE selector = ?1",
                [&selector],
                |r| {
                    Ok(RememberRecord {
                        selector: selector.clone(),
                        validator_hash: r.get(0)?,
                        user_id: r.get(1)?,
                        expires_at: r.get(2)?,
                        previous_hash: r.get(3)?,
                        rotated_at: r.get(4)?,
                    })
                },
            )
            .optional()?)
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
        self.with(move |c| {
            let n = c.execute(
                "UPDATE remember_tokens SET validator_hash = ?1, previous_hash = ?3, rotated_at = ?4
                 WHERE selector = ?2 AND validator_hash = ?3",
                params![new, selector, old, now],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn delete_remember(&self, selector: &str) -> StoreResult<()> {
        let selector = selector.to_string();
        self.with(move |c| {
            c.execute(
                "DELETE FROM remember_tokens WHERE selector = ?1",
                [selector],
            )?;
            Ok(())
        })
        .await
    }

    async fn revocations_since(&self, seq: i64) -> StoreResult<Vec<Revocation>> {
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT seq, user_id, session_hash, reason, uncounted FROM revocations
                 WHERE seq > ?1 ORDER BY seq",
            )?;
            let rows = stmt
                .query_map([seq], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, Option<Vec<u8>>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(seq, user, hash, reason, uncounted)| {
                    let what = match (user, hash) {
                        (Some(u), _) => Revoked::User(u),
                        (None, Some(h)) => Revoked::Session(hash_from(h)?),
                        (None, None) => {
                            return Err(StoreError::Corrupt("an empty revocation".into()));
                        }
                    };
                    Ok(Revocation {
                        seq,
                        what,
                        reason,
                        uncounted: uncounted.max(0) as u64,
                    })
                })
                .collect()
        })
        .await
    }

    async fn claim_ended(&self, seq: i64) -> StoreResult<u64> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n: i64 = tx
                .query_row(
                    "SELECT uncounted FROM revocations WHERE seq = ?1",
                    [seq],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0);
            if n > 0 {
                tx.execute("UPDATE revocations SET uncounted = 0 WHERE seq = ?1", [seq])?;
            }
            tx.commit()?;
            Ok(n.max(0) as u64)
        })
        .await
    }

    async fn purge_revocations(&self, before: UnixTime) -> StoreResult<u64> {
        self.with(move |c| {
            Ok(c.execute("DELETE FROM revocations WHERE created_at < ?1", [before])? as u64)
        })
        .await
    }

    async fn last_revocation(&self) -> StoreResult<i64> {
        self.with(|c| {
            Ok(
                c.query_row("SELECT COALESCE(MAX(seq), 0) FROM revocations", [], |r| {
                    r.get(0)
                })?,
            )
        })
        .await
    }

    async fn counter(&self, key: &str) -> StoreResult<Option<Counter>> {
        let key = key.to_string();
        self.with(move |c| Ok(read_counter(c, &key)?)).await
    }

    async fn update_counter(
        &self,
        key: &str,
        update: CounterUpdate,
    ) -> StoreResult<Option<Counter>> {
        let key = key.to_string();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let before = read_counter(&tx, &key)?;
            let after = update(before);
            if after == before {
                // Refused attempts change nothing: a flood of them costs no writes.
                return Ok(before);
            }
            match after {
                Some(n) => tx.execute(
                    "INSERT INTO throttle (key, failures, last_failure, locked_until, budget_full_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(key) DO UPDATE SET failures = ?2, last_failure = ?3,
                        locked_until = ?4, budget_full_at = ?5",
                    params![key, n.failures, n.last_failure, n.locked_until, n.budget_full_at],
                )?,
                None => tx.execute("DELETE FROM throttle WHERE key = ?1", [&key])?,
            };
            tx.commit()?;
            Ok(before)
        })
        .await
    }

    async fn purge_counters(&self, failed_before: i64, now: i64) -> StoreResult<u64> {
        self.with(move |c| {
            let n = c.execute(
                "DELETE FROM throttle
                 WHERE last_failure < ?1 AND locked_until <= ?2 AND budget_full_at <= ?2",
                params![failed_before, now],
            )?;
            Ok(n as u64)
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
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM captchas WHERE expires_at <= ?1", [now])?;
            let live: i64 = tx.query_row("SELECT COUNT(*) FROM captchas", [], |r| r.get(0))?;
            let excess = (live - i64::from(limit) + 1).max(0);
            let evicted = tx.execute(
                "DELETE FROM captchas WHERE id IN
                 (SELECT id FROM captchas ORDER BY expires_at, rowid LIMIT ?1)",
                [excess],
            )?;
            tx.execute(
                "INSERT INTO captchas (id, answer_hash, png, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![ch.id, ch.answer_hash, ch.png, ch.expires_at],
            )?;
            tx.commit()?;
            Ok(evicted as u64)
        })
        .await
    }

    async fn secret(&self, name: &str) -> StoreResult<[u8; 32]> {
        let name = name.to_string();
        self.with(move |c| {
            c.execute(
                "INSERT INTO secrets (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
                params![name, &new_secret()[..]],
            )?;
            let value: Vec<u8> =
                c.query_row("SELECT value FROM secrets WHERE name = ?1", [&name], |r| {
                    r.get(0)
                })?;
            secret_from(value)
        })
        .await
    }

    async fn captcha_image(&self, id: &str, now: UnixTime) -> StoreResult<Option<Vec<u8>>> {
        let id = id.to_string();
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT png FROM captchas WHERE id = ?1 AND expires_at > ?2",
                params![id, now],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn take_captcha(&self, id: &str) -> StoreResult<Option<CaptchaRecord>> {
        let id = id.to_string();
        self.with(move |c| {
            Ok(c.query_row(
                "DELETE FROM captchas WHERE id = ?1 RETURNING answer_hash, png, expires_at",
                [&id],
                |r| {
                    Ok(CaptchaRecord {
                        id: id.clone(),
                        answer_hash: r.get(0)?,
                        png: r.get(1)?,
                        expires_at: r.get(2)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    async fn purge_captchas(&self, now: UnixTime) -> StoreResult<u64> {
        self.with(move |c| {
            Ok(c.execute("DELETE FROM captchas WHERE expires_at <= ?1", [now])? as u64)
        })
        .await
    }

    async fn record_events(&self, events: &[Event]) -> StoreResult<()> {
        let events = events.to_vec();
        self.with(move |c| {
            let tx = c.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO events (ts, event, login, ip, user_agent, session, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for e in &events {
                    insert.execute(params![
                        e.ts,
                        e.event,
                        e.login,
                        e.ip,
                        e.user_agent,
                        e.session,
                        e.detail
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn purge_events(&self, before: UnixTime, limit: u32) -> StoreResult<u64> {
        self.with(move |c| {
            Ok(c.execute(
                "DELETE FROM events WHERE id IN
                   (SELECT id FROM events WHERE ts < ?1 ORDER BY ts LIMIT ?2)",
                params![before, limit],
            )? as u64)
        })
        .await
    }

    async fn events(&self, filter: &EventFilter) -> StoreResult<Vec<Event>> {
        let f = filter.clone();
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT ts, event, login, ip, user_agent, session, detail FROM events
                 WHERE (?1 IS NULL OR lower(login) = lower(?1))
                   AND (?2 IS NULL OR event = ?2)
                   AND (?3 IS NULL OR ts >= ?3)
                 ORDER BY ts DESC, id DESC LIMIT ?4",
            )?;
            let rows = stmt
                .query_map(
                    params![f.login, f.event, f.since, f.limit.unwrap_or(u32::MAX)],
                    |r| {
                        Ok(Event {
                            ts: r.get(0)?,
                            event: r.get(1)?,
                            login: r.get(2)?,
                            ip: r.get(3)?,
                            user_agent: r.get(4)?,
                            session: r.get(5)?,
                            detail: r.get(6)?,
                        })
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }
}
