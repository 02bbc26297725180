//! Two-step verification: sealed TOTP secrets, the last period used, backup code hashes. The
//! SQLite side of `SecondFactorStore`.

use super::*;

/// The schema steps of this aggregate, in order.
pub(super) const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE second_factors (
    user_id INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    secret BLOB NOT NULL,
    enrolled_at INTEGER NOT NULL,
    last_step INTEGER,
    disabled_until INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE backup_codes (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash BLOB NOT NULL,
    PRIMARY KEY (user_id, code_hash)
);
"#];

fn insert_codes(tx: &rusqlite::Transaction, user_id: i64, codes: &[[u8; 32]]) -> StoreResult<()> {
    tx.execute("DELETE FROM backup_codes WHERE user_id = ?1", [user_id])?;
    for code in codes {
        tx.execute(
            "INSERT OR IGNORE INTO backup_codes (user_id, code_hash) VALUES (?1, ?2)",
            params![user_id, &code[..]],
        )?;
    }
    Ok(())
}

#[async_trait]
impl SecondFactorStore for SqliteStore {
    async fn second_factor(&self, user_id: i64) -> StoreResult<Option<SecondFactorRecord>> {
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT secret, enrolled_at, last_step, disabled_until,
                        (SELECT COUNT(*) FROM backup_codes b WHERE b.user_id = f.user_id)
                 FROM second_factors f WHERE user_id = ?1",
                [user_id],
                |r| {
                    Ok(SecondFactorRecord {
                        user_id,
                        sealed_secret: r.get(0)?,
                        enrolled_at: r.get(1)?,
                        last_step: r.get(2)?,
                        disabled_until: r.get(3)?,
                        backup_codes_left: r.get::<_, i64>(4)?.max(0) as u64,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    async fn enroll_second_factor(
        &self,
        user_id: i64,
        sealed_secret: &[u8],
        step: i64,
        codes: &[[u8; 32]],
        now: UnixTime,
    ) -> StoreResult<()> {
        let (sealed, codes) = (sealed_secret.to_vec(), codes.to_vec());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO second_factors (user_id, secret, enrolled_at, last_step, disabled_until)
                 VALUES (?1, ?2, ?3, ?4, 0)
                 ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret,
                   enrolled_at = excluded.enrolled_at, last_step = excluded.last_step,
                   disabled_until = 0",
                params![user_id, sealed, now, step],
            )?;
            insert_codes(&tx, user_id, &codes)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn take_totp_step(&self, user_id: i64, step: i64) -> StoreResult<bool> {
        self.with(move |c| {
            let n = c.execute(
                "UPDATE second_factors SET last_step = ?2
                 WHERE user_id = ?1 AND (last_step IS NULL OR last_step < ?2)",
                params![user_id, step],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn use_backup_code(&self, user_id: i64, hash: &[u8; 32]) -> StoreResult<Option<u64>> {
        let hash = hash.to_vec();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let used = tx.execute(
                "DELETE FROM backup_codes WHERE user_id = ?1 AND code_hash = ?2",
                params![user_id, hash],
            )?;
            let left: i64 = tx.query_row(
                "SELECT COUNT(*) FROM backup_codes WHERE user_id = ?1",
                [user_id],
                |r| r.get(0),
            )?;
            tx.commit()?;
            Ok((used == 1).then_some(left.max(0) as u64))
        })
        .await
    }

    async fn replace_backup_codes(&self, user_id: i64, codes: &[[u8; 32]]) -> StoreResult<()> {
        let codes = codes.to_vec();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            insert_codes(&tx, user_id, &codes)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn disable_second_factor_until(
        &self,
        user_id: i64,
        until: UnixTime,
    ) -> StoreResult<bool> {
        self.with(move |c| {
            let n = c.execute(
                "UPDATE second_factors SET disabled_until = ?2 WHERE user_id = ?1",
                params![user_id, until],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn count_second_factors(&self) -> StoreResult<u64> {
        self.with(|c| {
            let n: i64 = c.query_row("SELECT COUNT(*) FROM second_factors", [], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        })
        .await
    }

    async fn any_second_factor(&self) -> StoreResult<Option<SecondFactorRecord>> {
        let id = self
            .with(|c| {
                Ok(
                    c.query_row("SELECT user_id FROM second_factors LIMIT 1", [], |r| {
                        r.get::<_, i64>(0)
                    })
                    .optional()?,
                )
            })
            .await?;
        match id {
            Some(id) => self.second_factor(id).await,
            None => Ok(None),
        }
    }
}
