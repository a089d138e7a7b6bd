//! Allocation cost does not grow with the size of a pool.

use ferrolb_provider_api::IpFamily::V4;

use super::Pool;
use super::testutil::*;

/// Finding a free address looks at one candidate, however full the pool is:
/// the free set is a handful of intervals, not a list of addresses.
#[test]
fn a_slash_8_stays_on_the_fast_path_after_10k_allocations() {
    let big = Pool {
        avoid_buggy_ips: true,
        ..pool("big", &["10.0.0.0/8"])
    };
    let mut a = allocator(vec![big]);
    assert_eq!(a.free_spans("big", V4), 1);
    for i in 0..10_000 {
        let before = a.probes;
        a.assign(&req("ns", &format!("s{i}"))).unwrap();
        assert_eq!(a.probes - before, 1, "allocation {i}");
    }
    assert_eq!(
        a.free_spans("big", V4),
        1,
        ".0/.255 addresses are skipped, not materialised"
    );
    // Release every third: the free set holds the holes, nothing more.
    for i in (0..10_000).step_by(3) {
        assert!(a.release(&key("ns", &format!("s{i}"))));
    }
    let holes = a.free_spans("big", V4);
    assert!(holes <= 3_335, "{holes}");
    for i in 0..3_334 {
        let before = a.probes;
        let got = a.assign(&req("ns", &format!("again{i}"))).unwrap();
        assert_eq!(a.probes - before, 1, "allocation {i}");
        assert!(
            got.addresses[0] < ip("10.0.40.0"),
            "a hole is reused first: {got:?}"
        );
    }
    assert_eq!(a.free_spans("big", V4), 1);
    let usage = a.usage("big").unwrap();
    assert_eq!(
        (usage.assigned_v4, usage.available_v4),
        (10_000, 65_536 * 254 - 10_000)
    );
}
