//! Where a request comes from, and whether that place may use the portal: the TCP peer
//! (`PeerAddr`) becomes a `ClientAddr` only through `resolve`, which believes forwarding
//! headers from configured proxies alone; then the global allowlist and the per-user/group
//! restrictions (docs/reference.md, What happens to a request) are pure functions of that address.

use std::net::IpAddr;

use crate::config::{ForwardedHeader, Restriction};
use crate::core::addr::{AddrSet, ClientAddr, PeerAddr, canonical};
use crate::core::identity::Identity;

/// Where a trusted proxy's claim cannot be read (an unreadable or malformed header, a hop that
/// is not an address: `unknown`, `_hidden`, garbage), the client is `0.0.0.0`, which matches no
/// sensible allowlist. Resolution never falls through to another header or to the peer.
pub const UNRESOLVABLE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// The forwarding header of a request as received: every line of the configured header, as
/// raw bytes (a value that is not text is a decision, not something to skip).
#[derive(Debug, Default, Clone, Copy)]
pub struct Forwarding<'a> {
    pub header: ForwardedHeader,
    pub values: &'a [&'a [u8]],
}

/// Parses one hop: `1.2.3.4`, `1.2.3.4:80`, `[2001:db8::1]:80`, `"[::1]"`, `2001:db8::1`.
fn hop(text: &str) -> Option<IpAddr> {
    let t = text.trim();
    let t = match t.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"')?,
        None => t,
    };
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = t.strip_prefix('[') {
        let (ip, port) = rest.split_once(']')?;
        if !(port.is_empty() || port.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return ip.parse().ok();
    }
    let (host, port) = t.rsplit_once(':')?;
    if !is_port(port) {
        return None;
    }
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(text: &str) -> bool {
    text.parse::<u16>().is_ok()
}

/// The hops a header names, left (farthest) to right (nearest), each parsed or `None` where it
/// cannot be read or is not an address. Read per hop: what a client wrote to the left of the
/// hop its proxy appended cannot spoil that hop, only itself.
fn hops(header: ForwardedHeader, values: &[&[u8]]) -> Vec<Option<IpAddr>> {
    match header {
        ForwardedHeader::XForwardedFor => values
            .iter()
            .flat_map(|v| v.split(|&b| b == b','))
            .map(|h| text(h).and_then(hop))
            .collect(),
        // A line is read whole (its quoted strings may hold commas): a line that is not text,
        // or not well-formed, is one hop that cannot be read.
        ForwardedHeader::Forwarded => values
            .iter()
            .flat_map(|v| match text(v).map(forwarded_elements) {
                Some(Ok(elements)) => elements.into_iter().map(|e| e.and_then(hop)).collect(),
                _ => vec![None],
            })
            .collect(),
        // Set, not appended: two lines, or a list, mean something else wrote it too.
        ForwardedHeader::XRealIp => match values {
            [one] => vec![text(one).filter(|t| !t.contains(',')).and_then(hop)],
            _ => vec![None],
        },
    }
}

/// Bytes as text when they are visible ASCII, spaces and tabs (RFC 9110 field content without
/// obs-text); `None` otherwise.
fn text(bytes: &[u8]) -> Option<&str> {
    bytes
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        .then(|| std::str::from_utf8(bytes).ok())
        .flatten()
}

/// A `Forwarded` line that is not well-formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unreadable;

/// The `for=` value of each element of one `Forwarded` line (RFC 7239 §4): elements are split
/// by commas and pairs by semicolons outside quoted strings. An element without exactly one
/// `for=` yields `None`; unbalanced quotes or a pair without `=` make the line unreadable.
fn forwarded_elements(line: &str) -> Result<Vec<Option<&str>>, Unreadable> {
    let mut elements = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    let mut bounds = Vec::new();
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                bounds.push((start, i));
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err(Unreadable);
    }
    bounds.push((start, line.len()));
    for (from, to) in bounds {
        let element = &line[from..to];
        let mut found = None;
        let mut count = 0;
        for pair in split_unquoted(element, ';') {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let (k, v) = pair.split_once('=').ok_or(Unreadable)?;
            if k.trim().eq_ignore_ascii_case("for") {
                count += 1;
                found = Some(v.trim());
            }
        }
        elements.push(if count == 1 { found } else { None });
    }
    Ok(elements)
}

