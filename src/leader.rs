//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! One replica holds the Lease and acts; the others wait. Expiry is judged by
//! how long the Lease has gone unchanged on *our* clock (as client-go does), so
//! clock skew between replicas does not matter. A leader that cannot renew
//! within the renew deadline (two thirds of the lease duration) gives up before
//! anyone else may take over, and the caller stops acting at once.
//!
//! The elector also keeps the replica's [`Fence`]: open until the renew
//! deadline of the last round that held the Lease, counted from when that
//! round started. The controller's clients check it before every request, so
//! a leader that stalls past its deadline sends nothing more even before this
//! loop wakes up to notice.
//!
//! A successor never acts before the Lease it found has expired, and that is
//! what keeps a dead leader's last writes (sent before it died, still on
//! their way through the apiserver) from landing after the successor has
//! read the state it restores from. This holds for a process restarted
//! under the same `--leader-election-identity` too: until it has held the
//! Lease itself, a record naming its identity is a predecessor's, and it
//! waits that record out like anyone else's (client-go would renew it at
//! once).

use std::time::Duration;

use ferrolb_provider_api::Fence;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::time::Instant;
use tracing::{debug, info, warn};

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub retry_period: Duration,
}

impl LeaseConfig {
    fn renew_deadline(&self) -> Duration {
        self.lease_duration * 2 / 3
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    /// The last Lease record we saw and when we saw it change.
    observed: Option<(LeaseSpec, Instant)>,
    /// Whether this process has held the Lease. Until it has, a record that
    /// names our identity is a predecessor's (a restart under a fixed
    /// identity), whose writes may still be on their way: we wait it out as
    /// we would anyone else's.
    held_once: bool,
    fence: Fence,
}

impl LeaderElector {
    /// `client` must not be fenced by `fence`: it renews the Lease that
    /// opens it.
    pub fn new(client: kube::Client, cfg: LeaseConfig, fence: Fence) -> Self {
        fence.close();
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: None,
            held_once: false,
            fence,
        }
    }

    pub fn identity(&self) -> &str {
        &self.cfg.identity
    }

    /// Waits until this replica holds the Lease. `on_attempt` is called after
    /// every attempt that reached the apiserver (readiness of a standby).
    pub async fn acquire(&mut self, mut on_attempt: impl FnMut()) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    on_attempt();
                    info!(lease = %self.cfg.name, identity = %self.cfg.identity, "acquired leadership");
                    return;
                }
                Ok(false) => on_attempt(),
                Err(e) => warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(self.cfg.retry_period).await;
        }
    }

    /// Renews the Lease until renewal fails for longer than the renew deadline
    /// or another replica holds it; then returns.
    pub async fn hold(&mut self) {
        let mut last_renew = Instant::now();
        loop {
            tokio::time::sleep(self.cfg.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renew = Instant::now(),
                Ok(false) => {
                    self.fence.close();
                    warn!(lease = %self.cfg.name, "another replica holds the lease");
                    return;
                }
                Err(e) => warn!(error = %e, "renewing the lease failed"),
            }
            if last_renew.elapsed() > self.cfg.renew_deadline() {
                self.fence.close();
                warn!(lease = %self.cfg.name, "could not renew the lease in time");
                return;
            }
        }
    }

    /// Gives the Lease up so a standby takes over at once (on graceful stop).
    pub async fn release(&mut self) {
        // Nothing of ours may land once a standby can take over.
        self.fence.close();
        let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(lease = %self.cfg.name, "released leadership"),
            Err(e) => warn!(error = %e, "releasing the lease failed"),
        }
    }

    /// One round of the election: Ok(true) when we hold the Lease afterwards,
    /// and then the fence is open until the renew deadline from the round's
    /// start (the record others see can be no older than that).
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let started = std::time::Instant::now();
        let held = self.round().await?;
        if held {
            self.held_once = true;
            self.fence.open_until(started + self.cfg.renew_deadline());
        }
        Ok(held)
    }

    async fn round(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let duration_secs =
            i32::try_from(self.cfg.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.cfg.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };

        let spec = lease.spec.clone().unwrap_or_default();
        let held_by_us =
            self.held_once && spec.holder_identity.as_deref() == Some(self.cfg.identity.as_str());
        if !held_by_us {
            let changed = self.observed.as_ref().is_none_or(|(s, _)| s != &spec);
            if changed {
                self.observed = Some((spec.clone(), Instant::now()));
            }
            let holder_free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
            let their_duration =
                Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
            let expired = self
                .observed
                .as_ref()
                .is_some_and(|(_, seen)| seen.elapsed() > their_duration);
            if !holder_free && !expired {
                debug!(holder = ?spec.holder_identity, "lease held by another replica");
                return Ok(false);
            }
        }

        let new_spec = lease.spec.get_or_insert_with(Default::default);
        if !held_by_us {
            new_spec.holder_identity = Some(self.cfg.identity.clone());
            new_spec.acquire_time = Some(now.clone());
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        new_spec.lease_duration_seconds = Some(duration_secs);
        new_spec.renew_time = Some(now);
        // The replace carries the resourceVersion we read: if anyone wrote the
        // Lease in between, it fails with 409 and we lost this round.
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}
