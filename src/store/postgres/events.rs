//! The event log. The PostgreSQL side of `EventStore`.

use super::*;

/// The schema steps of this aggregate, in order.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    ts BIGINT NOT NULL,
    event TEXT NOT NULL,
    login TEXT NOT NULL DEFAULT '',
    ip TEXT NOT NULL DEFAULT '',
    user_agent TEXT NOT NULL DEFAULT '',
    session TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX events_by_ts ON events(ts);
"#,
    r#"
CREATE INDEX events_by_login ON events(lower(login), ts);
"#,
    r#"
ALTER TABLE events ADD COLUMN ip_key BYTEA;
CREATE INDEX events_by_ip ON events(ip_key, ts);
"#,
];

fn event_from_row(r: &Row) -> StoreResult<Event> {
    Ok(Event {
        ts: col(r, 0)?,
        event: col(r, 1)?,
        login: col(r, 2)?,
        ip: col(r, 3)?,
        user_agent: col(r, 4)?,
        session: col(r, 5)?,
        detail: col(r, 6)?,
    })
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn record_events(&self, events: &[Event]) -> StoreResult<()> {
        let events = events.to_vec();
        self.run(move |mut c| async move {
            let tx = c.transaction().await?;
            let insert = tx
                .prepare(
                    "INSERT INTO events (ts, event, login, ip, user_agent, session, detail, ip_key)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .await?;
            for e in &events {
                tx.execute(
                    &insert,
                    &[
                        &e.ts,
                        &e.event,
                        &e.login,
                        &e.ip,
                        &e.user_agent,
                        &e.session,
                        &e.detail,
                        &event_ip_key(&e.ip),
                    ],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }
    async fn purge_events(&self, before: UnixTime, limit: u32) -> StoreResult<u64> {
        self.run(move |c| async move {
            Ok(c.execute(
                "DELETE FROM events WHERE id IN
                   (SELECT id FROM events WHERE ts < $1 ORDER BY ts LIMIT $2)",
                &[&before, &i64::from(limit)],
            )
            .await?)
        })
        .await
    }
    async fn key_events(&self, limit: u32) -> StoreResult<u64> {
        self.run(move |mut c| async move {
            let tx = c.transaction().await?;
            let rows = tx
                .query(
                    "SELECT id, ip FROM events WHERE ip_key IS NULL LIMIT $1 FOR UPDATE SKIP LOCKED",
                    &[&i64::from(limit)],
                )
                .await?;
            let set = tx
                .prepare("UPDATE events SET ip_key = $2 WHERE id = $1")
                .await?;
            for row in &rows {
                let (id, ip): (i64, String) = (col(row, 0)?, col(row, 1)?);
                tx.execute(&set, &[&id, &event_ip_key(&ip)]).await?;
            }
            tx.commit().await?;
            Ok(rows.len() as u64)
        })
        .await
    }
    async fn events(&self, filter: &EventFilter) -> StoreResult<Vec<Event>> {
        let f = filter.clone();
        self.run(move |c| async move {
            let limit = f.limit.map(i64::from);
            let mut sql = String::from(
                "SELECT ts, event, login, ip, user_agent, session, detail FROM events
                 WHERE ($1::TEXT IS NULL OR lower(login) = lower($1))
                   AND ($2::TEXT IS NULL OR event = $2)
                   AND ($3::BIGINT IS NULL OR ts >= $3)",
            );
            let bounds: Vec<Vec<u8>> = f
                .ip_ranges
                .iter()
                .flatten()
                .flat_map(|(lo, hi)| [lo.to_vec(), hi.to_vec()])
                .collect();
            if f.ip_ranges.is_some() {
                sql.push_str(" AND (ip_key IS NULL");
                for n in (0..bounds.len()).step_by(2) {
                    sql.push_str(&format!(" OR ip_key BETWEEN ${} AND ${}", n + 5, n + 6));
                }
                sql.push(')');
            }
            sql.push_str(" ORDER BY ts DESC, id DESC LIMIT $4");
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                vec![&f.login, &f.event, &f.since, &limit];
            params.extend(
                bounds
                    .iter()
                    .map(|b| b as &(dyn tokio_postgres::types::ToSql + Sync)),
            );
            let rows = c.query(&sql, &params).await?;
            rows.iter().map(event_from_row).collect()
        })
        .await
    }
}
