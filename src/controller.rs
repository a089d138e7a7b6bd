//! `ferrolb controller`: wiring of client, leader election, caches, provider
//! and the reconcile loop.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ferrolb_aws::{AwsConfig, AwsProvider};
use ferrolb_baremetal::{BareMetalConfig, BareMetalProvider};
use ferrolb_provider_api::{
    Fence, IpFamily, IpFamilyPolicy, LoadBalancerIntent, OwnedService, Provider, TrafficPolicy,
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::args::{ControllerArgs, ProviderKind};
use crate::cache::Cache;
use crate::intent;
use crate::leader::{LeaderElector, LeaseConfig};
use crate::metrics::{self, Metrics};
use crate::recent::{OwnWrites, Recent};
use crate::reconcile::{self, Config, Context, FINALIZER, published_ingress};

pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    let ControllerArgs {
        kubeconfig,
        provider: provider_kind,
        cluster_name,
        load_balancer_class,
        default_class,
        metrics_addr,
        leader_election,
        leader_election_namespace,
        leader_election_name,
        leader_election_identity,
        lease_duration,
        lease_retry_period,
        concurrency,
        kube_api_qps,
        kube_api_burst,
        include_not_ready_nodes,
        resync_period,
        aws_ensure_cache,
        aws_call_timeout,
        aws_call_attempts,
    } = args;
    let config = Config {
        class: load_balancer_class
            .unwrap_or_else(|| format!("ferrolb.io/{}", provider_kind.as_str())),
        default_class,
        resync: resync_period,
    };
    let identity = leader_election_identity.unwrap_or_else(default_identity);
    // First of all, so no SIGTERM can find the default handler.
    let signal = crate::shutdown_signal().context("installing signal handlers")?;
    // Closed until this replica holds the Lease; the elector keeps it.
    let fence = if leader_election {
        Fence::closed()
    } else {
        Fence::always_open()
    };
    let printable: String = identity
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    let user_agent = format!(
        "ferrolb/{} (controller; {printable})",
        env!("CARGO_PKG_VERSION")
    );
    let kube_config = crate::client_config(kubeconfig.as_deref(), &user_agent).await?;
    let client = crate::controller_client(
        kube_config.clone(),
        kube_api_qps,
        kube_api_burst,
        fence.clone(),
    )?;

    // Building a provider makes no call; it acts only once this replica leads.
    let provider: Arc<dyn Provider> = match provider_kind {
        ProviderKind::Baremetal => Arc::new(BareMetalProvider::new(
            client.clone(),
            BareMetalConfig {
                cluster_name: cluster_name.clone(),
                reporter: reporter(&identity),
            },
        )),
        ProviderKind::Aws => Arc::new(
            AwsProvider::new(AwsConfig {
                cluster_name: cluster_name.clone(),
                fence: fence.clone(),
                call_timeout: aws_call_timeout,
                call_attempts: aws_call_attempts,
                resync: resync_period,
            })
            .await
            .with_ensure_cache(aws_ensure_cache),
        ),
    };
    let metrics = Arc::new(Metrics::new(provider.as_ref()));
    let listener = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .with_context(|| format!("binding the metrics server to {metrics_addr}"))?;
    tokio::spawn(metrics::serve(listener, metrics.clone()));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        signal.await;
        info!("shutting down");
        let _ = shutdown_tx.send(true);
    });

    info!(class = %config.class, default_class, provider = provider_kind.as_str(), %cluster_name, %identity, "starting controller");
    // The Lease has a client of its own: unfenced (its renewals open the
    // fence) and unlimited (a busy controller must not starve them).
    let lease_client = kube::Client::try_from(kube_config)?;
    let mut elector = leader_election.then(|| {
        LeaderElector::new(
            lease_client,
            LeaseConfig {
                namespace: leader_election_namespace,
                name: leader_election_name,
                identity: identity.clone(),
                lease_duration,
                retry_period: lease_retry_period,
            },
            fence,
        )
    });
    if let Some(elector) = elector.as_mut() {
        let mut stop = shutdown_rx.clone();
        tokio::select! {
            () = elector.acquire(|| metrics.set_ready(true)) => {}
            _ = stop.wait_for(|v| *v) => return Ok(()),
        }
    }
    metrics.leader.set(1);

    let reporter = reporter(&identity);
    let lead = lead(
        client,
        config,
        provider,
        reporter,
        metrics.clone(),
        concurrency,
        include_not_ready_nodes,
        shutdown_rx.clone(),
    );

    let result = match elector.as_mut() {
        None => lead.await,
        Some(elector) => {
            tokio::select! {
                r = lead => r,
                () = elector.hold() => Err(anyhow::anyhow!("lost the leader lease; exiting so that no write happens without it")),
            }
        }
    };
    metrics.leader.set(0);
    if let (Ok(()), Some(elector)) = (&result, elector.as_mut()) {
        elector.release().await;
    }
    result
}

