//! ferrolb's bare-metal provider: addresses from IP pools.
//!
//! The controller side lives here: the `IPPool` CRD, the allocator (pure, in
//! [`allocator`]) and the provider that ties the allocator to the cluster. The
//! speaker, which announces the addresses on the LAN, is in [`speaker`].

pub mod allocator;
pub mod annotations;
pub mod crd;
mod provider;
pub mod speaker;

pub use provider::{BareMetalConfig, BareMetalProvider};
