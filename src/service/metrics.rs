//! Prometheus metrics (docs/reference.md, Metrics): each registered once, here, and rendered
//! for the admin listener. Labels are fixed words, never a login, an address or anything a client sent.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The Prometheus text exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `result` values of `portcullis_login_attempts_total`, in the order docs/reference.md lists them.
pub const LOGIN_RESULTS: &[&str] = &[
    "success",
    "invalid_credentials",
    "captcha_required",
    "captcha_failed",
    "throttled",
    "locked",
    "dismissed",
    "invited",
    "ip_restricted",
    "two_factor_required",
    "invalid_code",
];

/// `result` values of `portcullis_two_factor_total`: a code accepted, a wrong one, a used one
/// (refused), a backup code used.
pub const TWO_FACTOR_RESULTS: &[&str] = &["success", "failure", "replay", "backup_code"];

/// `result` values of `portcullis_mail_total`: sent, given up, to be tried again.
pub const MAIL_RESULTS: &[&str] = &["sent", "failed", "retried"];

/// `result` values of `portcullis_recovery_total` (by `channel`, email or sms).
pub const RECOVERY_RESULTS: &[&str] = &["requested", "throttled", "completed", "invalid"];

/// `decision` values of `portcullis_requests_total`.
pub const DECISIONS: &[&str] = &[
    "proxied",
    "public",
    "login_redirect",
    "unauthenticated",
    "ip_denied",
    "ip_restricted",
    "local",
];

/// `reason` values of `portcullis_sessions_ended_total`.
pub const END_REASONS: &[&str] = &[
    "logout",
    "idle",
    "absolute",
    "revoked",
    "dismissed",
    "ip_restricted",
];

pub struct Metrics {
    registry: Registry,
    requests: Counters,
    sessions_active: IntGauge,
    sessions_ended: Counters,
    session_cache: Counters,
    upstream_seconds: Histogram,
    login_attempts: Counters,
    pub password_hash_seconds: Histogram,
    config_reloads: Counters,
    events_dropped: Counters,
    two_factor: Counters,
    mail: Counters,
    sms: Counters,
    recovery: IntCounterVec,
    /// Registered when the first certificate is loaded: without TLS there is no series, so an
    /// expiry alert never fires on a 0.
    certificate_expiry: IntGauge,
    certificate_registered: std::sync::Once,
}

/// Building fixed, valid metric definitions cannot fail; if it did, it would fail on every start.
fn fixed<T>(made: prometheus::Result<T>) -> T {
    made.unwrap_or_else(|e| panic!("a metric definition is invalid: {e}"))
}

