//! Two-step verification (docs/reference.md, Two-step verification): the key file, what a
//! sign-in needs of a user's second factor, checking a code (once per period, cluster-wide,
//! through the store) or a backup code (once), enrolment with a first code, new backup codes,
//! and the administrator's reset and timed turn-off. Secrets are sealed with the master key
//! before they reach the store; codes are kept as keyed hashes; neither is ever logged.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::config::{Config, TwoFactorConfig};
use crate::core::event::{Event, EventKind};
use crate::core::identity::{Client, User};
use crate::core::key::MasterKey;
use crate::core::secret::{BackupCode, OneTimeCode, TotpSecret};
use crate::core::time::{Clock, UnixTime};
use crate::policy::totp::{self, CodeCheck};
use crate::service::audit::Audit;
use crate::service::metrics::Metrics;
use crate::store::{SecondFactorRecord, Store, StoreError, StoreResult, UserChange};

/// Why the key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "two_factor.secret_key_file {0} is missing, and the store holds two-step secrets sealed with it: restore the file from a backup (every gateway of a cluster needs the same one), or reset the users' two-step verification"
    )]
    Missing(String),
    #[error("two_factor.secret_key_file {file}: {error}")]
    Unreadable { file: String, error: std::io::Error },
    #[error("two_factor.secret_key_file {0} must hold 32 bytes; it was not made by Portcullis")]
    Malformed(String),
    #[error(
        "two_factor.secret_key_file {0} does not open the two-step secrets in the store: it is another key than the one they were sealed with (every gateway of a store needs the same file)"
    )]
    Mismatch(String),
    #[error(
        "two_factor.secret_key_file {0} is not the key file of the gateway that first used this store: copy that file here (if it is lost and nobody has set up two-step verification yet, `DELETE FROM secrets WHERE name = 'secret_key_fingerprint'` in the store lets this one take over)"
    )]
    NotTheStores(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads the key file, or makes it (mode 0600) when it is missing and the store holds no
/// secret it would have sealed. The first key a store sees is the store's (its fingerprint is
/// kept there): a gateway with another one, made by itself on a host the file was not copied
/// to, or one that does not open the store's secrets, refuses to start rather than fail users.
pub async fn load_key(path: &Path, store: &dyn Store) -> Result<MasterKey, KeyError> {
    let file = path.display().to_string();
    let (key, made) = match std::fs::read(path) {
        Ok(bytes) => {
            let bytes = bytes
                .try_into()
                .map_err(|_| KeyError::Malformed(file.clone()))?;
            (MasterKey::from_bytes(bytes), false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if store.count_second_factors().await? > 0 {
                return Err(KeyError::Missing(file));
            }
            (MasterKey::generate(), true)
        }
        Err(error) => return Err(KeyError::Unreadable { file, error }),
    };
    let fingerprint = key.digest(b"key file fingerprint", b"");
    let claimed = store
        .claim_secret("secret_key_fingerprint", fingerprint)
        .await?;
    let opens = match store.any_second_factor().await? {
        Some(sample) => key
            .open(&context(sample.user_id), &sample.sealed_secret)
            .is_ok(),
        None => true,
    };
    match (opens, claimed == fingerprint) {
        (false, _) => return Err(KeyError::Mismatch(file)),
        (true, false) => return Err(KeyError::NotTheStores(file)),
        (true, true) => {}
    }
    if made {
        write_key(path, &key).map_err(|error| KeyError::Unreadable { file, error })?;
    }
    Ok(key)
}

fn write_key(path: &Path, key: &MasterKey) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(key.expose())?;
    f.sync_all()?;
    tracing::info!(file = %path.display(), "made the two-step verification key file; back it up");
    Ok(())
}

/// What the store's sealed secret of a user is bound to.
fn context(user_id: i64) -> Vec<u8> {
    format!("totp:{user_id}").into_bytes()
}

/// What a sign-in needs of a user's second factor now.
#[derive(Debug)]
pub enum Need {
    /// Not enrolled and not required, or turned off by an administrator until later.
    Nothing,
    /// Enrolled: a code is needed.
    Code(SecondFactorRecord),
    /// Required by `required_groups` and not yet enrolled.
    Setup,
}

/// What a code someone typed was worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    Totp,
    Backup {
        left: u64,
    },
    Wrong,
    /// A right code already used (its period, or a later one, was accepted before).
    Replay,
}

