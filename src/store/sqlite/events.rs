//! The event log. The SQLite side of `EventStore`.

use super::*;

/// The schema steps of this aggregate, in order.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
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
ALTER TABLE events ADD COLUMN ip_key BLOB;
CREATE INDEX events_by_ip ON events(ip_key, ts);
"#,
];

#[async_trait]
impl EventStore for SqliteStore {
    async fn record_events(&self, events: &[Event]) -> StoreResult<()> {
        let events = events.to_vec();
        self.with(move |c| {
            let tx = c.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO events (ts, event, login, ip, user_agent, session, detail, ip_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                for e in &events {
                    insert.execute(params![
                        e.ts,
                        e.event,
                        e.login,
                        e.ip,
                        e.user_agent,
                        e.session,
                        e.detail,
                        event_ip_key(&e.ip)
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }
    async fn purge_events(&self, before: UnixTime, limit: u32) -> StoreResult<u64> {
        self.with(move |c| {
            Ok(c.execute(
                "DELETE FROM events WHERE id IN
                   (SELECT id FROM events WHERE ts < ?1 ORDER BY ts LIMIT ?2)",
                params![before, limit],
            )? as u64)
        })
        .await
    }
    async fn key_events(&self, limit: u32) -> StoreResult<u64> {
        self.with(move |c| {
            let tx = c.transaction()?;
            let rows: Vec<(i64, String)> = tx
                .prepare("SELECT id, ip FROM events WHERE ip_key IS NULL LIMIT ?1")?
                .query_map(params![limit], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            {
                let mut set = tx.prepare("UPDATE events SET ip_key = ?2 WHERE id = ?1")?;
                for (id, ip) in &rows {
                    set.execute(params![id, event_ip_key(ip)])?;
                }
            }
            tx.commit()?;
            Ok(rows.len() as u64)
        })
        .await
    }
    async fn events(&self, filter: &EventFilter) -> StoreResult<Vec<Event>> {
        let f = filter.clone();
        self.with(move |c| {
            // Only the filters given, so that SQLite can use `events_by_login` or
            // `events_by_ts` (an `?1 IS NULL OR …` condition keeps it from any index).
            let mut sql = String::from(
                "SELECT ts, event, login, ip, user_agent, session, detail FROM events WHERE 1",
            );
            let mut values: Vec<rusqlite::types::Value> = Vec::new();
            if let Some(login) = &f.login {
                sql.push_str(" AND lower(login) = lower(?)");
                values.push(login.clone().into());
            }
            if let Some(event) = &f.event {
                sql.push_str(" AND event = ?");
                values.push(event.clone().into());
            }
            if let Some(since) = f.since {
                sql.push_str(" AND ts >= ?");
                values.push(since.into());
            }
            if let Some(ranges) = &f.ip_ranges {
                sql.push_str(" AND (ip_key IS NULL");
                for (lo, hi) in ranges {
                    sql.push_str(" OR ip_key BETWEEN ? AND ?");
                    values.push(lo.to_vec().into());
                    values.push(hi.to_vec().into());
                }
                sql.push(')');
            }
            sql.push_str(" ORDER BY ts DESC, id DESC LIMIT ?");
            values.push(i64::from(f.limit.unwrap_or(u32::MAX)).into());
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(values), |r| {
                    Ok(Event {
                        ts: r.get(0)?,
                        event: r.get(1)?,
                        login: r.get(2)?,
                        ip: r.get(3)?,
                        user_agent: r.get(4)?,
                        session: r.get(5)?,
                        detail: r.get(6)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }
}
