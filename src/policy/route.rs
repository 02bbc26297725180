//! The security decisions for one request, as plain functions of plain facts: which requests
//! are the gateway's own, which are public, where an unauthenticated visitor is sent, and which
//! `rd` targets are safe. No I/O and no Pingora types; every rule here is table-tested.

/// The reserved prefix of the gateway's own endpoints.
pub const PREFIX: &str = "/_portcullis/";
pub const LOGIN_PATH: &str = "/_portcullis/login";

/// What part of the gateway a request belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Under `/_portcullis/`: answered by the gateway, never proxied.
    Local(Endpoint),
    /// A configured public path: proxied without identity.
    Public,
    /// Everything else: needs a session.
    Protected,
}

/// The gateway's own endpoints (docs/reference.md, Endpoints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    LoginPage,
    LoginForm,
    Logout,
    ApiLogin,
    ApiSession,
    ApiLogout,
    /// The second step of a sign-in: `2fa`.
    TwoFactorPage,
    TwoFactorForm,
    /// Setting up two-step verification: `2fa/setup`.
    SetupPage,
    SetupForm,
    /// "Forgot your password?": `forgot`.
    ForgotPage,
    ForgotForm,
    /// A reset link, the new password, and the SMS code: `reset`.
    ResetPage,
    ResetForm,
    /// The link that confirms a new e-mail address: `account/email`.
    EmailConfirmPage,
    EmailConfirmForm,
    /// An invitation's link and the invitee's password: `invite`.
    InvitePage,
    InviteForm,
    /// The account page: `account`.
    AccountPage,
    AccountForm,
    /// `api/account`, `api/account/sessions`, `DELETE api/account/sessions/{handle}` (the
    /// handle checked for shape), `api/account/logout-all`, `api/account/password`.
    ApiAccount,
    ApiSessions,
    ApiEndSession(String),
    ApiLogoutAll,
    ApiPassword,
    /// `captcha/{id}.png`; the id is checked for shape before anything is looked up.
    CaptchaImage(String),
    NotFound,
    MethodNotAllowed,
}

/// Where a request goes. Only a `GET` or `HEAD` without a body can be public: static files
/// need nothing else, and a body or another method could reach a portal's front controller.
pub fn route(method: &str, path: &str, has_body: bool, public_paths: &[String]) -> Route {
    if let Some(rest) = path.strip_prefix(PREFIX) {
        return Route::Local(endpoint(method, rest));
    }
    if matches!(method, "GET" | "HEAD") && !has_body && is_public(path, public_paths) {
        Route::Public
    } else {
        Route::Protected
    }
}

fn endpoint(method: &str, rest: &str) -> Endpoint {
    if let Some(id) = rest
        .strip_prefix("captcha/")
        .and_then(|r| r.strip_suffix(".png"))
    {
        return match method {
            _ if !crate::core::secret::is_challenge_id(id) => Endpoint::NotFound,
            "GET" | "HEAD" => Endpoint::CaptchaImage(id.to_string()),
            _ => Endpoint::MethodNotAllowed,
        };
    }
    if let Some(handle) = rest.strip_prefix("api/account/sessions/") {
        return match method {
            _ if !crate::core::secret::is_session_handle(handle) => Endpoint::NotFound,
            "DELETE" => Endpoint::ApiEndSession(handle.to_string()),
            _ => Endpoint::MethodNotAllowed,
        };
    }
    let (get, post) = match rest {
        "login" => (Endpoint::LoginPage, Endpoint::LoginForm),
        "logout" => (Endpoint::MethodNotAllowed, Endpoint::Logout),
        "api/login" => (Endpoint::MethodNotAllowed, Endpoint::ApiLogin),
        "api/session" => (Endpoint::ApiSession, Endpoint::MethodNotAllowed),
        "api/logout" => (Endpoint::MethodNotAllowed, Endpoint::ApiLogout),
        "2fa" => (Endpoint::TwoFactorPage, Endpoint::TwoFactorForm),
        "2fa/setup" => (Endpoint::SetupPage, Endpoint::SetupForm),
        "forgot" => (Endpoint::ForgotPage, Endpoint::ForgotForm),
        "reset" => (Endpoint::ResetPage, Endpoint::ResetForm),
        "account" => (Endpoint::AccountPage, Endpoint::AccountForm),
        "invite" => (Endpoint::InvitePage, Endpoint::InviteForm),
        "account/email" => (Endpoint::EmailConfirmPage, Endpoint::EmailConfirmForm),
        "api/account" => (Endpoint::ApiAccount, Endpoint::MethodNotAllowed),
        "api/account/sessions" => (Endpoint::ApiSessions, Endpoint::MethodNotAllowed),
        "api/account/logout-all" => (Endpoint::MethodNotAllowed, Endpoint::ApiLogoutAll),
        "api/account/password" => (Endpoint::MethodNotAllowed, Endpoint::ApiPassword),
        _ => return Endpoint::NotFound,
    };
    match method {
        "GET" | "HEAD" => get,
        "POST" => post,
        _ => Endpoint::MethodNotAllowed,
    }
}

