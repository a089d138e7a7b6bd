//! What the controller keeps of Nodes and EndpointSlices, and the Services a
//! change to them must reconcile.
//!
//! Only the digested form ([`NodeInfo`], [`EndpointInfo`]) is kept. A Node update
//! that does not change what any Service targets (heartbeats, status) triggers
//! nothing; one that does triggers only the Services whose target set it
//! changes: every `Cluster` Service, and the `Local` Services with an endpoint
//! on that node. A change to an eligible node's labels alone triggers only the
//! Services that pick their nodes by label (the provider names the annotations).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;

use crate::nodes::{EndpointInfo, NodeInfo, ready_endpoints, slice_service};

type ServiceName = (String, String);

#[derive(Default)]
struct State {
    nodes: BTreeMap<String, NodeInfo>,
    /// Per Service, per slice name, the slice's ready endpoints.
    slices: HashMap<ServiceName, BTreeMap<String, Vec<EndpointInfo>>>,
}

/// Nodes and endpoints, indexed for intent building.
#[derive(Clone)]
pub struct Cache {
    state: Arc<RwLock<State>>,
    include_not_ready: bool,
    /// Annotations that make a Service's targets depend on node labels.
    label_annotations: &'static [&'static str],
    synced: watch::Sender<(bool, bool)>,
}

/// How a node's change bears on load-balancer targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NodeChange {
    /// Nothing any Service targets.
    None,
    /// Only the labels of an eligible node: matters to Services that pick
    /// their targets by label.
    Labels,
    /// Whether it is a target, or how it is reached.
    Targets,
}

