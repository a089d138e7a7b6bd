//! `ferrolb speaker`: runs on every node and makes the network deliver each
//! allocated address: by layer 2, one eligible node answers ARP and NDP for
//! it; by BGP, every eligible node advertises a route for it to its peers.
//!
//! The speaker watches what it needs to decide (Services, EndpointSlices,
//! Nodes, IPPools, L2Advertisements, BGPPeers, BGPAdvertisements), hears from
//! the other speakers by UDP heartbeat, and recomputes both plans on every
//! change. The layer-2 plan is the same on every node, so each speaker answers
//! for exactly the addresses it won. It writes only the Services'
//! announcement conditions and its own entry in each BGPPeer's status.

mod bgp;
mod status;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use ferrolb_baremetal::allocator::{Pool, Selector, pool_from_spec};
use ferrolb_baremetal::annotations::ALLOCATED_FROM_POOL;
use ferrolb_baremetal::crd::{
    BGPAdvertisement, BGPPeer, BGPSessionStatus, IPPool, L2Advertisement,
};
use ferrolb_baremetal::speaker::bgp::plan::BgpAdvertisement;
use ferrolb_baremetal::speaker::membership::{Membership, Timing};
use ferrolb_baremetal::speaker::metrics::SpeakerMetrics;
use ferrolb_baremetal::speaker::plan::{self, AddressPlan, Advertisement, Inputs, ServiceView};
use ferrolb_baremetal::speaker::responder::Responder;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::args::SpeakerArgs;
use crate::metrics::{self, Exposition};
use crate::reconcile::Config;

/// Every address's decisions, as the status writer reads them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plans {
    pub l2: BTreeMap<IpAddr, AddressPlan>,
    /// Only the addresses a BGPAdvertisement covers.
    pub bgp: BTreeMap<IpAddr, BgpAddressPlan>,
}

/// Which nodes advertise an address over BGP, as the plan has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpAddressPlan {
    pub services: Vec<String>,
    /// Alive nodes that advertise it to at least one peer.
    pub advertisers: Vec<String>,
    /// The node that writes the Service's condition (as for layer 2).
    pub reporter: Option<String>,
}

struct Exposed {
    metrics: Arc<SpeakerMetrics>,
    ready: AtomicBool,
}

