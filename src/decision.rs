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

/// The gateway's own endpoints (SPEC §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    LoginPage,
    LoginForm,
    Logout,
    ApiLogin,
    ApiSession,
    ApiLogout,
    /// `captcha/{id}.png`; the id is checked for shape before anything is looked up.
    CaptchaImage(String),
    NotFound,
    MethodNotAllowed,
}

pub fn route(method: &str, path: &str, public_paths: &[String]) -> Route {
    if let Some(rest) = path.strip_prefix(PREFIX) {
        return Route::Local(endpoint(method, rest));
    }
    if is_public(path, public_paths) {
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
            _ if !crate::token::is_challenge_id(id) => Endpoint::NotFound,
            "GET" | "HEAD" => Endpoint::CaptchaImage(id.to_string()),
            _ => Endpoint::MethodNotAllowed,
        };
    }
    let (get, post) = match rest {
        "login" => (Endpoint::LoginPage, Endpoint::LoginForm),
        "logout" => (Endpoint::MethodNotAllowed, Endpoint::Logout),
        "api/login" => (Endpoint::MethodNotAllowed, Endpoint::ApiLogin),
        "api/session" => (Endpoint::ApiSession, Endpoint::MethodNotAllowed),
        "api/logout" => (Endpoint::MethodNotAllowed, Endpoint::ApiLogout),
        _ => return Endpoint::NotFound,
    };
    match method {
        "GET" | "HEAD" => get,
        "POST" => post,
        _ => Endpoint::MethodNotAllowed,
    }
}

/// A path is public when it falls under a configured prefix and cannot be rewritten by the
/// portal into something else: no dot segments, encoded slashes or dots, or backslashes.
/// A prefix ending in `/` covers everything below it; otherwise the path itself and below.
pub fn is_public(path: &str, public_paths: &[String]) -> bool {
    if is_ambiguous(path) {
        return false;
    }
    public_paths.iter().any(|p| {
        if p.ends_with('/') {
            path.starts_with(p.as_str())
        } else {
            path == p
                || path
                    .strip_prefix(p.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        }
    })
}

fn is_ambiguous(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.contains("%2e")
        || lower.contains("%2f")
        || lower.contains("%5c")
        || path.contains('\\')
        || path.split('/').any(|seg| seg == "." || seg == "..")
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
            ("GET", "/", Route::Protected),
            ("GET", "/STATIC/app.css", Route::Protected),
        ];
        for (method, path, want) in cases {
            assert_eq!(route(method, path, &publics()), want, "{method} {path}");
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
