//! Property tests: random sequences of operations against random small pools,
//! checked after every step against a brute-force model.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_provider_api::{IpFamily, Protocol, ServiceKey};
use proptest::prelude::*;

use super::testutil::{key, label_selector};
use super::{AddrRange, Allocation, Allocator, Pool, Request, Sharing};

/// The address universe: 10.0.0.248-10.0.1.15 (crossing .255 and .0) and
/// fd00::-fd00::f.
const V4_BASE: u32 = 0x0a00_00f8;
const V4_LEN: u32 = 24;
const V6_LEN: u32 = 16;
const SERVICES: usize = 6;

fn addr(family: IpFamily, offset: u32) -> IpAddr {
    match family {
        IpFamily::V4 => IpAddr::from((V4_BASE + offset % V4_LEN).to_be_bytes()),
        IpFamily::V6 => IpAddr::from(std::net::Ipv6Addr::from(
            (0xfd00_u128 << 112) + u128::from(offset % V6_LEN),
        )),
    }
}

fn universe() -> Vec<IpAddr> {
    (0..V4_LEN)
        .map(|o| addr(IpFamily::V4, o))
        .chain((0..V6_LEN).map(|o| addr(IpFamily::V6, o)))
        .collect()
}

fn buggy(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V4(a) if matches!(a.octets()[3], 0 | 255))
}

fn service(i: usize) -> ServiceKey {
    key(
        if i.is_multiple_of(2) { "n1" } else { "n2" },
        &format!("s{i}"),
    )
}

fn family() -> impl Strategy<Value = IpFamily> {
    prop_oneof![Just(IpFamily::V4), Just(IpFamily::V6)]
}

fn range() -> impl Strategy<Value = AddrRange> {
    (family(), 0u32..V4_LEN, 0u32..8).prop_map(|(f, start, len)| {
        let max = if f == IpFamily::V4 { V4_LEN } else { V6_LEN } - 1;
        let start = start.min(max);
        AddrRange::new(addr(f, start), addr(f, (start + len).min(max))).unwrap()
    })
}

fn pools() -> impl Strategy<Value = Vec<Pool>> {
    let pool = (
        0usize..4,
        prop::collection::vec(range(), 1..3),
        prop::bool::weighted(0.8),
        any::<bool>(),
        prop_oneof![
            Just(vec![]),
            Just(vec!["n1".to_string()]),
            Just(vec!["n2".to_string()])
        ],
        prop::bool::weighted(0.25),
        prop::option::of(0i32..3),
    )
        .prop_map(
            |(n, ranges, auto_assign, avoid_buggy_ips, namespaces, select, priority)| Pool {
                name: format!("p{n}"),
                ranges,
                auto_assign,
                avoid_buggy_ips,
                namespaces,
                service_selectors: if select {
                    vec![label_selector("tier", "a")]
                } else {
                    vec![]
                },
                priority,
            },
        );
    prop::collection::vec(pool, 0..4)
}

fn request() -> impl Strategy<Value = Request> {
    let families = prop_oneof![
        Just(vec![IpFamily::V4]),
        Just(vec![IpFamily::V6]),
        Just(vec![IpFamily::V4, IpFamily::V6]),
        Just(vec![IpFamily::V6, IpFamily::V4]),
    ];
    let ports = prop::sample::subsequence(
        vec![
            (Protocol::Tcp, 80),
            (Protocol::Tcp, 443),
            (Protocol::Udp, 80),
        ],
        0..3,
    );
    let sharing = prop::option::weighted(
        0.6,
        (
            prop_oneof![Just("k1"), Just("k2")],
            ports,
            prop::bool::weighted(0.2),
        )
            .prop_map(|(k, ports, other)| Sharing {
                key: k.into(),
                ports,
                backend: if other { "x".into() } else { String::new() },
            }),
    );
    (
        0..SERVICES,
        any::<bool>(),
        families,
        any::<bool>(),
        prop::option::weighted(0.3, (any::<bool>(), 0u32..V4_LEN)),
        prop::option::weighted(0.2, 0usize..5),
        sharing,
    )
        .prop_map(
            |(svc, tier_a, families, require_all, explicit, pool, sharing)| Request {
                service: service(svc),
                labels: BTreeMap::from([("tier".into(), if tier_a { "a" } else { "b" }.into())]),
                addresses: explicit
                    .map(|(primary, off)| {
                        addr(
                            if primary {
                                families[0]
                            } else {
                                *families.last().unwrap()
                            },
                            off,
                        )
                    })
                    .into_iter()
                    .collect(),
                families,
                require_all,
                pool: pool.map(|p| format!("p{p}")),
                sharing,
            },
        )
}

