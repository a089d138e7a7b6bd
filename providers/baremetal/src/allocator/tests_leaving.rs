//! Addresses a Service moved away from stay taken until its new status is
//! published, so that no restart can find two Services showing one address.

use super::testutil::*;
use super::{AllocError, Record, Request, ShareConflict};

fn asking_for(name: &str, address: &str) -> Request {
    Request {
        addresses: vec![ip(address)],
        ..req("ns", name)
    }
}

#[test]
fn a_moved_address_is_handed_on_only_after_the_new_status_is_out() {
    let mut a = allocator(vec![pool("p", &["10.0.0.0/30"])]);
    assert_eq!(try_assign(&mut a, &req("ns", "a")), "10.0.0.0@p");
    // a asks for another address: it moves, and 10.0.0.0 is leaving.
    assert_eq!(
        try_assign(&mut a, &asking_for("a", "10.0.0.3")),
        "10.0.0.3@p"
    );
    assert_eq!(a.leaving(&key("ns", "a")), vec![ip("10.0.0.0")]);
    assert_eq!(a.usage("p").unwrap().assigned_v4, 2);
    assert_eq!(try_assign(&mut a, &req("ns", "b")), "10.0.0.1@p");
    assert_eq!(
        a.assign(&asking_for("c", "10.0.0.0")),
        Err(AllocError::AddressInUse {
            address: ip("10.0.0.0"),
            holder: key("ns", "a"),
            conflict: ShareConflict::Leaving,
        })
    );
    // Publishing anything but what a holds frees nothing.
    assert!(!a.published(&key("ns", "a"), &[ip("10.0.0.0")]));
    assert!(!a.published(&key("ns", "b"), &[ip("10.0.0.1")]));
    assert_eq!(a.leaving(&key("ns", "a")), vec![ip("10.0.0.0")]);
    assert!(a.published(&key("ns", "a"), &[ip("10.0.0.3")]));
    assert!(a.leaving(&key("ns", "a")).is_empty());
    assert!(!a.published(&key("ns", "a"), &[ip("10.0.0.3")]));
    assert_eq!(
        try_assign(&mut a, &asking_for("c", "10.0.0.0")),
        "10.0.0.0@p"
    );
}

#[test]
fn every_address_moved_through_stays_taken_until_published() {
    let mut a = allocator(vec![pool("p", &["10.0.0.0/29"])]);
    a.assign(&req("ns", "a")).unwrap();
    a.assign(&asking_for("a", "10.0.0.5")).unwrap();
    a.assign(&asking_for("a", "10.0.0.6")).unwrap();
    assert_eq!(
        a.leaving(&key("ns", "a")),
        vec![ip("10.0.0.0"), ip("10.0.0.5")]
    );
    // Back to one it was leaving: that one is its own again.
    a.assign(&asking_for("a", "10.0.0.5")).unwrap();
    assert_eq!(
        a.leaving(&key("ns", "a")),
        vec![ip("10.0.0.0"), ip("10.0.0.6")]
    );
    assert_eq!(a.holders(&ip("10.0.0.5")), vec![key("ns", "a")]);
    assert_eq!(a.usage("p").unwrap().assigned_v4, 3);
    assert!(a.published(&key("ns", "a"), &[ip("10.0.0.5")]));
    assert_eq!(a.usage("p").unwrap().assigned_v4, 1);
    assert_eq!(try_assign(&mut a, &req("ns", "b")), "10.0.0.0@p");
}

#[test]
fn release_frees_leaving_addresses_too() {
    let mut a = allocator(vec![pool("p", &["10.0.0.0/30"])]);
    a.assign(&req("ns", "a")).unwrap();
    a.assign(&asking_for("a", "10.0.0.2")).unwrap();
    assert!(a.release(&key("ns", "a")));
    assert!(a.leaving(&key("ns", "a")).is_empty());
    assert_eq!(a.usage("p").unwrap().available_v4, 4);
    assert_eq!(try_assign(&mut a, &req("ns", "b")), "10.0.0.0@p");
}

