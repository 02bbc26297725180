//! Mail and SMS waiting to be sent, and the gates that space out requests. The PostgreSQL
//! side of `OutboxStore`: gateways claim jobs with `FOR UPDATE SKIP LOCKED`, so each job is
//! taken by one of them.

use super::*;

/// The schema steps of this aggregate, in order.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    user_id BIGINT,
    created_at BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL,
    claimed_by TEXT,
    claimed_until BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX outbox_due ON outbox(next_at);
CREATE TABLE outbox_gates (
    key TEXT PRIMARY KEY,
    open_at BIGINT NOT NULL
);
CREATE INDEX outbox_gates_open ON outbox_gates(open_at);
"#,
    r#"
ALTER TABLE outbox ADD COLUMN payload TEXT NOT NULL DEFAULT '';
"#,
];

/// Gates closed longer ago than this are forgotten.
const GATE_MEMORY: i64 = 86_400;

/// Passes `gate` if it is open (closing it for its gap), in the caller's transaction: one
/// statement, so two gateways cannot both pass.
async fn pass(
    tx: &tokio_postgres::Transaction<'_>,
    gate: &Gate,
    now: UnixTime,
) -> StoreResult<Result<(), u64>> {
    let passed = tx
        .query_opt(
            "INSERT INTO outbox_gates (key, open_at) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET open_at = excluded.open_at
             WHERE outbox_gates.open_at <= $3
             RETURNING open_at",
            &[&gate.key, &(now + gate.gap), &now],
        )
        .await?;
    if passed.is_none() {
        let row = tx
            .query_one(
                "SELECT open_at FROM outbox_gates WHERE key = $1",
                &[&gate.key],
            )
            .await?;
        let at: i64 = col(&row, 0)?;
        return Ok(Err(u64::try_from(at - now).unwrap_or(1).max(1)));
    }
    tx.execute(
        "DELETE FROM outbox_gates WHERE open_at < $1",
        &[&(now - GATE_MEMORY)],
    )
    .await?;
    Ok(Ok(()))
}

#[async_trait]
impl OutboxStore for PostgresStore {
    async fn enqueue(
        &self,
        job: &NewJob,
        gate: Option<&Gate>,
        now: UnixTime,
    ) -> StoreResult<Result<(), u64>> {
        let (job, gate) = (job.clone(), gate.cloned());
        self.run(move |mut c| async move {
            let tx = c.transaction().await?;
            if let Some(gate) = gate
                && let Err(wait) = pass(&tx, &gate, now).await?
            {
                return Ok(Err(wait));
            }
            tx.execute(
                "INSERT INTO outbox (kind, user_id, created_at, not_after, next_at, payload)
                 VALUES ($1, $2, $3, $4, $3, $5)",
                &[&job.kind, &job.user_id, &now, &job.not_after, &job.payload],
            )
            .await?;
            tx.commit().await?;
            Ok(Ok(()))
        })
        .await
    }

    async fn pass_gate(&self, gate: &Gate, now: UnixTime) -> StoreResult<Result<(), u64>> {
        let gate = gate.clone();
        self.run(move |mut c| async move {
            let tx = c.transaction().await?;
            let passed = pass(&tx, &gate, now).await?;
            tx.commit().await?;
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
        let kinds: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
        self.run(move |c| async move {
            let rows = c
                .query(
                    "UPDATE outbox SET claimed_by = $2, claimed_until = $3
                     WHERE id IN (SELECT id FROM outbox WHERE next_at <= $1 AND claimed_until <= $1
                                    AND (kind = ANY($5) OR not_after < $1)
                                  ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)
                     RETURNING id, kind, user_id, created_at, not_after, attempts, payload",
                    &[&now, &worker, &(now + lease), &i64::from(limit), &kinds],
                )
                .await?;
            let mut jobs = rows
                .iter()
                .map(|r| {
                    Ok(OutboxJob {
                        id: col(r, 0)?,
                        kind: col(r, 1)?,
                        user_id: col(r, 2)?,
                        created_at: col(r, 3)?,
                        not_after: col(r, 4)?,
                        attempts: u32::try_from(col::<i32>(r, 5)?).unwrap_or(0),
                        payload: col(r, 6)?,
                    })
                })
                .collect::<StoreResult<Vec<_>>>()?;
            jobs.sort_by_key(|j| j.id);
            Ok(jobs)
        })
        .await
    }

    async fn finish_job(&self, id: i64) -> StoreResult<()> {
        self.run(move |c| async move {
            c.execute("DELETE FROM outbox WHERE id = $1", &[&id])
                .await?;
            Ok(())
        })
        .await
    }

    async fn retry_job(&self, id: i64, at: UnixTime) -> StoreResult<()> {
        self.run(move |c| async move {
            c.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_at = $2, claimed_by = NULL,
                   claimed_until = 0 WHERE id = $1",
                &[&id, &at],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn count_jobs(&self) -> StoreResult<u64> {
        self.run(|c| async move {
            let row = c.query_one("SELECT COUNT(*) FROM outbox", &[]).await?;
            Ok(u64::try_from(col::<i64>(&row, 0)?).unwrap_or(0))
        })
        .await
    }
}
