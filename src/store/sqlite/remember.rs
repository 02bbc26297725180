//! "Stay signed in" tokens. The SQLite side of `RememberStore`.

use super::*;

/// The schema steps of this aggregate, in order.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE remember_tokens (
    selector TEXT PRIMARY KEY,
    validator_hash BLOB NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL
);
CREATE INDEX remember_by_user ON remember_tokens(user_id);
"#,
    r#"
ALTER TABLE remember_tokens ADD COLUMN previous_hash BLOB;
ALTER TABLE remember_tokens ADD COLUMN rotated_at INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
ALTER TABLE remember_tokens ADD COLUMN second_factor INTEGER NOT NULL DEFAULT 0;
"#,
];

#[async_trait]
impl RememberStore for SqliteStore {
    async fn insert_remember(&self, t: &RememberRecord) -> StoreResult<()> {
        let t = t.clone();
        self.with(move |c| {
            c.execute(
                "INSERT INTO remember_tokens (selector, validator_hash, user_id, expires_at, second_factor)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![t.selector, t.validator_hash, t.user_id, t.expires_at, t.second_factor],
            )?;
            Ok(())
        })
        .await
    }
    async fn get_remember(&self, selector: &str) -> StoreResult<Option<RememberRecord>> {
        let selector = selector.to_string();
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT validator_hash, user_id, expires_at, previous_hash, rotated_at, second_factor
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
                        second_factor: r.get(5)?,
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
}
