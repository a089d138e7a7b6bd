//! Table tests of `assign`, `restore`, `release` and `set_pools`.

use ferrolb_provider_api::IpFamily::{V4, V6};

use super::testutil::*;
use super::{AllocError, Allocator, Denial, Pool, PoolUsage, Record};

#[test]
fn pools_are_tried_by_priority_then_name() {
    let mut a = allocator(vec![
        pool("c-none", &["10.0.3.1"]),
        Pool {
            priority: Some(5),
            ..pool("a-five", &["10.0.2.1"])
        },
        Pool {
            priority: Some(1),
            ..pool("d-one", &["10.0.1.1"])
        },
        Pool {
            priority: Some(1),
            ..pool("b-one", &["10.0.0.1"])
        },
        Pool {
            priority: Some(-3),
            ..pool("e-minus", &["10.0.4.1"])
        },
        pool("a-none", &["10.0.5.1"]),
    ]);
    let got: Vec<String> = (0..7)
        .map(|i| try_assign(&mut a, &req("ns", &format!("s{i}"))))
        .collect();
    assert_eq!(
        got,
        vec![
            "10.0.4.1@e-minus",
            "10.0.0.1@b-one",
            "10.0.1.1@d-one",
            "10.0.2.1@a-five",
            "10.0.5.1@a-none",
            "10.0.3.1@c-none",
            "error: no free IPv4 address left in pools e-minus, b-one, d-one, a-five, a-none, c-none; add addresses to one of them or free some",
        ]
    );
}

#[test]
fn namespaces_and_selectors_pick_the_pool() {
    let mut a = allocator(vec![
        Pool {
            priority: Some(1),
            namespaces: vec!["prod".into()],
            ..pool("prod", &["10.0.0.1"])
        },
        Pool {
            priority: Some(2),
            service_selectors: vec![label_selector("tier", "web")],
            ..pool("web", &["10.0.1.1"])
        },
        Pool {
            priority: Some(3),
            ..pool("any", &["10.0.2.0/30"])
        },
    ]);
    let mut web = req("dev", "web");
    web.labels.insert("tier".into(), "web".into());
    assert_eq!(try_assign(&mut a, &req("dev", "plain")), "10.0.2.0@any");
    assert_eq!(try_assign(&mut a, &web), "10.0.1.1@web");
    assert_eq!(try_assign(&mut a, &req("prod", "p")), "10.0.0.1@prod");
    assert_eq!(
        try_assign(&mut a, &req("prod", "q")),
        "10.0.2.1@any",
        "prod is full, any serves everyone"
    );
}

#[test]
fn auto_assign_false_pools_serve_only_who_names_them() {
    let manual = Pool {
        auto_assign: false,
        priority: Some(0),
        ..pool("manual", &["10.0.9.0/31"])
    };
    let mut a = allocator(vec![manual.clone(), pool("auto", &["10.0.0.1"])]);
    assert_eq!(try_assign(&mut a, &req("ns", "s1")), "10.0.0.1@auto");
    assert_eq!(
        try_assign(&mut a, &req("ns", "s2")),
        "error: no free IPv4 address left in pool auto; add addresses to it or free some"
    );
    let mut by_pool = req("ns", "s3");
    by_pool.pool = Some("manual".into());
    assert_eq!(try_assign(&mut a, &by_pool), "10.0.9.0@manual");
    let mut by_address = req("ns", "s4");
    by_address.addresses = vec![ip("10.0.9.1")];
    assert_eq!(try_assign(&mut a, &by_address), "10.0.9.1@manual");

    let mut only_manual = allocator(vec![manual]);
    assert_eq!(
        try_assign(&mut only_manual, &req("ns", "s")),
        "error: no IPPool with autoAssign serves this Service (pool manual: it has autoAssign: false, so it serves only Services that name the pool or one of its addresses); name a pool, or change a pool's autoAssign or serviceAllocation"
    );
    assert_eq!(
        try_assign(&mut Allocator::new(), &req("ns", "s")),
        "error: there is no IPPool; create one to give LoadBalancer Services addresses"
    );
}

