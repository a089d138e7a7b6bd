//! [`AwsProvider`]: observe → plan → apply for one Service's NLB.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use ferrolb_provider_api::{
    Fence, Ingress, LoadBalancerIntent, LoadBalancerStatus, OwnedService, Provider, ProviderError,
    ServiceKey,
};
use tracing::{debug, info, warn};

use crate::annotations::{self, Scheme, TargetType};
use crate::apply::{self, LbHandle, delete_load_balancer, delete_target_group};
use crate::cloud::Cloud;
use crate::known::{self, FullReason, Known, KnownTargetGroup, Spec};
use crate::model;
use crate::observe;
use crate::plan::{self, Action};
use crate::snapshot::{self, Snapshots};
use crate::subnets::{self, SubnetInfo};

mod cached;
mod vpc;

/// How long the VPC's subnets and route tables are trusted before being read again.
const SUBNET_CACHE_TTL: Duration = Duration::from_secs(300);

#[derive(Clone, Debug)]
pub struct AwsConfig {
    pub cluster_name: String,
    /// Checked before every call is sent ([`Fence::always_open`] without
    /// leader election).
    pub fence: Fence,
    /// The bound on one attempt of an AWS call; see [`AwsProvider::new`].
    pub call_timeout: Duration,
    /// Attempts at one call that fails with a retryable error.
    pub call_attempts: u32,
    /// The controller's resync period. An unchanged Service ensured in full
    /// less than half of it ago is taken as that ensure left it, with no look
    /// at the account: a reconcile that comes that soon (a change to the
    /// Service that alters nothing the load balancer is built from, or a
    /// write of ours that came back with someone else's change in it) would
    /// otherwise cost a listing of the account per burst only to show what
    /// was just made. Drift is looked for at the next resync, as ever.
    pub resync: Duration,
}

/// The longest the SDK's standard retry mode waits between two attempts; the
/// n-th wait is at most 2^(n-1) s, and at most this.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(20);

/// The bound on a whole call: every attempt, and the longest waits between
/// them.
fn operation_timeout(attempt: Duration, attempts: u32) -> Duration {
    let waits: Duration = (0..attempts.saturating_sub(1))
        .map(|n| Duration::from_secs(1u64 << n.min(16)).min(MAX_RETRY_BACKOFF))
        .sum();
    attempt * attempts + waits
}

/// `ferrolb_aws_ensures_total`: which path each ensure took.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnsureLabels {
    /// `confirmed` (seen in the account snapshot, nothing else read),
    /// `recent` (ensured in full less than half a resync period ago, nothing
    /// read),
    /// `targets` (only the changed targets written) or `full`.
    path: &'static str,
    /// Why a full ensure was needed; empty for the other paths.
    reason: &'static str,
}

/// Load balancers and target groups tagged for one Service, by ARN.
type Tagged = (Vec<String>, Vec<String>);
/// One resource's tags.
type Tags = BTreeMap<String, String>;

