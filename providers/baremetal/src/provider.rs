//! The bare-metal provider: ties the pure [`Allocator`] to the cluster.
//!
//! It watches `IPPool`s and feeds them to the allocator, answers `ensure` with
//! the Service's addresses, and keeps each pool's status (used and free
//! counts, problems) up to date. It runs only in the leader: the controller
//! calls [`Provider::restore`] once after winning the election, which starts the
//! pool watch and rebuilds the allocations from the Services' statuses before
//! any `ensure`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrolb_provider_api::{
    ChangeNotifier, Ingress, IpFamilyPolicy, LoadBalancerIntent, LoadBalancerStatus, OwnedService,
    Provider, ProviderError, ServiceKey, TrafficPolicy,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event};
use kube::{Resource, ResourceExt};
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

use crate::allocator::{AllocError, Allocator, Pool, Record, Request, Sharing, pool_from_spec};
use crate::annotations::{
    self, ALLOCATED_FROM_POOL, ALLOCATED_IPS, ALLOCATED_SHARING_KEY, ALLOCATED_SHARING_TERMS,
};
use crate::crd::{BGPAdvertisement, IPPool, IPPoolStatus, L2Advertisement};

#[derive(Clone, Debug)]
pub struct BareMetalConfig {
    pub cluster_name: String,
    /// Who the Warning Events about invalid IPPools come from.
    pub reporter: Reporter,
}

struct Shared {
    allocator: Mutex<Allocator>,
    /// Problems found in each pool's spec, shown in its status.
    problems: Mutex<BTreeMap<String, Vec<String>>>,
    notifier: Mutex<Option<ChangeNotifier>>,
    /// The L2 and BGP advertisements, as `Kind/name`, and the pools each
    /// covers (empty: every pool).
    advertisements: Mutex<BTreeMap<String, Vec<String>>>,
    /// Wakes the pool status writer.
    dirty: Notify,
}

pub struct BareMetalProvider {
    client: kube::Client,
    reporter: Reporter,
    shared: Arc<Shared>,
    pools_synced: watch::Sender<bool>,
    /// Set by the first [`Provider::start`].
    started: std::sync::atomic::AtomicBool,
    /// The pools as listed, for the status writer that `restore` starts;
    /// there once the watches run.
    pools_rx: Mutex<Option<watch::Receiver<Vec<PoolShown>>>>,
}