fn split_unquoted(text: &str, sep: char) -> Vec<&str> {
    let (mut parts, mut start, mut quoted) = (Vec::new(), 0, false);
    for (i, c) in text.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&text[start..i]);
            start = i + 1;
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Who the client is (docs/reference.md, What happens to a request): the peer, unless the
/// peer is a trusted proxy; then the right-most hop of the configured forwarding header that
/// is not itself trusted. A hop that cannot be read (bytes that are not text, a malformed
/// `Forwarded` line, a second `X-Real-IP`) or is not an address, where the walk stops, makes
/// the client `0.0.0.0`: never another header, never the peer. A trusted peer that sends no
/// such header at all is the client itself (its own health checks).
pub fn resolve(peer: PeerAddr, trusted: &AddrSet, headers: Forwarding) -> ClientAddr {
    let peer_ip = canonical(peer.0);
    if !trusted.contains_ip(peer_ip) || headers.values.is_empty() {
        return ClientAddr::new(peer_ip);
    }
    let hops = hops(headers.header, headers.values);
    // Walk from the right: every hop a trusted proxy added is believed until the first one
    // that is not trusted, which is the client. The left-most hop is the client even when it
    // is trusted (a request a proxy made on its own behalf).
    let client = hops
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, h)| match h.map(canonical) {
            Some(ip) if trusted.contains_ip(ip) && i > 0 => None,
            Some(ip) => Some(ip),
            None => Some(UNRESOLVABLE),
        });
    ClientAddr::new(client.unwrap_or(UNRESOLVABLE))
}

/// Whether a restriction names this person, by login, email or group (case-insensitively).
fn applies_to(r: &Restriction, who: &Identity) -> bool {
    let (login, email) = (who.login.to_lowercase(), who.email.to_lowercase());
    r.users.iter().any(|u| *u == login || *u == email)
        || who
            .groups
            .iter()
            .any(|g| r.groups.contains(&g.to_lowercase()))
}

/// Inside the global allowlist (an empty list allows everyone).
pub fn globally_allowed(allow: &AddrSet, client: &ClientAddr) -> bool {
    allow.is_empty() || allow.contains(client)
}