pub struct AwsProvider {
    cloud: Cloud,
    reads: observe::Reads,
    cluster: String,
    /// Services whose status showed a hostname when the controller started:
    /// their load balancers most likely exist.
    published: Mutex<HashSet<ServiceKey>>,
    /// When this process began to lead (its `restore`); `None` before.
    led_at: Mutex<Option<Instant>>,
    /// Services this process has ensured or deleted, whatever the outcome,
    /// with when the last of those stopped: it may have sent calls for them
    /// until then, and none since.
    ensured: Mutex<HashMap<ServiceKey, Instant>>,
    known: Mutex<HashMap<ServiceKey, Known>>,
    /// Whether ensures may use what `known` says to skip the full path.
    cache: bool,
    /// See [`AwsConfig::resync`].
    trust_full_for: Duration,
    snapshots: Snapshots,
    /// Tags of every load balancer and target group the last sweep listed
    /// or an ensure made, by ARN, with when they were learnt: tags do not
    /// change under ferrolb, so a sweep reads only those of resources new
    /// since. Never used to modify anything: whatever is deleted on a
    /// sweep's word has its tags read again first.
    tags: Mutex<HashMap<String, (Instant, Tags)>>,
    ensures: Family<EnsureLabels, Counter>,
    /// What the last sweep found tagged for each Service that still exists,
    /// until that Service's next ensure has looked at it.
    swept: Mutex<BTreeMap<ServiceKey, Tagged>>,
    subnets: Mutex<Option<(Instant, Vec<SubnetInfo>)>>,
    /// Held while the subnets are read, so that concurrent creates read them once.
    subnets_read: tokio::sync::Mutex<()>,
    /// The Services that had source-range rules in the VPC when first asked
    /// (one read for all): rules are written only by ensures of this process
    /// after that, which `known` records.
    had_rules: tokio::sync::Mutex<Option<(String, BTreeSet<ServiceKey>)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records, when dropped, that an ensure or a delete of the Service stopped
/// now: however it ended (an error, or its future dropped halfway), it sends
/// no call after this.
struct Stamp<'a>(&'a Mutex<HashMap<ServiceKey, Instant>>, &'a ServiceKey);

impl Drop for Stamp<'_> {
    fn drop(&mut self) {
        lock(self.0).insert(self.1.clone(), Instant::now());
    }
}

impl AwsProvider {
    /// Credentials and region from the default chain; the endpoint from
    /// `AWS_ENDPOINT_URL` when set. The ensure cache is on.
    ///
    /// Every attempt of a call is bounded by `config.call_timeout`, and a whole
    /// call by its attempts and the waits between them: the SDK bounds only
    /// connecting by default, so an endpoint that accepts a request and never
    /// answers would hold the Service's reconcile, and every later one waiting
    /// for it, forever. A timed-out attempt is retried like a dropped
    /// connection. `config.call_attempts` replaces the SDK's 3: with 3, when
    /// AWS fails half the calls one call in 8 fails for good and so does most
    /// ensures' (each about ten calls); with 5, one in 32.
    pub async fn new(config: AwsConfig) -> Self {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(config.call_timeout)
            .operation_timeout(operation_timeout(config.call_timeout, config.call_attempts))
            .build();
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(timeouts)
            .retry_config(
                aws_config::retry::RetryConfig::standard().with_max_attempts(config.call_attempts),
            )
            .load()
            .await;
        Self::from_sdk(&sdk, config)
    }

    /// With `false`, every ensure observes, plans and applies in full.
    pub fn with_ensure_cache(mut self, on: bool) -> Self {
        self.cache = on;
        self
    }

    pub fn from_sdk(sdk: &aws_config::SdkConfig, config: AwsConfig) -> Self {
        let cloud = Cloud::new(sdk, &config.fence);
        Self {
            reads: observe::Reads::new(&cloud),
            snapshots: Snapshots::new(&cloud),
            published: Mutex::default(),
            led_at: Mutex::default(),
            ensured: Mutex::default(),
            cloud,
            cluster: config.cluster_name,
            known: Mutex::default(),
            cache: true,
            trust_full_for: config.resync / 2,
            tags: Mutex::default(),
            ensures: Family::default(),
            swept: Mutex::default(),
            subnets: Mutex::default(),
            subnets_read: tokio::sync::Mutex::new(()),
            had_rules: tokio::sync::Mutex::new(None),
        }
    }

    /// Removes what an earlier ensure made for this Service and the current one
    /// no longer uses (a load balancer replaced because its name changed).
    async fn drop_replaced(&self, key: &ServiceKey, current: &Known) -> Result<(), ProviderError> {
        let previous = lock(&self.known).get(key).cloned();
        let Some(previous) = previous else {
            return Ok(());
        };
        self.delete_unused(
            key,
            std::slice::from_ref(&previous.lb.arn),
            &previous.target_group_arns(),
            current,
        )
        .await
    }

