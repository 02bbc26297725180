//! One-line summaries of stored User-Agent strings for the sign-in table of `portcullis audit`:
//! "Chrome 120 on Windows", "Safari 17 on iOS", "curl 8.5", "Googlebot". The User-Agent is
//! attacker-controlled, so a summary never holds control or bidi characters and is at most
//! [`MAX_SUMMARY_CHARS`] characters long.
//!
//! Ours rather than a crate's: `woothee` 0.13 (a parser with no regex file to ship) was run over
//! the 47 tested agents and summarises every one differently; beyond formatting (full versions,
//! "Windows 10", "Mac OSX", "iPhone"), it gives no version for curl or Wget, nothing at all for
//! python-requests, Go or Prometheus, and "Chrome" for Headless Chrome, so the sign-in table
//! of `portcullis audit` would lose what it shows today.

/// Longest summary, in characters (not bytes).
const MAX_SUMMARY_CHARS: usize = 40;
/// How much of an unrecognised User-Agent is shown.
const UNKNOWN_PREFIX_CHARS: usize = 24;
/// Shown for an empty User-Agent.
const EMPTY_SUMMARY: &str = "-";

/// Browser product tokens, first match wins. Browsers send the tokens of the engines they are
/// built on (Edge, Opera, Samsung and Yandex all send `Chrome/`), so the specific ones come first.
const BROWSERS: &[(&str, &str)] = &[
    ("Edg/", "Edge"),
    ("EdgA/", "Edge"),
    ("EdgiOS/", "Edge"),
    ("OPR/", "Opera"),
    ("SamsungBrowser/", "Samsung Internet"),
    ("YaBrowser/", "Yandex Browser"),
    ("Firefox/", "Firefox"),
    ("FxiOS/", "Firefox"),
    ("HeadlessChrome/", "Headless Chrome"),
    ("Chrome/", "Chrome"),
    ("CriOS/", "Chrome"),
];

/// Command-line tools and libraries; shown with major.minor and no OS.
const TOOLS: &[(&str, &str)] = &[
    ("curl/", "curl"),
    ("Wget/", "Wget"),
    ("python-requests/", "python-requests"),
    ("Go-http-client/", "Go-http-client"),
    ("Prometheus/", "Prometheus"),
];

/// Platform markers, first match wins: iOS user agents say "like Mac OS X" and Android ones say
/// "Linux", so both come before the system they mention.
const OPERATING_SYSTEMS: &[(&str, &str)] = &[
    ("Windows", "Windows"),
    ("iPhone", "iOS"),
    ("iPad", "iOS"),
    ("iPod", "iOS"),
    ("Android", "Android"),
    ("CrOS", "ChromeOS"),
    ("Mac OS X", "macOS"),
    ("Macintosh", "macOS"),
    ("Linux", "Linux"),
];

#[derive(Debug, Clone, Copy)]
enum Precision {
    Major,
    MajorMinor,
}

/// A short, display-safe description of the browser (or tool, or crawler) and OS behind
/// `user_agent`.
pub fn summary(user_agent: &str) -> String {
    let cleaned = strip_unsafe_chars(user_agent);
    let user_agent = cleaned.trim();
    if user_agent.is_empty() {
        return EMPTY_SUMMARY.to_string();
    }
    let described = describe(user_agent)
        .unwrap_or_else(|| take_chars(user_agent, UNKNOWN_PREFIX_CHARS).to_string());
    take_chars(&described, MAX_SUMMARY_CHARS)
        .trim_end()
        .to_string()
}

/// Crawlers first (Googlebot's smartphone agent also carries `Chrome/`), then browsers, then tools.
fn describe(user_agent: &str) -> Option<String> {
    if let Some(name) = crawler_name(user_agent) {
        return Some(name.to_string());
    }
    if let Some((name, version)) = browser(user_agent) {
        return Some(compose(name, version, operating_system(user_agent)));
    }
    TOOLS.iter().find_map(|&(token, name)| {
        let rest = after_token(user_agent, token)?;
        Some(compose(name, version(rest, Precision::MajorMinor), None))
    })
}

fn browser(user_agent: &str) -> Option<(&'static str, Option<&str>)> {
    let branded = BROWSERS.iter().find_map(|&(token, name)| {
        let rest = after_token(user_agent, token)?;
        Some((name, version(rest, Precision::Major)))
    });
    if branded.is_some() {
        return branded;
    }
    // Safari's own `Safari/` number is the WebKit build; the release is in `Version/`.
    after_token(user_agent, "Safari/")?;
    let release =
        after_token(user_agent, "Version/").and_then(|rest| version(rest, Precision::Major));
    Some(("Safari", release))
}