impl BareMetalProvider {
    pub fn new(client: kube::Client, config: BareMetalConfig) -> Self {
        debug!(cluster = %config.cluster_name, "bare-metal provider");
        Self {
            client,
            reporter: config.reporter,
            shared: Arc::new(Shared {
                allocator: Mutex::new(Allocator::new()),
                problems: Mutex::default(),
                notifier: Mutex::default(),
                advertisements: Mutex::default(),
                dirty: Notify::new(),
            }),
            pools_synced: watch::Sender::new(false),
            started: Default::default(),
            pools_rx: Mutex::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn notify_waiting(&self) {
        let notifier = lock(&self.notifier).clone();
        if let Some(n) = notifier {
            n();
        }
    }

    /// Replaces the allocator's pools with these.
    fn apply_pools(&self, pools: &BTreeMap<String, IPPool>) {
        let mut problems: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut parsed: Vec<Pool> = Vec::new();
        for (name, pool) in pools {
            match pool_from_spec(name, &pool.spec) {
                Ok(p) => parsed.push(p),
                Err(errs) => {
                    warn!(pool = %name, problems = ?errs, "ignoring invalid IPPool");
                    problems.insert(name.clone(), errs);
                }
            }
        }
        let overlaps = lock(&self.allocator).set_pools(parsed);
        for (name, errs) in overlaps {
            problems.entry(name).or_default().extend(errs);
        }
        *lock(&self.problems) = problems;
        self.dirty.notify_one();
        self.notify_waiting();
    }

    /// What a Service is told when the allocator turns it down. A message
    /// about the pool, the address or the families it asked for starts with
    /// the field that asked.
    fn unsatisfiable(&self, e: &AllocError, intent: &LoadBalancerIntent) -> ProviderError {
        let message = match e {
            // The pool is there, but the allocator ignores it: say why.
            AllocError::PoolNotFound { pool } => match lock(&self.problems).get(pool) {
                Some(problems) => format!(
                    "requested pool {pool} is invalid and not used: {}",
                    problems.join("; ")
                ),
                None => e.to_string(),
            },
            _ => e.to_string(),
        };
        let field = match e {
            AllocError::PoolNotFound { .. } | AllocError::PoolNotAllowed { .. } => {
                annotations::pool_key(&intent.annotations)
                    .map(|key| format!("metadata.annotations[{key}]"))
            }
            AllocError::TooManyAddresses { .. }
            | AllocError::WrongFamily { .. }
            | AllocError::AddressNotInAnyPool { .. }
            | AllocError::AddressNotAllowed { .. }
            | AllocError::AddressNotInRequestedPool { .. }
            | AllocError::AddressInUse { .. } => intent.requested_from.clone(),
            AllocError::NoIpFamilies | AllocError::NoPoolWithFamily { .. } => {
                Some("spec.ipFamilies".into())
            }
            AllocError::DualStackUnavailable { .. } => Some("spec.ipFamilyPolicy".into()),
            AllocError::NoPoolForService { .. } | AllocError::Exhausted { .. } => None,
        };
        match field {
            Some(field) => ProviderError::unsatisfiable(format!("{field}: {message}")),
            None => ProviderError::unsatisfiable(message),
        }
    }

    fn status_of(&self, name: &str) -> IPPoolStatus {
        let usage = lock(&self.allocator).usage(name);
        let errors = lock(&self.problems).get(name).cloned().unwrap_or_default();
        let advertisements: Vec<String> = lock(&self.advertisements)
            .iter()
            .filter(|(_, pools)| pools.is_empty() || pools.iter().any(|p| p == name))
            .map(|(n, _)| n.clone())
            .collect();
        let assigned = usage
            .as_ref()
            .is_some_and(|u| u.assigned_v4 > 0 || u.assigned_v6 > 0);
        let warnings = if assigned && advertisements.is_empty() {
            vec![
                "allocated but not announced: no L2Advertisement or BGPAdvertisement covers this pool, so nothing announces its addresses"
                    .to_string(),
            ]
        } else {
            Vec::new()
        };
        let status = match usage {
            Some(u) => IPPoolStatus {
                assigned_ipv4: u.assigned_v4,
                assigned_ipv6: u.assigned_v6,
                available_ipv4: u.available_v4,
                available_ipv6: u.available_v6,
                errors,
                ..Default::default()
            },
            None => IPPoolStatus {
                errors,
                ..Default::default()
            },
        };
        IPPoolStatus {
            advertisements,
            warnings,
            ..status
        }
    }
}

/// Watches IPPools and hands every change to the allocator.
async fn watch_pools(
    api: Api<IPPool>,
    shared: Arc<Shared>,
    synced: watch::Sender<bool>,
    pools_tx: watch::Sender<Vec<PoolShown>>,
) {
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut pools: BTreeMap<String, IPPool> = BTreeMap::new();
    let mut staging: Option<BTreeMap<String, IPPool>> = None;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, "IPPool watch failed; retrying");
                continue;
            }
        };
        let changed = match event {
            Event::Init => {
                staging = Some(BTreeMap::new());
                false
            }
            Event::InitApply(p) => {
                if let Some(s) = staging.as_mut() {
                    s.insert(p.name_any(), p);
                }
                false
            }
            Event::InitDone => {
                pools = staging.take().unwrap_or_default();
                true
            }
            Event::Apply(p) => {
                let name = p.name_any();
                let spec_changed = pools.get(&name).is_none_or(|old| old.spec != p.spec);
                pools.insert(name, p);
                spec_changed
            }
            Event::Delete(p) => pools.remove(&p.name_any()).is_some(),
        };
        if changed {
            info!(pools = pools.len(), "IPPools changed");
            shared.apply_pools(&pools);
            let _ = pools_tx.send(
                pools
                    .iter()
                    .map(|(n, p)| (n.clone(), p.object_ref(&()), p.status.clone()))
                    .collect(),
            );
            synced.send_replace(true);
        }
    }
}

