//! Which nodes may carry load-balancer traffic, and the little of each Node and
//! EndpointSlice that the controller keeps in memory.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Label that keeps a node out of every load balancer (the upstream name).
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// Taint the cluster autoscaler puts on nodes it is about to remove.
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// The label on an EndpointSlice that names its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Why a node is not a load-balancer target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ineligible {
    Deleting,
    ExcludedByLabel,
    ToBeDeletedByAutoscaler,
    NotReady,
}

/// The parts of a Node that decide whether and how it is a target. Two equal
/// `NodeInfo`s give every Service the same targets, so a Node update that leaves
/// this unchanged reconciles nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    /// InternalIP addresses first, then ExternalIP.
    pub addresses: Vec<IpAddr>,
    pub provider_id: Option<String>,
    pub zone: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub eligibility: Result<(), Ineligible>,
}

impl NodeInfo {
    pub fn from_node(node: &Node, include_not_ready: bool) -> Option<NodeInfo> {
        let name = node.metadata.name.clone()?;
        let status = node.status.as_ref();
        let mut addresses = Vec::new();
        for kind in ["InternalIP", "ExternalIP"] {
            let found = status
                .and_then(|s| s.addresses.as_ref())
                .into_iter()
                .flatten()
                .filter(|a| a.type_ == kind)
                .filter_map(|a| a.address.parse::<IpAddr>().ok());
            addresses.extend(found);
        }
        Some(NodeInfo {
            name,
            addresses,
            provider_id: node.spec.as_ref().and_then(|s| s.provider_id.clone()),
            zone: node
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(ZONE_LABEL).cloned()),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            eligibility: eligibility(node, include_not_ready),
        })
    }

    pub fn is_eligible(&self) -> bool {
        self.eligibility.is_ok()
    }
}

/// Whether a node may carry load-balancer traffic at all (before traffic policy).
pub fn eligibility(node: &Node, include_not_ready: bool) -> Result<(), Ineligible> {
    if node.metadata.deletion_timestamp.is_some() {
        return Err(Ineligible::Deleting);
    }
    if node
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(EXCLUDE_LABEL))
    {
        return Err(Ineligible::ExcludedByLabel);
    }
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == TO_BE_DELETED_TAINT));
    if tainted {
        return Err(Ineligible::ToBeDeletedByAutoscaler);
    }
    if !include_not_ready {
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        if !ready {
            return Err(Ineligible::NotReady);
        }
    }
    Ok(())
}

/// One ready endpoint, from an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointInfo {
    pub address: IpAddr,
    pub node_name: Option<String>,
    pub zone: Option<String>,
}

/// The Service an EndpointSlice belongs to, from its label.
pub fn slice_service(slice: &EndpointSlice) -> Option<(String, String)> {
    let ns = slice.metadata.namespace.clone()?;
    let svc = slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)?
        .clone();
    Some((ns, svc))
}

/// The ready endpoints of a slice, sorted. An endpoint whose `ready` condition is
/// unset counts as ready, as the API documents.
pub fn ready_endpoints(slice: &EndpointSlice) -> Vec<EndpointInfo> {
    let mut out: Vec<EndpointInfo> = slice
        .endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .flat_map(|e| {
            e.addresses.iter().filter_map(move |a| {
                Some(EndpointInfo {
                    address: a.parse().ok()?,
                    node_name: e.node_name.clone(),
                    zone: e.zone.clone(),
                })
            })
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeCondition, NodeSpec, NodeStatus, Taint};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn node(name: &str, ready: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                provider_id: Some(format!("aws:///us-east-1a/i-{name}")),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![
                    NodeAddress {
                        type_: "ExternalIP".into(),
                        address: "203.0.113.1".into(),
                    },
                    NodeAddress {
                        type_: "Hostname".into(),
                        address: name.into(),
                    },
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: "10.0.0.1".into(),
                    },
                ]),
                conditions: ready.map(|s| {
                    vec![NodeCondition {
                        type_: "Ready".into(),
                        status: s.into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn eligibility_table() {
        let ready = node("a", Some("True"));
        let mut deleting = ready.clone();
        deleting.metadata.deletion_timestamp = Some(Time(Default::default()));
        let mut excluded = ready.clone();
        excluded.metadata.labels = Some([(EXCLUDE_LABEL.to_string(), String::new())].into());
        let mut tainted = ready.clone();
        tainted.spec.as_mut().unwrap().taints = Some(vec![Taint {
            key: TO_BE_DELETED_TAINT.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        }]);
        let cases = [
            (&ready, false, Ok(())),
            (&node("b", Some("False")), false, Err(Ineligible::NotReady)),
            (
                &node("b", Some("Unknown")),
                false,
                Err(Ineligible::NotReady),
            ),
            (&node("b", None), false, Err(Ineligible::NotReady)),
            (&node("b", Some("False")), true, Ok(())),
            (&deleting, false, Err(Ineligible::Deleting)),
            (&excluded, true, Err(Ineligible::ExcludedByLabel)),
            (&tainted, true, Err(Ineligible::ToBeDeletedByAutoscaler)),
        ];
        for (i, (n, include_not_ready, want)) in cases.into_iter().enumerate() {
            assert_eq!(eligibility(n, include_not_ready), want, "case {i}");
        }
    }

    #[test]
    fn node_info_orders_internal_addresses_first() {
        let info = NodeInfo::from_node(&node("a", Some("True")), false).unwrap();
        let want: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "203.0.113.1".parse().unwrap()];
        assert_eq!(info.addresses, want);
        assert_eq!(info.provider_id.as_deref(), Some("aws:///us-east-1a/i-a"));
        assert!(info.is_eligible());
    }

    #[test]
    fn ready_endpoints_treat_unset_as_ready() {
        let ep = |addr: &str, ready: Option<bool>| Endpoint {
            addresses: vec![addr.into()],
            conditions: Some(EndpointConditions {
                ready,
                ..Default::default()
            }),
            node_name: Some("n1".into()),
            ..Default::default()
        };
        let slice = EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: vec![
                ep("10.1.0.3", Some(false)),
                ep("10.1.0.2", None),
                ep("10.1.0.1", Some(true)),
            ],
            ..Default::default()
        };
        let got: Vec<String> = ready_endpoints(&slice)
            .into_iter()
            .map(|e| e.address.to_string())
            .collect();
        assert_eq!(got, ["10.1.0.1", "10.1.0.2"]);
    }
}
