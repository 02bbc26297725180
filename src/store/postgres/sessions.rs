//! Sessions and the revocation feed every gateway reads. The PostgreSQL side of `SessionStore`.

use super::*;

/// The schema steps of this aggregate, in order.
pub(super) const MIGRATIONS: &[&str] = &[r#"
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
CREATE TABLE revocations (
    seq BIGSERIAL PRIMARY KEY,
    user_id BIGINT,
    session_hash BYTEA,
    created_at BIGINT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    uncounted BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX revocations_by_time ON revocations(created_at);
"#];

fn session_from_row(hash: SessionHash, r: &Row) -> StoreResult<SessionRecord> {
    Ok(SessionRecord {
        hash,
        user_id: col(r, 0)?,
        created_at: col(r, 1)?,
        last_seen: col(r, 2)?,
        remember_selector: col(r, 3)?,
        ip: col(r, 4)?,
        user_agent: col(r, 5)?,
    })
}

/// Revocations are published one transaction at a time, so that their sequence numbers become
/// visible in order and a gateway reading `seq > last` never skips one still being committed.
pub(super) async fn publishing_revocation(
    tx: &deadpool_postgres::Transaction<'_>,
) -> StoreResult<()> {
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
impl SessionStore for PostgresStore {
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
            row.map(|r| session_from_row(hash, &r)).transpose()
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
    async fn end_users_sessions(
        &self,
        user_ids: &[i64],
        now: UnixTime,
        reason: &str,
        change: UserChange,
    ) -> StoreResult<Vec<u64>> {
        let (ids, reason) = (user_ids.to_vec(), reason.to_string());
        self.run(move |mut c| async move {
            let tx = c.transaction().await?;
            // The users' rows first, then the feed's lock, as every publisher takes them.
            match &change {
                UserChange::Nothing => 0,
                UserChange::Password(hash) => {
                    tx.execute(
                        "UPDATE users SET password_hash = $1 WHERE id = ANY($2)",
                        &[hash, &ids],
                    )
                    .await?
                }
                UserChange::Dismissed => {
                    tx.execute("UPDATE users SET dismissed = TRUE WHERE id = ANY($1)", &[&ids])
                        .await?
                }
                UserChange::SecondFactorReset => {
                    tx.execute("DELETE FROM backup_codes WHERE user_id = ANY($1)", &[&ids])
                        .await?;
                    tx.execute("DELETE FROM second_factors WHERE user_id = ANY($1)", &[&ids])
                        .await?
                }
            };
            publishing_revocation(&tx).await?;
            let mut ended: std::collections::HashMap<i64, u64> = std::collections::HashMap::new();
            for r in tx
                .query(
                    "DELETE FROM sessions WHERE user_id = ANY($1) RETURNING user_id",
                    &[&ids],
                )
                .await?
            {
                *ended.entry(col(&r, 0)?).or_default() += 1;
            }
            tx.execute("DELETE FROM remember_tokens WHERE user_id = ANY($1)", &[&ids])
                .await?;
            // Pending links and codes (a reset, an invitation, a new address) end with them.
            tx.execute(
                "DELETE FROM recovery WHERE user_id = ANY($1) AND used_at IS NULL",
                &[&ids],
            )
            .await?;
            let counts: Vec<u64> = ids
                .iter()
                .map(|id| ended.get(id).copied().unwrap_or(0))
                .collect();
            let uncounted: Vec<i64> = counts.iter().map(|&n| count(n)).collect();
            tx.execute(
                "INSERT INTO revocations (user_id, created_at, reason, uncounted)
                 SELECT u, $2, $3, n FROM unnest($1::BIGINT[], $4::BIGINT[]) WITH ORDINALITY AS t(u, n, i)
                 ORDER BY i",
                &[&ids, &now, &reason, &uncounted],
            )
            .await?;
            tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL]).await?;
            tx.commit().await?;
            Ok(counts)
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
                .try_get(0)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            Ok(n.max(0) as u64)
        })
        .await
    }
    async fn user_sessions(
        &self,
        user_id: i64,
        b: SessionBounds,
    ) -> StoreResult<Vec<SessionRecord>> {
        self.run(move |c| async move {
            let rows = c
                .query(
                    "SELECT user_id, created_at, last_seen, remember_selector, ip, user_agent, id_hash
                     FROM sessions WHERE user_id = $1 AND last_seen >= $2 AND created_at >= $3
                     ORDER BY last_seen DESC, created_at DESC",
                    &[&user_id, &b.idle_before, &b.created_before.unwrap_or(i64::MIN)],
                )
                .await?;
            rows.iter()
                .map(|r| session_from_row(hash_from(col(r, 6)?)?, r))
                .collect()
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
                    let what = match (col::<Option<i64>>(r, 1)?, col::<Option<Vec<u8>>>(r, 2)?) {
                        (Some(u), _) => Revoked::User(u),
                        (None, Some(h)) => Revoked::Session(hash_from(h)?),
                        (None, None) => {
                            return Err(StoreError::Corrupt("an empty revocation".into()));
                        }
                    };
                    Ok(Revocation {
                        seq: col(r, 0)?,
                        what,
                        reason: col(r, 3)?,
                        uncounted: col::<i64>(r, 4)?.max(0) as u64,
                    })
                })
                .collect()
        })
        .await
    }
    async fn claim_ended(&self, seqs: &[i64]) -> StoreResult<Vec<u64>> {
        let seqs = seqs.to_vec();
        self.run(move |c| async move {
            let rows = c
                .query(
                    "UPDATE revocations r SET uncounted = 0
                     FROM (SELECT seq, uncounted FROM revocations WHERE seq = ANY($1) FOR UPDATE) old
                     WHERE r.seq = old.seq AND old.uncounted > 0
                     RETURNING old.seq, old.uncounted",
                    &[&seqs],
                )
                .await?;
            let mut claimed = std::collections::HashMap::with_capacity(rows.len());
            for r in &rows {
                claimed.insert(col::<i64>(r, 0)?, col::<i64>(r, 1)?.max(0) as u64);
            }
            Ok(seqs
                .iter()
                .map(|s| claimed.get(s).copied().unwrap_or(0))
                .collect())
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
            let row = c
                .query_one("SELECT COALESCE(MAX(seq), 0) FROM revocations", &[])
                .await?;
            col(&row, 0)
        })
        .await
    }
    fn changes(&self) -> Option<watch::Receiver<u64>> {
        Some(self.changes.clone())
    }
}
