//! Addresses: the TCP peer (`PeerAddr`) and the client it stands for (`ClientAddr`, only made by
//! trusted-proxy resolution), address sets parsed from `IP`, `CIDR` and `FIRST-LAST` entries
//! (IPv4 and IPv6, IPv4-mapped IPv6 read as IPv4) into sorted, merged intervals matched by
//! binary search, and what a valid host name is. Only a `ClientAddr` can be matched.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

/// The TCP peer of a connection. It cannot be matched against an allowlist: resolve it first
/// (`policy::network::resolve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub IpAddr);

/// The address a request is attributed to, after trusted-proxy resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(IpAddr);

impl ClientAddr {
    /// Only trusted-proxy resolution and tests build one; IPv4-mapped IPv6 becomes IPv4.
    pub(crate) fn new(ip: IpAddr) -> ClientAddr {
        ClientAddr(canonical(ip))
    }

    pub fn ip(&self) -> IpAddr {
        self.0
    }

    /// The address as text, exactly as `Display` writes it; IPv4 without the formatting
    /// machinery, which costs more than the rest of an authenticated request's own work here.
    pub fn text(&self) -> String {
        let IpAddr::V4(v4) = self.0 else {
            return self.0.to_string();
        };
        let mut s = String::with_capacity(15);
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                s.push('.');
            }
            if octet >= 100 {
                s.push(char::from(b'0' + octet / 100));
            }
            if octet >= 10 {
                s.push(char::from(b'0' + octet / 10 % 10));
            }
            s.push(char::from(b'0' + octet % 10));
        }
        s
    }
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// IPv4-mapped IPv6 addresses (what a dual-stack listener sees) are IPv4 addresses.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// An address as 16 bytes that sort as the addresses do (IPv4 as IPv4-mapped IPv6), for an
/// index over addresses written as text; `None` for text that is no address (none given).
pub fn ip_key(text: &str) -> Option<[u8; 16]> {
    let ip = canonical(text.trim().parse::<IpAddr>().ok()?);
    Some(match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    })
}

/// A `Host` value the gateway will repeat to the portal: a name, an IPv4 address or a
/// bracketed IPv6 address, with an optional port; nothing else (no user info, paths, spaces,
/// or characters a portal might build a link from).
pub fn valid_host(host: &str) -> bool {
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => {
            let Some((v6, after)) = rest.split_once(']') else {
                return false;
            };
            if v6.parse::<std::net::Ipv6Addr>().is_err() {
                return false;
            }
            match after {
                "" => (None, None),
                _ => match after.strip_prefix(':') {
                    Some(p) => (None, Some(p)),
                    None => return false,
                },
            }
        }
        None => match host.split_once(':') {
            Some((name, port)) => (Some(name), Some(port)),
            None => (Some(host), None),
        },
    };
    let port_ok =
        port.is_none_or(|p| p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok());
    let name_ok = name.is_none_or(|n| {
        !n.is_empty()
            && n.len() <= 253
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    });
    port_ok && name_ok
}

/// An inclusive range of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Range {
    V4(u32, u32),
    V6(u128, u128),
}

/// Parses one entry: `10.1.2.3`, `192.168.0.0/16`, `203.0.113.10-203.0.113.20`, `2001:db8::/32`.
fn parse_entry(text: &str) -> Result<Range, String> {
    let t = text.trim();
    let bad = || format!("`{text}` is not an IP address, a CIDR block or a FIRST-LAST range");
    if let Some((first, last)) = t.split_once('-') {
        let (a, b) = (
            parse_ip(first.trim()).ok_or_else(bad)?,
            parse_ip(last.trim()).ok_or_else(bad)?,
        );
        return match (a, b) {
            (IpAddr::V4(a), IpAddr::V4(b)) if u32::from(a) <= u32::from(b) => {
                Ok(Range::V4(a.into(), b.into()))
            }
            (IpAddr::V6(a), IpAddr::V6(b)) if u128::from(a) <= u128::from(b) => {
                Ok(Range::V6(a.into(), b.into()))
            }
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => Err(format!(
                "`{text}`: the first address of a range must not be after the last"
            )),
            _ => Err(format!(
                "`{text}`: both ends of a range must be IPv4, or both IPv6"
            )),
        };
    }
    if t.contains('/') {
        let net: IpNet = t.parse().map_err(|_| bad())?;
        if net.trunc() != net {
            return Err(format!(
                "`{text}` has host bits set; did you mean {}?",
                net.trunc()
            ));
        }
        return Ok(match net {
            IpNet::V4(n) => Range::V4(n.network().into(), n.broadcast().into()),
            IpNet::V6(n) => match n.network().to_ipv4_mapped() {
                // ::ffff:a.b.c.d/96+ is an IPv4 block written the IPv6 way.
                Some(v4) if n.prefix_len() >= 96 => {
                    let len = n.prefix_len() - 96;
                    let net = ipnet::Ipv4Net::new(v4, len).map_err(|_| bad())?;
                    Range::V4(net.network().into(), net.broadcast().into())
                }
                _ => Range::V6(n.network().into(), n.broadcast().into()),
            },
        });
    }
    match parse_ip(t).ok_or_else(bad)? {
        IpAddr::V4(a) => Ok(Range::V4(a.into(), a.into())),
        IpAddr::V6(a) => Ok(Range::V6(a.into(), a.into())),
    }
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>().ok().map(canonical)
}