/// Keeps which pools the advertisements of one kind cover, for the pools'
/// status.
async fn watch_advertisements<K>(api: Api<K>, shared: Arc<Shared>, pools_of: fn(&K) -> Vec<String>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let kind = K::kind(&()).into_owned();
    let key = |a: &K| format!("{kind}/{}", a.name_any());
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut staging: Option<BTreeMap<String, Vec<String>>> = None;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                warn!(%kind, error = %e, "advertisement watch failed; retrying");
                continue;
            }
        };
        let mut ads = lock(&shared.advertisements);
        match event {
            Event::Init => staging = Some(BTreeMap::new()),
            Event::InitApply(a) => {
                if let Some(s) = staging.as_mut() {
                    s.insert(key(&a), pools_of(&a));
                }
                continue;
            }
            Event::InitDone => {
                let prefix = format!("{kind}/");
                ads.retain(|k, _| !k.starts_with(&prefix));
                ads.extend(staging.take().unwrap_or_default());
            }
            Event::Apply(a) => {
                ads.insert(key(&a), pools_of(&a));
            }
            Event::Delete(a) => {
                ads.remove(&key(&a));
            }
        }
        drop(ads);
        shared.dirty.notify_one();
    }
}

/// A pool by name, its reference for Events, and the status it shows.
type PoolShown = (String, ObjectReference, Option<IPPoolStatus>);

/// Writes each pool's status when it differs from what the pool shows, with
/// a Warning Event when its problems change to some.
async fn write_pool_status(
    api: Api<IPPool>,
    shared: Arc<Shared>,
    mut pools_rx: watch::Receiver<Vec<PoolShown>>,
    reporter: Reporter,
) {
    let mut written: HashMap<String, IPPoolStatus> = HashMap::new();
    loop {
        tokio::select! {
            () = shared.dirty.notified() => {}
            r = pools_rx.changed() => if r.is_err() { return },
        }
        // Let a burst of allocations settle into one write per pool.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let pools = pools_rx.borrow_and_update().clone();
        written.retain(|name, _| pools.iter().any(|(n, _, _)| n == name));
        for (name, reference, shown) in pools {
            let want = shared.status_of(&name);
            let last = written.get(&name).or(shown.as_ref());
            if last == Some(&want) {
                continue;
            }
            // A merge patch leaves out what it does not name: lists that are
            // now empty (and so not serialized) are removed explicitly.
            let mut status = serde_json::to_value(&want).unwrap_or_default();
            if let Some(fields) = status.as_object_mut() {
                for list in ["errors", "advertisements", "warnings"] {
                    fields.entry(list).or_insert(serde_json::Value::Null);
                }
            }
            let patch = serde_json::json!({ "status": status });
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    let was = last.map(|l| l.errors.as_slice()).unwrap_or_default();
                    if !want.errors.is_empty() && was != want.errors.as_slice() {
                        warn_invalid(&api, &reporter, &reference, &want.errors).await;
                    }
                    written.insert(name, want);
                }
                Err(e) => {
                    warn!(pool = %name, error = %e, "updating IPPool status failed; will retry");
                    shared.dirty.notify_one();
                }
            }
        }
    }
}

