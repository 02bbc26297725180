//! TLS for the tests: a private CA and server certificates made with the `openssl` command,
//! `curl` as the HTTPS client (HTTP/1.1 and HTTP/2), a rustls client that keeps one connection
//! open, and `openssl s_server` as an HTTPS portal.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// Runs `openssl` with the words of `line` in `dir`.
fn openssl(line: &str, dir: &Path) {
    let args: Vec<&str> = line.split_whitespace().collect();
    let out = Command::new("openssl")
        .args(&args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA of the test's own, and the certificates it signs.
pub struct Ca {
    pub dir: tempfile::TempDir,
    made: std::cell::Cell<u32>,
}

/// A certificate (leaf first) and its key, as files.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Leaf {
    /// The leaf certificate's DER bytes, to compare with what a server sent.
    pub fn der(&self) -> Vec<u8> {
        CertificateDer::pem_file_iter(&self.cert)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    }

    /// `tls:` YAML serving this pair.
    pub fn yaml(&self) -> String {
        format!(
            "tls:\n  cert: {}\n  key: {}\n",
            self.cert.display(),
            self.key.display()
        )
    }
}

impl Ca {
    pub fn new() -> Ca {
        let dir = tempfile::tempdir().unwrap();
        openssl(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
             -out ca.pem -days 30 -subj /CN=portcullis-test-ca \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign",
            dir.path(),
        );
        Ca {
            dir,
            made: std::cell::Cell::new(0),
        }
    }

    pub fn pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A server certificate for 127.0.0.1 and localhost, valid for `days`.
    pub fn leaf(&self, days: u32) -> Leaf {
        let n = self.made.get() + 1;
        self.made.set(n);
        let dir = self.dir.path();
        std::fs::write(
            dir.join(format!("leaf{n}.ext")),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n\
             crlDistributionPoints=URI:http://127.0.0.1:9/test-ca.crl\n",
        )
        .unwrap();
        openssl(
            &format!(
                "req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf{n}.key \
                 -out leaf{n}.csr -subj /CN=localhost"
            ),
            dir,
        );
        openssl(
            &format!(
                "x509 -req -in leaf{n}.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                 -days {days} -out leaf{n}.pem -extfile leaf{n}.ext"
            ),
            dir,
        );
        Leaf {
            cert: dir.join(format!("leaf{n}.pem")),
            key: dir.join(format!("leaf{n}.key")),
        }
    }
}

/// What curl got.
#[derive(Debug)]
pub struct CurlResp {
    pub status: u16,
    /// `1.1` or `2`.
    pub version: String,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// curl's exit code: 0 when the transfer completed.
    pub exit: Option<i32>,
    /// What curl printed as an error.
    pub error: String,
}

impl CurlResp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// curl with a cookie jar, trusting `ca` only.
pub struct Curl {
    dir: tempfile::TempDir,
    ca: PathBuf,
}

impl Curl {
    pub fn new(ca: &Path) -> Curl {
        Curl {
            dir: tempfile::tempdir().unwrap(),
            ca: ca.to_path_buf(),
        }
    }

    /// One request (`args` after the common ones: e.g. `--http2`, `-d`, the URL).
    pub fn run(&self, args: &[&str]) -> CurlResp {
        let head = self.dir.path().join("head");
        let body = self.dir.path().join("body");
        let jar = self.dir.path().join("jar");
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&self.ca)
            .arg("-b")
            .arg(&jar)
            .arg("-c")
            .arg(&jar)
            .arg("-D")
            .arg(&head)
            .arg("-o")
            .arg(&body)
            .args(["-w", "%{http_code} %{http_version}"])
            .args(args)
            .output()
            .expect("curl runs");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let (code, version) = stdout.split_once(' ').unwrap_or(("0", ""));
        let headers = std::fs::read_to_string(&head)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        CurlResp {
            status: code.parse().unwrap_or(0),
            version: version.to_string(),
            headers,
            body: std::fs::read_to_string(&body).unwrap_or_default(),
            exit: out.status.code(),
            error: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }
    }

    /// A cookie's value from the jar.
    pub fn cookie(&self, name: &str) -> Option<String> {
        let jar = std::fs::read_to_string(self.dir.path().join("jar")).unwrap_or_default();
        jar.lines()
            .map(|l| l.trim_start_matches("#HttpOnly_"))
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split('\t').collect::<Vec<_>>())
            .find(|f| f.len() == 7 && f[5] == name)
            .map(|f| f[6].to_string())
    }
}

