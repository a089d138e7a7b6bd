//! The desired state of one Service's load balancer, as plain values.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// `namespace/name` of a Service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IpFamilyPolicy {
    #[default]
    SingleStack,
    PreferDualStack,
    RequireDualStack,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

/// One Service port, as the load balancer must serve it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortIntent {
    pub name: Option<String>,
    pub protocol: Protocol,
    pub port: u16,
    /// Allocated by the apiserver; `None` when `allocateLoadBalancerNodePorts`
    /// is false.
    pub node_port: Option<u16>,
    /// The numeric target port, when the Service names a number (named target
    /// ports resolve per endpoint and are found in the EndpointSlices).
    pub target_port: Option<u16>,
}

/// A node the load balancer may send traffic to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeTarget {
    pub name: String,
    /// InternalIP addresses first, then ExternalIP.
    pub addresses: Vec<IpAddr>,
    /// `spec.providerID`, e.g. `aws:///us-east-1a/i-0123`.
    pub provider_id: Option<String>,
    pub zone: Option<String>,
    /// The Node's labels, for providers that pick targets by label.
    pub labels: BTreeMap<String, String>,
}

/// A ready endpoint of the Service, from its EndpointSlices.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub address: IpAddr,
    pub node_name: Option<String>,
    pub zone: Option<String>,
}

/// Everything a provider needs to build one Service's load balancer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadBalancerIntent {
    pub key: ServiceKey,
    pub uid: String,
    /// The Service's labels (pools and policies select Services by label).
    pub labels: BTreeMap<String, String>,
    /// The Service's annotations; providers parse the ones they own.
    pub annotations: BTreeMap<String, String>,
    pub ports: Vec<PortIntent>,
    pub traffic_policy: TrafficPolicy,
    pub health_check_node_port: Option<u16>,
    /// Nodes to send traffic to: every eligible node for `Cluster`, only the
    /// eligible nodes that hold a ready endpoint for `Local`. Sorted by name.
    pub targets: Vec<NodeTarget>,
    /// Ready endpoints of the Service, sorted.
    pub endpoints: Vec<Endpoint>,
    /// Addresses the user asked for (`spec.loadBalancerIP` or an addresses
    /// annotation), at most one per family, already validated.
    pub requested_addresses: Vec<IpAddr>,
    /// The field `requested_addresses` came from, as the user wrote it
    /// (`spec.loadBalancerIP` or `metadata.annotations[<key>]`), for messages.
    pub requested_from: Option<String>,
    /// `spec.loadBalancerSourceRanges`.
    pub source_ranges: Vec<IpNet>,
    /// `spec.ipFamilies`, primary first.
    pub ip_families: Vec<IpFamily>,
    pub ip_family_policy: IpFamilyPolicy,
}

impl LoadBalancerIntent {
    /// The families the load balancer must serve: the primary family, plus the
    /// second for dual-stack Services.
    pub fn wanted_families(&self) -> Vec<IpFamily> {
        match self.ip_family_policy {
            IpFamilyPolicy::SingleStack => self.ip_families.iter().copied().take(1).collect(),
            _ => self.ip_families.clone(),
        }
    }
}
