//! Which node answers for which address: a pure function of what the speaker
//! sees (Services, endpoints, nodes, pools, advertisements) and of which
//! speakers are alive.
//!
//! Every speaker computes the same plan from the same inputs, so no
//! coordination beyond the membership is needed. For each address, the
//! eligible nodes are ranked by a hash of node name and address (rendezvous
//! hashing) and the first one announces: addresses spread across nodes, and a
//! node joining or leaving moves only the addresses it ranks first for.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::allocator::{Pool, Selector};

/// Nodes with this label never announce, as for cloud load balancers.
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// What the speaker keeps of a Service of ours.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceView {
    pub namespace: String,
    pub name: String,
    /// The VIPs in `status.loadBalancer.ingress`.
    pub addresses: Vec<IpAddr>,
    /// The pool the controller took them from (its annotation).
    pub pool: Option<String>,
    /// `externalTrafficPolicy: Local`.
    pub local: bool,
    /// Nodes holding a ready endpoint of the Service.
    pub endpoint_nodes: BTreeSet<String>,
    /// Whether any endpoint is ready, on a known node or not.
    pub any_ready: bool,
}

impl ServiceView {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// An `L2Advertisement`, validated.
#[derive(Clone, Debug)]
pub struct Advertisement {
    pub name: String,
    /// Empty: every pool.
    pub pools: Vec<String>,
    /// Empty: every interface.
    pub interfaces: Vec<String>,
    /// Empty: every node.
    pub node_selectors: Vec<Selector>,
}

impl Advertisement {
    fn covers(&self, pool: &str) -> bool {
        self.pools.is_empty() || self.pools.iter().any(|p| p == pool)
    }

    fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.node_selectors.is_empty() || self.node_selectors.iter().any(|s| s.matches(labels))
    }
}

/// Where a node answers for an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Interfaces {
    All,
    Named(BTreeSet<String>),
}

impl Interfaces {
    pub fn allows(&self, name: &str) -> bool {
        match self {
            Interfaces::All => true,
            Interfaces::Named(names) => names.contains(name),
        }
    }

    fn widen(&mut self, ad: &Advertisement) {
        match (&mut *self, ad.interfaces.is_empty()) {
            (_, true) => *self = Interfaces::All,
            (Interfaces::All, false) => {}
            (Interfaces::Named(names), false) => names.extend(ad.interfaces.iter().cloned()),
        }
    }
}

impl std::fmt::Display for Interfaces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Interfaces::All => f.write_str("all interfaces"),
            Interfaces::Named(n) => f.write_str(&n.iter().cloned().collect::<Vec<_>>().join(", ")),
        }
    }
}

/// Everything the plan is made from.
pub struct Inputs<'a> {
    pub services: &'a [ServiceView],
    /// Node name to labels, for every Node object.
    pub nodes: &'a BTreeMap<String, BTreeMap<String, String>>,
    pub pools: &'a [Pool],
    pub advertisements: &'a [Advertisement],
    /// Nodes whose speaker is alive (this one included, unless it is leaving).
    pub alive: &'a BTreeSet<String>,
}

/// The decision for one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressPlan {
    pub address: IpAddr,
    pub pool: String,
    /// Services holding the address (more than one when shared), as
    /// `namespace/name`.
    pub services: Vec<String>,
    /// Whether an L2Advertisement covers the address's pool at all.
    pub covered: bool,
    /// The node that answers, and on which of its interfaces.
    pub announcer: Option<(String, Interfaces)>,
    /// When nobody answers: why, for the Service's Warning.
    pub unannounced: Option<String>,
    /// The alive node that reports on the address when nobody announces it
    /// (the first alive one in its ranking), so exactly one speaker writes.
    pub reporter: Option<String>,
}

/// Addresses of Services that no advertisement covers, by pool: announced by
/// nobody, which the pool's status reports.
pub fn pools_without_advertisement(
    pools: &[Pool],
    advertisements: &[Advertisement],
) -> BTreeSet<String> {
    pools
        .iter()
        .filter(|p| !advertisements.iter().any(|a| a.covers(&p.name)))
        .map(|p| p.name.clone())
        .collect()
}

