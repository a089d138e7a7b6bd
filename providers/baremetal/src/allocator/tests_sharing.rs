//! Sharing an address between Services.

use ferrolb_provider_api::IpFamily::{V4, V6};

use super::testutil::*;
use super::{AllocError, Pool, Request, ShareConflict, Sharing};

#[test]
fn who_shares_and_who_does_not() {
    // Each case: a second Service asks after `first` (key "k", TCP/80,
    // backend "") holds 10.0.0.0.
    let cases: Vec<(&str, Option<Sharing>, &str)> = vec![
        (
            "same key, disjoint ports",
            Some(sharing("k", &[tcp(443)], "")),
            "10.0.0.0@p",
        ),
        (
            "same port number, other protocol",
            Some(sharing("k", &[udp(80)], "")),
            "10.0.0.0@p",
        ),
        ("no ports at all", Some(sharing("k", &[], "")), "10.0.0.0@p"),
        (
            "overlapping ports",
            Some(sharing("k", &[tcp(443), tcp(80)], "")),
            "10.0.0.1@p",
        ),
        (
            "different backend",
            Some(sharing("k", &[tcp(443)], "app=x")),
            "10.0.0.1@p",
        ),
        (
            "different key",
            Some(sharing("other", &[tcp(443)], "")),
            "10.0.0.1@p",
        ),
        ("no key", None, "10.0.0.1@p"),
    ];
    for (name, s, want) in cases {
        let mut a = allocator(vec![pool("p", &["10.0.0.0/29"])]);
        assert_eq!(
            try_assign(&mut a, &shared("first", sharing("k", &[tcp(80)], ""))),
            "10.0.0.0@p"
        );
        let second = Request {
            sharing: s,
            ..req("ns", "second")
        };
        assert_eq!(try_assign(&mut a, &second), want, "{name}");
        let sharers = a.holders(&ip("10.0.0.0")).len();
        assert_eq!(
            sharers,
            if want.starts_with("10.0.0.0") { 2 } else { 1 },
            "{name}"
        );
        assert_eq!(
            a.usage("p").unwrap().assigned_v4,
            if sharers == 2 { 1 } else { 2 },
            "{name}"
        );
    }
}

#[test]
fn explicit_address_held_by_another_says_why_it_cannot_be_shared() {
    let ours = sharing("k", &[tcp(80)], "");
    let cases: Vec<(Option<Sharing>, Option<Sharing>, ShareConflict)> = vec![
        (Some(ours.clone()), None, ShareConflict::NoSharingKey),
        (
            None,
            Some(ours.clone()),
            ShareConflict::HolderHasNoSharingKey,
        ),
        (
            Some(ours.clone()),
            Some(sharing("j", &[tcp(443)], "")),
            ShareConflict::DifferentKey {
                ours: "j".into(),
                theirs: "k".into(),
            },
        ),
        (
            Some(ours.clone()),
            Some(sharing("k", &[tcp(443)], "app=x")),
            ShareConflict::DifferentBackend,
        ),
        (
            Some(sharing("k", &[tcp(80), udp(53), tcp(443)], "")),
            Some(sharing("k", &[udp(53), tcp(443), tcp(8080)], "")),
            ShareConflict::PortsOverlap {
                ports: vec![tcp(443), udp(53)],
            },
        ),
    ];
    for (holder_sharing, our_sharing, conflict) in cases {
        let mut a = allocator(vec![pool("p", &["10.0.0.0/29"])]);
        let holder = Request {
            sharing: holder_sharing,
            addresses: vec![ip("10.0.0.3")],
            ..req("other", "holder")
        };
        a.assign(&holder).unwrap();
        let r = Request {
            sharing: our_sharing,
            addresses: vec![ip("10.0.0.3")],
            ..req("ns", "s")
        };
        let want = AllocError::AddressInUse {
            address: ip("10.0.0.3"),
            holder: key("other", "holder"),
            conflict,
        };
        assert_eq!(a.assign(&r), Err(want.clone()));
        assert_eq!(a.restore(&r, &[ip("10.0.0.3")]), Err(want));
        assert_eq!(a.allocation(&r.service), None);
    }
    let e = AllocError::AddressInUse {
        address: ip("10.0.0.3"),
        holder: key("other", "holder"),
        conflict: ShareConflict::PortsOverlap {
            ports: vec![tcp(443), udp(53)],
        },
    };
    assert_eq!(
        e.to_string(),
        "address 10.0.0.3 is already used by Service other/holder and cannot be shared: both Services use TCP/443, UDP/53"
    );
}

