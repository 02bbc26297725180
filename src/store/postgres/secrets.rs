//! Secrets shared by the gateways of one store. The PostgreSQL side of `SecretStore`.

use super::*;

/// The schema steps of this aggregate, in order.
pub(super) const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE secrets (
    name TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
"#];

#[async_trait]
impl SecretStore for PostgresStore {
    async fn claim_secret(&self, name: &str, offered: [u8; 32]) -> StoreResult<[u8; 32]> {
        let name = name.to_string();
        self.run(move |c| async move {
            let offered = offered.to_vec();
            c.execute(
                "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &offered],
            )
            .await?;
            let row = c
                .query_one("SELECT value FROM secrets WHERE name = $1", &[&name])
                .await?;
            secret_from(col(&row, 0)?)
        })
        .await
    }
}
