//! The gateway's cookies: their names (with `__Host-` when Secure), `Set-Cookie` values, and
//! reading or removing them from a request's `Cookie` header. Pure text handling.

use std::time::Duration;

/// Names and attributes of the three cookies the gateway sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieNames {
    pub session: String,
    pub remember: String,
    pub csrf: String,
    pub secure: bool,
}

impl CookieNames {
    pub fn new(base: &str, secure: bool) -> CookieNames {
        let prefix = if secure { "__Host-" } else { "" };
        CookieNames {
            session: format!("{prefix}{base}"),
            remember: format!("{prefix}{base}_remember"),
            csrf: format!("{prefix}{base}_csrf"),
            secure,
        }
    }

    pub fn all(&self) -> [&str; 3] {
        [&self.session, &self.remember, &self.csrf]
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

/// Iterates `(name, value)` pairs of one `Cookie` header value.
fn pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header.split(';').filter_map(|part| {
        let (name, value) = part.split_once('=')?;
        Some((name.trim(), value.trim().trim_matches('"')))
    })
}

/// The first value of cookie `name` across all `Cookie` headers.
pub fn find<'a>(headers: impl IntoIterator<Item = &'a str>, name: &str) -> Option<&'a str> {
    headers
        .into_iter()
        .flat_map(pairs)
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// The `Cookie` header value without the gateway's own cookies; `None` when nothing is left.
/// Works on bytes: a header that is not valid UTF-8 must lose the gateway's cookies too.
pub fn without(header: &[u8], names: &[&str]) -> Option<Vec<u8>> {
    let kept: Vec<&[u8]> = header
        .split(|&b| b == b';')
        .map(<[u8]>::trim_ascii)
        .filter(|part| {
            let name = part
                .split(|&b| b == b'=')
                .next()
                .unwrap_or(part)
                .trim_ascii();
            !part.is_empty() && !names.iter().any(|n| n.as_bytes() == name)
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join(&b"; "[..]))
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
                "portcullis_session_csrf"
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

    #[test]
    fn finds_cookies_across_headers() {
        let cases: [(&[&str], &str, Option<&str>); 5] = [
            (&["a=1; b=2"], "b", Some("2")),
            (&["a=1", "b=2"], "b", Some("2")),
            (&["ab=1"], "a", None),
            (&["a=\"q\""], "a", Some("q")),
            (&["a=1; a=2"], "a", Some("1")),
        ];
        for (headers, name, want) in cases {
            assert_eq!(find(headers.iter().copied(), name), want, "{headers:?}");
        }
    }

    #[test]
    fn strips_only_gateway_cookies() {
        let names = ["s", "s_remember"];
        let cases = [
            ("s=1; app=2", Some("app=2")),
            ("app=2;s_remember=x;  other=3", Some("app=2; other=3")),
            ("s=1; s_remember=2", None),
            ("ss=1", Some("ss=1")),
        ];
        for (header, want) in cases {
            let got = without(header.as_bytes(), &names);
            assert_eq!(got.as_deref(), want.map(str::as_bytes), "{header}");
        }
        // Not UTF-8: our cookie still goes, the other bytes stay as they were.
        assert_eq!(
            without(b"s=1; app=\xff\xfe", &names),
            Some(b"app=\xff\xfe".to_vec())
        );
    }
}
