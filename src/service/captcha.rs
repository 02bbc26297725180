//! The CAPTCHA: pictures drawn by the gateway itself (no third-party service, no JavaScript) and
//! the challenges behind them. A challenge is single use and lives five minutes; the store keeps
//! the picture and a hash of the answer, never the answer. Drawing runs on the blocking pool.

use std::f32::consts::TAU;
use std::fmt;
use std::time::Duration;

use rand::Rng;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::core::secret::{self, is_challenge_id};
use crate::core::time::UnixTime;
use crate::store::{CaptchaRecord, CaptchaStore, StoreError, StoreResult};

/// How long a challenge can be answered.
pub const LIFETIME: Duration = Duration::from_secs(5 * 60);
/// Characters people can tell apart when drawn by hand: no O/0/D/Q, I/1, S/5, Z/2, B/8, G/6/C.
pub const ALPHABET: &[u8] = b"ACEFHJKLMNPRTUVWXY3467";
/// Characters per challenge: 22^6 ≈ 1.1 × 10^8 answers.
pub const LENGTH: usize = 6;
pub const WIDTH: u32 = 240;
pub const HEIGHT: u32 = 80;

/// The text of a challenge. `Debug` never shows it.
pub struct Answer(String);

impl Answer {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Answer([redacted])")
    }
}

/// A random answer from `ALPHABET`.
pub fn random_answer(rng: &mut impl Rng) -> Answer {
    Answer(
        (0..LENGTH)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect(),
    )
}

/// What is compared: case and spaces do not matter.
fn normalize(typed: &str) -> String {
    typed
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_uppercase)
        .collect()
}

/// The stored form of an answer, salted with the challenge id.
pub fn answer_hash(id: &str, typed: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(id.as_bytes());
    h.update([0]);
    h.update(normalize(typed).as_bytes());
    h.finalize().to_vec()
}

pub fn image_path(id: &str) -> String {
    format!("/_portcullis/captcha/{id}.png")
}

/// Draws a new challenge and stores it; returns its id.
/// Draws and stores a new challenge; the store keeps at most `limit` live ones, pushing out the
/// oldest, so no number of addresses can fill it with pictures.
pub async fn issue(store: &dyn CaptchaStore, now: UnixTime, limit: u32) -> StoreResult<String> {
    let id = secret::challenge_id();
    let (answer, png) = tokio::task::spawn_blocking(|| {
        let mut rng = OsRng;
        let answer = random_answer(&mut rng);
        let png = draw(answer.expose(), &Distortion::random(&mut rng), &mut rng);
        (answer, png)
    })
    .await
    .map_err(|e| StoreError::Unavailable(format!("drawing a CAPTCHA failed: {e}")))?;
    let record = CaptchaRecord {
        answer_hash: answer_hash(&id, answer.expose()),
        id: id.clone(),
        png,
        expires_at: now + LIFETIME.as_secs() as i64,
    };
    let evicted = store.insert_captcha(&record, limit, now).await?;
    if evicted > 0 {
        tracing::warn!(
            limit,
            "throttle.captcha_limit live CAPTCHA challenges: the oldest was pushed out"
        );
    }
    Ok(id)
}

/// Uses up a challenge: true only for the right answer, within its lifetime, the first time.
pub async fn solve(
    store: &dyn CaptchaStore,
    id: &str,
    typed: &str,
    now: UnixTime,
) -> StoreResult<bool> {
    if !is_challenge_id(id) {
        return Ok(false);
    }
    let Some(record) = store.take_captcha(id).await? else {
        return Ok(false);
    };
    let right: bool = answer_hash(id, typed).ct_eq(&record.answer_hash).into();
    Ok(right && record.expires_at > now)
}

/// How the glyphs are bent. `none()` draws them straight, without clutter: the control case of
/// the OCR test, which shows that the glyphs themselves are ordinary, readable letters.
#[derive(Debug, Clone)]
pub struct Distortion {
    rotate: f32,
    shear: f32,
    jitter: f32,
    wave: f32,
    overlap: f32,
    clutter: usize,
    speckle: usize,
}

impl Distortion {
    pub fn none() -> Distortion {
        Distortion {
            rotate: 0.0,
            shear: 0.0,
            jitter: 0.0,
            wave: 0.0,
            overlap: 0.0,
            clutter: 0,
            speckle: 0,
        }
    }

    pub fn random(rng: &mut impl Rng) -> Distortion {
        Distortion {
            rotate: 0.25,
            shear: 0.3,
            jitter: 6.0,
            wave: rng.gen_range(3.0..6.0),
            overlap: rng.gen_range(0.0..0.08),
            clutter: rng.gen_range(2..4),
            speckle: 200,
        }
    }
}

