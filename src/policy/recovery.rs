//! Password recovery's rules: what a new password must be (SPEC §13), which channel a request
//! takes, and how long a message that could not be sent waits before the next try.

/// Why a new password is refused, in the words people see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordRefusal {
    TooShort(usize),
    /// Longer than sign-in accepts (bytes).
    TooLong(usize),
    Mismatch,
    SameAsLogin,
}

impl PasswordRefusal {
    pub fn message(&self) -> String {
        match self {
            PasswordRefusal::TooShort(n) => format!("Password must be at least {n} characters"),
            PasswordRefusal::TooLong(n) => format!("Password must be at most {n} bytes long"),
            PasswordRefusal::Mismatch => "Passwords do not match".into(),
            PasswordRefusal::SameAsLogin => {
                "Password must not be your login or e-mail address".into()
            }
        }
    }
}

/// The longest password sign-in checks (longer ones are refused before hashing); a new one
/// may not be longer, or it could never be used.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A new password typed twice: at least `min_length` characters (counted as characters, not
/// bytes), the same both times, and neither the login nor the e-mail (whatever the case).
pub fn check_new_password(
    password: &str,
    again: &str,
    min_length: usize,
    login: &str,
    email: &str,
) -> Result<(), PasswordRefusal> {
    if password.chars().count() < min_length {
        return Err(PasswordRefusal::TooShort(min_length));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordRefusal::TooLong(MAX_PASSWORD_BYTES));
    }
    if password != again {
        return Err(PasswordRefusal::Mismatch);
    }
    let same = |other: &str| !other.is_empty() && password.to_lowercase() == other.to_lowercase();
    if same(login) || same(email) {
        return Err(PasswordRefusal::SameAsLogin);
    }
    Ok(())
}

/// How a request for a way back in is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    /// A phone number typed goes by SMS when SMS is configured; anything else by e-mail.
    pub fn of(typed_is_phone: bool, sms_configured: bool) -> Channel {
        if typed_is_phone && sms_configured {
            Channel::Sms
        } else {
            Channel::Email
        }
    }

    /// The `channel` label of `portcullis_recovery_total` and the event's detail.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }
}

/// Seconds before the next try of a message that failed `attempts` times: 5 s, doubling, at
/// most 5 minutes; a relay that comes back is used within minutes, a dead one is not hammered.
pub fn retry_delay(attempts: u32) -> i64 {
    5i64.saturating_mul(1 << attempts.min(10)).min(300)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_passwords_follow_the_policy() {
        let check = |p, a| check_new_password(p, a, 8, "alice", "alice@example.com");
        assert_eq!(check("short", "short"), Err(PasswordRefusal::TooShort(8)));
        // Eight characters, more than eight bytes: long enough.
        assert_eq!(check("ääääääää", "ääääääää"), Ok(()));
        assert_eq!(
            check("long enough", "long enougH"),
            Err(PasswordRefusal::Mismatch)
        );
        assert_eq!(
            check("ALICE@example.com", "ALICE@example.com"),
            Err(PasswordRefusal::SameAsLogin)
        );
        assert_eq!(
            check_new_password("alice-long", "alice-long", 8, "Alice-Long", ""),
            Err(PasswordRefusal::SameAsLogin)
        );
        assert_eq!(check("a new secret", "a new secret"), Ok(()));
        let long = "x".repeat(1025);
        assert_eq!(check(&long, &long), Err(PasswordRefusal::TooLong(1024)));
        assert_eq!(
            PasswordRefusal::TooShort(12).message(),
            "Password must be at least 12 characters"
        );
        assert_eq!(
            PasswordRefusal::Mismatch.message(),
            "Passwords do not match"
        );
    }

    #[test]
    fn phone_numbers_go_by_sms_only_when_it_is_configured() {
        assert_eq!(Channel::of(true, true), Channel::Sms);
        assert_eq!(Channel::of(true, false), Channel::Email);
        assert_eq!(Channel::of(false, true), Channel::Email);
    }

    #[test]
    fn retries_back_off_to_five_minutes() {
        let delays: Vec<i64> = (0..8).map(retry_delay).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(retry_delay(u32::MAX), 300);
    }
}
