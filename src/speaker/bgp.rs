//! The speaker's BGP side: one session per `BGPPeer` that selects this node,
//! each fed the routes [`routes`](ferrolb_baremetal::speaker::bgp::plan::routes)
//! gives for it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ferrolb_baremetal::allocator::Selector;
use ferrolb_baremetal::crd::{BGPAdvertisement, BGPPeer};
use ferrolb_baremetal::speaker::bgp::plan::{BgpAdvertisement, Community, parse_community};
use ferrolb_baremetal::speaker::bgp::session::{PeerConfig, Routes, Session, State, Status};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::Api;
use kube::{Client, ResourceExt};
use tracing::{info, warn};

use crate::args::parse_duration;

/// A BGPPeer read for this node: its session's configuration, or why it
/// cannot be used.
pub fn peer_config(
    peer: &BGPPeer,
    router_id: Ipv4Addr,
    password: Option<String>,
) -> Result<PeerConfig, String> {
    let spec = &peer.spec;
    let ip: IpAddr = spec.peer_address.parse().map_err(|_| {
        format!(
            "spec.peerAddress {:?} is not an IP address",
            spec.peer_address
        )
    })?;
    let source = spec
        .source_address
        .as_deref()
        .map(|s| {
            s.parse()
                .map_err(|_| format!("spec.sourceAddress {s:?} is not an IP address"))
        })
        .transpose()?;
    let hold_time = match spec.hold_time.as_deref() {
        Some(h) => parse_duration(h).map_err(|e| format!("spec.holdTime: {e}"))?,
        None => Duration::from_secs(90),
    };
    if !hold_time.is_zero() && hold_time < Duration::from_secs(3) {
        return Err(format!(
            "spec.holdTime {hold_time:?} is neither 0 nor at least 3s"
        ));
    }
    let keepalive = spec
        .keepalive_time
        .as_deref()
        .map(|k| parse_duration(k).map_err(|e| format!("spec.keepaliveTime: {e}")))
        .transpose()?;
    Ok(PeerConfig {
        name: peer.name_any(),
        my_asn: spec.my_asn,
        peer_asn: spec.peer_asn,
        peer: SocketAddr::new(ip, spec.peer_port.unwrap_or(179)),
        source,
        hold_time,
        keepalive,
        password,
        router_id,
        ebgp_multihop: spec.ebgp_multi_hop,
    })
}

/// A BGPAdvertisement, validated.
pub fn advertisement(a: &BGPAdvertisement) -> Result<BgpAdvertisement, String> {
    let spec = &a.spec;
    let mut communities = Vec::new();
    let mut large_communities = Vec::new();
    for (i, c) in spec.communities.iter().enumerate() {
        match parse_community(c).map_err(|e| format!("spec.communities[{i}]: {e}"))? {
            Community::Standard(v) => communities.push(v),
            Community::Large(v) => large_communities.push(v),
        }
    }
    let node_selectors = node_selectors(&spec.node_selectors)?;
    Ok(BgpAdvertisement {
        name: a.name_any(),
        pools: spec.ip_pools.clone(),
        aggregation_length: spec.aggregation_length.unwrap_or(32),
        aggregation_length_v6: spec.aggregation_length_v6.unwrap_or(128),
        communities,
        large_communities,
        local_pref: spec.local_pref,
        peers: spec.peers.clone(),
        node_selectors,
    })
}

/// A resource's `spec.nodeSelectors`, validated.
pub fn node_selectors(list: &[LabelSelector]) -> Result<Vec<Selector>, String> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            Selector::from_label_selector(s).map_err(|e| format!("spec.nodeSelectors[{i}]: {e}"))
        })
        .collect()
}

/// Whether the peer's node selectors pick this node (empty: every node).
pub fn selects(peer: &BGPPeer, labels: &BTreeMap<String, String>) -> Result<bool, String> {
    let selectors = node_selectors(&peer.spec.node_selectors)?;
    Ok(selectors.is_empty() || selectors.iter().any(|s| s.matches(labels)))
}

/// The password in the peer's Secret (key `password`), if it names one.
pub async fn password(
    client: &Client,
    peer: &BGPPeer,
    namespace: &str,
) -> Result<Option<String>, String> {
    let Some(r) = &peer.spec.password_secret else {
        return Ok(None);
    };
    let ns = namespace;
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(&r.name)
        .await
        .map_err(|e| format!("spec.passwordSecret {ns}/{}: {e}", r.name))?;
    let bytes = secret
        .data
        .and_then(|d| d.get("password").cloned())
        .ok_or_else(|| format!("spec.passwordSecret {ns}/{}: no \"password\" key", r.name))?;
    String::from_utf8(bytes.0).map(Some).map_err(|_| {
        format!(
            "spec.passwordSecret {ns}/{}: the password is not UTF-8",
            r.name
        )
    })
}

/// The running sessions, by peer name.
#[derive(Default)]
pub struct Sessions {
    running: BTreeMap<String, (PeerConfig, Session)>,
}

impl Sessions {
    /// Runs exactly the sessions in `want`, each advertising its routes. A
    /// session whose configuration changed is stopped (withdrawing) and made
    /// again.
    pub fn sync(
        &mut self,
        want: BTreeMap<String, PeerConfig>,
        mut routes: BTreeMap<String, Routes>,
    ) {
        let stale: Vec<String> = self
            .running
            .iter()
            .filter(|(name, (cfg, _))| want.get(*name) != Some(cfg))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some((_, session)) = self.running.remove(&name) {
                info!(peer = %name, "stopping BGP session");
                tokio::spawn(session.stop());
            }
        }
        for (name, cfg) in want {
            let r = routes.remove(&name).unwrap_or_default();
            match self.running.get(&name) {
                Some((_, session)) => session.set_routes(r),
                None => {
                    info!(peer = %name, address = %cfg.peer, "starting BGP session");
                    let session = Session::start(cfg.clone(), r);
                    self.running.insert(name, (cfg, session));
                }
            }
        }
    }

    /// Each session's status, by peer name.
    pub fn statuses(&self) -> BTreeMap<String, Status> {
        self.running
            .iter()
            .map(|(n, (_, s))| (n.clone(), s.status().borrow().clone()))
            .collect()
    }

    /// Withdraws everything from every peer and closes the sessions.
    pub async fn stop_all(&mut self) {
        let sessions: Vec<Session> = std::mem::take(&mut self.running)
            .into_values()
            .map(|(_, s)| s)
            .collect();
        futures::future::join_all(sessions.into_iter().map(Session::stop)).await;
    }
}

/// Logs a peer that cannot be used, once per distinct problem.
pub fn warn_once(warned: &mut BTreeMap<String, String>, name: &str, problem: &str) {
    if warned.get(name).map(String::as_str) != Some(problem) {
        warn!(peer = %name, problem, "ignoring a BGPPeer");
        warned.insert(name.to_string(), problem.to_string());
    }
}

pub fn is_up(s: &Status) -> bool {
    s.state == State::Established
}
