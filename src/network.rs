//! Where a request comes from, and whether that place may use the portal: the TCP peer
//! (`PeerAddr`) becomes a `ClientAddr` only through `resolve`, which believes forwarding
//! headers from configured proxies alone; then the global allowlist and the per-user/group
//! restrictions (SPEC §3 steps 1, 2, 7) are pure functions of that address.

use std::net::IpAddr;

use crate::allowlist::{AddrSet, ClientAddr, canonical};
use crate::session::Identity;

/// The TCP peer of a connection. It cannot be matched against an allowlist: resolve it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub IpAddr);

/// A forwarding hop that is not an IP address (`unknown`, `_hidden`, garbage). A request whose
/// client is such a hop is attributed to `0.0.0.0`, which matches no sensible allowlist.
const UNRESOLVABLE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// The forwarding headers of a request, as received.
#[derive(Debug, Default, Clone, Copy)]
pub struct Forwarding<'a> {
    /// Every `X-Forwarded-For` value, in order.
    pub x_forwarded_for: &'a [&'a str],
    pub forwarded: &'a [&'a str],
    pub x_real_ip: Option<&'a str>,
}

/// The outcome of resolution: who the client is and the part of the forwarding chain that
/// trusted proxies vouch for (ending with the client), for the upstream's `X-Forwarded-For`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub client: ClientAddr,
    pub chain: Vec<String>,
}

/// Parses one hop: `1.2.3.4`, `1.2.3.4:80`, `[2001:db8::1]:80`, `"[::1]"`, `2001:db8::1`.
fn hop(text: &str) -> Option<IpAddr> {
    let t = text.trim().trim_matches('"');
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = t.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    let (host, port) = t.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

fn forwarded_for(values: &[&str]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| v.trim().to_string())
            })
        })
        .collect()
}

/// SPEC §3 step 1: the peer, unless the peer is a trusted proxy; then the right-most hop of
/// `X-Forwarded-For` (else `Forwarded: for=`, else `X-Real-IP`) that is not itself trusted.
pub fn resolve(peer: PeerAddr, trusted: &AddrSet, headers: Forwarding) -> Resolved {
    let peer_ip = canonical(peer.0);
    let direct = || Resolved {
        client: ClientAddr::new(peer_ip),
        chain: vec![peer_ip.to_string()],
    };
    if !trusted.contains_ip(peer_ip) {
        return direct();
    }
    let hops: Vec<String> = if !headers.x_forwarded_for.is_empty() {
        headers
            .x_forwarded_for
            .iter()
            .flat_map(|v| v.split(','))
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .collect()
    } else if !headers.forwarded.is_empty() {
        forwarded_for(headers.forwarded)
    } else if let Some(real) = headers.x_real_ip {
        vec![real.trim().to_string()]
    } else {
        Vec::new()
    };
    // Walk from the right: every hop a trusted proxy added is believed until the first one
    // that is not trusted, which is the client.
    let client = hops
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, h)| match hop(h).map(canonical) {
            Some(ip) if trusted.contains_ip(ip) && i > 0 => None,
            Some(ip) => Some((i, ip)),
            None => Some((i, UNRESOLVABLE)),
        });
    let Some((i, ip)) = client else {
        return direct();
    };
    let mut chain = hops;
    chain.truncate(i);
    chain.push(ip.to_string());
    Resolved {
        client: ClientAddr::new(ip),
        chain,
    }
}

/// One `network.restrictions` entry, validated.
#[derive(Debug, Clone)]
pub struct Restriction {
    pub name: String,
    /// Lower-cased.
    pub groups: Vec<String>,
    /// Lower-cased logins or emails.
    pub users: Vec<String>,
    pub allow: AddrSet,
}

impl Restriction {
    fn applies_to(&self, who: &Identity) -> bool {
        let (login, email) = (who.login.to_lowercase(), who.email.to_lowercase());
        self.users.iter().any(|u| *u == login || *u == email)
            || who
                .groups
                .iter()
                .any(|g| self.groups.contains(&g.to_lowercase()))
    }
}