/// A counter with one label whose values are fixed: each series is resolved once, at start,
/// so counting is one atomic add (no label hashing or lock on the request path).
struct Counters {
    vec: IntCounterVec,
    series: Vec<(&'static str, IntCounter)>,
}

impl Counters {
    fn inc_by(&self, value: &str, n: u64) {
        match self.series.iter().find(|(v, _)| *v == value) {
            Some((_, c)) => c.inc_by(n),
            None => self.vec.with_label_values(&[value]).inc_by(n),
        }
    }
}

fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    label: &str,
    values: &[&'static str],
) -> Counters {
    let vec = fixed(IntCounterVec::new(Opts::new(name, help), &[label]));
    fixed(registry.register(Box::new(vec.clone())));
    // Every series exists from the start, at 0, so rates and alerts see it before it moves.
    let series = values
        .iter()
        .map(|v| (*v, vec.with_label_values(&[v])))
        .collect();
    Counters { vec, series }
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = fixed(Histogram::with_opts(
        HistogramOpts::new(name, help).buckets(buckets),
    ));
    fixed(registry.register(Box::new(h.clone())));
    h
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = counter_vec(
            &registry,
            "portcullis_requests_total",
            "Requests by what the gateway decided.",
            "decision",
            DECISIONS,
        );
        let sessions_active = fixed(IntGauge::new(
            "portcullis_sessions_active",
            "Sessions in the store, from every gateway, not past their expiry.",
        ));
        fixed(registry.register(Box::new(sessions_active.clone())));
        let sessions_ended = counter_vec(
            &registry,
            "portcullis_sessions_ended_total",
            "Sessions ended by this gateway, by reason.",
            "reason",
            END_REASONS,
        );
        let session_cache = counter_vec(
            &registry,
            "portcullis_session_cache_total",
            "Session lookups answered by the in-memory cache (hit) or the store (miss).",
            "result",
            &["hit", "miss"],
        );
        let upstream_seconds = histogram(
            &registry,
            "portcullis_upstream_seconds",
            "Time from sending a request upstream to its response header.",
            vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
        );
        let login_attempts = counter_vec(
            &registry,
            "portcullis_login_attempts_total",
            "Sign-in attempts by result.",
            "result",
            LOGIN_RESULTS,
        );
        let password_hash_seconds = histogram(
            &registry,
            "portcullis_password_hash_seconds",
            "Time spent computing one password hash.",
            vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
        );
        let config_reloads = counter_vec(
            &registry,
            "portcullis_config_reloads_total",
            "Configuration reloads by result.",
            "result",
            &["ok", "error"],
        );
        let events_dropped = counter_vec(
            &registry,
            "portcullis_events_dropped_total",
            "Events not written to the store or to audit.file because the writer fell behind or failed.",
            "sink",
            &["store", "file"],
        );
        let two_factor = counter_vec(
            &registry,
            "portcullis_two_factor_total",
            "Second-step codes by result.",
            "result",
            TWO_FACTOR_RESULTS,
        );
        let (mail, sms, recovery) = recovery_metrics(&registry);
        #[cfg(target_os = "linux")]
        fixed(registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )));
        Metrics {
            registry,
            requests,
            sessions_active,
            sessions_ended,
            session_cache,
            upstream_seconds,
            login_attempts,
            password_hash_seconds,
            config_reloads,
            events_dropped,
            two_factor,
            mail,
            sms,
            recovery,
            certificate_expiry: fixed(IntGauge::new(
                "portcullis_tls_certificate_expiry_timestamp_seconds",
                "When the served TLS certificate expires (its notAfter), seconds since the epoch.",
            )),
            certificate_registered: std::sync::Once::new(),
        }
    }

    /// The served certificate's `notAfter`, seconds since the epoch.
    pub fn certificate_expiry(&self, not_after: i64) {
        self.certificate_expiry.set(not_after);
        self.certificate_registered.call_once(|| {
            fixed(
                self.registry
                    .register(Box::new(self.certificate_expiry.clone())),
            );
        });
    }

    /// One e-mail, by a `MAIL_RESULTS` value.
    pub fn mail(&self, result: &'static str) {
        self.mail.inc_by(result, 1);
    }

    /// One SMS: sent, or failed.
    pub fn sms(&self, sent: bool) {
        self.sms.inc_by(if sent { "sent" } else { "failed" }, 1);
    }

    /// One recovery step by `channel` (`email`, `sms`) and a `RECOVERY_RESULTS` value.
    pub fn recovery(&self, channel: &'static str, result: &'static str) {
        self.recovery.with_label_values(&[channel, result]).inc();
    }

    /// One second-step code, by a `TWO_FACTOR_RESULTS` value.
    pub fn two_factor(&self, result: &'static str) {
        self.two_factor.inc_by(result, 1);
    }

    /// One request, by its `DECISIONS` value.
    pub fn request(&self, decision: &'static str) {
        self.requests.inc_by(decision, 1);
    }

    pub fn set_sessions_active(&self, n: u64) {
        self.sessions_active
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// `n` sessions ended, by an `END_REASONS` value.
    pub fn sessions_ended(&self, reason: &'static str, n: u64) {
        self.sessions_ended.inc_by(reason, n);
    }

    pub fn session_cache(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.session_cache.inc_by(result, 1);
    }

    pub fn upstream(&self, took: Duration) {
        self.upstream_seconds.observe(took.as_secs_f64());
    }

    pub fn login_attempt(&self, result: &'static str) {
        self.login_attempts.inc_by(result, 1);
    }

    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.config_reloads.inc_by(result, 1);
    }

    /// `n` events lost on the way to `sink` (`store` or `file`).
    pub fn events_dropped(&self, sink: &'static str, n: u64) {
        self.events_dropped.inc_by(sink, n);
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "could not render the metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Mail, SMS and password recovery; the two-label family has its series made at start too.
fn recovery_metrics(registry: &Registry) -> (Counters, Counters, IntCounterVec) {
    let mail = counter_vec(
        registry,
        "portcullis_mail_total",
        "E-mail messages by result: sent, given up (no longer useful), or to be tried again.",
        "result",
        MAIL_RESULTS,
    );
    let sms = counter_vec(
        registry,
        "portcullis_sms_total",
        "SMS messages by result.",
        "result",
        &["sent", "failed"],
    );
    let recovery = fixed(IntCounterVec::new(
        Opts::new(
            "portcullis_recovery_total",
            "Password recovery steps by channel and result.",
        ),
        &["channel", "result"],
    ));
    fixed(registry.register(Box::new(recovery.clone())));
    for channel in ["email", "sms"] {
        for result in RECOVERY_RESULTS {
            recovery.with_label_values(&[channel, result]);
        }
    }
    (mail, sms, recovery)
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_login_result_is_exposed_from_the_start_and_counts() {
        let m = Metrics::new();
        let text = m.render();
        for r in LOGIN_RESULTS {
            let line = format!("portcullis_login_attempts_total{{result=\"{r}\"}} 0");
            assert!(text.contains(&line), "missing {line}");
        }
        m.login_attempt("captcha_failed");
        m.login_attempt("captcha_failed");
        assert!(
            m.render()
                .contains("portcullis_login_attempts_total{result=\"captcha_failed\"} 2")
        );
    }
}