/// A set of addresses as sorted, non-overlapping intervals per family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddrSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

fn merge<T: Copy + Ord + num_step::Step>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if lo <= last.1.next_or_max() => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

mod num_step {
    /// The next integer, saturating: lets adjacent ranges (…-9, 10-…) merge.
    pub trait Step {
        fn next_or_max(self) -> Self;
    }
    impl Step for u32 {
        fn next_or_max(self) -> u32 {
            self.saturating_add(1)
        }
    }
    impl Step for u128 {
        fn next_or_max(self) -> u128 {
            self.saturating_add(1)
        }
    }
}

fn find<T: Copy + Ord>(ranges: &[(T, T)], x: T) -> bool {
    // The last interval starting at or before x is the only one that can hold it.
    let idx = ranges.partition_point(|&(lo, _)| lo <= x);
    idx > 0 && x <= ranges[idx - 1].1
}

impl AddrSet {
    /// Parses every entry; errors come back with the entry's index.
    pub fn parse<'a>(
        entries: impl IntoIterator<Item = &'a str>,
    ) -> Result<AddrSet, Vec<(usize, String)>> {
        let (mut v4, mut v6, mut errors) = (Vec::new(), Vec::new(), Vec::new());
        for (i, e) in entries.into_iter().enumerate() {
            match parse_entry(e) {
                Ok(Range::V4(a, b)) => v4.push((a, b)),
                Ok(Range::V6(a, b)) => v6.push((a, b)),
                Err(msg) => errors.push((i, msg)),
            }
        }
        if errors.is_empty() {
            Ok(AddrSet {
                v4: merge(v4),
                v6: merge(v6),
            })
        } else {
            Err(errors)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// A `ClientAddr` is already canonical, so this is the lookup alone.
    pub fn contains(&self, addr: &ClientAddr) -> bool {
        match addr.0 {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => find(&self.v6, u128::from(a)),
        }
    }

    /// Every interval as a pair of `ip_key`s, first and last (IPv4 as IPv4-mapped IPv6).
    pub fn key_ranges(&self) -> Vec<([u8; 16], [u8; 16])> {
        let v4 = |a: u32| Ipv4Addr::from(a).to_ipv6_mapped().octets();
        let v6 = |a: u128| a.to_be_bytes();
        let four = self.v4.iter().map(|&(lo, hi)| (v4(lo), v4(hi)));
        four.chain(self.v6.iter().map(|&(lo, hi)| (v6(lo), v6(hi))))
            .collect()
    }

    /// For trusted-proxy checks on forwarding hops, which are not client addresses.
    pub(crate) fn contains_ip(&self, ip: IpAddr) -> bool {
        self.contains(&ClientAddr::new(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_address_text_is_what_display_writes() {
        let mut x: u32 = 0x2545_F491;
        let mut addrs: Vec<IpAddr> = [0, 1, 9, 10, 99, 100, 199, 200, 255]
            .iter()
            .flat_map(|&o: &u8| [[o, 0, 0, 0], [0, o, 0, 0], [1, 2, o, 4], [o, o, o, o]])
            .map(|o| IpAddr::V4(Ipv4Addr::from(o)))
            .collect();
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            addrs.push(IpAddr::V4(Ipv4Addr::from(x)));
        }
        addrs.push("2001:db8::1".parse().unwrap());
        addrs.push("::1".parse().unwrap());
        for ip in addrs {
            let addr = ClientAddr::new(ip);
            assert_eq!(addr.text(), addr.to_string());
        }
    }

    #[test]
    fn address_keys_sort_as_addresses_and_fall_in_their_blocks() {
        let key = |t: &str| ip_key(t).unwrap();
        assert_eq!(
            key("10.1.2.3"),
            key("::ffff:10.1.2.3"),
            "mapped IPv4 is IPv4"
        );
        assert!(key("10.1.2.3") < key("10.1.2.10") && key("9.255.255.255") < key("10.0.0.0"));
        assert_eq!(ip_key(""), None);
        assert_eq!(ip_key("not an address"), None);
        let set = AddrSet::parse(["10.1.0.0/16", "2001:db8::/32"]).unwrap();
        let ranges = set.key_ranges();
        let within = |t: &str| ranges.iter().any(|(lo, hi)| (lo..=hi).contains(&&key(t)));
        for (addr, inside) in [
            ("10.1.0.0", true),
            ("10.1.255.255", true),
            ("::ffff:10.1.7.7", true),
            ("10.2.0.0", false),
            ("10.0.255.255", false),
            ("2001:db8:ffff::1", true),
            ("2001:db9::", false),
        ] {
            assert_eq!(within(addr), inside, "{addr}");
            assert_eq!(set.contains_ip(addr.parse().unwrap()), inside, "{addr}");
        }
    }

    #[test]
    fn hosts() {
        for ok in [
            "portal.example.com",
            "portal.example.com:8443",
            "127.0.0.1",
            "127.0.0.1:8080",
            "[::1]",
            "[2001:db8::1]:443",
            "intranet",
            "my_host",
        ] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in [
            "",
            ":80",
            "host:",
            "host:abc",
            "host:123456",
            "evil.example/x",
            "user@evil.example",
            "a b",
            "[::1",
            "[nonsense]",
            "host:80:80",
            "ho\"st",
            "ho<st",
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
    }

    fn set(entries: &[&str]) -> AddrSet {
        AddrSet::parse(entries.iter().copied()).unwrap()
    }

    fn addr(s: &str) -> ClientAddr {
        ClientAddr::new(s.parse().unwrap())
    }

    #[test]
    fn entry_syntax() {
        let cases: [(&str, bool); 16] = [
            ("10.1.2.3", true),
            ("192.168.0.0/16", true),
            ("203.0.113.10-203.0.113.20", true),
            (" 203.0.113.10 - 203.0.113.20 ", true),
            ("2001:db8::/32", true),
            ("2001:db8::1-2001:db8::ff", true),
            ("::ffff:10.0.0.0/104", true),
            ("::1", true),
            ("10.0.0.300", false),
            ("10.0.0.0/33", false),
            ("10.0.0.1/8", false),
            ("10.0.0.9-10.0.0.1", false),
            ("10.0.0.1-::1", false),
            ("example.com", false),
            ("", false),
            ("10.0.0.0/", false),
        ];
        for (entry, ok) in cases {
            assert_eq!(
                parse_entry(entry).is_ok(),
                ok,
                "{entry:?}: {:?}",
                parse_entry(entry)
            );
        }
        assert!(
            parse_entry("10.0.0.1/8")
                .unwrap_err()
                .contains("did you mean 10.0.0.0/8")
        );
    }

    #[test]
    fn matching_table() {
        let s = set(&[
            "192.168.0.0/16",
            "10.1.2.3",
            "203.0.113.10-203.0.113.20",
            "2001:db8::/32",
        ]);
        let cases = [
            ("192.168.0.0", true),
            ("192.168.255.255", true),
            ("192.169.0.0", false),
            ("192.167.255.255", false),
            ("10.1.2.3", true),
            ("10.1.2.4", false),
            ("203.0.113.9", false),
            ("203.0.113.10", true),
            ("203.0.113.20", true),
            ("203.0.113.21", false),
            ("::ffff:203.0.113.15", true),
            ("::ffff:192.168.1.1", true),
            ("2001:db8:ffff::1", true),
            ("2001:db9::", false),
            ("::1", false),
        ];
        for (ip, want) in cases {
            assert_eq!(s.contains(&addr(ip)), want, "{ip}");
        }
    }

    #[test]
    fn overlapping_and_adjacent_ranges_merge() {
        let s = set(&[
            "10.0.0.0-10.0.0.9",
            "10.0.0.10-10.0.0.20",
            "10.0.0.5/32",
            "10.0.0.15-10.0.0.30",
        ]);
        assert_eq!(s.v4.len(), 1);
        assert!(s.contains(&addr("10.0.0.30")) && !s.contains(&addr("10.0.0.31")));
        let full = set(&["0.0.0.0/0", "255.255.255.255"]);
        assert!(full.contains(&addr("255.255.255.255")));
    }

    #[test]
    fn errors_carry_the_index_of_the_entry() {
        let errs = AddrSet::parse(["10.0.0.1", "nope", "10.0.0.0/8", "1.2.3.4/40"]).unwrap_err();
        assert_eq!(errs.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![1, 3]);
    }
}