#[derive(Clone, Debug)]
enum Op {
    Assign(Request),
    Release(usize),
    SetPools(Vec<Pool>),
    Restore(Request, Vec<u32>),
    /// The Service's status now shows what it holds.
    Published(usize),
    /// The Service's last granted request again (a resync, a port-less
    /// edit): it keeps every address it has.
    Again(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => request().prop_map(Op::Assign),
        2 => (0..SERVICES).prop_map(Op::Release),
        1 => pools().prop_map(Op::SetPools),
        1 => (request(), prop::collection::vec(0u32..V4_LEN + V6_LEN, 0..3)).prop_map(|(r, o)| Op::Restore(r, o)),
        3 => (0..SERVICES).prop_map(Op::Published),
        2 => (0..SERVICES).prop_map(Op::Again),
    ]
}

/// What the allocator should hold, kept by the test.
#[derive(Default)]
struct Model {
    pools: Vec<Pool>,
    held: BTreeMap<ServiceKey, (Allocation, Option<Sharing>)>,
    /// Addresses a Service moved away from, not yet published.
    leaving: BTreeMap<ServiceKey, Vec<(IpAddr, Option<Sharing>)>>,
    /// The request each Service's allocation was last granted for.
    granted: BTreeMap<ServiceKey, Request>,
}

impl Model {
    /// The pools in effect (the first of each name).
    fn live_pools(&self) -> Vec<&Pool> {
        let mut seen = BTreeSet::new();
        self.pools
            .iter()
            .filter(|p| seen.insert(p.name.clone()))
            .collect()
    }

    /// Who holds `ip`, with the sharing each holds it under: current
    /// holders and leaving ones.
    fn holders_with(&self, ip: &IpAddr) -> BTreeMap<ServiceKey, Option<Sharing>> {
        let current = self
            .held
            .iter()
            .filter(|(_, (a, _))| a.addresses.contains(ip))
            .map(|(k, (_, s))| (k.clone(), s.clone()));
        let leaving = self.leaving.iter().filter_map(|(k, l)| {
            l.iter()
                .find(|(l, _)| l == ip)
                .map(|(_, s)| (k.clone(), s.clone()))
        });
        current.chain(leaving).collect()
    }

    fn holders(&self, ip: &IpAddr) -> Vec<ServiceKey> {
        self.holders_with(ip).into_keys().collect()
    }

    /// What `assign` does with a Service's old addresses.
    fn moved(&mut self, service: &ServiceKey, to: &Allocation) {
        let mut leaving = self.leaving.remove(service).unwrap_or_default();
        if let Some((old, sharing)) = self.held.get(service) {
            for ip in &old.addresses {
                if !to.addresses.contains(ip) && !leaving.iter().any(|(l, _)| l == ip) {
                    leaving.push((*ip, sharing.clone()));
                }
            }
        }
        leaving.retain(|(ip, _)| !to.addresses.contains(ip));
        if !leaving.is_empty() {
            self.leaving.insert(service.clone(), leaving);
        }
    }
}

fn may_share(a: &Option<Sharing>, b: &Option<Sharing>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            a.key == b.key && a.backend == b.backend && a.ports.iter().all(|p| !b.ports.contains(p))
        }
        _ => false,
    }
}