/// The plan for every address of every Service that a pool holds.
pub fn plan(inputs: &Inputs<'_>) -> BTreeMap<IpAddr, AddressPlan> {
    // Group the Services by address first: a shared address is one decision.
    let mut by_address: BTreeMap<IpAddr, (String, Vec<&ServiceView>)> = BTreeMap::new();
    for svc in inputs.services {
        for ip in &svc.addresses {
            let Some(pool) = pool_of(inputs.pools, svc.pool.as_deref(), ip) else {
                // Not an address of ours: never answered for.
                continue;
            };
            by_address
                .entry(*ip)
                .or_insert_with(|| (pool.to_string(), Vec::new()))
                .1
                .push(svc);
        }
    }
    by_address
        .into_iter()
        .map(|(ip, (pool, services))| (ip, decide(inputs, ip, pool, &services)))
        .collect()
}

fn pool_of<'p>(pools: &'p [Pool], named: Option<&str>, ip: &IpAddr) -> Option<&'p str> {
    let contains = |p: &&Pool| p.contains(ip);
    named
        .and_then(|n| pools.iter().find(|p| p.name == n).filter(contains))
        .or_else(|| pools.iter().find(contains))
        .map(|p| p.name.as_str())
}

fn decide(inputs: &Inputs<'_>, ip: IpAddr, pool: String, services: &[&ServiceView]) -> AddressPlan {
    let ranked = rank(ip, inputs.alive.iter().map(String::as_str));
    let reporter = ranked.first().map(|s| s.to_string());
    let mut plan = AddressPlan {
        address: ip,
        services: services.iter().map(|s| s.key()).collect(),
        pool,
        covered: false,
        announcer: None,
        unannounced: None,
        reporter,
    };
    let ads: Vec<&Advertisement> = inputs
        .advertisements
        .iter()
        .filter(|a| a.covers(&plan.pool))
        .collect();
    plan.covered = !ads.is_empty();
    if ads.is_empty() {
        plan.unannounced = Some(format!(
            "no L2Advertisement covers pool {:?}, so nobody answers ARP/NDP for {ip}",
            plan.pool
        ));
        return plan;
    }
    if services.iter().all(|s| !s.any_ready) {
        plan.unannounced = Some(format!(
            "no ready endpoint, so nobody answers ARP/NDP for {ip}"
        ));
        return plan;
    }
    for node in ranked {
        let labels = match inputs.nodes.get(node) {
            Some(l) => l,
            // A speaker alive on a node that has no Node object (yet).
            None => continue,
        };
        if labels.contains_key(EXCLUDE_LABEL) {
            continue;
        }
        let serving = services
            .iter()
            .all(|s| s.any_ready && (!s.local || s.endpoint_nodes.contains(node)));
        if !serving {
            continue;
        }
        let mut interfaces: Option<Interfaces> = None;
        for ad in ads.iter().filter(|a| a.selects(labels)) {
            interfaces
                .get_or_insert_with(|| Interfaces::Named(BTreeSet::new()))
                .widen(ad);
        }
        if let Some(interfaces) = interfaces {
            plan.announcer = Some((node.to_string(), interfaces));
            return plan;
        }
    }
    let local = services.iter().any(|s| s.local);
    plan.unannounced = Some(if local {
        format!(
            "no node with a live speaker, selected by an L2Advertisement, holds a ready local endpoint (externalTrafficPolicy: Local), so nobody answers ARP/NDP for {ip}"
        )
    } else {
        format!(
            "no node with a live speaker is selected by an L2Advertisement, so nobody answers ARP/NDP for {ip}"
        )
    });
    plan
}

