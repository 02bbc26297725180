//! Request headers as a matter of trust: which framing a request may have (one `Host`, one
//! plain `Content-Length`), which client-sent headers never reach the portal because they claim
//! an address, a host or a rewritten URL, and what a valid `Host` is. Pure functions of names
//! and values; the gateway's proxy phase carries them out.

/// Whether two header names are one to a CGI-style server, which reads `X_Real_IP` and
/// `X-Real-IP` both as `HTTP_X_REAL_IP`: so every spelling must be treated alike. No
/// allocation, as it runs for every header of every request.
pub fn same_cgi_name(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| cgi(x) == cgi(y))
}

fn cgi(c: u8) -> u8 {
    if c == b'_' {
        b'-'
    } else {
        c.to_ascii_lowercase()
    }
}

/// Headers that name a client address, the host asked for, or a URL to serve instead, as
/// proxies and frameworks read them. A client could set any of them; the portal must be able to
/// believe every one it receives, so they are removed from every request, and the gateway then
/// sets `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`, `X-Real-IP` and `Forwarded`
/// to its own truth.
const FORGEABLE: &[&str] = &[
    "forwarded",
    "forwarded-for",
    "x-forwarded",
    "x-real-ip",
    "x-client-ip",
    "client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-originating-ip",
    "x-remote-ip",
    "x-remote-addr",
    "x-proxyuser-ip",
    "x-envoy-external-address",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-envoy-original-path",
    "x-host",
    "x-http-host-override",
];

/// Families of such headers, by prefix: `X-Forwarded-*` (`-For`, `-Host`, `-Proto`, `-Port`,
/// `-Server`, `-Prefix`, …) and `X-Original-*` (`-URL`, `-Host`, `-Forwarded-For`, …).
const FORGEABLE_PREFIXES: &[&str] = &["x-forwarded-", "x-original-"];

/// Whether a client-sent header with this name must be removed before the request goes to the
/// portal (in any spelling: `X_Real_IP` too). Besides the lists above, any `…-Client-IP`.
pub fn is_forgeable(name: &str) -> bool {
    let name = name.as_bytes();
    let cgi_eq =
        |a: &[u8], b: &[u8]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| cgi(*x) == *y);
    FORGEABLE.iter().any(|f| cgi_eq(name, f.as_bytes()))
        || FORGEABLE_PREFIXES
            .iter()
            .any(|p| name.len() > p.len() && cgi_eq(&name[..p.len()], p.as_bytes()))
        || name.len() > 10 && cgi_eq(&name[name.len() - 10..], b"-client-ip")
}

/// Why a request's framing is refused with `400` (RFC 9112 §3.2, §6.3): a receiver that reads
/// it differently from the portal would let requests be smuggled past the gateway's decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadFraming {
    /// HTTP/1.1 without `Host`, or more than one.
    Host,
    /// `Content-Length` repeated, a list (`3, 3`), or not a plain number.
    ContentLength,
    /// Both `Transfer-Encoding` and `Content-Length`.
    BothLengths,
    /// `Content_Length`, `Transfer_Encoding` or `Host` spelled with `_`: a portal that folds
    /// `_` into `-` would frame or route the request otherwise.
    Underscored,
}

/// Whether a header name is a framing header (`Host`, `Content-Length`, `Transfer-Encoding`)
/// spelled with an underscore.
pub fn underscored_framing(name: &str) -> bool {
    name.contains('_')
        && ["host", "content-length", "transfer-encoding"]
            .iter()
            .any(|f| same_cgi_name(name, f))
}

/// The facts of a request's framing, as read from its head.
#[derive(Debug, Clone, Copy)]
pub struct Framing<'a> {
    /// HTTP/1.1 (HTTP/1.0 may omit `Host`; HTTP/2 carries `:authority` instead).
    pub needs_host: bool,
    pub hosts: &'a [&'a [u8]],
    pub content_lengths: &'a [&'a [u8]],
    pub transfer_encoding: bool,
    /// A framing header spelled with `_` is present (`underscored_framing`).
    pub underscored: bool,
}

