//! The master key of the key file (`two_factor.secret_key_file`): it seals the TOTP secrets the
//! store keeps (XChaCha20-Poly1305, bound to the user they belong to) and keys the hashes of
//! backup codes, so that the database alone yields neither. Reading the file is the service's;
//! here is only what the key does. `Debug` never shows it.

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// 32 random bytes.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

/// Sealed bytes that cannot be opened with this key (another key, another user, or altered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the data cannot be opened with this key")]
pub struct Unsealable;

const NONCE: usize = 24;

impl MasterKey {
    pub fn generate() -> MasterKey {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        MasterKey(bytes)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        MasterKey(bytes)
    }

    /// What the key file holds. Never log it.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// `plain`, encrypted and authenticated for `context` (e.g. `totp:42`): random nonce ‖
    /// ciphertext ‖ tag.
    pub fn seal(&self, context: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: context,
                },
            )
            .unwrap_or_default();
        [nonce.as_slice(), &sealed].concat()
    }

    /// The bytes `seal` was given, for the same `context`.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Unsealable> {
        if sealed.len() < NONCE + 16 {
            return Err(Unsealable);
        }
        let (nonce, body) = sealed.split_at(NONCE);
        XChaCha20Poly1305::new((&self.0).into())
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: context,
                },
            )
            .map_err(|_| Unsealable)
    }

    /// A keyed hash (HMAC-SHA256) of `data` for `context`: what the store keeps of a backup
    /// code, so that trying every code against a stolen database needs the key too.
    pub fn digest(&self, context: &[u8], data: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes 32 bytes");
        mac.update(context);
        mac.update(&[0]);
        mac.update(data);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_open_only_with_the_key_and_the_context() {
        let key = MasterKey::generate();
        let sealed = key.seal(b"totp:1", b"secret bytes");
        assert!(!sealed.windows(12).any(|w| w == b"secret bytes"));
        assert_eq!(key.open(b"totp:1", &sealed).unwrap(), b"secret bytes");
        assert_eq!(
            key.open(b"totp:2", &sealed),
            Err(Unsealable),
            "another user"
        );
        assert_eq!(
            MasterKey::generate().open(b"totp:1", &sealed),
            Err(Unsealable)
        );
        let mut altered = sealed.clone();
        altered[30] ^= 1;
        assert_eq!(key.open(b"totp:1", &altered), Err(Unsealable));
        assert_eq!(key.open(b"totp:1", &sealed[..10]), Err(Unsealable));
        assert_ne!(
            key.seal(b"totp:1", b"x"),
            key.seal(b"totp:1", b"x"),
            "a fresh nonce"
        );
        assert_eq!(format!("{key:?}"), "MasterKey([redacted])");
        assert_eq!(key.digest(b"a", b"b"), key.digest(b"a", b"b"));
        assert_ne!(
            key.digest(b"a", b"b"),
            MasterKey::generate().digest(b"a", b"b")
        );
    }
}
