//! "Stay signed in" tokens. The PostgreSQL side of `RememberStore`.

use super::*;

/// The schema steps of this aggregate, in order.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE remember_tokens (
    selector TEXT PRIMARY KEY,
    validator_hash BYTEA NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL
);
CREATE INDEX remember_by_user ON remember_tokens(user_id);
"#,
    r#"
ALTER TABLE remember_tokens ADD COLUMN previous_hash BYTEA;
ALTER TABLE remember_tokens ADD COLUMN rotated_at BIGINT NOT NULL DEFAULT 0;
"#,
    r#"
ALTER TABLE remember_tokens ADD COLUMN second_factor BOOLEAN NOT NULL DEFAULT false;
"#,
];

#[async_trait]
impl RememberStore for PostgresStore {
    async fn insert_remember(&self, t: &RememberRecord) -> StoreResult<()> {
        let t = t.clone();
        self.run(move |c| async move {
            c.execute(
                "INSERT INTO remember_tokens (selector, validator_hash, user_id, expires_at, second_factor)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&t.selector, &t.validator_hash, &t.user_id, &t.expires_at, &t.second_factor],
            )
            .await?;
            Ok(())
        })
        .await
    }
    async fn get_remember(&self, selector: &str) -> StoreResult<Option<RememberRecord>> {
        let selector = selector.to_string();
        self.run(move |c| async move {
            let row = c
                .query_opt(
                    "SELECT validator_hash, user_id, expires_at, previous_hash, rotated_at, second_factor
                     FROM remember_tokens WHERE selector = $1",
                    &[&selector],
                )
                .await?;
            row.map(|r| {
                Ok(RememberRecord {
                    selector,
                    validator_hash: col(&r, 0)?,
                    user_id: col(&r, 1)?,
                    expires_at: col(&r, 2)?,
                    previous_hash: col(&r, 3)?,
                    rotated_at: col(&r, 4)?,
                    second_factor: col(&r, 5)?,
                })
            })
            .transpose()
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
        self.run(move |c| async move {
            let n = c
                .execute(
                    "UPDATE remember_tokens SET validator_hash = $1, previous_hash = $3, rotated_at = $4
                     WHERE selector = $2 AND validator_hash = $3",
                    &[&new, &selector, &old, &now],
                )
                .await?;
            Ok(n == 1)
        })
        .await
    }
    async fn delete_remember(&self, selector: &str) -> StoreResult<()> {
        let selector = selector.to_string();
        self.run(move |c| async move {
            c.execute(
                "DELETE FROM remember_tokens WHERE selector = $1",
                &[&selector],
            )
            .await?;
            Ok(())
        })
        .await
    }
}
