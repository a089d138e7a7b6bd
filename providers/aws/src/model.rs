//! The desired load balancer of one Service, as a plain value (pure).

use std::collections::{BTreeMap, BTreeSet};

use ferrolb_provider_api::{
    LoadBalancerIntent, NodeTarget, Protocol, ProviderError, TrafficPolicy,
};

use crate::annotations::{
    AwsOptions, BackendProtocol, HealthCheck, IpAddressType, Scheme, TargetType,
};
use crate::naming;
use crate::subnets::parse_provider_id;
use crate::tags::{self, Role};

/// Listener and target-group protocols an NLB serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NlbProtocol {
    Tcp,
    Udp,
    TcpUdp,
    Tls,
}

impl NlbProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            NlbProtocol::Tcp => "TCP",
            NlbProtocol::Udp => "UDP",
            NlbProtocol::TcpUdp => "TCP_UDP",
            NlbProtocol::Tls => "TLS",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "TCP" => NlbProtocol::Tcp,
            "UDP" => NlbProtocol::Udp,
            "TCP_UDP" => NlbProtocol::TcpUdp,
            "TLS" => NlbProtocol::Tls,
            _ => return None,
        })
    }
}

/// One registered target: an instance id or an IP address, and its port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub id: String,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredTargetGroup {
    pub name: String,
    /// The Service port this group serves (for tags and messages).
    pub service_port: u16,
    /// The port targets listen on: the nodePort (instance) or targetPort (ip).
    pub port: u16,
    pub protocol: NlbProtocol,
    pub target_type: TargetType,
    pub health_check: HealthCheck,
    pub attributes: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    pub targets: BTreeSet<Target>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredListener {
    pub port: u16,
    pub protocol: NlbProtocol,
    pub certificates: Vec<String>,
    pub ssl_policy: Option<String>,
    /// Name of the target group it forwards to.
    pub target_group: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredLoadBalancer {
    pub name: String,
    pub scheme: Scheme,
    pub subnets: Vec<String>,
    pub eip_allocations: Vec<String>,
    pub private_ipv4_addresses: Vec<std::net::Ipv4Addr>,
    pub ip_address_type: IpAddressType,
    pub security_groups: Vec<String>,
    pub attributes: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    pub listeners: Vec<DesiredListener>,
    pub target_groups: Vec<DesiredTargetGroup>,
}

/// Builds the desired load balancer. `subnets` are already resolved subnet ids.
pub fn build(
    intent: &LoadBalancerIntent,
    opts: &AwsOptions,
    cluster: &str,
    subnets: Vec<String>,
) -> Result<DesiredLoadBalancer, ProviderError> {
    if !intent.requested_addresses.is_empty() {
        return Err(ProviderError::invalid(
            "spec.loadBalancerIP",
            "an NLB cannot take a requested address; use the aws-load-balancer-eip-allocations or aws-load-balancer-private-ipv4-addresses annotation",
        ));
    }
    let key = &intent.key;
    let scheme_str = match opts.scheme {
        Scheme::InternetFacing => "internet-facing",
        Scheme::Internal => "internal",
    };
    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| naming::load_balancer_name(cluster, key, &intent.uid, scheme_str));

    let mut listeners = Vec::new();
    let mut target_groups = Vec::new();
    for (port, group) in ports_by_number(intent)? {
        let protocol = listener_protocol(port, &group, opts)?;
        let tg_protocol = match (protocol, opts.tls.as_ref().map(|t| t.backend)) {
            (NlbProtocol::Tls, Some(BackendProtocol::Tls)) => NlbProtocol::Tls,
            (NlbProtocol::Tls, _) => NlbProtocol::Tcp,
            (p, _) => p,
        };
        let (tg_port, targets) = targets(intent, opts, port, &group)?;
        let target_type = match opts.target_type {
            TargetType::Instance => "instance",
            TargetType::Ip => "ip",
        };
        let tg_name = naming::target_group_name(
            cluster,
            key,
            &intent.uid,
            &name,
            port,
            tg_protocol.as_str(),
            target_type,
            tg_port,
        );
        let role = Role::TargetGroup {
            port,
            protocol: protocol.as_str().to_string(),
        };
        target_groups.push(DesiredTargetGroup {
            name: tg_name.clone(),
            service_port: port,
            port: tg_port,
            protocol: tg_protocol,
            target_type: opts.target_type,
            health_check: opts.health_check.clone(),
            attributes: opts.target_group_attributes.clone(),
            tags: tags::owned_tags(cluster, key, &role, &opts.additional_tags),
            targets,
        });
        let tls = opts.tls.as_ref().filter(|_| protocol == NlbProtocol::Tls);
        listeners.push(DesiredListener {
            port,
            protocol,
            certificates: tls.map(|t| t.certificates.clone()).unwrap_or_default(),
            ssl_policy: tls.and_then(|t| t.policy.clone()),
            target_group: tg_name,
        });
    }

    Ok(DesiredLoadBalancer {
        name,
        scheme: opts.scheme,
        subnets,
        eip_allocations: opts.eip_allocations.clone(),
        private_ipv4_addresses: opts.private_ipv4_addresses.clone(),
        ip_address_type: opts.ip_address_type,
        security_groups: opts.security_groups.clone(),
        attributes: opts.load_balancer_attributes.clone(),
        tags: tags::owned_tags(cluster, key, &Role::LoadBalancer, &opts.additional_tags),
        listeners,
        target_groups,
    })
}

