//! ferrolb's AWS provider: one Network Load Balancer per Service.
//!
//! Each `ensure` runs three steps: **observe** (read-only calls that find this
//! Service's resources by their tags), **plan** (a pure diff of the desired
//! model against what was observed) and **apply** (the only place with
//! mutating calls). A resync of an unchanged Service therefore makes no
//! mutating call. Every AWS call is counted by operation and outcome.
//!
//! What a full ensure converged to is remembered ([`known`]): a resync of an
//! unchanged Service is then confirmed against one listing of the account
//! shared by all Services ([`snapshot`]), and a change of targets alone writes
//! just the difference, without reading. Every few resyncs a Service is
//! observed in full again, which repairs drift the listing cannot show.

mod addresses;
pub mod annotations;
mod apply;
mod batch;
mod cloud;
mod known;
pub mod model;
pub mod naming;
mod observe;
pub mod plan;
#[cfg(test)]
mod plan_tests;
mod provider;
mod security;
mod snapshot;
pub mod subnets;
pub mod tags;

pub use provider::{AwsConfig, AwsProvider};
