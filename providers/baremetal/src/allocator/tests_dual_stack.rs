//! Dual-stack requests: one pool for both families when possible.

use ferrolb_provider_api::IpFamily::{V4, V6};

use super::Pool;
use super::testutil::*;

#[test]
fn dual_stack_prefers_one_pool_for_both_families() {
    let pools = vec![
        Pool {
            priority: Some(1),
            ..pool("v4only", &["10.0.0.0/30"])
        },
        Pool {
            priority: Some(2),
            ..pool("dual", &["10.0.1.1", "fd00::1"])
        },
    ];
    let mut a = allocator(pools.clone());
    let mut first = req("ns", "first");
    first.families = vec![V4, V6];
    first.require_all = true;
    assert_eq!(try_assign(&mut a, &first), "10.0.1.1,fd00::1@dual");

    let mut v6_primary = req("ns", "v6p");
    v6_primary.families = vec![V6, V4];
    let mut b = allocator(pools.clone());
    assert_eq!(
        try_assign(&mut b, &v6_primary),
        "fd00::1,10.0.1.1@dual",
        "primary family first"
    );

    let mut prefer = req("ns", "prefer");
    prefer.families = vec![V4, V6];
    assert_eq!(
        try_assign(&mut a, &prefer),
        "10.0.0.0@v4only",
        "PreferDualStack falls back to the primary family"
    );
    let mut require = req("ns", "require");
    require.families = vec![V4, V6];
    require.require_all = true;
    assert_eq!(
        try_assign(&mut a, &require),
        "error: the Service requires dual-stack (RequireDualStack) but no pool it may use can give it an IPv6 address (pools tried: v4only, dual); add IPv6 addresses to one of them or free some"
    );
    assert_eq!(
        try_assign(&mut a, &prefer),
        "10.0.0.0@v4only",
        "the answer does not change"
    );
    assert!(a.release(&first.service));
    assert_eq!(
        try_assign(&mut a, &prefer),
        "10.0.0.0,fd00::1@v4only",
        "once a pool can give IPv6, PreferDualStack gets it, keeping its IPv4 address"
    );
    let mut v6 = req("ns", "v6");
    v6.families = vec![V6];
    assert_eq!(
        try_assign(&mut a, &v6),
        "error: no free IPv6 address left in pool dual; add addresses to it or free some"
    );
    let mut c = allocator(vec![pool("v4only", &["10.0.0.0/30"])]);
    assert_eq!(
        try_assign(&mut c, &v6),
        "error: no pool this Service may use has IPv6 addresses (pools tried: v4only)"
    );
}

#[test]
fn dual_stack_takes_families_from_two_pools_when_no_pool_has_both() {
    let pools = vec![
        pool("v4", &["10.0.0.0/31"]),
        Pool {
            priority: Some(9),
            ..pool("v6", &["fd00::/127"])
        },
    ];
    let mut a = allocator(pools);
    let mut require = req("ns", "require");
    require.families = vec![V6, V4];
    require.require_all = true;
    assert_eq!(try_assign(&mut a, &require), "fd00::,10.0.0.0@v6");
    assert_eq!(try_assign(&mut a, &require), "fd00::,10.0.0.0@v6");
    let mut prefer = req("ns", "prefer");
    prefer.families = vec![V4, V6];
    assert_eq!(try_assign(&mut a, &prefer), "10.0.0.1,fd00::1@v4");
}

#[test]
fn gaining_a_family_keeps_the_first_address_and_its_pool() {
    let mut a = allocator(vec![
        Pool {
            priority: Some(1),
            ..pool("v6first", &["fd00:1::/126"])
        },
        Pool {
            priority: Some(2),
            ..pool("dual", &["10.0.1.0/30", "fd00:2::/126"])
        },
    ]);
    let mut r = req("ns", "s");
    a.assign(&req("ns", "other")).unwrap();
    assert_eq!(try_assign(&mut a, &r), "10.0.1.1@dual");
    r.families = vec![V4, V6];
    assert_eq!(try_assign(&mut a, &r), "10.0.1.1,fd00:2::@dual");
    r.families = vec![V6];
    assert_eq!(
        try_assign(&mut a, &r),
        "fd00:2::@dual",
        "dropping a family frees it"
    );
    assert_eq!(a.leaving(&r.service), vec![ip("10.0.1.1")]);
    assert!(a.published(&r.service, &[ip("fd00:2::")]));
    assert_eq!(a.holders(&ip("10.0.1.1")), vec![]);
}
