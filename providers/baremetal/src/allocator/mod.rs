//! Which Service gets which address: a pure IP allocator.
//!
//! No I/O, no async, no Kubernetes client: the provider feeds it pools (from the
//! IPPool resources) and requests (from Services) and writes the answers back.
//!
//! # How addresses are chosen
//!
//! 1. A Service that already holds addresses keeps them as long as they still
//!    satisfy its request (same explicit address, inside the requested pool,
//!    shareable with the other holders). Pool edits never move an address: an
//!    allocation outlives a change to, or the removal of, the pool it came from.
//!    A Service that moves (its request changed) keeps its old addresses
//!    taken until [`Allocator::published`] says its new status is out: until
//!    then that status still shows them, and a restart would restore them.
//! 2. Explicitly requested addresses are given if a pool that serves the Service
//!    holds them, even a pool with `autoAssign: false`.
//! 3. Otherwise pools are tried in order (priority ascending, then pools without
//!    a priority, ties by name). A requested pool is the only pool tried and
//!    may have `autoAssign: false`; otherwise only `autoAssign` pools are. A
//!    Service with a sharing key first looks for an address already shared
//!    under that key that it may join, before taking a fresh one.
//! 4. Both families of a dual-stack Service come from one pool when any pool can
//!    give both. When none can, the primary family comes from the first pool
//!    that can give it and the other family from that pool if it can, else from
//!    the next pool in order that can; [`Allocation::pool`] names the primary's
//!    pool. If no pool can give the second family, PreferDualStack gets the
//!    primary family alone and RequireDualStack fails. The same goes for a
//!    family added to a Service that keeps an address (or names one): from
//!    that address's pool first. So `assign` is idempotent: repeating a
//!    request whose answer was one family gives that answer again until a pool
//!    can give the other family.
//!
//! # Cost
//!
//! Each pool keeps, per family, its free addresses as a set of intervals
//! ([`freeset`]); one global map holds address -> holders and one index maps a
//! sharing key -> its addresses. Giving, taking and returning an address is
//! O(log n) per pool holding it, so a Service costs O(pools · log n), never a
//! scan of a pool's addresses.

mod assign;
mod error;
mod freeset;
mod pool;
mod range;
mod selector;
mod state;

#[cfg(test)]
mod tests_assign;
#[cfg(test)]
mod tests_dual_stack;
#[cfg(test)]
mod tests_leaving;
#[cfg(test)]
mod tests_props;
#[cfg(test)]
mod tests_scale;
#[cfg(test)]
mod tests_sharing;
#[cfg(test)]
mod testutil;

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_provider_api::{IpFamily, Protocol, ServiceKey};

pub use error::{AllocError, Denial, ShareConflict};
pub use pool::{Pool, pool_from_spec};
pub use range::AddrRange;
pub use selector::Selector;
pub use state::Allocator;

/// A sharing key: Services with the same key, disjoint (protocol, port) sets
/// and equal backends get the same address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sharing {
    pub key: String,
    pub ports: Vec<(Protocol, u16)>,
    /// Where the Service sends traffic; Services sharing an address must agree
    /// (e.g. empty for `externalTrafficPolicy: Cluster`, the pod selector for
    /// `Local`).
    pub backend: String,
}

/// What one Service asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub service: ServiceKey,
    pub labels: BTreeMap<String, String>,
    /// One or two families, primary first.
    pub families: Vec<IpFamily>,
    /// The primary family is always required; the second only when this is
    /// set (RequireDualStack). PreferDualStack leaves it false.
    pub require_all: bool,
    /// Explicitly requested addresses, at most one per family.
    pub addresses: Vec<IpAddr>,
    /// Explicitly requested pool.
    pub pool: Option<String>,
    pub sharing: Option<Sharing>,
}

/// The addresses a Service holds, in the order of its request's families.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub addresses: Vec<IpAddr>,
    /// The pool the first address came from. For a restored address or one
    /// kept after its pool changed, the pool recorded then; empty when no pool
    /// holds a restored address.
    pub pool: String,
}

/// What a Service's own record of its allocation, written with its
/// status, says of the addresses the status shows (for restoring them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// They were given to it under the sharing key and terms (ports,
    /// traffic policy) it has now.
    Current,
    /// They were given to it under the sharing key it has now, but its
    /// ports or traffic policy changed after. It still counts for its key;
    /// where the new terms clash with a Service that did not change, that
    /// one keeps the address.
    TermsChanged,
    /// It was given other addresses since (its new status was not written
    /// yet), or its sharing key changed after: the status no longer says
    /// what it holds.
    Stale,
    /// No record (a status written before records were kept).
    Unknown,
}

/// How much of a pool is used. Counts saturate at `u64::MAX`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolUsage {
    /// Held addresses inside the pool, whichever pool they were handed out by.
    pub assigned_v4: u64,
    pub assigned_v6: u64,
    /// Free addresses the pool may still hand out (without .0/.255 when
    /// `avoid_buggy_ips`).
    pub available_v4: u64,
    pub available_v6: u64,
}
