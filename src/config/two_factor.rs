//! `two_factor`: who must use two-step verification, how its codes are made (TOTP, RFC 6238)
//! and backup codes counted, and where the key that encrypts the secrets in the store lives.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Validator;
use super::raw::RawTwoFactor;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwoFactorConfig {
    /// The name authenticator apps show beside the login.
    pub issuer: String,
    /// Lower-cased; `*` is everyone.
    pub required_groups: Vec<String>,
    pub totp: TotpParams,
    /// Backup codes in a set.
    pub backup_codes: u32,
    /// Encrypts the TOTP secrets in the store; made (mode 0600) at first start.
    pub secret_key_file: PathBuf,
}

/// How codes are made: SHA1 (what every authenticator app reads), `digits` digits, a new one
/// every `period`, and `skew` periods either side accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotpParams {
    pub digits: u32,
    pub period: Duration,
    pub skew: u32,
}

impl Validator<'_> {
    pub(super) fn two_factor(&mut self, raw: RawTwoFactor, base: &Path) -> TwoFactorConfig {
        let issuer = raw.issuer.unwrap_or_else(|| "Portcullis".into());
        if issuer.trim().is_empty() || issuer.contains(':') || issuer.chars().any(char::is_control)
        {
            self.error(
                "two_factor.issuer",
                format!("`{issuer}` must be a name without `:` (authenticator apps show it)"),
            );
        }
        let digits = raw.totp.digits.unwrap_or(6);
        if !(6..=8).contains(&digits) {
            self.error("two_factor.totp.digits", "must be 6, 7 or 8");
        }
        let period = self.duration(
            "two_factor.totp.period",
            raw.totp.period,
            Duration::from_secs(30),
        );
        if period.is_zero() || period > Duration::from_secs(300) {
            self.error(
                "two_factor.totp.period",
                "must be between 1s and 5m (30s is what every app expects)",
            );
        }
        let skew = raw.totp.skew.unwrap_or(1);
        if skew > 2 {
            self.error("two_factor.totp.skew", "must be 0, 1 or 2 periods");
        }
        let backup_codes = raw.backup_codes.unwrap_or(10);
        if !(1..=20).contains(&backup_codes) {
            self.error("two_factor.backup_codes", "must be between 1 and 20");
        }
        let key = raw
            .secret_key_file
            .unwrap_or_else(|| "data/secret.key".into());
        if key.trim().is_empty() {
            self.error("two_factor.secret_key_file", "must name a file");
        }
        TwoFactorConfig {
            issuer,
            required_groups: raw
                .required_groups
                .into_iter()
                .map(|g| g.trim().to_lowercase())
                .collect(),
            totp: TotpParams {
                digits,
                period,
                skew,
            },
            backup_codes,
            secret_key_file: base.join(key),
        }
    }
}

#[cfg(test)]
mod tests {

    use crate::config::parse_for_test as parse;

    #[test]
    fn defaults_and_errors_with_positions() {
        let c = parse("").unwrap().two_factor;
        assert_eq!(c.issuer, "Portcullis");
        assert_eq!(
            (c.totp.digits, c.totp.period.as_secs(), c.totp.skew),
            (6, 30, 1)
        );
        assert_eq!(c.backup_codes, 10);
        assert_eq!(
            c.secret_key_file.to_str(),
            Some("/etc/portcullis/data/secret.key")
        );
        let groups = parse("two_factor:\n  required_groups: [Admins, '*']\n").unwrap();
        assert_eq!(groups.two_factor.required_groups, ["admins", "*"]);
        let e = parse("two_factor:\n  issuer: 'a:b'\n  totp: {digits: 9, period: 0, skew: 5}\n  backup_codes: 0\n").unwrap_err();
        for needle in [
            "t.yaml:3:11: two_factor.issuer",
            "two_factor.totp.digits: must be 6, 7 or 8",
            "two_factor.totp.period: must be between",
            "two_factor.totp.skew: must be 0, 1 or 2",
            "two_factor.backup_codes: must be between 1 and 20",
        ] {
            assert!(e.contains(needle), "{needle} in {e}");
        }
        let unknown = parse("two_factor:\n  totp: {algorithm: sha256}\n").unwrap_err();
        assert!(unknown.contains("unknown field `algorithm`"), "{unknown}");
    }
}
