//! The bare-metal CRDs, generated from these types (`ferrolb crds`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A pool of addresses that LoadBalancer Services may be given.
///
/// Field names follow MetalLB's `IPAddressPool` so that its users recognise them.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "ferrolb.io",
    version = "v1alpha1",
    kind = "IPPool",
    plural = "ippools",
    singular = "ippool",
    shortname = "ipp",
    status = "IPPoolStatus",
    printcolumn = r#"{"name":"Auto Assign","type":"boolean","jsonPath":".spec.autoAssign"}"#,
    printcolumn = r#"{"name":"Assigned IPv4","type":"integer","jsonPath":".status.assignedIPv4"}"#,
    printcolumn = r#"{"name":"Available IPv4","type":"integer","jsonPath":".status.availableIPv4"}"#,
    printcolumn = r#"{"name":"Assigned IPv6","type":"integer","jsonPath":".status.assignedIPv6"}"#,
    printcolumn = r#"{"name":"Available IPv6","type":"integer","jsonPath":".status.availableIPv6","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IPPoolSpec {
    /// The addresses in the pool: CIDRs (`192.168.10.0/24`, `fc00:f853::/120`) or
    /// inclusive ranges (`192.168.9.1-192.168.9.5`), IPv4 and IPv6 alike.
    #[schemars(length(min = 1))]
    pub addresses: Vec<String>,

    /// Whether addresses are handed out to Services that do not ask for this pool
    /// or one of its addresses by name. Defaults to true.
    #[serde(default = "default_true")]
    #[schemars(default = "default_true")]
    pub auto_assign: bool,

    /// Never hand out IPv4 addresses ending in .0 or .255, which some old
    /// equipment drops as broadcast addresses.
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,

    /// Which Services may draw from this pool, and in which order pools are tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,
}

fn default_true() -> bool {
    true
}

/// Restricts a pool to some Services and orders the pools.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Pools are tried in ascending priority; pools without a priority come after
    /// every pool that has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,

    /// Namespaces whose Services may use the pool; empty means every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,

    /// Label selectors on the Service; a Service matching any of them may use the
    /// pool. Empty means every Service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

/// How much of the pool is in use. Counts saturate at 2^64-1 for huge IPv6 pools.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IPPoolStatus {
    /// IPv4 addresses of the pool held by Services.
    #[serde(rename = "assignedIPv4")]
    pub assigned_ipv4: u64,
    /// IPv6 addresses of the pool held by Services.
    #[serde(rename = "assignedIPv6")]
    pub assigned_ipv6: u64,
    /// IPv4 addresses of the pool still free to hand out.
    #[serde(rename = "availableIPv4")]
    pub available_ipv4: u64,
    /// IPv6 addresses of the pool still free to hand out.
    #[serde(rename = "availableIPv6")]
    pub available_ipv6: u64,
    /// Problems with the pool's spec (a malformed address, an overlap with
    /// another pool), one message per problem.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// The advertisements that announce this pool's addresses, as
    /// `L2Advertisement/<name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advertisements: Vec<String>,
    /// Conditions that need a person's attention but leave the pool usable,
    /// such as addresses that are allocated but that no advertisement announces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Says which nodes answer ARP (IPv4) and NDP (IPv6) for the addresses of
/// which pools, on which interfaces.
///
/// Field names follow MetalLB's `L2Advertisement`. An address is announced
/// when at least one advertisement covers its pool; exactly one eligible node
/// answers for it at a time.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "ferrolb.io",
    version = "v1alpha1",
    kind = "L2Advertisement",
    plural = "l2advertisements",
    singular = "l2advertisement",
    shortname = "l2adv",
    printcolumn = r#"{"name":"IP Pools","type":"string","jsonPath":".spec.ipPools"}"#,
    printcolumn = r#"{"name":"Interfaces","type":"string","jsonPath":".spec.interfaces"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    /// Names of the `IPPool`s whose addresses are announced. Empty means every
    /// pool.
    #[serde(default, rename = "ipPools", skip_serializing_if = "Vec::is_empty")]
    pub ip_pools: Vec<String>,

    /// Interfaces to answer on, by name (`eth0`, `bond0`). Empty means every
    /// Ethernet interface that is up and is not a port of a bridge or bond.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,

    /// Nodes that may announce; a node matching any selector may. Empty means
    /// every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
}