fn operating_system(user_agent: &str) -> Option<&'static str> {
    OPERATING_SYSTEMS
        .iter()
        .find(|(marker, _)| user_agent.contains(marker))
        .map(|&(_, name)| name)
}

/// A crawler names itself in a product token ending in "bot"/"Bot" ("Googlebot/2.1",
/// "AdsBot-Google", "PetalBot;"). A word merely ending in "bot" and followed by a space (the
/// "Cubot" phone brand) is not one.
fn crawler_name(user_agent: &str) -> Option<&str> {
    user_agent.char_indices().find_map(|(start_of_bot, _)| {
        let rest = &user_agent[start_of_bot..];
        if !(rest.starts_with("bot") || rest.starts_with("Bot")) {
            return None;
        }
        let end = start_of_bot + "bot".len();
        let ends_token = match user_agent[end..].chars().next() {
            None => true,
            Some(next) => matches!(next, '/' | '-' | ';' | ')'),
        };
        if !ends_token {
            return None;
        }
        let start = user_agent[..start_of_bot]
            .char_indices()
            .rev()
            .take_while(|&(_, c)| c.is_alphanumeric() || c == '_' || c == '.')
            .last()
            .map_or(start_of_bot, |(index, _)| index);
        Some(&user_agent[start..end])
    })
}

/// The text after the first `token` that starts a word (so "libcurl/" is not "curl/" and
/// "HeadlessChrome/" is not "Chrome/").
fn after_token<'a>(user_agent: &'a str, token: &str) -> Option<&'a str> {
    user_agent
        .match_indices(token)
        .find(|&(index, _)| {
            user_agent[..index]
                .chars()
                .next_back()
                .is_none_or(|before| !before.is_alphanumeric())
        })
        .map(|(index, _)| &user_agent[index + token.len()..])
}

/// The leading version number of `text`: "120" or "8.5" from "120.0.6099.144" or "8.5.0".
fn version(text: &str, precision: Precision) -> Option<&str> {
    let major_len = leading_digits(text);
    if major_len == 0 {
        return None;
    }
    let len = match precision {
        Precision::Major => major_len,
        Precision::MajorMinor => match text[major_len..].strip_prefix('.') {
            Some(after_dot) if leading_digits(after_dot) > 0 => {
                major_len + 1 + leading_digits(after_dot)
            }
            _ => major_len,
        },
    };
    Some(&text[..len])
}

fn leading_digits(text: &str) -> usize {
    text.bytes().take_while(u8::is_ascii_digit).count()
}

fn compose(name: &str, version: Option<&str>, os: Option<&str>) -> String {
    let mut out = name.to_string();
    if let Some(version) = version {
        out.push(' ');
        out.push_str(version);
    }
    if let Some(os) = os {
        out.push_str(" on ");
        out.push_str(os);
    }
    out
}

/// Drops control characters and the bidi overrides that could reorder a terminal table: for
/// any client-sent text shown to an admin (the audit table uses it for every cell).
pub fn strip_unsafe_chars(text: &str) -> String {
    text.chars()
        .filter(|&c| !c.is_control() && !is_bidi_control(c))
        .collect()
}

fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// At most `max` characters of `text`, cut on a character boundary.
fn take_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

    /// (User-Agent, expected summary)
    const CASES: &[(&str, &str)] = &[
        // Desktop browsers.
        (CHROME_WINDOWS, "Chrome 120 on Windows"),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
            "Chrome 120 on macOS",
        ),
        (
            "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
            "Chrome 120 on ChromeOS",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0",
            "Edge 120 on Windows",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 OPR/106.0.0.0",
            "Opera 106 on Windows",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/118.0.0.0 YaBrowser/23.11.0.0 Safari/537.36",
            "Yandex Browser 23 on Windows",
        ),
        (
            "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
            "Firefox 121 on Linux",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
            "Firefox 121 on Windows",
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15",
            "Safari 17 on macOS",
        ),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.6099.109 Safari/537.36",
            "Headless Chrome 120 on Linux",
        ),
        // Mobile browsers.
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
            "Safari 17 on iOS",
        ),
        (
            "Mozilla/5.0 (iPad; CPU OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
            "Safari 17 on iOS",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1",
            "Chrome 120 on iOS",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/121.0 Mobile/15E148 Safari/605.1.15",
            "Firefox 121 on iOS",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 EdgiOS/120.0.2210.126 Mobile/15E148 Safari/605.1.15",
            "Edge 120 on iOS",
        ),
        (
            "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36",
            "Chrome 120 on Android",
        ),
        (
            "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36 EdgA/120.0.0.0",
            "Edge 120 on Android",
        ),
        (
            "Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
            "Samsung Internet 23 on Android",
        ),
        (
            "Mozilla/5.0 (Android 14; Mobile; rv:121.0) Gecko/121.0 Firefox/121.0",
            "Firefox 121 on Android",
        ),
        // A phone brand ending in "bot" is not a crawler.
        (
            "Mozilla/5.0 (Linux; Android 10; Cubot X30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
            "Chrome 120 on Android",
        ),
        // Tools.
        ("curl/8.5.0", "curl 8.5"),
        ("curl/8", "curl 8"),
        ("Wget/1.21.4", "Wget 1.21"),
        ("python-requests/2.31.0", "python-requests 2.31"),
        ("Go-http-client/1.1", "Go-http-client 1.1"),
        ("Prometheus/2.48.1", "Prometheus 2.48"),
        // Crawlers.
        (
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Googlebot",
        ),
        (
            "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.129 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Googlebot",
        ),
        (
            "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36",
            "bingbot",
        ),
        (
            "AdsBot-Google (+http://www.google.com/adsbot.html)",
            "AdsBot",
        ),
        // Partial information.
        ("Firefox/121.0", "Firefox 121"),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Safari/605.1.15",
            "Safari on macOS",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0) Chrome/ Safari/537.36",
            "Chrome on Windows",
        ),
        // Unknown: the first 24 characters, trimmed.
        (
            "Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.2; Trident/6.0)",
            "Mozilla/5.0 (compatible;",
        ),
        (
            "PycURL/7.45.2 libcurl/7.81.0 GnuTLS/3.7.3",
            "PycURL/7.45.2 libcurl/7.",
        ),
        ("xyzzy plugh", "xyzzy plugh"),
        ("  padded   ", "padded"),
        ("abcdefghijklmnopqrstuvw xyz", "abcdefghijklmnopqrstuvw"),
        // Empty.
        ("", "-"),
        ("   ", "-"),
        ("\u{0}\t\r\n\u{7f}", "-"),
        // Control and bidi characters are dropped, before parsing too.
        ("curl/8.5.0\r\nX-Injected: yes", "curl 8.5"),
        ("evil\u{1b}[31mred\u{7}", "evil[31mred"),
        ("abc\u{202E}fed\u{2066}", "abcfed"),
        (
            "Fire\u{0}fox/121.0 (X11; Linux x86_64)",
            "Firefox 121 on Linux",
        ),
        // Multi-byte characters at the 24-character cut.
        ("ééééééééééééééééééééééééééééé", "éééééééééééééééééééééééé"),
        (
            "😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀",
            "😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀",
        ),
    ];

    #[test]
    fn summaries() {
        for &(user_agent, expected) in CASES {
            assert_eq!(summary(user_agent), expected, "for {user_agent:?}");
        }
    }

    #[test]
    fn very_long_input_is_cut_to_the_unknown_prefix() {
        let long = "A".repeat(100_000);
        assert_eq!(summary(&long), "A".repeat(UNKNOWN_PREFIX_CHARS));
    }

    #[test]
    fn recognised_summary_is_capped_at_forty_chars() {
        let huge_version = format!("Chrome/{}", "9".repeat(200));
        let expected = format!("Chrome {}", "9".repeat(MAX_SUMMARY_CHARS - "Chrome ".len()));
        assert_eq!(summary(&huge_version), expected);
    }

    #[test]
    fn multi_byte_characters_at_the_forty_char_cut() {
        // A crawler name of 60 two-byte letters: the cut lands on a character, not a byte.
        let crawler = format!("Mozilla/5.0 (compatible; {}bot/1.0)", "ü".repeat(60));
        let result = summary(&crawler);
        assert_eq!(result, "ü".repeat(MAX_SUMMARY_CHARS));
        assert_eq!(result.len(), 2 * MAX_SUMMARY_CHARS);
    }

    #[test]
    fn every_summary_is_short_and_printable() {
        let long = format!("{}\u{1b}{}", "Edg/", "\u{202E}😀".repeat(500));
        let inputs = CASES.iter().map(|&(user_agent, _)| user_agent).chain([
            long.as_str(),
            "bot",
            "Bot/",
            "\u{85}\u{9b}",
            "Version/17 Safari/",
        ]);
        for user_agent in inputs {
            let result = summary(user_agent);
            assert!(!result.is_empty(), "for {user_agent:?}");
            assert!(
                result.chars().count() <= MAX_SUMMARY_CHARS,
                "{result:?} for {user_agent:?}"
            );
            assert!(
                !result.chars().any(|c| c.is_control() || is_bidi_control(c)),
                "{result:?} for {user_agent:?}"
            );
            assert_eq!(result, result.trim(), "for {user_agent:?}");
        }
    }
}