#[test]
fn avoid_buggy_ips_skips_dot_zero_and_dot_255() {
    let buggy = Pool {
        avoid_buggy_ips: true,
        ..pool("b", &["10.0.0.254-10.0.1.1"])
    };
    let mut a = allocator(vec![buggy]);
    assert_eq!(
        a.usage("b"),
        Some(PoolUsage {
            assigned_v4: 0,
            assigned_v6: 0,
            available_v4: 2,
            available_v6: 0
        })
    );
    let mut explicit = req("ns", "x");
    explicit.addresses = vec![ip("10.0.0.255")];
    assert_eq!(
        try_assign(&mut a, &explicit),
        "error: requested address 10.0.0.255 cannot be given to this Service: pool b: it has avoidBuggyIPs: true and the address ends in .0 or .255"
    );
    let got: Vec<String> = (0..3)
        .map(|i| try_assign(&mut a, &req("ns", &format!("s{i}"))))
        .collect();
    assert_eq!(got[..2], ["10.0.0.254@b", "10.0.1.1@b"]);
    assert!(got[2].starts_with("error: no free IPv4 address left in pool b"));

    let mut plain = allocator(vec![pool("p", &["10.0.0.254-10.0.1.1"])]);
    let got: Vec<String> = (0..4)
        .map(|i| try_assign(&mut plain, &req("ns", &format!("s{i}"))))
        .collect();
    assert_eq!(
        got,
        ["10.0.0.254@p", "10.0.0.255@p", "10.0.1.0@p", "10.0.1.1@p"]
    );
}

type ExplicitCase = (
    &'static str,
    Vec<&'static str>,
    Option<&'static str>,
    Vec<ferrolb_provider_api::IpFamily>,
    &'static str,
);

#[test]
fn explicit_addresses() {
    let pools = vec![
        pool("open", &["10.0.0.0/29", "fd00::/125"]),
        Pool {
            namespaces: vec!["prod".into(), "stage".into()],
            ..pool("prod", &["10.0.1.0/29"])
        },
        Pool {
            service_selectors: vec![label_selector("tier", "web")],
            ..pool("web", &["10.0.2.0/29"])
        },
    ];
    // (case, requested addresses, requested pool, families, result)
    let cases: Vec<ExplicitCase> = vec![
        (
            "in a pool",
            vec!["10.0.0.5"],
            None,
            vec![V4],
            "10.0.0.5@open",
        ),
        (
            "dual-stack pair",
            vec!["fd00::3", "10.0.0.4"],
            None,
            vec![V4, V6],
            "10.0.0.4,fd00::3@open",
        ),
        (
            "in no pool",
            vec!["192.168.1.1"],
            None,
            vec![V4],
            "error: requested address 192.168.1.1 is not in any IPPool; add it to a pool or ask for an address from one",
        ),
        (
            "namespace not allowed",
            vec!["10.0.1.2"],
            None,
            vec![V4],
            "error: requested address 10.0.1.2 cannot be given to this Service: pool prod: namespace \"dev\" is not in its serviceAllocation.namespaces (prod, stage)",
        ),
        (
            "selectors do not match",
            vec!["10.0.2.2"],
            None,
            vec![V4],
            "error: requested address 10.0.2.2 cannot be given to this Service: pool web: the Service's labels match none of its serviceAllocation.serviceSelectors",
        ),
        (
            "wrong family",
            vec!["10.0.0.5"],
            None,
            vec![V6],
            "error: requested address 10.0.0.5 is IPv4 but the Service's spec.ipFamilies is [IPv6]",
        ),
        (
            "two of one family",
            vec!["10.0.0.5", "10.0.0.6"],
            None,
            vec![V4],
            "error: the Service asks for more than one IPv4 address (10.0.0.5, 10.0.0.6); ask for at most one per family",
        ),
        (
            "not in the requested pool",
            vec!["10.0.1.2"],
            Some("open"),
            vec![V4],
            "error: requested address 10.0.1.2 is not in the requested pool open; ask for an address from that pool or drop one of the two requests",
        ),
        (
            "in the requested pool",
            vec!["10.0.0.5"],
            Some("open"),
            vec![V4],
            "10.0.0.5@open",
        ),
        (
            "requested pool missing",
            vec!["10.0.0.5"],
            Some("gone"),
            vec![V4],
            "error: requested pool gone does not exist",
        ),
        (
            "already used",
            vec!["10.0.0.1"],
            None,
            vec![V4],
            "error: address 10.0.0.1 is already used by Service dev/holder and cannot be shared: this Service has no sharing key; to share the address, give both Services the same sharing key and different ports",
        ),
    ];
    for (name, addresses, pool_name, families, want) in cases {
        let mut a = allocator(pools.clone());
        let mut holder = req("dev", "holder");
        holder.addresses = vec![ip("10.0.0.1")];
        a.assign(&holder).unwrap();
        let mut r = req("dev", "s");
        r.addresses = addresses.iter().map(|s| ip(s)).collect();
        r.pool = pool_name.map(Into::into);
        r.families = families;
        assert_eq!(try_assign(&mut a, &r), want, "{name}");
        if want.starts_with("error") {
            assert_eq!(a.allocation(&r.service), None, "{name}");
        }
    }
}