type Point = (f32, f32);

/// Glyph strokes in a unit box, x to the right, y downwards.
fn glyph(c: char) -> Vec<Vec<Point>> {
    let line = |pts: &[Point]| pts.to_vec();
    match c {
        'A' => vec![
            line(&[(0.0, 1.0), (0.5, 0.0), (1.0, 1.0)]),
            line(&[(0.22, 0.62), (0.78, 0.62)]),
        ],
        'C' => vec![arc((0.55, 0.5), (0.48, 0.5), 40.0, 320.0)],
        'E' => vec![
            line(&[(0.95, 0.0), (0.0, 0.0), (0.0, 1.0), (0.95, 1.0)]),
            line(&[(0.0, 0.5), (0.7, 0.5)]),
        ],
        'F' => vec![
            line(&[(0.95, 0.0), (0.0, 0.0), (0.0, 1.0)]),
            line(&[(0.0, 0.5), (0.7, 0.5)]),
        ],
        'H' => vec![
            line(&[(0.0, 0.0), (0.0, 1.0)]),
            line(&[(1.0, 0.0), (1.0, 1.0)]),
            line(&[(0.0, 0.5), (1.0, 0.5)]),
        ],
        'J' => vec![joined(&[
            line(&[(0.85, 0.0), (0.85, 0.68)]),
            arc((0.47, 0.68), (0.38, 0.32), 0.0, 180.0),
        ])],
        'K' => vec![
            line(&[(0.0, 0.0), (0.0, 1.0)]),
            line(&[(0.95, 0.0), (0.0, 0.58)]),
            line(&[(0.32, 0.4), (1.0, 1.0)]),
        ],
        'L' => vec![line(&[(0.0, 0.0), (0.0, 1.0), (0.9, 1.0)])],
        'M' => vec![line(&[
            (0.0, 1.0),
            (0.0, 0.0),
            (0.5, 0.62),
            (1.0, 0.0),
            (1.0, 1.0),
        ])],
        'N' => vec![line(&[(0.0, 1.0), (0.0, 0.0), (1.0, 1.0), (1.0, 0.0)])],
        'P' => vec![joined(&[
            line(&[(0.0, 1.0), (0.0, 0.0), (0.55, 0.0)]),
            arc((0.55, 0.27), (0.42, 0.27), -90.0, 90.0),
            line(&[(0.55, 0.54), (0.0, 0.54)]),
        ])],
        'R' => vec![
            joined(&[
                line(&[(0.0, 1.0), (0.0, 0.0), (0.55, 0.0)]),
                arc((0.55, 0.27), (0.42, 0.27), -90.0, 90.0),
                line(&[(0.55, 0.54), (0.0, 0.54)]),
            ]),
            line(&[(0.42, 0.54), (1.0, 1.0)]),
        ],
        'T' => vec![
            line(&[(0.0, 0.0), (1.0, 0.0)]),
            line(&[(0.5, 0.0), (0.5, 1.0)]),
        ],
        'U' => vec![joined(&[
            line(&[(0.0, 0.0), (0.0, 0.6)]),
            arc((0.5, 0.6), (0.5, 0.4), 180.0, 0.0),
            line(&[(1.0, 0.6), (1.0, 0.0)]),
        ])],
        'V' => vec![line(&[(0.0, 0.0), (0.5, 1.0), (1.0, 0.0)])],
        'W' => vec![line(&[
            (0.0, 0.0),
            (0.25, 1.0),
            (0.5, 0.35),
            (0.75, 1.0),
            (1.0, 0.0),
        ])],
        'X' => vec![
            line(&[(0.0, 0.0), (1.0, 1.0)]),
            line(&[(1.0, 0.0), (0.0, 1.0)]),
        ],
        'Y' => vec![
            line(&[(0.0, 0.0), (0.5, 0.5), (1.0, 0.0)]),
            line(&[(0.5, 0.5), (0.5, 1.0)]),
        ],
        '3' => vec![joined(&[
            arc((0.5, 0.26), (0.42, 0.26), 200.0, 450.0),
            arc((0.5, 0.75), (0.48, 0.25), 270.0, 520.0),
        ])],
        '4' => vec![line(&[(0.75, 1.0), (0.75, 0.0), (0.0, 0.68), (1.0, 0.68)])],
        '6' => vec![joined(&[
            arc((0.55, 0.55), (0.45, 0.55), 300.0, 180.0),
            arc((0.52, 0.72), (0.42, 0.28), 180.0, 540.0),
        ])],
        '7' => vec![line(&[(0.0, 0.0), (1.0, 0.0), (0.35, 1.0)])],
        _ => Vec::new(),
    }
}

