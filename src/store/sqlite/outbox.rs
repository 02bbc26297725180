//! Mail and SMS waiting to be sent, and the gates that space out requests. The SQLite side of
//! `OutboxStore`.

use super::*;

/// The schema steps of this aggregate, in order.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    user_id INTEGER,
    created_at INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at INTEGER NOT NULL,
    claimed_by TEXT,
    claimed_until INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_due ON outbox(next_at);
CREATE TABLE outbox_gates (
    key TEXT PRIMARY KEY,
    open_at INTEGER NOT NULL
);
CREATE INDEX outbox_gates_open ON outbox_gates(open_at);
"#,
    r#"
ALTER TABLE outbox ADD COLUMN payload TEXT NOT NULL DEFAULT '';
"#,
];

/// Gates closed longer ago than this are forgotten.
const GATE_MEMORY: i64 = 86_400;

/// Passes `gate` if it is open (closing it for its gap), in the caller's transaction.
fn pass(c: &Connection, gate: &Gate, now: UnixTime) -> rusqlite::Result<Result<(), u64>> {
    let open_at: Option<i64> = c
        .query_row(
            "SELECT open_at FROM outbox_gates WHERE key = ?1",
            [&gate.key],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(at) = open_at.filter(|at| *at > now) {
        return Ok(Err(u64::try_from(at - now).unwrap_or(1)));
    }
    c.execute(
        "DELETE FROM outbox_gates WHERE open_at < ?1",
        [now - GATE_MEMORY],
    )?;
    c.execute(
        "INSERT INTO outbox_gates (key, open_at) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET open_at = excluded.open_at",
        params![gate.key, now + gate.gap],
    )?;
    Ok(Ok(()))
}

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn enqueue(
        &self,
        job: &NewJob,
        gate: Option<&Gate>,
        now: UnixTime,
    ) -> StoreResult<Result<(), u64>> {
        let (job, gate) = (job.clone(), gate.cloned());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if let Some(gate) = gate
                && let Err(wait) = pass(&tx, &gate, now)?
            {
                return Ok(Err(wait));
            }
            tx.execute(
                "INSERT INTO outbox (kind, user_id, created_at, not_after, next_at, payload)
                 VALUES (?1, ?2, ?3, ?4, ?3, ?5)",
                params![job.kind, job.user_id, now, job.not_after, job.payload],
            )?;
            tx.commit()?;
            Ok(Ok(()))
        })
        .await
    }

    async fn pass_gate(&self, gate: &Gate, now: UnixTime) -> StoreResult<Result<(), u64>> {
        let gate = gate.clone();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let passed = pass(&tx, &gate, now)?;
            tx.commit()?;
            Ok(passed)
        })
        .await
    }

    async fn claim_jobs(
        &self,
        worker: &str,
        kinds: &[&str],
        now: UnixTime,
        lease: i64,
        limit: u32,
    ) -> StoreResult<Vec<OutboxJob>> {
        let worker = worker.to_string();
        // The kinds as a JSON array, read by `json_each`: one statement for any number.
        let kinds = serde_json::to_string(kinds).unwrap_or_else(|_| "[]".into());
        self.with(move |c| {
            // Every gateway asks every second: an empty queue costs a read, not the write lock
            // that a claim takes.
            let due: bool = c.query_row(
                "SELECT EXISTS(SELECT 1 FROM outbox WHERE next_at <= ?1 AND claimed_until <= ?1)",
                [now],
                |r| r.get(0),
            )?;
            if !due {
                return Ok(Vec::new());
            }
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let jobs = {
                let mut q = tx.prepare(
                    "SELECT id, kind, user_id, created_at, not_after, attempts, payload FROM outbox
                     WHERE next_at <= ?1 AND claimed_until <= ?1
                       AND (kind IN (SELECT value FROM json_each(?3)) OR not_after < ?1)
                     ORDER BY id LIMIT ?2",
                )?;
                let rows = q.query_map(params![now, limit, kinds], |r| {
                    Ok(OutboxJob {
                        id: r.get(0)?,
                        kind: r.get(1)?,
                        user_id: r.get(2)?,
                        created_at: r.get(3)?,
                        not_after: r.get(4)?,
                        attempts: r.get(5)?,
                        payload: r.get(6)?,
                    })
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            for job in &jobs {
                tx.execute(
                    "UPDATE outbox SET claimed_by = ?2, claimed_until = ?3 WHERE id = ?1",
                    params![job.id, worker, now + lease],
                )?;
            }
            tx.commit()?;
            Ok(jobs)
        })
        .await
    }

    async fn finish_job(&self, id: i64) -> StoreResult<()> {
        self.with(move |c| {
            c.execute("DELETE FROM outbox WHERE id = ?1", [id])?;
            Ok(())
        })
        .await
    }

    async fn retry_job(&self, id: i64, at: UnixTime) -> StoreResult<()> {
        self.with(move |c| {
            c.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_at = ?2, claimed_by = NULL,
                   claimed_until = 0 WHERE id = ?1",
                params![id, at],
            )?;
            Ok(())
        })
        .await
    }

    async fn count_jobs(&self) -> StoreResult<u64> {
        self.with(|c| {
            let n: i64 = c.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }
}