fn check(a: &Allocator, m: &Model) -> Result<(), TestCaseError> {
    for i in 0..SERVICES {
        let svc = service(i);
        prop_assert_eq!(
            a.allocation(&svc),
            m.held.get(&svc).map(|(al, _)| al),
            "allocation of {}",
            svc
        );
    }
    for ip in universe() {
        let holders: Vec<_> = m.holders_with(&ip).into_iter().collect();
        prop_assert_eq!(a.holders(&ip), m.holders(&ip), "holders of {}", ip);
        for (i, (x, xs)) in holders.iter().enumerate() {
            for (y, ys) in &holders[i + 1..] {
                prop_assert!(
                    may_share(xs, ys),
                    "{} and {} share {} against the rules",
                    x,
                    y,
                    ip
                );
            }
        }
    }
    for (svc, leaving) in &m.leaving {
        prop_assert_eq!(
            a.leaving(svc),
            leaving.iter().map(|(ip, _)| *ip).collect::<Vec<_>>(),
            "leaving of {}",
            svc
        );
    }
    let held: BTreeSet<IpAddr> = m
        .held
        .values()
        .flat_map(|(al, _)| al.addresses.iter().copied())
        .chain(m.leaving.values().flatten().map(|(ip, _)| *ip))
        .collect();
    for pool in m.live_pools() {
        let inside = |ip: &IpAddr| pool.ranges.iter().any(|r| r.contains(ip));
        let count = |f: IpFamily, pred: &dyn Fn(&IpAddr) -> bool| {
            universe()
                .iter()
                .filter(|ip| IpFamily::of(ip) == f && inside(ip) && pred(ip))
                .count() as u64
        };
        let free = |ip: &IpAddr| !(held.contains(ip) || pool.avoid_buggy_ips && buggy(ip));
        let usage = a.usage(&pool.name).expect("a live pool has usage");
        prop_assert_eq!(
            usage.assigned_v4,
            count(IpFamily::V4, &|ip| held.contains(ip)),
            "{}",
            pool.name
        );
        prop_assert_eq!(
            usage.assigned_v6,
            count(IpFamily::V6, &|ip| held.contains(ip)),
            "{}",
            pool.name
        );
        prop_assert_eq!(
            usage.available_v4,
            count(IpFamily::V4, &free),
            "{}",
            pool.name
        );
        prop_assert_eq!(
            usage.available_v6,
            count(IpFamily::V6, &free),
            "{}",
            pool.name
        );
    }
    Ok(())
}

/// Every address `assign` newly handed out is in a pool the Service may use.
fn check_new_addresses(
    m: &Model,
    req: &Request,
    before: Option<&Allocation>,
    after: &Allocation,
) -> Result<(), TestCaseError> {
    let fresh = before.is_none() && req.addresses.is_empty() && req.pool.is_none();
    for ip in after
        .addresses
        .iter()
        .filter(|ip| before.is_none_or(|b| !b.addresses.contains(ip)))
    {
        let ok = m.live_pools().into_iter().any(|p| {
            p.ranges.iter().any(|r| r.contains(ip))
                && p.allows(&req.service, &req.labels).is_ok()
                && !(p.avoid_buggy_ips && buggy(ip))
                && req.pool.as_ref().is_none_or(|n| *n == p.name)
                && (!fresh || p.auto_assign)
        });
        prop_assert!(ok, "{} handed {} from no pool it may use", req.service, ip);
        if let Some(want) = req
            .addresses
            .iter()
            .find(|a| IpFamily::of(a) == IpFamily::of(ip))
        {
            prop_assert_eq!(want, ip);
        }
    }
    Ok(())
}

/// After a release, each freed address can be had again through its pool.
fn check_freed(a: &Allocator, m: &Model, freed: &[IpAddr]) -> Result<(), TestCaseError> {
    for ip in freed.iter().filter(|ip| m.holders(ip).is_empty()) {
        let probe = Request {
            service: key("probe", "p"),
            labels: BTreeMap::new(),
            families: vec![IpFamily::of(ip)],
            require_all: false,
            addresses: vec![*ip],
            pool: None,
            sharing: None,
        };
        let usable = m.live_pools().into_iter().find(|p| {
            p.ranges.iter().any(|r| r.contains(ip))
                && p.namespaces.is_empty()
                && p.service_selectors.is_empty()
                && !(p.avoid_buggy_ips && buggy(ip))
        });
        if let Some(p) = usable {
            let probe = Request {
                pool: Some(p.name.clone()),
                ..probe
            };
            let got = a.clone().assign(&probe);
            prop_assert_eq!(
                got.map(|al| al.addresses),
                Ok(vec![*ip]),
                "freed {} is not available",
                ip
            );
        }
    }
    Ok(())
}

