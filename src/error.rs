//! The controller's errors: one variant per failing step, each with the Service
//! it concerns, classed by what to do next.

use ferrolb_provider_api::{ErrorClass, ProviderError, ServiceKey};

use crate::intent::IntentError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{source}")]
    Intent {
        #[source]
        source: IntentError,
        service: ServiceKey,
    },

    #[error("{source}")]
    Ensure {
        #[source]
        source: ProviderError,
        service: ServiceKey,
    },

    #[error("{source}")]
    Delete {
        #[source]
        source: ProviderError,
        service: ServiceKey,
    },

    #[error("writing the status, finalizer and annotations of {service}: {source}")]
    PatchStatus {
        #[source]
        source: kube::Error,
        service: ServiceKey,
    },

    #[error("adding the finalizer to {service}: {source}")]
    AddFinalizer {
        #[source]
        source: kube::Error,
        service: ServiceKey,
    },

    #[error("removing the finalizer from {service}: {source}")]
    RemoveFinalizer {
        #[source]
        source: kube::Error,
        service: ServiceKey,
    },
}

impl Error {
    /// What the controller should do next.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Intent { .. } => ErrorClass::Invalid,
            Error::Ensure { source, .. } | Error::Delete { source, .. } => source.class(),
            Error::PatchStatus { source, .. }
            | Error::AddFinalizer { source, .. }
            | Error::RemoveFinalizer { source, .. } => kube_class(source),
        }
    }

    /// The user-facing message for a Warning Event, when the error is the
    /// user's or the provider's to explain.
    pub fn event_note(&self) -> Option<(&'static str, String)> {
        match self {
            Error::Intent { source, .. } => Some((
                "SyncLoadBalancerFailed",
                format!("Error syncing load balancer: {source}"),
            )),
            Error::Ensure { source, .. } => Some((
                "SyncLoadBalancerFailed",
                format!("Error syncing load balancer: {source}"),
            )),
            Error::Delete { source, .. } => Some((
                "DeleteLoadBalancerFailed",
                format!("Error deleting load balancer: {source}"),
            )),
            _ => None,
        }
    }
}

fn kube_class(e: &kube::Error) -> ErrorClass {
    match e {
        kube::Error::Api(s) if s.code == 429 => ErrorClass::Throttled,
        kube::Error::Api(s) if s.code == 422 || s.code == 400 => ErrorClass::Invalid,
        _ => ErrorClass::Transient,
    }
}