    /// Deletes what the last sweep found tagged for this Service and that its
    /// load balancer no longer uses: a load balancer replaced (new name or
    /// scheme) by a controller that stopped before it could delete the old
    /// one, and that one's target groups. Reconciles of one Service never run
    /// at once, so nothing here is still being built.
    async fn drop_stale(&self, key: &ServiceKey, current: &Known) -> Result<(), ProviderError> {
        let Some((lbs, tgs)) = lock(&self.swept).remove(key) else {
            return Ok(());
        };
        let current_tgs = current.target_group_arns();
        let stale: Vec<String> = lbs
            .iter()
            .filter(|lb| **lb != current.lb.arn)
            .chain(tgs.iter().filter(|t| !current_tgs.contains(t)))
            .cloned()
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        // The sweep read most tags from its cache: read these again, and
        // leave alone whatever is no longer tagged for this Service.
        let fresh = match observe::tags_of(&self.cloud, &stale).await {
            Ok(fresh) => fresh,
            Err(e) => {
                lock(&self.swept).insert(key.clone(), (lbs, tgs));
                return Err(e.into());
            }
        };
        let ours = |arn: &String| {
            fresh
                .get(arn)
                .is_some_and(|t| crate::tags::is_owned_by(t, &self.cluster, key))
        };
        let (lbs, tgs): (Vec<String>, Vec<String>) = (
            lbs.into_iter().filter(|a| ours(a)).collect(),
            tgs.into_iter().filter(|a| ours(a)).collect(),
        );
        let result = self.delete_unused(key, &lbs, &tgs, current).await;
        if result.is_err() {
            // Tried again on the next ensure (deleting what is gone is fine).
            lock(&self.swept).insert(key.clone(), (lbs, tgs));
        }
        result
    }

    /// Deletes those of `lbs` and `tgs` that are not `current`'s: the load
    /// balancers first, so that their listeners no longer hold the groups.
    async fn delete_unused(
        &self,
        key: &ServiceKey,
        lbs: &[String],
        tgs: &[String],
        current: &Known,
    ) -> Result<(), ProviderError> {
        for lb in lbs.iter().filter(|lb| **lb != current.lb.arn) {
            info!(service = %key, old = %lb, "deleting a load balancer this Service no longer uses");
            delete_load_balancer(&self.cloud, lb).await?;
        }
        let current_tgs = current.target_group_arns();
        for tg in tgs.iter().filter(|t| !current_tgs.contains(t)) {
            delete_target_group(&self.cloud, tg).await?;
        }
        Ok(())
    }

    /// What each Service owns in `account`, by the tags the sweeps and the
    /// ensures learnt: only the tags of what neither has seen are read.
    async fn owners_in(
        &self,
        account: &snapshot::Account,
    ) -> Result<BTreeMap<ServiceKey, Tagged>, ProviderError> {
        let unseen: Vec<String> = {
            let cache = lock(&self.tags);
            account
                .arns()
                .filter(|a| !cache.contains_key(*a))
                .cloned()
                .collect()
        };
        let read = observe::tags_of(&self.cloud, &unseen).await?;
        let mut cache = lock(&self.tags);
        cache.extend(read.into_iter().map(|(arn, t)| (arn, (account.taken, t))));
        // What the view lacks is gone, unless it was made after the view
        // was taken (a view is reused for up to a few minutes).
        cache.retain(|arn, (learnt, _)| {
            *learnt > account.taken
                || account.load_balancers.contains_key(arn)
                || account.target_groups.contains_key(arn)
        });
        Ok(observe::owners_of(
            account.load_balancers.keys(),
            account.target_groups.keys(),
            |arn| {
                cache
                    .get(arn)
                    .and_then(|(_, t)| crate::tags::owner(t, &self.cluster))
            },
        ))
    }

