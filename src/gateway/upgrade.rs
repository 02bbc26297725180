//! Binary upgrades without a refused connection (docs: upgrades): on `SIGUSR2` the gateway
//! starts its binary again with `--upgrade`; the new process takes the listening sockets over
//! through Pingora's upgrade socket, and the old one, once it is waiting there, hands them over
//! (`SIGQUIT`) and drains. Also tells systemd (`NOTIFY_SOCKET`) which process is the gateway.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{SignalKind, signal};

/// Where the old and new process meet: a directory of this user's alone (`0700`), made in
/// systemd's `RuntimeDirectory` when there is one, else beside a SQLite store, else in the
/// temporary directory. Whoever can reach the socket can hand the new process sockets of its
/// own, or be handed the gateway's: `None` when that directory cannot be made private
/// (upgrades are then off, and the log says why).
pub fn socket_path(store_dir: Option<&Path>) -> Option<PathBuf> {
    let base = match std::env::var_os("RUNTIME_DIRECTORY") {
        Some(dir) => PathBuf::from(dir),
        None => store_dir.map_or_else(std::env::temp_dir, Path::to_path_buf),
    };
    Some(private_dir(&base)?.join("portcullis_upgrade.sock"))
}

fn euid() -> u32 {
    // SAFETY: geteuid(2) takes no arguments, touches no memory and cannot fail.
    unsafe { libc::geteuid() }
}

/// `BASE/portcullis-upgrade-UID`, made `0700`, or found so: a directory (not a link), ours,
/// private.
fn private_dir(base: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let uid = euid();
    let dir = base.join(format!("portcullis-upgrade-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0 => Some(dir),
        _ => {
            tracing::error!(
                dir = %dir.display(),
                "binary upgrades are off: this directory is not this user's alone (0700); remove it, or set RUNTIME_DIRECTORY to a private one"
            );
            None
        }
    }
}

/// Whether `path` is a socket this user made: the new process, listening.
fn our_socket(path: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket() && m.uid() == euid())
}

/// Makes SIGUSR2 harmless from the start (its default action ends the process); the upgrader
/// listens for it once the server runs.
pub fn claim_sigusr2() -> std::io::Result<()> {
    signal(SignalKind::user_defined2()).map(drop)
}

/// Tells systemd, when it started us with `Type=notify`, that this process serves now and is
/// the service's main process (after an upgrade, the new one is).
fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let message = format!("READY=1\nMAINPID={}\n", std::process::id());
    if let Err(error) = send_notification(&path, &message) {
        tracing::warn!(%error, "cannot tell systemd the gateway is ready");
    }
}

fn send_notification(path: &std::ffi::OsStr, message: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = path.as_bytes();
    // `@name` is a socket in the abstract namespace.
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(path)?,
    };
    UnixDatagram::unbound()?.send_to_addr(message.as_bytes(), &addr)?;
    Ok(())
}

/// The binary on disk now: after a package upgrade `/proc/self/exe` names the replaced file
/// with ` (deleted)` appended, and the path without it is the new binary.
fn binary() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(path) => PathBuf::from(path),
        None => exe,
    })
}

/// The arguments this process was started with, plus `--upgrade` (once).
fn upgrade_args() -> Vec<String> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--upgrade") {
        args.push("--upgrade".into());
    }
    args
}

pub struct Upgrader {
    /// `None`: no private place to meet, so no upgrades (SIGUSR2 is logged and ignored).
    pub socket: Option<PathBuf>,
}

impl Upgrader {
    /// Starts the new process and waits until it listens on the upgrade socket; `false` when it
    /// could not start or gave up first (then this process keeps serving).
    async fn start_successor(&self) -> bool {
        let Some(socket) = &self.socket else {
            tracing::error!("upgrade: no private directory for the upgrade socket; still serving");
            return false;
        };
        // A socket left by an earlier, failed attempt must not be mistaken for the new process.
        let _ = std::fs::remove_file(socket);
        let mut child =
            match binary().and_then(|bin| Command::new(bin).args(upgrade_args()).spawn()) {
                Ok(child) => child,
                Err(error) => {
                    tracing::error!(%error, "upgrade: cannot start the new binary; still serving");
                    return false;
                }
            };
        for _ in 0..600 {
            if our_socket(socket) {
                return true;
            }
            if exited(&mut child) {
                tracing::error!("upgrade: the new binary exited before taking over; still serving");
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::error!("upgrade: the new binary did not take over within 30 s; still serving");
        let _ = child.kill();
        false
    }
}

fn exited(child: &mut Child) -> bool {
    !matches!(child.try_wait(), Ok(None))
}

#[async_trait]
impl BackgroundService for Upgrader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        notify_ready();
        let mut usr2 = match signal(SignalKind::user_defined2()) {
            Ok(s) => s,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGUSR2; binary upgrades are off");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = usr2.recv() => {
                    tracing::info!("SIGUSR2: starting the new binary to take the listeners over");
                    if self.start_successor().await {
                        // Pingora sends the listeners on SIGQUIT, then drains this process.
                        // SAFETY: kill(2) on our own pid has no memory effects.
                        unsafe { libc::kill(libc::getpid(), libc::SIGQUIT) };
                        return;
                    }
                }
            }
        }
    }
}
