//! The tags that mark AWS resources as ferrolb's, and what they say (pure).
//!
//! A resource belongs to a Service when its [`CLUSTER_TAG`] and
//! [`SERVICE_TAG`] both match; names are never used to decide ownership.

use std::collections::{BTreeMap, BTreeSet};

use ferrolb_provider_api::ServiceKey;

/// Value: the cluster name.
pub const CLUSTER_TAG: &str = "ferrolb.io/cluster";
/// Value: `namespace/name` of the Service.
pub const SERVICE_TAG: &str = "ferrolb.io/service";
/// Value: [`ROLE_LOAD_BALANCER`] or [`ROLE_TARGET_GROUP`].
pub const ROLE_TAG: &str = "ferrolb.io/role";
/// On target groups: `<port>/<PROTOCOL>` of the listener it serves, e.g. `443/TLS`.
pub const PORT_TAG: &str = "ferrolb.io/port";

/// [`ROLE_TAG`] value of a load balancer.
pub const ROLE_LOAD_BALANCER: &str = "load-balancer";
/// [`ROLE_TAG`] value of a target group.
pub const ROLE_TARGET_GROUP: &str = "target-group";

/// Value of [`legacy_cluster_tag`].
pub const LEGACY_CLUSTER_TAG_VALUE: &str = "owned";

/// Prefix of ferrolb's own tag keys; `additional` tags may not use it.
const OWN_PREFIX: &str = "ferrolb.io/";
/// Prefix of the cloud-provider-aws cluster tag keys.
const LEGACY_CLUSTER_PREFIX: &str = "kubernetes.io/cluster/";

/// `kubernetes.io/cluster/<cluster>`, set to `owned` on every resource as the
/// cloud-provider-aws does, so tools that know that convention see the owner.
pub fn legacy_cluster_tag(cluster: &str) -> String {
    format!("{LEGACY_CLUSTER_PREFIX}{cluster}")
}

/// What a resource is to its Service.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    LoadBalancer,
    /// The target group behind the listener on `port`/`protocol` (an NLB
    /// protocol name such as `TCP`, `UDP`, `TCP_UDP` or `TLS`).
    TargetGroup {
        port: u16,
        protocol: String,
    },
}

/// Whether `key` is one that only ferrolb sets: anything under `ferrolb.io/`,
/// and the `kubernetes.io/cluster/*` ownership tags. [`owned_tags`] ignores
/// such keys in `additional`; the annotation parser may reject them.
pub fn is_reserved_key(key: &str) -> bool {
    key.starts_with(OWN_PREFIX) || key.starts_with(LEGACY_CLUSTER_PREFIX)
}

/// Every tag ferrolb puts on a resource of this Service: the `additional` tags
/// (already validated by the caller; reserved keys among them are dropped, see
/// [`is_reserved_key`]), then ours, which win: cluster, service, role, the port
/// for target groups, and the legacy cluster tag.
pub fn owned_tags(
    cluster: &str,
    key: &ServiceKey,
    role: &Role,
    additional: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut tags: BTreeMap<String, String> = additional
        .iter()
        .filter(|(k, _)| !is_reserved_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    tags.insert(CLUSTER_TAG.to_string(), cluster.to_string());
    tags.insert(SERVICE_TAG.to_string(), key.to_string());
    tags.insert(
        legacy_cluster_tag(cluster),
        LEGACY_CLUSTER_TAG_VALUE.to_string(),
    );
    match role {
        Role::LoadBalancer => {
            tags.insert(ROLE_TAG.to_string(), ROLE_LOAD_BALANCER.to_string());
        }
        Role::TargetGroup { port, protocol } => {
            tags.insert(ROLE_TAG.to_string(), ROLE_TARGET_GROUP.to_string());
            tags.insert(PORT_TAG.to_string(), format!("{port}/{protocol}"));
        }
    }
    tags
}

/// Whether a resource with these tags belongs to this cluster and Service:
/// [`CLUSTER_TAG`] and [`SERVICE_TAG`] must both match exactly.
pub fn is_owned_by(tags: &BTreeMap<String, String>, cluster: &str, key: &ServiceKey) -> bool {
    tags.get(CLUSTER_TAG).is_some_and(|c| c == cluster)
        && tags
            .get(SERVICE_TAG)
            .is_some_and(|s| parse_service(s).as_ref() == Some(key))
}

/// The Service a resource of this cluster belongs to (for the orphan sweep);
/// `None` when it is not this cluster's or its service tag is malformed.
pub fn owner(tags: &BTreeMap<String, String>, cluster: &str) -> Option<ServiceKey> {
    if tags.get(CLUSTER_TAG)? != cluster {
        return None;
    }
    parse_service(tags.get(SERVICE_TAG)?)
}

/// The role a resource's tags give it; `None` when the role tag is missing or
/// unknown, or a target group's port tag is missing or malformed.
pub fn role(tags: &BTreeMap<String, String>) -> Option<Role> {
    match tags.get(ROLE_TAG)?.as_str() {
        ROLE_LOAD_BALANCER => Some(Role::LoadBalancer),
        ROLE_TARGET_GROUP => {
            let (port, protocol) = tags.get(PORT_TAG)?.split_once('/')?;
            // `u16::from_str` would accept a leading `+`; ours never has one.
            if !port.bytes().all(|b| b.is_ascii_digit()) || protocol.is_empty() {
                return None;
            }
            let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
            Some(Role::TargetGroup {
                port,
                protocol: protocol.to_string(),
            })
        }
        _ => None,
    }
}

/// The tag changes that bring a resource's tags to `desired`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TagChanges {
    /// Tags to add, or whose value to change.
    pub set: BTreeMap<String, String>,
    /// Keys to remove.
    pub remove: BTreeSet<String>,
}