/// SPEC §3 step 2: inside the global allowlist (an empty list allows everyone).
pub fn globally_allowed(allow: &AddrSet, client: &ClientAddr) -> bool {
    allow.is_empty() || allow.contains(client)
}

/// SPEC §3 step 7: a user under one or more restrictions may come only from the union of
/// their ranges; a user under none may come from anywhere.
pub fn user_allowed(restrictions: &[Restriction], who: &Identity, client: &ClientAddr) -> bool {
    let mut applicable = restrictions.iter().filter(|r| r.applies_to(who)).peekable();
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
        let trusted = set(&["10.0.0.0/8", "::1"]);
        // (peer, X-Forwarded-For values, Forwarded values, X-Real-IP, client, chain upstream)
        type Case<'a> = (
            &'a str,
            &'a [&'a str],
            &'a [&'a str],
            Option<&'a str>,
            &'a str,
            &'a str,
        );
        let cases: [Case; 14] = [
            (
                "203.0.113.5",
                &["198.51.100.1"],
                &[],
                None,
                "203.0.113.5",
                "203.0.113.5",
            ),
            (
                "203.0.113.5",
                &[],
                &["for=198.51.100.1"],
                Some("198.51.100.2"),
                "203.0.113.5",
                "203.0.113.5",
            ),
            (
                "10.0.0.1",
                &["198.51.100.1"],
                &[],
                None,
                "198.51.100.1",
                "198.51.100.1",
            ),
            (
                "10.0.0.1",
                &["6.6.6.6, 198.51.100.1"],
                &[],
                None,
                "198.51.100.1",
                "6.6.6.6,198.51.100.1",
            ),
            (
                "10.0.0.1",
                &["6.6.6.6, 198.51.100.1, 10.0.0.2"],
                &[],
                None,
                "198.51.100.1",
                "6.6.6.6,198.51.100.1",
            ),
            (
                "10.0.0.1",
                &["6.6.6.6", "198.51.100.1"],
                &[],
                None,
                "198.51.100.1",
                "6.6.6.6,198.51.100.1",
            ),
            (
                "10.0.0.1",
                &["10.0.0.3, 10.0.0.2"],
                &[],
                None,
                "10.0.0.3",
                "10.0.0.3",
            ),
            (
                "10.0.0.1",
                &["198.51.100.1:4711"],
                &[],
                None,
                "198.51.100.1",
                "198.51.100.1",
            ),
            (
                "10.0.0.1",
                &["garbage, 10.0.0.2"],
                &[],
                None,
                "0.0.0.0",
                "0.0.0.0",
            ),
            (
                "10.0.0.1",
                &[],
                &["for=192.0.2.60;proto=http, for=\"[2001:db8::1]:4711\""],
                None,
                "2001:db8::1",
                "192.0.2.60,2001:db8::1",
            ),
            (
                "10.0.0.1",
                &[],
                &["for=unknown"],
                None,
                "0.0.0.0",
                "0.0.0.0",
            ),
            (
                "10.0.0.1",
                &[],
                &[],
                Some("198.51.100.9"),
                "198.51.100.9",
                "198.51.100.9",
            ),
            ("10.0.0.1", &[], &[], None, "10.0.0.1", "10.0.0.1"),
            (
                "::ffff:10.0.0.1",
                &["::ffff:198.51.100.1"],
                &[],
                None,
                "198.51.100.1",
                "198.51.100.1",
            ),
        ];
        for (peer, xff, fwd, real, client, chain) in cases {
            let r = resolve(
                PeerAddr(peer.parse().unwrap()),
                &trusted,
                Forwarding {
                    x_forwarded_for: xff,
                    forwarded: fwd,
                    x_real_ip: real,
                },
            );
            assert_eq!(
                r.client.to_string(),
                client,
                "peer {peer} xff {xff:?} fwd {fwd:?}"
            );
            assert_eq!(r.chain.join(","), chain, "peer {peer} xff {xff:?}");
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
