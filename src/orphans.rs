//! Collecting what a provider holds for Services that no longer exist.
//!
//! A Service's resources are deleted by its reconcile when the Service goes,
//! guarded by our finalizer. Anything that slipped past that (a finalizer
//! removed by hand, a crash between creating a resource and recording it, a
//! load balancer replaced while the controller was down) is found here by its
//! ownership tags and deleted once the apiserver confirms that its Service is
//! gone, or is not served by this install and carries no finalizer of ours.

use std::sync::Arc;
use std::time::Duration;

use ferrolb_provider_api::{Provider, ProviderError};
use k8s_openapi::api::core::v1::Service;
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use crate::reconcile::{Config, FINALIZER};

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("listing what the provider holds: {0}")]
    Owners(#[source] ProviderError),
    #[error("reading Service {service}: {source}")]
    ReadService {
        service: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting the leftovers of {service}: {source}")]
    Delete {
        service: String,
        #[source]
        source: ProviderError,
    },
}

/// One sweep; returns how many Services' leftovers were deleted.
pub async fn sweep(
    client: &Client,
    provider: &dyn Provider,
    config: &Config,
) -> Result<usize, SweepError> {
    let owners = provider.owners().await.map_err(SweepError::Owners)?;
    let mut swept = 0;
    for key in owners {
        let api: Api<Service> = Api::namespaced(client.clone(), &key.namespace);
        let svc = api
            .get_opt(&key.name)
            .await
            .map_err(|source| SweepError::ReadService {
                service: key.to_string(),
                source,
            })?;
        let still_owned = svc
            .as_ref()
            .is_some_and(|s| config.is_ours(s) || s.finalizers().iter().any(|f| f == FINALIZER));
        if still_owned {
            continue; // its own reconcile keeps it or cleans it up
        }
        info!(service = %key, "deleting resources whose Service is gone");
        provider
            .delete(&key)
            .await
            .map_err(|source| SweepError::Delete {
                service: key.to_string(),
                source,
            })?;
        swept += 1;
    }
    Ok(swept)
}

/// Sweeps now and then every `period`, until the process ends.
pub async fn sweep_every(
    client: Client,
    provider: Arc<dyn Provider>,
    config: Config,
    period: Duration,
) {
    loop {
        match sweep(&client, provider.as_ref(), &config).await {
            Ok(0) => {}
            Ok(n) => info!(services = n, "collected leaked resources"),
            Err(e) => warn!(error = %e, "sweeping leaked resources failed; will try again"),
        }
        tokio::time::sleep(period).await;
    }
}
