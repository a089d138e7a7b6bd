//! Building a [`LoadBalancerIntent`] from a Service, the nodes and its endpoints.
//! A pure function: everything it needs is passed in.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_provider_api::{
    Endpoint, IpFamily, IpFamilyPolicy, LoadBalancerIntent, NodeTarget, PortIntent, Protocol,
    ServiceKey, TrafficPolicy, quote,
};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::nodes::{EndpointInfo, NodeInfo};

/// Annotation with the addresses a Service asks for, one per family.
pub const LOAD_BALANCER_IPS: &str = "ferrolb.io/load-balancer-ips";
/// MetalLB's name for the same annotation, read so MetalLB users can switch.
pub const METALLB_LOAD_BALANCER_IPS: &str = "metallb.io/loadBalancerIPs";

/// A Service field the controller cannot use, named as the user wrote it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct IntentError {
    pub field: String,
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> IntentError {
    IntentError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Builds the intent for `svc`. `nodes` are all known nodes (eligible or not);
/// `endpoints` are the ready endpoints of the Service.
pub fn build<'a>(
    svc: &Service,
    nodes: impl IntoIterator<Item = &'a NodeInfo>,
    endpoints: &[EndpointInfo],
) -> Result<LoadBalancerIntent, IntentError> {
    let meta = &svc.metadata;
    let spec = svc.spec.clone().unwrap_or_default();
    let key = ServiceKey::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    );
    let annotations = meta.annotations.clone().unwrap_or_default();

    let ports = ports(&spec)?;
    let traffic_policy = match spec.external_traffic_policy.as_deref() {
        Some("Local") => TrafficPolicy::Local,
        _ => TrafficPolicy::Cluster,
    };
    let ip_families = ip_families(&spec)?;
    let ip_family_policy = match spec.ip_family_policy.as_deref() {
        Some("PreferDualStack") => IpFamilyPolicy::PreferDualStack,
        Some("RequireDualStack") => IpFamilyPolicy::RequireDualStack,
        _ => IpFamilyPolicy::SingleStack,
    };

    let local_nodes: BTreeSet<&str> = endpoints
        .iter()
        .filter_map(|e| e.node_name.as_deref())
        .collect();
    let mut targets: Vec<NodeTarget> = nodes
        .into_iter()
        .filter(|n| n.is_eligible())
        .filter(|n| {
            traffic_policy == TrafficPolicy::Cluster || local_nodes.contains(n.name.as_str())
        })
        .map(|n| NodeTarget {
            name: n.name.clone(),
            addresses: n.addresses.clone(),
            provider_id: n.provider_id.clone(),
            zone: n.zone.clone(),
            labels: n.labels.clone(),
        })
        .collect();
    targets.sort_by(|a, b| a.name.cmp(&b.name));

    let mut endpoints: Vec<Endpoint> = endpoints
        .iter()
        .map(|e| Endpoint {
            address: e.address,
            node_name: e.node_name.clone(),
            zone: e.zone.clone(),
        })
        .collect();
    endpoints.sort();
    endpoints.dedup();

    let mut intent = LoadBalancerIntent {
        key,
        uid: meta.uid.clone().unwrap_or_default(),
        labels: meta.labels.clone().unwrap_or_default(),
        annotations,
        ports,
        traffic_policy,
        health_check_node_port: spec
            .health_check_node_port
            .and_then(|p| u16::try_from(p).ok()),
        targets,
        endpoints,
        requested_addresses: Vec::new(),
        requested_from: None,
        source_ranges: Vec::new(),
        ip_families,
        ip_family_policy,
    };
    intent.requested_addresses = requested_addresses(
        spec.load_balancer_ip.as_deref(),
        &intent.annotations,
        &intent.wanted_families(),
    )?;
    intent.requested_from =
        (!intent.requested_addresses.is_empty()).then(|| requested_from(&intent.annotations));
    intent.source_ranges = spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            r.trim().parse().map_err(|_| {
                invalid(
                    format!("spec.loadBalancerSourceRanges[{i}]"),
                    format!("{r:?} is not a CIDR"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(intent)
}

fn ports(spec: &k8s_openapi::api::core::v1::ServiceSpec) -> Result<Vec<PortIntent>, IntentError> {
    let mut out = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            other => {
                return Err(invalid(
                    format!("spec.ports[{i}].protocol"),
                    format!("unknown protocol {other:?}"),
                ));
            }
        };
        let port = u16::try_from(p.port).map_err(|_| {
            invalid(
                format!("spec.ports[{i}].port"),
                format!("{} is not a port", p.port),
            )
        })?;
        out.push(PortIntent {
            name: p.name.clone(),
            protocol,
            port,
            node_port: p.node_port.and_then(|n| u16::try_from(n).ok()),
            target_port: match &p.target_port {
                Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
                Some(IntOrString::String(_)) => None,
                None => Some(port),
            },
        });
    }
    Ok(out)
}

fn ip_families(
    spec: &k8s_openapi::api::core::v1::ServiceSpec,
) -> Result<Vec<IpFamily>, IntentError> {
    let families: Vec<IpFamily> = spec
        .ip_families
        .iter()
        .flatten()
        .map(|f| match f.as_str() {
            "IPv4" => Ok(IpFamily::V4),
            "IPv6" => Ok(IpFamily::V6),
            other => Err(invalid(
                "spec.ipFamilies",
                format!("unknown family {other:?}"),
            )),
        })
        .collect::<Result<_, _>>()?;
    if !families.is_empty() {
        return Ok(families);
    }
    // The apiserver always fills ipFamilies; fall back to the clusterIP's family.
    let from_ip = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| IpFamily::of(&ip));
    Ok(vec![from_ip.unwrap_or(IpFamily::V4)])
}

