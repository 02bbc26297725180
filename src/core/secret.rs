//! Secret values: what the gateway hands out (session ids, remember-me tokens, CSRF tokens),
//! their hashes, and passwords as typed. Their `Debug` prints `[redacted]`, so they cannot
//! reach a log line by accident; only hashes are ever stored.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
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
    pub fn csrf(&self) -> CsrfToken {
        CsrfToken(URL_SAFE_NO_PAD.encode(&sha256(&[b"portcullis-csrf\0", self.0.as_bytes()])[..16]))
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

    /// What this token is traded for at its next use: a session id and the same selector with
    /// a new validator, both HMAC-SHA256 of this validator under `key`, a secret every gateway
    /// of the store shares (and the store keeps apart from the tokens' hashes). Every gateway
    /// that sees this token computes the same pair, so parallel requests of one browser racing
    /// with it all get the one session the winner made; without the key nobody can compute
    /// them, not even someone holding this very token.
    pub fn successor(&self, key: &[u8; 32]) -> (SessionToken, RememberToken) {
        let derive = |label: &[u8]| {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes 32 bytes");
            mac.update(label);
            mac.update(self.validator.as_bytes());
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        };
        let next = RememberToken {
            selector: self.selector.clone(),
            validator: derive(b"portcullis remember-me validator\0"),
        };
        (
            SessionToken(derive(b"portcullis remember-me session\0")),
            next,
        )
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

/// A CSRF token: what a form carries to prove it came from one of our pages. `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct CsrfToken(String);

impl CsrfToken {
    /// The value for the form (and the cookie). Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `posted` is this token (constant time).
    pub fn matches(&self, posted: &str) -> bool {
        same_token(posted, &self.0)
    }
}

/// Reading a token as text is exposing it, as `expose` does: for forms and comparisons.
impl std::ops::Deref for CsrfToken {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CsrfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CsrfToken([redacted])")
    }
}

/// How long a login form's CSRF token is accepted.
pub const LOGIN_CSRF_LIFETIME: i64 = 4 * 3600;
const LOGIN_CSRF_BYTES: usize = 8 + 12 + 16;

/// The login form's CSRF token, carried in a cookie and in the form (double submit) and bound,
/// by an HMAC under a key all gateways share, to its expiry and to the client's address
/// (`client`: the throttle key, so an IPv6 client is bound to its /64). Nobody can pick their
/// own, and one fetched by someone else, from another address, does not work.
/// Layout, base64url: expiry (seconds, 8 bytes) ‖ nonce (12) ‖ tag (16).
pub fn login_csrf(key: &[u8; 32], client: &str, now: i64) -> CsrfToken {
    let mut bytes = Vec::with_capacity(LOGIN_CSRF_BYTES);
    bytes.extend_from_slice(&(now + LOGIN_CSRF_LIFETIME).to_be_bytes());
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    bytes.extend_from_slice(&nonce);
    let tag = login_csrf_tag(key, &bytes, client);
    bytes.extend_from_slice(&tag);
    CsrfToken(URL_SAFE_NO_PAD.encode(bytes))
}

/// Seconds a login CSRF token has left at `now`, if it is one of ours, for this client.
pub fn login_csrf_left(key: &[u8; 32], token: &str, client: &str, now: i64) -> Option<i64> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    if bytes.len() != LOGIN_CSRF_BYTES {
        return None;
    }
    let (signed, tag) = bytes.split_at(20);
    let expected = login_csrf_tag(key, signed, client);
    if !bool::from(expected.ct_eq(tag)) {
        return None;
    }
    let expires = i64::from_be_bytes(signed[..8].try_into().ok()?);
    (expires > now).then_some(expires - now)
}

fn login_csrf_tag(key: &[u8; 32], signed: &[u8], client: &str) -> [u8; 16] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes 32-byte keys");
    mac.update(b"portcullis login csrf\0");
    mac.update(signed);
    mac.update(client.as_bytes());
    let full = mac.finalize().into_bytes();
    let mut tag = [0u8; 16];
    tag.copy_from_slice(&full[..16]);
    tag
}