/// A path is public when it falls under a configured prefix and everything after the prefix is
/// plain: segments that every portal reads the same way, whatever it decodes or strips. A
/// prefix ending in `/` covers everything below it; otherwise the path itself and below.
pub fn is_public(path: &str, public_paths: &[String]) -> bool {
    public_paths.iter().any(|p| {
        let Some(rest) = path.strip_prefix(p.as_str()) else {
            return false;
        };
        if p.ends_with('/') {
            plain_below(rest)
        } else {
            rest.is_empty() || rest.strip_prefix('/').is_some_and(plain_below)
        }
    })
}

/// The part of a public path below its prefix (`a/b.css`, `a/`, or empty): segments separated
/// by `/`, each a plain name, the last one possibly empty (a directory). An allow-list, so that
/// what a servlet container, IIS or a framework makes of a path can never climb out of the
/// prefix: after one percent-decoding every byte must be a plain character (no `.`-only
/// segments, `;` parameters, `%` left for a second decoding, separators, controls, spaces,
/// brackets or anything outside ASCII, which Unicode normalisation could turn into one of
/// those).
fn plain_below(rest: &str) -> bool {
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    segments
        .iter()
        .enumerate()
        .all(|(i, seg)| (i == last && seg.is_empty()) || plain_segment(seg))
}

fn plain_segment(raw: &str) -> bool {
    let Some(decoded) = decode_once(raw.as_bytes()) else {
        return false;
    };
    decoded.iter().all(|&b| plain_byte(b)) && decoded.iter().any(u8::is_ascii_alphanumeric)
}

/// Letters, digits and `-._~@`: what file names of static assets are made of, and nothing a
/// server or framework reads as a separator, a parameter, an escape, a space or a special
/// segment (`+` is a space to some decoders, `:` a stream name to Windows, `(S(…))` a session
/// segment that ASP.NET removes, `;` a parameter to servlet containers).
fn plain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~@".contains(&b)
}

/// Percent-decodes once; `None` for a `%` that does not start two hex digits (`%u002e`, `%`).
fn decode_once(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            let text = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(text, 16).ok()?);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The session the request carries, as far as the decision needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Live,
    /// A session cookie whose session has expired (the login page says so).
    Expired,
    Missing,
}

/// What to do with a protected request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Forward,
    /// A browser navigation without a session: `302` to the login page.
    LoginRedirect {
        location: String,
    },
    /// Anything else without a session: `401` JSON.
    Unauthenticated {
        login_url: String,
    },
}

pub fn decide(
    method: &str,
    path_and_query: &str,
    accepts_html: bool,
    session: SessionState,
) -> Decision {
    if session == SessionState::Live {
        return Decision::Forward;
    }
    let location = login_location(path_and_query, session == SessionState::Expired);
    if (method == "GET" || method == "HEAD") && accepts_html {
        Decision::LoginRedirect { location }
    } else {
        Decision::Unauthenticated {
            login_url: location,
        }
    }
}

