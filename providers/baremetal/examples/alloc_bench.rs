//! Allocation cost per Service: ferrolb's allocator against a first-free linear
//! scan of the pool (how MetalLB picks an address), measured in the same
//! process on the same machine. Prints a Markdown table.
//!
//! ```text
//! cargo run --release -p ferrolb-baremetal --example alloc_bench
//! ```

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ferrolb_baremetal::allocator::{AddrRange, Allocator, Pool, Request};
use ferrolb_provider_api::{IpFamily, ServiceKey};

/// The baseline: walk the pool from its first address and take the first one
/// nobody holds.
struct LinearScan {
    start: u32,
    len: u32,
    used: HashSet<u32>,
}

impl LinearScan {
    fn assign(&mut self) -> Option<u32> {
        let ip = (self.start..self.start + self.len).find(|ip| !self.used.contains(ip))?;
        self.used.insert(ip);
        Some(ip)
    }
}

fn request(i: usize) -> Request {
    Request {
        service: ServiceKey::new("bench", format!("svc-{i}")),
        labels: BTreeMap::new(),
        families: vec![IpFamily::V4],
        require_all: true,
        addresses: Vec::new(),
        pool: None,
        sharing: None,
    }
}

/// Times `n` allocations; returns (mean per Service, mean over the last 1,000).
fn time_each(n: usize, mut one: impl FnMut(usize)) -> (Duration, Duration) {
    let tail_from = n.saturating_sub(1000);
    let started = Instant::now();
    let mut tail_started = started;
    for i in 0..n {
        if i == tail_from {
            tail_started = Instant::now();
        }
        one(i);
    }
    let total = started.elapsed();
    let tail = tail_started.elapsed();
    (total / n as u32, tail / (n - tail_from) as u32)
}

fn us(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e6)
}

fn main() {
    println!(
        "| pool | Services | ferrolb µs/Service (all) | ferrolb µs/Service (last 1k) | linear scan µs/Service (all) | linear scan µs/Service (last 1k) |"
    );
    println!("|---|---|---|---|---|---|");
    for (cidr, services, baseline) in [
        ("10.0.0.0/16", 1_000usize, true),
        ("10.0.0.0/16", 10_000, true),
        ("10.0.0.0/16", 50_000, true),
        ("10.0.0.0/8", 100_000, false),
    ] {
        let range = AddrRange::parse(cidr).expect("valid CIDR");
        let mut allocator = Allocator::new();
        allocator.set_pools(vec![Pool {
            name: "bench".into(),
            ranges: vec![range],
            auto_assign: true,
            avoid_buggy_ips: false,
            namespaces: Vec::new(),
            service_selectors: Vec::new(),
            priority: None,
        }]);
        let requests: Vec<Request> = (0..services).map(request).collect();
        let (ours_all, ours_tail) = time_each(services, |i| {
            allocator
                .assign(&requests[i])
                .expect("pool is large enough");
        });

        let (scan_all, scan_tail) = if baseline {
            let IpAddr::V4(start) = range.start() else {
                unreachable!()
            };
            let mut scan = LinearScan {
                start: u32::from(start),
                len: u32::try_from(range.len()).unwrap_or(u32::MAX),
                used: HashSet::new(),
            };
            let r = time_each(services, |_| {
                std::hint::black_box(scan.assign().map(Ipv4Addr::from));
            });
            (us(r.0), us(r.1))
        } else {
            ("(skipped: quadratic)".to_string(), "".to_string())
        };
        println!(
            "| {cidr} | {services} | {} | {} | {scan_all} | {scan_tail} |",
            us(ours_all),
            us(ours_tail)
        );
    }
}
