//! The Services this controller has just written, until the watch catches up.
//!
//! A reconcile reads its Service from the reflector's store, which lags the
//! apiserver by a watch event. A reconcile that follows our own write before
//! its event has arrived (an AWS Service's finalizer write triggers one while
//! the status write is still on its way) would see the old object and write the
//! same status again. So after each write we keep the object the apiserver
//! answered with, together with the resourceVersions we knew to be older, and
//! a reconcile that is handed one of those older versions gets ours instead.
//! The entry goes as soon as the watch delivers any other version.
//!
//! A reconcile is handed the object its future was made with, which can be
//! older than the store by the time it runs; [`Recent::fresher`] therefore
//! starts from the store's current version.
//!
//! [`OwnWrites`] keeps the other side: what a write of ours will make of a
//! Service, so that its watch event does not call for a reconcile of its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Service;
use kube::runtime::reflector::{ObjectRef, Store};

struct Entry {
    /// resourceVersions older than `latest`.
    stale: Vec<String>,
    latest: Arc<Service>,
}

pub struct Recent {
    store: Store<Service>,
    entries: Mutex<HashMap<ObjectRef<Service>, Entry>>,
    /// What our writes under way will make of their Services.
    pub own: Arc<OwnWrites>,
}

impl Recent {
    pub fn new(store: Store<Service>) -> Self {
        Self {
            store,
            entries: Mutex::default(),
            own: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<Service>, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// We wrote `latest`; `stale` are the versions it supersedes.
    pub fn record(&self, stale: Vec<String>, latest: Service) {
        let key = ObjectRef::from_obj(&latest);
        let mut entries = self.lock();
        // The watch may have delivered our write (or a later one) already.
        let behind = self
            .store
            .get(&key)
            .and_then(|s| s.metadata.resource_version.clone())
            .is_some_and(|rv| stale.contains(&rv));
        if !behind {
            entries.remove(&key);
            return;
        }
        entries.insert(
            key,
            Entry {
                stale,
                latest: Arc::new(latest),
            },
        );
    }

    /// A version of the Service arrived from the watch.
    pub fn observe(&self, svc: &Service) {
        let key = ObjectRef::from_obj(svc);
        let mut entries = self.lock();
        let caught_up = entries.get(&key).is_some_and(|e| {
            svc.metadata
                .resource_version
                .as_ref()
                .is_none_or(|rv| !e.stale.contains(rv))
        });
        if caught_up {
            entries.remove(&key);
        }
    }

    /// The Service is gone.
    pub fn forget(&self, svc: &Service) {
        self.lock().remove(&ObjectRef::from_obj(svc));
    }

    /// The newest version of `svc` we know: the store's, or what we wrote on
    /// top of it when the store is older than that.
    pub fn fresher(&self, svc: Arc<Service>) -> Arc<Service> {
        let key = ObjectRef::from_obj(svc.as_ref());
        let entries = self.lock();
        let svc = self.store.get(&key).unwrap_or(svc);
        match (entries.get(&key), svc.metadata.resource_version.as_ref()) {
            (Some(e), Some(rv)) if e.stale.contains(rv) => e.latest.clone(),
            _ => svc,
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The fingerprint ([`crate::controller::service_fingerprint`]) each
/// Service will have once the write of ours under way lands: the reconcile
/// that sends it has acted on everything in it, so when the watch brings
/// back a version with just that fingerprint, it calls for no reconcile.
/// Without this, each Service would be reconciled once more after every
/// write that adds or removes our finalizer or annotations, only to find
/// nothing to do. A version with any other fingerprint (someone else's
/// change went in before ours) calls for one as ever.
#[derive(Default)]
pub struct OwnWrites(Mutex<HashMap<ObjectRef<Service>, u64>>);

impl OwnWrites {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<Service>, u64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A write that leaves the Service with `print` is about to be sent.
    pub fn expect(&self, r: ObjectRef<Service>, print: u64) {
        self.lock().insert(r, print);
    }

    /// The write failed: whatever comes next is not ours.
    pub fn unexpect(&self, r: &ObjectRef<Service>) {
        self.lock().remove(r);
    }

    /// A version of the Service came from the watch: whether it is the one
    /// our write made. Either way, what was expected is settled: an
    /// expectation lasts for one event.
    pub fn is_ours(&self, r: &ObjectRef<Service>, print: u64) -> bool {
        self.lock().remove(r) == Some(print)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(rv: &str, ip: Option<&str>) -> Service {
        let mut s = Service::default();
        s.metadata.name = Some("web".into());
        s.metadata.namespace = Some("default".into());
        s.metadata.resource_version = Some(rv.into());
        if let Some(ip) = ip {
            s.metadata.annotations = Some([("ip".to_string(), ip.to_string())].into());
        }
        s
    }

    /// A store whose Service `web` is at `rv`.
    fn store_at(
        rv: &str,
    ) -> (
        Store<Service>,
        kube::runtime::reflector::store::Writer<Service>,
    ) {
        let (reader, mut writer) = kube::runtime::reflector::store();
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(svc(rv, None)));
        (reader, writer)
    }

    #[test]
    fn an_older_version_gives_way_to_what_we_wrote_until_the_watch_catches_up() {
        let (store, mut writer) = store_at("1");
        let recent = Recent::new(store);
        recent.record(vec!["1".into(), "2".into()], svc("3", Some("192.0.2.1")));
        let got = recent.fresher(Arc::new(svc("1", None)));
        assert_eq!(got.metadata.resource_version.as_deref(), Some("3"));
        assert_eq!(
            recent
                .fresher(Arc::new(svc("2", None)))
                .metadata
                .resource_version
                .as_deref(),
            Some("3")
        );

        // The watch delivers the intermediate version: still behind.
        let two = svc("2", None);
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(two.clone()));
        recent.observe(&two);
        assert_eq!(recent.len(), 1);
        // Our write arrives: the store is as fresh as we are, even for a
        // reconcile that was handed version 1 before.
        let three = svc("3", Some("192.0.2.1"));
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(three.clone()));
        recent.observe(&three);
        assert!(recent.is_empty());
        assert_eq!(
            recent
                .fresher(Arc::new(svc("1", None)))
                .metadata
                .resource_version
                .as_deref(),
            Some("3")
        );
    }

    #[test]
    fn a_write_the_watch_delivered_first_is_not_kept() {
        let (store, _writer) = store_at("3");
        let recent = Recent::new(store);
        recent.record(vec!["1".into(), "2".into()], svc("3", Some("192.0.2.1")));
        assert!(recent.is_empty());
    }

    #[test]
    fn a_version_we_never_saw_is_newer_than_ours() {
        let (store, mut writer) = store_at("1");
        let recent = Recent::new(store);
        recent.record(vec!["1".into()], svc("3", Some("192.0.2.1")));
        // Someone else wrote after us: trust the store.
        let seven = svc("7", None);
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(seven.clone()));
        let theirs = recent.fresher(Arc::new(svc("1", None)));
        assert_eq!(theirs.metadata.resource_version.as_deref(), Some("7"));
        recent.observe(&seven);
        assert!(recent.is_empty());
        let (store, _writer) = store_at("1");
        let recent = Recent::new(store);
        recent.record(vec!["1".into()], svc("3", None));
        assert_eq!(recent.len(), 1);
        recent.forget(&svc("3", None));
        assert!(recent.is_empty());
    }

    #[test]
    fn an_expected_write_is_ours_for_one_event_and_only_with_its_fingerprint() {
        let own = OwnWrites::default();
        let web = ObjectRef::<Service>::new("web").within("default");
        own.expect(web.clone(), 7);
        assert!(own.is_ours(&web, 7));
        assert!(!own.is_ours(&web, 7), "an expectation lasts for one event");

        // Someone else's version came first: settled, and not ours.
        own.expect(web.clone(), 7);
        assert!(!own.is_ours(&web, 8));
        assert!(own.is_empty());
        assert!(!own.is_ours(&web, 7));

        own.expect(web.clone(), 7);
        own.unexpect(&web);
        assert!(!own.is_ours(&web, 7));
    }
}
