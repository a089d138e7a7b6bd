//! Short builders for the allocator's tests.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_provider_api::{IpFamily, Protocol, ServiceKey};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{AddrRange, Allocation, Allocator, Pool, Request, Selector, Sharing};

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub(super) fn key(ns: &str, name: &str) -> ServiceKey {
    ServiceKey::new(ns, name)
}

/// An autoAssign pool without restrictions or priority.
pub(super) fn pool(name: &str, ranges: &[&str]) -> Pool {
    Pool {
        name: name.into(),
        ranges: ranges
            .iter()
            .map(|r| AddrRange::parse(r).unwrap())
            .collect(),
        auto_assign: true,
        avoid_buggy_ips: false,
        namespaces: vec![],
        service_selectors: vec![],
        priority: None,
    }
}

/// A selector on `key=value`.
pub(super) fn label_selector(key: &str, value: &str) -> Selector {
    Selector::from_label_selector(&LabelSelector {
        match_labels: Some(BTreeMap::from([(key.to_string(), value.to_string())])),
        ..Default::default()
    })
    .unwrap()
}

/// A single-stack IPv4 request from `ns/name` with nothing else asked.
pub(super) fn req(ns: &str, name: &str) -> Request {
    Request {
        service: key(ns, name),
        labels: BTreeMap::new(),
        families: vec![IpFamily::V4],
        require_all: false,
        addresses: vec![],
        pool: None,
        sharing: None,
    }
}

/// `req("ns", name)` with a sharing key.
pub(super) fn shared(name: &str, s: Sharing) -> Request {
    Request {
        sharing: Some(s),
        ..req("ns", name)
    }
}

pub(super) fn sharing(key: &str, ports: &[(Protocol, u16)], backend: &str) -> Sharing {
    Sharing {
        key: key.into(),
        ports: ports.to_vec(),
        backend: backend.into(),
    }
}

pub(super) fn tcp(port: u16) -> (Protocol, u16) {
    (Protocol::Tcp, port)
}

pub(super) fn udp(port: u16) -> (Protocol, u16) {
    (Protocol::Udp, port)
}

/// An allocator over `pools`, which must have no problems.
pub(super) fn allocator(pools: Vec<Pool>) -> Allocator {
    let mut a = Allocator::new();
    let problems = a.set_pools(pools);
    assert!(problems.is_empty(), "{problems:?}");
    a
}

/// `addresses@pool`, compact for assertions.
pub(super) fn show(a: &Allocation) -> String {
    let ips: Vec<String> = a.addresses.iter().map(ToString::to_string).collect();
    format!("{}@{}", ips.join(","), a.pool)
}

/// Assigns and shows the result or the error's message.
pub(super) fn try_assign(a: &mut Allocator, r: &Request) -> String {
    match a.assign(r) {
        Ok(alloc) => show(&alloc),
        Err(e) => format!("error: {e}"),
    }
}