#[test]
fn requested_pool() {
    let mut a = allocator(vec![
        Pool {
            priority: Some(1),
            ..pool("first", &["10.0.0.1"])
        },
        Pool {
            namespaces: vec!["prod".into()],
            ..pool("prod", &["10.0.1.1"])
        },
        pool("second", &["10.0.2.1"]),
    ]);
    let mut r = req("dev", "s");
    r.pool = Some("second".into());
    assert_eq!(try_assign(&mut a, &r), "10.0.2.1@second");
    let mut r2 = req("dev", "t");
    r2.pool = Some("second".into());
    assert_eq!(
        try_assign(&mut a, &r2),
        "error: no free IPv4 address left in pool second; add addresses to it or free some",
        "the requested pool is the only one tried"
    );
    r2.pool = Some("prod".into());
    assert_eq!(
        try_assign(&mut a, &r2),
        "error: requested pool prod does not serve this Service: namespace \"dev\" is not in its serviceAllocation.namespaces (prod)"
    );
    r2.pool = Some("nope".into());
    assert_eq!(
        try_assign(&mut a, &r2),
        "error: requested pool nope does not exist"
    );
    assert_eq!(a.allocation(&r2.service), None);
}

#[test]
fn release_frees_and_the_address_is_reused() {
    let mut a = allocator(vec![pool("p", &["10.0.0.0/30", "fd00::/127"])]);
    for i in 0..3 {
        a.assign(&req("ns", &format!("s{i}"))).unwrap();
    }
    let mut dual = req("ns", "dual");
    dual.families = vec![V6, V4];
    assert_eq!(try_assign(&mut a, &dual), "fd00::,10.0.0.3@p");
    assert_eq!(
        a.usage("p"),
        Some(PoolUsage {
            assigned_v4: 4,
            assigned_v6: 1,
            available_v4: 0,
            available_v6: 1
        })
    );
    assert!(a.release(&key("ns", "s1")));
    assert!(!a.release(&key("ns", "s1")), "releasing twice is a no-op");
    assert!(a.release(&key("ns", "dual")));
    assert_eq!(a.allocation(&key("ns", "s1")), None);
    assert_eq!(a.holders(&ip("10.0.0.1")), vec![]);
    assert_eq!(
        a.usage("p"),
        Some(PoolUsage {
            assigned_v4: 2,
            assigned_v6: 0,
            available_v4: 2,
            available_v6: 2
        })
    );
    assert_eq!(try_assign(&mut a, &req("ns", "new")), "10.0.0.1@p");
    assert_eq!(a.usage("nope"), None);
}

