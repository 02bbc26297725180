//! Users: one namespace for logins and emails, case-insensitive. The SQLite side of `UserStore`.

use super::*;

/// The schema steps of this aggregate, in order.
pub(super) const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    login TEXT NOT NULL,
    login_key TEXT NOT NULL UNIQUE,
    email TEXT NOT NULL,
    email_key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL DEFAULT '',
    phone TEXT NOT NULL DEFAULT '',
    groups TEXT NOT NULL DEFAULT '[]',
    password_hash TEXT NOT NULL,
    dismissed INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
"#];

const USER_COLUMNS: &str =
    "id, login, email, name, phone, groups, password_hash, dismissed, created_at";

fn user_from_row(row: &Row) -> rusqlite::Result<User> {
    let groups: String = row.get(5)?;
    Ok(User {
        id: row.get(0)?,
        login: row.get(1)?,
        email: row.get(2)?,
        name: row.get(3)?,
        phone: row.get(4)?,
        groups: groups_from(&groups).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, Box::new(e))
        })?,
        password_hash: row.get(6)?,
        dismissed: row.get(7)?,
        created_at: row.get(8)?,
    })
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn update_user(&self, user_id: i64, p: &NewUser, now: UnixTime) -> StoreResult<User> {
        let p = p.clone();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for value in [&p.email, &p.login] {
                let taken: bool = tx.query_row(
                    "SELECT EXISTS(SELECT 1 FROM users
                     WHERE (login_key = ?1 OR email_key = ?1) AND id <> ?2)",
                    params![key(value), user_id],
                    |r| r.get(0),
                )?;
                if taken {
                    return Err(StoreError::Duplicate(duplicate_message(value)));
                }
            }
            let groups = serde_json::to_string(&p.groups).map_err(unavailable)?;
            tx.execute(
                "UPDATE users SET login = ?1, login_key = ?2, email = ?3, email_key = ?4, name = ?5,
                   phone = ?6, groups = ?7 WHERE id = ?8",
                params![
                    p.login,
                    key(&p.login),
                    p.email,
                    key(&p.email),
                    p.name,
                    p.phone,
                    groups,
                    user_id
                ],
            )?;
            // Not an ending: the gateways forget the cached sessions and read them again.
            tx.execute(
                "INSERT INTO revocations (user_id, created_at, reason, uncounted) VALUES (?1, ?2, '', 0)",
                params![user_id, now],
            )?;
            // Links and codes sent to the old address or number (an invitation to a mistyped
            // address, a reset link) end with it.
            tx.execute("DELETE FROM recovery WHERE user_id = ?1 AND used_at IS NULL", [user_id])?;
            let user = tx.query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
                [user_id],
                user_from_row,
            )?;
            tx.commit()?;
            Ok(user)
        })
        .await
    }

    async fn create_user(&self, user: NewUser, now: UnixTime) -> StoreResult<User> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            // Logins and emails share one namespace: either may be typed at sign-in.
            for value in [&user.email, &user.login] {
                let taken: bool = tx.query_row(
                    "SELECT EXISTS(SELECT 1 FROM users WHERE login_key = ?1 OR email_key = ?1)",
                    [key(value)],
                    |r| r.get(0),
                )?;
                if taken {
                    return Err(StoreError::Duplicate(duplicate_message(value)));
                }
            }
            let groups = serde_json::to_string(&user.groups).map_err(unavailable)?;
            tx.execute(
                "INSERT INTO users (login, login_key, email, email_key, name, phone, groups, password_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    user.login,
                    key(&user.login),
                    user.email,
                    key(&user.email),
                    user.name,
                    user.phone,
                    groups,
                    user.password_hash,
                    now
                ],
            )?;
            let id = tx.last_insert_rowid();
            let created = tx.query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
                [id],
                user_from_row,
            )?;
            tx.commit()?;
            Ok(created)
        })
        .await
    }
    async fn find_user(&self, login_or_email: &str) -> StoreResult<Option<User>> {
        let k = key(login_or_email);
        self.with(move |c| {
            Ok(c.query_row(
                &format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE login_key = ?1 OR email_key = ?1 ORDER BY login_key = ?1 DESC LIMIT 1"
                ),
                [k],
                user_from_row,
            )
            .optional()?)
        })
        .await
    }
    async fn get_user(&self, id: i64) -> StoreResult<Option<User>> {
        self.with(move |c| {
            Ok(c.query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
                [id],
                user_from_row,
            )
            .optional()?)
        })
        .await
    }
    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {USER_COLUMNS} FROM users ORDER BY login_key"
            ))?;
            let users = stmt
                .query_map([], user_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(users)
        })
        .await
    }
    async fn set_password_hash(&self, user_id: i64, hash: &str) -> StoreResult<()> {
        let hash = hash.to_string();
        self.with(move |c| {
            c.execute(
                "UPDATE users SET password_hash = ?1 WHERE id = ?2",
                params![hash, user_id],
            )?;
            Ok(())
        })
        .await
    }
    async fn set_dismissed(&self, user_id: i64, dismissed: bool) -> StoreResult<()> {
        self.with(move |c| {
            c.execute(
                "UPDATE users SET dismissed = ?1 WHERE id = ?2",
                params![dismissed, user_id],
            )?;
            Ok(())
        })
        .await
    }
}