#[test]
fn nobody_joins_an_address_only_a_leaving_service_holds() {
    let mut a = allocator(vec![pool("p", &["10.0.0.0/30"])]);
    assert_eq!(
        try_assign(&mut a, &shared("a", sharing("k", &[tcp(80)], ""))),
        "10.0.0.0@p"
    );
    // a leaves the key for an address of its own.
    a.assign(&asking_for("a", "10.0.0.3")).unwrap();
    // Another Service of the key gets a fresh address, not the leaving one.
    assert_eq!(
        try_assign(&mut a, &shared("b", sharing("k", &[tcp(81)], ""))),
        "10.0.0.1@p"
    );
    assert!(a.published(&key("ns", "a"), &[ip("10.0.0.3")]));
    assert_eq!(try_assign(&mut a, &req("ns", "c")), "10.0.0.0@p");
}

#[test]
fn a_leaving_holder_keeps_its_ports_on_an_address_others_still_share() {
    let mut a = allocator(vec![pool("p", &["10.0.0.0/30"])]);
    a.assign(&shared("a", sharing("k", &[tcp(80)], "")))
        .unwrap();
    a.assign(&shared("b", sharing("k", &[tcp(81)], "")))
        .unwrap();
    // a moves to a key of its own; b still holds 10.0.0.0.
    assert_eq!(
        try_assign(&mut a, &shared("a", sharing("j", &[tcp(80)], ""))),
        "10.0.0.1@p"
    );
    assert_eq!(
        a.holders(&ip("10.0.0.0")),
        vec![key("ns", "a"), key("ns", "b")]
    );
    // a's status still shows 10.0.0.0 with TCP/80: nobody else gets that.
    assert_eq!(
        try_assign(&mut a, &shared("c", sharing("k", &[tcp(80)], ""))),
        "10.0.0.2@p"
    );
    // Other ports of the key may still join b.
    assert_eq!(
        try_assign(&mut a, &shared("d", sharing("k", &[tcp(82)], ""))),
        "10.0.0.0@p"
    );
    assert!(a.published(&key("ns", "a"), &[ip("10.0.0.1")]));
    assert_eq!(
        a.holders(&ip("10.0.0.0")),
        vec![key("ns", "b"), key("ns", "d")]
    );
}

#[test]
fn a_service_keeps_an_address_another_is_leaving() {
    let mut a = allocator(vec![pool("p", &["10.0.0.0/30"])]);
    let b = shared("b", sharing("k", &[tcp(81)], ""));
    a.assign(&shared("a", sharing("k", &[tcp(80)], "")))
        .unwrap();
    assert_eq!(try_assign(&mut a, &b), "10.0.0.0@p");
    // a leaves the key; b, still on 10.0.0.0, keeps it whatever it asks
    // for next that the address still meets.
    a.assign(&asking_for("a", "10.0.0.3")).unwrap();
    assert_eq!(try_assign(&mut a, &b), "10.0.0.0@p");
    let b = shared("b", sharing("k", &[tcp(82)], ""));
    assert_eq!(try_assign(&mut a, &b), "10.0.0.0@p");
    // But not a port a's old status still shows there.
    let b = shared("b", sharing("k", &[tcp(80)], ""));
    assert_eq!(try_assign(&mut a, &b), "10.0.0.1@p");
}

#[test]
fn a_restart_before_the_new_status_finds_no_address_twice() {
    // The crash this guards against: a moves, the address goes to b and b's
    // status is written, the leader dies before a's new status is out.
    // Since b could not get a's old address, what the Services show after
    // the restart never collides.
    let mut a = allocator(vec![pool("p", &["10.0.0.0/30"])]);
    let old = a.assign(&req("ns", "a")).unwrap();
    a.assign(&asking_for("a", "10.0.0.3")).unwrap();
    let b = a.assign(&req("ns", "b")).unwrap();
    assert_ne!(b.addresses, old.addresses);

    let mut restarted = allocator(vec![pool("p", &["10.0.0.0/30"])]);
    let results = restarted.restore_all(vec![
        (
            asking_for("a", "10.0.0.3"),
            old.addresses.clone(),
            Record::Stale,
        ),
        (req("ns", "b"), b.addresses.clone(), Record::Current),
    ]);
    assert!(results.iter().all(|(_, r)| r.is_ok()), "{results:?}");
    // a then moves again, and its old address waits for its status.
    assert_eq!(
        try_assign(&mut restarted, &asking_for("a", "10.0.0.3")),
        "10.0.0.3@p"
    );
    assert_eq!(restarted.leaving(&key("ns", "a")), old.addresses);
    assert_eq!(restarted.allocation(&key("ns", "b")), Some(&b));
}