#[test]
fn a_shared_address_is_freed_with_its_last_holder() {
    let mut a = allocator(vec![pool("p", &["10.0.0.0/30"])]);
    a.assign(&shared("a", sharing("k", &[tcp(80)], "")))
        .unwrap();
    a.assign(&shared("b", sharing("k", &[tcp(81)], "")))
        .unwrap();
    a.assign(&shared("c", sharing("k", &[tcp(82)], "")))
        .unwrap();
    assert_eq!(
        a.holders(&ip("10.0.0.0")),
        vec![key("ns", "a"), key("ns", "b"), key("ns", "c")]
    );
    assert!(a.release(&key("ns", "a")));
    assert!(a.release(&key("ns", "c")));
    assert_eq!(a.holders(&ip("10.0.0.0")), vec![key("ns", "b")]);
    assert_eq!(a.usage("p").unwrap().available_v4, 3);
    // The key still finds the address through the remaining holder.
    assert_eq!(
        try_assign(&mut a, &shared("d", sharing("k", &[tcp(80)], ""))),
        "10.0.0.0@p"
    );
    assert!(a.release(&key("ns", "b")));
    assert!(a.release(&key("ns", "d")));
    assert_eq!(a.usage("p").unwrap().available_v4, 4);
    assert!(a.shared.is_empty(), "{:?}", a.shared);
    assert_eq!(try_assign(&mut a, &req("ns", "plain")), "10.0.0.0@p");
}

#[test]
fn sharing_beats_pool_priority() {
    let mut a = allocator(vec![
        Pool {
            priority: Some(1),
            ..pool("first", &["10.0.0.0/30"])
        },
        Pool {
            priority: Some(2),
            ..pool("second", &["10.0.1.0/30"])
        },
    ]);
    let mut in_second = shared("a", sharing("k", &[tcp(80)], ""));
    in_second.pool = Some("second".into());
    assert_eq!(try_assign(&mut a, &in_second), "10.0.1.0@second");
    assert_eq!(
        try_assign(&mut a, &shared("b", sharing("k", &[tcp(443)], ""))),
        "10.0.1.0@second"
    );
    assert_eq!(
        try_assign(&mut a, &shared("c", sharing("j", &[tcp(443)], ""))),
        "10.0.0.0@first"
    );
}

#[test]
fn changing_ports_to_overlap_moves_the_later_service() {
    let mut a = allocator(vec![pool("p", &["10.0.0.0/30"])]);
    a.assign(&shared("a", sharing("k", &[tcp(80)], "")))
        .unwrap();
    let mut b = shared("b", sharing("k", &[tcp(443)], ""));
    assert_eq!(try_assign(&mut a, &b), "10.0.0.0@p");
    b.sharing = Some(sharing("k", &[tcp(80)], ""));
    assert_eq!(try_assign(&mut a, &b), "10.0.0.1@p");
    assert_eq!(a.leaving(&b.service), vec![ip("10.0.0.0")]);
    assert!(a.published(&b.service, &[ip("10.0.0.1")]));
    assert_eq!(a.holders(&ip("10.0.0.0")), vec![key("ns", "a")]);
    // Keeping the key but changing it to a new one: b alone on its address.
    b.sharing = Some(sharing("new", &[tcp(80)], ""));
    assert_eq!(try_assign(&mut a, &b), "10.0.0.1@p");
    assert_eq!(a.shared.get("new").map(|s| s.len()), Some(1));
    assert_eq!(a.shared.get("k").map(|s| s.len()), Some(1));
}

#[test]
fn dual_stack_services_share_both_addresses() {
    let mut a = allocator(vec![pool("p", &["10.0.0.0/30", "fd00::/126"])]);
    let mut one = shared("one", sharing("k", &[tcp(80)], ""));
    one.families = vec![V4, V6];
    let mut two = shared("two", sharing("k", &[tcp(443)], ""));
    two.families = vec![V6, V4];
    assert_eq!(try_assign(&mut a, &one), "10.0.0.0,fd00::@p");
    assert_eq!(try_assign(&mut a, &two), "fd00::,10.0.0.0@p");
    let mut three = shared("three", sharing("k", &[tcp(80)], ""));
    three.families = vec![V4, V6];
    assert_eq!(try_assign(&mut a, &three), "10.0.0.1,fd00::1@p");
}
