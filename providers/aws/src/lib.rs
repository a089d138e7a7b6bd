//! ferrolb's AWS provider (Network Load Balancers).
//!
//! The NLB logic lands with its own issue; until then the provider refuses every
//! Service with a clear, non-retrying error instead of pretending to work.

use ferrolb_provider_api::{
    LoadBalancerIntent, LoadBalancerStatus, Provider, ProviderError, ServiceKey,
};

/// The AWS provider. It has no logic yet: `ensure` reports that the provider is
/// not implemented, and `delete` succeeds because it never created anything.
#[derive(Debug, Default)]
pub struct AwsProvider;

#[async_trait::async_trait]
impl Provider for AwsProvider {
    fn name(&self) -> &'static str {
        "aws"
    }

    async fn ensure(
        &self,
        _intent: &LoadBalancerIntent,
    ) -> Result<LoadBalancerStatus, ProviderError> {
        Err(ProviderError::invalid(
            "--provider",
            "the aws provider is not implemented in this build of ferrolb",
        ))
    }

    async fn delete(&self, _key: &ServiceKey) -> Result<(), ProviderError> {
        Ok(())
    }
}