/// Points along an elliptic arc; angles in degrees, 0 to the right, 90 downwards.
fn arc(center: Point, radius: Point, from: f32, to: f32) -> Vec<Point> {
    let steps = (((to - from).abs() / 12.0).ceil() as usize).max(2);
    (0..=steps)
        .map(|i| {
            let a = (from + (to - from) * i as f32 / steps as f32).to_radians();
            (center.0 + radius.0 * a.cos(), center.1 + radius.1 * a.sin())
        })
        .collect()
}

fn joined(parts: &[Vec<Point>]) -> Vec<Point> {
    parts.iter().flatten().copied().collect()
}

/// Grey levels, 0 = black.
struct Canvas {
    ink: Vec<f32>,
}

impl Canvas {
    fn new() -> Canvas {
        Canvas {
            ink: vec![0.0; (WIDTH * HEIGHT) as usize],
        }
    }

    /// An anti-aliased thick segment.
    fn segment(&mut self, a: Point, b: Point, half: f32) {
        let (x0, x1) = (a.0.min(b.0) - half - 1.0, a.0.max(b.0) + half + 1.0);
        let (y0, y1) = (a.1.min(b.1) - half - 1.0, a.1.max(b.1) + half + 1.0);
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len2 = (dx * dx + dy * dy).max(1e-6);
        for y in (y0.max(0.0) as u32)..(y1.min(HEIGHT as f32 - 1.0).max(0.0) as u32 + 1) {
            for x in (x0.max(0.0) as u32)..(x1.min(WIDTH as f32 - 1.0).max(0.0) as u32 + 1) {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let t = (((px - a.0) * dx + (py - a.1) * dy) / len2).clamp(0.0, 1.0);
                let (cx, cy) = (a.0 + t * dx - px, a.1 + t * dy - py);
                let cover = (half + 0.5 - (cx * cx + cy * cy).sqrt()).clamp(0.0, 1.0);
                let i = (y * WIDTH + x) as usize;
                self.ink[i] = self.ink[i].max(cover);
            }
        }
    }

    /// A polyline, cut into short pieces so that `warp` bends straight strokes.
    fn stroke(&mut self, points: &[Point], half: f32, warp: &impl Fn(Point) -> Point) {
        for pair in points.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let pieces = ((b.0 - a.0).hypot(b.1 - a.1) / 2.0).ceil().max(1.0) as usize;
            let at = |i: usize| {
                let t = i as f32 / pieces as f32;
                warp((a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t))
            };
            for i in 0..pieces {
                self.segment(at(i), at(i + 1), half);
            }
        }
    }

    fn png(&self, rng: &mut impl Rng, speckle: usize) -> Vec<u8> {
        let mut grey: Vec<u8> = self
            .ink
            .iter()
            .map(|&ink| (246.0 - ink * 216.0) as u8)
            .collect();
        for _ in 0..speckle {
            let i = rng.gen_range(0..grey.len());
            grey[i] = rng.gen_range(40..200);
        }
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, WIDTH, HEIGHT);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        // Writing to a Vec cannot fail, and the size and data length agree by construction.
        if let Ok(mut writer) = encoder.write_header() {
            let _ = writer.write_image_data(&grey);
        }
        out
    }
}

/// Draws `text` as a PNG: each character turned, sheared and shifted on its own, the line
/// waved, neighbours overlapping, and curves as thick as the letters drawn through them, which
/// is what defeats the segmentation OCR relies on while people still read the shapes.
pub fn draw(text: &str, d: &Distortion, rng: &mut impl Rng) -> Vec<u8> {
    let mut canvas = Canvas::new();
    let half = if d.clutter > 0 {
        rng.gen_range(1.3..1.8)
    } else {
        1.6
    };
    // Six characters with their turns and shears stay inside the picture's 240 px.
    let height = 45.0;
    let width = height * 0.62;
    let advance = width * (1.0 + 0.35 - d.overlap);
    let count = text.chars().count() as f32;
    let total = advance * (count - 1.0) + width;
    let mut x = (WIDTH as f32 - total) / 2.0 + rng.gen_range(-4.0..4.0) * d.jitter.min(1.0);
    let (phase, period) = (rng.gen_range(0.0..TAU), rng.gen_range(90.0..140.0));
    let (ripple_phase, ripple_period) = (rng.gen_range(0.0..TAU), rng.gen_range(18.0..26.0));
    // A long wave bends the line; a short ripple shakes the strokes inside each letter.
    let wave = |(px, py): Point| {
        (
            px + d.wave * 0.3 * (TAU * py / ripple_period + ripple_phase).sin(),
            py + d.wave * (TAU * px / period + phase).sin(),
        )
    };
    for c in text.chars() {
        let angle = rng.gen_range(-1.0..=1.0) * d.rotate;
        let shear = rng.gen_range(-1.0..=1.0) * d.shear;
        let scale = 1.0 + rng.gen_range(-1.0..=1.0) * d.shear * 0.3;
        let dy = rng.gen_range(-1.0..=1.0) * d.jitter;
        let (sin, cos) = angle.sin_cos();
        let (ox, oy) = (x + width / 2.0, HEIGHT as f32 / 2.0 + dy);
        let place = |(gx, gy): Point| {
            let (lx, ly) = ((gx - 0.5) * width * scale, (gy - 0.5) * height * scale);
            let lx = lx + shear * ly;
            wave((ox + lx * cos - ly * sin, oy + lx * sin + ly * cos))
        };
        for stroke in glyph(c) {
            canvas.stroke(&stroke, half, &place);
        }
        x += advance;
    }
    for i in 0..d.clutter {
        // The first curve is as thick as the letters, so thickness cannot tell it apart.
        let thickness = if i == 0 { 1.0 } else { rng.gen_range(0.6..0.8) };
        canvas.stroke(&clutter_curve(rng), half * thickness, &|p| p);
    }
    canvas.png(rng, d.speckle)
}

