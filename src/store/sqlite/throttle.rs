//! Throttle counters. The SQLite side of `ThrottleStore`.

use super::*;

/// The schema steps of this aggregate, in order.
pub(super) const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE throttle (
    key TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    last_failure INTEGER NOT NULL,
    locked_until INTEGER NOT NULL,
    budget_full_at INTEGER NOT NULL
);
"#];

fn counter_from_row(r: &Row) -> rusqlite::Result<Counter> {
    Ok(Counter {
        failures: r.get(0)?,
        last_failure: r.get(1)?,
        locked_until: r.get(2)?,
        budget_full_at: r.get(3)?,
    })
}

fn read_counter(c: &Connection, key: &str) -> rusqlite::Result<Option<Counter>> {
    c.query_row(
        "SELECT failures, last_failure, locked_until, budget_full_at FROM throttle WHERE key = ?1",
        [key],
        counter_from_row,
    )
    .optional()
}

#[async_trait]
impl ThrottleStore for SqliteStore {
    async fn counter(&self, key: &str) -> StoreResult<Option<Counter>> {
        let key = key.to_string();
        self.with(move |c| Ok(read_counter(c, &key)?)).await
    }
    async fn update_counter(
        &self,
        key: &str,
        update: CounterUpdate,
    ) -> StoreResult<Option<Counter>> {
        let key = key.to_string();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let before = read_counter(&tx, &key)?;
            let after = update(before);
            if after == before {
                // Refused attempts change nothing: a flood of them costs no writes.
                return Ok(before);
            }
            match after {
                Some(n) => tx.execute(
                    "INSERT INTO throttle (key, failures, last_failure, locked_until, budget_full_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(key) DO UPDATE SET failures = ?2, last_failure = ?3,
                        locked_until = ?4, budget_full_at = ?5",
                    params![key, n.failures, n.last_failure, n.locked_until, n.budget_full_at],
                )?,
                None => tx.execute("DELETE FROM throttle WHERE key = ?1", [&key])?,
            };
            tx.commit()?;
            Ok(before)
        })
        .await
    }
    async fn purge_counters(&self, failed_before: i64, now: i64) -> StoreResult<u64> {
        self.with(move |c| {
            let n = c.execute(
                "DELETE FROM throttle
                 WHERE last_failure < ?1 AND locked_until <= ?2 AND budget_full_at <= ?2",
                params![failed_before, now],
            )?;
            Ok(n as u64)
        })
        .await
    }
}