#[test]
fn assign_is_idempotent() {
    let mut a = allocator(vec![pool("p", &["10.0.0.0/29", "fd00::/125"])]);
    let mut r = req("ns", "s");
    r.families = vec![V4, V6];
    let first = a.assign(&r).unwrap();
    let usage = a.usage("p");
    for _ in 0..3 {
        assert_eq!(a.assign(&r).unwrap(), first);
    }
    assert_eq!(a.usage("p"), usage);
    assert_eq!(a.holders(&first.addresses[0]), vec![key("ns", "s")]);
}

#[test]
fn restored_addresses_are_kept_by_assign() {
    let mut a = allocator(vec![
        pool("p", &["10.0.0.0/29"]),
        Pool {
            priority: Some(1),
            ..pool("q", &["10.0.9.0/30"])
        },
    ]);
    let r = req("ns", "s");
    let restored = a.restore(&r, &[ip("10.0.0.5")]).unwrap();
    assert_eq!(show(&restored), "10.0.0.5@p");
    assert_eq!(
        try_assign(&mut a, &r),
        "10.0.0.5@p",
        "not moved to the lower, higher-priority free addresses"
    );
    // A restored address outside every pool stays too.
    let outside = req("ns", "outside");
    assert_eq!(
        show(&a.restore(&outside, &[ip("192.168.7.7")]).unwrap()),
        "192.168.7.7@"
    );
    assert_eq!(try_assign(&mut a, &outside), "192.168.7.7@");
    // The restored address is not handed out again.
    assert_eq!(a.usage("p").unwrap().assigned_v4, 1);
    let got: Vec<String> = (0..7)
        .map(|i| try_assign(&mut a, &req("ns", &format!("n{i}"))))
        .collect();
    assert!(!got.iter().any(|g| g.starts_with("10.0.0.5")), "{got:?}");
    // Restoring no address releases.
    assert_eq!(show(&a.restore(&r, &[]).unwrap()), "@");
    assert_eq!(a.allocation(&r.service), None);
}

#[test]
fn restore_conflict_records_nothing() {
    let mut a = allocator(vec![pool("p", &["10.0.0.0/29", "fd00::/125"])]);
    let holder = a.assign(&req("ns", "holder")).unwrap();
    let mut r = req("ns", "late");
    r.families = vec![V4, V6];
    let err = a
        .restore(&r, &[ip("fd00::5"), holder.addresses[0]])
        .unwrap_err();
    assert!(matches!(err, AllocError::AddressInUse { .. }));
    assert_eq!(a.allocation(&r.service), None);
    assert_eq!(a.holders(&ip("fd00::5")), vec![]);
    assert_eq!(a.holders(&holder.addresses[0]), vec![key("ns", "holder")]);
}