    /// The load balancers and target groups tagged for `key`, for its delete.
    ///
    /// They are looked for in a view of the account listed after anything of
    /// the Service's could have been made: after this process began to lead
    /// (what earlier leaders made is in it) and after the last ensure or
    /// delete of the Service here stopped (what this process made is in it).
    /// The view is the one the resyncs and the sweep share when it is new
    /// enough, so deleting many Services costs a listing or two between them
    /// rather than one each, and only the tags of resources no sweep or
    /// ensure has seen are read to pick the candidates. The candidates' tags
    /// are then read again, and only what still says it is the Service's is
    /// deleted: the cache finds, it never decides.
    async fn tagged_for(&self, key: &ServiceKey) -> Result<Tagged, ProviderError> {
        let after = {
            let led_at = *lock(&self.led_at);
            let stopped = lock(&self.ensured).get(key).copied();
            match (led_at, stopped) {
                (Some(led), Some(stopped)) => led.max(stopped),
                (Some(led), None) => led,
                // Not leading yet (not restored): only a new listing will do.
                (None, _) => Instant::now(),
            }
        };
        let account = self.snapshots.since(after).await?;
        let (lbs, tgs) = self
            .owners_in(&account)
            .await?
            .remove(key)
            .unwrap_or_default();
        if lbs.is_empty() && tgs.is_empty() {
            return Ok((lbs, tgs));
        }
        let candidates: Vec<String> = lbs.iter().chain(&tgs).cloned().collect();
        let fresh = self.tags_of_present(&candidates).await?;
        let ours = |arn: &String| {
            fresh
                .get(arn)
                .is_some_and(|t| crate::tags::is_owned_by(t, &self.cluster, key))
        };
        Ok((
            lbs.into_iter().filter(ours).collect(),
            tgs.into_iter().filter(ours).collect(),
        ))
    }