/// A factor being set up: the secret, and what the enrolment page shows and posts back.
pub struct Enrolment {
    pub secret: TotpSecret,
    /// The secret, sealed for the form, so that any gateway can take the confirmation.
    pub sealed: String,
    pub uri: String,
    pub grouped: String,
}

/// How long an enrolment form may be confirmed.
const ENROLMENT_LIFETIME: i64 = 15 * 60;

pub struct TwoFactor {
    store: Arc<dyn Store>,
    key: MasterKey,
    audit: Audit,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
}

impl TwoFactor {
    pub fn new(
        store: Arc<dyn Store>,
        key: MasterKey,
        audit: Audit,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> TwoFactor {
        TwoFactor {
            store,
            key,
            audit,
            metrics,
            clock,
        }
    }

    fn event(&self, kind: EventKind, user: &User, client: &Client) -> Event {
        Event::new(kind, self.clock.now())
            .login(&user.login)
            .client(&client.ip, &client.user_agent)
    }

    /// What signing `user` in needs now: an administrator's timed turn-off lets the password
    /// alone in until it ends, then the kept factor is asked again.
    pub async fn need(&self, cfg: &TwoFactorConfig, user: &User) -> StoreResult<Need> {
        Ok(match self.store.second_factor(user.id).await? {
            Some(r) if r.disabled_until > self.clock.now() => Need::Nothing,
            Some(r) => Need::Code(r),
            None if totp::required(cfg, &user.groups) => Need::Setup,
            None => Need::Nothing,
        })
    }

    /// Checks a typed code against the user's factor: an app's code once per period (the
    /// store takes the period atomically), or a backup code once; events and metrics follow.
    pub async fn check(
        &self,
        cfg: &TwoFactorConfig,
        user: &User,
        record: &SecondFactorRecord,
        code: &OneTimeCode,
        client: &Client,
    ) -> StoreResult<Checked> {
        let checked = match (code.digits(), code.backup()) {
            (Some(digits), _) => self.check_totp(cfg, user, record, &digits).await?,
            (None, Some(backup)) => self.check_backup(user, &backup).await?,
            (None, None) => Checked::Wrong,
        };
        let (result, detail) = match checked {
            Checked::Totp => ("success", None),
            Checked::Backup { .. } => ("backup_code", None),
            Checked::Wrong => ("failure", Some("wrong")),
            Checked::Replay => ("replay", Some("replay")),
        };
        self.metrics.two_factor(result);
        if let Some(detail) = detail {
            self.audit.record(
                self.event(EventKind::TwoFactorFailure, user, client)
                    .detail(detail),
            );
        }
        if let Checked::Backup { left } = checked {
            let event = self.event(EventKind::BackupCodeUsed, user, client);
            self.audit.record(event.detail(&format!("{left} left")));
        }
        Ok(checked)
    }

    async fn check_totp(
        &self,
        cfg: &TwoFactorConfig,
        user: &User,
        record: &SecondFactorRecord,
        digits: &str,
    ) -> StoreResult<Checked> {
        let secret = self.open(record)?;
        let last = record.last_step.and_then(|s| u64::try_from(s).ok());
        let now = u64::try_from(self.clock.now()).unwrap_or(0);
        Ok(match totp::check(&secret, &cfg.totp, digits, now, last) {
            CodeCheck::Wrong => Checked::Wrong,
            CodeCheck::Replay => Checked::Replay,
            // Taken in the store: a gateway that accepted the same period first wins.
            CodeCheck::Fresh { step } => {
                let step = i64::try_from(step).unwrap_or(i64::MAX);
                match self.store.take_totp_step(user.id, step).await? {
                    true => Checked::Totp,
                    false => Checked::Replay,
                }
            }
        })
    }

    async fn check_backup(&self, user: &User, code: &BackupCode) -> StoreResult<Checked> {
        let hash = self.code_hash(user.id, code);
        Ok(match self.store.use_backup_code(user.id, &hash).await? {
            Some(left) => Checked::Backup { left },
            None => Checked::Wrong,
        })
    }

    fn open(&self, record: &SecondFactorRecord) -> StoreResult<TotpSecret> {
        self.key
            .open(&context(record.user_id), &record.sealed_secret)
            .map(TotpSecret::from_bytes)
            .map_err(|_| {
                StoreError::Corrupt(format!(
                    "the two-step secret of user {} does not open with the key file",
                    record.user_id
                ))
            })
    }

    fn code_hash(&self, user_id: i64, code: &BackupCode) -> [u8; 32] {
        self.key.digest(
            format!("backup:{user_id}").as_bytes(),
            code.expose().as_bytes(),
        )
    }

    /// A new secret for `user`, with what the enrolment page shows.
    pub fn start_enrolment(&self, cfg: &TwoFactorConfig, user: &User) -> Enrolment {
        let secret = TotpSecret::generate();
        let mut plain = self.clock.now().to_be_bytes().to_vec();
        plain.extend_from_slice(secret.expose());
        let sealed = self.key.seal(&enrol_context(user.id), &plain);
        Enrolment {
            uri: totp::uri(&secret, cfg, &user.login).unwrap_or_default(),
            grouped: totp::grouped(&secret),
            sealed: URL_SAFE_NO_PAD.encode(sealed),
            secret,
        }
    }

    /// The enrolment a form carries, again (after a wrong first code: the app already holds
    /// the secret); `None` when the form is not one made for this user, or too old.
    pub fn resume_enrolment(
        &self,
        cfg: &TwoFactorConfig,
        user: &User,
        sealed: &str,
    ) -> Option<Enrolment> {
        let secret = self.enrolment_secret(user.id, sealed, self.clock.now())?;
        Some(Enrolment {
            uri: totp::uri(&secret, cfg, &user.login).unwrap_or_default(),
            grouped: totp::grouped(&secret),
            sealed: sealed.to_string(),
            secret,
        })
    }

    /// Backup codes left, and whether a factor is there at all.
    pub async fn codes_left(&self, user: &User) -> StoreResult<Option<u64>> {
        Ok(self
            .store
            .second_factor(user.id)
            .await?
            .map(|r| r.backup_codes_left))
    }

    /// The user's two-step verification now: enrolled, backup codes left, and until when an
    /// administrator turned it off (`user 2fa disable --for`), if that is still ahead.
    pub async fn status(&self, user: &User) -> StoreResult<Status> {
        status_at(self.store.as_ref(), user, self.clock.now()).await
    }

    /// Confirms an enrolment with a first code from the app (which is used up): the factor
    /// replaces any other, and a new set of backup codes is returned, to be shown once.
    /// `None`: the code is wrong, or the form is not one made for this user, or too old.
    pub async fn confirm(
        &self,
        cfg: &TwoFactorConfig,
        user: &User,
        sealed: &str,
        code: &OneTimeCode,
        client: &Client,
    ) -> StoreResult<Option<Vec<BackupCode>>> {
        let now = self.clock.now();
        let Some(secret) = self.enrolment_secret(user.id, sealed, now) else {
            return Ok(None);
        };
        // The same form posted again after it worked: the factor is this one already (and
        // setting it again would let a code used since be used once more).
        if let Some(current) = self.store.second_factor(user.id).await?
            && self.open(&current)?.expose() == secret.expose()
        {
            return Ok(None);
        }
        let digits = code.digits().unwrap_or_default();
        let at = u64::try_from(now).unwrap_or(0);
        let CodeCheck::Fresh { step } = totp::check(&secret, &cfg.totp, &digits, at, None) else {
            self.metrics.two_factor("failure");
            return Ok(None);
        };
        let codes = backup_codes(cfg);
        let hashes: Vec<[u8; 32]> = codes.iter().map(|c| self.code_hash(user.id, c)).collect();
        let stored = self.key.seal(&context(user.id), secret.expose());
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        self.store
            .enroll_second_factor(user.id, &stored, step, &hashes, now)
            .await?;
        self.metrics.two_factor("success");
        self.audit
            .record(self.event(EventKind::TwoFactorEnrolled, user, client));
        Ok(Some(codes))
    }

    fn enrolment_secret(&self, user_id: i64, sealed: &str, now: UnixTime) -> Option<TotpSecret> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        let plain = self.key.open(&enrol_context(user_id), &bytes).ok()?;
        let (made, secret) = plain.split_at_checked(8)?;
        let made = i64::from_be_bytes(made.try_into().ok()?);
        (now - made <= ENROLMENT_LIFETIME).then(|| TotpSecret::from_bytes(secret.to_vec()))
    }

