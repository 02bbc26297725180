//! Secrets shared by the gateways of one store. The SQLite side of `SecretStore`.

use super::*;

/// The schema steps of this aggregate, in order.
pub(super) const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
"#];

#[async_trait]
impl SecretStore for SqliteStore {
    async fn claim_secret(&self, name: &str, offered: [u8; 32]) -> StoreResult<[u8; 32]> {
        let name = name.to_string();
        self.with(move |c| {
            c.execute(
                "INSERT INTO secrets (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
                params![name, &offered[..]],
            )?;
            let value: Vec<u8> =
                c.query_row("SELECT value FROM secrets WHERE name = ?1", [&name], |r| {
                    r.get(0)
                })?;
            secret_from(value)
        })
        .await
    }
}