    /// The tags of those of `arns` that still exist. One of them gone fails
    /// a whole batch (`LoadBalancerNotFound`, `TargetGroupNotFound`), so then
    /// each is read alone.
    async fn tags_of_present(
        &self,
        arns: &[String],
    ) -> Result<BTreeMap<String, Tags>, ProviderError> {
        match observe::tags_of(&self.cloud, arns).await {
            Err(e) if e.is_not_found() => {}
            r => return Ok(r?),
        }
        let mut out = BTreeMap::new();
        for arn in arns {
            match observe::tags_of(&self.cloud, std::slice::from_ref(arn)).await {
                Ok(t) => out.extend(t),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    fn count(&self, labels: &EnsureLabels) {
        self.ensures.get_or_create(labels).inc();
    }

    /// Whether the shared account view says that no load balancer is named
    /// `name`, which a Service's first full ensure in this process takes
    /// instead of reading the name on its own: 200 new Services then cost one
    /// listing of the account between them rather than a DescribeLoadBalancers
    /// each (AWS answers a batch of names that holds a missing one with
    /// LoadBalancerNotFound for all of it, so names cannot be batched).
    ///
    /// Only a view listed since this process began to lead will do. It shows
    /// every load balancer made before then; after then, ferrolb's are made by
    /// this process alone (a new leader waits out its predecessor's Lease),
    /// and this is asked only for a Service whose name is ferrolb's own (it
    /// holds the Service's UID) and that has no stamp in `ensured`: this
    /// process sent no call for it, or all of them before a view that was
    /// already listed, and views only get newer. A name given
    /// by annotation can be taken by anyone at any time, so it is always read.
    /// Should the view still be wrong, CreateLoadBalancer with the same name
    /// and settings returns the existing load balancer, and the next ensure
    /// reads by name.
    async fn absent_from_view(&self, name: &str) -> bool {
        if !self.cache {
            return false;
        }
        let Some(led_at) = *lock(&self.led_at) else {
            return false;
        };
        match self.snapshots.since(led_at).await {
            Ok(account) => !account.has_load_balancer_named(name),
            Err(e) => {
                debug!(error = %e, "listing the account failed; reading the name instead");
                false
            }
        }
    }

    /// Observe, plan and apply: what every ensure did before the cache, and
    /// what one does whenever the cache cannot vouch for the Service.
    async fn full_ensure(
        &self,
        intent: &LoadBalancerIntent,
        opts: &annotations::AwsOptions,
        wanted_ranges: &[ipnet::IpNet],
        mut desired: model::DesiredLoadBalancer,
    ) -> Result<LoadBalancerStatus, ProviderError> {
        let spec = Spec::of(&desired, wanted_ranges);
        let expected = lock(&self.known).contains_key(&intent.key)
            || lock(&self.published).contains(&intent.key);
        let first = !lock(&self.ensured).contains_key(&intent.key);
        let absent =
            !expected && first && opts.name.is_none() && self.absent_from_view(&desired.name).await;
        let (observed, vpc_id) = if absent {
            debug!(service = %intent.key, name = %desired.name, "not in the account view: creating without a read");
            (plan::Observed::default(), None)
        } else {
            observe::observe(
                &self.cloud,
                &self.reads,
                &desired,
                &self.cluster,
                &intent.key,
                expected,
            )
            .await?
        };
        let actions = plan::plan(&desired, &observed);
        let mut vpc_id = vpc_id;
        if actions.contains(&Action::CreateLoadBalancer) {
            let infos = self.vpc_subnets().await?;
            let scheme = match opts.scheme {
                Scheme::InternetFacing => subnets::Scheme::InternetFacing,
                Scheme::Internal => subnets::Scheme::Internal,
            };
            desired.subnets = if opts.subnets.is_empty() {
                subnets::choose(&infos, &self.cluster, scheme)
            } else {
                subnets::resolve(&opts.subnets, &infos, scheme)
            }
            .map_err(|reason| {
                ProviderError::invalid(
                    "metadata.annotations[service.beta.kubernetes.io/aws-load-balancer-subnets]",
                    reason,
                )
            })?;
            for (what, n) in [
                ("eip-allocations", desired.eip_allocations.len()),
                (
                    "private-ipv4-addresses",
                    desired.private_ipv4_addresses.len(),
                ),
            ] {
                if n != 0 && n != desired.subnets.len() {
                    return Err(ProviderError::invalid(
                        format!(
                            "metadata.annotations[service.beta.kubernetes.io/aws-load-balancer-{what}]"
                        ),
                        format!(
                            "gives {n} entries for {} subnets; give one per subnet",
                            desired.subnets.len()
                        ),
                    ));
                }
            }
            desired.private_ipv4_addresses = crate::addresses::pair_with_subnets(
                &desired.subnets,
                &infos,
                &desired.private_ipv4_addresses,
            )
            .map_err(|reason| {
                ProviderError::invalid(
                    "metadata.annotations[service.beta.kubernetes.io/aws-load-balancer-private-ipv4-addresses]",
                    reason,
                )
            })?;
            vpc_id = infos.first().map(|s| s.vpc_id.clone());
            if let Some(vpc) = vpc_id.as_deref() {
                desired.security_groups = self
                    .security_group_ids(vpc, &desired.security_groups)
                    .await?;
            }
        }
        if actions.is_empty() {
            debug!(service = %intent.key, "load balancer up to date");
        } else {
            info!(service = %intent.key, actions = actions.len(), "applying plan");
            debug!(service = %intent.key, ?actions, "plan");
        }
        let existing = observed.load_balancer.as_ref().map(|lb| LbHandle {
            arn: lb.arn.clone(),
            dns_name: lb.dns_name.clone(),
            addresses: lb.addresses.clone(),
        });
        let applied =
            apply::apply(&self.cloud, &desired, &actions, existing, vpc_id.as_deref()).await?;

        let lb_subnets = match &observed.load_balancer {
            Some(lb) => lb.subnets.clone(),
            None => desired.subnets.clone(),
        };
        let has_rules = self
            .converge_rules(
                intent,
                &desired,
                wanted_ranges,
                &lb_subnets,
                vpc_id.as_deref(),
            )
            .await?;

        let current = Known {
            has_rules,
            lb: applied.lb.clone(),
            lb_name: desired.name.clone(),
            target_groups: desired
                .target_groups
                .iter()
                .filter_map(|d| {
                    let arn = applied
                        .new_target_groups
                        .get(&d.name)
                        .cloned()
                        .or_else(|| {
                            observed
                                .target_groups
                                .iter()
                                .find(|t| t.name == d.name)
                                .map(|t| t.arn.clone())
                        })?;
                    Some(KnownTargetGroup {
                        arn,
                        name: d.name.clone(),
                        port: d.port,
                        protocol: d.protocol,
                        targets: d.targets.clone(),
                    })
                })
                .collect(),
            spec: self.cache.then_some(spec),
            at: Instant::now(),
            confirms_left: known::confirms_after_full(&intent.key),
        };
        {
            // What ferrolb just made carries these tags, so the next sweep
            // need not read them.
            let now = Instant::now();
            let mut cache = lock(&self.tags);
            cache.insert(current.lb.arn.clone(), (now, desired.tags.clone()));
            for (tg, d) in current.target_groups.iter().zip(&desired.target_groups) {
                cache.insert(tg.arn.clone(), (now, d.tags.clone()));
            }
        }
        self.drop_replaced(&intent.key, &current).await?;
        self.drop_stale(&intent.key, &current).await?;
        lock(&self.known).insert(intent.key.clone(), current);
        Ok(status_of(&applied.lb))
    }
}

#[async_trait::async_trait]
impl Provider for AwsProvider {
    fn name(&self) -> &'static str {
        "aws"
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "aws_calls",
            "AWS API calls, by service, operation and outcome",
            self.cloud.calls.clone(),
        );
        registry.register(
            "aws_ensures",
            "AWS ensures, by the path they took: confirmed in the account snapshot, targets only, or full (with why)",
            self.ensures.clone(),
        );
    }

    fn node_label_annotations(&self) -> &'static [&'static str] {
        &[annotations::keys::TARGET_NODE_LABELS]
    }

