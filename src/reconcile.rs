//! One reconcile of one Service: guard, finalizer, intent, provider, status.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrolb_provider_api::{
    ErrorClass, Ingress, LoadBalancerStatus, Provider, ProviderError, ServiceKey,
};
use k8s_openapi::api::core::v1::{LoadBalancerIngress, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::cache::Cache;
use crate::error::Error;
use crate::events::Events;
use crate::intent;
use crate::lock;
use crate::metrics::{Metrics, OutcomeLabels};
use crate::recent::Recent;

/// Our finalizer on the Services we provision for.
pub const FINALIZER: &str = "ferrolb.io/load-balancer-cleanup";

/// Which Services this install serves.
#[derive(Clone, Debug)]
pub struct Config {
    /// The `spec.loadBalancerClass` we serve.
    pub class: String,
    /// Also serve Services with no class.
    pub default_class: bool,
    /// How often a converged Service is checked again.
    pub resync: Duration,
}

impl Config {
    /// The guard: a Service is ours when it is a LoadBalancer of our class (or of
    /// no class, when we are the default) and is not being created by anyone else.
    pub fn is_ours(&self, svc: &Service) -> bool {
        let Some(spec) = svc.spec.as_ref() else {
            return false;
        };
        if spec.type_.as_deref() != Some("LoadBalancer") {
            return false;
        }
        match spec.load_balancer_class.as_deref() {
            Some(class) => class == self.class,
            None => self.default_class,
        }
    }

    /// A LoadBalancer Service that names another class belongs to another
    /// install (its class cannot change while it is a LoadBalancer), even
    /// though it carries the same finalizer: this one never touches it.
    pub fn is_other_install(&self, svc: &Service) -> bool {
        svc.spec.as_ref().is_some_and(|spec| {
            spec.type_.as_deref() == Some("LoadBalancer")
                && spec
                    .load_balancer_class
                    .as_deref()
                    .is_some_and(|c| c != self.class)
        })
    }
}

pub struct Context {
    pub client: Client,
    pub config: Config,
    pub provider: Arc<dyn Provider>,
    pub cache: Cache,
    /// The Warning each failing Service was last given and the recorder that
    /// sent it, which counts a repeat as a series on one Event instead of a
    /// new Event per retry. kube's recorder keys a series by reason, not
    /// note, so a Warning with another note gets a new recorder, and a new
    /// Event, rather than a count on the old note.
    warnings: Mutex<HashMap<ObjectRef<Service>, (String, Recorder)>>,
    reporter: Reporter,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per Service, for backoff.
    failures: Mutex<HashMap<ObjectRef<Service>, u32>>,
    /// Services whose last ensure failed as unsatisfiable; retried when the
    /// provider reports a change.
    pub unsatisfied: Arc<Mutex<HashSet<ObjectRef<Service>>>>,
    /// What we wrote last, until the watch shows it.
    pub recent: Arc<Recent>,
    events: Events,
}

impl Context {
    pub fn new(
        client: Client,
        config: Config,
        provider: Arc<dyn Provider>,
        cache: Cache,
        reporter: Reporter,
        metrics: Arc<Metrics>,
        recent: Arc<Recent>,
    ) -> Self {
        Self {
            recent,
            events: Events::start(),
            warnings: Mutex::default(),
            client,
            config,
            provider,
            cache,
            reporter,
            metrics,
            failures: Mutex::default(),
            unsatisfied: Arc::default(),
        }
    }

    fn succeeded(&self, r: &ObjectRef<Service>) {
        lock(&self.failures).remove(r);
        lock(&self.warnings).remove(r);
        lock(&self.unsatisfied).remove(r);
        self.metrics
            .reconciles
            .get_or_create(&OutcomeLabels { outcome: "success" })
            .inc();
    }

    fn recorder(&self) -> Recorder {
        Recorder::new(self.client.clone(), self.reporter.clone())
    }

    /// Exponential backoff per Service: `base * 2^n`, at most `max`, less up
    /// to a fifth at random, so that Services failing together (a throttled
    /// account, an apiserver blip) do not come back in lockstep.
    fn backoff(&self, r: &ObjectRef<Service>, base: Duration, max: Duration) -> Duration {
        let mut failures = lock(&self.failures);
        let n = failures.entry(r.clone()).or_insert(0);
        let delay = base.saturating_mul(1u32 << (*n).min(16)).min(max);
        *n = n.saturating_add(1);
        jitter(
            delay,
            std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), r),
        )
    }

    /// Runs one provider operation, counting it and its duration by outcome.
    async fn metered<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let started = Instant::now();
        let result = call.await;
        let outcome = match &result {
            Ok(_) => "success",
            Err(e) => e.class().as_str(),
        };
        self.metrics.record_provider_call(
            self.provider.name(),
            operation,
            outcome,
            started.elapsed(),
        );
        result
    }

    /// Sends an Event about the Service in the background: a reconcile does
    /// not wait for it, and it goes out once the apiserver has time for it
    /// (see [`crate::events`]), so that when thousands of Services arrive
    /// together their status writes go first and the Events follow.
    fn publish(&self, svc: &Service, type_: EventType, reason: &str, note: &str) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(note.to_string(), 1000)),
            action: "Reconcile".into(),
            secondary: None,
        };
        let reference = svc.object_ref(&());
        // A Normal Event happens once per change; kube's recorder keeps every
        // Event it sent for its series and scans them all on each send, so
        // with thousands of Services each one gets a recorder of its own.
        let recorder = match type_ {
            EventType::Warning => {
                let said = format!("{reason}: {note}");
                let mut warnings = lock(&self.warnings);
                let entry = warnings
                    .entry(ObjectRef::from_obj(svc))
                    .or_insert_with(|| (said.clone(), self.recorder()));
                if entry.0 != said {
                    *entry = (said, self.recorder());
                }
                entry.1.clone()
            }
            EventType::Normal => self.recorder(),
        };
        self.events.send(recorder, ev, reference);
    }
}