/// A user under one or more restrictions may come only from the union of
/// their ranges; a user under none may come from anywhere.
pub fn user_allowed(restrictions: &[Restriction], who: &Identity, client: &ClientAddr) -> bool {
    let mut applicable = restrictions
        .iter()
        .filter(|r| applies_to(r, who))
        .peekable();
    applicable.peek().is_none() || applicable.any(|r| r.allow.contains(client))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(entries: &[&str]) -> AddrSet {
        AddrSet::parse(entries.iter().copied()).unwrap()
    }

    #[test]
    fn resolution_table() {
        use ForwardedHeader::{Forwarded, XForwardedFor as Xff, XRealIp};
        let trusted = set(&["10.0.0.0/8", "::1"]);
        // (peer, the configured header, its values, the client)
        type Case<'a> = (&'a str, ForwardedHeader, &'a [&'a [u8]], &'a str);
        let cases: &[Case] = &[
            // An untrusted peer's headers are never read.
            ("203.0.113.5", Xff, &[b"198.51.100.1"], "203.0.113.5"),
            (
                "203.0.113.5",
                Forwarded,
                &[b"for=198.51.100.1"],
                "203.0.113.5",
            ),
            ("203.0.113.5", Xff, &[b"\xe9"], "203.0.113.5"),
            ("10.0.0.1", Xff, &[b"198.51.100.1"], "198.51.100.1"),
            ("10.0.0.1", Xff, &[b"6.6.6.6, 198.51.100.1"], "198.51.100.1"),
            (
                "10.0.0.1",
                Xff,
                &[b"6.6.6.6, 198.51.100.1, 10.0.0.2"],
                "198.51.100.1",
            ),
            (
                "10.0.0.1",
                Xff,
                &[b"6.6.6.6", b"198.51.100.1"],
                "198.51.100.1",
            ),
            ("10.0.0.1", Xff, &[b"10.0.0.3, 10.0.0.2"], "10.0.0.3"),
            ("10.0.0.1", Xff, &[b"198.51.100.1:4711"], "198.51.100.1"),
            ("10.0.0.1", Xff, &[b"[2001:db8::1]:4711"], "2001:db8::1"),
            ("10.0.0.1", Xff, &[b"garbage, 10.0.0.2"], "0.0.0.0"),
            ("10.0.0.1", Xff, &[b"198.51.100.1, "], "0.0.0.0"),
            ("10.0.0.1", Xff, &[b"198.51.100.1:99999"], "0.0.0.0"),
            // A value that is not text: never skipped, never a fall-through to the peer.
            // What the client wrote left of its proxy's hop cannot spoil that hop.
            ("10.0.0.1", Xff, &[b"\xe9, 203.0.113.9"], "203.0.113.9"),
            ("10.0.0.1", Xff, &[b"\xe9", b"203.0.113.9"], "203.0.113.9"),
            ("10.0.0.1", Xff, &[b"203.0.113.9", b"\xe9"], "0.0.0.0"),
            ("10.0.0.1", Xff, &[b"203.0.113.9\x01"], "0.0.0.0"),
            ("10.0.0.1", Xff, &[b"\xe9, 203.0.113.9\xa0"], "0.0.0.0"),
            // The configured header only: the others are not even looked at.
            ("10.0.0.1", Xff, &[], "10.0.0.1"),
            (
                "10.0.0.1",
                Forwarded,
                &[b"for=192.0.2.60;proto=http, for=\"[2001:db8::1]:4711\""],
                "2001:db8::1",
            ),
            ("10.0.0.1", Forwarded, &[b"for=unknown"], "0.0.0.0"),
            (
                "10.0.0.1",
                Forwarded,
                &[b"for=_hidden, for=198.51.100.1"],
                "198.51.100.1",
            ),
            (
                "10.0.0.1",
                Forwarded,
                &[b"for=198.51.100.1, by=10.0.0.1"],
                "0.0.0.0",
            ),
            (
                "10.0.0.1",
                Forwarded,
                &[b"for=198.51.100.1, for=\"10.0.0.2"],
                "0.0.0.0",
            ),
            (
                "10.0.0.1",
                Forwarded,
                &[b"for=198.51.100.1;for=198.51.100.2"],
                "0.0.0.0",
            ),
            ("10.0.0.1", Forwarded, &[b"for"], "0.0.0.0"),
            (
                "10.0.0.1",
                Forwarded,
                &[b"\xe9", b"for=198.51.100.1"],
                "198.51.100.1",
            ),
            ("10.0.0.1", XRealIp, &[b"198.51.100.9"], "198.51.100.9"),
            (
                "10.0.0.1",
                XRealIp,
                &[b"198.51.100.9", b"198.51.100.8"],
                "0.0.0.0",
            ),
            (
                "10.0.0.1",
                XRealIp,
                &[b"198.51.100.9, 198.51.100.8"],
                "0.0.0.0",
            ),
            ("10.0.0.1", XRealIp, &[b"10.0.0.9"], "10.0.0.9"),
            ("10.0.0.1", XRealIp, &[b"198.51.100.9\xe9"], "0.0.0.0"),
            (
                "10.0.0.1",
                Forwarded,
                &[b"for=198.51.100.1", b"for=\"\xe9\""],
                "0.0.0.0",
            ),
            (
                "::ffff:10.0.0.1",
                Xff,
                &[b"::ffff:198.51.100.1"],
                "198.51.100.1",
            ),
        ];
        for &(peer, header, values, client) in cases {
            let got = resolve(
                PeerAddr(peer.parse().unwrap()),
                &trusted,
                Forwarding { header, values },
            );
            assert_eq!(
                got.to_string(),
                client,
                "peer {peer}, {header:?}: {:?}",
                values
                    .iter()
                    .map(|v| String::from_utf8_lossy(v))
                    .collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn header_names_are_read_case_insensitively() {
        assert_eq!(
            ForwardedHeader::parse("x-real-ip"),
            Some(ForwardedHeader::XRealIp)
        );
        assert_eq!(
            ForwardedHeader::parse("X-Forwarded-For"),
            Some(ForwardedHeader::XForwardedFor)
        );
        assert_eq!(ForwardedHeader::parse("X-Client-IP"), None);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        /// Bytes a client may put in front of what its proxy appends: anything at all.
        fn client_bytes() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..40),
                "[0-9a-f:.,\\[\\]\" ;=forFOR_unknw-]{0,40}".prop_map(String::into_bytes),
            ]
        }

        fn untrusted_v4() -> impl Strategy<Value = std::net::Ipv4Addr> {
            any::<u32>()
                .prop_map(std::net::Ipv4Addr::from)
                .prop_filter("not a trusted proxy", |ip| ip.octets()[0] != 10)
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

            /// Whatever a client sends, its proxy's appended hop decides: the client is the
            /// address the proxy saw, never one of the client's choosing, never `0.0.0.0`
            /// (which would hide it among everyone who sends garbage).
            #[test]
            fn a_client_cannot_choose_its_address_through_x_forwarded_for(
                prefix in client_bytes(),
                real in untrusted_v4(),
                split_lines in any::<bool>(),
            ) {
                let trusted = set(&["10.0.0.0/8"]);
                let appended = real.to_string().into_bytes();
                let joined = [prefix.as_slice(), b", ", appended.as_slice()].concat();
                let lines: Vec<&[u8]> = if split_lines {
                    vec![prefix.as_slice(), appended.as_slice()]
                } else {
                    vec![joined.as_slice()]
                };
                let got = resolve(
                    PeerAddr("10.0.0.1".parse().unwrap()),
                    &trusted,
                    Forwarding { header: ForwardedHeader::XForwardedFor, values: &lines },
                );
                prop_assert_eq!(got.ip(), IpAddr::V4(real), "{:?}", String::from_utf8_lossy(&joined));
            }

            #[test]
            fn a_client_cannot_choose_its_address_through_forwarded(
                prefix in client_bytes(),
                real in untrusted_v4(),
            ) {
                let trusted = set(&["10.0.0.0/8"]);
                let appended = format!("for={real}").into_bytes();
                let lines: Vec<&[u8]> = vec![prefix.as_slice(), appended.as_slice()];
                let got = resolve(
                    PeerAddr("10.0.0.1".parse().unwrap()),
                    &trusted,
                    Forwarding { header: ForwardedHeader::Forwarded, values: &lines },
                );
                prop_assert_eq!(got.ip(), IpAddr::V4(real));
            }

            /// An untrusted peer is the client, whatever it claims.
            #[test]
            fn an_untrusted_peer_is_its_own_client(
                claim in client_bytes(),
                peer in untrusted_v4(),
                which in 0usize..3,
            ) {
                let header = [
                    ForwardedHeader::XForwardedFor,
                    ForwardedHeader::Forwarded,
                    ForwardedHeader::XRealIp,
                ][which];
                let lines: Vec<&[u8]> = vec![claim.as_slice()];
                let got = resolve(
                    PeerAddr(IpAddr::V4(peer)),
                    &set(&["10.0.0.0/8"]),
                    Forwarding { header, values: &lines },
                );
                prop_assert_eq!(got.ip(), IpAddr::V4(peer));
            }
        }
    }

    fn who(login: &str, groups: &[&str]) -> Identity {
        Identity {
            user_id: 1,
            login: login.into(),
            email: format!("{login}@example.com"),
            name: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn restriction_table() {
        let rules = vec![
            Restriction {
                name: "office".into(),
                groups: vec!["staff".into()],
                users: vec![],
                allow: set(&["192.168.0.0/16"]),
            },
            Restriction {
                name: "vpn".into(),
                groups: vec!["ops".into()],
                users: vec![],
                allow: set(&["10.8.0.0/24"]),
            },
            Restriction {
                name: "ceo".into(),
                groups: vec![],
                users: vec!["boss@example.com".into()],
                allow: set(&["203.0.113.7"]),
            },
        ];
        let cases = [
            (who("ann", &["Staff"]), "192.168.1.1", true),
            (who("ann", &["staff"]), "10.8.0.1", false),
            (who("ops1", &["staff", "ops"]), "10.8.0.1", true),
            (who("ops1", &["staff", "ops"]), "192.168.1.1", true),
            (who("ops1", &["staff", "ops"]), "8.8.8.8", false),
            (who("boss", &[]), "203.0.113.7", true),
            (who("BOSS", &[]), "203.0.113.8", false),
            (who("guest", &["visitors"]), "8.8.8.8", true),
        ];
        for (person, ip, want) in cases {
            let client = ClientAddr::new(ip.parse().unwrap());
            assert_eq!(
                user_allowed(&rules, &person, &client),
                want,
                "{} {:?} from {ip}",
                person.login,
                person.groups
            );
        }
    }

    #[test]
    fn an_empty_global_list_allows_everyone() {
        let client = ClientAddr::new("8.8.8.8".parse().unwrap());
        assert!(globally_allowed(&AddrSet::default(), &client));
        assert!(!globally_allowed(&set(&["10.0.0.0/8"]), &client));
    }
}
