//! Password recovery: each user's newest link or SMS code, hashed. The SQLite side of
//! `RecoveryStore`.

use super::*;

/// The schema steps of this aggregate, in order.
pub(super) const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE recovery (
    user_id INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    secret_hash BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    tries_left INTEGER NOT NULL,
    used_at INTEGER
);
"#];

const COLUMNS: &str = "user_id, kind, secret_hash, created_at, expires_at, tries_left, used_at";

/// A row as read, before its kind and hash are checked.
type RawRecord = (i64, String, Vec<u8>, i64, i64, i64, Option<i64>);

fn record(r: &Row) -> rusqlite::Result<RawRecord> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn typed(raw: RawRecord) -> StoreResult<RecoveryRecord> {
    let (user_id, kind, hash, created_at, expires_at, tries_left, used_at) = raw;
    Ok(RecoveryRecord {
        user_id,
        kind: RecoveryKind::parse(&kind)?,
        secret_hash: secret_from(hash)?,
        created_at,
        expires_at,
        tries_left: u32::try_from(tries_left).unwrap_or(0),
        used_at,
    })
}

#[async_trait]
impl RecoveryStore for SqliteStore {
    async fn put_recovery(&self, r: &RecoveryRecord) -> StoreResult<()> {
        let r = r.clone();
        self.with(move |c| {
            c.execute(
                "INSERT INTO recovery (user_id, kind, secret_hash, created_at, expires_at, tries_left, used_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)
                 ON CONFLICT (user_id) DO UPDATE SET kind = excluded.kind,
                   secret_hash = excluded.secret_hash, created_at = excluded.created_at,
                   expires_at = excluded.expires_at, tries_left = excluded.tries_left, used_at = NULL",
                params![
                    r.user_id,
                    r.kind.as_str(),
                    &r.secret_hash[..],
                    r.created_at,
                    r.expires_at,
                    r.tries_left
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn recovery_by_hash(&self, hash: &[u8; 32]) -> StoreResult<Option<RecoveryRecord>> {
        let hash = hash.to_vec();
        self.with(move |c| {
            let raw = c
                .query_row(
                    &format!("SELECT {COLUMNS} FROM recovery WHERE secret_hash = ?1"),
                    [hash],
                    record,
                )
                .optional()?;
            raw.map(typed).transpose()
        })
        .await
    }

    async fn use_recovery(
        &self,
        hash: &[u8; 32],
        kind: RecoveryKind,
        now: UnixTime,
    ) -> StoreResult<bool> {
        let hash = hash.to_vec();
        self.with(move |c| {
            let n = c.execute(
                "UPDATE recovery SET used_at = ?2
                 WHERE secret_hash = ?1 AND kind = ?3 AND used_at IS NULL AND expires_at > ?2",
                params![hash, now, kind.as_str()],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn try_sms_code(
        &self,
        user_id: i64,
        kind: RecoveryKind,
        now: UnixTime,
    ) -> StoreResult<Option<RecoveryRecord>> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let raw = tx
                .query_row(
                    &format!(
                        "SELECT {COLUMNS} FROM recovery WHERE user_id = ?1 AND kind = ?3
                         AND used_at IS NULL AND expires_at > ?2 AND tries_left > 0"
                    ),
                    params![user_id, now, kind.as_str()],
                    record,
                )
                .optional()?;
            if raw.is_some() {
                tx.execute(
                    "UPDATE recovery SET tries_left = tries_left - 1 WHERE user_id = ?1",
                    [user_id],
                )?;
            }
            tx.commit()?;
            raw.map(typed).transpose()
        })
        .await
    }
}