/// `delay` less `random / u64::MAX` of a fifth of it.
fn jitter(delay: Duration, random: u64) -> Duration {
    let fifth = delay / 5;
    let cut = fifth.mul_f64(random as f64 / u64::MAX as f64);
    delay - cut
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

pub fn service_key(svc: &Service) -> ServiceKey {
    ServiceKey::new(svc.namespace().unwrap_or_default(), svc.name_any())
}

#[tracing::instrument(skip_all, fields(service = %service_key(&svc)))]
pub async fn reconcile(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let _reconciling = ctx.events.reconciling();
    debug!("reconciling");
    let svc = ctx.recent.fresher(svc);
    let result = if ctx.config.is_ours(&svc) {
        if svc.metadata.deletion_timestamp.is_none() {
            apply(&svc, &ctx).await
        } else if has_finalizer(&svc) {
            cleanup(&svc, &ctx).await
        } else {
            Ok(Action::await_change())
        }
    } else if has_finalizer(&svc) && !ctx.config.is_other_install(&svc) {
        // It was ours and no longer is (its type changed, or this install
        // stopped being the default class; or it is being deleted after
        // that): let go of it.
        info!("service is no longer served by this install; cleaning up");
        cleanup(&svc, &ctx).await
    } else {
        Ok(Action::await_change())
    };
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    result
}

pub fn has_finalizer(svc: &Service) -> bool {
    svc.finalizers().iter().any(|f| f == FINALIZER)
}

async fn apply(svc: &Service, ctx: &Context) -> Result<Action, Error> {
    let result = ensure(svc, ctx).await;
    if let Some((reason, note)) = result.as_ref().err().and_then(Error::event_note) {
        ctx.publish(svc, EventType::Warning, reason, &note);
    }
    result
}

/// How long an `ensure` runs before the Service gets an
/// `EnsuringLoadBalancer` Event saying that it is under way. One that is done
/// sooner (an address from a pool) gets only the `EnsuredLoadBalancer` Event.
const ENSURING_EVENT_AFTER: Duration = Duration::from_secs(1);

async fn ensure(svc: &Service, ctx: &Context) -> Result<Action, Error> {
    let key = service_key(svc);
    // Empty for a provider that reads no targets (nothing fills the cache).
    let endpoints = ctx.cache.endpoints(&key.namespace, &key.name);
    let intent = ctx
        .cache
        .with_nodes(|nodes| intent::build(svc, nodes, &endpoints))
        .map_err(|source| Error::Intent {
            source,
            service: key.clone(),
        })?;

    // Every version we write on top of is stale once we have written.
    let mut stale: Vec<String> = svc.resource_version().into_iter().collect();
    let mut latest: Option<Service> = None;
    // The finalizer goes on before the provider makes anything that could
    // outlive the Service; a provider that makes nothing of the kind gets it
    // in the same write as its annotations and the address.
    if !has_finalizer(svc) && ctx.provider.needs_finalizer_before_ensure() {
        let written = add_finalizer(ctx, svc).await?;
        stale.extend(written.resource_version());
        latest = Some(written);
    }
    let base = latest.as_ref().unwrap_or(svc);

    let current = current_ingress(svc);
    let status = {
        let call = ctx.metered("ensure", ctx.provider.ensure(&intent));
        tokio::pin!(call);
        tokio::select! {
            r = &mut call => r,
            () = tokio::time::sleep(ENSURING_EVENT_AFTER), if current.is_empty() => {
                ctx.publish(svc, EventType::Normal, "EnsuringLoadBalancer", "Ensuring load balancer");
                call.await
            }
        }
    }
    .map_err(|source| Error::Ensure {
        source,
        service: key.clone(),
    })?;

    // The finalizer (if it is not on yet), our annotations and the address go
    // in one write of the status subresource, which keeps metadata changes
    // too (the way the cloud-provider service controller writes its own
    // finalizer): each Service costs the apiserver one write, not two.
    let desired = desired_ingress(&status);
    let change = Change {
        finalizers: (!has_finalizer(base)).then(|| with_finalizer(base)),
        annotations: annotation_changes(base, &status.annotations),
        ingress: (desired != current).then_some(Some(desired.as_slice())),
    };
    if !change.is_empty() {
        match write_status(ctx, base, &change).await {
            Ok(written) => {
                stale.extend(written.resource_version());
                latest = Some(written);
            }
            Err(Error::PatchStatus {
                source: kube::Error::Api(s),
                ..
            }) if s.code == 404 && change.finalizers.is_some() => {
                // Deleted while we allocated, before our finalizer was on it:
                // nothing will call us for it again.
                ctx.metered("delete", ctx.provider.delete(&key))
                    .await
                    .map_err(|source| Error::Delete {
                        source,
                        service: key.clone(),
                    })?;
                return Ok(Action::await_change());
            }
            Err(e) => return Err(e),
        }
    }
    if change.ingress.is_some() {
        let addrs: Vec<String> = status.ingress.iter().map(ingress_string).collect();
        info!(ingress = ?addrs, "status updated");
        ctx.publish(
            svc,
            EventType::Normal,
            "EnsuredLoadBalancer",
            &format!("Ensured load balancer: {}", addrs.join(", ")),
        );
    } else {
        debug!("status already up to date");
    }
    ctx.provider.published(&key, &status);
    if let Some(mut latest) = latest {
        crate::controller::strip_service(&mut latest);
        stale.retain(|rv| latest.metadata.resource_version.as_ref() != Some(rv));
        ctx.recent.record(stale, latest);
    }
    ctx.succeeded(&ObjectRef::from_obj(svc));
    Ok(Action::requeue(ctx.config.resync))
}

/// The provider's annotations that differ from what the Service shows.
fn annotation_changes(
    svc: &Service,
    wanted: &BTreeMap<String, Option<String>>,
) -> BTreeMap<String, Option<String>> {
    let current = svc.annotations();
    wanted
        .iter()
        .filter(|(k, v)| current.get(*k) != v.as_ref())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

async fn cleanup(svc: &Service, ctx: &Context) -> Result<Action, Error> {
    let key = service_key(svc);
    ctx.publish(
        svc,
        EventType::Normal,
        "DeletingLoadBalancer",
        "Deleting load balancer",
    );
    if let Err(source) = ctx.metered("delete", ctx.provider.delete(&key)).await {
        let e = Error::Delete {
            source,
            service: key,
        };
        if let Some((reason, note)) = e.event_note() {
            ctx.publish(svc, EventType::Warning, reason, &note);
        }
        return Err(e);
    }

    if svc.metadata.deletion_timestamp.is_some() {
        // On its way out: it needs no tidying, only to lose our finalizer.
        remove_finalizer(svc, ctx).await?;
    } else {
        // It stays (its type or class changed), so it must not keep an
        // address it no longer has: our finalizer, our annotations and the
        // address go in one write.
        let ours: BTreeMap<String, Option<String>> = ctx
            .provider
            .owned_annotations()
            .iter()
            .map(|k| (k.to_string(), None))
            .collect();
        let change = Change {
            finalizers: Some(
                svc.finalizers()
                    .iter()
                    .filter(|f| *f != FINALIZER)
                    .cloned()
                    .collect(),
            ),
            annotations: annotation_changes(svc, &ours),
            ingress: (!current_ingress(svc).is_empty()).then_some(None),
        };
        match write_status(ctx, svc, &change).await {
            Err(Error::PatchStatus {
                source: kube::Error::Api(s),
                ..
            }) if s.code == 404 => {}
            r => {
                r?;
            }
        }
    }
    ctx.publish(
        svc,
        EventType::Normal,
        "DeletedLoadBalancer",
        "Deleted load balancer",
    );
    ctx.succeeded(&ObjectRef::from_obj(svc));
    Ok(Action::await_change())
}

async fn remove_finalizer(svc: &Service, ctx: &Context) -> Result<(), Error> {
    let Some(idx) = svc.finalizers().iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    // Test before remove, so a concurrent change to the list cannot make us
    // remove someone else's finalizer.
    let patch: json_patch::Patch = serde_json::from_value(json!([
        { "op": "test", "path": format!("/metadata/finalizers/{idx}"), "value": FINALIZER },
        { "op": "remove", "path": format!("/metadata/finalizers/{idx}") },
    ]))
    .expect("static JSON patch");
    let api: Api<Service> =
        Api::namespaced(ctx.client.clone(), &svc.namespace().unwrap_or_default());
    match api
        .patch::<Service>(
            &svc.name_any(),
            &PatchParams::default(),
            &Patch::Json(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(Error::RemoveFinalizer {
            source,
            service: service_key(svc),
        }),
    }
}

/// Puts our finalizer on the Service by itself, ahead of the provider's
/// work. Written through the Service, with the resourceVersion the list was
/// computed from (a conflict is retried).
async fn add_finalizer(ctx: &Context, svc: &Service) -> Result<Service, Error> {
    let key = service_key(svc);
    let finalizers = with_finalizer(svc);
    let patch = json!({ "metadata": {
        "resourceVersion": svc.resource_version(),
        "finalizers": finalizers,
    }});
    let expected = expect_own_write(ctx, svc, Some(&finalizers), &BTreeMap::new());
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let written = api
        .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| {
            expected.failed(ctx);
            Error::AddFinalizer {
                source,
                service: key,
            }
        })?;
    ctx.metrics.status_patches.inc();
    Ok(written)
}

/// Tells the Service watch what `svc` will look like, to a reconcile, once
/// a write that sets its finalizers to `finalizers` (when given) and its
/// annotations as `annotations` says has landed ([`crate::recent::OwnWrites`]).
/// A write that changes neither leaves the fingerprint as it is, which the
/// watch already knows.
fn expect_own_write(
    ctx: &Context,
    svc: &Service,
    finalizers: Option<&[String]>,
    annotations: &BTreeMap<String, Option<String>>,
) -> Expected {
    if finalizers.is_none() && annotations.is_empty() {
        return Expected(None);
    }
    let mut after = svc.clone();
    if let Some(finalizers) = finalizers {
        after.metadata.finalizers = Some(finalizers.to_vec());
    }
    if !annotations.is_empty() {
        let current = after.metadata.annotations.get_or_insert_with(BTreeMap::new);
        for (k, v) in annotations {
            match v {
                Some(v) => current.insert(k.clone(), v.clone()),
                None => current.remove(k),
            };
        }
    }
    match crate::controller::service_fingerprint(&after) {
        Some(print) => {
            let r = ObjectRef::from_obj(svc);
            ctx.recent.own.expect(r.clone(), print);
            Expected(Some(r))
        }
        None => Expected(None),
    }
}

/// An expectation [`expect_own_write`] registered, to withdraw if the write
/// fails.
struct Expected(Option<ObjectRef<Service>>);

impl Expected {
    fn failed(&self, ctx: &Context) {
        if let Some(r) = &self.0 {
            ctx.recent.own.unexpect(r);
        }
    }
}

fn with_finalizer(svc: &Service) -> Vec<String> {
    let mut list = svc.finalizers().to_vec();
    list.push(FINALIZER.to_string());
    list
}

/// What a reconcile writes to a Service besides its spec.
struct Change<'a> {
    /// The finalizer list to put in place of the one the Service shows.
    finalizers: Option<Vec<String>>,
    /// Annotations to set (`Some`) or remove (`None`).
    annotations: BTreeMap<String, Option<String>>,
    /// The ingress to write; `Some(None)` removes it.
    ingress: Option<Option<&'a [LoadBalancerIngress]>>,
}

impl Change<'_> {
    fn is_empty(&self) -> bool {
        self.finalizers.is_none() && self.annotations.is_empty() && self.ingress.is_none()
    }
}

