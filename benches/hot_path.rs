//! Hot-path pieces of an authenticated request: routing, cookie lookup, the decision, and
//! header stripping of the Cookie header. Run with `cargo bench --bench hot_path`.

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::core::secret::SessionToken;
use portcullis::policy::route::{self, SessionState};
use portcullis::web::cookies as cookie;
use std::hint::black_box;

fn hot_path(c: &mut Criterion) {
    let publics = vec!["/favicon.ico".to_string(), "/static/".to_string()];
    let token = SessionToken::generate();
    let header = format!(
        "_ga=GA1.2.3; portal_pref=dark; portcullis_session={}; lang=en",
        token.expose()
    );
    let names = [
        "portcullis_session",
        "portcullis_session_remember",
        "portcullis_session_csrf",
    ];

    c.bench_function("route protected path", |b| {
        b.iter(|| {
            route::route(
                black_box("GET"),
                black_box("/crm/deal/42/"),
                false,
                &publics,
            )
        })
    });
    c.bench_function("find session cookie", |b| {
        b.iter(|| {
            cookie::find([black_box(header.as_str())], "portcullis_session")
                .and_then(SessionToken::parse)
        })
    });
    c.bench_function("hash session token", |b| {
        b.iter(|| black_box(&token).hash())
    });
    c.bench_function("decide authenticated", |b| {
        b.iter(|| {
            route::decide(
                black_box("GET"),
                black_box("/crm/deal/42/"),
                true,
                SessionState::Live,
            )
        })
    });
    c.bench_function("strip gateway cookies", |b| {
        b.iter(|| cookie::without(black_box(header.as_bytes()), &names))
    });
    session_cache(c);
}

/// A session cache hit among 10 000 cached sessions (hash, lookup, slide), through the real
/// session code; each lookup runs inside `block_on`, measured alone too, to subtract.
fn session_cache(c: &mut Criterion) {
    use portcullis::config::SessionConfig;
    use portcullis::core::identity::{Client, NewUser};
    use portcullis::core::time::SystemClock;
    use portcullis::service::audit::Audit;
    use portcullis::service::metrics::Metrics;
    use portcullis::service::sessions::{Lookup, Sessions};
    use portcullis::store::{SqliteStore, Store};
    use std::sync::Arc;
    use std::time::Duration;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (sessions, token) = rt.block_on(async {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("b.db")).await.unwrap());
        let metrics = Arc::new(Metrics::new());
        let (audit, events) = Audit::start(store.clone(), None, metrics.clone()).unwrap();
        tokio::spawn(events.run());
        let idle = Duration::from_secs(24 * 60);
        let sessions = Sessions::new(
            store.clone(),
            [7; 32],
            audit,
            Arc::new(SystemClock),
            idle,
            metrics,
        );
        let user = store
            .create_user(
                NewUser {
                    login: "bench@example.com".into(),
                    email: "bench@example.com".into(),
                    name: "Bench".into(),
                    phone: String::new(),
                    groups: vec!["staff".into()],
                    password_hash: "x".into(),
                },
                0,
            )
            .await
            .unwrap();
        let mut last = None;
        for _ in 0..10_000 {
            last = Some(
                sessions
                    .issue(&user, None, &Client::default())
                    .await
                    .unwrap()
                    .token,
            );
        }
        (sessions, last.unwrap())
    });
    let cfg = SessionConfig {
        cookie_name: "portcullis_session".into(),
        idle_timeout: Duration::from_secs(24 * 60),
        absolute_timeout: None,
        remember_me: None,
        cache_capacity: portcullis::config::DEFAULT_SESSION_CACHE,
    };
    c.bench_function("block_on alone", |b| {
        b.iter(|| rt.block_on(async { black_box(1) }))
    });
    c.bench_function("session cache hit (10 000 cached)", |b| {
        b.iter(|| {
            let found = rt
                .block_on(sessions.lookup(black_box(&token), &cfg))
                .unwrap();
            assert!(matches!(found, Lookup::Live(_)));
        })
    });
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
