//! Who someone is: a user as stored (`User`, `NewUser`), the identity the portal is told
//! (`Identity`), and where a request comes from for the record (`Client`). Plain data; a
//! password hash never shows in `Debug`.

use std::fmt;

use crate::core::time::UnixTime;

#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub login: String,
    pub email: String,
    pub name: String,
    pub phone: String,
    pub groups: Vec<String>,
    pub password_hash: String,
    pub dismissed: bool,
    pub created_at: UnixTime,
}

impl User {
    /// Invited and not yet registered: no password has been set (`user invite`).
    pub fn is_invited(&self) -> bool {
        self.password_hash.is_empty()
    }
}

#[derive(Clone)]
pub struct NewUser {
    pub login: String,
    pub email: String,
    pub name: String,
    pub phone: String,
    pub groups: Vec<String>,
    pub password_hash: String,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("login", &self.login)
            .field("email", &self.email)
            .field("name", &self.name)
            .field("phone", &self.phone)
            .field("groups", &self.groups)
            .field("password_hash", &"[redacted]")
            .field("dismissed", &self.dismissed)
            .field("created_at", &self.created_at)
            .finish()
    }
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("login", &self.login)
            .field("email", &self.email)
            .field("groups", &self.groups)
            .field("password_hash", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// Who a session belongs to, as the portal will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: i64,
    pub login: String,
    pub email: String,
    pub name: String,
    pub groups: Vec<String>,
}

impl Identity {
    pub fn of(user: &User) -> Identity {
        Identity {
            user_id: user.id,
            login: user.login.clone(),
            email: user.email.clone(),
            name: user.name.clone(),
            groups: user.groups.clone(),
        }
    }
}

/// Where a request comes from, for the event log and the session record.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub ip: String,
    pub user_agent: String,
}

/// A phone number as compared: `+` (if written first) and the digits, nothing else; `None`
/// for text with fewer than 6 digits or with letters (then it is a login or an e-mail).
pub fn phone_key(text: &str) -> Option<String> {
    let text = text.trim();
    let allowed = |c: char| c.is_ascii_digit() || " -.()/".contains(c);
    let rest = text.strip_prefix('+').unwrap_or(text);
    if rest.is_empty() || !rest.chars().all(allowed) {
        return None;
    }
    let digits: String = rest.chars().filter(char::is_ascii_digit).collect();
    let plus = if text.starts_with('+') { "+" } else { "" };
    (digits.len() >= 6).then(|| format!("{plus}{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_compare_by_their_digits() {
        assert_eq!(phone_key("+49 (30) 1234-567"), Some("+49301234567".into()));
        assert_eq!(phone_key("030 123456"), Some("030123456".into()));
        for not_a_phone in [
            "alice@example.com",
            "alice",
            "12345",
            "+",
            "",
            "+49 30 12a4567",
            "1+23456",
        ] {
            assert_eq!(phone_key(not_a_phone), None, "{not_a_phone}");
        }
    }

    #[test]
    fn a_users_password_hash_never_shows_in_debug() {
        let user = User {
            id: 1,
            login: "ann".into(),
            email: "ann@example.com".into(),
            name: String::new(),
            phone: String::new(),
            groups: vec![],
            password_hash: "$argon2id$v=19$secret".into(),
            dismissed: false,
            created_at: 0,
        };
        assert!(!format!("{user:?}").contains("argon2id"));
        let new = NewUser {
            login: "ann".into(),
            email: "ann@example.com".into(),
            name: String::new(),
            phone: String::new(),
            groups: vec![],
            password_hash: "$argon2id$v=19$secret".into(),
        };
        assert!(!format!("{new:?}").contains("argon2id"));
    }
}
