//! Why an allocation failed, in words a user can act on.
//!
//! The Display text of [`AllocError`] goes verbatim into a Warning Event on the
//! Service, so each message names the address, pool, family or other Service
//! involved and, where there is one, what to change.

use std::fmt;
use std::net::IpAddr;

use ferrolb_provider_api::{IpFamily, Protocol, ServiceKey};

/// Why a pool may not give an address to a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// The pool lists namespaces and the Service's is not among them.
    Namespace {
        namespace: String,
        allowed: Vec<String>,
    },
    /// The pool has serviceSelectors and none matches the Service's labels.
    Selectors,
    /// The pool has autoAssign: false and the Service named neither the pool nor
    /// one of its addresses.
    NotAutoAssign,
    /// The pool has avoidBuggyIPs and the address ends in .0 or .255.
    BuggyAddress,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::Namespace { namespace, allowed } => write!(
                f,
                "namespace {namespace:?} is not in its serviceAllocation.namespaces ({})",
                allowed.join(", ")
            ),
            Denial::Selectors => f.write_str(
                "the Service's labels match none of its serviceAllocation.serviceSelectors",
            ),
            Denial::NotAutoAssign => f.write_str(
                "it has autoAssign: false, so it serves only Services that name the pool or one of its addresses",
            ),
            Denial::BuggyAddress => f.write_str(
                "it has avoidBuggyIPs: true and the address ends in .0 or .255",
            ),
        }
    }
}

/// Why a Service may not share an address with the Service that holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShareConflict {
    /// The Service asking has no sharing key.
    NoSharingKey,
    /// The holder has no sharing key.
    HolderHasNoSharingKey,
    DifferentKey {
        ours: String,
        theirs: String,
    },
    /// Both Services use these (protocol, port) pairs.
    PortsOverlap {
        ports: Vec<(Protocol, u16)>,
    },
    DifferentBackend,
    /// The holder is moving to other addresses and its status still shows
    /// this one.
    Leaving,
}

impl fmt::Display for ShareConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShareConflict::NoSharingKey => f.write_str(
                "this Service has no sharing key; to share the address, give both Services the same sharing key and different ports",
            ),
            ShareConflict::HolderHasNoSharingKey => f.write_str(
                "that Service has no sharing key; to share the address, give both Services the same sharing key and different ports",
            ),
            ShareConflict::DifferentKey { ours, theirs } => write!(
                f,
                "the sharing keys differ (this Service has {ours:?}, that one {theirs:?})"
            ),
            ShareConflict::PortsOverlap { ports } => {
                let ports: Vec<String> = ports.iter().map(|(p, n)| format!("{p}/{n}")).collect();
                write!(f, "both Services use {}", ports.join(", "))
            }
            ShareConflict::DifferentBackend => f.write_str(
                "the Services send traffic to different backends (Services that share an address must have the same externalTrafficPolicy and, with Local, select the same Pods)",
            ),
            ShareConflict::Leaving => f.write_str(
                "that Service is moving to another address and its status still shows this one; it is free once its new status is written",
            ),
        }
    }
}

