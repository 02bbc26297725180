//! Two-step verification: sealed TOTP secrets, the last period used, backup code hashes. The
//! PostgreSQL side of `SecondFactorStore`.

use super::*;

/// The schema steps of this aggregate, in order.
pub(super) const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE second_factors (
    user_id BIGINT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    secret BYTEA NOT NULL,
    enrolled_at BIGINT NOT NULL,
    last_step BIGINT,
    disabled_until BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE backup_codes (
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash BYTEA NOT NULL,
    PRIMARY KEY (user_id, code_hash)
);
"#];

async fn insert_codes(
    tx: &deadpool_postgres::Transaction<'_>,
    user_id: i64,
    codes: &[[u8; 32]],
) -> StoreResult<()> {
    tx.execute("DELETE FROM backup_codes WHERE user_id = $1", &[&user_id])
        .await?;
    for code in codes {
        tx.execute(
            "INSERT INTO backup_codes (user_id, code_hash) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&user_id, &&code[..]],
        )
        .await?;
    }
    Ok(())
}

#[async_trait]
impl SecondFactorStore for PostgresStore {
    async fn second_factor(&self, user_id: i64) -> StoreResult<Option<SecondFactorRecord>> {
        self.run(move |c| async move {
            let row = c
                .query_opt(
                    "SELECT secret, enrolled_at, last_step, disabled_until,
                            (SELECT COUNT(*) FROM backup_codes b WHERE b.user_id = f.user_id)
                     FROM second_factors f WHERE user_id = $1",
                    &[&user_id],
                )
                .await?;
            row.map(|r| {
                Ok(SecondFactorRecord {
                    user_id,
                    sealed_secret: col(&r, 0)?,
                    enrolled_at: col(&r, 1)?,
                    last_step: col(&r, 2)?,
                    disabled_until: col(&r, 3)?,
                    backup_codes_left: col::<i64>(&r, 4)?.max(0) as u64,
                })
            })
            .transpose()
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
        self.run(move |mut c| async move {
            let tx = c.transaction().await?;
            tx.execute(
                "INSERT INTO second_factors (user_id, secret, enrolled_at, last_step, disabled_until)
                 VALUES ($1, $2, $3, $4, 0)
                 ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret,
                   enrolled_at = excluded.enrolled_at, last_step = excluded.last_step,
                   disabled_until = 0",
                &[&user_id, &sealed, &now, &step],
            )
            .await?;
            insert_codes(&tx, user_id, &codes).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn take_totp_step(&self, user_id: i64, step: i64) -> StoreResult<bool> {
        self.run(move |c| async move {
            let n = c
                .execute(
                    "UPDATE second_factors SET last_step = $2
                     WHERE user_id = $1 AND (last_step IS NULL OR last_step < $2)",
                    &[&user_id, &step],
                )
                .await?;
            Ok(n == 1)
        })
        .await
    }

    async fn use_backup_code(&self, user_id: i64, hash: &[u8; 32]) -> StoreResult<Option<u64>> {
        let hash = hash.to_vec();
        self.run(move |mut c| async move {
            let tx = c.transaction().await?;
            let used = tx
                .execute(
                    "DELETE FROM backup_codes WHERE user_id = $1 AND code_hash = $2",
                    &[&user_id, &hash],
                )
                .await?;
            let row = tx
                .query_one(
                    "SELECT COUNT(*) FROM backup_codes WHERE user_id = $1",
                    &[&user_id],
                )
                .await?;
            let left: i64 = col(&row, 0)?;
            tx.commit().await?;
            Ok((used == 1).then_some(left.max(0) as u64))
        })
        .await
    }

    async fn replace_backup_codes(&self, user_id: i64, codes: &[[u8; 32]]) -> StoreResult<()> {
        let codes = codes.to_vec();
        self.run(move |mut c| async move {
            let tx = c.transaction().await?;
            insert_codes(&tx, user_id, &codes).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn disable_second_factor_until(
        &self,
        user_id: i64,
        until: UnixTime,
    ) -> StoreResult<bool> {
        self.run(move |c| async move {
            let n = c
                .execute(
                    "UPDATE second_factors SET disabled_until = $2 WHERE user_id = $1",
                    &[&user_id, &until],
                )
                .await?;
            Ok(n == 1)
        })
        .await
    }

    async fn count_second_factors(&self) -> StoreResult<u64> {
        self.run(|c| async move {
            let row = c
                .query_one("SELECT COUNT(*) FROM second_factors", &[])
                .await?;
            Ok(col::<i64>(&row, 0)?.max(0) as u64)
        })
        .await
    }

    async fn any_second_factor(&self) -> StoreResult<Option<SecondFactorRecord>> {
        let id = self
            .run(|c| async move {
                let row = c
                    .query_opt("SELECT user_id FROM second_factors LIMIT 1", &[])
                    .await?;
                row.map(|r| col::<i64>(&r, 0)).transpose()
            })
            .await?;
        match id {
            Some(id) => self.second_factor(id).await,
            None => Ok(None),
        }
    }
}