proptest! {
    // Failures are not persisted to a file: found cases become table tests.
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_every_invariant(initial in pools(), ops in prop::collection::vec(op(), 1..40)) {
        let mut a = Allocator::new();
        let mut m = Model::default();
        a.set_pools(initial.clone());
        m.pools = initial;
        check(&a, &m)?;
        for op in ops {
            match op {
                Op::Assign(req) => {
                    let before = m.held.get(&req.service).map(|(al, _)| al.clone());
                    match a.assign(&req) {
                        Ok(al) => {
                            check_new_addresses(&m, &req, before.as_ref(), &al)?;
                            prop_assert!(!al.addresses.is_empty());
                            prop_assert_eq!(al.addresses.iter().map(IpFamily::of).next(), Some(req.families[0]));
                            for ip in al.addresses.iter().filter(|ip| before.as_ref().is_none_or(|b| !b.addresses.contains(ip))) {
                                let others = m.holders(ip).into_iter().filter(|h| *h != req.service);
                                let current = others.clone().any(|h| m.held.get(&h).is_some_and(|(b, _)| b.addresses.contains(ip)));
                                prop_assert!(current || others.count() == 0, "{} got {}, which only leaving Services hold", req.service, ip);
                            }
                            m.moved(&req.service, &al);
                            m.granted.insert(req.service.clone(), req.clone());
                            m.held.insert(req.service.clone(), (al.clone(), req.sharing.clone()));
                            prop_assert_eq!(a.assign(&req), Ok(al), "assign is idempotent");
                        }
                        Err(_) => prop_assert_eq!(a.allocation(&req.service), before.as_ref()),
                    }
                }
                Op::Release(i) => {
                    let mut freed = m.held.remove(&service(i)).map(|(al, _)| al.addresses).unwrap_or_default();
                    let was_held = !freed.is_empty();
                    m.granted.remove(&service(i));
                    freed.extend(m.leaving.remove(&service(i)).unwrap_or_default().into_iter().map(|(ip, _)| ip));
                    prop_assert_eq!(a.release(&service(i)), was_held);
                    check_freed(&a, &m, &freed)?;
                }
                Op::Again(i) => {
                    let Some(req) = m.granted.get(&service(i)).cloned() else {
                        continue;
                    };
                    let before = m.held[&req.service].0.clone();
                    let al = a.assign(&req);
                    prop_assert!(al.is_ok(), "{} lost what it was granted: {:?}", req.service, al);
                    let al = al.unwrap();
                    for ip in &before.addresses {
                        prop_assert!(al.addresses.contains(ip), "{} moved off {} with its request unchanged", req.service, ip);
                    }
                    m.moved(&req.service, &al);
                    m.held.insert(req.service.clone(), (al, req.sharing.clone()));
                }
                Op::Published(i) => {
                    let shown = m.held.get(&service(i)).map(|(al, _)| al.addresses.clone());
                    let freed: Vec<IpAddr> = match &shown {
                        Some(_) => m.leaving.remove(&service(i)).unwrap_or_default().into_iter().map(|(ip, _)| ip).collect(),
                        None => Vec::new(),
                    };
                    prop_assert_eq!(a.published(&service(i), &shown.unwrap_or_default()), !freed.is_empty());
                    check_freed(&a, &m, &freed)?;
                }
                Op::SetPools(pools) => {
                    a.set_pools(pools.clone());
                    m.pools = pools;
                }
                Op::Restore(req, offsets) => {
                    let ips: Vec<IpAddr> = offsets.iter().map(|&o| universe()[o as usize]).collect();
                    let before = m.held.get(&req.service).map(|(al, _)| al.clone());
                    let restored = a.restore(&req, &ips);
                    if restored.is_ok() {
                        // Held now as restored, not as granted.
                        m.granted.remove(&req.service);
                    }
                    match restored {
                        Ok(al) if al.addresses.is_empty() => {
                            m.held.remove(&req.service);
                            m.leaving.remove(&req.service);
                        }
                        Ok(al) => {
                            m.leaving.remove(&req.service);
                            let got: BTreeSet<_> = al.addresses.iter().collect();
                            prop_assert_eq!(got, ips.iter().collect::<BTreeSet<_>>());
                            m.held.insert(req.service.clone(), (al, req.sharing.clone()));
                        }
                        Err(_) => prop_assert_eq!(a.allocation(&req.service), before.as_ref()),
                    }
                }
            }
            check(&a, &m)?;
        }
    }
}