    async fn ensure(
        &self,
        intent: &LoadBalancerIntent,
    ) -> Result<LoadBalancerStatus, ProviderError> {
        let _stopped = Stamp(&self.ensured, &intent.key);
        let opts = annotations::parse(
            &intent.annotations,
            &intent.ports,
            intent.traffic_policy,
            intent.health_check_node_port,
        )?;
        // The spec field wins over the annotation, as in both peers.
        let ranges = if intent.source_ranges.is_empty() {
            opts.source_ranges.clone()
        } else {
            intent.source_ranges.clone()
        };
        if !ranges.is_empty() && opts.target_type == TargetType::Ip {
            return Err(ProviderError::invalid(
                "spec.loadBalancerSourceRanges",
                "source ranges with ip targets would need rules on the pods' security groups, which ferrolb does not manage yet; nothing was created",
            ));
        }
        // With manage-backend-security-group-rules off the user owns the
        // nodes' rules: ferrolb writes none, and takes back any it wrote
        // before, so nothing of ours is left that nobody maintains.
        let wanted_ranges: Vec<ipnet::IpNet> = if opts.manage_backend_security_group_rules {
            ranges
        } else {
            Vec::new()
        };
        let desired = model::build(intent, &opts, &self.cluster, Vec::new())?;
        let reason = if self.cache {
            match self
                .fast_ensure(&intent.key, &desired, &wanted_ranges)
                .await?
            {
                Ok(status) => return Ok(status),
                Err(reason) => reason,
            }
        } else {
            FullReason::Disabled
        };
        self.count(&EnsureLabels {
            path: "full",
            reason: reason.label(),
        });
        self.full_ensure(intent, &opts, &wanted_ranges, desired)
            .await
    }

