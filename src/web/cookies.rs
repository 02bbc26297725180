//! Reading the gateway's cookies from a request's `Cookie` headers, and removing them before
//! the request goes on. Pure text handling; their names and `Set-Cookie` lines are config's
//! (`config::cookies`).

/// Iterates `(name, value)` pairs of one `Cookie` header value.
fn pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header.split(';').filter_map(|part| {
        let (name, value) = part.split_once('=')?;
        Some((name.trim(), value.trim().trim_matches('"')))
    })
}

/// The first value of cookie `name` across all `Cookie` headers.
pub fn find<'a>(headers: impl IntoIterator<Item = &'a str>, name: &str) -> Option<&'a str> {
    headers
        .into_iter()
        .flat_map(pairs)
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// The `Cookie` header value without the gateway's own cookies; `None` when nothing is left.
/// Works on bytes: a header that is not valid UTF-8 must lose the gateway's cookies too.
pub fn without(header: &[u8], names: &[&str]) -> Option<Vec<u8>> {
    let kept: Vec<&[u8]> = header
        .split(|&b| b == b';')
        .map(<[u8]>::trim_ascii)
        .filter(|part| {
            let name = part
                .split(|&b| b == b'=')
                .next()
                .unwrap_or(part)
                .trim_ascii();
            !part.is_empty() && !names.iter().any(|n| n.as_bytes() == name)
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join(&b"; "[..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cookies_across_headers() {
        let cases: [(&[&str], &str, Option<&str>); 5] = [
            (&["a=1; b=2"], "b", Some("2")),
            (&["a=1", "b=2"], "b", Some("2")),
            (&["ab=1"], "a", None),
            (&["a=\"q\""], "a", Some("q")),
            (&["a=1; a=2"], "a", Some("1")),
        ];
        for (headers, name, want) in cases {
            assert_eq!(find(headers.iter().copied(), name), want, "{headers:?}");
        }
    }

    #[test]
    fn strips_only_gateway_cookies() {
        let names = ["s", "s_remember"];
        let cases = [
            ("s=1; app=2", Some("app=2")),
            ("app=2;s_remember=x;  other=3", Some("app=2; other=3")),
            ("s=1; s_remember=2", None),
            ("ss=1", Some("ss=1")),
        ];
        for (header, want) in cases {
            let got = without(header.as_bytes(), &names);
            assert_eq!(got.as_deref(), want.map(str::as_bytes), "{header}");
        }
        // Not UTF-8: our cookie still goes, the other bytes stay as they were.
        assert_eq!(
            without(b"s=1; app=\xff\xfe", &names),
            Some(b"app=\xff\xfe".to_vec())
        );
    }
}