pub fn framing_problem(f: Framing) -> Option<BadFraming> {
    if f.underscored {
        return Some(BadFraming::Underscored);
    }
    let host_ok = match f.hosts {
        [] => !f.needs_host,
        [one] => std::str::from_utf8(one).is_ok_and(crate::core::addr::valid_host),
        _ => false,
    };
    if !host_ok {
        return Some(BadFraming::Host);
    }
    match f.content_lengths {
        [] => None,
        [one] if !one.is_empty() && one.len() <= 18 && one.iter().all(u8::is_ascii_digit) => {
            f.transfer_encoding.then_some(BadFraming::BothLengths)
        }
        _ => Some(BadFraming::ContentLength),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgeable_names_in_every_spelling() {
        for name in [
            "Forwarded",
            "X-Real-IP",
            "x_real_ip",
            "True-Client-IP",
            "X-Client-IP",
            "CF-Connecting-IP",
            "X-Original-URL",
            "X-Rewrite-URL",
            "x-original-host",
            "X-Forwarded-For",
            "X-Forwarded-Host",
            "X_FORWARDED_PROTO",
            "X-Forwarded-Port",
            "X-Forwarded-Prefix",
            "X-Cluster-Client-IP",
            "Some-Vendor-Client-IP",
            "X-Host",
        ] {
            assert!(is_forgeable(name), "{name} must be removed");
        }
        for name in [
            "X-Requested-With",
            "Accept",
            "Cookie",
            "X-Forwarded",
            "Host",
            "X-CSRF-Token",
            "Origin",
            "Referer",
        ] {
            assert_eq!(is_forgeable(name), name == "X-Forwarded", "{name}");
        }
    }

    #[test]
    fn framing_table() {
        let host: &[&[u8]] = &[b"portal.example"];
        let f = |needs_host, hosts, lengths, te| Framing {
            needs_host,
            hosts,
            content_lengths: lengths,
            transfer_encoding: te,
            underscored: false,
        };
        let cases: &[(Framing, Option<BadFraming>)] = &[
            (f(true, host, &[], false), None),
            (f(true, host, &[b"3"], false), None),
            (f(true, host, &[], true), None),
            (f(false, &[], &[], false), None),
            (f(true, &[], &[], false), Some(BadFraming::Host)),
            (
                f(true, &[b"a.example", b"b.example"], &[], false),
                Some(BadFraming::Host),
            ),
            (f(true, &[b"a b"], &[], false), Some(BadFraming::Host)),
            (
                f(true, host, &[b"3, 3"], false),
                Some(BadFraming::ContentLength),
            ),
            (
                f(true, host, &[b"3", b"3"], false),
                Some(BadFraming::ContentLength),
            ),
            (
                f(true, host, &[b"+3"], false),
                Some(BadFraming::ContentLength),
            ),
            (
                f(true, host, &[b" 3"], false),
                Some(BadFraming::ContentLength),
            ),
            (
                f(true, host, &[b""], false),
                Some(BadFraming::ContentLength),
            ),
            (f(true, host, &[b"3"], true), Some(BadFraming::BothLengths)),
        ];
        for (framing, want) in cases {
            assert_eq!(framing_problem(*framing), *want, "{framing:?}");
        }
        let underscored = Framing {
            underscored: true,
            ..f(true, host, &[], false)
        };
        assert_eq!(framing_problem(underscored), Some(BadFraming::Underscored));
        for name in ["Content_Length", "transfer_encoding", "HOST_", "_host"] {
            assert_eq!(
                underscored_framing(name),
                !name.ends_with('_') && !name.starts_with('_'),
                "{name}"
            );
        }
        assert!(!underscored_framing("Content-Length") && !underscored_framing("X_Other"));
    }
}