/// A session's public handle (the account page's "End" buttons, `api/account/sessions/{id}`):
/// 96 bits of an HMAC of its hash, so it names the session without being its token or hash,
/// and nobody can make one without the key.
pub fn session_handle(key: &[u8; 32], hash: &SessionHash) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes 32-byte keys");
    mac.update(b"portcullis session handle\0");
    mac.update(&hash.0);
    URL_SAFE_NO_PAD.encode(&mac.finalize().into_bytes()[..12])
}

/// Whether `text` has the shape of a session handle (16 base64url characters).
pub fn is_session_handle(text: &str) -> bool {
    is_b64_of_len(text, 16)
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

/// A password as typed. `Debug` never shows it.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn new(text: impl Into<String>) -> Password {
        Password(text.into())
    }

    /// Characters, not bytes: what a person counts.
    pub fn len(&self) -> usize {
        self.0.chars().count()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A random password for generated accounts: 16 characters that are easy to read aloud.
    pub fn generate() -> Password {
        use rand::Rng;
        use rand::rngs::OsRng;
        const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789";
        let mut rng = OsRng;
        Password(
            (0..16)
                .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
                .collect(),
        )
    }

    /// The text, for hashing or for printing once to the operator who asked for it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// A TOTP secret: 160 random bits (RFC 4226's recommendation). `Debug` never shows it; the
/// store keeps it sealed with the master key only.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret(Vec<u8>);

impl TotpSecret {
    pub fn generate() -> TotpSecret {
        let mut bytes = vec![0u8; 20];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        TotpSecret(bytes)
    }

    pub fn from_bytes(bytes: Vec<u8>) -> TotpSecret {
        TotpSecret(bytes)
    }

    /// The bytes, to seal or to compute codes with. Never log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret([redacted])")
    }
}

/// A code someone typed for the second step (from an app, or a backup code). `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct OneTimeCode(String);

impl OneTimeCode {
    pub fn new(typed: impl Into<String>) -> OneTimeCode {
        OneTimeCode(typed.into())
    }

    /// What was typed. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// As an app's code: the digits only (people type `123 456`), when that is all it is.
    pub fn digits(&self) -> Option<String> {
        let digits: String = self.0.chars().filter(|c| !c.is_whitespace()).collect();
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
    }

    /// As a backup code: lower-case letters and digits of the backup alphabet, without the
    /// dash and spaces people type, when it has the length of one.
    pub fn backup(&self) -> Option<BackupCode> {
        let plain: String = self
            .0
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        (plain.len() == BACKUP_LEN && plain.bytes().all(|b| BACKUP_ALPHABET.contains(&b)))
            .then_some(BackupCode(plain))
    }
}

impl fmt::Debug for OneTimeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OneTimeCode([redacted])")
    }
}

/// Letters and digits people cannot mistake for one another (no 0/o, 1/i/l).
pub const BACKUP_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
const BACKUP_LEN: usize = 10;

/// A backup code, 10 characters of `BACKUP_ALPHABET`, shown `xxxxx-xxxxx`. `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct BackupCode(String);

impl BackupCode {
    pub fn generate() -> BackupCode {
        use rand::Rng;
        let mut rng = rand::rngs::OsRng;
        BackupCode(
            (0..BACKUP_LEN)
                .map(|_| BACKUP_ALPHABET[rng.gen_range(0..BACKUP_ALPHABET.len())] as char)
                .collect(),
        )
    }

    /// As it is shown once to its owner: `xxxxx-xxxxx`.
    pub fn display(&self) -> String {
        format!("{}-{}", &self.0[..5], &self.0[5..])
    }

    /// The ten characters, for hashing. Never log them.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BackupCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BackupCode([redacted])")
    }
}

/// How long a pending sign-in (the right password, the second step to come) lasts.
pub const PENDING_LIFETIME: i64 = 5 * 60;
const PENDING_BYTES: usize = 8 + 1 + 8 + 16 + 8 + 16;

