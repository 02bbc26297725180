//! CAPTCHA challenges. The SQLite side of `CaptchaStore`.

use super::*;

/// The schema steps of this aggregate, in order.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE captchas (
    id TEXT PRIMARY KEY,
    answer_hash BLOB NOT NULL,
    png BLOB NOT NULL,
    expires_at INTEGER NOT NULL
);
"#,
    r#"
CREATE INDEX captchas_by_expiry ON captchas(expires_at);
"#,
];

#[async_trait]
impl CaptchaStore for SqliteStore {
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
}
