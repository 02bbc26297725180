//! CAPTCHA challenges. The PostgreSQL side of `CaptchaStore`.

use super::*;

/// The schema steps of this aggregate, in order.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE captchas (
    id TEXT PRIMARY KEY,
    answer_hash BYTEA NOT NULL,
    png BYTEA NOT NULL,
    expires_at BIGINT NOT NULL
);
"#,
    r#"
ALTER TABLE captchas ADD COLUMN seq BIGSERIAL;
CREATE INDEX captchas_by_expiry ON captchas(expires_at, seq);
"#,
];

#[async_trait]
impl CaptchaStore for PostgresStore {
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
    async fn captcha_image(&self, id: &str, now: UnixTime) -> StoreResult<Option<Vec<u8>>> {
        let id = id.to_string();
        self.run(move |c| async move {
            let row = c
                .query_opt(
                    "SELECT png FROM captchas WHERE id = $1 AND expires_at > $2",
                    &[&id, &now],
                )
                .await?;
            row.map(|r| col(&r, 0)).transpose()
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
            row.map(|r| {
                Ok(CaptchaRecord {
                    id,
                    answer_hash: col(&r, 0)?,
                    png: col(&r, 1)?,
                    expires_at: col(&r, 2)?,
                })
            })
            .transpose()
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
}
