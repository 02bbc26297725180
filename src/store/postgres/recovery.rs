//! Password recovery: each user's newest link or SMS code, hashed. The PostgreSQL side of
//! `RecoveryStore`.

use super::*;

/// The schema steps of this aggregate, in order.
pub(super) const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE recovery (
    user_id BIGINT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    secret_hash BYTEA NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    tries_left INTEGER NOT NULL,
    used_at BIGINT
);
"#];

const COLUMNS: &str = "user_id, kind, secret_hash, created_at, expires_at, tries_left, used_at";

fn typed(r: &Row) -> StoreResult<RecoveryRecord> {
    Ok(RecoveryRecord {
        user_id: col(r, 0)?,
        kind: RecoveryKind::parse(&col::<String>(r, 1)?)?,
        secret_hash: secret_from(col(r, 2)?)?,
        created_at: col(r, 3)?,
        expires_at: col(r, 4)?,
        tries_left: u32::try_from(col::<i32>(r, 5)?).unwrap_or(0),
        used_at: col(r, 6)?,
    })
}

#[async_trait]
impl RecoveryStore for PostgresStore {
    async fn put_recovery(&self, r: &RecoveryRecord) -> StoreResult<()> {
        let r = r.clone();
        self.run(move |c| async move {
            let tries = i32::try_from(r.tries_left).unwrap_or(i32::MAX);
            c.execute(
                "INSERT INTO recovery (user_id, kind, secret_hash, created_at, expires_at, tries_left, used_at)
                 VALUES ($1, $2, $3, $4, $5, $6, NULL)
                 ON CONFLICT (user_id) DO UPDATE SET kind = excluded.kind,
                   secret_hash = excluded.secret_hash, created_at = excluded.created_at,
                   expires_at = excluded.expires_at, tries_left = excluded.tries_left, used_at = NULL",
                &[
                    &r.user_id,
                    &r.kind.as_str(),
                    &&r.secret_hash[..],
                    &r.created_at,
                    &r.expires_at,
                    &tries,
                ],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn recovery_by_hash(&self, hash: &[u8; 32]) -> StoreResult<Option<RecoveryRecord>> {
        let hash = hash.to_vec();
        self.run(move |c| async move {
            let row = c
                .query_opt(
                    &format!("SELECT {COLUMNS} FROM recovery WHERE secret_hash = $1"),
                    &[&hash],
                )
                .await?;
            row.as_ref().map(typed).transpose()
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
        self.run(move |c| async move {
            let n = c
                .execute(
                    "UPDATE recovery SET used_at = $2
                     WHERE secret_hash = $1 AND kind = $3 AND used_at IS NULL AND expires_at > $2",
                    &[&hash, &now, &kind.as_str()],
                )
                .await?;
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
        self.run(move |c| async move {
            // The row as it was before this try: the update and the read are one statement.
            let row = c
                .query_opt(
                    &format!(
                        "UPDATE recovery r SET tries_left = r.tries_left - 1
                         FROM (SELECT {COLUMNS} FROM recovery WHERE user_id = $1 FOR UPDATE) old
                         WHERE r.user_id = old.user_id AND old.kind = $3
                           AND old.used_at IS NULL AND old.expires_at > $2 AND old.tries_left > 0
                         RETURNING old.user_id, old.kind, old.secret_hash, old.created_at,
                                   old.expires_at, old.tries_left, old.used_at"
                    ),
                    &[&user_id, &now, &kind.as_str()],
                )
                .await?;
            row.as_ref().map(typed).transpose()
        })
        .await
    }
}
