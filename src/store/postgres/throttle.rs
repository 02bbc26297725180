//! Throttle counters. The PostgreSQL side of `ThrottleStore`.

use super::*;

/// The schema steps of this aggregate, in order.
pub(super) const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE throttle (
    key TEXT PRIMARY KEY,
    failures BIGINT NOT NULL,
    last_failure BIGINT NOT NULL,
    locked_until BIGINT NOT NULL,
    budget_full_at BIGINT NOT NULL
);
"#];

fn counter_from_row(r: &Row) -> StoreResult<Counter> {
    Ok(Counter {
        failures: u32::try_from(col::<i64>(r, 0)?).unwrap_or(u32::MAX),
        last_failure: col(r, 1)?,
        locked_until: col(r, 2)?,
        budget_full_at: col(r, 3)?,
    })
}

#[async_trait]
impl ThrottleStore for PostgresStore {
    async fn counter(&self, key: &str) -> StoreResult<Option<Counter>> {
        let key = key.to_string();
        self.run(move |c| async move {
            let row = c
                .query_opt(
                    "SELECT failures, last_failure, locked_until, budget_full_at FROM throttle WHERE key = $1",
                    &[&key],
                )
                .await?;
            row.as_ref().map(counter_from_row).transpose()
        })
        .await
    }
    async fn update_counter(
        &self,
        key: &str,
        update: CounterUpdate,
    ) -> StoreResult<Option<Counter>> {
        let key = key.to_string();
        self.run(move |mut c| async move {
            let tx = c.transaction().await?;
            // One key at a time across every gateway, whether or not its row exists yet.
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                &[&LOCK_CLASS, &key],
            )
            .await?;
            let before = tx
                .query_opt(
                    "SELECT failures, last_failure, locked_until, budget_full_at FROM throttle WHERE key = $1",
                    &[&key],
                )
                .await?
                .as_ref()
                .map(counter_from_row)
                .transpose()?;
            let after = update(before);
            if after == before {
                return Ok(before);
            }
            match after {
                Some(n) => {
                    tx.execute(
                        "INSERT INTO throttle (key, failures, last_failure, locked_until, budget_full_at)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (key) DO UPDATE SET failures = $2, last_failure = $3,
                            locked_until = $4, budget_full_at = $5",
                        &[
                            &key,
                            &i64::from(n.failures),
                            &n.last_failure,
                            &n.locked_until,
                            &n.budget_full_at,
                        ],
                    )
                    .await?
                }
                None => tx.execute("DELETE FROM throttle WHERE key = $1", &[&key]).await?,
            };
            tx.commit().await?;
            Ok(before)
        })
        .await
    }
    async fn purge_counters(&self, failed_before: i64, now: i64) -> StoreResult<u64> {
        self.run(move |c| async move {
            Ok(c.execute(
                "DELETE FROM throttle
                 WHERE last_failure < $1 AND locked_until <= $2 AND budget_full_at <= $2",
                &[&failed_before, &now],
            )
            .await?)
        })
        .await
    }
}
