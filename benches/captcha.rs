//! What one CAPTCHA challenge costs to draw (PNG included). Run with
//! `cargo bench --bench captcha`.

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::service::captcha::{self, Distortion};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn draw(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);
    c.bench_function("draw a challenge", |b| {
        b.iter(|| {
            let answer = captcha::random_answer(&mut rng);
            let d = Distortion::random(&mut rng);
            captcha::draw(answer.expose(), &d, &mut rng)
        })
    });
}

criterion_group!(benches, draw);
criterion_main!(benches);