/// A Warning Event on the pool, `InvalidIPPool`, with its problems. Sent once
/// per change of problems, each time by a new recorder: kube's recorder would
/// count a changed note into the old Event and keep the old note.
async fn warn_invalid(
    api: &Api<IPPool>,
    reporter: &Reporter,
    reference: &ObjectReference,
    errors: &[String],
) {
    let mut note = errors.join("; ");
    if note.len() > 1000 {
        let mut cut = 1000;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
    let event = KubeEvent {
        type_: EventType::Warning,
        reason: "InvalidIPPool".into(),
        note: Some(note),
        action: "Validate".into(),
        secondary: None,
    };
    let recorder = Recorder::new(api.clone().into_client(), reporter.clone());
    if let Err(e) = recorder.publish(&event, reference).await {
        warn!(pool = ?reference.name, error = %e, "publishing an event failed");
    }
}

/// The addresses as [`ALLOCATED_IPS`] holds them.
fn join_addresses(addresses: &[IpAddr]) -> String {
    addresses
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The terms of a sharing as [`ALLOCATED_SHARING_TERMS`] holds them: the
/// ports sorted, so that reordering them in the spec changes nothing.
fn sharing_terms(sharing: &Sharing) -> String {
    let ports: BTreeSet<_> = sharing.ports.iter().collect();
    let ports: Vec<String> = ports
        .into_iter()
        .map(|(protocol, port)| format!("{protocol}/{port}"))
        .collect();
    format!(
        "ports={};externalTrafficPolicy={}",
        ports.join(","),
        sharing.backend
    )
}

/// What the Service's own record ([`ALLOCATED_IPS`], [`ALLOCATED_SHARING_KEY`],
/// [`ALLOCATED_SHARING_TERMS`]) says of the addresses `shown` in its status,
/// for the request it makes now.
///
/// A record with a key but no terms was written before terms were kept; it
/// vouches for the key alone.
fn record(annotations: &BTreeMap<String, String>, req: &Request, shown: &[IpAddr]) -> Record {
    let Some(ips) = annotations.get(ALLOCATED_IPS) else {
        return Record::Unknown;
    };
    let recorded: BTreeSet<Option<IpAddr>> =
        ips.split(',').map(|ip| ip.trim().parse().ok()).collect();
    let shown_set: BTreeSet<Option<IpAddr>> = shown.iter().copied().map(Some).collect();
    let key = annotations.get(ALLOCATED_SHARING_KEY).map(String::as_str);
    let wanted_key = req.sharing.as_ref().map(|s| s.key.as_str());
    let terms = annotations.get(ALLOCATED_SHARING_TERMS);
    let terms_hold = match (&req.sharing, terms) {
        (Some(sharing), Some(terms)) => *terms == sharing_terms(sharing),
        (Some(_), None) => true,
        (None, terms) => terms.is_none(),
    };
    match (recorded == shown_set && key == wanted_key, terms_hold) {
        (true, true) => Record::Current,
        (true, false) => Record::TermsChanged,
        (false, _) => Record::Stale,
    }
}

/// The addresses in `ingress` that can be ours: pool addresses are
/// published as VIPs, never as proxy addresses or hostnames.
fn vips(ingress: &[Ingress]) -> Vec<IpAddr> {
    ingress
        .iter()
        .filter_map(|i| match i {
            Ingress::Ip(ip) => Some(*ip),
            Ingress::ProxyIp(_) | Ingress::Hostname(_) => None,
        })
        .collect()
}

fn request(intent: &LoadBalancerIntent) -> Result<Request, ProviderError> {
    let requests = annotations::parse(&intent.annotations)?;
    let sharing = requests.sharing_key.map(|key| Sharing {
        key,
        ports: intent.ports.iter().map(|p| (p.protocol, p.port)).collect(),
        backend: match intent.traffic_policy {
            TrafficPolicy::Cluster => "Cluster".into(),
            TrafficPolicy::Local => "Local".into(),
        },
    });
    Ok(Request {
        service: intent.key.clone(),
        labels: intent.labels.clone(),
        families: intent.wanted_families(),
        require_all: intent.ip_family_policy != IpFamilyPolicy::PreferDualStack,
        addresses: intent.requested_addresses.clone(),
        pool: requests.pool,
        sharing,
    })
}

#[async_trait::async_trait]
impl Provider for BareMetalProvider {
    fn name(&self) -> &'static str {
        "baremetal"
    }

    fn owned_annotations(&self) -> &'static [&'static str] {
        &[
            ALLOCATED_FROM_POOL,
            ALLOCATED_IPS,
            ALLOCATED_SHARING_KEY,
            ALLOCATED_SHARING_TERMS,
        ]
    }

    fn set_change_notifier(&self, notify: ChangeNotifier) {
        *lock(&self.shared.notifier) = Some(notify);
    }

    /// An allocation lives in memory and is rebuilt from the Services'
    /// statuses on start: nothing outlives a Service deleted before our
    /// finalizer was on it.
    fn needs_finalizer_before_ensure(&self) -> bool {
        false
    }

    fn held(&self) -> Vec<ServiceKey> {
        lock(&self.shared.allocator).holding().cloned().collect()
    }

    /// An address comes from a pool whatever the nodes and endpoints; the
    /// speakers watch those for themselves.
    fn reads_targets(&self) -> bool {
        false
    }

    /// The watches of IPPools and of L2 and BGP advertisements.
    fn start(&self) {
        if self.started.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let (pools_tx, pools_rx) = watch::channel(Vec::new());
        *lock(&self.pools_rx) = Some(pools_rx);
        tokio::spawn(watch_pools(
            Api::all(self.client.clone()),
            self.shared.clone(),
            self.pools_synced.clone(),
            pools_tx,
        ));
        tokio::spawn(watch_advertisements::<L2Advertisement>(
            Api::all(self.client.clone()),
            self.shared.clone(),
            |a| a.spec.ip_pools.clone(),
        ));
        tokio::spawn(watch_advertisements::<BGPAdvertisement>(
            Api::all(self.client.clone()),
            self.shared.clone(),
            |a| a.spec.ip_pools.clone(),
        ));
    }

    async fn restore(&self, owned: Vec<OwnedService>) -> Result<(), ProviderError> {
        self.start();
        let mut synced = self.pools_synced.subscribe();
        tokio::time::timeout(Duration::from_secs(120), synced.wait_for(|s| *s))
            .await
            .map_err(|e| ProviderError::Transient {
                operation: "list IPPools",
                source: Box::new(e),
            })?
            .map_err(|e| ProviderError::Transient {
                operation: "list IPPools",
                source: Box::new(e),
            })?;

        let services: Vec<(Request, Vec<IpAddr>, Record)> = owned
            .into_iter()
            .map(|svc| {
                let addrs = vips(&svc.ingress);
                // An owned Service whose annotations became invalid still
                // keeps its addresses: restore it without pool or sharing.
                let req = request(&svc.intent).unwrap_or_else(|_| Request {
                    service: svc.intent.key.clone(),
                    labels: svc.intent.labels.clone(),
                    families: svc.intent.wanted_families(),
                    require_all: false,
                    addresses: Vec::new(),
                    pool: None,
                    sharing: None,
                });
                let record = record(&svc.intent.annotations, &req, &addrs);
                (req, addrs, record)
            })
            .collect();
        let results = lock(&self.shared.allocator).restore_all(services);
        let mut restored = 0usize;
        for (service, result) in results {
            match result {
                Ok(_) => restored += 1,
                Err(e) => {
                    warn!(%service, error = %e, "could not restore the Service's addresses; it will get new ones")
                }
            }
        }
        info!(restored, "restored allocations");
        if let Some(pools_rx) = lock(&self.pools_rx).take() {
            tokio::spawn(write_pool_status(
                Api::all(self.client.clone()),
                self.shared.clone(),
                pools_rx,
                self.reporter.clone(),
            ));
        }
        self.shared.dirty.notify_one();
        Ok(())
    }

    async fn ensure(
        &self,
        intent: &LoadBalancerIntent,
    ) -> Result<LoadBalancerStatus, ProviderError> {
        if !*self.pools_synced.borrow() {
            return Err(ProviderError::Provisioning {
                what: "IPPools not loaded yet".into(),
            });
        }
        let req = request(intent)?;
        let (allocation, changed) = {
            let mut allocator = lock(&self.shared.allocator);
            let before = allocator.allocation(&intent.key).cloned();
            let allocation = allocator
                .assign(&req)
                .map_err(|e| self.shared.unsatisfiable(&e, intent))?;
            let changed = before.as_ref() != Some(&allocation);
            (allocation, changed)
        };
        if changed {
            // A Service that moved keeps its old addresses taken until its
            // new status is out (see `published`).
            info!(service = %intent.key, addresses = ?allocation.addresses, pool = %allocation.pool, "allocated");
            self.shared.dirty.notify_one();
        }
        Ok(LoadBalancerStatus {
            ingress: allocation
                .addresses
                .iter()
                .map(|a| Ingress::Ip(*a))
                .collect(),
            annotations: BTreeMap::from([
                (
                    ALLOCATED_FROM_POOL.to_string(),
                    Some(allocation.pool.clone()),
                ),
                (
                    ALLOCATED_IPS.to_string(),
                    Some(join_addresses(&allocation.addresses)),
                ),
                (
                    ALLOCATED_SHARING_KEY.to_string(),
                    req.sharing.as_ref().map(|s| s.key.clone()),
                ),
                (
                    ALLOCATED_SHARING_TERMS.to_string(),
                    req.sharing.as_ref().map(sharing_terms),
                ),
            ]),
        })
    }

    fn published(&self, key: &ServiceKey, status: &LoadBalancerStatus) {
        if lock(&self.shared.allocator).published(key, &vips(&status.ingress)) {
            debug!(service = %key, "the addresses it moved away from are free");
            self.shared.dirty.notify_one();
            self.shared.notify_waiting();
        }
    }

    async fn delete(&self, key: &ServiceKey) -> Result<(), ProviderError> {
        let released = lock(&self.shared.allocator).release(key);
        if released {
            info!(service = %key, "released addresses");
            self.shared.dirty.notify_one();
            self.shared.notify_waiting();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotations::tests::ann as annotations;

    fn req(key: Option<&str>) -> Request {
        Request {
            service: ServiceKey {
                namespace: "ns".into(),
                name: "s".into(),
            },
            labels: BTreeMap::new(),
            families: vec![ferrolb_provider_api::IpFamily::V4],
            require_all: true,
            addresses: Vec::new(),
            pool: None,
            sharing: key.map(|k| Sharing {
                key: k.into(),
                ports: Vec::new(),
                backend: "Cluster".into(),
            }),
        }
    }

    #[test]
    fn the_record_vouches_only_for_what_it_names() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let shown = [ip("10.0.0.1"), ip("fd00::1")];
        let both = annotations(&[
            (ALLOCATED_IPS, "fd00::1,10.0.0.1"),
            (ALLOCATED_SHARING_KEY, "k"),
        ]);
        assert_eq!(record(&both, &req(Some("k")), &shown), Record::Current);
        // The key changed after the addresses were given.
        assert_eq!(record(&both, &req(Some("j")), &shown), Record::Stale);
        assert_eq!(record(&both, &req(None), &shown), Record::Stale);
        // Given other addresses since; the status still shows the old ones.
        assert_eq!(
            record(&both, &req(Some("k")), &[ip("10.0.0.2"), ip("fd00::1")]),
            Record::Stale
        );
        let unkeyed = annotations(&[(ALLOCATED_IPS, "10.0.0.1")]);
        assert_eq!(
            record(&unkeyed, &req(None), &[ip("10.0.0.1")]),
            Record::Current
        );
        assert_eq!(
            record(&unkeyed, &req(Some("k")), &[ip("10.0.0.1")]),
            Record::Stale
        );
        let garbled = annotations(&[(ALLOCATED_IPS, "10.0.0.1,nope")]);
        assert_eq!(
            record(&garbled, &req(None), &[ip("10.0.0.1")]),
            Record::Stale
        );
        assert_eq!(
            record(&BTreeMap::new(), &req(None), &[ip("10.0.0.1")]),
            Record::Unknown
        );
    }

    #[test]
    fn the_record_names_the_terms_of_a_sharing() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let shown = [ip("10.0.0.1")];
        let sharing = |ports: &[u16], backend: &str| {
            let mut r = req(Some("k"));
            let s = r.sharing.as_mut().unwrap();
            s.ports = ports
                .iter()
                .map(|p| (ferrolb_provider_api::Protocol::Tcp, *p))
                .collect();
            s.ports.push((ferrolb_provider_api::Protocol::Udp, 53));
            s.backend = backend.into();
            r
        };
        let given = sharing(&[443, 80], "Cluster");
        let terms = sharing_terms(given.sharing.as_ref().unwrap());
        assert_eq!(
            terms,
            "ports=TCP/80,TCP/443,UDP/53;externalTrafficPolicy=Cluster"
        );
        let recorded = annotations(&[
            (ALLOCATED_IPS, "10.0.0.1"),
            (ALLOCATED_SHARING_KEY, "k"),
            (ALLOCATED_SHARING_TERMS, terms.as_str()),
        ]);
        assert_eq!(record(&recorded, &given, &shown), Record::Current);
        // The same ports in another order are the same terms.
        assert_eq!(
            record(&recorded, &sharing(&[80, 443], "Cluster"), &shown),
            Record::Current
        );
        // A port or the policy changed after the address was given.
        assert_eq!(
            record(&recorded, &sharing(&[80, 8443], "Cluster"), &shown),
            Record::TermsChanged
        );
        assert_eq!(
            record(&recorded, &sharing(&[443, 80], "Local"), &shown),
            Record::TermsChanged
        );
        // Terms without a sharing, e.g. the key was taken away.
        assert_eq!(record(&recorded, &req(None), &shown), Record::Stale);
        // A record from before terms were kept vouches for the key alone.
        let keyed = annotations(&[(ALLOCATED_IPS, "10.0.0.1"), (ALLOCATED_SHARING_KEY, "k")]);
        assert_eq!(record(&keyed, &given, &shown), Record::Current);
    }
}
