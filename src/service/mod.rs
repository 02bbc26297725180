//! Async orchestration with narrow dependencies, between the pure policy below and the HTTP
//! layers above: sessions, sign-in, accounts, password hashing, CAPTCHA challenges, the event
//! log and metrics. No HTTP here.

pub mod account;
pub mod accounts;
pub mod audit;
pub mod captcha;
pub mod hasher;
pub mod messenger;
pub mod metrics;
pub mod recovery;
pub mod sessions;
pub mod signin;
pub mod two_factor;

/// Every service over a real SQLite file in a temporary directory, with a clock the test
/// moves: for unit tests of the services and of the web layer, without sockets.
#[cfg(test)]
pub mod fixture {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::config::{Argon2Params, Config};
    use crate::core::identity::{NewUser, User};
    use crate::core::key::MasterKey;
    use crate::core::secret::Password;
    use crate::core::time::ManualClock;
    use crate::service::account::Account;
    use crate::service::audit::Audit;
    use crate::service::hasher::{self, Hasher};
    use crate::service::metrics::Metrics;
    use crate::service::recovery::Recovery;
    use crate::service::sessions::Sessions;
    use crate::service::signin::SignIn;
    use crate::service::two_factor::TwoFactor;
    use crate::store::{SqliteStore, Store};

    pub const PASSWORD: &str = "correct horse battery";
    /// Cheap hashing: these tests count hashes, they do not time them.
    pub const FAST: Argon2Params = Argon2Params {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    pub struct Services {
        pub dir: tempfile::TempDir,
        pub config: Config,
        pub clock: Arc<ManualClock>,
        pub store: Arc<dyn Store>,
        pub metrics: Arc<Metrics>,
        pub audit: Audit,
        pub sessions: Arc<Sessions>,
        pub signin: Arc<SignIn>,
        pub two_factor: Arc<TwoFactor>,
        pub recovery: Arc<Recovery>,
        pub account: Arc<Account>,
        pub alice: User,
    }

    impl Services {
        /// `yaml` is added to a minimal configuration.
        pub async fn start(yaml: &str) -> Services {
            let dir = tempfile::tempdir().unwrap();
            let config = Config::parse(
                &format!("upstream: http://127.0.0.1:1\n{yaml}"),
                "test.yaml",
                dir.path(),
            )
            .unwrap();
            let clock = ManualClock::at(1_800_000_000);
            let store: Arc<dyn Store> =
                Arc::new(SqliteStore::open(&dir.path().join("s.db")).await.unwrap());
            let metrics = Arc::new(Metrics::new());
            let (audit, events) = Audit::start(store.clone(), None, metrics.clone()).unwrap();
            tokio::spawn(events.run());
            let sessions = Arc::new(Sessions::new(
                store.clone(),
                [5; 32],
                audit.clone(),
                clock.clone(),
                Duration::from_secs(1440),
                metrics.clone(),
            ));
            let hasher = Hasher::new(FAST, 1, 64, metrics.password_hash_seconds.clone()).unwrap();
            let two_factor = Arc::new(TwoFactor::new(
                store.clone(),
                MasterKey::from_bytes([6; 32]),
                audit.clone(),
                metrics.clone(),
                clock.clone(),
            ));
            let signin = Arc::new(SignIn::new(
                store.clone(),
                Arc::new(hasher),
                two_factor.clone(),
                sessions.clone(),
                audit.clone(),
                metrics.clone(),
                clock.clone(),
            ));
            let recovery = Arc::new(Recovery::new(
                store.clone(),
                signin.clone(),
                audit.clone(),
                metrics.clone(),
                clock.clone(),
                crate::service::recovery::Keys {
                    sms_code: [7; 32],
                    email_change: [8; 32],
                    phone_change: [9; 32],
                },
            ));
            let account = Arc::new(Account::new(
                store.clone(),
                signin.clone(),
                two_factor.clone(),
                sessions.clone(),
                recovery.clone(),
                audit.clone(),
                clock.clone(),
            ));
            let alice = store
                .create_user(
                    NewUser {
                        login: "alice@example.com".into(),
                        email: "alice@example.com".into(),
                        name: "Alice".into(),
                        phone: String::new(),
                        groups: vec!["staff".into()],
                        password_hash: hasher::hash_now(&Password::new(PASSWORD), FAST).unwrap(),
                    },
                    0,
                )
                .await
                .unwrap();
            Services {
                dir,
                config,
                clock,
                store,
                metrics,
                audit,
                sessions,
                signin,
                two_factor,
                recovery,
                account,
                alice,
            }
        }

        /// How many passwords have been hashed so far.
        pub fn hashes(&self) -> u64 {
            self.metrics.password_hash_seconds.get_sample_count()
        }
    }
}