impl Cache {
    pub fn new(include_not_ready: bool, label_annotations: &'static [&'static str]) -> Self {
        Self {
            state: Arc::default(),
            include_not_ready,
            label_annotations,
            synced: watch::Sender::new((false, false)),
        }
    }

    /// Runs `f` with every known node.
    pub fn with_nodes<T>(&self, f: impl FnOnce(&mut dyn Iterator<Item = &NodeInfo>) -> T) -> T {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        f(&mut state.nodes.values())
    }

    /// The ready endpoints of a Service, sorted and without duplicates.
    pub fn endpoints(&self, namespace: &str, name: &str) -> Vec<EndpointInfo> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<EndpointInfo> = state
            .slices
            .get(&(namespace.to_string(), name.to_string()))
            .into_iter()
            .flat_map(|m| m.values().flatten().cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Marks the cache as synced without watching anything: for a provider
    /// that reads no targets, it stays empty.
    pub fn unwatched(&self) {
        self.synced.send_replace((true, true));
    }

    /// Resolves once both Nodes and EndpointSlices have been listed.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        // The sender lives in self, so this only ends when synced.
        let _ = rx.wait_for(|(n, s)| *n && *s).await;
    }

    /// Watches Nodes until the stream ends, sending the Services to reconcile.
    pub async fn run_nodes(
        self,
        api: Api<Node>,
        services: Store<Service>,
        tx: UnboundedSender<ObjectRef<Service>>,
    ) {
        let mut stream = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut staging: Option<BTreeMap<String, NodeInfo>> = None;
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "node watch failed; retrying");
                    continue;
                }
            };
            let changed: Vec<(String, NodeChange)> = match event {
                Event::Init => {
                    staging = Some(BTreeMap::new());
                    continue;
                }
                Event::InitApply(node) => {
                    if let (Some(s), Some(info)) = (
                        staging.as_mut(),
                        NodeInfo::from_node(&node, self.include_not_ready),
                    ) {
                        s.insert(info.name.clone(), info);
                    }
                    continue;
                }
                Event::InitDone => {
                    let new = staging.take().unwrap_or_default();
                    let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                    let names: BTreeSet<&String> = state.nodes.keys().chain(new.keys()).collect();
                    let changed = names
                        .into_iter()
                        .map(|n| (n.clone(), node_change(state.nodes.get(n), new.get(n))))
                        .filter(|(_, c)| *c != NodeChange::None)
                        .collect();
                    state.nodes = new;
                    drop(state);
                    self.synced.send_modify(|s| s.0 = true);
                    changed
                }
                Event::Apply(node) => {
                    let Some(info) = NodeInfo::from_node(&node, self.include_not_ready) else {
                        continue;
                    };
                    let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                    let name = info.name.clone();
                    let old = state.nodes.insert(name.clone(), info);
                    match node_change(old.as_ref(), state.nodes.get(&name)) {
                        NodeChange::None => vec![],
                        change => vec![(name, change)],
                    }
                }
                Event::Delete(node) => {
                    let Some(name) = node.metadata.name else {
                        continue;
                    };
                    let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                    let old = state.nodes.remove(&name);
                    match node_change(old.as_ref(), None) {
                        NodeChange::None => vec![],
                        change => vec![(name, change)],
                    }
                }
            };
            if !changed.is_empty() {
                for svc in self.services_targeting(&changed, &services) {
                    let _ = tx.unbounded_send(svc);
                }
            }
        }
    }

    /// Watches EndpointSlices until the stream ends, sending the Services whose
    /// ready endpoints changed.
    pub async fn run_slices(
        self,
        api: Api<EndpointSlice>,
        tx: UnboundedSender<ObjectRef<Service>>,
    ) {
        // Only slices that belong to a Service matter.
        let cfg = watcher::Config::default().labels(crate::nodes::SERVICE_NAME_LABEL);
        let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
        let mut staging: Option<HashMap<ServiceName, BTreeMap<String, Vec<EndpointInfo>>>> = None;
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "endpointslice watch failed; retrying");
                    continue;
                }
            };
            let changed: Vec<ServiceName> = match event {
                Event::Init => {
                    staging = Some(HashMap::new());
                    continue;
                }
                Event::InitApply(slice) => {
                    if let (Some(s), Some((svc, name))) = (staging.as_mut(), slice_key(&slice)) {
                        s.entry(svc)
                            .or_default()
                            .insert(name, ready_endpoints(&slice));
                    }
                    continue;
                }
                Event::InitDone => {
                    let new = staging.take().unwrap_or_default();
                    let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                    let keys: BTreeSet<&ServiceName> =
                        state.slices.keys().chain(new.keys()).collect();
                    let changed = keys
                        .into_iter()
                        .filter(|k| state.slices.get(*k) != new.get(*k))
                        .cloned()
                        .collect();
                    state.slices = new;
                    drop(state);
                    self.synced.send_modify(|s| s.1 = true);
                    changed
                }
                Event::Apply(slice) => {
                    let Some((svc, name)) = slice_key(&slice) else {
                        continue;
                    };
                    let eps = ready_endpoints(&slice);
                    let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                    let entry = state.slices.entry(svc.clone()).or_default();
                    if entry.get(&name) == Some(&eps) {
                        vec![]
                    } else {
                        entry.insert(name, eps);
                        vec![svc]
                    }
                }
                Event::Delete(slice) => {
                    let Some((svc, name)) = slice_key(&slice) else {
                        continue;
                    };
                    let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                    let removed = state.slices.get_mut(&svc).and_then(|m| m.remove(&name));
                    if state.slices.get(&svc).is_some_and(BTreeMap::is_empty) {
                        state.slices.remove(&svc);
                    }
                    if removed.is_some_and(|r| !r.is_empty()) {
                        vec![svc]
                    } else {
                        vec![]
                    }
                }
            };
            for (ns, name) in changed {
                let _ = tx.unbounded_send(ObjectRef::new(&name).within(&ns));
            }
        }
    }

    /// The Services whose targets change when the given nodes changed.
    fn services_targeting(
        &self,
        changed: &[(String, NodeChange)],
        services: &Store<Service>,
    ) -> Vec<ObjectRef<Service>> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let targets: BTreeSet<&str> = changed
            .iter()
            .filter(|(_, c)| *c == NodeChange::Targets)
            .map(|(n, _)| n.as_str())
            .collect();
        // A label change matters only to Services that select nodes by label.
        let any: BTreeSet<&str> = changed.iter().map(|(n, _)| n.as_str()).collect();
        services
            .state()
            .iter()
            .filter(|svc| {
                let spec = svc.spec.as_ref();
                if spec.and_then(|s| s.type_.as_deref()) != Some("LoadBalancer") {
                    return false;
                }
                let by_label = svc
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| self.label_annotations.iter().any(|k| a.contains_key(*k)));
                let nodes = if by_label { &any } else { &targets };
                if nodes.is_empty() {
                    return false;
                }
                if spec.and_then(|s| s.external_traffic_policy.as_deref()) != Some("Local") {
                    return true;
                }
                let key = (
                    svc.metadata.namespace.clone().unwrap_or_default(),
                    svc.metadata.name.clone().unwrap_or_default(),
                );
                state.slices.get(&key).is_some_and(|m| {
                    m.values()
                        .flatten()
                        .any(|e| e.node_name.as_deref().is_some_and(|n| nodes.contains(n)))
                })
            })
            .map(|svc| ObjectRef::from_obj(svc.as_ref()))
            .collect()
    }
}

