//! Off-the-shelf OCR against the CAPTCHA: tesseract (Debian's `tesseract-ocr`), told the
//! alphabet and given two tries per picture (as one line of text, and as one word), must read
//! fewer than 5% of 200 challenges. A control run shows the same glyphs drawn straight and clean are read, so a
//! low score means the distortion works, not that the OCR or the pipeline is broken.

use std::path::{Path, PathBuf};
use std::process::Command;

use portcullis::service::captcha::{self, ALPHABET, Distortion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Renders `count` challenges into `dir`; returns their answers and files.
fn render(dir: &Path, count: usize, clean: bool, rng: &mut StdRng) -> Vec<(String, PathBuf)> {
    (0..count)
        .map(|i| {
            let answer = captcha::random_answer(rng).expose().to_string();
            let distortion = if clean {
                Distortion::none()
            } else {
                Distortion::random(rng)
            };
            let png = captcha::draw(&answer, &distortion, rng);
            let path = dir.join(format!("{}-{i:03}.png", if clean { "clean" } else { "c" }));
            std::fs::write(&path, png).expect("write the picture");
            (answer, path)
        })
        .collect()
}

/// What tesseract reads in each picture, in order, in page segmentation mode `psm` (7: one
/// line, 8: one word): one process per picture, two at a time (one per core).
fn ocr(files: &[PathBuf], psm: &str) -> Vec<String> {
    let whitelist = format!(
        "tessedit_char_whitelist={}",
        std::str::from_utf8(ALPHABET).expect("ascii")
    );
    let read_one = |file: &PathBuf| -> String {
        let out = Command::new("tesseract")
            .arg(file)
            .arg("stdout")
            .args(["--psm", psm, "-c", &whitelist])
            .env("OMP_THREAD_LIMIT", "1")
            .output()
            .expect("tesseract runs (scripts/bootstrap.sh --tests installs tesseract-ocr)");
        assert!(
            out.status.success(),
            "tesseract failed on {}",
            file.display()
        );
        String::from_utf8_lossy(&out.stdout)
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect()
    };
    let half = files.len().div_ceil(2);
    std::thread::scope(|s| {
        let workers: Vec<_> = files
            .chunks(half)
            .map(|chunk| s.spawn(move || chunk.iter().map(read_one).collect::<Vec<_>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("an OCR worker panicked"))
            .collect()
    })
}

/// How many pictures were read right by at least one of the tries.
fn score(challenges: &[(String, PathBuf)], tries: &[Vec<String>]) -> usize {
    challenges
        .iter()
        .enumerate()
        .filter(|(i, (answer, _))| tries.iter().any(|t| t[*i].eq_ignore_ascii_case(answer)))
        .count()
}

#[test]
fn tesseract_reads_fewer_than_5_percent_of_200_challenges() {
    let seed: u64 = std::env::var("PORTCULLIS_CAPTCHA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().r#gen());
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("temp dir");

    let clean = render(dir.path(), 40, true, &mut rng);
    let files: Vec<PathBuf> = clean.iter().map(|(_, p)| p.clone()).collect();
    let clean_read = score(&clean, &[ocr(&files, "7")]);

    let challenges = render(dir.path(), 200, false, &mut rng);
    let files: Vec<PathBuf> = challenges.iter().map(|(_, p)| p.clone()).collect();
    let read = ocr(&files, "7");
    let solved = score(&challenges, &[read.clone(), ocr(&files, "8")]);
    let chars_right: usize = challenges
        .iter()
        .zip(&read)
        .map(|((answer, _), got)| {
            answer
                .chars()
                .zip(got.chars())
                .filter(|(a, b)| a.eq_ignore_ascii_case(b))
                .count()
        })
        .sum();
    eprintln!(
        "seed {seed}: clean glyphs read {clean_read}/40; challenges solved {solved}/200, \
         characters in place {chars_right}/{}",
        200 * captcha::LENGTH
    );
    if let Ok(keep) = std::env::var("PORTCULLIS_CAPTCHA_KEEP") {
        for (answer, path) in challenges.iter().take(20) {
            let to = Path::new(&keep).join(format!("{answer}.png"));
            std::fs::copy(path, to).expect("keep a sample");
        }
    }
    assert!(
        clean_read >= 20,
        "control: tesseract read only {clean_read} of 40 clean pictures (seed {seed}); \
         the OCR run cannot tell anything"
    );
    assert!(
        solved < 10,
        "tesseract solved {solved} of 200 challenges (seed {seed}); the limit is under 5%"
    );
}