impl Exposition for Exposed {
    fn encode(&self) -> String {
        self.metrics.encode()
    }
    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// Refuses timings that cannot work: a zero interval, or a timeout that a
/// single late heartbeat would reach.
fn check_timing(args: &SpeakerArgs) -> anyhow::Result<()> {
    if args.heartbeat_interval.is_zero() {
        anyhow::bail!("--heartbeat-interval must be more than 0");
    }
    if args.peer_timeout < args.heartbeat_interval * 2 {
        anyhow::bail!(
            "--peer-timeout ({:?}) must be at least twice --heartbeat-interval ({:?}), or one late heartbeat moves every address",
            args.peer_timeout,
            args.heartbeat_interval
        );
    }
    Ok(())
}

pub async fn run(args: SpeakerArgs) -> anyhow::Result<()> {
    check_timing(&args)?;
    let me = args.node_name.clone();
    let client = crate::client(args.kubeconfig.as_deref()).await?;
    let exposed = Arc::new(Exposed {
        metrics: Arc::new(SpeakerMetrics::new()),
        ready: AtomicBool::new(false),
    });
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding --metrics-addr {}", args.metrics_addr))?;
    tokio::spawn(metrics::serve(listener, exposed.clone()));
    let mut shutdown = Box::pin(crate::shutdown_signal()?);
    info!(node = %me, class = %args.load_balancer_class, "starting speaker");

    let changed = Arc::new(Notify::new());
    let world = World {
        services: reflect(Api::all(client.clone()), &changed, strip_service),
        slices: reflect(Api::all(client.clone()), &changed, strip_slice),
        nodes: reflect(Api::all(client.clone()), &changed, strip_node),
        pools: reflect(Api::all(client.clone()), &changed, |_: &mut IPPool| {}),
        ads: reflect(
            Api::all(client.clone()),
            &changed,
            |_: &mut L2Advertisement| {},
        ),
        bgp_peers: reflect(Api::all(client.clone()), &changed, |_: &mut BGPPeer| {}),
        bgp_ads: reflect(
            Api::all(client.clone()),
            &changed,
            |_: &mut BGPAdvertisement| {},
        ),
        config: Config {
            class: args.load_balancer_class.clone(),
            default_class: args.default_class,
            resync: Duration::ZERO,
        },
    };
    tokio::select! {
        r = world.wait_until_ready() => r?,
        () = &mut shutdown => return Ok(()),
    }

    let membership = Membership::start(
        me.clone(),
        args.heartbeat_port,
        Timing {
            interval: args.heartbeat_interval,
            timeout: args.peer_timeout,
        },
    )
    .await
    .with_context(|| format!("binding --heartbeat-port {}", args.heartbeat_port))?;
    membership.set_targets(world.peer_addresses(&me));
    // Hear from the live speakers before claiming anything, or this one
    // would briefly answer for addresses that others hold. Meanwhile the
    // others keep this node's addresses: it says it is joining.
    tokio::select! {
        () = tokio::time::sleep(args.peer_timeout + args.heartbeat_interval) => {}
        () = &mut shutdown => return Ok(()),
    }
    membership.set_ready().await;

    let responder = Responder::new(exposed.metrics.clone());
    let (plans_tx, plans_rx) = watch::channel(Arc::new(Plans::default()));
    tokio::spawn(status::run(
        client.clone(),
        me.clone(),
        world.services.clone(),
        plans_rx,
    ));
    exposed.ready.store(true, Ordering::Relaxed);
    let mut alive_rx = membership.subscribe();
    let mut rescan = tokio::time::interval(Duration::from_secs(2));
    let mut warned = BTreeSet::new();
    let mut bgp = BgpSide::default();
    loop {
        let alive = alive_rx.borrow_and_update().clone();
        exposed.metrics.peers_alive.set(alive.len() as i64);
        let snapshot = world.snapshot();
        let l2 = world.plan(&snapshot, &alive, &mut warned);
        let mine = l2
            .values()
            .filter_map(|p| match &p.announcer {
                Some((node, ifaces)) if *node == me => Some((p.address, ifaces.clone())),
                _ => None,
            })
            .collect();
        // Layer 2 first: a failover waits on nothing else.
        responder.set(mine);
        let bgp_ads = bgp.advertisements(&world);
        bgp.sync(
            &client,
            &world,
            &snapshot,
            &bgp_ads,
            &me,
            &args.namespace,
            &changed,
            &exposed.metrics,
        );
        membership.set_targets(world.peer_addresses(&me));
        let plans = Plans {
            bgp: world.bgp_plan(&snapshot, &l2, &alive, &me, &bgp_ads),
            l2,
        };
        plans_tx.send_if_modified(|old| {
            let differ = **old != plans;
            if differ {
                *old = Arc::new(plans);
            }
            differ
        });
        tokio::select! {
            () = changed.notified() => {}
            r = alive_rx.changed() => if r.is_err() { break },
            _ = rescan.tick() => responder.sync_interfaces(),
            () = &mut shutdown => break,
        }
    }
    // Stop answering first, then tell the others: they take over at once
    // rather than after the peer timeout. Withdraw every BGP route meanwhile.
    responder.set(BTreeMap::new());
    tokio::join!(membership.leave(), bgp.sessions.stop_all());
    info!("handed over every address; exiting");
    Ok(())
}

/// A watched, cached kind; every change wakes `changed`. While the watch
/// lists again the store keeps the old list, so a new list wakes `changed`
/// once it is complete, not for each object in it: woken earlier, the
/// speaker would act on the old list and hear nothing more.
fn reflect<K>(api: Api<K>, changed: &Arc<Notify>, strip: fn(&mut K)) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let kind = K::kind(&Default::default()).into_owned();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(strip)
        .reflect(writer);
    let changed = changed.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => changed.notify_one(),
                Err(e) => warn!(%kind, error = %e, "watch failed; retrying"),
            }
        }
    });
    reader
}

fn strip_service(svc: &mut Service) {
    svc.metadata.managed_fields = None;
    if let Some(a) = svc.metadata.annotations.as_mut() {
        a.retain(|k, _| k == ALLOCATED_FROM_POOL);
    }
}