/// A sign-in waiting for its second step, as the browser's `<cookie_name>_pending` cookie
/// carries it: who, whether "Stay signed in" was ticked, whether the factor must first be set
/// up, until when, and which password it was made with (a new one ends it); MAC'd under a key
/// derived from the key file, so nobody can make one, not even with the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    pub user_id: i64,
    pub remember: bool,
    pub setup: bool,
    pub expires_at: i64,
    /// `Pending::credential` of the password hash at the first step.
    pub credential: [u8; 16],
}

impl Pending {
    /// What binds a pending sign-in to the user's password as it was: a digest of its stored
    /// hash (which is salted: the digest says nothing about the password).
    pub fn credential(password_hash: &str) -> [u8; 16] {
        let digest = Sha256::new()
            .chain_update(b"portcullis pending credential\0")
            .chain_update(password_hash.as_bytes())
            .finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        out
    }

    /// The cookie value for this pending sign-in.
    pub fn seal(&self, key: &[u8; 32]) -> PendingToken {
        let mut bytes = Vec::with_capacity(PENDING_BYTES);
        bytes.extend_from_slice(&self.user_id.to_be_bytes());
        bytes.push(u8::from(self.remember) | (u8::from(self.setup) << 1));
        bytes.extend_from_slice(&self.expires_at.to_be_bytes());
        bytes.extend_from_slice(&self.credential);
        let mut nonce = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        bytes.extend_from_slice(&nonce);
        let tag = pending_tag(key, &bytes);
        bytes.extend_from_slice(&tag);
        PendingToken(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The pending sign-in a cookie holds, if it is one of ours and not expired at `now`.
    pub fn open(key: &[u8; 32], cookie: &str, now: i64) -> Option<Pending> {
        let bytes = URL_SAFE_NO_PAD.decode(cookie).ok()?;
        if bytes.len() != PENDING_BYTES {
            return None;
        }
        let (signed, tag) = bytes.split_at(PENDING_BYTES - 16);
        if !bool::from(pending_tag(key, signed).ct_eq(tag)) {
            return None;
        }
        let pending = Pending {
            user_id: i64::from_be_bytes(signed[..8].try_into().ok()?),
            remember: signed[8] & 1 != 0,
            setup: signed[8] & 2 != 0,
            expires_at: i64::from_be_bytes(signed[9..17].try_into().ok()?),
            credential: signed[17..33].try_into().ok()?,
        };
        (pending.expires_at > now).then_some(pending)
    }
}

/// The cookie value of a pending sign-in: whoever holds it may try codes for that user (each
/// wrong one counted). `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct PendingToken(String);

impl PendingToken {
    /// The cookie value. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PendingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PendingToken([redacted])")
    }
}

fn pending_tag(key: &[u8; 32], signed: &[u8]) -> [u8; 16] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes 32-byte keys");
    mac.update(b"portcullis pending sign-in\0");
    mac.update(signed);
    let full = mac.finalize().into_bytes();
    let mut tag = [0u8; 16];
    tag.copy_from_slice(&full[..16]);
    tag
}

/// A change of e-mail address or phone number waiting for its confirmation (SPEC §14): the
/// link mailed to the new address (or the code form of a new phone) carries it, signed with a
/// key from the key file (one key per kind of contact), so the store keeps nothing of it and
/// nobody can make one. It names the value it replaces (as a digest): once the change is made,
/// or another one is, it no longer fits and is dead.
#[derive(Clone, PartialEq, Eq)]
pub struct ContactChange {
    pub user_id: i64,
    pub expires_at: i64,
    /// `ContactChange::address_digest` of the address being replaced.
    pub old: [u8; 16],
    /// The new e-mail address or phone number.
    pub new_value: String,
}

impl ContactChange {
    pub fn address_digest(email: &str) -> [u8; 16] {
        let digest = Sha256::new()
            .chain_update(b"portcullis e-mail change\0")
            .chain_update(email.trim().to_lowercase().as_bytes())
            .finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        out
    }