/// A Service port number and the ports (one per protocol) that use it.
type PortGroup = Vec<(Protocol, Option<u16>, Option<u16>)>;

fn ports_by_number(intent: &LoadBalancerIntent) -> Result<BTreeMap<u16, PortGroup>, ProviderError> {
    let mut out: BTreeMap<u16, PortGroup> = BTreeMap::new();
    for (i, p) in intent.ports.iter().enumerate() {
        if p.protocol == Protocol::Sctp {
            return Err(ProviderError::invalid(
                format!("spec.ports[{i}].protocol"),
                "an NLB cannot serve SCTP",
            ));
        }
        out.entry(p.port)
            .or_default()
            .push((p.protocol, p.node_port, p.target_port));
    }
    if out.is_empty() {
        return Err(ProviderError::invalid(
            "spec.ports",
            "the Service has no ports",
        ));
    }
    Ok(out)
}

fn listener_protocol(
    port: u16,
    group: &PortGroup,
    opts: &AwsOptions,
) -> Result<NlbProtocol, ProviderError> {
    let tcp = group.iter().any(|(p, ..)| *p == Protocol::Tcp);
    let udp = group.iter().any(|(p, ..)| *p == Protocol::Udp);
    let tls = opts.tls.as_ref().is_some_and(|t| t.ports.contains(&port));
    Ok(match (tcp, udp, tls) {
        (true, true, true) => {
            return Err(ProviderError::invalid(
                "metadata.annotations[service.beta.kubernetes.io/aws-load-balancer-ssl-ports]",
                format!(
                    "port {port} serves TCP and UDP; TLS cannot be added to a TCP_UDP listener"
                ),
            ));
        }
        (true, true, false) => NlbProtocol::TcpUdp,
        (true, false, true) => NlbProtocol::Tls,
        (true, false, false) => NlbProtocol::Tcp,
        (false, true, _) => NlbProtocol::Udp,
        (false, false, _) => unreachable!("SCTP was rejected before"),
    })
}