/// Why the allocator could not give a Service the addresses it asked for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("the Service has no IP family in spec.ipFamilies")]
    NoIpFamilies,

    #[error(
        "the Service asks for more than one {family} address ({}); ask for at most one per family",
        join(.addresses)
    )]
    TooManyAddresses {
        family: IpFamily,
        addresses: Vec<IpAddr>,
    },

    #[error(
        "requested address {address} is {} but the Service's spec.ipFamilies is {}",
        IpFamily::of(.address),
        list_families(.wanted)
    )]
    WrongFamily {
        address: IpAddr,
        wanted: Vec<IpFamily>,
    },

    #[error(
        "requested address {address} is not in any IPPool; add it to a pool or ask for an address from one"
    )]
    AddressNotInAnyPool { address: IpAddr },

    #[error("requested address {address} cannot be given to this Service: {}", list_denials(.denials))]
    AddressNotAllowed {
        address: IpAddr,
        /// Every pool that holds the address, with what stops it.
        denials: Vec<(String, Denial)>,
    },

    #[error(
        "requested address {address} is not in the requested pool {pool}; ask for an address from that pool or drop one of the two requests"
    )]
    AddressNotInRequestedPool { address: IpAddr, pool: String },

    #[error(
        "address {address} is already used by Service {holder} and cannot be shared: {conflict}"
    )]
    AddressInUse {
        address: IpAddr,
        holder: ServiceKey,
        conflict: ShareConflict,
    },

    #[error("requested pool {pool} does not exist")]
    PoolNotFound { pool: String },

    #[error("requested pool {pool} does not serve this Service: {denial}")]
    PoolNotAllowed { pool: String, denial: Denial },

    #[error("{}", no_pool(.denials))]
    NoPoolForService {
        /// Every pool there is, with what stops it.
        denials: Vec<(String, Denial)>,
    },

    #[error(
        "no pool this Service may use has {family} addresses (pools tried: {})",
        .pools.join(", ")
    )]
    NoPoolWithFamily {
        family: IpFamily,
        pools: Vec<String>,
    },

    #[error(
        "no free {family} address left in {} {}; add addresses to {} or free some",
        if .pools.len() == 1 { "pool" } else { "pools" },
        .pools.join(", "),
        if .pools.len() == 1 { "it" } else { "one of them" }
    )]
    Exhausted {
        family: IpFamily,
        pools: Vec<String>,
    },

    #[error(
        "the Service requires dual-stack (RequireDualStack) but no pool it may use can give it an {family} address (pools tried: {}); add {family} addresses to one of them or free some",
        .pools.join(", ")
    )]
    DualStackUnavailable {
        family: IpFamily,
        pools: Vec<String>,
    },
}

impl AllocError {
    /// The variant's name: a low-cardinality label for metrics and Event reasons.
    pub fn kind(&self) -> &'static str {
        match self {
            AllocError::NoIpFamilies => "NoIpFamilies",
            AllocError::TooManyAddresses { .. } => "TooManyAddresses",
            AllocError::WrongFamily { .. } => "WrongFamily",
            AllocError::AddressNotInAnyPool { .. } => "AddressNotInAnyPool",
            AllocError::AddressNotAllowed { .. } => "AddressNotAllowed",
            AllocError::AddressNotInRequestedPool { .. } => "AddressNotInRequestedPool",
            AllocError::AddressInUse { .. } => "AddressInUse",
            AllocError::PoolNotFound { .. } => "PoolNotFound",
            AllocError::PoolNotAllowed { .. } => "PoolNotAllowed",
            AllocError::NoPoolForService { .. } => "NoPoolForService",
            AllocError::NoPoolWithFamily { .. } => "NoPoolWithFamily",
            AllocError::Exhausted { .. } => "Exhausted",
            AllocError::DualStackUnavailable { .. } => "DualStackUnavailable",
        }
    }
}

fn join(addresses: &[IpAddr]) -> String {
    let v: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    v.join(", ")
}

fn list_families(f: &[IpFamily]) -> String {
    let v: Vec<String> = f.iter().map(ToString::to_string).collect();
    format!("[{}]", v.join(", "))
}

fn list_denials(d: &[(String, Denial)]) -> String {
    let v: Vec<String> = d
        .iter()
        .map(|(p, why)| format!("pool {p}: {why}"))
        .collect();
    v.join("; ")
}

fn no_pool(d: &[(String, Denial)]) -> String {
    if d.is_empty() {
        "there is no IPPool; create one to give LoadBalancer Services addresses".into()
    } else {
        format!(
            "no IPPool with autoAssign serves this Service ({}); name a pool, or change a pool's autoAssign or serviceAllocation",
            list_denials(d)
        )
    }
}