    /// The link's token. Never log it.
    pub fn seal(&self, key: &[u8; 32]) -> String {
        let mut bytes = Vec::with_capacity(32 + self.new_value.len() + 16);
        bytes.extend_from_slice(&self.user_id.to_be_bytes());
        bytes.extend_from_slice(&self.expires_at.to_be_bytes());
        bytes.extend_from_slice(&self.old);
        bytes.extend_from_slice(self.new_value.as_bytes());
        let tag = change_tag(key, &bytes);
        bytes.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The change a link's token holds, if it is one of ours and not expired at `now`.
    pub fn open(key: &[u8; 32], token: &str, now: i64) -> Option<ContactChange> {
        if token.len() > 512 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        if bytes.len() < 32 + 16 + 3 {
            return None;
        }
        let (signed, tag) = bytes.split_at(bytes.len() - 16);
        if !bool::from(change_tag(key, signed).ct_eq(tag)) {
            return None;
        }
        let change = ContactChange {
            user_id: i64::from_be_bytes(signed[..8].try_into().ok()?),
            expires_at: i64::from_be_bytes(signed[8..16].try_into().ok()?),
            old: signed[16..32].try_into().ok()?,
            new_value: String::from_utf8(signed[32..].to_vec()).ok()?,
        };
        (change.expires_at > now).then_some(change)
    }
}

/// What the store keeps of a link that is not a `RecoveryToken` (a signed e-mail change): its
/// SHA-256, so that it works once.
pub fn link_hash(token: &str) -> [u8; 32] {
    sha256(&[b"portcullis link\0", token.as_bytes()])
}

impl fmt::Debug for ContactChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContactChange")
            .field("user_id", &self.user_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

fn change_tag(key: &[u8; 32], signed: &[u8]) -> [u8; 16] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes 32-byte keys");
    mac.update(b"portcullis e-mail change\0");
    mac.update(signed);
    let full = mac.finalize().into_bytes();
    let mut tag = [0u8; 16];
    tag.copy_from_slice(&full[..16]);
    tag
}

/// The secret of a password-reset link: 256 random bits, base64url; the store keeps its
/// SHA-256 only.
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryToken(String);

impl RecoveryToken {
    pub fn generate() -> RecoveryToken {
        RecoveryToken(random_b64(32))
    }

    /// A token as a link or a form brings it back, if it has the shape of ours.
    pub fn parse(value: &str) -> Option<RecoveryToken> {
        is_b64_of_len(value, 43).then(|| RecoveryToken(value.to_string()))
    }

    pub fn hash(&self) -> [u8; 32] {
        sha256(&[b"portcullis recovery\0", self.0.as_bytes()])
    }

    /// For the link and the form. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RecoveryToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryToken([redacted])")
    }
}

/// A code sent by SMS: 6 random digits. Kept as a keyed hash (a million values are too few
/// for a plain one).
#[derive(Clone, PartialEq, Eq)]
pub struct SmsCode(String);

impl SmsCode {
    pub fn generate() -> SmsCode {
        let n = rand::rngs::OsRng.next_u32() % 1_000_000;
        SmsCode(format!("{n:06}"))
    }