impl TagChanges {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

/// The changes that converge `current` to `desired` for the keys ferrolb
/// manages, never touching any other tag:
///
/// - `set`: every desired tag that is missing from `current` or has another
///   value there;
/// - `remove`: the keys present in `current` that were additional tags before
///   (`previous_additional`, the additional tags applied last time) and are no
///   longer desired.
///
/// Tags someone else put on the resource (in neither `desired` nor
/// `previous_additional`) are left alone.
pub fn changes(
    current: &BTreeMap<String, String>,
    desired: &BTreeMap<String, String>,
    previous_additional: &BTreeMap<String, String>,
) -> TagChanges {
    let set = desired
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let remove = previous_additional
        .keys()
        .filter(|k| current.contains_key(*k) && !desired.contains_key(*k))
        .cloned()
        .collect();
    TagChanges { set, remove }
}

/// `namespace/name`, both non-empty, no further `/`.
fn parse_service(s: &str) -> Option<ServiceKey> {
    let (namespace, name) = s.split_once('/')?;
    if namespace.is_empty() || name.is_empty() || name.contains('/') {
        return None;
    }
    Some(ServiceKey::new(namespace, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn key() -> ServiceKey {
        ServiceKey::new("default", "web")
    }

    #[test]
    fn owned_tags_of_a_load_balancer() {
        let got = owned_tags("prod", &key(), &Role::LoadBalancer, &BTreeMap::new());
        assert_eq!(
            got,
            map(&[
                (CLUSTER_TAG, "prod"),
                (SERVICE_TAG, "default/web"),
                (ROLE_TAG, "load-balancer"),
                ("kubernetes.io/cluster/prod", "owned"),
            ])
        );
    }

    #[test]
    fn owned_tags_of_a_target_group() {
        let role = Role::TargetGroup {
            port: 443,
            protocol: "TLS".into(),
        };
        let got = owned_tags("prod", &key(), &role, &BTreeMap::new());
        assert_eq!(got.get(ROLE_TAG).unwrap(), "target-group");
        assert_eq!(got.get(PORT_TAG).unwrap(), "443/TLS");
        assert_eq!(super::role(&got), Some(role));
    }

    #[test]
    fn owned_tags_rules() {
        // (additional, key that must hold, its value)
        let rows = [
            // additional tags are kept
            (map(&[("team", "a")]), "team", Some("a")),
            // ours win over an additional tag with the same key
            (map(&[(CLUSTER_TAG, "other")]), CLUSTER_TAG, Some("prod")),
            // other reserved keys in additional are dropped
            (map(&[("ferrolb.io/extra", "x")]), "ferrolb.io/extra", None),
            (map(&[(PORT_TAG, "1/TCP")]), PORT_TAG, None),
            (
                map(&[("kubernetes.io/cluster/other", "owned")]),
                "kubernetes.io/cluster/other",
                None,
            ),
            // the legacy tag cannot be overridden either
            (
                map(&[("kubernetes.io/cluster/prod", "shared")]),
                "kubernetes.io/cluster/prod",
                Some("owned"),
            ),
        ];
        for (additional, k, want) in rows {
            let got = owned_tags("prod", &key(), &Role::LoadBalancer, &additional);
            assert_eq!(got.get(k).map(String::as_str), want, "{additional:?}");
        }
    }

    #[test]
    fn is_owned_by_rules() {
        // (tags, owned by prod default/web)
        let rows = [
            (
                map(&[(CLUSTER_TAG, "prod"), (SERVICE_TAG, "default/web")]),
                true,
            ),
            // cluster tag missing or different
            (map(&[(SERVICE_TAG, "default/web")]), false),
            (
                map(&[(CLUSTER_TAG, "dev"), (SERVICE_TAG, "default/web")]),
                false,
            ),
            // service tag missing or different
            (map(&[(CLUSTER_TAG, "prod")]), false),
            (
                map(&[(CLUSTER_TAG, "prod"), (SERVICE_TAG, "default/api")]),
                false,
            ),
            (
                map(&[(CLUSTER_TAG, "prod"), (SERVICE_TAG, "other/web")]),
                false,
            ),
            // the legacy tags alone are not enough
            (
                map(&[
                    ("kubernetes.io/cluster/prod", "owned"),
                    ("kubernetes.io/service-name", "default/web"),
                ]),
                false,
            ),
        ];
        for (tags, want) in rows {
            assert_eq!(is_owned_by(&tags, "prod", &key()), want, "{tags:?}");
        }
    }

    #[test]
    fn owner_rules() {
        let rows = [
            (
                map(&[(CLUSTER_TAG, "prod"), (SERVICE_TAG, "default/web")]),
                Some(key()),
            ),
            // another cluster's resource
            (
                map(&[(CLUSTER_TAG, "dev"), (SERVICE_TAG, "default/web")]),
                None,
            ),
            // no service tag
            (map(&[(CLUSTER_TAG, "prod")]), None),
            // malformed service tags
            (map(&[(CLUSTER_TAG, "prod"), (SERVICE_TAG, "web")]), None),
            (map(&[(CLUSTER_TAG, "prod"), (SERVICE_TAG, "/web")]), None),
            (
                map(&[(CLUSTER_TAG, "prod"), (SERVICE_TAG, "default/")]),
                None,
            ),
            (map(&[(CLUSTER_TAG, "prod"), (SERVICE_TAG, "a/b/c")]), None),
            // no tags at all
            (map(&[]), None),
        ];
        for (tags, want) in rows {
            assert_eq!(owner(&tags, "prod"), want, "{tags:?}");
        }
    }

    #[test]
    fn role_rules() {
        let tg = |port: u16, protocol: &str| {
            Some(Role::TargetGroup {
                port,
                protocol: protocol.into(),
            })
        };
        let rows = [
            (
                map(&[(ROLE_TAG, "load-balancer")]),
                Some(Role::LoadBalancer),
            ),
            (
                map(&[(ROLE_TAG, "target-group"), (PORT_TAG, "80/TCP")]),
                tg(80, "TCP"),
            ),
            (
                map(&[(ROLE_TAG, "target-group"), (PORT_TAG, "53/TCP_UDP")]),
                tg(53, "TCP_UDP"),
            ),
            // no or unknown role
            (map(&[]), None),
            (map(&[(ROLE_TAG, "listener")]), None),
            // target group without a valid port tag
            (map(&[(ROLE_TAG, "target-group")]), None),
            (map(&[(ROLE_TAG, "target-group"), (PORT_TAG, "80")]), None),
            (
                map(&[(ROLE_TAG, "target-group"), (PORT_TAG, "x/TCP")]),
                None,
            ),
            (
                map(&[(ROLE_TAG, "target-group"), (PORT_TAG, "0/TCP")]),
                None,
            ),
            (
                map(&[(ROLE_TAG, "target-group"), (PORT_TAG, "+80/TCP")]),
                None,
            ),
            (
                map(&[(ROLE_TAG, "target-group"), (PORT_TAG, "70000/TCP")]),
                None,
            ),
            (map(&[(ROLE_TAG, "target-group"), (PORT_TAG, "80/")]), None),
        ];
        for (tags, want) in rows {
            assert_eq!(role(&tags), want, "{tags:?}");
        }
    }

    #[test]
    fn changes_rules() {
        struct Row {
            current: BTreeMap<String, String>,
            desired: BTreeMap<String, String>,
            previous: BTreeMap<String, String>,
            set: BTreeMap<String, String>,
            remove: &'static [&'static str],
        }
        let rows = [
            // in sync: nothing to do
            Row {
                current: map(&[("a", "1")]),
                desired: map(&[("a", "1")]),
                previous: map(&[("a", "1")]),
                set: map(&[]),
                remove: &[],
            },
            // missing tag is added
            Row {
                current: map(&[]),
                desired: map(&[("a", "1")]),
                previous: map(&[]),
                set: map(&[("a", "1")]),
                remove: &[],
            },
            // changed value is set
            Row {
                current: map(&[("a", "0")]),
                desired: map(&[("a", "1")]),
                previous: map(&[]),
                set: map(&[("a", "1")]),
                remove: &[],
            },
            // a foreign tag is left alone
            Row {
                current: map(&[("a", "1"), ("foreign", "x")]),
                desired: map(&[("a", "1")]),
                previous: map(&[]),
                set: map(&[]),
                remove: &[],
            },
            // a previously additional tag no longer wanted is removed
            Row {
                current: map(&[("a", "1"), ("team", "x")]),
                desired: map(&[("a", "1")]),
                previous: map(&[("team", "x")]),
                set: map(&[]),
                remove: &["team"],
            },
            // ... even if someone changed its value meanwhile
            Row {
                current: map(&[("team", "y")]),
                desired: map(&[]),
                previous: map(&[("team", "x")]),
                set: map(&[]),
                remove: &["team"],
            },
            // a previously additional tag already gone is not removed again
            Row {
                current: map(&[]),
                desired: map(&[]),
                previous: map(&[("team", "x")]),
                set: map(&[]),
                remove: &[],
            },
            // a previously additional tag still wanted (new value) is set, not removed
            Row {
                current: map(&[("team", "x")]),
                desired: map(&[("team", "z")]),
                previous: map(&[("team", "x")]),
                set: map(&[("team", "z")]),
                remove: &[],
            },
        ];
        for (i, row) in rows.into_iter().enumerate() {
            let got = changes(&row.current, &row.desired, &row.previous);
            assert_eq!(got.set, row.set, "row {i}");
            let remove: BTreeSet<String> = row.remove.iter().map(|s| s.to_string()).collect();
            assert_eq!(got.remove, remove, "row {i}");
            assert_eq!(got.is_empty(), row.set.is_empty() && remove.is_empty());
        }
    }

    proptest! {
        #[test]
        fn owned_tags_are_recognised(
            cluster in "[a-zA-Z0-9_.:-]{1,40}",
            ns in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?",
            name in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?",
            port in 1u16..,
            target_group in any::<bool>(),
            additional in prop::collection::btree_map("\\PC{1,20}", "\\PC{0,20}", 0..5),
        ) {
            let k = ServiceKey::new(ns, name);
            let r = if target_group {
                Role::TargetGroup { port, protocol: "UDP".into() }
            } else {
                Role::LoadBalancer
            };
            let tags = owned_tags(&cluster, &k, &r, &additional);
            prop_assert!(is_owned_by(&tags, &cluster, &k));
            prop_assert_eq!(owner(&tags, &cluster), Some(k.clone()));
            prop_assert_eq!(role(&tags), Some(r));
            let other = format!("{cluster}x");
            prop_assert!(!is_owned_by(&tags, &other, &k));
            prop_assert_eq!(owner(&tags, &other), None);
        }

        #[test]
        fn changes_converge_and_spare_foreign_tags(
            current in prop::collection::btree_map("[a-e]", "[0-2]", 0..5),
            desired in prop::collection::btree_map("[a-e]", "[0-2]", 0..5),
            previous in prop::collection::btree_map("[a-e]", "[0-2]", 0..5),
        ) {
            let c = changes(&current, &desired, &previous);
            for k in &c.remove {
                prop_assert!(previous.contains_key(k) && !desired.contains_key(k));
            }
            let mut after = current.clone();
            for k in &c.remove {
                after.remove(k);
            }
            after.extend(c.set.clone());
            for (k, v) in &desired {
                prop_assert_eq!(after.get(k), Some(v));
            }
            for (k, v) in &current {
                if !desired.contains_key(k) && !previous.contains_key(k) {
                    prop_assert_eq!(after.get(k), Some(v));
                }
            }
            prop_assert!(changes(&after, &desired, &previous).is_empty());
        }
    }
}
