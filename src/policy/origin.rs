//! Where a state-changing request comes from, as the browser tells it (`Sec-Fetch-Site`, else
//! `Origin`): from the gateway's own pages, from another site, or unknown (a client that is
//! not a browser, or an old one; then the form's CSRF token decides alone). Pure, table-tested.

/// What the browser says about a request's origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    SameOrigin,
    /// Another site, a sibling subdomain, a sandboxed frame: refused outright.
    CrossSite,
    Unknown,
}

/// `own` is the gateway's origin, `scheme://host[:port]` as browsers write it. Browsers always
/// send `Sec-Fetch-Site` now and it cannot be forged by a page; `Origin` decides without it.
/// `Origin: null` (sent for forms on pages with `Referrer-Policy: no-referrer`) says nothing.
pub fn judge(sec_fetch_site: Option<&str>, origin: Option<&str>, own: &str) -> Origin {
    match sec_fetch_site.map(str::trim) {
        Some(s) if s.eq_ignore_ascii_case("same-origin") => Origin::SameOrigin,
        // A typed address or a bookmark: no page is involved, and the token still decides.
        Some(s) if s.eq_ignore_ascii_case("none") => Origin::Unknown,
        Some(_) => Origin::CrossSite,
        None => match origin.map(str::trim) {
            None | Some("null") => Origin::Unknown,
            Some(o) if o.eq_ignore_ascii_case(own) => Origin::SameOrigin,
            Some(_) => Origin::CrossSite,
        },
    }
}

/// Whether a sign-out may proceed (the `logout` form and `api/logout`): never from another
/// site; from our own pages always; from a client that does not say, only with proof that it
/// read one of our pages (the form's session-bound `token_ok`) or, for the API, a JSON body,
/// which a cross-site form cannot send without a CORS preflight.
pub fn may_sign_out(origin: Origin, api: bool, is_json: bool, token_ok: bool) -> bool {
    match origin {
        Origin::SameOrigin => true,
        Origin::CrossSite => false,
        Origin::Unknown => {
            if api {
                is_json
            } else {
                token_ok
            }
        }
    }
}

/// The gateway's own origin as browsers write it: `public_url`'s host when configured, else the
/// `Host` asked for, with the scheme cookies are set for.
pub fn own(https: bool, public_authority: Option<&str>, host: Option<&str>) -> String {
    let scheme = if https { "https" } else { "http" };
    format!(
        "{scheme}://{}",
        public_authority.or(host).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_out_table() {
        use Origin::*;
        // (origin, api, JSON body, form token right, allowed)
        let cases = [
            (SameOrigin, false, false, false, true),
            (SameOrigin, true, false, false, true),
            (CrossSite, false, false, true, false),
            (CrossSite, true, true, true, false),
            (Unknown, false, false, true, true),
            (Unknown, false, true, false, false),
            (Unknown, true, true, false, true),
            (Unknown, true, false, true, false),
        ];
        for (origin, api, json, token, want) in cases {
            assert_eq!(
                may_sign_out(origin, api, json, token),
                want,
                "{origin:?} api={api} json={json} token={token}"
            );
        }
    }

    #[test]
    fn the_own_origin_prefers_public_url() {
        assert_eq!(
            own(true, Some("portal.example.com"), Some("evil")),
            "https://portal.example.com"
        );
        assert_eq!(
            own(false, None, Some("127.0.0.1:8080")),
            "http://127.0.0.1:8080"
        );
        assert_eq!(own(false, None, None), "http://");
    }

    #[test]
    fn origin_table() {
        let own = "https://portal.example.com";
        let cases = [
            (Some("same-origin"), None, Origin::SameOrigin),
            (
                Some("same-origin"),
                Some("https://evil.example"),
                Origin::SameOrigin,
            ),
            (Some("cross-site"), None, Origin::CrossSite),
            (Some("cross-site"), Some(own), Origin::CrossSite),
            (
                Some("same-site"),
                Some("https://x.example.com"),
                Origin::CrossSite,
            ),
            (Some("none"), None, Origin::Unknown),
            (Some("garbage"), None, Origin::CrossSite),
            (None, Some(own), Origin::SameOrigin),
            (None, Some("HTTPS://PORTAL.EXAMPLE.COM"), Origin::SameOrigin),
            (None, Some("http://portal.example.com"), Origin::CrossSite),
            (
                None,
                Some("https://portal.example.com:8443"),
                Origin::CrossSite,
            ),
            (None, Some("https://evil.example"), Origin::CrossSite),
            (None, Some("null"), Origin::Unknown),
            (None, None, Origin::Unknown),
        ];
        for (site, origin, want) in cases {
            assert_eq!(judge(site, origin, own), want, "{site:?} {origin:?}");
        }
    }
}
