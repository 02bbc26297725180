//! The YAML file exactly as written: serde structs with `deny_unknown_fields` and no meaning
//! attached. Values that need parsing (durations, addresses, URLs) stay as text here and are
//! turned into typed values, with every error located, by `validate`.

use serde::Deserialize;

/// A scalar kept as written: `24m`, `0`, `30d`.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Scalar {
    Int(i64),
    Text(String),
}

impl Scalar {
    pub fn text(&self) -> String {
        match self {
            Scalar::Int(n) => n.to_string(),
            Scalar::Text(s) => s.clone(),
        }
    }
}

#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<OneOrMany>,
    pub public_url: Option<String>,
    pub upstream: Option<String>,
    pub admin_listen: Option<String>,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub session: RawSession,
    pub public_paths: Option<Vec<String>>,
    #[serde(default)]
    pub network: RawNetwork,
    #[serde(default)]
    pub throttle: RawThrottle,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub identity_headers: RawIdentityHeaders,
    #[serde(default)]
    pub passwords: RawPasswords,
    #[serde(default)]
    pub audit: RawAudit,
    #[serde(default)]
    pub two_factor: RawTwoFactor,
    #[serde(default)]
    pub mail: RawMail,
    #[serde(default)]
    pub sms: RawSms,
    #[serde(default)]
    pub recovery: RawRecovery,
    #[serde(default)]
    pub invitations: RawInvitations,
    pub tls: Option<RawTls>,
    pub redirect_http: Option<String>,
    pub upstream_ca: Option<String>,
    pub watch: Option<bool>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub kind: Option<String>,
    pub path: Option<String>,
    pub url: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    pub cookie_name: Option<String>,
    pub idle_timeout: Option<Scalar>,
    pub absolute_timeout: Option<Scalar>,
    pub remember_me: Option<Scalar>,
    pub cache_capacity: Option<u64>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    pub forwarded_header: Option<String>,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub restrictions: Vec<RawRestriction>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRestriction {
    pub name: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub allow: Vec<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawThrottle {
    pub captcha_after: Option<u32>,
    pub lock_after: Option<u32>,
    pub lock_duration: Option<Scalar>,
    pub ip_attempts_per_minute: Option<u32>,
    pub password_checks_per_second: Option<u32>,
    pub captcha_limit: Option<u32>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub request_header: Option<Scalar>,
    pub request_body: Option<Scalar>,
    pub keepalive: Option<Scalar>,
    pub send: Option<Scalar>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawIdentityHeaders {
    pub user: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub groups: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawPasswords {
    pub min_length: Option<u32>,
    #[serde(default)]
    pub argon2: RawArgon2,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawArgon2 {
    pub memory_kib: Option<u32>,
    pub iterations: Option<u32>,
    pub parallelism: Option<u32>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub file: Option<String>,
    pub retention: Option<Scalar>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTwoFactor {
    pub issuer: Option<String>,
    #[serde(default)]
    pub required_groups: Vec<String>,
    #[serde(default)]
    pub totp: RawTotp,
    pub backup_codes: Option<u32>,
    pub secret_key_file: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMail {
    pub transport: Option<String>,
    pub from: Option<String>,
    #[serde(default)]
    pub smtp: RawSmtp,
    pub dir: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSmtp {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub security: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSms {
    pub webhook: Option<String>,
    pub headers_file: Option<String>,
    pub timeout: Option<Scalar>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawInvitations {
    pub lifetime: Option<Scalar>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRecovery {
    pub link_lifetime: Option<Scalar>,
    pub resend_after: Option<Scalar>,
    pub sms_code_lifetime: Option<Scalar>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTotp {
    pub digits: Option<u32>,
    pub period: Option<Scalar>,
    pub skew: Option<u32>,
}
