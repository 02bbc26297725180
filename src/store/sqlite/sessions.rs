//! Sessions and the revocation feed every gateway reads. The SQLite side of `SessionStore`.

use super::*;

/// The schema steps of this aggregate, in order.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
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
CREATE TABLE revocations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER,
    session_hash BLOB,
    created_at INTEGER NOT NULL
);
"#,
    r#"
ALTER TABLE revocations ADD COLUMN reason TEXT NOT NULL DEFAULT '';
ALTER TABLE revocations ADD COLUMN uncounted INTEGER NOT NULL DEFAULT 0;
CREATE INDEX revocations_by_time ON revocations(created_at);
"#,
    // The purge of idle sessions and the live-sessions count read a range of this index, not
    // the whole table (a million sessions, measured: the purge's range 0.095 s -> 0.001 s, the
    // count of the live 0.12 s -> 0.01-0.08 s; with created_at in it, the count never touches
    // the table, which made a last_seen-only index slower than the scan).
    r#"
CREATE INDEX sessions_by_last_seen ON sessions(last_seen, created_at);
"#,
];

#[async_trait]
impl SessionStore for SqliteStore {
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
    async fn end_users_sessions(
        &self,
        user_ids: &[i64],
        now: UnixTime,
        reason: &str,
        change: UserChange,
    ) -> StoreResult<Vec<u64>> {
        let (user_ids, reason) = (user_ids.to_vec(), reason.to_string());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut ended = Vec::with_capacity(user_ids.len());
            for user_id in user_ids {
                match &change {
                    UserChange::Nothing => 0,
                    UserChange::Password(hash) => tx.execute(
                        "UPDATE users SET password_hash = ?1 WHERE id = ?2",
                        params![hash, user_id],
                    )?,
                    UserChange::Dismissed => {
                        tx.execute("UPDATE users SET dismissed = 1 WHERE id = ?1", [user_id])?
                    }
                    UserChange::SecondFactorReset => {
                        tx.execute("DELETE FROM backup_codes WHERE user_id = ?1", [user_id])?;
                        tx.execute("DELETE FROM second_factors WHERE user_id = ?1", [user_id])?
                    }
                };
                let n = tx.execute("DELETE FROM sessions WHERE user_id = ?1", [user_id])?;
                tx.execute("DELETE FROM remember_tokens WHERE user_id = ?1", [user_id])?;
                // Pending links and codes (a reset, an invitation, a new address) end with them.
                tx.execute(
                    "DELETE FROM recovery WHERE user_id = ?1 AND used_at IS NULL",
                    [user_id],
                )?;
                tx.execute(
                    "INSERT INTO revocations (user_id, created_at, reason, uncounted) VALUES (?1, ?2, ?3, ?4)",
                    params![user_id, now, reason, n as i64],
                )?;
                ended.push(n as u64);
            }
            tx.commit()?;
            Ok(ended)
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
    async fn user_sessions(
        &self,
        user_id: i64,
        b: SessionBounds,
    ) -> StoreResult<Vec<SessionRecord>> {
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT id_hash, created_at, last_seen, remember_selector, ip, user_agent
                 FROM sessions WHERE user_id = ?1 AND last_seen >= ?2 AND created_at >= ?3
                 ORDER BY last_seen DESC, created_at DESC",
            )?;
            let rows = stmt
                .query_map(
                    params![user_id, b.idle_before, b.created_before.unwrap_or(i64::MIN)],
                    |r| {
                        Ok((
                            r.get::<_, Vec<u8>>(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                        ))
                    },
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(
                    |(hash, created_at, last_seen, remember_selector, ip, user_agent)| {
                        Ok(SessionRecord {
                            hash: hash_from(hash)?,
                            user_id,
                            created_at,
                            last_seen,
                            remember_selector,
                            ip,
                            user_agent,
                        })
                    },
                )
                .collect()
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
    async fn claim_ended(&self, seqs: &[i64]) -> StoreResult<Vec<u64>> {
        let seqs = seqs.to_vec();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut claimed = Vec::with_capacity(seqs.len());
            for seq in seqs {
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
                claimed.push(n.max(0) as u64);
            }
            tx.commit()?;
            Ok(claimed)
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
}
