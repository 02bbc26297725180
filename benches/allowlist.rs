//! Allowlist matching with 10 000 and with 100 000 ranges: the interval set against a linear scan
//! of the same ranges, side by side, and parsing them (what a reload does). The set's cost per
//! lookup must grow with the logarithm of the ranges, the scan's grows tenfold. Run with
//! `cargo bench --bench allowlist`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::core::addr::PeerAddr;
use portcullis::core::addr::{AddrSet, ClientAddr};
use portcullis::policy::network::{Forwarding, resolve};

/// The public way to a `ClientAddr`: resolution of a direct, untrusted peer.
fn client(ip: IpAddr) -> ClientAddr {
    resolve(PeerAddr(ip), &AddrSet::default(), Forwarding::default())
}

/// A deterministic spread of `n` entries: /24 blocks, single addresses and short ranges.
fn entries(n: usize) -> Vec<String> {
    let mut x: u32 = 0x9E37_79B9;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let base = Ipv4Addr::from(x & 0xFFFF_FF00);
            match i % 3 {
                0 => format!("{base}/24"),
                1 => Ipv4Addr::from(x).to_string(),
                _ => format!(
                    "{}-{}",
                    Ipv4Addr::from(x),
                    Ipv4Addr::from(x.saturating_add(40))
                ),
            }
        })
        .collect()
}

fn linear(entries: &[String]) -> Vec<(u32, u32)> {
    entries
        .iter()
        .map(|e| {
            if let Some((net, len)) = e.split_once('/') {
                let lo = u32::from(net.parse::<Ipv4Addr>().unwrap());
                let len: u32 = len.parse().unwrap();
                (lo, lo | (u32::MAX >> len))
            } else if let Some((a, b)) = e.split_once('-') {
                (
                    u32::from(a.parse::<Ipv4Addr>().unwrap()),
                    u32::from(b.parse::<Ipv4Addr>().unwrap()),
                )
            } else {
                let a = u32::from(e.parse::<Ipv4Addr>().unwrap());
                (a, a)
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    for n in [10_000, 100_000] {
        bench_ranges(c, n);
    }
}

fn bench_ranges(c: &mut Criterion, n: usize) {
    let list = entries(n);
    let set = AddrSet::parse(list.iter().map(String::as_str)).unwrap();
    let scan = linear(&list);
    let probes: Vec<ClientAddr> = (0..64u32)
        .map(|i| {
            client(IpAddr::V4(Ipv4Addr::from(
                i.wrapping_mul(0x0101_0101).rotate_left(i),
            )))
        })
        .collect();
    // Same answers, or the comparison means nothing.
    for p in &probes {
        let IpAddr::V4(v4) = p.ip() else {
            unreachable!()
        };
        let x = u32::from(v4);
        assert_eq!(
            set.contains(p),
            scan.iter().any(|&(lo, hi)| lo <= x && x <= hi)
        );
    }
    let mut g = c.benchmark_group(format!("allowlist {}k ranges, 64 lookups", n / 1000));
    g.bench_function("interval set", |b| {
        b.iter(|| probes.iter().filter(|p| set.contains(black_box(p))).count())
    });
    g.bench_function("linear scan", |b| {
        b.iter(|| {
            probes
                .iter()
                .filter(|p| {
                    let IpAddr::V4(v4) = black_box(p.ip()) else {
                        return false;
                    };
                    let x = u32::from(v4);
                    scan.iter().any(|&(lo, hi)| lo <= x && x <= hi)
                })
                .count()
        })
    });
    g.finish();
    c.bench_function(&format!("parse {}k entries", n / 1000), |b| {
        b.iter(|| AddrSet::parse(black_box(&list).iter().map(String::as_str)).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