/// The leader's work: caches, restore, then the reconcile loop until shutdown.
#[allow(clippy::too_many_arguments)]
async fn lead(
    client: Client,
    config: Config,
    provider: Arc<dyn Provider>,
    reporter: Reporter,
    metrics: Arc<Metrics>,
    concurrency: u16,
    include_not_ready_nodes: bool,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let services: Api<Service> = Api::all(client.clone());
    let cache = Cache::new(include_not_ready_nodes, provider.node_label_annotations());
    let (trigger_tx, trigger_rx) = futures::channel::mpsc::unbounded::<ObjectRef<Service>>();

    let (reader, writer) = reflector::store();
    let recent = Arc::new(Recent::new(reader.clone()));
    let on_event = service_event_hook(
        recent.clone(),
        reader.clone(),
        provider.clone(),
        config.clone(),
    );
    // The Service watch starts now, next to those of Nodes and
    // EndpointSlices (for a provider that reads targets) and the provider's
    // own: its first list fills the store that restoring reads,
    // and the controller reconciles from the same store, so a start lists
    // Services once. Until the controller runs, what the watch sees waits
    // in the trigger queue as references (the objects are in the store).
    let service_stream = watcher(services.clone(), watcher::Config::default())
        .default_backoff()
        .modify(strip_service)
        .reflect(writer)
        .inspect_ok(on_event);
    let _watching_services = AbortOnDrop(tokio::spawn(forward_services(
        service_stream,
        trigger_tx.clone(),
        config.clone(),
        recent.own.clone(),
    )));

    if provider.reads_targets() {
        tokio::spawn(cache.clone().run_nodes(
            Api::<Node>::all(client.clone()),
            reader.clone(),
            trigger_tx.clone(),
        ));
        tokio::spawn(cache.clone().run_slices(
            Api::<EndpointSlice>::all(client.clone()),
            trigger_tx.clone(),
        ));
    } else {
        // Nothing a reconcile reads comes from them.
        cache.unwatched();
    }
    provider.start();
    let setup = prepare(&reader, &cache, &config, &provider);
    tokio::select! {
        r = setup => r?,
        _ = shutdown.wait_for(|v| *v) => {
            info!("stopped before the controller started");
            return Ok(());
        }
    }

    // Leftovers of Services that are gone: at start, then every resync.
    tokio::spawn(crate::orphans::sweep_every(
        client.clone(),
        provider.clone(),
        config.clone(),
        config.resync,
    ));

    let ctx = Arc::new(Context::new(
        client,
        config,
        provider.clone(),
        cache,
        reporter,
        metrics.clone(),
        recent,
    ));
    let unsatisfied = ctx.unsatisfied.clone();
    provider.set_change_notifier(Arc::new(move || {
        let waiting: Vec<_> = unsatisfied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        for r in waiting {
            let _ = trigger_tx.unbounded_send(r);
        }
    }));

    // The controller wants a Sync future; a oneshot receiver is one. It is
    // fired only once the Service store is ready: a controller told to stop
    // before its first list would wait for that list forever.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let store = reader.clone();
    let mut stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = stop.wait_for(|v| *v).await;
        let _ = store.wait_until_ready().await;
        let _ = stop_tx.send(());
    });

    metrics.set_ready(true);
    info!("controller ready");
    // Every Service reaches the controller as a reference looked up in the
    // store (see `forward_services`), so its own stream has nothing to say.
    let controller = Controller::for_stream(futures::stream::pending(), reader)
        .with_config(controller::Config::default().concurrency(concurrency))
        .reconcile_on(trigger_rx)
        .graceful_shutdown_on(futures::FutureExt::map(stop_rx, |_| ()))
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                match e {
                    controller::Error::ReconcilerFailed(..) => {} // logged by error_policy
                    e => warn!(error = %e, "controller error"),
                }
            }
        });
    // Reconciles in flight may finish; one stuck on a dead apiserver may not
    // hold the process past the grace period.
    let grace = async {
        let _ = shutdown.wait_for(|v| *v).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        () = controller => {}
        () = grace => warn!(grace = ?SHUTDOWN_GRACE, "reconciles still running at the end of the grace period; stopping anyway"),
    }
    Ok(())
}

