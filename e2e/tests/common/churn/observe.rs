//! An independent watch on the churned Services that records every address
//! each one shows and flags, as it happens:
//!
//! - an address that changed (or went) while the Service lived and its
//!   request stayed the same ([`super::REQUEST_GEN`] unchanged since the
//!   address first showed);
//! - an address outside the pools the churn's namespace may use;
//! - an address shown by two Services that may not share it;
//! - a Service of another class that got our finalizer, an address or our
//!   annotation.
//!
//! A Service being deleted still shows its old address while another one may
//! get it already: it is left out. So is a Service whose request changed and
//! whose status has not caught up yet.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::task::JoinHandle;

use super::{ALLOCATED_FROM, OTHER_CLASS, POOLS, REQUEST_GEN, SHARED, lock};
use crate::common::has_finalizer;

/// What the watch saw of one Service.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub other: bool,
    pub generation: u64,
    pub addrs: Vec<String>,
    /// The request generation the current addresses first showed with.
    pub addrs_gen: u64,
    pub deleting: bool,
    pub gone: bool,
    pub sharing: Option<String>,
    pub ports: BTreeSet<(String, i32)>,
    /// Every address set it showed, in order.
    pub history: Vec<Vec<String>>,
}

impl Seen {
    /// Its addresses were given for its current request.
    fn settled(&self) -> bool {
        !self.addrs.is_empty() && self.addrs_gen == self.generation && !self.deleting && !self.gone
    }
}

#[derive(Debug, Default)]
pub struct Observed {
    pub services: BTreeMap<String, Seen>,
    pub violations: Vec<String>,
    pub events: u64,
}

impl Observed {
    /// Whether Service `name` shows addresses given for request generation `generation`.
    pub fn settled(&self, name: &str, generation: u64) -> bool {
        self.services
            .get(name)
            .is_some_and(|s| s.generation == generation && s.settled())
    }

    /// Address changes seen, over all Services.
    pub fn address_changes(&self) -> usize {
        self.services.values().map(|s| s.history.len()).sum()
    }

    fn apply(&mut self, svc: &Service) {
        self.record(svc);
        self.check_shared(&svc.name_any());
    }

    /// Takes in what the Service shows, checking what it shows alone.
    fn record(&mut self, svc: &Service) {
        self.events += 1;
        let name = svc.name_any();
        let other = svc
            .spec
            .as_ref()
            .and_then(|s| s.load_balancer_class.as_deref())
            == Some(OTHER_CLASS);
        let addrs = ingress(svc);
        if other {
            let touched = has_finalizer(svc)
                || !addrs.is_empty()
                || svc.annotations().contains_key(ALLOCATED_FROM);
            if touched {
                self.violations.push(format!(
                    "{name} (class {OTHER_CLASS}) was touched: finalizers {:?}, addresses {addrs:?}, annotations {:?}",
                    svc.finalizers(),
                    svc.annotations()
                ));
            }
        }
        let generation = svc
            .annotations()
            .get(REQUEST_GEN)
            .and_then(|g| g.parse().ok())
            .unwrap_or(0);
        let deleting = svc.metadata.deletion_timestamp.is_some();
        let seen = self.services.entry(name.clone()).or_default();
        seen.other = other;
        seen.generation = generation;
        seen.deleting = deleting;
        seen.sharing = svc.annotations().get(SHARED).cloned();
        seen.ports = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
            .map(|p| (p.protocol.clone().unwrap_or_default(), p.port))
            .collect();
        if addrs != seen.addrs {
            if !seen.addrs.is_empty() && !deleting && seen.addrs_gen == generation {
                self.violations.push(format!(
                    "{name}: address changed from {:?} to {addrs:?} with its request unchanged (generation {generation})",
                    seen.addrs
                ));
            }
            seen.addrs = addrs.clone();
            seen.addrs_gen = generation;
            seen.history.push(addrs.clone());
        }
        // A hostname (AWS) has no pool.
        for a in addrs.iter().filter(|a| a.parse::<IpAddr>().is_ok()) {
            if !usable(a) {
                self.violations
                    .push(format!("{name} got {a}, outside the pools it may use"));
            }
        }
    }

    /// Checks that no other Service shows the addresses of `name`, unless
    /// they may share them.
    fn check_shared(&mut self, name: &str) {
        let Some(seen) = self.services.get(name).cloned() else {
            return;
        };
        if !seen.settled() {
            return;
        }
        for a in &seen.addrs {
            for (other_name, o) in &self.services {
                if *other_name == name || !o.settled() || !o.addrs.contains(a) {
                    continue;
                }
                if !may_share(&seen, o) {
                    self.violations.push(format!(
                        "{a} held by {name} ({:?}, {:?}) and {other_name} ({:?}, {:?}) at once",
                        seen.sharing, seen.ports, o.sharing, o.ports
                    ));
                }
            }
        }
    }

    fn delete(&mut self, svc: &Service) {
        self.events += 1;
        let seen = self.services.entry(svc.name_any()).or_default();
        seen.gone = true;
    }

    /// The watch listed again (the apiserver restarted): what the list
    /// lacks went meanwhile, without a delete event.
    fn relisted(&mut self, listed: &BTreeSet<String>) {
        for (name, seen) in &mut self.services {
            if !listed.contains(name) {
                seen.gone = true;
            }
        }
    }
}

/// The addresses and hostnames in the Service's status, sorted.
pub fn ingress(svc: &Service) -> Vec<String> {
    let mut all: Vec<String> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
        .collect();
    all.sort();
    all
}

/// Two Services may show one address when they have the same sharing key
/// and no port in common.
pub fn may_share(a: &Seen, b: &Seen) -> bool {
    a.sharing.is_some() && a.sharing == b.sharing && a.ports.is_disjoint(&b.ports)
}

/// The pool an address is in.
pub fn pool_of(addr: &str) -> Option<&'static str> {
    let ip: IpAddr = addr.parse().ok()?;
    POOLS
        .iter()
        .find(|(_, cidr, _)| {
            cidr.parse::<ipnet::IpNet>()
                .is_ok_and(|net| net.contains(&ip))
        })
        .map(|(name, _, _)| *name)
}

/// In a pool the churn's namespace may draw from.
fn usable(addr: &str) -> bool {
    pool_of(addr).is_some_and(|p| p != "elsewhere")
}

/// The watch, running until dropped.
pub struct Observer {
    pub state: Arc<Mutex<Observed>>,
    task: JoinHandle<()>,
}

impl Observer {
    pub fn start(api: Api<Service>) -> Observer {
        let state = Arc::new(Mutex::new(Observed::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            // A list is taken in whole: what it lacks is gone before what
            // it shows is judged (an address a deleted Service had may have
            // gone to another one meanwhile).
            let mut listed: Vec<Service> = Vec::new();
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Apply(s)) => lock(&shared).apply(&s),
                    Ok(watcher::Event::InitApply(s)) => listed.push(s),
                    Ok(watcher::Event::Delete(s)) => lock(&shared).delete(&s),
                    Ok(watcher::Event::Init) => listed.clear(),
                    Ok(watcher::Event::InitDone) => {
                        let mut state = lock(&shared);
                        state.relisted(&listed.iter().map(|s| s.name_any()).collect());
                        for s in &listed {
                            state.record(s);
                        }
                        for s in listed.drain(..) {
                            state.check_shared(&s.name_any());
                        }
                    }
                    // The apiserver went away; the backoff retries.
                    Err(e) => tracing::info!(error = %e, "checker's watch failed"),
                }
            }
        });
        Observer { state, task }
    }

    pub fn violations(&self) -> Vec<String> {
        lock(&self.state).violations.clone()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