    async fn restore(&self, owned: Vec<OwnedService>) -> Result<(), ProviderError> {
        *lock(&self.led_at) = Some(Instant::now());
        let published = owned
            .into_iter()
            .filter(|s| s.ingress.iter().any(|i| matches!(i, Ingress::Hostname(_))))
            .map(|s| s.intent.key);
        lock(&self.published).extend(published);
        // What is tagged for each Service, before its first ensure: a leader
        // that died between making a Service's new load balancer (or target
        // group) and deleting the old one left the old one tagged for a
        // Service that still exists, which no sweep deletes. A full ensure
        // deletes it when it knows of it, and a Service's first ensure in a
        // new process is a full one. Failing here only delays that to the
        // first sweep.
        if let Err(e) = self.owners().await {
            warn!(error = %e, "listing what the account holds for each Service failed; the first sweep will");
        }
        Ok(())
    }

    async fn owners(&self) -> Result<BTreeSet<ServiceKey>, ProviderError> {
        // A recent account view, shared with the resyncs.
        let account = self.snapshots.recent(snapshot::SWEEP_MAX_AGE).await?;
        let owned = self.owners_in(&account).await?;
        // A Service whose calls all stopped before this view was listed needs
        // no stamp: every view from now on shows all it made. Without this,
        // the stamps of deleted Services would pile up.
        lock(&self.ensured).retain(|_, stopped| *stopped > account.taken);
        let keys = owned.keys().cloned().collect();
        *lock(&self.swept) = owned;
        Ok(keys)
    }

    async fn delete(&self, key: &ServiceKey) -> Result<(), ProviderError> {
        let _stopped = Stamp(&self.ensured, key);
        // Always found by tags: a name can be reused, and what the last ensure
        // made may not be all there is (a restart, a crash halfway).
        let (lbs, tgs) = self.tagged_for(key).await?;
        // The load balancer first: deleting it deletes its listeners, after
        // which its target groups are free to go. Stopped halfway, the next
        // attempt finds the rest by their tags.
        for lb in &lbs {
            delete_load_balancer(&self.cloud, lb).await?;
        }
        for tg in &tgs {
            delete_target_group(&self.cloud, tg).await?;
        }
        // Source-range rules last: the load balancer no longer sends anything.
        self.drop_rules(key).await?;
        if !lbs.is_empty() || !tgs.is_empty() {
            info!(service = %key, load_balancers = lbs.len(), target_groups = tgs.len(), "deleted");
        }
        lock(&self.known).remove(key);
        lock(&self.published).remove(key);
        Ok(())
    }
}

/// What the Service's status shows: the NLB's DNS name, then any Elastic IPs
/// or private addresses it was given. Those are marked `Proxy`, so kube-proxy
/// does not take them for node-local addresses: traffic to them from inside
/// the cluster still goes through the NLB (its TLS, proxy protocol and
/// health checks).
fn ingress(lb: &LbHandle) -> Vec<Ingress> {
    std::iter::once(Ingress::Hostname(lb.dns_name.clone()))
        .chain(lb.addresses.iter().copied().map(Ingress::ProxyIp))
        .collect()
}

fn status_of(lb: &LbHandle) -> LoadBalancerStatus {
    LoadBalancerStatus {
        ingress: ingress(lb),
        annotations: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_bounded_by_its_attempts_and_the_waits_between_them() {
        let s = Duration::from_secs;
        assert_eq!(operation_timeout(s(10), 1), s(10));
        // 1 + 2 + 4 + 8 s between five attempts.
        assert_eq!(operation_timeout(s(10), 5), s(65));
        // From the sixth wait on, each is capped at 20 s.
        assert_eq!(operation_timeout(s(1), 7), s(7 + 15 + 16 + 20));
    }
}
