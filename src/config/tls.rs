//! `tls`, `redirect_http` and `upstream_ca` (docs: TLS): where the certificate chain and key
//! are read from, the plain listener that only redirects to `public_url`, and the CA file the
//! portal's certificate must chain to. Paths and addresses only: `gateway::tls` reads the files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::raw::RawTls;
use super::{PublicUrl, Validator};

/// The certificate chain (leaf first) and its private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A file path as written, `""` meaning none.
fn path(value: Option<String>, base: &Path) -> Option<PathBuf> {
    value.filter(|v| !v.trim().is_empty()).map(|v| base.join(v))
}

impl Validator<'_> {
    pub(super) fn tls(&mut self, raw: Option<RawTls>, base: &Path) -> Option<TlsConfig> {
        let raw = raw?;
        let cert = path(raw.cert, base);
        let key = path(raw.key, base);
        if cert.is_none() {
            self.error(
                "tls.cert",
                "is required with `tls`: the certificate chain file (PEM, leaf first), e.g. /etc/portcullis/fullchain.pem",
            );
        }
        if key.is_none() {
            self.error(
                "tls.key",
                "is required with `tls`: the private key file (PEM), e.g. /etc/portcullis/privkey.pem",
            );
        }
        Some(TlsConfig {
            cert: cert?,
            key: key?,
        })
    }

    /// The plain listener that redirects to `public_url`: it needs an https one to point at, and
    /// an address of its own.
    pub(super) fn redirect_http(
        &mut self,
        raw: Option<String>,
        public_url: Option<&PublicUrl>,
        taken: &[SocketAddr],
    ) -> Option<SocketAddr> {
        let text = raw.filter(|t| !t.trim().is_empty())?;
        let addr = self.socket_addr("redirect_http", &text)?;
        if !public_url.is_some_and(|u| u.https) {
            self.error(
                "redirect_http",
                "needs an https:// `public_url`: the address every plain request is sent to",
            );
        }
        if taken.contains(&addr) {
            self.error(
                "redirect_http",
                "must differ from every `listen` address and from `admin_listen`",
            );
        }
        Some(addr)
    }

    /// `upstream_ca` applies to an https upstream only: on a plain one it would check nothing.
    pub(super) fn upstream_ca(
        &mut self,
        raw: Option<String>,
        upstream_tls: bool,
        base: &Path,
    ) -> Option<PathBuf> {
        let ca = path(raw, base)?;
        if !upstream_tls {
            self.error(
                "upstream_ca",
                "is for an https:// `upstream`; a plain http:// one has no certificate to check",
            );
        }
        Some(ca)
    }

    /// A TLS listener behind an http:// `public_url` would set cookies for the wrong scheme.
    pub(super) fn tls_agrees(&mut self, tls: Option<&TlsConfig>, public_url: Option<&PublicUrl>) {
        if tls.is_some() && public_url.is_some_and(|u| !u.https) {
            self.error(
                "public_url",
                "must be https:// when `tls` is set: every listener serves HTTPS",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn parse(src: &str) -> Result<Config, String> {
        Config::parse(src, "t.yaml", Path::new("/etc/portcullis")).map_err(|e| e.to_string())
    }

    const BASE: &str = "upstream: http://127.0.0.1:1\n";

    #[test]
    fn tls_makes_cookies_secure_and_paths_are_relative_to_the_file() {
        let c = parse(&format!(
            "{BASE}tls:\n  cert: certs/full.pem\n  key: k.pem\n"
        ))
        .unwrap();
        let tls = c.tls.as_ref().unwrap();
        assert_eq!(tls.cert, Path::new("/etc/portcullis/certs/full.pem"));
        assert_eq!(tls.key, Path::new("/etc/portcullis/k.pem"));
        assert!(c.secure_cookies());
        assert_eq!(c.cookies.session, "__Host-portcullis_session");
        let plain = parse(BASE).unwrap();
        assert!(plain.tls.is_none() && plain.redirect_http.is_none());
        assert!(plain.upstream.ca.is_none() && !plain.secure_cookies());
    }

    #[test]
    fn tls_mistakes_are_reported() {
        let cases = [
            ("tls:\n  cert: a.pem\n", "tls.key: is required"),
            (
                "tls:\n  key: a.pem\n  cert: \"\"\n",
                "tls.cert: is required",
            ),
            (
                "public_url: http://p.example\ntls:\n  cert: a\n  key: b\n",
                "public_url: must be https://",
            ),
            (
                "redirect_http: 0.0.0.0:80\n",
                "needs an https:// `public_url`",
            ),
            (
                "public_url: https://p.example\nlisten: 0.0.0.0:8443\nredirect_http: 0.0.0.0:8443\n",
                "must differ from every `listen`",
            ),
            ("redirect_http: port80\n", "is not an address with a port"),
            ("upstream_ca: ca.pem\n", "is for an https:// `upstream`"),
            (
                "tls:\n  cert: a\n  key: b\n  chain: c\n",
                "unknown field `chain`",
            ),
        ];
        for (yaml, want) in cases {
            let err = parse(&format!("{BASE}{yaml}")).unwrap_err();
            assert!(err.contains(want), "{yaml}: {err}");
        }
    }

    #[test]
    fn redirect_and_upstream_ca_when_they_fit() {
        let c = parse(
            "upstream: https://127.0.0.1:8443\nupstream_ca: ca.pem\npublic_url: https://p.example\nredirect_http: 127.0.0.1:8081\n",
        )
        .unwrap();
        assert_eq!(c.redirect_http, Some("127.0.0.1:8081".parse().unwrap()));
        assert_eq!(
            c.upstream.ca.as_deref(),
            Some(Path::new("/etc/portcullis/ca.pem"))
        );
        assert!(c.upstream.tls && c.upstream.sni == "127.0.0.1");
        let empty = parse(&format!("{BASE}redirect_http: \"\"\nupstream_ca: \"\"\n")).unwrap();
        assert!(empty.redirect_http.is_none() && empty.upstream.ca.is_none());
    }
}
