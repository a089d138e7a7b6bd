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
}
