//! Hot-path pieces of an authenticated request: routing, cookie lookup, the decision, and
//! header stripping of the Cookie header. Run with `cargo bench --bench hot_path`.

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::decision::{self, SessionState};
use portcullis::session::cookie;
use portcullis::token::SessionToken;
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
        b.iter(|| decision::route(black_box("GET"), black_box("/crm/deal/42/"), &publics))
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
            decision::decide(
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
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