/// How long a stopping leader lets reconciles in flight finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Aborts the task when dropped: the Service watch ends with the leader's
/// work, whichever way that ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Drives the Service watch (and so the store) and hands the Services it
/// passes on to the controller as references (see [`Forwarder`]).
async fn forward_services(
    events: impl futures::Stream<Item = Result<watcher::Event<Service>, watcher::Error>>,
    triggers: futures::channel::mpsc::UnboundedSender<ObjectRef<Service>>,
    config: Config,
    own: Arc<OwnWrites>,
) {
    let mut events = std::pin::pin!(events);
    let mut forwarder = Forwarder::new(config, own);
    while let Some(item) = events.next().await {
        match item {
            Ok(event) => {
                for r in forwarder.event(&event) {
                    if triggers.unbounded_send(r).is_err() {
                        return;
                    }
                }
            }
            // The watcher backs off and lists again by itself.
            Err(e) => warn!(error = %e, "watching Services failed; retrying"),
        }
    }
}

/// Decides which Service events call for a reconcile.
///
/// - Our own status writes come back as watch events; they change nothing a
///   reconcile reads ([`service_fingerprint`]), so they call for none. Nor
///   does one of our writes that adds or removes our finalizer or
///   annotations, when it comes back with just what the reconcile that sent
///   it expected ([`OwnWrites`]).
/// - A reference is looked up in the store when its reconcile runs. While
///   the watch lists again (after a break or an apiserver restart) the store
///   still holds the old list, until the new one is complete. So what the
///   new list brings waits here and goes out once the store holds it:
///   otherwise a Service deleted while the watch was down would be
///   reconciled from its old copy, as if alive, and never again.
/// - A delete calls for no reconcile: there is no object left to reconcile
///   (the event hook lets go of what needs letting go).
/// - A Service that is not ours and carries no finalizer of ours (of
///   another class, or not a LoadBalancer: in most clusters nearly all of
///   them) calls for none: its reconcile would do nothing. Thousands of them
///   would otherwise queue with ours at every start.
struct Forwarder {
    /// The fingerprint each Service last passed on with.
    seen: std::collections::HashMap<ObjectRef<Service>, u64>,
    /// While a list is under way: what it found, and what waits for its end.
    listing: Option<Listing>,
    /// Which Services this install serves: the others call for a reconcile
    /// only while they hold our finalizer.
    config: Config,
    own: Arc<OwnWrites>,
}

#[derive(Default)]
struct Listing {
    seen: std::collections::HashMap<ObjectRef<Service>, u64>,
    waiting: Vec<ObjectRef<Service>>,
}

impl Forwarder {
    fn new(config: Config, own: Arc<OwnWrites>) -> Self {
        Forwarder {
            seen: Default::default(),
            listing: None,
            config,
            own,
        }
    }

    fn wants(&self, svc: &Service) -> bool {
        self.config.is_ours(svc) || reconcile::has_finalizer(svc)
    }