#[test]
fn restoring_an_address_two_services_show_keeps_it_where_the_request_still_wants_it() {
    // `moved` asked for 10.0.9.1 and got it in memory; the leader gave its
    // old 10.0.0.1 to `taker` and died before `moved`'s status changed.
    let pools = || vec![pool("p", &["10.0.0.0/29"]), pool("m", &["10.0.9.0/30"])];
    let mut moved = req("ns", "a-moved");
    moved.addresses = vec![ip("10.0.9.1")];
    let taker = req("ns", "b-taker");
    for order in [[0, 1], [1, 0]] {
        let mut a = allocator(pools());
        let both = [moved.clone(), taker.clone()];
        let results = a.restore_all(
            order
                .iter()
                .map(|&i| (both[i].clone(), vec![ip("10.0.0.1")], Record::Unknown))
                .collect(),
        );
        let failed: Vec<_> = results
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(failed, vec![key("ns", "a-moved")], "order {order:?}");
        assert_eq!(a.holders(&ip("10.0.0.1")), vec![key("ns", "b-taker")]);
        assert_eq!(try_assign(&mut a, &moved), "10.0.9.1@m");
    }

    // `left` dropped its sharing key and moved; `stays` joined the address
    // under the key. Without a key, sharing the address is not `left`'s.
    let mut a = allocator(pools());
    let left = req("ns", "a-left");
    let mut stays = req("ns", "b-stays");
    stays.sharing = Some(sharing("k", &[tcp(53)], "Cluster"));
    let mut first = req("ns", "c-first");
    first.sharing = Some(sharing("k", &[tcp(80)], "Cluster"));
    let results = a.restore_all(vec![
        (left.clone(), vec![ip("10.0.0.2")], Record::Unknown),
        (stays.clone(), vec![ip("10.0.0.2")], Record::Unknown),
        (first.clone(), vec![ip("10.0.0.2")], Record::Unknown),
    ]);
    let ok: Vec<_> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(k, _)| k.name.clone())
        .collect();
    assert_eq!(ok, ["b-stays", "c-first"]);
    assert_eq!(
        a.holders(&ip("10.0.0.2")),
        vec![key("ns", "b-stays"), key("ns", "c-first")]
    );

    // `switched` moved to key j; the two left under key k keep the address.
    let mut a = allocator(pools());
    let mut switched = req("ns", "a-switched");
    switched.sharing = Some(sharing("j", &[tcp(443)], "Cluster"));
    let results = a.restore_all(vec![
        (switched.clone(), vec![ip("10.0.0.3")], Record::Unknown),
        (stays.clone(), vec![ip("10.0.0.3")], Record::Unknown),
        (first.clone(), vec![ip("10.0.0.3")], Record::Unknown),
    ]);
    let failed: Vec<_> = results
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(k, _)| k.name.clone())
        .collect();
    assert_eq!(failed, ["a-switched"]);
}

#[test]
fn restoring_a_tie_of_two_keys_the_record_tells_who_changed() {
    // `a-changed` and `b-kept` shared 10.0.0.4 under key k; `a-changed`
    // switched to key j, and the leader died before its new status was out.
    // One Service a side: only the record tells which one changed.
    let pools = || vec![pool("p", &["10.0.0.0/29"])];
    let mut changed = req("ns", "a-changed");
    changed.sharing = Some(sharing("j", &[tcp(80)], "Cluster"));
    let mut kept = req("ns", "b-kept");
    kept.sharing = Some(sharing("k", &[tcp(81)], "Cluster"));
    let shows = || vec![ip("10.0.0.4")];
    for order in [[0, 1], [1, 0]] {
        let mut a = allocator(pools());
        let both = [
            (changed.clone(), shows(), Record::Stale),
            (kept.clone(), shows(), Record::Current),
        ];
        let results = a.restore_all(order.iter().map(|&i| both[i].clone()).collect());
        let failed: Vec<_> = results
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(k, _)| k.name.clone())
            .collect();
        assert_eq!(failed, ["a-changed"], "order {order:?}");
        assert_eq!(a.holders(&ip("10.0.0.4")), vec![key("ns", "b-kept")]);
        assert_ne!(try_assign(&mut a, &changed), "10.0.0.4@p");
    }

    // A stale record alone on its address still keeps it: nobody else
    // wants it, and its request may keep it.
    let mut a = allocator(pools());
    let results = a.restore_all(vec![(changed.clone(), shows(), Record::Stale)]);
    assert!(results.iter().all(|(_, r)| r.is_ok()), "{results:?}");
    assert_eq!(try_assign(&mut a, &changed), "10.0.0.4@p");
}