/// A smooth curve across the picture, through the band the letters occupy.
fn clutter_curve(rng: &mut impl Rng) -> Vec<Point> {
    let (w, h) = (WIDTH as f32, HEIGHT as f32);
    let start = (
        rng.gen_range(-10.0..w * 0.3),
        rng.gen_range(h * 0.15..h * 0.85),
    );
    let end = (
        rng.gen_range(w * 0.7..w + 10.0),
        rng.gen_range(h * 0.15..h * 0.85),
    );
    let c1 = (rng.gen_range(0.0..w), rng.gen_range(-h * 0.2..h * 1.2));
    let c2 = (rng.gen_range(0.0..w), rng.gen_range(-h * 0.2..h * 1.2));
    (0..=40)
        .map(|i| {
            let t = i as f32 / 40.0;
            let u = 1.0 - t;
            let mix = |a: f32, b: f32, c: f32, d: f32| {
                u * u * u * a + 3.0 * u * u * t * b + 3.0 * u * t * t * c + t * t * t * d
            };
            (
                mix(start.0, c1.0, c2.0, end.0),
                mix(start.1, c1.1, c2.1, end.1),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn every_character_of_the_alphabet_has_strokes() {
        for &c in ALPHABET {
            let strokes = glyph(c as char);
            assert!(!strokes.is_empty(), "{} has no glyph", c as char);
            for s in strokes {
                assert!(s.len() >= 2);
                for (x, y) in s {
                    assert!((-0.05..=1.05).contains(&x) && (-0.05..=1.05).contains(&y));
                }
            }
        }
    }

    #[test]
    fn answers_ignore_case_and_spaces_but_not_characters() {
        let id = "AAAAAAAAAAAAAAAAAAAAAA";
        let stored = answer_hash(id, "K7WXAP");
        assert_eq!(answer_hash(id, "k7wxap"), stored);
        assert_eq!(answer_hash(id, " K7 wxAP "), stored);
        assert_ne!(answer_hash(id, "K7WXAR"), stored);
        assert_ne!(answer_hash(id, "K7WXA"), stored);
        assert_ne!(
            answer_hash("BBBBBBBBBBBBBBBBBBBBBB", "K7WXAP"),
            stored,
            "salted by id"
        );
    }

    #[test]
    fn answers_are_drawn_from_the_alphabet_and_never_printed() {
        let mut rng = StdRng::seed_from_u64(7);
        let a = random_answer(&mut rng);
        assert_eq!(a.expose().len(), LENGTH);
        assert!(a.expose().bytes().all(|b| ALPHABET.contains(&b)));
        assert_eq!(format!("{a:?}"), "Answer([redacted])");
    }

    #[test]
    fn a_drawing_is_a_png_of_the_stated_size_with_ink_on_it() {
        let mut rng = StdRng::seed_from_u64(1);
        let png = draw("K7WXAP", &Distortion::random(&mut rng), &mut rng);
        let decoder = png::Decoder::new(std::io::Cursor::new(&png));
        let mut reader = decoder.read_info().expect("a valid PNG");
        let mut pixels = vec![0; reader.output_buffer_size().expect("size")];
        let info = reader.next_frame(&mut pixels).expect("one frame");
        assert_eq!((info.width, info.height), (WIDTH, HEIGHT));
        let dark = pixels.iter().filter(|&&p| p < 128).count();
        assert!(dark > 1000, "only {dark} dark pixels");
        assert_ne!(
            png,
            draw("K7WXAP", &Distortion::random(&mut rng), &mut rng),
            "every drawing differs"
        );
    }
}
