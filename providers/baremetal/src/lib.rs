//! ferrolb's bare-metal provider: addresses from IP pools.
//!
//! The controller side lives here: the `IPPool` CRD, the allocator (pure, in
//! [`allocator`]) and the provider that ties the allocator to the cluster. The
//! speaker (ARP/NDP and BGP announcing) lands with its own issues.

pub mod allocator;
pub mod annotations;
pub mod crd;
mod provider;

pub use provider::{BareMetalConfig, BareMetalProvider};