#[test]
fn pool_edits_never_move_an_address() {
    let mut a = allocator(vec![pool("a", &["10.0.0.0/30"])]);
    let mut r = req("ns", "s");
    r.pool = Some("a".into());
    assert_eq!(try_assign(&mut a, &r), "10.0.0.0@a");
    assert!(a.set_pools(vec![pool("b", &["10.0.1.0/30"])]).is_empty());
    assert_eq!(a.usage("a"), None);
    assert_eq!(show(a.allocation(&r.service).unwrap()), "10.0.0.0@a");
    assert_eq!(
        try_assign(&mut a, &r),
        "10.0.0.0@a",
        "the request did not change, so the address stays"
    );
    assert_eq!(try_assign(&mut a, &req("ns", "plain")), "10.0.1.0@b");
    // The pool renamed: a request naming the old pool keeps the address (and
    // the old name, or the next assign would move it).
    assert!(
        a.set_pools(vec![
            pool("renamed", &["10.0.0.0/30"]),
            pool("b", &["10.0.1.0/30"])
        ])
        .is_empty()
    );
    assert_eq!(try_assign(&mut a, &r), "10.0.0.0@a");
    assert_eq!(try_assign(&mut a, &r), "10.0.0.0@a");
    assert!(a.set_pools(vec![pool("b", &["10.0.1.0/30"])]).is_empty());
    // A new pool that holds the kept address counts it and never hands it out.
    assert!(a.set_pools(vec![pool("c", &["10.0.0.0/31"])]).is_empty());
    assert_eq!(
        a.usage("c").unwrap(),
        PoolUsage {
            assigned_v4: 1,
            assigned_v6: 0,
            available_v4: 1,
            available_v6: 0
        }
    );
    assert_eq!(try_assign(&mut a, &req("ns", "n1")), "10.0.0.1@c");
    // Naming the pool that now holds it keeps it, under that pool's name.
    r.pool = Some("c".into());
    assert_eq!(
        try_assign(&mut a, &r),
        "10.0.0.0@c",
        "kept: the address is in the newly requested pool"
    );
}

#[test]
fn a_failed_assign_leaves_the_allocation_alone() {
    let mut a = allocator(vec![
        pool("a", &["10.0.0.0/31"]),
        pool("b", &["10.0.1.0/31"]),
    ]);
    let mut r = req("ns", "s");
    assert_eq!(try_assign(&mut a, &r), "10.0.0.0@a");
    r.pool = Some("gone".into());
    assert!(try_assign(&mut a, &r).starts_with("error: requested pool gone"));
    assert_eq!(show(a.allocation(&r.service).unwrap()), "10.0.0.0@a");
    r.pool = Some("b".into());
    assert_eq!(
        try_assign(&mut a, &r),
        "10.0.1.0@b",
        "a changed request moves it"
    );
    // Its old address is leaving until the new one is published.
    assert_eq!(a.holders(&ip("10.0.0.0")), vec![key("ns", "s")]);
    assert!(a.published(&r.service, &[ip("10.0.1.0")]));
    assert_eq!(a.holders(&ip("10.0.0.0")), vec![]);
    r.pool = None;
    r.addresses = vec![ip("10.0.0.1")];
    assert_eq!(try_assign(&mut a, &r), "10.0.0.1@a");
    assert!(a.published(&r.service, &[ip("10.0.0.1")]));
    assert_eq!(a.usage("b").unwrap().assigned_v4, 0);
}

#[test]
fn overlapping_pools_are_reported_and_never_hand_out_twice() {
    let mut a = Allocator::new();
    let problems = a.set_pools(vec![
        Pool {
            priority: Some(1),
            namespaces: vec!["x".into()],
            ..pool("a", &["10.0.0.0-10.0.0.3"])
        },
        pool("b", &["10.0.0.2-10.0.0.5", "fd00::/126"]),
        pool("b", &["10.9.0.0/24"]),
        pool("c", &["fd00::3-fd00::9"]),
        Pool {
            ranges: vec![],
            ..pool("empty", &[])
        },
    ]);
    let want = [
        ("a", vec!["overlaps pool b at 10.0.0.2-10.0.0.3"]),
        (
            "b",
            vec![
                "another pool has the same name; only the first one is used",
                "overlaps pool a at 10.0.0.2-10.0.0.3",
                "overlaps pool c at fd00::3",
            ],
        ),
        ("c", vec!["overlaps pool b at fd00::3"]),
        ("empty", vec!["the pool has no addresses"]),
    ];
    let want = want
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
        .collect();
    assert_eq!(problems, want);
    let got: Vec<String> = (0..4)
        .map(|i| try_assign(&mut a, &req("x", &format!("s{i}"))))
        .collect();
    assert_eq!(
        got,
        ["10.0.0.0@a", "10.0.0.1@a", "10.0.0.2@a", "10.0.0.3@a"]
    );
    assert_eq!(
        a.usage("b").unwrap(),
        PoolUsage {
            assigned_v4: 2,
            assigned_v6: 0,
            available_v4: 2,
            available_v6: 4
        }
    );
    assert_eq!(try_assign(&mut a, &req("y", "t")), "10.0.0.4@b");
    assert!(a.release(&key("x", "s2")));
    assert_eq!(
        try_assign(&mut a, &req("y", "u")),
        "10.0.0.2@b",
        "given back to both pools"
    );
}

