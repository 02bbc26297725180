//! The listeners' certificate (docs: TLS): read from `tls.cert` and `tls.key`, checked as a
//! pair before it is served, and swapped whole on reload so a renewal needs no restart and a
//! bad pair never replaces a good one. Handshakes only read the current pair.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::listeners::tls::Acceptor;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::{Config, TlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.cert {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("tls.key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("upstream_ca {path}: {reason}")]
    Ca { path: String, reason: String },
}

/// Everything TLS a config names, read as the gateway would: the listeners' pair (returned)
/// and the upstream's CA file. For start-up and `check-config`: a bad file is refused there,
/// never found by a handshake.
pub fn check(config: &Config) -> Result<Option<Pair>, TlsError> {
    if let Some(ca) = &config.upstream.ca {
        let chain = read_chain(ca).map_err(|reason| TlsError::Ca {
            path: ca.display().to_string(),
            reason,
        })?;
        let mut roots = rustls::RootCertStore::empty();
        let (_, refused) = roots.add_parsable_certificates(chain);
        if refused > 0 {
            return Err(TlsError::Ca {
                path: ca.display().to_string(),
                reason: format!("{refused} certificate(s) in it cannot be read"),
            });
        }
    }
    config.tls.as_ref().map(Pair::load).transpose()
}

/// A certificate chain with its key, checked to belong together, and when the leaf expires.
pub struct Pair {
    key: Arc<CertifiedKey>,
    /// The leaf's `notAfter`, seconds since the Unix epoch.
    pub not_after: i64,
    /// The leaf's subject alternative names (DNS names lower-cased, IP addresses as text).
    names: Vec<String>,
}

impl Pair {
    /// Reads and checks both files: PEM, a chain whose first certificate is readable X.509,
    /// a key rustls can sign with, and the leaf's public key matching it.
    pub fn load(tls: &TlsConfig) -> Result<Pair, TlsError> {
        let cert_error = |reason: String| TlsError::Cert {
            path: tls.cert.display().to_string(),
            reason,
        };
        let key_error = |reason: String| TlsError::Key {
            path: tls.key.display().to_string(),
            reason,
        };
        let chain = read_chain(&tls.cert).map_err(cert_error)?;
        let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| key_error(pem_reason(e)))?;
        let (not_after, names) = leaf_facts(&chain[0]).map_err(cert_error)?;
        let provider = rustls::crypto::ring::default_provider();
        let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                key_error("is not the key of the certificate in tls.cert".into())
            }
            other => key_error(format!("cannot be used: {other}")),
        })?;
        Ok(Pair {
            key: Arc::new(certified),
            not_after,
            names,
        })
    }

    /// What is odd about a pair that can be served all the same, for the log: expired, or not
    /// for `host` (`public_url`'s, without its port).
    pub fn doubts(&self, host: Option<&str>, now: i64) -> Vec<String> {
        let mut doubts = Vec::new();
        if self.not_after < now {
            doubts.push("tls.cert: the certificate has expired: browsers will refuse it".into());
        }
        if let Some(host) = host
            && !self.names.iter().any(|name| names_host(name, host))
        {
            doubts.push(format!(
                "tls.cert: the certificate does not name {host}, public_url's host (it names {}): browsers will refuse it",
                self.names.join(", ")
            ));
        }
        doubts
    }
}

/// Whether a certificate name covers `host`: the same name (case-insensitive), or a wildcard
/// `*.rest` for exactly one label more than `rest`.
fn names_host(name: &str, host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if name.eq_ignore_ascii_case(host) {
        return true;
    }
    match (name.strip_prefix("*."), host.split_once('.')) {
        (Some(rest), Some((label, host_rest))) => {
            !label.is_empty() && rest.eq_ignore_ascii_case(host_rest)
        }
        _ => false,
    }
}

/// `public_url`'s host without its port.
fn public_host(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority.split(':').next().unwrap_or(authority)
}

/// `Pair::doubts` for the pair `config` names, as of `now`.
pub fn doubts(config: &Config, pair: &Pair, now: i64) -> Vec<String> {
    let host = config
        .public_url
        .as_ref()
        .map(|u| public_host(&u.authority));
    pair.doubts(host, now)
}

/// Logs `doubts` (at start and on each reload): the pair is served all the same.
pub fn warn_doubts(config: &Config, pair: &Pair, now: i64) {
    for problem in doubts(config, pair, now) {
        tracing::warn!(%problem, "the certificate is served all the same");
    }
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(pem_reason)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_reason)?;
    if chain.is_empty() {
        return Err("holds no certificate (PEM `BEGIN CERTIFICATE`)".into());
    }
    Ok(chain)
}

fn pem_reason(e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) => format!("cannot be read: {io}"),
        Error::NoItemsFound => "holds no private key (PEM `BEGIN PRIVATE KEY`)".into(),
        other => format!("is not valid PEM: {other}"),
    }
}

/// The leaf's expiry and names.
fn leaf_facts(leaf: &CertificateDer<'_>) -> Result<(i64, Vec<String>), String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("the first certificate cannot be read: {e}"))?;
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                    GeneralName::IPAddress(b) => ip_text(b),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok((cert.validity().not_after.timestamp(), names))
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(ip.to_string())
}

/// What every handshake is answered with: the pair in force, replaced whole by `replace`.
#[derive(Debug)]
pub struct Certificate {
    current: ArcSwap<CertifiedKey>,
}

impl Certificate {
    pub fn new(pair: Pair) -> Arc<Certificate> {
        Arc::new(Certificate {
            current: ArcSwap::new(pair.key),
        })
    }

    pub fn replace(&self, pair: Pair) {
        self.current.store(pair.key);
    }

    /// What the public listeners' handshakes are made with (`connection::Guarded` runs them,
    /// under `timeouts.request_header`): TLS 1.2 and 1.3 with rustls' default suites, all
    /// AEAD with forward secrecy, in the server's order; HTTP/2 preferred over HTTP/1.1 by ALPN.
    pub fn acceptor(self: &Arc<Self>) -> Result<Acceptor, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.ignore_client_order = true;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Acceptor::from_server_config(Arc::new(config)))
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_names_cover_which_hosts() {
        let cases = [
            ("portal.example.com", "portal.example.com", true),
            ("portal.example.com", "PORTAL.Example.com", true),
            ("*.example.com", "portal.example.com", true),
            ("*.example.com", "a.portal.example.com", false),
            ("*.example.com", "example.com", false),
            ("*.example.com", ".example.com", false),
            ("portal.example.com", "other.example.com", false),
            ("127.0.0.1", "127.0.0.1", true),
            ("::1", "[::1]", true),
            ("127.0.0.1", "localhost", false),
        ];
        for (name, host, want) in cases {
            assert_eq!(names_host(name, host), want, "{name} for {host}");
        }
    }

    #[test]
    fn the_host_of_public_url_without_its_port() {
        let cases = [
            ("portal.example.com", "portal.example.com"),
            ("portal.example.com:8443", "portal.example.com"),
            ("127.0.0.1:8443", "127.0.0.1"),
            ("[::1]:8443", "[::1]"),
            ("[::1]", "[::1]"),
        ];
        for (authority, want) in cases {
            assert_eq!(public_host(authority), want, "{authority}");
        }
    }
}
