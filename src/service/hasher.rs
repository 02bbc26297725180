//! Password hashing: argon2id PHC strings for `Password`s.
//! Hashing runs on a small pool of dedicated threads with a bounded queue, never on the proxy's
//! event loop, so a login storm cannot slow proxied traffic.

use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use prometheus::Histogram;
use rand::rngs::OsRng;

use crate::config::Argon2Params;
use crate::core::secret::Password;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("the password hashing queue is full")]
    Busy,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

fn argon2(params: Argon2Params) -> Result<Argon2<'static>, HashError> {
    let p = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        None,
    )
    .map_err(|e| HashError::Failed(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, p))
}

/// Hashes synchronously; for the CLI and for the pool's workers.
pub fn hash_now(password: &Password, params: Argon2Params) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2(params)?
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Failed(e.to_string()))
}

/// Verifies synchronously against a PHC string; its own parameters are used.
pub fn verify_now(password: &Password, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.expose().as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Lowers the calling thread's scheduling priority (nice 10), so that when a login storm keeps
/// the hashing threads busy, the proxy's threads still get the CPU first.
fn yield_to_proxy() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `gettid` and `setpriority` take plain integers and touch no memory of ours.
        // On Linux, PRIO_PROCESS with a thread id changes only that thread's nice value, and
        // a failure (e.g. a seccomp filter) is harmless: the thread keeps its priority.
        let failed = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10) != 0
        };
        if failed {
            tracing::debug!("could not lower the priority of a hashing thread");
        }
    }
}

/// The bounded hashing pool.
pub struct Hasher {
    params: Argon2Params,
    /// Observes the time of each hash, queueing excluded.
    timer: Histogram,
    queue: SyncSender<Job>,
    /// Verified against when the login is unknown, so both cases cost one hash.
    dummy_hash: Arc<str>,
}

impl Hasher {
    /// `threads` workers and room for `queue` waiting jobs; beyond that, `Busy`.
    pub fn new(
        params: Argon2Params,
        threads: usize,
        queue: usize,
        timer: Histogram,
    ) -> Result<Hasher, HashError> {
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("portcullis-hash-{i}"))
                .spawn(move || {
                    yield_to_proxy();
                    loop {
                        let job = match rx.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| HashError::Failed(e.to_string()))?;
        }
        let dummy_hash = hash_now(&Password::generate(), params)?.into();
        Ok(Hasher {
            params,
            timer,
            queue: tx,
            dummy_hash,
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let timer = self.timer.clone();
        let job: Job = Box::new(move || {
            let _ = tx.send(timer.observe_closure_duration(work));
        });
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(HashError::Busy),
            Err(TrySendError::Disconnected(_)) => {
                return Err(HashError::Failed("the hashing pool stopped".into()));
            }
        }
        rx.await
            .map_err(|_| HashError::Failed("a hashing worker stopped".into()))
    }

    pub async fn hash(&self, password: Password) -> Result<String, HashError> {
        let params = self.params;
        self.run(move || hash_now(&password, params)).await?
    }

    /// Verifies `password` against `phc`, or against a dummy hash when there is no user, so
    /// that an unknown login takes the same time and path as a wrong password.
    pub async fn verify(&self, password: Password, phc: Option<String>) -> Result<bool, HashError> {
        let known = phc.is_some();
        let phc: Arc<str> = phc.map_or_else(|| self.dummy_hash.clone(), Into::into);
        let ok = self.run(move || verify_now(&password, &phc)).await?;
        Ok(ok && known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMS: Argon2Params = Argon2Params {
        memory_kib: 19456,
        iterations: 2,
        parallelism: 1,
    };

    #[test]
    fn hashes_are_argon2id_with_the_configured_parameters() {
        let h = hash_now(&Password::new("correct horse"), PARAMS).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_now(&Password::new("correct horse"), &h));
        assert!(!verify_now(&Password::new("wrong horse"), &h));
        assert!(!verify_now(&Password::new("x"), "not a hash"));
    }

    #[test]
    fn debug_hides_the_password() {
        assert_eq!(
            format!("{:?}", Password::new("hunter2")),
            "Password([redacted])"
        );
    }

    #[tokio::test]
    async fn unknown_users_verify_against_the_dummy_and_fail() {
        let timer = crate::service::metrics::Metrics::new().password_hash_seconds;
        let hasher = Hasher::new(PARAMS, 1, 4, timer.clone()).unwrap();
        let h = hasher.hash(Password::new("pw-123456")).await.unwrap();
        assert!(
            hasher
                .verify(Password::new("pw-123456"), Some(h))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify(Password::new("pw-123456"), None)
                .await
                .unwrap()
        );
        assert_eq!(
            timer.get_sample_count(),
            3,
            "the unknown login was hashed too"
        );
    }
}