#[test]
fn denial_and_error_texts() {
    let d = Denial::Namespace {
        namespace: "dev".into(),
        allowed: vec!["prod".into()],
    };
    assert_eq!(
        d.to_string(),
        "namespace \"dev\" is not in its serviceAllocation.namespaces (prod)"
    );
    let e = AllocError::Exhausted {
        family: V6,
        pools: vec!["a".into(), "b".into()],
    };
    assert_eq!(
        e.to_string(),
        "no free IPv6 address left in pools a, b; add addresses to one of them or free some"
    );
    assert_eq!(e.kind(), "Exhausted");
    assert_eq!(
        AllocError::NoIpFamilies.to_string(),
        "the Service has no IP family in spec.ipFamilies"
    );
    let mut r = req("ns", "s");
    r.families.clear();
    assert_eq!(Allocator::new().assign(&r), Err(AllocError::NoIpFamilies));
}

#[test]
fn a_changed_port_counts_for_its_key_and_gives_way_on_a_clash() {
    let pools = || vec![pool("p", &["10.0.0.0/29"])];
    let shows = || vec![ip("10.0.0.4")];
    let failed = |results: &[(
        ferrolb_provider_api::ServiceKey,
        Result<super::Allocation, AllocError>,
    )]|
     -> Vec<String> {
        results
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(k, _)| k.name.clone())
            .collect()
    };

    // `a-ported` changed its port under key k; `b-switched` left k for j.
    // Both records disagree with the request, but only the key change ends
    // a sharing: `a-ported` keeps the address whatever the list order.
    let mut ported = req("ns", "a-ported");
    ported.sharing = Some(sharing("k", &[tcp(82)], "Cluster"));
    let mut switched = req("ns", "b-switched");
    switched.sharing = Some(sharing("j", &[tcp(81)], "Cluster"));
    for order in [[0, 1], [1, 0]] {
        let mut a = allocator(pools());
        let both = [
            (ported.clone(), shows(), Record::TermsChanged),
            (switched.clone(), shows(), Record::Stale),
        ];
        let results = a.restore_all(order.iter().map(|&i| both[i].clone()).collect());
        assert_eq!(failed(&results), ["b-switched"], "order {order:?}");
        assert_eq!(a.holders(&ip("10.0.0.4")), vec![key("ns", "a-ported")]);
    }

    // `c-clashing`'s new port is `d-kept`'s: the one that changed moves.
    let mut clashing = req("ns", "c-clashing");
    clashing.sharing = Some(sharing("k", &[tcp(80)], "Cluster"));
    let mut kept = req("ns", "d-kept");
    kept.sharing = Some(sharing("k", &[tcp(80)], "Cluster"));
    for order in [[0, 1], [1, 0]] {
        let mut a = allocator(pools());
        let both = [
            (clashing.clone(), shows(), Record::TermsChanged),
            (kept.clone(), shows(), Record::Current),
        ];
        let results = a.restore_all(order.iter().map(|&i| both[i].clone()).collect());
        assert_eq!(failed(&results), ["c-clashing"], "order {order:?}");
        assert_eq!(a.holders(&ip("10.0.0.4")), vec![key("ns", "d-kept")]);
    }
}