fn strip_slice(slice: &mut EndpointSlice) {
    slice.metadata.managed_fields = None;
    slice.metadata.annotations = None;
    slice.ports = None;
    for ep in &mut slice.endpoints {
        ep.addresses.clear();
        ep.target_ref = None;
        ep.hints = None;
    }
}

/// A Node is kept for its name, labels and addresses.
fn strip_node(node: &mut Node) {
    node.metadata.managed_fields = None;
    node.metadata.annotations = None;
    node.spec = None;
    if let Some(status) = node.status.as_mut() {
        *status = k8s_openapi::api::core::v1::NodeStatus {
            addresses: status.addresses.take(),
            ..Default::default()
        };
    }
}

/// See [`World::snapshot`].
struct Snapshot {
    services: Vec<ServiceView>,
    nodes: BTreeMap<String, BTreeMap<String, String>>,
    pools: Vec<Pool>,
}

struct World {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    nodes: Store<Node>,
    pools: Store<IPPool>,
    ads: Store<L2Advertisement>,
    bgp_peers: Store<BGPPeer>,
    bgp_ads: Store<BGPAdvertisement>,
    config: Config,
}

impl World {
    async fn wait_until_ready(&self) -> anyhow::Result<()> {
        self.services.wait_until_ready().await?;
        self.slices.wait_until_ready().await?;
        self.nodes.wait_until_ready().await?;
        self.pools.wait_until_ready().await?;
        self.ads.wait_until_ready().await?;
        self.bgp_peers.wait_until_ready().await?;
        self.bgp_ads.wait_until_ready().await?;
        Ok(())
    }

    /// Where the other nodes' speakers listen: each Node's InternalIP, else
    /// its ExternalIP.
    fn peer_addresses(&self, me: &str) -> Vec<IpAddr> {
        self.nodes
            .state()
            .iter()
            .filter(|n| n.name_any() != me)
            .filter_map(|n| {
                let addrs = n.status.as_ref()?.addresses.as_ref()?;
                ["InternalIP", "ExternalIP"].iter().find_map(|kind| {
                    addrs
                        .iter()
                        .filter(|a| a.type_ == *kind)
                        .find_map(|a| a.address.parse().ok())
                })
            })
            .collect()
    }

    /// What both protocols decide from: our Services with their endpoints,
    /// the nodes' labels, the pools.
    fn snapshot(&self) -> Snapshot {
        let endpoints = self.endpoints();
        Snapshot {
            services: self
                .services
                .state()
                .iter()
                .filter(|s| self.config.is_ours(s))
                // Being deleted: stop announcing now, not when the controller
                // has finished its cleanup.
                .filter(|s| s.metadata.deletion_timestamp.is_none())
                .filter_map(|s| service_view(s, &endpoints))
                .collect(),
            nodes: self
                .nodes
                .state()
                .iter()
                .map(|n| (n.name_any(), n.labels().clone()))
                .collect(),
            pools: self
                .pools
                .state()
                .iter()
                .filter_map(|p| pool_from_spec(&p.name_any(), &p.spec).ok())
                .collect(),
        }
    }

    fn plan(
        &self,
        snap: &Snapshot,
        alive: &BTreeSet<String>,
        warned: &mut BTreeSet<String>,
    ) -> BTreeMap<IpAddr, AddressPlan> {
        let ads: Vec<Advertisement> = self
            .ads
            .state()
            .iter()
            .filter_map(|a| match advertisement(a) {
                Ok(ad) => {
                    warned.remove(&ad.name);
                    Some(ad)
                }
                Err(e) => {
                    if warned.insert(a.name_any()) {
                        warn!(advertisement = %a.name_any(), error = %e, "ignoring an invalid L2Advertisement");
                    }
                    None
                }
            })
            .collect();
        plan::plan(&Inputs {
            services: &snap.services,
            nodes: &snap.nodes,
            pools: &snap.pools,
            advertisements: &ads,
            alive,
        })
    }