    fn event(&mut self, event: &watcher::Event<Service>) -> Vec<ObjectRef<Service>> {
        match event {
            watcher::Event::Init => {
                self.listing = Some(Listing::default());
                Vec::new()
            }
            watcher::Event::InitApply(svc) => {
                let r = ObjectRef::from_obj(svc);
                let print = service_fingerprint(svc);
                let changed = print.is_none() || self.seen.get(&r) != print.as_ref();
                let changed = changed && self.wants(svc);
                let listing = self.listing.get_or_insert_with(Listing::default);
                if let Some(print) = print {
                    listing.seen.insert(r.clone(), print);
                }
                if changed {
                    listing.waiting.push(r);
                }
                Vec::new()
            }
            watcher::Event::InitDone => match self.listing.take() {
                // What the old list had and the new one lacks is gone.
                Some(listing) => {
                    self.seen = listing.seen;
                    listing.waiting
                }
                None => Vec::new(),
            },
            watcher::Event::Apply(svc) => {
                let r = ObjectRef::from_obj(svc);
                let print = service_fingerprint(svc);
                let ours = print.is_some_and(|p| self.own.is_ours(&r, p));
                match print {
                    Some(print) if self.seen.insert(r.clone(), print) == Some(print) => Vec::new(),
                    _ if ours || !self.wants(svc) => Vec::new(),
                    _ => vec![r],
                }
            }
            watcher::Event::Delete(svc) => {
                let r = ObjectRef::from_obj(svc);
                self.own.unexpect(&r);
                self.seen.remove(&r);
                Vec::new()
            }
        }
    }
}

/// Waits for the caches, then rebuilds the provider's state from what Services
/// already show, before anything new is handed out, so a restart never moves
/// an address.
async fn prepare(
    services: &reflector::Store<Service>,
    cache: &Cache,
    config: &Config,
    provider: &Arc<dyn Provider>,
) -> anyhow::Result<()> {
    let listed = async {
        tokio::time::timeout(Duration::from_secs(120), services.wait_until_ready())
            .await
            .context("listing Services took over 120s")?
            .context("listing Services")
    };
    let synced = async {
        tokio::time::timeout(Duration::from_secs(120), cache.wait_synced())
            .await
            .context("listing Nodes and EndpointSlices took over 120s")
    };
    tokio::try_join!(listed, synced)?;
    let owned: Vec<OwnedService> = services
        .state()
        .iter()
        .filter_map(|s| {
            if !config.is_ours(s) || !s.finalizers().iter().any(|f| f == FINALIZER) {
                return None;
            }
            // A Service on its way out is not restored: the last leader may
            // have released its addresses already (cleanup releases before
            // it removes the finalizer) and handed them to another Service,
            // which would then lose them here. Its cleanup runs as soon as
            // the controller starts.
            if s.metadata.deletion_timestamp.is_some() {
                return None;
            }
            let ingress = published_ingress(s);
            (!ingress.is_empty()).then(|| OwnedService {
                intent: restore_intent(s),
                ingress,
            })
        })
        .collect();
    info!(services = owned.len(), "restoring provider state");
    provider
        .restore(owned)
        .await
        .context("restoring provider state")?;
    // A Service deleted after the store was read and before it was restored
    // had its delete event come while the provider did not hold it yet.
    if !provider.needs_finalizer_before_ensure() {
        release_missing(provider, services);
    }
    Ok(())
}

/// The intent of an owned Service for restoring state, without targets and
/// endpoints (restoring reads neither, and with thousands of Services times
/// hundreds of Nodes they would take gigabytes). When the Service no longer
/// builds (it became invalid while we were down), the fields that restoring
/// needs are still taken as they are.
fn restore_intent(svc: &Service) -> LoadBalancerIntent {
    let key = reconcile::service_key(svc);
    match intent::build(svc, std::iter::empty(), &[]) {
        Ok(intent) => intent,
        Err(e) => {
            warn!(service = %key, error = %e, "owned Service is invalid; restoring its addresses as they are");
            let ip_families: Vec<IpFamily> = published_ingress(svc)
                .iter()
                .filter_map(|i| match i {
                    ferrolb_provider_api::Ingress::Ip(ip) => Some(IpFamily::of(ip)),
                    ferrolb_provider_api::Ingress::ProxyIp(_)
                    | ferrolb_provider_api::Ingress::Hostname(_) => None,
                })
                .collect();
            LoadBalancerIntent {
                key,
                uid: svc.uid().unwrap_or_default(),
                labels: svc.labels().clone(),
                annotations: svc.annotations().clone(),
                ports: Vec::new(),
                traffic_policy: TrafficPolicy::Cluster,
                health_check_node_port: None,
                targets: Vec::new(),
                endpoints: Vec::new(),
                requested_addresses: Vec::new(),
                requested_from: None,
                source_ranges: Vec::new(),
                ip_family_policy: if ip_families.len() > 1 {
                    IpFamilyPolicy::PreferDualStack
                } else {
                    IpFamilyPolicy::SingleStack
                },
                ip_families,
            }
        }
    }
}

