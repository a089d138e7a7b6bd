//! The ensures that need no full observe: a resync confirmed in the shared
//! account snapshot (or, moments after a full ensure, not even that), and a
//! change of targets only ([`crate::known`]).

use ferrolb_provider_api::{LoadBalancerStatus, ProviderError, ServiceKey};
use tracing::{debug, info, warn};

use super::{AwsProvider, EnsureLabels, lock, status_of};
use crate::apply;
use crate::known::{self, FullReason, Path};
use crate::model;
use crate::snapshot;

impl AwsProvider {
    /// The ensure of an unchanged Service, or of one whose targets alone
    /// changed, from what the last full ensure left ([`crate::known`]).
    /// `Ok(Err(reason))`: the full path is needed.
    pub(super) async fn fast_ensure(
        &self,
        key: &ServiceKey,
        desired: &model::DesiredLoadBalancer,
        wanted_ranges: &[ipnet::IpNet],
    ) -> Result<Result<LoadBalancerStatus, FullReason>, ProviderError> {
        let known = lock(&self.known).get(key).cloned();
        let path = known::decide(known.as_ref(), desired, wanted_ranges);
        let (known, path) = match (known, path) {
            (_, Path::Full(reason)) => return Ok(Err(reason)),
            (Some(k), path) => (k, path),
            (None, _) => return Ok(Err(FullReason::Unknown)),
        };
        match path {
            Path::Full(reason) => Ok(Err(reason)),
            Path::Confirm if known.at.elapsed() < self.trust_full_for => {
                debug!(service = %key, "ensured in full moments ago; taken as it was left");
                self.count(&EnsureLabels {
                    path: "recent",
                    reason: "",
                });
                Ok(Ok(status_of(&known.lb)))
            }
            Path::Confirm => {
                let account = self.snapshots.since(known.at).await?;
                if let Err(why) = snapshot::confirms(&account, &known) {
                    info!(service = %key, %why, "the account differs from what is known; observing in full");
                    return Ok(Err(FullReason::Drift));
                }
                self.drop_stale(key, &known).await?;
                if let Some(k) = lock(&self.known).get_mut(key) {
                    k.confirms_left = k.confirms_left.saturating_sub(1);
                }
                debug!(service = %key, "load balancer confirmed in the account snapshot");
                self.count(&EnsureLabels {
                    path: "confirmed",
                    reason: "",
                });
                Ok(Ok(status_of(&known.lb)))
            }
            Path::Targets(actions) => {
                info!(service = %key, target_groups = actions.len(), "updating targets only");
                let result =
                    apply::apply(&self.cloud, desired, &actions, Some(known.lb.clone()), None)
                        .await;
                match result {
                    Ok(_) => {}
                    Err(e) if e.class() == ferrolb_provider_api::ErrorClass::Throttled => {
                        return Err(e);
                    }
                    Err(e) => {
                        // A target group gone, a target refused: the full
                        // path finds out what is there. Until one succeeds,
                        // nothing known is trusted.
                        warn!(service = %key, error = %e, "changing targets failed; observing in full");
                        if let Some(k) = lock(&self.known).get_mut(key) {
                            k.spec = None;
                        }
                        return Ok(Err(FullReason::TargetsFailed));
                    }
                }
                let next = known::with_targets(&known, desired);
                self.drop_stale(key, &next).await?;
                lock(&self.known).insert(key.clone(), next);
                self.count(&EnsureLabels {
                    path: "targets",
                    reason: "",
                });
                Ok(Ok(status_of(&known.lb)))
            }
        }
    }
}
