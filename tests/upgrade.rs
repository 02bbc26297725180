//! A binary upgrade under load (docs: upgrades): the binary on disk is replaced, as a package
//! upgrade does, and `SIGUSR2` makes the running gateway start it; the new process takes the
//! listening sockets over and the old one drains. Clients signed in before keep going, on kept
//! and on new connections, and not one request fails.

mod common;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;

/// Processes serving `config` that were started as an upgrade.
fn successors(config: &std::path::Path) -> Vec<u32> {
    let config = config.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).to_string())
                .collect();
            args.contains(&config) && args.iter().any(|a| a == "--upgrade")
        })
        .collect()
}

/// Kills the processes an upgrade started, however the test ends.
struct Reaper(Vec<u32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

struct Load {
    ok: AtomicUsize,
    failures: Mutex<Vec<String>>,
    stop: AtomicBool,
}

/// One client: `kept` reuses its connections (keep-alive), otherwise each request opens one.
fn client(load: Arc<Load>, url: String, cookie: String, kept: bool) {
    let mut builder = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10));
    if !kept {
        builder = builder.pool_max_idle_per_host(0);
    }
    let http = builder.build().unwrap();
    while !load.stop.load(Ordering::Relaxed) {
        match http.get(&url).header("Cookie", &cookie).send() {
            Ok(r) if r.status() == 200 => {
                load.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => load
                .failures
                .lock()
                .unwrap()
                .push(format!("status {}", r.status())),
            Err(e) => load.failures.lock().unwrap().push(format!("{e:?}")),
        }
    }
}

#[test]
fn a_binary_upgrade_under_load_fails_no_request() {
    let up = Upstream::start();
    // What systemd would hear (`Type=notify`): a datagram socket named by NOTIFY_SOCKET.
    let notify_dir = tempfile::tempdir().unwrap();
    let notify_path = notify_dir.path().join("notify");
    let systemd = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let heard = || {
        let mut buf = [0u8; 256];
        let n = systemd.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    let socket = notify_path.display().to_string();
    let mut gw = Gateway::start_copy(up.addr, "", &[("NOTIFY_SOCKET", &socket)]);
    assert_eq!(heard(), format!("READY=1\nMAINPID={}\n", gw.pid()));
    let mut b = Browser::new();
    b.sign_in(&gw, false);
    let load = Arc::new(Load {
        ok: AtomicUsize::new(0),
        failures: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let clients: Vec<_> = (0..6)
        .map(|n| {
            let (load, url, cookie) = (load.clone(), gw.url("/load"), b.cookie_header());
            std::thread::spawn(move || client(load, url, cookie, n % 2 == 0))
        })
        .collect();
    let served = |n| {
        within(Duration::from_secs(20), || {
            load.ok.load(Ordering::Relaxed) >= n
        })
    };
    assert!(served(100).is_some(), "the load did not start");

    // A package upgrade replaces the file; the running process keeps the old one open.
    let old_pid = gw.pid();
    std::fs::remove_file(&gw.bin).unwrap();
    std::fs::copy(BIN, &gw.bin).unwrap();
    gw.send("-USR2");
    let mut reaper = Reaper(Vec::new());
    let found = within(Duration::from_secs(20), || {
        reaper.0 = successors(&gw.config);
        !reaper.0.is_empty()
    });
    assert!(found.is_some(), "no new process:\n{}", gw.logs());
    let status = gw.wait_exit(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "the old process must drain and exit cleanly: {status:?}\n{}",
        gw.logs()
    );
    let after_exit = load.ok.load(Ordering::Relaxed);
    assert!(served(after_exit + 200).is_some(), "the new process serves");
    load.stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }

    let failures = load.failures.lock().unwrap();
    let ok = load.ok.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {ok} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(reaper.0.len(), 1, "exactly one successor: {:?}", reaper.0);
    let new_pid = reaper.0[0];
    assert_ne!(new_pid, old_pid);
    assert_eq!(
        heard(),
        format!("READY=1\nMAINPID={new_pid}\n"),
        "the new process tells systemd it is the main one"
    );
    let exe = std::fs::read_link(format!("/proc/{new_pid}/exe")).unwrap();
    assert_eq!(exe, gw.bin, "the new process runs the new file");
    // The admin listener came over too, and the new process answers a reload.
    let reloads = "portcullis_config_reloads_total{result=\"ok\"}";
    let before = gw.metric(reloads);
    std::process::Command::new("kill")
        .args(["-HUP", &new_pid.to_string()])
        .status()
        .unwrap();
    assert!(within(Duration::from_secs(10), || gw.metric(reloads) > before).is_some());
    eprintln!("{ok} requests, none failed, across the upgrade");
}

#[test]
fn no_upgrade_through_a_directory_others_can_reach() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let up = Upstream::start();
    let mut gw = Gateway::start_copy(up.addr, "", &[]);
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    let meeting = gw.dir.path().join(format!("data/portcullis-upgrade-{uid}"));
    let mode = std::fs::metadata(&meeting).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "the meeting place is private");
    // Someone opened it up, and left a file where the new process's socket would be.
    std::fs::set_permissions(&meeting, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(meeting.join("portcullis_upgrade.sock"), "not a socket").unwrap();
    let old_pid = gw.pid();
    gw.send("-USR2");
    let refused = within(Duration::from_secs(20), || {
        gw.logs().contains("binary upgrades are off")
    });
    assert!(refused.is_some(), "{}", gw.logs());
    assert!(
        gw.wait_exit(Duration::from_secs(8)).is_none(),
        "the gateway stopped:\n{}",
        gw.logs()
    );
    assert_eq!(gw.pid(), old_pid);
    let mut b = Browser::new();
    b.sign_in(&gw, false);
    assert_eq!(b.get(&gw.url("/still")).status, 200);
    assert!(successors(&gw.config).is_empty());
}
