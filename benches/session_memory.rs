//! Memory per cached session: signs 100 000 sessions in (a real SQLite store, the real cache)
//! and counts the heap bytes the gateway's own code holds for them, with a counting allocator.
//! SQLite's page cache is outside it (bounded at about 2 MB by SQLite's default cache size).
//! Run with `cargo bench --bench session_memory`; SESSIONS=N changes the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use portcullis::core::identity::{Client, NewUser};
use portcullis::core::time::SystemClock;
use portcullis::service::audit::Audit;
use portcullis::service::metrics::Metrics;
use portcullis::service::sessions::Sessions;
use portcullis::store::{SqliteStore, Store};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`, which upholds `GlobalAlloc`'s contract;
// the counter is a side effect that does not touch the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout, as the caller promised it is valid.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this same layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: `ptr` came from this allocator with `layout`; `new_size` is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() {
    let n: usize = std::env::var("SESSIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("m.db")).await.unwrap());
        let metrics = Arc::new(Metrics::new());
        let (audit, events) = Audit::start(store.clone(), None, metrics.clone()).unwrap();
        tokio::spawn(events.run());
        let sessions = Sessions::new(
            store.clone(),
            [7; 32],
            audit,
            Arc::new(SystemClock),
            Duration::from_secs(24 * 60),
            metrics,
        );
        let mut users = Vec::new();
        for i in 0..100 {
            let login = format!("user{i}@example.com");
            let user = store
                .create_user(
                    NewUser {
                        login: login.clone(),
                        email: login,
                        name: format!("User Number {i}"),
                        phone: String::new(),
                        groups: vec!["staff".into(), "sales-north".into()],
                        password_hash: "x".into(),
                    },
                    0,
                )
                .await
                .unwrap();
            users.push(user);
        }
        let client = Client {
            ip: "10.20.30.40".into(),
            user_agent: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36".into(),
        };
        // The bench keeps what browsers would (their tokens, here only the hashes, which hold
        // no heap), in room taken before counting.
        let mut tokens = Vec::with_capacity(n);
        // Warm up: one session, so one-time allocations are not charged to the rest.
        tokens.push(sessions.issue(&users[0], None, &client).await.unwrap().token.hash());
        sessions.cached();
        let before = LIVE.load(Ordering::SeqCst);
        for i in 1..n {
            let issued = sessions.issue(&users[i % users.len()], None, &client).await.unwrap();
            tokens.push(issued.token.hash());
        }
        let cached = sessions.cached();
        let held = LIVE.load(Ordering::SeqCst) - before;
        let per = held as f64 / (n - 1) as f64;
        println!("sessions cached: {cached}");
        println!("heap held by the gateway for them: {:.1} MiB", held as f64 / 1048576.0);
        println!("bytes per cached session: {per:.0} (target: under 1024)");
        drop(tokens);
    });
}
