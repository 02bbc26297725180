//! Secret values the gateway hands out (session ids, remember-me tokens, CSRF tokens) and their
//! hashes. Their `Debug` prints `[redacted]`, so they cannot reach a log line by accident; only
//! hashes are ever stored.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

fn random_b64(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// True when `s` looks like something we issued: base64url of the right length.
fn is_b64_of_len(s: &str, chars: usize) -> bool {
    s.len() == chars
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// SHA-256 of a session id: the only form in which the store keeps it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionHash(pub [u8; 32]);

impl SessionHash {
    /// First 8 hex characters: enough to follow one session through the event log.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Debug for SessionHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionHash({})", self.short())
    }
}

/// A session id: 256 random bits, base64url.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

impl SessionToken {
    pub fn generate() -> SessionToken {
        SessionToken(random_b64(32))
    }

    /// Accepts a cookie value only if it has the shape of an id we issue.
    pub fn parse(value: &str) -> Option<SessionToken> {
        is_b64_of_len(value, 43).then(|| SessionToken(value.to_string()))
    }

    pub fn hash(&self) -> SessionHash {
        SessionHash(sha256(&[self.0.as_bytes()]))
    }

    /// The value to put in the cookie. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The CSRF token for forms posted within this session: derived from the id, so it needs no
    /// storage and cannot be computed by someone who does not hold the cookie.
    pub fn csrf(&self) -> String {
        URL_SAFE_NO_PAD.encode(&sha256(&[b"portcullis-csrf\0", self.0.as_bytes()])[..16])
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken([redacted])")
    }
}

/// A "Stay signed in" token: `selector.validator`. The selector finds the row, the validator
/// proves possession and is stored only as a hash; each use issues a new validator.
#[derive(Clone, PartialEq, Eq)]
pub struct RememberToken {
    pub selector: String,
    validator: String,
}

impl RememberToken {
    pub fn generate() -> RememberToken {
        RememberToken {
            selector: random_b64(16),
            validator: random_b64(32),
        }
    }

    /// Same selector, fresh validator.
    pub fn rotate(&self) -> RememberToken {
        RememberToken {
            selector: self.selector.clone(),
            validator: random_b64(32),
        }
    }

    pub fn parse(value: &str) -> Option<RememberToken> {
        let (selector, validator) = value.split_once('.')?;
        (is_b64_of_len(selector, 22) && is_b64_of_len(validator, 43)).then(|| RememberToken {
            selector: selector.to_string(),
            validator: validator.to_string(),
        })
    }

    pub fn validator_hash(&self) -> [u8; 32] {
        sha256(&[self.validator.as_bytes()])
    }

    /// Constant-time comparison with a stored validator hash.
    pub fn matches(&self, stored: &[u8]) -> bool {
        self.validator_hash().ct_eq(stored).into()
    }

    /// The cookie value. Never log it.
    pub fn expose(&self) -> String {
        format!("{}.{}", self.selector, self.validator)
    }
}

impl fmt::Debug for RememberToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RememberToken({}.[redacted])", self.selector)
    }
}

/// A random token for the login form's double-submit CSRF cookie.
pub fn login_csrf() -> String {
    random_b64(16)
}

/// A CAPTCHA challenge id: 128 random bits, base64url (it appears in the image's URL).
pub fn challenge_id() -> String {
    random_b64(16)
}

pub fn is_challenge_id(id: &str) -> bool {
    is_b64_of_len(id, 22)
}

/// Constant-time equality for two submitted tokens.
pub fn same_token(a: &str, b: &str) -> bool {
    !a.is_empty() && a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_ids_are_22_base64url_characters() {
        assert!(is_challenge_id(&challenge_id()));
        assert!(is_challenge_id("abcdefghijklmnopqrstu_"));
        assert!(!is_challenge_id("abcdefghijklmnopqrstu"));
        assert!(!is_challenge_id("abcdefghijklmnopqrst/_"));
        assert!(!is_challenge_id("../../../../etc/passwd"));
    }

    #[test]
    fn session_tokens_round_trip_and_hide_in_debug() {
        let t = SessionToken::generate();
        assert_eq!(SessionToken::parse(t.expose()), Some(t.clone()));
        assert_eq!(format!("{t:?}"), "SessionToken([redacted])");
        assert_ne!(t.hash(), SessionToken::generate().hash());
        assert_eq!(t.hash().short().len(), 8);
    }

    #[test]
    fn malformed_cookie_values_are_refused() {
        for bad in [
            "",
            "abc",
            "../../etc/passwd",
            &"a".repeat(44),
            &"+".repeat(43),
        ] {
            assert!(SessionToken::parse(bad).is_none(), "{bad}");
        }
        for bad in [
            "",
            "a.b",
            "nodot",
            &format!("{}.{}", "a".repeat(22), "b".repeat(42)),
        ] {
            assert!(RememberToken::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn remember_tokens_rotate_validator_only() {
        let t = RememberToken::generate();
        let parsed = RememberToken::parse(&t.expose()).unwrap();
        assert!(parsed.matches(&t.validator_hash()));
        let r = t.rotate();
        assert_eq!(r.selector, t.selector);
        assert!(!t.matches(&r.validator_hash()));
        assert!(!format!("{t:?}").contains(&t.validator));
    }

    #[test]
    fn csrf_is_bound_to_the_session() {
        let a = SessionToken::generate();
        assert_eq!(a.csrf(), a.csrf());
        assert_ne!(a.csrf(), SessionToken::generate().csrf());
        assert!(same_token(&a.csrf(), &a.csrf()));
        assert!(!same_token("", ""));
    }
}
