//! Time-based one-time passwords (RFC 6238, through `totp-rs`): the code of a time, which
//! period a typed code belongs to within the allowed skew, whether it was used already (a code
//! works once: its period must be later than the last one accepted), the `otpauth://` URI an
//! authenticator app reads, and who must use a second factor. Pure: the accepted period is
//! kept by the store.

use totp_rs::{Algorithm, Builder, Secret, Totp};

use crate::config::{TotpParams, TwoFactorConfig};
use crate::core::secret::TotpSecret;

fn totp(secret: &TotpSecret, params: &TotpParams, issuer: &str, login: &str) -> Option<Totp> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(u8::try_from(params.digits).ok()?)
        .with_skew(u16::try_from(params.skew).ok()?)
        .with_step_duration(params.period.as_secs().max(1))
        .with_secret(Secret::from(secret.expose().to_vec()))
        .with_issuer(Some(issuer))
        .with_account_name(login)
        .build()
        .ok()
}

/// The code an app shows at `time` (seconds), e.g. for tests and `oathtool`'s counterpart.
pub fn code_at(secret: &TotpSecret, params: &TotpParams, time: u64) -> Option<String> {
    Some(totp(secret, params, "x", "x")?.generate(time).to_string())
}

/// What a typed code is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeCheck {
    /// The code of `step` (a period number), within the skew and later than the last used.
    Fresh {
        step: u64,
    },
    /// A right code, but of a period already used (or before it): refused.
    Replay,
    Wrong,
}

/// Checks `code` at `now` against the periods `skew` either side of it; `last_step` is the
/// period of the last code accepted for this user (none yet: `None`).
pub fn check(
    secret: &TotpSecret,
    params: &TotpParams,
    code: &str,
    now: u64,
    last_step: Option<u64>,
) -> CodeCheck {
    let matched = totp(secret, params, "x", "x").and_then(|t| t.check(code, now));
    match matched {
        None => CodeCheck::Wrong,
        Some(step) if last_step.is_some_and(|last| step <= last) => CodeCheck::Replay,
        Some(step) => CodeCheck::Fresh { step },
    }
}

/// The `otpauth://totp/…` URI of a secret, for the QR code and for typing into an app.
pub fn uri(secret: &TotpSecret, config: &TwoFactorConfig, login: &str) -> Option<String> {
    totp(secret, &config.totp, &config.issuer, login)?
        .to_url()
        .ok()
}

/// The secret in base32, as apps accept it typed, in groups of four (`ABCD EFGH …`).
pub fn grouped(secret: &TotpSecret) -> String {
    let base32 = Secret::from(secret.expose().to_vec()).to_base32();
    base32
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether a member of `groups` must use two-step verification (`required_groups`, `*` for
/// everyone), case-insensitively.
pub fn required(config: &TwoFactorConfig, groups: &[String]) -> bool {
    config
        .required_groups
        .iter()
        .any(|r| r == "*" || groups.iter().any(|g| g.to_lowercase() == *r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn params(digits: u32) -> TotpParams {
        TotpParams {
            digits,
            period: Duration::from_secs(30),
            skew: 1,
        }
    }

    #[test]
    fn rfc_6238_appendix_b_sha1_vectors() {
        let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        let vectors = [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ];
        for (time, code) in vectors {
            assert_eq!(
                code_at(&secret, &params(8), time).as_deref(),
                Some(code),
                "T = {time}"
            );
            assert!(
                matches!(
                    check(&secret, &params(8), code, time, None),
                    CodeCheck::Fresh { .. }
                ),
                "T = {time}"
            );
        }
    }

    #[test]
    fn window_edges_and_replay() {
        let secret = TotpSecret::generate();
        let p = params(6);
        let now: u64 = 1_800_000_015;
        let step = now / 30;
        // (periods from now, accepted)
        for (offset, accepted) in [(-2i64, false), (-1, true), (0, true), (1, true), (2, false)] {
            let then = (now as i64 + offset * 30) as u64;
            let code = code_at(&secret, &p, then).unwrap();
            let got = check(&secret, &p, &code, now, None);
            if accepted {
                assert_eq!(
                    got,
                    CodeCheck::Fresh {
                        step: (step as i64 + offset) as u64
                    },
                    "{offset}"
                );
            } else {
                assert_eq!(got, CodeCheck::Wrong, "{offset}");
            }
        }
        let code = code_at(&secret, &p, now).unwrap();
        assert_eq!(
            check(&secret, &p, &code, now, Some(step)),
            CodeCheck::Replay,
            "used"
        );
        assert_eq!(
            check(&secret, &p, &code, now, Some(step + 1)),
            CodeCheck::Replay,
            "a later one was used"
        );
        assert_eq!(
            check(&secret, &p, &code, now, Some(step - 1)),
            CodeCheck::Fresh { step }
        );
        let previous = code_at(&secret, &p, now - 30).unwrap();
        assert_eq!(
            check(&secret, &p, &previous, now, Some(step)),
            CodeCheck::Replay
        );
        assert_eq!(check(&secret, &p, "000000x", now, None), CodeCheck::Wrong);
        assert_eq!(check(&secret, &p, "", now, None), CodeCheck::Wrong);
    }

    #[test]
    fn the_uri_names_the_issuer_and_the_login() {
        let cfg = TwoFactorConfig {
            issuer: "ACME Portal".into(),
            required_groups: vec!["admins".into()],
            totp: params(6),
            backup_codes: 10,
            secret_key_file: "k".into(),
        };
        let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        let uri = uri(&secret, &cfg, "alice@example.com").unwrap();
        assert!(
            uri.starts_with("otpauth://totp/ACME%20Portal:alice%40example.com?"),
            "{uri}"
        );
        assert!(
            uri.contains("secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
            "{uri}"
        );
        assert!(uri.contains("issuer=ACME%20Portal"), "{uri}");
        assert_eq!(grouped(&secret), "GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ");
        assert!(required(&cfg, &["Admins".into()]));
        assert!(!required(&cfg, &["staff".into()]));
        let everyone = TwoFactorConfig {
            required_groups: vec!["*".into()],
            ..cfg
        };
        assert!(required(&everyone, &[]));
    }
}