    /// For the addresses this node reports on, which alive nodes advertise
    /// them over BGP: those a BGPPeer and a covering BGPAdvertisement select,
    /// serving the Service under its traffic policy.
    fn bgp_plan(
        &self,
        snap: &Snapshot,
        l2: &BTreeMap<IpAddr, AddressPlan>,
        alive: &BTreeSet<String>,
        me: &str,
        ads: &[BgpAdvertisement],
    ) -> BTreeMap<IpAddr, BgpAddressPlan> {
        use ferrolb_baremetal::speaker::bgp::plan::{NodeRouting, routes};
        if ads.is_empty() {
            return BTreeMap::new();
        }
        // Per alive node, once: its labels and the peers that select it.
        let peers: Vec<(String, Vec<Selector>)> = self
            .bgp_peers
            .state()
            .iter()
            .filter_map(|p| {
                Some((
                    p.name_any(),
                    bgp::node_selectors(&p.spec.node_selectors).ok()?,
                ))
            })
            .collect();
        let no_labels = BTreeMap::new();
        let nodes: Vec<(&String, NodeRouting, Vec<String>)> = alive
            .iter()
            .map(|node| {
                let labels = snap.nodes.get(node).unwrap_or(&no_labels);
                let selected = peers
                    .iter()
                    .filter(|(_, sels)| sels.is_empty() || sels.iter().any(|s| s.matches(labels)))
                    .map(|(name, _)| name.clone())
                    .collect();
                // The next hops only need to exist here.
                let routing = NodeRouting {
                    labels: labels.clone(),
                    next_hop_v4: Some(IpAddr::from([0, 0, 0, 0])),
                    next_hop_v6: Some(IpAddr::from([0u16; 8])),
                };
                (node, routing, selected)
            })
            .collect();
        let mut out = BTreeMap::new();
        for p in l2.values() {
            if p.reporter.as_deref() != Some(me) {
                continue;
            }
            if !ads
                .iter()
                .any(|a| a.pools.is_empty() || a.pools.contains(&p.pool))
            {
                continue;
            }
            let services: Vec<ServiceView> = snap
                .services
                .iter()
                .filter(|s| s.addresses.contains(&p.address) && p.services.contains(&s.key()))
                .map(|s| ServiceView {
                    addresses: vec![p.address],
                    ..s.clone()
                })
                .collect();
            let advertisers = nodes
                .iter()
                .filter(|(node, routing, selected)| {
                    routes(node, routing, &services, &snap.pools, ads, selected)
                        .values()
                        .any(|r| !r.is_empty())
                })
                .map(|(node, _, _)| (*node).clone())
                .collect();
            out.insert(
                p.address,
                BgpAddressPlan {
                    services: p.services.clone(),
                    advertisers,
                    reporter: p.reporter.clone(),
                },
            );
        }
        out
    }

    /// This node's addresses, one per family, as next hops and router ID.
    fn my_addresses(&self, me: &str) -> (Option<IpAddr>, Option<IpAddr>) {
        let node = self.nodes.get(&reflector::ObjectRef::new(me));
        let addrs: Vec<IpAddr> = node
            .as_ref()
            .and_then(|n| n.status.as_ref())
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        (
            addrs.iter().copied().find(IpAddr::is_ipv4),
            addrs.iter().copied().find(IpAddr::is_ipv6),
        )
    }

    /// Per Service, whether any endpoint is ready, and the nodes of the ready
    /// ones.
    fn endpoints(&self) -> HashMap<(String, String), (bool, BTreeSet<String>)> {
        let mut out: HashMap<(String, String), (bool, BTreeSet<String>)> = HashMap::new();
        for slice in self.slices.state() {
            let Some(svc) = slice.labels().get("kubernetes.io/service-name") else {
                continue;
            };
            let entry = out
                .entry((slice.namespace().unwrap_or_default(), svc.clone()))
                .or_default();
            for ep in &slice.endpoints {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready) != Some(false);
                if ready {
                    entry.0 = true;
                    if let Some(node) = &ep.node_name {
                        entry.1.insert(node.clone());
                    }
                }
            }
        }
        out
    }
}

fn service_view(
    svc: &Service,
    endpoints: &HashMap<(String, String), (bool, BTreeSet<String>)>,
) -> Option<ServiceView> {
    let addresses: Vec<IpAddr> = svc
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .iter()
        .filter_map(|i| i.ip.as_ref()?.parse().ok())
        .collect();
    if addresses.is_empty() {
        return None;
    }
    let namespace = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let (any_ready, endpoint_nodes) = endpoints
        .get(&(namespace.clone(), name.clone()))
        .cloned()
        .unwrap_or_default();
    Some(ServiceView {
        addresses,
        pool: svc.annotations().get(ALLOCATED_FROM_POOL).cloned(),
        local: svc
            .spec
            .as_ref()
            .and_then(|s| s.external_traffic_policy.as_deref())
            == Some("Local"),
        endpoint_nodes,
        any_ready,
        namespace,
        name,
    })
}