/// Writes `change` in one patch of the status subresource, which keeps
/// changes to metadata as well as to the status; returns the Service as
/// written. A new finalizer list goes with the resourceVersion it was
/// computed from, so it lands only if nobody changed the Service in between
/// (a conflict is retried).
async fn write_status(ctx: &Context, svc: &Service, change: &Change<'_>) -> Result<Service, Error> {
    let key = service_key(svc);
    let mut metadata = serde_json::Map::new();
    if let Some(finalizers) = &change.finalizers {
        metadata.insert("resourceVersion".into(), json!(svc.resource_version()));
        metadata.insert("finalizers".into(), json!(finalizers));
    }
    if !change.annotations.is_empty() {
        metadata.insert("annotations".into(), json!(change.annotations));
    }
    let mut patch = serde_json::Map::new();
    if !metadata.is_empty() {
        patch.insert("metadata".into(), metadata.into());
    }
    if let Some(ingress) = change.ingress {
        patch.insert(
            "status".into(),
            json!({ "loadBalancer": { "ingress": ingress } }),
        );
    }
    let expected = expect_own_write(ctx, svc, change.finalizers.as_deref(), &change.annotations);
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let written = api
        .patch_status(
            &key.name,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::Value::Object(patch)),
        )
        .await
        .map_err(|source| {
            expected.failed(ctx);
            Error::PatchStatus {
                source,
                service: key,
            }
        })?;
    ctx.metrics.status_patches.inc();
    Ok(written)
}