    /// What someone typed, spaces removed; `None` unless it is 6 digits.
    pub fn parse(typed: &str) -> Option<SmsCode> {
        let digits: String = typed.chars().filter(|c| !c.is_whitespace()).collect();
        (digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit())).then_some(SmsCode(digits))
    }

    /// For the message only. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the store keeps: an HMAC under a key the store does not hold, for one user (the
    /// same code of two users hashes apart).
    pub fn hash(&self, key: &[u8; 32], user_id: i64) -> [u8; 32] {
        self.hash_for(key, user_id, "")
    }

    /// The same, bound also to `what` it confirms (a new phone number): a code sent for one
    /// number does not confirm another.
    pub fn hash_for(&self, key: &[u8; 32], user_id: i64, what: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes 32-byte keys");
        mac.update(b"portcullis sms code\0");
        mac.update(&user_id.to_be_bytes());
        mac.update(self.0.as_bytes());
        if !what.is_empty() {
            mac.update(b"\0");
            mac.update(what.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for SmsCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SmsCode([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_tokens_and_sms_codes_are_redacted_and_checked_for_shape() {
        let t = RecoveryToken::generate();
        assert_eq!(t.expose().len(), 43);
        assert_eq!(RecoveryToken::parse(t.expose()), Some(t.clone()));
        assert_eq!(RecoveryToken::parse("short"), None);
        assert_eq!(
            RecoveryToken::parse(&format!("{}=", &t.expose()[..42])),
            None
        );
        assert_ne!(t.hash(), RecoveryToken::generate().hash());
        assert_eq!(format!("{t:?}"), "RecoveryToken([redacted])");
        let c = SmsCode::generate();
        assert!(c.expose().len() == 6 && c.expose().bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(
            SmsCode::parse(" 012 345 ").map(|c| c.expose().to_string()),
            Some("012345".into())
        );
        for bad in ["12345", "1234567", "12a456", ""] {
            assert_eq!(SmsCode::parse(bad), None, "{bad}");
        }
        assert_eq!(format!("{c:?}"), "SmsCode([redacted])");
    }

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
        let key = [3u8; 32];
        let (session, r) = t.successor(&key);
        assert_eq!(r.selector, t.selector);
        assert!(!t.matches(&r.validator_hash()));
        assert!(!format!("{t:?}").contains(&t.validator));
        // Well-formed, and the same for every gateway holding the key and the token.
        assert_eq!(RememberToken::parse(&r.expose()), Some(r.clone()));
        assert_eq!(SessionToken::parse(session.expose()), Some(session.clone()));
        assert_eq!(parsed.successor(&key), (session.clone(), r.clone()));
        let other = RememberToken::generate();
        assert_ne!(other.successor(&key).0, session);
        assert_ne!(r.successor(&key).0, session, "each step derives anew");
        assert_ne!(session.expose(), r.validator);
        // The token alone (a thief's copy) does not give the next session: the key is needed.
        assert_ne!(t.successor(&[4u8; 32]).0, session);
    }

    #[test]
    fn login_csrf_tokens_are_bound_to_key_client_and_time() {
        let key = [7u8; 32];
        let t = login_csrf(&key, "addr:192.0.2.1", 1000);
        assert_eq!(
            login_csrf_left(&key, &t, "addr:192.0.2.1", 1000),
            Some(LOGIN_CSRF_LIFETIME)
        );
        assert_eq!(
            login_csrf_left(&key, &t, "addr:192.0.2.1", 1000 + LOGIN_CSRF_LIFETIME),
            None
        );
        assert_eq!(
            login_csrf_left(&key, &t, "addr:192.0.2.2", 1000),
            None,
            "other address"
        );
        assert_eq!(
            login_csrf_left(&[8u8; 32], &t, "addr:192.0.2.1", 1000),
            None,
            "other key"
        );
        assert_ne!(
            t,
            login_csrf(&key, "addr:192.0.2.1", 1000),
            "a fresh nonce each time"
        );
        // Tampering with the expiry, or any byte, breaks the tag; so do forms not ours.
        let mut bytes = URL_SAFE_NO_PAD.decode(t.expose()).unwrap();
        bytes[7] ^= 1;
        let moved = URL_SAFE_NO_PAD.encode(&bytes);
        for bad in [
            moved.as_str(),
            "",
            "X",
            "abcdefghijklmnopqrstuv",
            &t[..t.len() - 1],
        ] {
            assert_eq!(
                login_csrf_left(&key, bad, "addr:192.0.2.1", 1000),
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn session_handles_name_a_session_without_revealing_it() {
        let (a, b) = (
            SessionToken::generate().hash(),
            SessionToken::generate().hash(),
        );
        let h = session_handle(&[1; 32], &a);
        assert_eq!(h, session_handle(&[1; 32], &a));
        assert_ne!(h, session_handle(&[1; 32], &b));
        assert_ne!(h, session_handle(&[2; 32], &a), "no key, no handle");
        assert!(is_session_handle(&h) && h.len() == 16);
        assert!(!hex::encode(a.0).contains(&h) && !is_session_handle("../login"));
    }

    #[test]
    fn contact_changes_are_ours_unaltered_and_short_lived() {
        let key = [3u8; 32];
        let change = ContactChange {
            user_id: 7,
            expires_at: 1000,
            old: ContactChange::address_digest("Old@Example.com"),
            new_value: "new@example.com".into(),
        };
        let token = change.seal(&key);
        assert_eq!(ContactChange::open(&key, &token, 999), Some(change.clone()));
        assert_eq!(ContactChange::open(&key, &token, 1000), None, "expired");
        assert_eq!(
            ContactChange::open(&[4; 32], &token, 0),
            None,
            "another key"
        );
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        bytes[40] ^= 1;
        assert_eq!(
            ContactChange::open(&key, &URL_SAFE_NO_PAD.encode(bytes), 0),
            None
        );
        assert_eq!(
            ContactChange::address_digest(" old@example.COM"),
            change.old
        );
        assert!(!format!("{change:?}").contains("new@example.com"));
    }

    #[test]
    fn csrf_is_bound_to_the_session() {
        let a = SessionToken::generate();
        assert_eq!(a.csrf(), a.csrf());
        assert_ne!(a.csrf(), SessionToken::generate().csrf());
        assert!(same_token(&a.csrf(), &a.csrf()));
        assert!(!same_token("", ""));
    }

    #[test]
    fn pending_sign_ins_are_ours_unaltered_and_short_lived() {
        let key = [2u8; 32];
        let p = Pending {
            user_id: 42,
            remember: true,
            setup: false,
            expires_at: 1300,
            credential: Pending::credential("$argon2id$…"),
        };
        let cookie = p.seal(&key);
        assert_eq!(Pending::open(&key, cookie.expose(), 1000), Some(p));
        assert_eq!(Pending::open(&key, cookie.expose(), 1300), None, "expired");
        assert_eq!(
            Pending::open(&[3u8; 32], cookie.expose(), 1000),
            None,
            "another key"
        );
        assert_eq!(format!("{cookie:?}"), "PendingToken([redacted])");
        let mut bytes = URL_SAFE_NO_PAD.decode(cookie.expose()).unwrap();
        bytes[7] ^= 1; // another user
        assert_eq!(
            Pending::open(&key, &URL_SAFE_NO_PAD.encode(bytes), 1000),
            None
        );
        assert_eq!(Pending::open(&key, "garbage", 1000), None);
    }

    #[test]
    fn backup_codes_are_unambiguous_and_read_however_typed() {
        let c = BackupCode::generate();
        assert_eq!(c.display().len(), 11);
        assert!(c.expose().bytes().all(|b| BACKUP_ALPHABET.contains(&b)));
        for unambiguous in [b'0', b'o', b'1', b'l', b'i'] {
            assert!(!BACKUP_ALPHABET.contains(&unambiguous));
        }
        let typed = OneTimeCode::new(format!(" {} ", c.display().to_uppercase()));
        assert_eq!(typed.backup(), Some(c.clone()));
        assert_eq!(
            OneTimeCode::new("abcde-fghj0").backup(),
            None,
            "0 is not in the alphabet"
        );
        assert_eq!(
            OneTimeCode::new("123 456").digits().as_deref(),
            Some("123456")
        );
        assert_eq!(OneTimeCode::new("12a456").digits(), None);
        for secret in [
            format!("{:?}", c),
            format!("{typed:?}"),
            format!("{:?}", TotpSecret::generate()),
        ] {
            assert!(secret.contains("[redacted]"), "{secret}");
        }
    }

    #[test]
    fn csrf_tokens_hide_in_debug() {
        let session = SessionToken::generate().csrf();
        let login = login_csrf(&[1; 32], "addr:192.0.2.1", 0);
        for token in [session, login] {
            assert_eq!(format!("{token:?}"), "CsrfToken([redacted])");
            assert!(token.matches(token.expose()) && !token.matches(""));
        }
    }
}