fn advertisement(a: &L2Advertisement) -> Result<Advertisement, String> {
    let node_selectors = bgp::node_selectors(&a.spec.node_selectors)?;
    Ok(Advertisement {
        name: a.name_any(),
        pools: a.spec.ip_pools.clone(),
        interfaces: a.spec.interfaces.clone(),
        node_selectors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> SpeakerArgs {
        let cli = crate::args::Cli::try_parse_from(
            ["ferrolb", "speaker", "--node-name", "n"]
                .iter()
                .chain(extra),
        )
        .unwrap();
        match cli.command {
            crate::args::Command::Speaker(a) => *a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn timings_that_cannot_work_are_refused() {
        assert!(check_timing(&args(&[])).is_ok(), "the defaults work");
        assert!(check_timing(&args(&["--heartbeat-interval", "0ms"])).is_err());
        let err = check_timing(&args(&["--peer-timeout", "150ms"])).unwrap_err();
        assert!(err.to_string().contains("--peer-timeout"), "{err}");
    }
}

/// The BGP half of the loop: which peers, which routes, and their metrics.
#[derive(Default)]
struct BgpSide {
    sessions: bgp::Sessions,
    /// Passwords read from Secrets, by peer: the peer's resourceVersion when
    /// read, what was read, and when. Filled in the background so the loop
    /// never waits on the apiserver.
    passwords: Arc<std::sync::Mutex<HashMap<String, PasswordRead>>>,
    warned: BTreeMap<String, String>,
    /// Peers selecting this node that it cannot use, with the problem: shown
    /// in their status and, when new, in a Warning Event.
    invalid: BTreeMap<String, String>,
    updates_seen: HashMap<String, u64>,
    /// What this node last wrote in each peer's status, and when.
    written: HashMap<String, (BGPSessionStatus, std::time::Instant)>,
    /// Writes of status entries run one at a time, in order; a write that
    /// a newer one for the same peer has overtaken is skipped, so an older
    /// state never lands last.
    status_latest: Arc<std::sync::Mutex<HashMap<String, u64>>>,
    status_queue: Arc<tokio::sync::Mutex<()>>,
    status_seq: u64,
}

/// A session's prefix count is written at most this often; state changes at
/// once.
const PEER_STATUS_EVERY: Duration = Duration::from_secs(5);

struct PasswordRead {
    version: Option<String>,
    /// `None` while the read is in flight.
    result: Option<Result<Option<String>, String>>,
    at: std::time::Instant,
}

/// How long a password read from a Secret is used before it is read again.
const PASSWORD_TTL: Duration = Duration::from_secs(60);

impl BgpSide {
    /// The peer's password if known; else starts reading it, and `changed`
    /// is woken when it is there.
    fn password(
        &self,
        client: &kube::Client,
        peer: &BGPPeer,
        namespace: &str,
        changed: &Arc<Notify>,
    ) -> Option<Result<Option<String>, String>> {
        if peer.spec.password_secret.is_none() {
            return Some(Ok(None));
        }
        let name = peer.name_any();
        let version = peer.resource_version();
        let mut cache = self.passwords.lock().unwrap_or_else(|e| e.into_inner());
        let known = cache.get(&name).filter(|r| r.version == version);
        let stale = known.is_none_or(|r| r.result.is_some() && r.at.elapsed() > PASSWORD_TTL);
        let current = known.and_then(|r| r.result.clone());
        if stale {
            cache.insert(
                name.clone(),
                PasswordRead {
                    version,
                    result: current.clone(),
                    at: std::time::Instant::now(),
                },
            );
            let (client, peer, namespace) = (client.clone(), peer.clone(), namespace.to_string());
            let (passwords, changed) = (self.passwords.clone(), changed.clone());
            tokio::spawn(async move {
                let read = bgp::password(&client, &peer, &namespace).await;
                if let Some(r) = passwords
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_mut(&peer.name_any())
                {
                    r.result = Some(read);
                    r.at = std::time::Instant::now();
                }
                changed.notify_one();
            });
        }
        current
    }

    /// The valid BGPAdvertisements; the others are logged once.
    fn advertisements(&mut self, world: &World) -> Vec<BgpAdvertisement> {
        world
            .bgp_ads
            .state()
            .iter()
            .filter_map(|a| match bgp::advertisement(a) {
                Ok(ad) => Some(ad),
                Err(e) => {
                    bgp::warn_once(
                        &mut self.warned,
                        &format!("BGPAdvertisement/{}", a.name_any()),
                        &e,
                    );
                    None
                }
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn sync(
        &mut self,
        client: &kube::Client,
        world: &World,
        snap: &Snapshot,
        ads: &[BgpAdvertisement],
        me: &str,
        namespace: &str,
        changed: &Arc<Notify>,
        metrics: &SpeakerMetrics,
    ) {
        let no_labels = BTreeMap::new();
        let labels = snap.nodes.get(me).unwrap_or(&no_labels);
        let (v4, v6) = world.my_addresses(me);
        let router_id = match v4 {
            Some(IpAddr::V4(a)) => a,
            _ => router_id_from_name(me),
        };
        let mut want = BTreeMap::new();
        let mut invalid = BTreeMap::new();
        for peer in world.bgp_peers.state() {
            let name = peer.name_any();
            let problem = match bgp::selects(&peer, labels) {
                Ok(true) => match self.password(client, &peer, namespace, changed) {
                    None => continue,
                    Some(Ok(password)) => match bgp::peer_config(&peer, router_id, password) {
                        Ok(cfg) => {
                            self.warned.remove(&name);
                            want.insert(name, cfg);
                            continue;
                        }
                        Err(e) => e,
                    },
                    Some(Err(e)) => e,
                },
                Ok(false) => continue,
                Err(e) => e,
            };
            bgp::warn_once(&mut self.warned, &name, &problem);
            if self.invalid.get(&name) != Some(&problem) {
                report_invalid_peer(client, &peer, me, &problem);
            }
            invalid.insert(name, problem);
        }
        self.invalid = invalid;
        {
            let peers: BTreeSet<String> = world
                .bgp_peers
                .state()
                .iter()
                .map(|p| p.name_any())
                .collect();
            self.passwords
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|n, _| peers.contains(n));
        }
        let peers: Vec<String> = want.keys().cloned().collect();
        let routes = ferrolb_baremetal::speaker::bgp::plan::routes(
            me,
            &ferrolb_baremetal::speaker::bgp::plan::NodeRouting {
                labels: labels.clone(),
                next_hop_v4: v4,
                next_hop_v6: v6,
            },
            &snap.services,
            &snap.pools,
            ads,
            &peers,
        );
        self.sessions.sync(want, routes);
        self.record(metrics);
        self.write_status(client, me);
    }

    /// This node's entry in each peer's `status.nodes`, by server-side apply
    /// with a field manager of its own, so each node owns exactly its entry.
    fn write_status(&mut self, client: &kube::Client, me: &str) {
        let mut statuses: BTreeMap<String, BGPSessionStatus> = self
            .sessions
            .statuses()
            .into_iter()
            .map(|(peer, s)| {
                let entry = BGPSessionStatus {
                    node: me.to_string(),
                    state: s.state.as_str().to_string(),
                    last_error: s.last_error.clone(),
                    prefixes: s.advertised as u32,
                };
                (peer, entry)
            })
            .collect();
        for (peer, problem) in &self.invalid {
            statuses.insert(
                peer.clone(),
                BGPSessionStatus {
                    node: me.to_string(),
                    state: INVALID.to_string(),
                    last_error: Some(problem.clone()),
                    prefixes: 0,
                },
            );
        }
        let mut writes: Vec<(String, Option<BGPSessionStatus>)> = Vec::new();
        for (peer, entry) in statuses.iter() {
            let entry = entry.clone();
            let due = match self.written.get(peer) {
                None => true,
                Some((old, _)) if *old == entry => false,
                Some((old, at)) => {
                    old.state != entry.state
                        || old.last_error != entry.last_error
                        || at.elapsed() >= PEER_STATUS_EVERY
                }
            };
            if due {
                self.written
                    .insert(peer.clone(), (entry.clone(), std::time::Instant::now()));
                writes.push((peer.clone(), Some(entry)));
            }
        }
        let gone: Vec<String> = self
            .written
            .keys()
            .filter(|p| !statuses.contains_key(*p))
            .cloned()
            .collect();
        for peer in gone {
            self.written.remove(&peer);
            writes.push((peer, None));
        }
        for (peer, entry) in writes {
            let client = client.clone();
            let manager = field_manager(me);
            self.status_seq += 1;
            let seq = self.status_seq;
            self.status_latest
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(peer.clone(), seq);
            let (latest, queue) = (self.status_latest.clone(), self.status_queue.clone());
            tokio::spawn(async move {
                let _turn = queue.lock().await;
                let overtaken = latest
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&peer)
                    .is_some_and(|l| *l > seq);
                if overtaken {
                    return;
                }
                let api: Api<BGPPeer> = Api::all(client);
                let nodes: Vec<BGPSessionStatus> = entry.into_iter().collect();
                let patch = serde_json::json!({
                    "apiVersion": "ferrolb.io/v1alpha1",
                    "kind": "BGPPeer",
                    "metadata": { "name": peer },
                    "status": { "nodes": nodes },
                });
                let params = kube::api::PatchParams::apply(&manager).force();
                if let Err(e) = api
                    .patch_status(&peer, &params, &kube::api::Patch::Apply(&patch))
                    .await
                {
                    // Gone with its peer, or refused: the next change retries.
                    tracing::debug!(%peer, error = %e, "writing the BGPPeer's status failed");
                }
            });
        }
    }

    fn record(&mut self, metrics: &SpeakerMetrics) {
        use ferrolb_baremetal::speaker::metrics::PeerLabels;
        for (peer, status) in self.sessions.statuses() {
            let labels = PeerLabels { peer: peer.clone() };
            metrics
                .bgp_session_up
                .get_or_create(&labels)
                .set(i64::from(bgp::is_up(&status)));
            metrics
                .bgp_prefixes_advertised
                .get_or_create(&labels)
                .set(status.advertised as i64);
            let seen = self.updates_seen.entry(peer).or_default();
            if status.updates_sent > *seen {
                metrics
                    .bgp_updates
                    .get_or_create(&labels)
                    .inc_by(status.updates_sent - *seen);
                *seen = status.updates_sent;
            }
        }
    }
}

/// The state of a peer's status entry when this node cannot use the peer
/// (a missing password Secret, an address that does not parse); `lastError`
/// says why.
const INVALID: &str = "Invalid";

/// A Warning Event on the BGPPeer, `InvalidBGPPeer`, saying what this node
/// cannot use it for. Sent in the background; the status entry says the same.
fn report_invalid_peer(client: &kube::Client, peer: &BGPPeer, me: &str, problem: &str) {
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "ferrolb-speaker".into(),
            instance: Some(me.to_string()),
        },
    );
    let reference = peer.object_ref(&());
    let event = Event {
        type_: EventType::Warning,
        reason: "InvalidBGPPeer".into(),
        note: Some(format!("node {me} cannot peer: {problem}")),
        action: "Peer".into(),
        secondary: None,
    };
    let peer = peer.name_any();
    tokio::spawn(async move {
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::warn!(%peer, error = %e, "publishing an event failed");
        }
    });
}

/// This node's field manager for the entries it owns; the apiserver takes at
/// most 128 characters, so long node names are shortened with a hash.
fn field_manager(node: &str) -> String {
    if node.len() <= 100 {
        return format!("ferrolb-speaker-{node}");
    }
    let cut = (0..=80)
        .rev()
        .find(|i| node.is_char_boundary(*i))
        .unwrap_or(0);
    format!(
        "ferrolb-speaker-{}-{:08x}",
        &node[..cut],
        u32::from(router_id_from_name(node))
    )
}

/// A stable router ID for a node without an IPv4 address.
fn router_id_from_name(name: &str) -> std::net::Ipv4Addr {
    let mut h: u32 = 2_166_136_261;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(16_777_619);
    }
    std::net::Ipv4Addr::from(h | 1)
}
