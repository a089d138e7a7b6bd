//! The state the churned bare-metal Services must reach once the churn
//! stops: read from the apiserver alone, judged against what the churn
//! last asked for.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Result;
use ferrolb_baremetal::crd::IPPool;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::observe::{Seen, may_share, pool_of};
use super::{
    ALLOCATED_FROM, ALLOCATED_IPS, ALLOCATED_SHARING_KEY, ALLOCATED_SHARING_TERMS, Desired,
    Outcome, POOLS, Request, SHARED,
};
use crate::common::{has_finalizer, ingress_ips};

/// What is still wrong; empty once everything converged.
pub async fn problems(client: &Client, ns: &str, outcome: &Outcome) -> Result<Vec<String>> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let listed: BTreeMap<String, Service> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|s| (s.name_any(), s))
        .collect();
    let mut problems = Vec::new();
    for name in &outcome.deleted {
        if let Some(svc) = listed.get(name) {
            problems.push(format!(
                "{name} was deleted but is still there with finalizers {:?}",
                svc.finalizers()
            ));
        }
    }
    let wanted: BTreeMap<&str, &Desired> =
        outcome.live.iter().map(|d| (d.name.as_str(), d)).collect();
    for name in listed.keys() {
        if !wanted.contains_key(name.as_str()) && !outcome.deleted.contains(name) {
            problems.push(format!("{name} is there but the churn never made it"));
        }
    }
    // Which live Services of ours show each address.
    let mut holders: BTreeMap<String, Vec<(String, Seen)>> = BTreeMap::new();
    for d in &outcome.live {
        let Some(svc) = listed.get(&d.name) else {
            problems.push(format!("{} is missing", d.name));
            continue;
        };
        let addrs = ingress_ips(svc);
        if d.other {
            if has_finalizer(svc)
                || !addrs.is_empty()
                || svc.annotations().contains_key(ALLOCATED_FROM)
                || svc.annotations().contains_key(ALLOCATED_IPS)
            {
                problems.push(format!("{} is of another class but was touched", d.name));
            }
            continue;
        }
        if let Some(p) = request_problem(d, &addrs) {
            problems.push(format!("{}: {p}", d.name));
        }
        if !has_finalizer(svc) {
            problems.push(format!("{} has no finalizer", d.name));
        }
        let from = svc.annotations().get(ALLOCATED_FROM).map(String::as_str);
        if let Some(first) = addrs.first()
            && from != pool_of(first)
        {
            problems.push(format!(
                "{} shows {first} but says it came from pool {from:?}",
                d.name
            ));
        }
        // The record of the allocation says what the status shows, and the
        // terms it is shared under (the churn's ports are all TCP, its
        // policy Cluster).
        let recorded = (
            svc.annotations().get(ALLOCATED_IPS).cloned(),
            svc.annotations().get(ALLOCATED_SHARING_KEY).cloned(),
            svc.annotations().get(ALLOCATED_SHARING_TERMS).cloned(),
        );
        let shown = (
            Some(addrs.join(",")),
            svc.annotations().get(SHARED).cloned(),
            svc.annotations().get(SHARED).map(|_| {
                let mut ports: Vec<i32> = svc
                    .spec
                    .iter()
                    .flat_map(|s| s.ports.iter().flatten())
                    .map(|p| p.port)
                    .collect();
                ports.sort_unstable();
                ports.dedup();
                let ports: Vec<String> = ports.iter().map(|p| format!("TCP/{p}")).collect();
                format!("ports={};externalTrafficPolicy=Cluster", ports.join(","))
            }),
        );
        if recorded != shown {
            problems.push(format!(
                "{} shows {shown:?} (addresses, sharing key, terms) but its record says {recorded:?}",
                d.name
            ));
        }
        let seen = Seen {
            sharing: svc.annotations().get(SHARED).cloned(),
            ports: svc
                .spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .into_iter()
                .flatten()
                .map(|p| (p.protocol.clone().unwrap_or_default(), p.port))
                .collect(),
            ..Seen::default()
        };
        for a in addrs {
            holders
                .entry(a)
                .or_default()
                .push((d.name.clone(), seen.clone()));
        }
    }
    for (addr, services) in &holders {
        for (i, (a, sa)) in services.iter().enumerate() {
            for (b, sb) in &services[i + 1..] {
                if !may_share(sa, sb) {
                    problems.push(format!(
                        "{addr} is held by {a} and {b}, which may not share"
                    ));
                }
            }
        }
    }
    problems.extend(pool_count_problems(client, &holders).await?);
    Ok(problems)
}

/// Why the addresses do not meet the request, if they do not.
fn request_problem(d: &Desired, addrs: &[String]) -> Option<String> {
    let [addr] = addrs else {
        return Some(format!(
            "shows {addrs:?} for {:?}; wants one address",
            d.request
        ));
    };
    let pool = pool_of(addr);
    let ok = match &d.request {
        // An address is never moved by itself: one that came from the
        // manual pool stays when the Service stops asking for it (and others
        // of its sharing key may join it).
        Request::Auto => {
            matches!(pool, Some("blue" | "green")) || (d.had_ip && pool == Some("manual"))
        }
        Request::Shared(_) => matches!(pool, Some("blue" | "green" | "manual")),
        Request::Pool(p) => pool == Some(*p),
        Request::Ip { alt, .. } => *addr == Request::requested_ip(d.slot, *alt),
        Request::Named(_) => false,
    };
    (!ok).then(|| format!("shows {addr} (pool {pool:?}) for {:?}", d.request))
}

/// Each pool's status counts exactly the addresses Services show: an
/// address the controller holds for a Service that is gone shows up here.
async fn pool_count_problems(
    client: &Client,
    holders: &BTreeMap<String, Vec<(String, Seen)>>,
) -> Result<Vec<String>> {
    let api: Api<IPPool> = Api::all(client.clone());
    let mut problems = Vec::new();
    for (name, _, _) in POOLS {
        let shown: BTreeSet<&String> = holders
            .keys()
            .filter(|a| pool_of(a) == Some(name))
            .collect();
        let status = api.get(name).await?.status.unwrap_or_default();
        if status.assigned_ipv4 != shown.len() as u64 {
            problems.push(format!(
                "pool {name} counts {} addresses assigned; Services show {}",
                status.assigned_ipv4,
                shown.len()
            ));
        }
    }
    Ok(problems)
}

/// Polls [`problems`] until there are none; returns how long it took, or
/// the last problems when `timeout` passed first.
pub async fn converge(
    client: &Client,
    ns: &str,
    outcome: &Outcome,
    timeout: Duration,
) -> Result<Duration, Vec<String>> {
    converge_with(timeout, || problems(client, ns, outcome)).await
}

/// Polls `problems` until it finds none; how long that took, or the last
/// problems when `timeout` passed first.
pub async fn converge_with<F, Fut>(
    timeout: Duration,
    mut problems: F,
) -> Result<Duration, Vec<String>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Vec<String>>>,
{
    let started = Instant::now();
    let mut last = Vec::new();
    while started.elapsed() < timeout {
        match problems().await {
            Ok(p) if p.is_empty() => return Ok(started.elapsed()),
            Ok(p) => last = p,
            Err(e) => last = vec![format!("checking failed: {e:#}")],
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last)
}