/// A hash of everything a reconcile reads from a Service: all of it but the
/// status (which only the controller writes) and bookkeeping metadata.
/// An empty map or list hashes as none at all: the apiserver leaves out
/// what is empty, so a Service we expect to end with no annotations has
/// none, not an empty map.
pub(crate) fn service_fingerprint(svc: &Service) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let m = &svc.metadata;
    m.uid.hash(&mut h);
    m.labels.as_ref().filter(|l| !l.is_empty()).hash(&mut h);
    m.annotations
        .as_ref()
        .filter(|a| !a.is_empty())
        .hash(&mut h);
    m.finalizers.as_ref().filter(|f| !f.is_empty()).hash(&mut h);
    m.deletion_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .hash(&mut h);
    serde_json::to_string(&svc.spec).ok()?.hash(&mut h);
    Some(h.finish())
}

/// What the controller does with each Service event besides caching it: it
/// retires what [`Recent`] kept once the watch has caught up, and, for a
/// provider that takes the finalizer late, lets go of a Service of ours
/// deleted before the finalizer was on it (nothing else would call for it):
/// on its delete event, or, when the watch had to list again and so sends
/// no delete events for what went meanwhile, when the new list lacks it.
fn service_event_hook(
    recent: Arc<Recent>,
    store: reflector::Store<Service>,
    provider: Arc<dyn Provider>,
    config: Config,
) -> impl FnMut(&watcher::Event<Service>) {
    move |event| match event {
        watcher::Event::Apply(svc) | watcher::Event::InitApply(svc) => recent.observe(svc),
        watcher::Event::Delete(svc) => {
            recent.forget(svc);
            if config.is_ours(svc)
                && !reconcile::has_finalizer(svc)
                && !provider.needs_finalizer_before_ensure()
            {
                release(provider.clone(), reconcile::service_key(svc));
            }
        }
        // The store holds the new list by now (the reflector runs first).
        watcher::Event::InitDone if !provider.needs_finalizer_before_ensure() => {
            release_missing(&provider, &store);
        }
        watcher::Event::Init | watcher::Event::InitDone => {}
    }
}

/// Lets go of a deleted Service's addresses, in the background.
fn release(provider: Arc<dyn Provider>, key: ferrolb_provider_api::ServiceKey) {
    tokio::spawn(async move {
        if let Err(e) = provider.delete(&key).await {
            warn!(service = %key, error = %e, "releasing a deleted Service failed");
        }
    });
}

/// Lets go of what the provider holds for Services the store no longer has.
fn release_missing(provider: &Arc<dyn Provider>, store: &reflector::Store<Service>) {
    for key in provider.held() {
        let r = ObjectRef::<Service>::new(&key.name).within(&key.namespace);
        if store.get(&r).is_none() {
            info!(service = %key, "releasing a Service deleted while the watch was down");
            release(provider.clone(), key);
        }
    }
}

/// The annotations any provider reads (its own, and the MetalLB and
/// cloud-provider names it accepts); the rest are not kept.
const READ_ANNOTATION_PREFIXES: [&str; 5] = [
    "ferrolb.io/",
    "metallb.io/",
    "metallb.universe.tf/",
    "service.beta.kubernetes.io/",
    "service.kubernetes.io/",
];

/// Drops what the controller never reads before the Service is cached:
/// managedFields, annotations no provider reads (`last-applied-configuration`
/// can be as large as the object), and status conditions (the speakers').
/// Besides memory, a change to those alone then reconciles nothing.
pub fn strip_service(svc: &mut Service) {
    svc.metadata.managed_fields = None;
    if let Some(a) = svc.metadata.annotations.as_mut() {
        a.retain(|k, _| READ_ANNOTATION_PREFIXES.iter().any(|p| k.starts_with(p)));
    }
    if let Some(status) = svc.status.as_mut() {
        status.conditions = None;
    }
}

/// Who this replica's Events come from.
fn reporter(identity: &str) -> Reporter {
    Reporter {
        controller: "ferrolb-controller".into(),
        instance: Some(identity.to_string()),
    }
}

fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "ferrolb".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{host}-{:08x}", nanos ^ std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, ServiceSpec, ServiceStatus,
    };

    #[test]
    fn stripping_keeps_what_providers_read() {
        let mut svc = Service::default();
        svc.metadata.annotations = Some(
            [
                ("kubectl.kubernetes.io/last-applied-configuration", "{...}"),
                ("meta.helm.sh/release-name", "web"),
                ("ferrolb.io/pool", "edge"),
                ("metallb.io/allow-shared-ip", "k"),
                (
                    "service.beta.kubernetes.io/aws-load-balancer-scheme",
                    "internal",
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        svc.metadata.managed_fields = Some(vec![Default::default()]);
        svc.status = Some(ServiceStatus {
            conditions: Some(vec![
                serde_json::from_value(serde_json::json!({
                    "type": "ferrolb.io/L2AnnouncedIPv4", "status": "True", "reason": "Announced",
                    "message": "", "lastTransitionTime": "2026-12-01T00:00:00Z",
                }))
                .unwrap(),
            ]),
            ..Default::default()
        });
        strip_service(&mut svc);
        let kept: Vec<&String> = svc.metadata.annotations.as_ref().unwrap().keys().collect();
        assert_eq!(
            kept,
            [
                "ferrolb.io/pool",
                "metallb.io/allow-shared-ip",
                "service.beta.kubernetes.io/aws-load-balancer-scheme"
            ]
        );
        assert!(svc.metadata.managed_fields.is_none());
        assert!(svc.status.unwrap().conditions.is_none());
    }

    fn named(name: &str) -> Service {
        let mut svc = Service {
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        svc.metadata.name = Some(name.into());
        svc.metadata.namespace = Some("default".into());
        svc
    }

    /// A config under which every Service [`named`] makes is ours.
    fn serving_unclassed() -> Config {
        Config {
            class: "ferrolb.io/baremetal".into(),
            default_class: true,
            resync: Duration::from_secs(600),
        }
    }

    fn names(refs: Vec<ObjectRef<Service>>) -> Vec<String> {
        refs.into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn a_new_list_goes_out_once_the_store_holds_it() {
        use watcher::Event::*;
        let mut f = Forwarder::new(serving_unclassed(), Arc::default());
        let (a, b) = (named("a"), named("b"));
        assert!(f.event(&Init).is_empty());
        assert!(f.event(&InitApply(a.clone())).is_empty());
        assert!(f.event(&InitApply(b.clone())).is_empty());
        assert_eq!(names(f.event(&InitDone)), ["a", "b"]);

        // The watch breaks; meanwhile a is deleted (it keeps our finalizer)
        // and b does not change. The new list holds back a's reference until
        // the store has the deleted copy.
        let mut deleted = a.clone();
        deleted.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-12-03T00:00:00Z".parse().unwrap(),
            ));
        assert!(f.event(&Init).is_empty());
        assert!(f.event(&InitApply(deleted.clone())).is_empty());
        assert!(f.event(&InitApply(b.clone())).is_empty());
        assert_eq!(names(f.event(&InitDone)), ["a"]);

        // Once listed, the same copy again calls for nothing; a change does.
        assert!(f.event(&Apply(deleted)).is_empty());
        let mut changed = b.clone();
        changed.metadata.labels = Some([("k".to_string(), "v".to_string())].into());
        assert_eq!(names(f.event(&Apply(changed.clone()))), ["b"]);
        assert!(f.event(&Apply(changed)).is_empty());
    }

    #[test]
    fn services_that_are_not_ours_and_hold_no_finalizer_call_for_nothing() {
        use watcher::Event::*;
        let mut f = Forwarder::new(
            Config {
                default_class: false,
                ..serving_unclassed()
            },
            Arc::default(),
        );
        let with_class = |name: &str, class: &str| {
            let mut svc = named(name);
            svc.spec.as_mut().unwrap().load_balancer_class = Some(class.into());
            svc
        };
        let ours = with_class("ours", "ferrolb.io/baremetal");
        let other = with_class("other", "example.com/lb");
        let unclassed = named("unclassed");
        let mut cluster_ip = with_class("cluster-ip", "ferrolb.io/baremetal");
        cluster_ip.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        // Ours once (its type changed): the finalizer says there is work left.
        let mut was_ours = cluster_ip.clone();
        was_ours.metadata.name = Some("was-ours".into());
        was_ours.metadata.finalizers = Some(vec![FINALIZER.into()]);

        f.event(&Init);
        for svc in [&ours, &other, &unclassed, &cluster_ip, &was_ours] {
            f.event(&InitApply(svc.clone()));
        }
        assert_eq!(names(f.event(&InitDone)), ["ours", "was-ours"]);

        // A change that makes one ours calls for it; other changes do not.
        let mut relabelled = other.clone();
        relabelled.metadata.labels = Some([("k".to_string(), "v".to_string())].into());
        assert!(f.event(&Apply(relabelled)).is_empty());
        let mut now_lb = cluster_ip.clone();
        now_lb.spec.as_mut().unwrap().type_ = Some("LoadBalancer".into());
        assert_eq!(names(f.event(&Apply(now_lb))), ["cluster-ip"]);
    }

    #[test]
    fn our_own_write_coming_back_calls_for_nothing_unless_more_came_with_it() {
        use watcher::Event::*;
        let own = Arc::new(OwnWrites::default());
        let mut f = Forwarder::new(serving_unclassed(), own.clone());
        let a = named("a");
        assert_eq!(names(f.event(&Apply(a.clone()))), ["a"]);

        // The reconcile writes our finalizer and an annotation, and says so
        // before the write goes out.
        let mut written = a.clone();
        written.metadata.finalizers = Some(vec![FINALIZER.into()]);
        written.metadata.annotations =
            Some([("ferrolb.io/allocated-from".to_string(), "pool".to_string())].into());
        own.expect(
            ObjectRef::from_obj(&a),
            service_fingerprint(&written).unwrap(),
        );
        assert!(f.event(&Apply(written.clone())).is_empty());

        // The next write of ours lands with a user's change in it: that one
        // calls for a reconcile.
        let mut removed = written.clone();
        removed.metadata.finalizers = None;
        own.expect(
            ObjectRef::from_obj(&a),
            service_fingerprint(&removed).unwrap(),
        );
        let mut with_theirs = removed.clone();
        with_theirs.spec.as_mut().unwrap().ports = Some(Vec::new());
        assert_eq!(names(f.event(&Apply(with_theirs))), ["a"]);
        assert!(own.is_empty());
    }

    #[test]
    fn empty_maps_and_lists_fingerprint_as_none() {
        let a = named("a");
        let mut empty = a.clone();
        empty.metadata.annotations = Some(Default::default());
        empty.metadata.labels = Some(Default::default());
        empty.metadata.finalizers = Some(Vec::new());
        assert_eq!(service_fingerprint(&a), service_fingerprint(&empty));
    }

    #[test]
    fn deletes_call_for_nothing_and_a_recreated_service_counts_as_new() {
        use watcher::Event::*;
        let mut f = Forwarder::new(serving_unclassed(), Arc::default());
        let a = named("a");
        assert_eq!(names(f.event(&Apply(a.clone()))), ["a"]);
        assert!(f.event(&Delete(a.clone())).is_empty());
        assert_eq!(names(f.event(&Apply(a.clone()))), ["a"]);

        // What a new list lacks is forgotten.
        f.event(&Init);
        f.event(&InitDone);
        assert_eq!(names(f.event(&Apply(a))), ["a"]);
    }

    #[test]
    fn fingerprint_ignores_status_but_not_what_reconciles_read() {
        let mut svc = Service {
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let base = service_fingerprint(&svc);
        svc.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some("192.0.2.1".into()),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        });
        svc.metadata.resource_version = Some("42".into());
        assert_eq!(
            service_fingerprint(&svc),
            base,
            "status and resourceVersion"
        );

        let mut annotated = svc.clone();
        annotated.metadata.annotations = Some([("ferrolb.io/pool".into(), "a".into())].into());
        let mut finalized = svc.clone();
        finalized.metadata.finalizers = Some(vec![FINALIZER.into()]);
        let mut retyped = svc.clone();
        retyped.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        for (what, s) in [
            ("annotations", annotated),
            ("finalizers", finalized),
            ("spec", retyped),
        ] {
            assert_ne!(service_fingerprint(&s), base, "{what}");
        }
    }
}