/// The field holding the addresses a Service asks for, once
/// [`requested_addresses`] has found some: the annotation when it is set, else
/// `spec.loadBalancerIP` (it refuses both at once).
fn requested_from(annotations: &BTreeMap<String, String>) -> String {
    // The same choice as requested_addresses: the first key present, if
    // its value is not empty.
    [LOAD_BALANCER_IPS, METALLB_LOAD_BALANCER_IPS]
        .into_iter()
        .find(|k| annotations.contains_key(*k))
        .filter(|k| !annotations[*k].trim().is_empty())
        .map_or_else(
            || "spec.loadBalancerIP".to_string(),
            |k| format!("metadata.annotations[{k}]"),
        )
}

/// The addresses the Service asks for: `spec.loadBalancerIP` or the addresses
/// annotation (not both), at most one per family, each of a family the Service
/// serves.
pub fn requested_addresses(
    load_balancer_ip: Option<&str>,
    annotations: &BTreeMap<String, String>,
    families: &[IpFamily],
) -> Result<Vec<IpAddr>, IntentError> {
    let load_balancer_ip = load_balancer_ip.map(str::trim).filter(|s| !s.is_empty());
    let annotation = [LOAD_BALANCER_IPS, METALLB_LOAD_BALANCER_IPS]
        .into_iter()
        .find_map(|k| annotations.get(k).map(|v| (k, v.trim())))
        .filter(|(_, v)| !v.is_empty());
    let (field, raw): (String, Vec<&str>) = match (load_balancer_ip, annotation) {
        (None, None) => return Ok(Vec::new()),
        (Some(_), Some((key, _))) => {
            return Err(invalid(
                "spec.loadBalancerIP",
                format!("set together with the annotation {key}; use only the annotation"),
            ));
        }
        (Some(ip), None) => ("spec.loadBalancerIP".into(), vec![ip]),
        (None, Some((key, v))) => (
            format!("metadata.annotations[{key}]"),
            v.split(',').map(str::trim).collect(),
        ),
    };
    let mut out: Vec<IpAddr> = Vec::new();
    for s in raw {
        let ip: IpAddr = s
            .parse()
            .map_err(|_| invalid(&field, format!("{} is not an IP address", quote(s))))?;
        let family = IpFamily::of(&ip);
        if out.iter().any(|o| IpFamily::of(o) == family) {
            return Err(invalid(
                &field,
                format!("more than one {family} address; give at most one per family"),
            ));
        }
        if !families.contains(&family) {
            let served: Vec<String> = families.iter().map(ToString::to_string).collect();
            return Err(invalid(
                &field,
                format!(
                    "{ip} is {family} but the Service serves only {}",
                    served.join(" and ")
                ),
            ));
        }
        out.push(ip);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::Ineligible;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(policy: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some("web".into()),
                uid: Some("uid-1".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                external_traffic_policy: Some(policy.into()),
                health_check_node_port: (policy == "Local").then_some(32000),
                ip_families: Some(vec!["IPv4".into()]),
                ports: Some(vec![
                    ServicePort {
                        name: Some("http".into()),
                        port: 80,
                        node_port: Some(30080),
                        target_port: Some(IntOrString::Int(8080)),
                        ..Default::default()
                    },
                    ServicePort {
                        name: Some("dns".into()),
                        protocol: Some("UDP".into()),
                        port: 53,
                        node_port: Some(30053),
                        target_port: Some(IntOrString::String("dns".into())),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn node(name: &str, eligible: bool) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            addresses: vec![format!("10.0.0.{}", name.len()).parse().unwrap()],
            provider_id: Some(format!("aws:///z/i-{name}")),
            zone: None,
            labels: Default::default(),
            eligibility: if eligible {
                Ok(())
            } else {
                Err(Ineligible::NotReady)
            },
        }
    }

    fn ep(ip: &str, node: &str) -> EndpointInfo {
        EndpointInfo {
            address: ip.parse().unwrap(),
            node_name: Some(node.into()),
            zone: None,
        }
    }

    #[test]
    fn cluster_policy_targets_every_eligible_node() {
        let nodes = [node("c", true), node("a", true), node("b", false)];
        let intent = build(&svc("Cluster"), &nodes, &[ep("10.1.0.1", "a")]).unwrap();
        let names: Vec<&str> = intent.targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(intent.traffic_policy, TrafficPolicy::Cluster);
        assert_eq!(intent.health_check_node_port, None);
        assert_eq!(intent.key.to_string(), "ns/web");
    }

    #[test]
    fn local_policy_targets_only_nodes_with_ready_endpoints() {
        let nodes = [node("a", true), node("b", true), node("c", false)];
        let eps = [ep("10.1.0.1", "b"), ep("10.1.0.2", "c")];
        let intent = build(&svc("Local"), &nodes, &eps).unwrap();
        let names: Vec<&str> = intent.targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["b"], "c holds an endpoint but is not eligible");
        assert_eq!(intent.health_check_node_port, Some(32000));
        assert_eq!(intent.endpoints.len(), 2);
    }

    #[test]
    fn ports_keep_protocol_node_port_and_numeric_target() {
        let intent = build(&svc("Cluster"), &[], &[]).unwrap();
        assert_eq!(
            intent.ports,
            vec![
                PortIntent {
                    name: Some("http".into()),
                    protocol: Protocol::Tcp,
                    port: 80,
                    node_port: Some(30080),
                    target_port: Some(8080),
                },
                PortIntent {
                    name: Some("dns".into()),
                    protocol: Protocol::Udp,
                    port: 53,
                    node_port: Some(30053),
                    target_port: None,
                },
            ]
        );
    }

    #[test]
    fn requested_addresses_table() {
        let v4 = [IpFamily::V4];
        let dual = [IpFamily::V4, IpFamily::V6];
        let ann = |v: &str| BTreeMap::from([(LOAD_BALANCER_IPS.to_string(), v.to_string())]);
        let metallb =
            |v: &str| BTreeMap::from([(METALLB_LOAD_BALANCER_IPS.to_string(), v.to_string())]);
        let none = BTreeMap::new();
        let ok =
            |v: &[&str]| Ok::<Vec<IpAddr>, String>(v.iter().map(|s| s.parse().unwrap()).collect());
        type Case<'a> = (
            Option<&'a str>,
            BTreeMap<String, String>,
            &'a [IpFamily],
            Result<Vec<IpAddr>, String>,
        );
        let cases: Vec<Case> = vec![
            (None, none.clone(), &v4, ok(&[])),
            (Some(""), none.clone(), &v4, ok(&[])),
            (Some("192.0.2.7"), none.clone(), &v4, ok(&["192.0.2.7"])),
            (
                None,
                ann("192.0.2.7, 2001:db8::7"),
                &dual,
                ok(&["192.0.2.7", "2001:db8::7"]),
            ),
            (None, metallb("192.0.2.8"), &v4, ok(&["192.0.2.8"])),
            (
                Some("192.0.2.7"),
                ann("192.0.2.7"),
                &v4,
                Err("spec.loadBalancerIP".into()),
            ),
            (
                Some("not-an-ip"),
                none.clone(),
                &v4,
                Err("\"not-an-ip\" is not an IP address".into()),
            ),
            (
                None,
                ann(&"1".repeat(10_000)),
                &v4,
                Err(format!("\"{}\"… is not an IP address", "1".repeat(64))),
            ),
            (
                None,
                ann("192.0.2.7,192.0.2.8"),
                &dual,
                Err("more than one IPv4".into()),
            ),
            (
                None,
                ann("2001:db8::7"),
                &v4,
                Err("is IPv6 but the Service serves only IPv4".into()),
            ),
        ];
        for (i, (lb_ip, anns, fams, want)) in cases.into_iter().enumerate() {
            let got = requested_addresses(lb_ip, &anns, fams);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "case {i}"),
                (Err(e), Err(w)) => assert!(
                    e.to_string().contains(&w),
                    "case {i}: {e} does not mention {w}"
                ),
                (g, w) => panic!("case {i}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn requested_from_names_the_field_the_addresses_came_from() {
        let mut s = svc("Cluster");
        assert_eq!(build(&s, &[], &[]).unwrap().requested_from, None);
        s.spec.as_mut().unwrap().load_balancer_ip = Some("192.0.2.7".into());
        let intent = build(&s, &[], &[]).unwrap();
        assert_eq!(
            intent.requested_from.as_deref(),
            Some("spec.loadBalancerIP")
        );
        s.spec.as_mut().unwrap().load_balancer_ip = None;
        s.metadata.annotations = Some(BTreeMap::from([(
            METALLB_LOAD_BALANCER_IPS.to_string(),
            "192.0.2.7".to_string(),
        )]));
        let intent = build(&s, &[], &[]).unwrap();
        assert_eq!(
            intent.requested_from.as_deref(),
            Some("metadata.annotations[metallb.io/loadBalancerIPs]")
        );
        // An empty ferrolb annotation hides MetalLB's: the address is spec's.
        s.spec.as_mut().unwrap().load_balancer_ip = Some("192.0.2.8".into());
        s.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(LOAD_BALANCER_IPS.to_string(), " ".to_string());
        let intent = build(&s, &[], &[]).unwrap();
        assert_eq!(
            intent.requested_addresses,
            ["192.0.2.8".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            intent.requested_from.as_deref(),
            Some("spec.loadBalancerIP")
        );
    }

    #[test]
    fn bad_source_range_names_the_field() {
        let mut s = svc("Cluster");
        s.spec.as_mut().unwrap().load_balancer_source_ranges =
            Some(vec!["10.0.0.0/8".into(), "bogus".into()]);
        let err = build(&s, &[], &[]).unwrap_err();
        assert_eq!(err.field, "spec.loadBalancerSourceRanges[1]");
    }
}