/// Nodes in the order they are preferred for `ip`: by SHA-256 of
/// `node#address`, then by name.
pub fn rank<'n>(ip: IpAddr, nodes: impl Iterator<Item = &'n str>) -> Vec<&'n str> {
    let mut keyed: Vec<([u8; 32], &str)> = nodes
        .map(|n| {
            let mut h = Sha256::new();
            h.update(n.as_bytes());
            h.update(b"#");
            h.update(ip.to_string().as_bytes());
            (h.finalize().into(), n)
        })
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::pool_from_spec;
    use crate::crd::IPPoolSpec;

    fn pool(name: &str, cidr: &str) -> Pool {
        pool_from_spec(
            name,
            &IPPoolSpec {
                addresses: vec![cidr.into()],
                auto_assign: true,
                ..Default::default()
            },
        )
        .unwrap()
    }

    fn ad(name: &str, pools: &[&str], interfaces: &[&str], zone: Option<&str>) -> Advertisement {
        Advertisement {
            name: name.into(),
            pools: pools.iter().map(|s| s.to_string()).collect(),
            interfaces: interfaces.iter().map(|s| s.to_string()).collect(),
            node_selectors: zone
                .map(|z| {
                    let sel = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                        match_labels: Some(BTreeMap::from([("zone".to_string(), z.to_string())])),
                        ..Default::default()
                    };
                    vec![Selector::from_label_selector(&sel).unwrap()]
                })
                .unwrap_or_default(),
        }
    }

    fn svc(name: &str, ip: &str, local: bool, endpoints: &[&str]) -> ServiceView {
        ServiceView {
            namespace: "default".into(),
            name: name.into(),
            addresses: vec![ip.parse().unwrap()],
            pool: Some("lan".into()),
            local,
            endpoint_nodes: endpoints.iter().map(|s| s.to_string()).collect(),
            any_ready: !endpoints.is_empty(),
        }
    }

    fn nodes(n: usize) -> BTreeMap<String, BTreeMap<String, String>> {
        (0..n)
            .map(|i| {
                let zone = if i % 2 == 0 { "a" } else { "b" };
                (
                    format!("node-{i}"),
                    BTreeMap::from([("zone".to_string(), zone.to_string())]),
                )
            })
            .collect()
    }

    struct World {
        services: Vec<ServiceView>,
        nodes: BTreeMap<String, BTreeMap<String, String>>,
        pools: Vec<Pool>,
        ads: Vec<Advertisement>,
        alive: BTreeSet<String>,
    }

    impl World {
        fn new(n: usize) -> Self {
            let nodes = nodes(n);
            Self {
                services: Vec::new(),
                alive: nodes.keys().cloned().collect(),
                nodes,
                pools: vec![pool("lan", "192.0.2.0/24"), pool("lan6", "fd00::/120")],
                ads: vec![ad("all", &[], &[], None)],
            }
        }

        fn plan(&self) -> BTreeMap<IpAddr, AddressPlan> {
            plan(&Inputs {
                services: &self.services,
                nodes: &self.nodes,
                pools: &self.pools,
                advertisements: &self.ads,
                alive: &self.alive,
            })
        }

        fn announcers(&self) -> BTreeMap<IpAddr, Option<String>> {
            self.plan()
                .into_iter()
                .map(|(ip, p)| (ip, p.announcer.map(|a| a.0)))
                .collect()
        }
    }

    fn many(n: usize) -> Vec<ServiceView> {
        (0..n)
            .map(|i| {
                svc(
                    &format!("s{i}"),
                    &format!("192.0.2.{}", i + 1),
                    false,
                    &["x"],
                )
            })
            .collect()
    }

    #[test]
    fn one_announcer_per_address_spread_across_nodes() {
        let mut w = World::new(4);
        w.services = many(200);
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for (_, a) in w.announcers() {
            *per_node.entry(a.expect("announced")).or_default() += 1;
        }
        assert_eq!(per_node.len(), 4, "{per_node:?}");
        for (node, n) in &per_node {
            assert!((25..=75).contains(n), "{node} has {n} of 200: {per_node:?}");
        }
    }

    #[test]
    fn adding_or_removing_a_node_moves_only_its_share() {
        let mut w = World::new(4);
        w.services = many(200);
        let before = w.announcers();

        w.nodes.extend(nodes(5).into_iter().skip(4));
        w.alive.insert("node-4".into());
        let after = w.announcers();
        let moved: Vec<_> = before.iter().filter(|(ip, a)| after[*ip] != **a).collect();
        assert!(moved.len() < 80, "{} of 200 moved", moved.len());
        for (ip, _) in &moved {
            assert_eq!(
                after[*ip].as_deref(),
                Some("node-4"),
                "{ip} moved elsewhere"
            );
        }

        // The node dies: exactly its addresses go, each to another node.
        w.alive.remove("node-1");
        let dead = w.announcers();
        for (ip, a) in &after {
            if a.as_deref() == Some("node-1") {
                assert!(dead[ip].as_deref().is_some_and(|n| n != "node-1"));
            } else {
                assert_eq!(&dead[ip], a, "{ip} moved though its node lives");
            }
        }
    }

    #[test]
    fn local_policy_follows_endpoints() {
        let mut w = World::new(4);
        w.services = vec![svc("web", "192.0.2.7", true, &["node-2", "node-3"])];
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let a = w.announcers()[&ip].clone().unwrap();
        assert!(a == "node-2" || a == "node-3", "{a}");

        w.services[0].endpoint_nodes = BTreeSet::from(["node-0".to_string()]);
        assert_eq!(w.announcers()[&ip].as_deref(), Some("node-0"));

        // Its only endpoint's speaker is gone.
        w.alive.remove("node-0");
        let p = &w.plan()[&ip];
        assert_eq!(p.announcer, None);
        assert!(p.unannounced.as_ref().unwrap().contains("Local"), "{p:?}");
        assert!(p.reporter.is_some());
    }

    #[test]
    fn no_ready_endpoint_means_nobody_answers() {
        let mut w = World::new(2);
        w.services = vec![svc("web", "192.0.2.7", false, &[])];
        let p = &w.plan()[&"192.0.2.7".parse().unwrap()];
        assert_eq!(p.announcer, None);
        assert!(p.unannounced.as_ref().unwrap().contains("ready endpoint"));
    }

    #[test]
    fn advertisements_pick_pools_nodes_and_interfaces() {
        let mut w = World::new(4);
        w.ads = vec![
            ad("b-eth1", &["lan"], &["eth1"], Some("b")),
            ad("b-eth2", &["lan"], &["eth2"], Some("b")),
        ];
        w.services = many(20);
        for (_, p) in w.plan() {
            let (node, ifaces) = p.announcer.unwrap();
            assert!(
                node == "node-1" || node == "node-3",
                "{node} is not in zone b"
            );
            assert_eq!(
                ifaces,
                Interfaces::Named(BTreeSet::from(["eth1".into(), "eth2".into()]))
            );
        }
        // A pool no advertisement covers is not announced, and says why.
        w.services[0].addresses = vec!["fd00::5".parse().unwrap()];
        w.services[0].pool = Some("lan6".into());
        let p = &w.plan()[&"fd00::5".parse().unwrap()];
        assert_eq!(p.announcer, None);
        assert!(p.unannounced.as_ref().unwrap().contains("lan6"));
        assert_eq!(
            pools_without_advertisement(&w.pools, &w.ads),
            BTreeSet::from(["lan6".to_string()])
        );
    }

    #[test]
    fn excluded_and_unknown_nodes_never_announce() {
        let mut w = World::new(3);
        for labels in w.nodes.values_mut() {
            labels.insert(EXCLUDE_LABEL.into(), String::new());
        }
        w.nodes.get_mut("node-2").unwrap().remove(EXCLUDE_LABEL);
        w.alive.insert("ghost".into());
        w.services = many(30);
        for (_, a) in w.announcers() {
            assert_eq!(a.as_deref(), Some("node-2"));
        }
    }

    #[test]
    fn addresses_outside_every_pool_are_never_answered_for() {
        let mut w = World::new(2);
        w.services = vec![svc("rogue", "198.51.100.1", false, &["node-0"])];
        assert!(w.plan().is_empty());
        // The annotation names a pool that does not hold the address: the
        // pool that does is used.
        w.services = vec![svc("web", "192.0.2.9", false, &["node-0"])];
        w.services[0].pool = Some("lan6".into());
        assert_eq!(w.plan()[&"192.0.2.9".parse().unwrap()].pool, "lan");
    }

    #[test]
    fn shared_addresses_need_a_node_serving_every_service() {
        let mut w = World::new(4);
        w.services = vec![
            svc("a", "192.0.2.7", true, &["node-1", "node-2"]),
            svc("b", "192.0.2.7", true, &["node-2", "node-3"]),
        ];
        let p = &w.plan()[&"192.0.2.7".parse().unwrap()];
        assert_eq!(p.announcer.as_ref().unwrap().0, "node-2");
        assert_eq!(p.services.len(), 2);
    }
}
