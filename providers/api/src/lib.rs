//! The contract between the ferrolb controller and its providers.
//!
//! The controller turns a Service, the eligible Nodes and the Service's
//! EndpointSlices into a [`LoadBalancerIntent`] (a plain value, no Kubernetes
//! types) and hands it to a [`Provider`]. The provider makes the world match the
//! intent and answers with the [`LoadBalancerStatus`] to publish. This crate has
//! no Kubernetes dependency so that providers and the controller depend on it and
//! not on each other.

mod error;
mod fence;
mod intent;

pub use error::{ErrorClass, ProviderError, quote};
pub use fence::{Fence, Fenced};
pub use intent::{
    Endpoint, IpFamily, IpFamilyPolicy, LoadBalancerIntent, NodeTarget, PortIntent, Protocol,
    ServiceKey, TrafficPolicy,
};

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

/// Called by a provider when something outside the Services changed (a pool
/// was added, an address was freed) that may unblock Services whose last
/// `ensure` failed as [`ErrorClass::Unsatisfiable`].
pub type ChangeNotifier = Arc<dyn Fn() + Send + Sync>;

/// One entry of `status.loadBalancer.ingress`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ingress {
    /// An address the nodes take traffic for themselves (`ipMode: VIP`):
    /// kube-proxy short-cuts in-cluster traffic to it.
    Ip(IpAddr),
    /// An address of a load balancer that traffic must pass through
    /// (`ipMode: Proxy`): kube-proxy leaves it alone.
    ProxyIp(IpAddr),
    Hostname(String),
}

/// What a provider reports after a successful `ensure`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadBalancerStatus {
    /// The addresses to publish in `status.loadBalancer.ingress`, in order.
    pub ingress: Vec<Ingress>,
    /// Annotations the provider wants on the Service (for example the pool an
    /// address came from). A key mapped to `None` is removed.
    pub annotations: BTreeMap<String, Option<String>>,
}

/// A Service this install owned before the controller (re)started, with what its
/// status already says. Providers that keep state in memory rebuild it from these
/// before the first `ensure`, so a restart never moves an address.
#[derive(Clone, Debug)]
pub struct OwnedService {
    /// The Service's intent as it stands, with no `targets` and no
    /// `endpoints` (restoring state needs neither).
    pub intent: LoadBalancerIntent,
    /// The addresses currently published in the Service's status.
    pub ingress: Vec<Ingress>,
}

/// A load-balancer provider: the only place where the world outside the cluster
/// is read or changed.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// A short static name, used in logs and metric labels.
    fn name(&self) -> &'static str;

    /// Annotations this provider writes on Services (through
    /// [`LoadBalancerStatus::annotations`]); the controller removes them when
    /// it lets go of a Service.
    fn owned_annotations(&self) -> &'static [&'static str] {
        &[]
    }

    /// Adds the provider's own metrics (cloud calls by operation and outcome,
    /// …) to the controller's registry.
    /// Service annotations that make a Service's targets depend on node
    /// labels: a change to a node's labels alone reconciles only the Services
    /// that carry one of these.
    fn node_label_annotations(&self) -> &'static [&'static str] {
        &[]
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        let _ = registry;
    }

    /// Registers the callback for changes that may unblock waiting Services.
    fn set_change_notifier(&self, notify: ChangeNotifier) {
        let _ = notify;
    }

    /// Whether the controller must put its finalizer on a Service before the
    /// first `ensure`: true for a provider that makes things outside the
    /// cluster (a load balancer), which would leak if the Service went
    /// without the controller noticing. A provider that only keeps state in
    /// memory and rebuilds it from the Services on start can answer false:
    /// the finalizer then goes on in the same write as the provider's
    /// annotations and the status, and the controller calls `delete` for a Service deleted
    /// before it had one.
    fn needs_finalizer_before_ensure(&self) -> bool {
        true
    }

    /// For a provider that keeps its state in memory only (one that answers
    /// false to [`Provider::needs_finalizer_before_ensure`]): the Services it
    /// holds something for. After each fresh list of Services the controller
    /// calls `delete` for those the list no longer shows: a Service deleted
    /// while the watch was down, before our finalizer was on it, leaves no
    /// delete event behind. Default: none.
    fn held(&self) -> Vec<ServiceKey> {
        Vec::new()
    }

    /// Whether `ensure` reads the intent's `targets` and `endpoints`. A
    /// provider that answers false gets intents without them, and the
    /// controller then neither watches Nodes and EndpointSlices nor
    /// reconciles on their changes: with thousands of Services and
    /// hundreds of Nodes, those lists and target sets are most of what a
    /// start and a reconcile that changes nothing cost. Default: true.
    fn reads_targets(&self) -> bool {
        true
    }

    /// Starts what the provider watches of its own, once this replica leads:
    /// the controller calls it before it lists Services, so the provider's
    /// lists run next to the controller's rather than after them. It may be
    /// called before `restore` or not at all; `restore` must start what it
    /// needs itself. Default: nothing to start.
    fn start(&self) {}

    /// Rebuild in-memory state from the Services this install already owns.
    /// Called once, after leadership is acquired and before any `ensure`.
    async fn restore(&self, owned: Vec<OwnedService>) -> Result<(), ProviderError> {
        let _ = owned;
        Ok(())
    }

    /// The Services that own something in the provider's world, found by the
    /// provider's ownership marks (tags), whether or not the Service still
    /// exists. The controller calls `delete` for each one whose Service is
    /// gone: that is how leaked resources are collected. Default: none.
    async fn owners(&self) -> Result<BTreeSet<ServiceKey>, ProviderError> {
        Ok(BTreeSet::new())
    }

    /// Make the load balancer for `intent` exist and match it. Idempotent: a call
    /// for an unchanged intent changes nothing.
    async fn ensure(
        &self,
        intent: &LoadBalancerIntent,
    ) -> Result<LoadBalancerStatus, ProviderError>;

    /// Called once the Service's status shows what `ensure` returned, whether
    /// just written or already so. A provider that frees something when a
    /// Service moves (an address from a pool) frees it only now: until the
    /// new status is out the old one still shows it, and a restart would
    /// restore it from there. Default: nothing.
    fn published(&self, key: &ServiceKey, status: &LoadBalancerStatus) {
        let _ = (key, status);
    }

    /// Remove everything this install holds for the Service. Idempotent: it
    /// succeeds when nothing is left, including when `ensure` never ran.
    async fn delete(&self, key: &ServiceKey) -> Result<(), ProviderError>;
}
