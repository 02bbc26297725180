//! The gateway's cookie names (with `__Host-` when Secure) and their `Set-Cookie` lines:
//! derived once per configuration from `session.cookie_name` and `public_url`.

use std::time::Duration;

/// Names and attributes of the cookies the gateway sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieNames {
    pub session: String,
    pub remember: String,
    pub csrf: String,
    /// A sign-in waiting for its second step.
    pub pending: String,
    pub secure: bool,
}

impl CookieNames {
    pub fn new(base: &str, secure: bool) -> CookieNames {
        let prefix = if secure { "__Host-" } else { "" };
        CookieNames {
            session: format!("{prefix}{base}"),
            remember: format!("{prefix}{base}_remember"),
            csrf: format!("{prefix}{base}_csrf"),
            pending: format!("{prefix}{base}_pending"),
            secure,
        }
    }

    pub fn all(&self) -> [&str; 4] {
        [&self.session, &self.remember, &self.csrf, &self.pending]
    }

    /// `Set-Cookie` for `name`; without `max_age` it lasts until the browser closes.
    pub fn set(&self, name: &str, value: &str, max_age: Option<Duration>) -> String {
        let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
        if let Some(age) = max_age {
            c.push_str(&format!("; Max-Age={}", age.as_secs()));
        }
        if self.secure {
            c.push_str("; Secure");
        }
        c
    }

    /// `Set-Cookie` that removes `name`.
    pub fn clear(&self, name: &str) -> String {
        self.set(name, "", Some(Duration::ZERO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_get_the_host_prefix_when_secure() {
        let plain = CookieNames::new("portcullis_session", false);
        assert_eq!(
            plain.all(),
            [
                "portcullis_session",
                "portcullis_session_remember",
                "portcullis_session_csrf",
                "portcullis_session_pending"
            ]
        );
        let secure = CookieNames::new("portcullis_session", true);
        assert_eq!(secure.session, "__Host-portcullis_session");
        assert_eq!(secure.remember, "__Host-portcullis_session_remember");
    }

    #[test]
    fn set_cookie_attributes() {
        let cases = [
            (false, None, "s=v; Path=/; HttpOnly; SameSite=Lax"),
            (true, None, "s=v; Path=/; HttpOnly; SameSite=Lax; Secure"),
            (
                false,
                Some(60),
                "s=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=60",
            ),
        ];
        for (secure, age, want) in cases {
            let names = CookieNames::new("x", secure);
            assert_eq!(names.set("s", "v", age.map(Duration::from_secs)), want);
        }
        assert!(
            CookieNames::new("x", false)
                .clear("s")
                .contains("Max-Age=0")
        );
    }
}
