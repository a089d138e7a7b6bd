//! Which routes this node advertises to which peer: a pure function of the
//! Services, endpoints, pools, BGP advertisements and peers.
//!
//! Unlike layer 2 there is no election: every eligible node advertises, and
//! the routers spread the traffic across them. With `externalTrafficPolicy:
//! Cluster` a node is eligible while the Service has any ready endpoint; with
//! `Local`, only while the node itself holds one.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::session::{Route, Routes};
use crate::allocator::{Pool, Selector};
use crate::speaker::plan::{EXCLUDE_LABEL, ServiceView};

/// A `BGPAdvertisement`, validated.
#[derive(Clone, Debug, Default)]
pub struct BgpAdvertisement {
    pub name: String,
    /// Empty: every pool.
    pub pools: Vec<String>,
    pub aggregation_length: u8,
    pub aggregation_length_v6: u8,
    pub communities: Vec<u32>,
    pub large_communities: Vec<[u32; 3]>,
    pub local_pref: Option<u32>,
    /// Empty: every peer.
    pub peers: Vec<String>,
    /// Empty: every node.
    pub node_selectors: Vec<Selector>,
}

/// Parses `65000:100` or `large:4200000001:1:2`.
pub fn parse_community(s: &str) -> Result<Community, String> {
    let bad = || format!("{s:?} is not a community (ASN:VALUE, or large:GLOBAL:LOCAL1:LOCAL2)");
    if let Some(large) = s.strip_prefix("large:") {
        let parts: Vec<u32> = large
            .split(':')
            .map(|p| p.parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        return match parts[..] {
            [a, b, c] => Ok(Community::Large([a, b, c])),
            _ => Err(bad()),
        };
    }
    let (high, low) = s.split_once(':').ok_or_else(bad)?;
    let high: u16 = high.parse().map_err(|_| bad())?;
    let low: u16 = low.parse().map_err(|_| bad())?;
    Ok(Community::Standard(
        (u32::from(high) << 16) | u32::from(low),
    ))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Community {
    Standard(u32),
    Large([u32; 3]),
}

/// Where this node's routes go: the peers selected for it, by name, with the
/// next hop this node gives for each family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRouting {
    pub labels: BTreeMap<String, String>,
    pub next_hop_v4: Option<IpAddr>,
    pub next_hop_v6: Option<IpAddr>,
}

/// The routes for each of `peers`, from the node described by `node`.
pub fn routes(
    node_name: &str,
    node: &NodeRouting,
    services: &[ServiceView],
    pools: &[Pool],
    advertisements: &[BgpAdvertisement],
    peers: &[String],
) -> BTreeMap<String, Routes> {
    let mut out: BTreeMap<String, Routes> =
        peers.iter().map(|p| (p.clone(), Routes::new())).collect();
    if node.labels.contains_key(EXCLUDE_LABEL) {
        return out;
    }
    for svc in services {
        let serving = if svc.local {
            svc.endpoint_nodes.contains(node_name)
        } else {
            svc.any_ready
        };
        if !serving {
            continue;
        }
        for ip in &svc.addresses {
            let Some(pool) = pools
                .iter()
                .find(|p| svc.pool.as_deref() == Some(p.name.as_str()) && p.contains(ip))
                .or_else(|| pools.iter().find(|p| p.contains(ip)))
            else {
                continue;
            };
            for ad in advertisements {
                let covers = ad.pools.is_empty() || ad.pools.contains(&pool.name);
                let selects = ad.node_selectors.is_empty()
                    || ad.node_selectors.iter().any(|s| s.matches(&node.labels));
                if !covers || !selects {
                    continue;
                }
                let (prefix, next_hop) = match ip {
                    IpAddr::V4(v4) => (
                        Ipv4Net::new(*v4, ad.aggregation_length)
                            .map(|n| IpNet::V4(n.trunc()))
                            .ok(),
                        node.next_hop_v4,
                    ),
                    IpAddr::V6(v6) => (
                        Ipv6Net::new(*v6, ad.aggregation_length_v6)
                            .map(|n| IpNet::V6(n.trunc()))
                            .ok(),
                        node.next_hop_v6,
                    ),
                };
                let (Some(prefix), Some(next_hop)) = (prefix, next_hop) else {
                    continue;
                };
                for peer in peers {
                    if !ad.peers.is_empty() && !ad.peers.contains(peer) {
                        continue;
                    }
                    let routes = out.entry(peer.clone()).or_default();
                    let route = routes.entry(prefix).or_insert_with(|| Route {
                        prefix,
                        next_hop,
                        communities: Vec::new(),
                        large_communities: Vec::new(),
                        local_pref: None,
                    });
                    // Several advertisements for one prefix: their
                    // communities add up, the highest LOCAL_PREF wins.
                    for c in &ad.communities {
                        if !route.communities.contains(c) {
                            route.communities.push(*c);
                        }
                    }
                    for c in &ad.large_communities {
                        if !route.large_communities.contains(c) {
                            route.large_communities.push(*c);
                        }
                    }
                    route.local_pref = route.local_pref.max(ad.local_pref);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::pool_from_spec;
    use crate::crd::IPPoolSpec;
    use std::collections::BTreeSet;

    fn svc(ip: &str, local: bool, endpoints: &[&str]) -> ServiceView {
        ServiceView {
            namespace: "default".into(),
            name: "web".into(),
            addresses: vec![ip.parse().unwrap()],
            pool: Some("lan".into()),
            local,
            endpoint_nodes: endpoints
                .iter()
                .map(|s| s.to_string())
                .collect::<BTreeSet<_>>(),
            any_ready: !endpoints.is_empty(),
        }
    }

    fn node() -> NodeRouting {
        NodeRouting {
            labels: BTreeMap::new(),
            next_hop_v4: Some("10.0.0.11".parse().unwrap()),
            next_hop_v6: Some("fd00::11".parse().unwrap()),
        }
    }

    fn pools() -> Vec<Pool> {
        vec![
            pool_from_spec(
                "lan",
                &IPPoolSpec {
                    addresses: vec!["198.51.100.0/24".into(), "fd00:100::/64".into()],
                    auto_assign: true,
                    ..Default::default()
                },
            )
            .unwrap(),
        ]
    }

    fn ad() -> BgpAdvertisement {
        BgpAdvertisement {
            name: "all".into(),
            aggregation_length: 32,
            aggregation_length_v6: 128,
            communities: vec![parse_community("65000:100").unwrap()]
                .into_iter()
                .map(|c| match c {
                    Community::Standard(v) => v,
                    Community::Large(_) => unreachable!(),
                })
                .collect(),
            local_pref: Some(150),
            ..Default::default()
        }
    }

    #[test]
    fn communities_parse() {
        assert_eq!(
            parse_community("65000:100"),
            Ok(Community::Standard((65000 << 16) | 100))
        );
        assert_eq!(
            parse_community("large:4200000001:1:2"),
            Ok(Community::Large([4_200_000_001, 1, 2]))
        );
        for bad in ["65000", "70000:1", "large:1:2", "a:b", ""] {
            assert!(parse_community(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cluster_policy_every_node_while_any_endpoint_is_ready() {
        let peers = vec!["r1".to_string()];
        let services = vec![svc("198.51.100.7", false, &["node-b"])];
        let r = routes("node-a", &node(), &services, &pools(), &[ad()], &peers);
        let route = &r["r1"][&"198.51.100.7/32".parse::<IpNet>().unwrap()];
        assert_eq!(route.next_hop, "10.0.0.11".parse::<IpAddr>().unwrap());
        assert_eq!(route.communities, vec![(65000 << 16) | 100]);
        assert_eq!(route.local_pref, Some(150));

        let services = vec![svc("198.51.100.7", false, &[])];
        let r = routes("node-a", &node(), &services, &pools(), &[ad()], &peers);
        assert!(r["r1"].is_empty(), "no ready endpoint anywhere");
    }

    #[test]
    fn local_policy_only_nodes_with_an_endpoint() {
        let peers = vec!["r1".to_string()];
        let services = vec![svc("fd00:100::7", true, &["node-b"])];
        let on_a = routes("node-a", &node(), &services, &pools(), &[ad()], &peers);
        assert!(on_a["r1"].is_empty());
        let on_b = routes("node-b", &node(), &services, &pools(), &[ad()], &peers);
        let p: IpNet = "fd00:100::7/128".parse().unwrap();
        assert_eq!(
            on_b["r1"][&p].next_hop,
            "fd00::11".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn aggregation_peers_and_exclusion() {
        let mut a = ad();
        a.aggregation_length = 24;
        a.peers = vec!["r2".into()];
        let peers = vec!["r1".to_string(), "r2".to_string()];
        let services = vec![svc("198.51.100.7", false, &["x"])];
        let r = routes("n", &node(), &services, &pools(), &[a.clone()], &peers);
        assert!(r["r1"].is_empty(), "not one of the advertisement's peers");
        assert!(r["r2"].contains_key(&"198.51.100.0/24".parse::<IpNet>().unwrap()));

        let mut excluded = node();
        excluded.labels.insert(EXCLUDE_LABEL.into(), String::new());
        let r = routes("n", &excluded, &services, &pools(), &[a], &peers);
        assert!(r.values().all(|r| r.is_empty()));

        // Outside every pool: never advertised.
        let rogue = vec![svc("203.0.113.1", false, &["x"])];
        let r = routes("n", &node(), &rogue, &pools(), &[ad()], &peers);
        assert!(r.values().all(|r| r.is_empty()));
    }
}