fn slice_key(slice: &EndpointSlice) -> Option<(ServiceName, String)> {
    Some((slice_service(slice)?, slice.metadata.name.clone()?))
}

/// How a node's change bears on Services' targets: only eligible nodes are
/// targets, so changes to an ineligible node (before and after) do not.
fn node_change(old: Option<&NodeInfo>, new: Option<&NodeInfo>) -> NodeChange {
    fn view(
        n: Option<&NodeInfo>,
    ) -> Option<(&Vec<std::net::IpAddr>, &Option<String>, &Option<String>)> {
        n.filter(|n| n.is_eligible())
            .map(|n| (&n.addresses, &n.provider_id, &n.zone))
    }
    fn labels(n: Option<&NodeInfo>) -> Option<&BTreeMap<String, String>> {
        n.filter(|n| n.is_eligible()).map(|n| &n.labels)
    }
    if view(old) != view(new) {
        NodeChange::Targets
    } else if labels(old) != labels(new) {
        NodeChange::Labels
    } else {
        NodeChange::None
    }
}

/// Lists objects once, for start-up work that must see a consistent
/// snapshot, keeping what `keep` makes of each, one page (500) at a time.
pub async fn list_all<K, T>(
    api: &Api<K>,
    mut keep: impl FnMut(K) -> Option<T>,
) -> Result<Vec<T>, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut out = Vec::new();
    let mut params = kube::api::ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        out.extend(page.items.into_iter().filter_map(&mut keep));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => params = params.continue_token(&c),
            None => return Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::Ineligible;

    fn info(eligible: bool, addr: &str) -> NodeInfo {
        NodeInfo {
            name: "n".into(),
            addresses: vec![addr.parse().unwrap()],
            provider_id: None,
            zone: None,
            labels: BTreeMap::new(),
            eligibility: if eligible {
                Ok(())
            } else {
                Err(Ineligible::NotReady)
            },
        }
    }

    #[test]
    fn only_target_relevant_node_changes_count() {
        use NodeChange::{Labels, None as Same, Targets};
        let a = info(true, "10.0.0.1");
        let b = info(true, "10.0.0.2");
        let off = info(false, "10.0.0.1");
        let off2 = info(false, "10.0.0.2");
        let mut relabelled = a.clone();
        relabelled.labels.insert("pool".into(), "edge".into());
        let mut off_relabelled = off.clone();
        off_relabelled.labels.insert("pool".into(), "edge".into());
        let cases = [
            (Some(&a), Some(&a), Same, "unchanged"),
            (Some(&a), Some(&b), Targets, "address changed"),
            (Some(&a), Some(&off), Targets, "became ineligible"),
            (None, Some(&a), Targets, "eligible node added"),
            (None, Some(&off), Same, "ineligible node added"),
            (Some(&off), Some(&off2), Same, "ineligible node changed"),
            (Some(&a), None, Targets, "eligible node removed"),
            (
                Some(&a),
                Some(&relabelled),
                Labels,
                "eligible node relabelled",
            ),
            (
                Some(&off),
                Some(&off_relabelled),
                Same,
                "ineligible node relabelled",
            ),
        ];
        for (old, new, want, what) in cases {
            assert_eq!(node_change(old, new), want, "{what}");
        }
    }
}