/// One TLS connection kept open (HTTP/1.1 keep-alive), trusting `ca` only.
pub struct KeptConnection {
    stream: BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
}

impl KeptConnection {
    pub fn open(addr: SocketAddr, ca: &Path) -> KeptConnection {
        KeptConnection::open_with_alpn(addr, ca, &[])
    }

    /// A connection offering these ALPN protocols (e.g. `h2`).
    pub fn open_with_alpn(addr: SocketAddr, ca: &Path, alpn: &[&[u8]]) -> KeptConnection {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = ServerName::IpAddress(addr.ip().into());
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut stream = rustls::StreamOwned::new(conn, sock);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).unwrap();
        }
        KeptConnection {
            stream: BufReader::new(stream),
        }
    }

    /// The TLS stream itself, to read what the server sends.
    pub fn stream_mut(&mut self) -> &mut impl Read {
        &mut self.stream
    }

    /// Sends raw bytes over the TLS connection.
    pub fn send(&mut self, bytes: &[u8]) {
        let tls = self.stream.get_mut();
        tls.write_all(bytes).unwrap();
        tls.flush().unwrap();
    }

    /// Reads (and drops) whatever the server sends until it closes the connection; how long
    /// that took, or `None` if it was still open after `limit`.
    pub fn wait_closed(&mut self, limit: Duration) -> Option<Duration> {
        let start = std::time::Instant::now();
        let timeout = Some(Duration::from_millis(200));
        self.stream
            .get_ref()
            .sock
            .set_read_timeout(timeout)
            .unwrap();
        let mut buf = [0u8; 4096];
        while start.elapsed() < limit {
            match self.stream.read(&mut buf) {
                Ok(0) => return Some(start.elapsed()),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Some(start.elapsed()),
            }
        }
        None
    }

    /// The leaf certificate the server sent.
    pub fn server_cert(&self) -> Vec<u8> {
        self.stream.get_ref().conn.peer_certificates().unwrap()[0].to_vec()
    }

    /// `GET path` on this connection: the status and body; panics if the server closed it.
    pub fn get(&mut self, path: &str) -> (u16, String) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/html\r\n\r\n");
        self.stream.get_mut().write_all(req.as_bytes()).unwrap();
        let mut line = String::new();
        self.stream.read_line(&mut line).expect("a status line");
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = 0;
        loop {
            let mut h = String::new();
            self.stream.read_line(&mut h).unwrap();
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).unwrap();
        (status, String::from_utf8_lossy(&body).to_string())
    }
}

/// `openssl s_server -www` on `addr`: an HTTPS server answering every GET with a page of its
/// own (it begins `<HTML>`), serving `leaf`.
pub struct HttpsPortal {
    child: Child,
}

impl HttpsPortal {
    pub fn start(addr: SocketAddr, leaf: &Leaf) -> HttpsPortal {
        let child = Command::new("openssl")
            .args(["s_server", "-www", "-quiet", "-accept"])
            .arg(addr.to_string())
            .arg("-cert")
            .arg(&leaf.cert)
            .arg("-key")
            .arg(&leaf.key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server runs");
        let up = super::within(Duration::from_secs(10), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        assert!(up.is_some(), "openssl s_server did not listen on {addr}");
        HttpsPortal { child }
    }
}

impl Drop for HttpsPortal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