pub fn error_policy(svc: Arc<Service>, err: &Error, ctx: Arc<Context>) -> Action {
    let class = err.class();
    ctx.metrics
        .reconciles
        .get_or_create(&OutcomeLabels {
            outcome: class.as_str(),
        })
        .inc();
    let r = ObjectRef::from_obj(svc.as_ref());
    let action = match class {
        ErrorClass::Invalid => Action::await_change(),
        ErrorClass::Provisioning => Action::requeue(Duration::from_secs(5)),
        ErrorClass::Unsatisfiable => {
            lock(&ctx.unsatisfied).insert(r.clone());
            Action::requeue(ctx.backoff(&r, Duration::from_secs(10), Duration::from_secs(300)))
        }
        ErrorClass::Throttled => {
            Action::requeue(ctx.backoff(&r, Duration::from_secs(2), Duration::from_secs(300)))
        }
        ErrorClass::Transient => {
            Action::requeue(ctx.backoff(&r, Duration::from_millis(500), Duration::from_secs(300)))
        }
    };
    warn!(service = %service_key(&svc), class = class.as_str(), error = %err, ?action, "reconcile failed");
    action
}

fn current_ingress(svc: &Service) -> Vec<LoadBalancerIngress> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.clone())
        .unwrap_or_default()
}

