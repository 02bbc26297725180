//! Users: one namespace for logins and emails, case-insensitive. The PostgreSQL side of `UserStore`.

use super::*;

/// The schema steps of this aggregate, in order.
pub(super) const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    login TEXT NOT NULL,
    login_key TEXT NOT NULL UNIQUE,
    email TEXT NOT NULL,
    email_key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL DEFAULT '',
    phone TEXT NOT NULL DEFAULT '',
    groups TEXT NOT NULL DEFAULT '[]',
    password_hash TEXT NOT NULL,
    dismissed BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);
"#];

const USER_COLUMNS: &str =
    "id, login, email, name, phone, groups, password_hash, dismissed, created_at";

fn user_from_row(row: &Row) -> StoreResult<User> {
    let groups: String = col(row, 5)?;
    Ok(User {
        id: col(row, 0)?,
        login: col(row, 1)?,
        email: col(row, 2)?,
        name: col(row, 3)?,
        phone: col(row, 4)?,
        groups: groups_from(&groups)?,
        password_hash: col(row, 6)?,
        dismissed: col(row, 7)?,
        created_at: col(row, 8)?,
    })
}

#[async_trait]
impl UserStore for PostgresStore {
    async fn update_user(&self, user_id: i64, p: &NewUser, now: UnixTime) -> StoreResult<User> {
        let p = p.clone();
        self.run(move |mut c| async move {
            let tx = c.transaction().await?;
            tx.batch_execute("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
                .await?;
            for value in [&p.email, &p.login] {
                let taken: bool = tx
                    .query_one(
                        "SELECT EXISTS(SELECT 1 FROM users
                         WHERE (login_key = $1 OR email_key = $1) AND id <> $2)",
                        &[&key(value), &user_id],
                    )
                    .await?
                    .try_get(0)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                if taken {
                    return Err(StoreError::Duplicate(duplicate_message(value)));
                }
            }
            let groups = serde_json::to_string(&p.groups).map_err(unavailable)?;
            let row = tx
                .query_one(
                    &format!(
                        "UPDATE users SET login = $1, login_key = $2, email = $3, email_key = $4,
                           name = $5, phone = $6, groups = $7 WHERE id = $8 RETURNING {USER_COLUMNS}"
                    ),
                    &[
                        &p.login,
                        &key(&p.login),
                        &p.email,
                        &key(&p.email),
                        &p.name,
                        &p.phone,
                        &groups,
                        &user_id,
                    ],
                )
                .await?;
            // Not an ending: the gateways forget the cached sessions and read them again.
            super::sessions::publishing_revocation(&tx).await?;
            tx.execute(
                "INSERT INTO revocations (user_id, created_at, reason, uncounted) VALUES ($1, $2, '', 0)",
                &[&user_id, &now],
            )
            .await?;
            tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL])
                .await?;
            // Links and codes sent to the old address or number (an invitation to a mistyped
            // address, a reset link) end with it.
            tx.execute("DELETE FROM recovery WHERE user_id = $1 AND used_at IS NULL", &[&user_id])
                .await?;
            tx.commit().await?;
            user_from_row(&row)
        })
        .await
    }

    async fn create_user(&self, user: NewUser, now: UnixTime) -> StoreResult<User> {
        self.run(move |mut c| async move {
            let tx = c.transaction().await?;
            // Logins and emails share one namespace; creations take turns so that two at once
            // cannot both find a name free.
            tx.batch_execute("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
                .await?;
            for value in [&user.email, &user.login] {
                let taken: bool = tx
                    .query_one(
                        "SELECT EXISTS(SELECT 1 FROM users WHERE login_key = $1 OR email_key = $1)",
                        &[&key(value)],
                    )
                    .await?
                    .try_get(0)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                if taken {
                    return Err(StoreError::Duplicate(duplicate_message(value)));
                }
            }
            let groups = serde_json::to_string(&user.groups).map_err(unavailable)?;
            let row = tx
                .query_one(
                    &format!(
                        "INSERT INTO users (login, login_key, email, email_key, name, phone, groups, password_hash, created_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {USER_COLUMNS}"
                    ),
                    &[
                        &user.login,
                        &key(&user.login),
                        &user.email,
                        &key(&user.email),
                        &user.name,
                        &user.phone,
                        &groups,
                        &user.password_hash,
                        &now,
                    ],
                )
                .await
                .map_err(|e| match e.code() {
                    Some(code) if *code == SqlState::UNIQUE_VIOLATION => {
                        StoreError::Duplicate(duplicate_message(&user.email))
                    }
                    _ => e.into(),
                })?;
            tx.commit().await?;
            user_from_row(&row)
        })
        .await
    }
    async fn find_user(&self, login_or_email: &str) -> StoreResult<Option<User>> {
        let k = key(login_or_email);
        self.run(move |c| async move {
            let row = c
                .query_opt(
                    &format!(
                        "SELECT {USER_COLUMNS} FROM users WHERE login_key = $1 OR email_key = $1
                         ORDER BY login_key = $1 DESC LIMIT 1"
                    ),
                    &[&k],
                )
                .await?;
            row.as_ref().map(user_from_row).transpose()
        })
        .await
    }
    async fn get_user(&self, id: i64) -> StoreResult<Option<User>> {
        self.run(move |c| async move {
            let row = c
                .query_opt(
                    &format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"),
                    &[&id],
                )
                .await?;
            row.as_ref().map(user_from_row).transpose()
        })
        .await
    }
    async fn fresh_user(&self, id: i64) -> StoreResult<Option<User>> {
        self.run(move |c| async move {
            // FOR SHARE waits for a transaction that is changing the row, then reads what it
            // committed (plain reads would see the row as it was).
            let row = c
                .query_opt(
                    &format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1 FOR SHARE"),
                    &[&id],
                )
                .await?;
            row.as_ref().map(user_from_row).transpose()
        })
        .await
    }
    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.run(|c| async move {
            let rows = c
                .query(
                    // Byte order, as SQLite sorts, whatever the database's collation.
                    &format!("SELECT {USER_COLUMNS} FROM users ORDER BY login_key COLLATE \"C\""),
                    &[],
                )
                .await?;
            rows.iter().map(user_from_row).collect()
        })
        .await
    }
    async fn set_password_hash(&self, user_id: i64, hash: &str) -> StoreResult<()> {
        let hash = hash.to_string();
        self.run(move |c| async move {
            c.execute(
                "UPDATE users SET password_hash = $1 WHERE id = $2",
                &[&hash, &user_id],
            )
            .await?;
            Ok(())
        })
        .await
    }
    async fn set_dismissed(&self, user_id: i64, dismissed: bool) -> StoreResult<()> {
        self.run(move |c| async move {
            c.execute(
                "UPDATE users SET dismissed = $1 WHERE id = $2",
                &[&dismissed, &user_id],
            )
            .await?;
            Ok(())
        })
        .await
    }
}