/// The target group's port and its targets.
fn targets(
    intent: &LoadBalancerIntent,
    opts: &AwsOptions,
    port: u16,
    group: &PortGroup,
) -> Result<(u16, BTreeSet<Target>), ProviderError> {
    match opts.target_type {
        TargetType::Instance => {
            let node_ports: BTreeSet<Option<u16>> = group.iter().map(|(_, np, _)| *np).collect();
            let node_port = match node_ports.into_iter().collect::<Vec<_>>().as_slice() {
                [Some(np)] => *np,
                [None] => {
                    return Err(ProviderError::invalid(
                        "spec.allocateLoadBalancerNodePorts",
                        "instance targets need nodePorts; allow them or use ip targets (aws-load-balancer-nlb-target-type: ip)",
                    ));
                }
                _ => {
                    return Err(ProviderError::invalid(
                        "spec.ports",
                        format!(
                            "port {port} has TCP and UDP with different nodePorts; one TCP_UDP target group needs one nodePort"
                        ),
                    ));
                }
            };
            // target-node-labels narrows the nodes: each label must be
            // there with the given value.
            let labelled = |n: &&NodeTarget| {
                opts.target_node_labels
                    .iter()
                    .all(|(k, v)| n.labels.get(k) == Some(v))
            };
            let targets: BTreeSet<Target> = intent
                .targets
                .iter()
                .filter(labelled)
                .filter_map(|n| n.provider_id.as_deref().and_then(parse_provider_id))
                .map(|(_, id)| Target {
                    id,
                    port: node_port,
                })
                .collect();
            // A `Local` Service with no ready endpoint has no target for a
            // while, legitimately; a `Cluster` one without any node would be
            // a load balancer that can never carry traffic.
            if targets.is_empty() && intent.traffic_policy == TrafficPolicy::Cluster {
                if !opts.target_node_labels.is_empty() {
                    let labels: Vec<String> = opts
                        .target_node_labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    return Err(ProviderError::unsatisfiable(format!(
                        "no eligible node with an AWS providerID has the labels {} (from the target-node-labels annotation); the load balancer is built once one does",
                        labels.join(",")
                    )));
                }
                return Err(ProviderError::unsatisfiable(
                    "no eligible node has an AWS providerID (aws:///<zone>/<instance-id>); the load balancer is built once one does",
                ));
            }
            Ok((node_port, targets))
        }
        TargetType::Ip => {
            let target_ports: BTreeSet<Option<u16>> = group.iter().map(|(_, _, tp)| *tp).collect();
            let target_port = match target_ports.into_iter().collect::<Vec<_>>().as_slice() {
                [Some(tp)] => *tp,
                [None] => {
                    return Err(ProviderError::invalid(
                        "spec.ports",
                        format!(
                            "port {port} has a named targetPort, which ip targets do not support yet; use a number"
                        ),
                    ));
                }
                _ => {
                    return Err(ProviderError::invalid(
                        "spec.ports",
                        format!("port {port} has TCP and UDP with different targetPorts"),
                    ));
                }
            };
            // Traffic goes straight to the pods: every ready endpoint is a
            // target, whatever the traffic policy.
            let targets = intent
                .endpoints
                .iter()
                .map(|e| Target {
                    id: e.address.to_string(),
                    port: target_port,
                })
                .collect();
            Ok((target_port, targets))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_provider_api::{
        Endpoint, IpFamily, IpFamilyPolicy, NodeTarget, PortIntent, ServiceKey,
    };

    fn intent(ports: &[(Protocol, u16, Option<u16>)], nodes: &[&str]) -> LoadBalancerIntent {
        LoadBalancerIntent {
            key: ServiceKey::new("shop", "web"),
            uid: "3f1c".into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            ports: ports
                .iter()
                .map(|(protocol, port, node_port)| PortIntent {
                    name: None,
                    protocol: *protocol,
                    port: *port,
                    node_port: *node_port,
                    target_port: Some(8000 + *port),
                })
                .collect(),
            traffic_policy: TrafficPolicy::Cluster,
            health_check_node_port: None,
            targets: nodes
                .iter()
                .map(|n| NodeTarget {
                    name: n.to_string(),
                    addresses: vec![],
                    provider_id: Some(format!("aws:///us-east-1a/i-{n}")),
                    zone: None,
                    // Nodes whose name starts with "a" are in the edge pool.
                    labels: BTreeMap::from([(
                        "pool".to_string(),
                        if n.starts_with('a') { "edge" } else { "core" }.to_string(),
                    )]),
                })
                .collect(),
            endpoints: vec![Endpoint {
                address: "10.1.0.7".parse().unwrap(),
                node_name: Some("a1".into()),
                zone: None,
            }],
            requested_addresses: vec![],
            requested_from: None,
            source_ranges: vec![],
            ip_families: vec![IpFamily::V4],
            ip_family_policy: IpFamilyPolicy::SingleStack,
        }
    }

    fn opts(i: &LoadBalancerIntent, ann: &[(&str, &str)]) -> AwsOptions {
        let ann = ann
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        crate::annotations::parse(&ann, &i.ports, i.traffic_policy, i.health_check_node_port)
            .unwrap()
    }

    #[test]
    fn target_node_labels_narrow_the_instance_targets() {
        let i = intent(&[(Protocol::Tcp, 80, Some(30080))], &["a1", "a2", "b1"]);
        let ann = [(crate::annotations::keys::TARGET_NODE_LABELS, "pool=edge")];
        let lb = build(&i, &opts(&i, &ann), "prod", vec![]).unwrap();
        let ids: Vec<&str> = lb.target_groups[0]
            .targets
            .iter()
            .map(|t| t.id.as_str())
            .collect();
        assert_eq!(ids, ["i-a1", "i-a2"]);

        let ann = [(crate::annotations::keys::TARGET_NODE_LABELS, "pool=gpu")];
        let err = build(&i, &opts(&i, &ann), "prod", vec![]).unwrap_err();
        assert!(err.to_string().contains("pool=gpu"), "{err}");
    }

    #[test]
    fn one_listener_and_target_group_per_port_number() {
        let i = intent(
            &[
                (Protocol::Tcp, 80, Some(30080)),
                (Protocol::Tcp, 53, Some(30053)),
                (Protocol::Udp, 53, Some(30053)),
            ],
            &["a1", "b2"],
        );
        let lb = build(&i, &opts(&i, &[]), "prod", vec![]).unwrap();
        let listeners: Vec<(u16, NlbProtocol)> =
            lb.listeners.iter().map(|l| (l.port, l.protocol)).collect();
        assert_eq!(
            listeners,
            [(53, NlbProtocol::TcpUdp), (80, NlbProtocol::Tcp)]
        );
        let tg = &lb.target_groups[1];
        assert_eq!((tg.port, tg.protocol), (30080, NlbProtocol::Tcp));
        let ids: Vec<&str> = tg.targets.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["i-a1", "i-b2"]);
        assert!(tg.targets.iter().all(|t| t.port == 30080));
        assert!(lb.name.len() <= 32 && tg.name.len() <= 32);
        assert_eq!(
            lb.tags.get("ferrolb.io/service").map(String::as_str),
            Some("shop/web")
        );
        assert_ne!(lb.target_groups[0].name, lb.target_groups[1].name);
    }

    #[test]
    fn ip_targets_are_the_ready_endpoints_on_the_target_port() {
        let i = intent(&[(Protocol::Tcp, 80, Some(30080))], &["a1"]);
        let o = opts(
            &i,
            &[(
                "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type",
                "ip",
            )],
        );
        let lb = build(&i, &o, "prod", vec![]).unwrap();
        let tg = &lb.target_groups[0];
        assert_eq!(tg.port, 8080);
        let t: Vec<(String, u16)> = tg.targets.iter().map(|t| (t.id.clone(), t.port)).collect();
        assert_eq!(t, [("10.1.0.7".to_string(), 8080)]);
    }

    #[test]
    fn refusals_name_the_field() {
        let cases: Vec<(LoadBalancerIntent, &str)> = vec![
            (
                intent(&[(Protocol::Sctp, 80, Some(30080))], &["a1"]),
                "spec.ports[0].protocol",
            ),
            (
                intent(&[(Protocol::Tcp, 80, None)], &["a1"]),
                "spec.allocateLoadBalancerNodePorts",
            ),
            (
                intent(
                    &[
                        (Protocol::Tcp, 53, Some(30053)),
                        (Protocol::Udp, 53, Some(31053)),
                    ],
                    &["a1"],
                ),
                "different nodePorts",
            ),
            (
                {
                    let mut i = intent(&[(Protocol::Tcp, 80, Some(30080))], &["a1"]);
                    i.requested_addresses = vec!["192.0.2.1".parse().unwrap()];
                    i
                },
                "spec.loadBalancerIP",
            ),
            (
                intent(&[(Protocol::Tcp, 80, Some(30080))], &[]),
                "no eligible node",
            ),
        ];
        for (n, (i, want)) in cases.into_iter().enumerate() {
            let o = if i.ports[0].protocol == Protocol::Sctp {
                // The annotation parser refuses SCTP too; the model must on its own.
                let mut i2 = i.clone();
                i2.ports[0].protocol = Protocol::Tcp;
                opts(&i2, &[])
            } else {
                opts(&i, &[])
            };
            let err = build(&i, &o, "prod", vec![]).unwrap_err().to_string();
            assert!(err.contains(want), "case {n}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn local_service_without_endpoints_still_gets_its_load_balancer() {
        let mut i = intent(&[(Protocol::Tcp, 80, Some(30080))], &[]);
        i.traffic_policy = TrafficPolicy::Local;
        i.health_check_node_port = Some(32000);
        let lb = build(&i, &opts(&i, &[]), "prod", vec![]).unwrap();
        assert!(lb.target_groups[0].targets.is_empty());
    }
}