fn desired_ingress(status: &LoadBalancerStatus) -> Vec<LoadBalancerIngress> {
    status
        .ingress
        .iter()
        .map(|i| match i {
            Ingress::Ip(ip) => LoadBalancerIngress {
                ip: Some(ip.to_string()),
                ip_mode: Some("VIP".into()),
                ..Default::default()
            },
            Ingress::ProxyIp(ip) => LoadBalancerIngress {
                ip: Some(ip.to_string()),
                ip_mode: Some("Proxy".into()),
                ..Default::default()
            },
            Ingress::Hostname(h) => LoadBalancerIngress {
                hostname: Some(h.clone()),
                ..Default::default()
            },
        })
        .collect()
}

fn ingress_string(i: &Ingress) -> String {
    match i {
        Ingress::Ip(ip) | Ingress::ProxyIp(ip) => ip.to_string(),
        Ingress::Hostname(h) => h.clone(),
    }
}

/// The addresses a Service's status already shows.
pub fn published_ingress(svc: &Service) -> Vec<Ingress> {
    current_ingress(svc)
        .into_iter()
        .filter_map(|i| match (i.ip, i.hostname) {
            (Some(ip), _) if i.ip_mode.as_deref() == Some("Proxy") => {
                ip.parse().ok().map(Ingress::ProxyIp)
            }
            (Some(ip), _) => ip.parse().ok().map(Ingress::Ip),
            (None, Some(h)) => Some(Ingress::Hostname(h)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceSpec;

    fn svc(type_: &str, class: Option<&str>) -> Service {
        Service {
            spec: Some(ServiceSpec {
                type_: Some(type_.into()),
                load_balancer_class: class.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn guard_table() {
        let ours = Config {
            class: "ferrolb.io/baremetal".into(),
            default_class: false,
            resync: Duration::from_secs(600),
        };
        let default = Config {
            default_class: true,
            ..ours.clone()
        };
        let cases = [
            (
                &ours,
                svc("LoadBalancer", Some("ferrolb.io/baremetal")),
                true,
            ),
            (&ours, svc("LoadBalancer", Some("other.io/lb")), false),
            (&ours, svc("LoadBalancer", None), false),
            (&default, svc("LoadBalancer", None), true),
            (&default, svc("LoadBalancer", Some("other.io/lb")), false),
            (&ours, svc("ClusterIP", Some("ferrolb.io/baremetal")), false),
            (&default, svc("NodePort", None), false),
        ];
        for (i, (cfg, s, want)) in cases.into_iter().enumerate() {
            assert_eq!(cfg.is_ours(&s), want, "case {i}");
        }
        // Another install's Service is never released by this one; one whose
        // type changed, or one of no class, may have been ours.
        assert!(ours.is_other_install(&svc("LoadBalancer", Some("other.io/lb"))));
        assert!(!ours.is_other_install(&svc("LoadBalancer", Some("ferrolb.io/baremetal"))));
        assert!(!ours.is_other_install(&svc("LoadBalancer", None)));
        assert!(!ours.is_other_install(&svc("ClusterIP", None)));
        assert!(!ours.is_ours(&Service::default()));
    }

    #[test]
    fn jitter_takes_off_at_most_a_fifth() {
        let d = Duration::from_secs(10);
        assert_eq!(jitter(d, 0), d);
        assert_eq!(jitter(d, u64::MAX), Duration::from_secs(8));
        let mid = jitter(d, u64::MAX / 2);
        assert!(mid > Duration::from_secs(8) && mid < d, "{mid:?}");
    }

    #[test]
    fn proxy_ips_round_trip_through_the_status() {
        let status = LoadBalancerStatus {
            ingress: vec![
                Ingress::Hostname("lb.example".into()),
                Ingress::ProxyIp("198.51.100.7".parse().unwrap()),
            ],
            annotations: Default::default(),
        };
        let got = desired_ingress(&status);
        assert_eq!(got[1].ip.as_deref(), Some("198.51.100.7"));
        assert_eq!(got[1].ip_mode.as_deref(), Some("Proxy"));
        let svc = Service {
            status: Some(k8s_openapi::api::core::v1::ServiceStatus {
                load_balancer: Some(k8s_openapi::api::core::v1::LoadBalancerStatus {
                    ingress: Some(got),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(published_ingress(&svc), status.ingress);
    }

    #[test]
    fn desired_ingress_marks_ips_as_vip() {
        let status = LoadBalancerStatus {
            ingress: vec![
                Ingress::Ip("192.0.2.1".parse().unwrap()),
                Ingress::Hostname("lb.example".into()),
            ],
            annotations: Default::default(),
        };
        let got = desired_ingress(&status);
        assert_eq!(got[0].ip.as_deref(), Some("192.0.2.1"));
        assert_eq!(got[0].ip_mode.as_deref(), Some("VIP"));
        assert_eq!(got[1].hostname.as_deref(), Some("lb.example"));
        assert_eq!(got[1].ip_mode, None);
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo".into(), 2), "h");
        assert_eq!(truncate("abc".into(), 10), "abc");
    }
}