/// A BGP router that speakers on the selected nodes peer with.
///
/// Field names follow MetalLB's `BGPPeer`.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "ferrolb.io",
    version = "v1alpha1",
    kind = "BGPPeer",
    plural = "bgppeers",
    singular = "bgppeer",
    shortname = "bgpp",
    status = "BGPPeerStatus",
    printcolumn = r#"{"name":"Peer Address","type":"string","jsonPath":".spec.peerAddress"}"#,
    printcolumn = r#"{"name":"Peer ASN","type":"integer","jsonPath":".spec.peerASN"}"#,
    printcolumn = r#"{"name":"My ASN","type":"integer","jsonPath":".spec.myASN"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BGPPeerSpec {
    /// The AS number the speakers use.
    #[serde(rename = "myASN")]
    pub my_asn: u32,
    /// The peer's AS number.
    #[serde(rename = "peerASN")]
    pub peer_asn: u32,
    /// The peer's IPv4 or IPv6 address.
    pub peer_address: String,
    /// The peer's TCP port. Defaults to 179.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub peer_port: Option<u16>,
    /// The local address the session is made from. Default: the kernel's
    /// choice for the peer's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
    /// The hold time to offer, like `90s`. Default 90s; 0 or at least 3s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<String>,
    /// How often to send KEEPALIVEs, like `30s`. Default: a third of the
    /// negotiated hold time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<String>,
    /// A Secret in the speaker's namespace whose `password` key is the
    /// session's TCP-MD5 password (type `kubernetes.io/basic-auth`, as
    /// MetalLB's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretReference>,
    /// Allow the peer to be more than one hop away (eBGP multihop).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ebgp_multi_hop: bool,
    /// Nodes whose speakers peer with this router; empty means every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
}

/// The sessions with this peer, one entry per node whose speaker has one.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct BGPPeerStatus {
    /// Each entry is written by that node's speaker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["node"]))]
    pub nodes: Vec<BGPSessionStatus>,
}

/// One node's session with the peer.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BGPSessionStatus {
    pub node: String,
    /// `Idle`, `Connect`, `OpenSent`, `OpenConfirm` or `Established`; or
    /// `Invalid` when this node cannot use the peer (`lastError` says why,
    /// e.g. its password Secret is missing).
    pub state: String,
    /// Why the last session ended or could not be made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Prefixes the peer has from this node.
    pub prefixes: u32,
}

/// Names a Secret in the speaker's namespace.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct SecretReference {
    pub name: String,
}

/// Says which pools' addresses are advertised over BGP, to which peers,
/// from which nodes, with which attributes.
///
/// Field names follow MetalLB's `BGPAdvertisement`.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "ferrolb.io",
    version = "v1alpha1",
    kind = "BGPAdvertisement",
    plural = "bgpadvertisements",
    singular = "bgpadvertisement",
    shortname = "bgpadv",
    printcolumn = r#"{"name":"IP Pools","type":"string","jsonPath":".spec.ipPools"}"#,
    printcolumn = r#"{"name":"Peers","type":"string","jsonPath":".spec.peers"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BGPAdvertisementSpec {
    /// Names of the `IPPool`s whose addresses are advertised. Empty means
    /// every pool.
    #[serde(default, rename = "ipPools", skip_serializing_if = "Vec::is_empty")]
    pub ip_pools: Vec<String>,
    /// The IPv4 prefix length advertised for each address. Default 32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32))]
    pub aggregation_length: Option<u8>,
    /// The IPv6 prefix length advertised for each address. Default 128.
    #[serde(
        default,
        rename = "aggregationLengthV6",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 128))]
    pub aggregation_length_v6: Option<u8>,
    /// Communities to attach: `65000:100`, or `large:4200000001:1:2`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
    /// LOCAL_PREF to attach (iBGP peers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    /// Names of the `BGPPeer`s to advertise to; empty means every peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// Nodes that advertise; empty means every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
}