    /// A new set of backup codes for an enrolled user, replacing the old one.
    pub async fn regenerate_codes(
        &self,
        cfg: &TwoFactorConfig,
        user: &User,
        client: &Client,
    ) -> StoreResult<Vec<BackupCode>> {
        let codes = backup_codes(cfg);
        let hashes: Vec<[u8; 32]> = codes.iter().map(|c| self.code_hash(user.id, c)).collect();
        self.store.replace_backup_codes(user.id, &hashes).await?;
        self.audit
            .record(self.event(EventKind::BackupCodesRegenerated, user, client));
        Ok(codes)
    }
}

fn enrol_context(user_id: i64) -> Vec<u8> {
    format!("enrol:{user_id}").into_bytes()
}

fn backup_codes(cfg: &TwoFactorConfig) -> Vec<BackupCode> {
    (0..cfg.backup_codes)
        .map(|_| BackupCode::generate())
        .collect()
}

/// The administrator's side (`portcullis user 2fa`), over the store alone: no key is needed
/// to remove a factor or to turn it off for a while.
pub struct Admin<'a> {
    pub store: &'a dyn Store,
    pub config: &'a Config,
}

/// `user 2fa status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub enrolled: bool,
    pub codes_left: u64,
    pub disabled_until: Option<UnixTime>,
}

/// A user's two-step verification at `now`, from one read of the store.
async fn status_at(store: &dyn Store, user: &User, now: UnixTime) -> StoreResult<Status> {
    let record = store.second_factor(user.id).await?;
    Ok(Status {
        enrolled: record.is_some(),
        codes_left: record.as_ref().map_or(0, |r| r.backup_codes_left),
        disabled_until: record
            .map(|r| r.disabled_until)
            .filter(|until| *until > now),
    })
}

impl Admin<'_> {
    pub async fn status(&self, user: &User, now: UnixTime) -> StoreResult<Status> {
        status_at(self.store, user, now).await
    }

    /// Removes the factor and the codes and ends every session and remember-me token of the
    /// user, in one transaction (running gateways drop them within 2 s).
    pub async fn reset(&self, user: &User, now: UnixTime) -> StoreResult<u64> {
        self.store
            .end_user_sessions(user.id, now, "revoked", UserChange::SecondFactorReset)
            .await
    }

    /// Lets the user in with the password alone until `until`; false without a factor.
    pub async fn disable_until(&self, user: &User, until: UnixTime) -> StoreResult<bool> {
        self.store.disable_second_factor_until(user.id, until).await
    }
}