/// `/_portcullis/login?rd=<original>`, plus `&expired=1` after an idle expiry.
pub fn login_location(path_and_query: &str, expired: bool) -> String {
    let rd: String =
        form_urlencoded::byte_serialize(safe_redirect(path_and_query).as_bytes()).collect();
    let mut location = format!("{LOGIN_PATH}?rd={rd}");
    if expired {
        location.push_str("&expired=1");
    }
    location
}

/// Where to send someone after signing in: `rd` when it is a same-origin relative path,
/// `/` otherwise. Browsers read `//host`, `/\host` and paths with tabs or newlines (which they
/// strip) as other sites, so those are refused.
pub fn safe_redirect(rd: &str) -> &str {
    let b = rd.as_bytes();
    let relative = b.first() == Some(&b'/')
        && !matches!(b.get(1), Some(b'/') | Some(b'\\'))
        && !rd
            .bytes()
            .any(|c| c.is_ascii_control() || c == b'\\' || c == b' ')
        && !rd.starts_with(PREFIX);
    if relative { rd } else { "/" }
}

/// A browser navigation: the client says it accepts HTML.
pub fn accepts_html(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publics() -> Vec<String> {
        vec!["/favicon.ico".into(), "/static/".into()]
    }

    #[test]
    fn routing_table() {
        use Endpoint::*;
        let cases = [
            ("GET", "/_portcullis/login", Route::Local(LoginPage)),
            ("HEAD", "/_portcullis/login", Route::Local(LoginPage)),
            ("POST", "/_portcullis/login", Route::Local(LoginForm)),
            ("POST", "/_portcullis/logout", Route::Local(Logout)),
            ("GET", "/_portcullis/logout", Route::Local(MethodNotAllowed)),
            ("POST", "/_portcullis/api/login", Route::Local(ApiLogin)),
            ("GET", "/_portcullis/api/session", Route::Local(ApiSession)),
            ("POST", "/_portcullis/api/logout", Route::Local(ApiLogout)),
            ("GET", "/_portcullis/2fa", Route::Local(TwoFactorPage)),
            ("POST", "/_portcullis/2fa", Route::Local(TwoFactorForm)),
            ("GET", "/_portcullis/2fa/setup", Route::Local(SetupPage)),
            ("POST", "/_portcullis/2fa/setup", Route::Local(SetupForm)),
            ("PUT", "/_portcullis/2fa", Route::Local(MethodNotAllowed)),
            ("GET", "/_portcullis/forgot", Route::Local(ForgotPage)),
            ("POST", "/_portcullis/reset", Route::Local(ResetForm)),
            ("GET", "/_portcullis/account", Route::Local(AccountPage)),
            ("GET", "/_portcullis/invite", Route::Local(InvitePage)),
            ("POST", "/_portcullis/invite", Route::Local(InviteForm)),
            ("POST", "/_portcullis/account", Route::Local(AccountForm)),
            ("GET", "/_portcullis/api/account", Route::Local(ApiAccount)),
            (
                "GET",
                "/_portcullis/api/account/sessions",
                Route::Local(ApiSessions),
            ),
            (
                "DELETE",
                "/_portcullis/api/account/sessions/AAAAAAAAAAAAAAA-",
                Route::Local(ApiEndSession("AAAAAAAAAAAAAAA-".into())),
            ),
            (
                "GET",
                "/_portcullis/api/account/sessions/AAAAAAAAAAAAAAA-",
                Route::Local(MethodNotAllowed),
            ),
            (
                "DELETE",
                "/_portcullis/api/account/sessions/..%2f..%2flogin",
                Route::Local(NotFound),
            ),
            (
                "POST",
                "/_portcullis/api/account/logout-all",
                Route::Local(ApiLogoutAll),
            ),
            (
                "POST",
                "/_portcullis/api/account/password",
                Route::Local(ApiPassword),
            ),
            (
                "GET",
                "/_portcullis/api/account/password",
                Route::Local(MethodNotAllowed),
            ),
            ("GET", "/_portcullis/2fa/", Route::Local(NotFound)),
            (
                "DELETE",
                "/_portcullis/login",
                Route::Local(MethodNotAllowed),
            ),
            (
                "GET",
                "/_portcullis/captcha/abcdefghijklmnopqrstu_.png",
                Route::Local(CaptchaImage("abcdefghijklmnopqrstu_".into())),
            ),
            (
                "POST",
                "/_portcullis/captcha/abcdefghijklmnopqrstu_.png",
                Route::Local(MethodNotAllowed),
            ),
            (
                "GET",
                "/_portcullis/captcha/short.png",
                Route::Local(NotFound),
            ),
            (
                "GET",
                "/_portcullis/captcha/abcdefghijklmnopqrstu_.gif",
                Route::Local(NotFound),
            ),
            (
                "GET",
                "/_portcullis/captcha/../../abcdefghijklmnopq.png",
                Route::Local(NotFound),
            ),
            ("GET", "/_portcullis/../admin", Route::Local(NotFound)),
            ("GET", "/_portcullis/anything", Route::Local(NotFound)),
            ("GET", "/_portcullisx", Route::Protected),
            ("GET", "/favicon.ico", Route::Public),
            ("GET", "/favicon.icox", Route::Protected),
            ("GET", "/static/app.css", Route::Public),
            ("GET", "/static", Route::Protected),
            ("GET", "/static/../admin", Route::Protected),
            ("GET", "/static/%2e%2e/admin", Route::Protected),
            ("GET", "/static/..%2Fadmin", Route::Protected),
            ("GET", "/static\\..\\admin", Route::Protected),
            ("GET", "/static/./x", Route::Protected),
            ("GET", "/static/", Route::Public),
            ("GET", "/static/css/", Route::Public),
            ("GET", "/static/app.min.css", Route::Public),
            ("GET", "/static/%41pp.css", Route::Public),
            ("GET", "/favicon.ico/x", Route::Public),
            ("GET", "/static/..;/admin", Route::Protected),
            ("GET", "/static/..;jsessionid=x/admin", Route::Protected),
            ("GET", "/static;x=1/../admin", Route::Protected),
            ("GET", "/static/app.css;jsessionid=1", Route::Protected),
            ("GET", "/static/..%00/admin", Route::Protected),
            ("GET", "/static/..%20/admin", Route::Protected),
            ("GET", "/static/..%09/admin", Route::Protected),
            ("GET", "/static/%252e%252e/admin", Route::Protected),
            ("GET", "/static/%c0%ae%c0%ae/admin", Route::Protected),
            ("GET", "/static/%u002e%u002e/admin", Route::Protected),
            ("GET", "/static/%2e%2e%2fadmin", Route::Protected),
            ("GET", "/static/..%5cadmin", Route::Protected),
            ("GET", "/static/...", Route::Protected),
            ("GET", "/static/..+/admin", Route::Protected),
            ("GET", "/static//admin", Route::Protected),
            ("GET", "/static/\u{ff0e}\u{ff0e}/admin", Route::Protected),
            ("GET", "/static/a b.css", Route::Protected),
            ("GET", "/static/(S(x))/(S(y))-admin/p", Route::Protected),
            ("GET", "/static/icon@2x.png", Route::Public),
            ("HEAD", "/static/app.css", Route::Public),
            ("GET", "/", Route::Protected),
            ("GET", "/STATIC/app.css", Route::Protected),
        ];
        for (method, path, want) in cases {
            assert_eq!(
                route(method, path, false, &publics()),
                want,
                "{method} {path}"
            );
        }
        // Another method, or a body, is never public.
        for (method, body) in [
            ("POST", false),
            ("PUT", false),
            ("OPTIONS", false),
            ("GET", true),
        ] {
            assert_eq!(
                route(method, "/static/app.css", body, &publics()),
                Route::Protected,
                "{method} with a body: {body}"
            );
        }
    }

    /// What a portal may make of a path before serving it: each returns the path it would
    /// serve. Applied in every combination to every path the gateway calls public.
    mod normalisers {
        use unicode_normalization::UnicodeNormalization;

        pub fn percent_decode(p: &str) -> String {
            let b = p.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < b.len() {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) if b[i] == b'%' => {
                        out.push(v);
                        i += 3;
                    }
                    _ => {
                        out.push(b[i]);
                        i += 1;
                    }
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        }

        /// `%uXXXX`, as IIS once read it.
        pub fn iis_unicode(p: &str) -> String {
            let mut out = String::new();
            let mut rest = p;
            while let Some(at) = rest.find("%u") {
                out.push_str(&rest[..at]);
                let code = rest
                    .get(at + 2..at + 6)
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .and_then(char::from_u32);
                match code {
                    Some(c) => {
                        out.push(c);
                        rest = &rest[at + 6..];
                    }
                    None => {
                        out.push_str("%u");
                        rest = &rest[at + 2..];
                    }
                }
            }
            out.push_str(rest);
            out
        }

        /// Servlet containers drop `;parameters` from each segment.
        pub fn strip_parameters(p: &str) -> String {
            p.split('/')
                .map(|seg| seg.split(';').next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("/")
        }

        pub fn backslash_as_slash(p: &str) -> String {
            p.replace('\\', "/")
        }

        pub fn nfkc(p: &str) -> String {
            p.nfkc().collect()
        }

        /// Windows drops trailing dots and spaces from names; some decoders read `+` as space.
        pub fn windows_names(p: &str) -> String {
            p.replace('+', " ")
                .split('/')
                .map(|seg| seg.trim_end_matches(['.', ' ']))
                .map(|seg| if seg.is_empty() { "." } else { seg })
                .collect::<Vec<_>>()
                .join("/")
        }

        /// RFC 3986 §5.2.4, with empty segments collapsed as file servers do.
        pub fn resolve_dots(p: &str) -> String {
            let mut out: Vec<&str> = Vec::new();
            for seg in p.split('/') {
                match seg {
                    "" | "." => {}
                    ".." => {
                        out.pop();
                    }
                    s => out.push(s),
                }
            }
            format!("/{}", out.join("/"))
        }

        /// ASP.NET's cookieless session segments, `(S(…))`, removed with what follows up to
        /// the next segment (CVE-2023-36899 joined the neighbours).
        pub fn aspnet_cookieless(p: &str) -> String {
            let mut out = p.to_string();
            while let Some(at) = out.find("(S(") {
                let end = out[at..].find("))").map_or(out.len(), |e| at + e + 2);
                let end = if out[end..].starts_with('/') {
                    end + 1
                } else {
                    end
                };
                out.replace_range(at..end, "");
            }
            out
        }

        pub const ALL: [fn(&str) -> String; 8] = [
            percent_decode,
            iis_unicode,
            aspnet_cookieless,
            strip_parameters,
            backslash_as_slash,
            nfkc,
            percent_decode,
            windows_names,
        ];
    }

    mod prop {
        use super::super::*;
        use super::normalisers;
        use proptest::prelude::*;

        const PIECES: &[&str] = &[
            "a",
            "css",
            "b.js",
            ".",
            "..",
            "...",
            "%2e",
            "%2E",
            "%252e",
            "%25",
            "%",
            ";",
            ";x=1",
            "\\",
            "%5c",
            "%5C",
            "%2f",
            "/",
            "//",
            "%00",
            "%20",
            "%09",
            "%0a",
            "+",
            " ",
            "%c0%ae",
            "%e0%80%ae",
            "%u002e",
            "%u2215",
            "\u{ff0e}",
            "\u{ff0f}",
            "\u{2024}",
            "\u{fe52}",
            "\u{ff3c}",
            "~",
            "-",
            "_",
            "%41",
            "%2541",
            "'",
            "(",
            "!",
            "=",
            "@",
            "\t",
            "?",
            "#",
            ":",
            "(S(x))",
            ")",
        ];

        fn tail() -> impl Strategy<Value = String> {
            proptest::collection::vec(proptest::sample::select(PIECES), 0..8)
                .prop_map(|pieces| pieces.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

            /// Any path the gateway calls public stays under its public prefix whatever a
            /// portal does to it first: percent-decoding once or twice, `%u` escapes, `;`
            /// parameters dropped, backslashes as slashes, Unicode NFKC, Windows name trimming,
            /// each alone and in every combination, then dot segments resolved.
            #[test]
            fn public_paths_stay_under_their_prefix(tail in tail(), file_prefix in any::<bool>()) {
                let (prefix, under) = if file_prefix {
                    ("/favicon.ico", "/favicon.ico")
                } else {
                    ("/static/", "/static/")
                };
                let publics = vec![prefix.to_string()];
                let path = format!("{prefix}{tail}");
                if !is_public(&path, &publics) {
                    return Ok(());
                }
                for mask in 0u32..(1 << normalisers::ALL.len()) {
                    let mut p = path.clone();
                    for (i, normalise) in normalisers::ALL.iter().enumerate() {
                        if mask & (1 << i) != 0 {
                            p = normalise(&p);
                        }
                    }
                    let served = normalisers::resolve_dots(&p);
                    let inside = served == under.trim_end_matches('/')
                        || served.starts_with(&format!("{}/", under.trim_end_matches('/')));
                    prop_assert!(inside, "{path:?} is public but is served as {served:?} (mask {mask:b})");
                }
            }
        }
    }

    #[test]
    fn decision_table() {
        let cases = [
            (
                "GET",
                "/app?x=1",
                true,
                SessionState::Live,
                Decision::Forward,
            ),
            ("POST", "/api", false, SessionState::Live, Decision::Forward),
            (
                "GET",
                "/app?x=1",
                true,
                SessionState::Missing,
                Decision::LoginRedirect {
                    location: "/_portcullis/login?rd=%2Fapp%3Fx%3D1".into(),
                },
            ),
            (
                "HEAD",
                "/",
                true,
                SessionState::Expired,
                Decision::LoginRedirect {
                    location: "/_portcullis/login?rd=%2F&expired=1".into(),
                },
            ),
            (
                "GET",
                "/api/items",
                false,
                SessionState::Missing,
                Decision::Unauthenticated {
                    login_url: "/_portcullis/login?rd=%2Fapi%2Fitems".into(),
                },
            ),
            (
                "POST",
                "/form",
                true,
                SessionState::Missing,
                Decision::Unauthenticated {
                    login_url: "/_portcullis/login?rd=%2Fform".into(),
                },
            ),
        ];
        for (method, pq, html, session, want) in cases {
            assert_eq!(
                decide(method, pq, html, session),
                want,
                "{method} {pq} {session:?}"
            );
        }
    }

    #[test]
    fn redirect_targets() {
        let cases = [
            ("/app", "/app"),
            ("/app?x=1&y=/z", "/app?x=1&y=/z"),
            ("", "/"),
            ("app", "/"),
            ("//evil.example", "/"),
            ("/\\evil.example", "/"),
            ("/\t/evil.example", "/"),
            ("/\n/evil.example", "/"),
            ("https://evil.example/", "/"),
            ("javascript:alert(1)", "/"),
            ("/a\\b", "/"),
            ("/_portcullis/logout", "/"),
            ("/%2F%2Fevil.example", "/%2F%2Fevil.example"),
        ];
        for (rd, want) in cases {
            assert_eq!(safe_redirect(rd), want, "{rd:?}");
        }
    }

    #[test]
    fn navigation_detection() {
        assert!(accepts_html(Some(
            "text/html,application/xhtml+xml,*/*;q=0.8"
        )));
        assert!(!accepts_html(Some("application/json")));
        assert!(!accepts_html(None));
    }
}
