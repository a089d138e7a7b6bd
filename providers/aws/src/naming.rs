//! Names of the AWS resources of one Service, and the descriptions that mark
//! the security-group rules ferrolb adds (pure).
//!
//! Load balancer and target group names have the shape
//! `k8s-{namespace:8}-{name:8}-{hash:10}`: a human-readable prefix and a hash
//! over everything that identifies the resource. The names are only a
//! convenience: resources are found by their tags (see [`crate::tags`]).

use ferrolb_provider_api::ServiceKey;
use sha2::{Digest, Sha256};

/// The longest load balancer or target group name AWS accepts.
pub const MAX_NAME_LEN: usize = 32;

/// How many characters of the namespace and of the name a generated name keeps.
const SEGMENT_LEN: usize = 8;

/// How many hex characters of the hash a generated name keeps.
const HASH_LEN: usize = 10;

/// Start of every rule description; see [`rule_description`].
const RULE_PREFIX: &str = "ferrolb:";

/// Deterministic load balancer name: `k8s-{ns:8}-{name:8}-{hash}`.
///
/// `hash` is the first 10 hex characters of a SHA-256 over (cluster,
/// namespace, name, uid, scheme), each field length-prefixed so no two
/// different inputs encode alike. The namespace and name are lowercased,
/// characters outside `[a-z0-9]` become `-`, runs of `-` are collapsed and
/// trimmed, and each is cut to 8 characters (a segment left empty is
/// omitted). The result is at most 32 characters, starts with `k8s-` (so
/// never with `internal-` or `-`) and ends with the hash (so never with `-`).
pub fn load_balancer_name(cluster: &str, key: &ServiceKey, uid: &str, scheme: &str) -> String {
    let hash = short_hash(&[
        "load-balancer",
        cluster,
        &key.namespace,
        &key.name,
        uid,
        scheme,
    ]);
    assemble(key, &hash)
}

/// Deterministic target group name, same shape as [`load_balancer_name`];
/// the hash covers (cluster, namespace, name, uid, load balancer name,
/// Service port, protocol, target type, target port), so changing any of
/// them yields a new group. The load balancer's name is in it because a
/// replacement load balancer (new name or scheme) is built beside the old
/// one, whose groups still exist until it is deleted.
#[allow(clippy::too_many_arguments)]
pub fn target_group_name(
    cluster: &str,
    key: &ServiceKey,
    uid: &str,
    load_balancer: &str,
    port: u16,
    protocol: &str,
    target_type: &str,
    target_port: u16,
) -> String {
    let port = port.to_string();
    let target_port = target_port.to_string();
    let hash = short_hash(&[
        "target-group",
        cluster,
        &key.namespace,
        &key.name,
        uid,
        load_balancer,
        &port,
        protocol,
        target_type,
        &target_port,
    ]);
    assemble(key, &hash)
}

/// Whether AWS accepts `name` as a load balancer or target group name: 1 to
/// 32 characters of `[a-zA-Z0-9-]`, not starting or ending with `-`, not
/// starting with `internal-`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.starts_with("internal-")
}

/// Description of the security-group ingress rules of one Service's load
/// balancer, `ferrolb:{cluster}:{namespace}/{name}:{kind}` (for example kind
/// `client` for the rules that admit the source ranges to the nodePorts), so
/// that they can be found again and removed. [`parse_rule_description`] reads
/// it back.
///
/// `kind` must not contain `:`; AWS caps descriptions at 255 characters and
/// allows `a-zA-Z0-9`, spaces and `._-:/()#,@[]+=&;{}!$*`, which Kubernetes
/// namespaces and names always satisfy; the cluster name is the caller's.
pub fn rule_description(cluster: &str, key: &ServiceKey, kind: &str) -> String {
    format!(
        "{RULE_PREFIX}{cluster}:{}/{}:{kind}",
        key.namespace, key.name
    )
}

/// The (cluster, Service, kind) of a description made by [`rule_description`];
/// `None` for any other description (rules that are not ours). The cluster may
/// itself contain `:`; the namespace, name and kind may not, and none of the
/// four may be empty.
pub fn parse_rule_description(s: &str) -> Option<(String, ServiceKey, String)> {
    let rest = s.strip_prefix(RULE_PREFIX)?;
    let (rest, kind) = rest.rsplit_once(':')?;
    let (cluster, service) = rest.rsplit_once(':')?;
    let (namespace, name) = service.split_once('/')?;
    if cluster.is_empty()
        || namespace.is_empty()
        || name.is_empty()
        || kind.is_empty()
        || name.contains('/')
        || kind.contains('/')
    {
        return None;
    }
    Some((
        cluster.to_string(),
        ServiceKey::new(namespace, name),
        kind.to_string(),
    ))
}

/// `k8s-{ns}-{name}-{hash}`, leaving out a segment that sanitizes to nothing.
fn assemble(key: &ServiceKey, hash: &str) -> String {
    let namespace = segment(&key.namespace);
    let name = segment(&key.name);
    let parts = ["k8s", namespace.as_str(), name.as_str(), hash];
    let out = parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("-");
    debug_assert!(is_valid_name(&out), "{out}");
    out
}

/// Lowercased, `[a-z0-9]` kept and every other character turned into `-`,
/// runs of `-` collapsed, no `-` at either end, at most [`SEGMENT_LEN`] long.
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(SEGMENT_LEN);
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
        if out.len() > SEGMENT_LEN {
            break;
        }
    }
    out.truncate(SEGMENT_LEN);
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// The first [`HASH_LEN`] hex characters of a SHA-256 over `fields`, each
/// prefixed with its length so that field boundaries are unambiguous.
fn short_hash(fields: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for field in fields {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    let digest = hasher.finalize();
    let mut out = String::with_capacity(HASH_LEN);
    for byte in digest.iter().take(HASH_LEN / 2) {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(ns: &str, name: &str) -> ServiceKey {
        ServiceKey::new(ns, name)
    }

    #[test]
    fn load_balancer_name_rules() {
        // (namespace, name, expected prefix before the hash)
        let rows = [
            // plain names are kept
            ("default", "web", "k8s-default-web-"),
            // each segment is cut to 8 characters
            ("kube-system", "ingress-nginx", "k8s-kube-sys-ingress-"),
            // uppercase is lowercased
            ("Prod", "API", "k8s-prod-api-"),
            // other characters become '-', runs collapse
            ("a..b__c", "x y", "k8s-a-b-c-x-y-"),
            // leading and trailing '-' are trimmed
            ("-ns-", "--n--", "k8s-ns-n-"),
            // a cut that ends on '-' is trimmed
            ("abcdefg-hij", "n", "k8s-abcdefg-n-"),
            // a segment with nothing left is left out
            ("日本", "name", "k8s-name-"),
            ("", "", "k8s-"),
            // "internal" in the Service is harmless: the name starts with k8s-
            ("internal", "internal", "k8s-internal-internal-"),
        ];
        for (ns, name, prefix) in rows {
            let got = load_balancer_name("c1", &key(ns, name), "uid-1", "internal");
            assert!(got.starts_with(prefix), "{ns}/{name}: {got}");
            assert_eq!(got.len(), prefix.len() + HASH_LEN, "{ns}/{name}: {got}");
            assert!(is_valid_name(&got), "{got}");
        }
    }

    #[test]
    fn every_input_changes_the_load_balancer_hash() {
        let base = load_balancer_name("c1", &key("ns", "svc"), "u1", "internal");
        let variants = [
            load_balancer_name("c2", &key("ns", "svc"), "u1", "internal"),
            load_balancer_name("c1", &key("ns2", "svc"), "u1", "internal"),
            load_balancer_name("c1", &key("ns", "svc2"), "u1", "internal"),
            load_balancer_name("c1", &key("ns", "svc"), "u2", "internal"),
            load_balancer_name("c1", &key("ns", "svc"), "u1", "internet-facing"),
            // moving a character across a field boundary changes the hash
            load_balancer_name("c1n", &key("s", "svc"), "u1", "internal"),
        ];
        for v in variants {
            assert_ne!(base, v);
        }
        assert_eq!(
            base,
            load_balancer_name("c1", &key("ns", "svc"), "u1", "internal")
        );
    }

    #[test]
    fn every_input_changes_the_target_group_hash() {
        let k = key("ns", "svc");
        let base = target_group_name("c", &k, "u", "lb", 80, "TCP", "instance", 30080);
        let variants = [
            target_group_name("c2", &k, "u", "lb", 80, "TCP", "instance", 30080),
            target_group_name(
                "c",
                &key("ns", "svc2"),
                "u",
                "lb",
                80,
                "TCP",
                "instance",
                30080,
            ),
            target_group_name("c", &k, "u2", "lb", 80, "TCP", "instance", 30080),
            target_group_name("c", &k, "u", "lb2", 80, "TCP", "instance", 30080),
            target_group_name("c", &k, "u", "lb", 81, "TCP", "instance", 30080),
            target_group_name("c", &k, "u", "lb", 80, "UDP", "instance", 30080),
            target_group_name("c", &k, "u", "lb", 80, "TCP", "ip", 30080),
            target_group_name("c", &k, "u", "lb", 80, "TCP", "instance", 30081),
            // the same digits split differently between the two ports
            target_group_name("c", &k, "u", "lb", 803, "TCP", "instance", 8),
        ];
        for v in variants {
            assert_ne!(base, v);
        }
        assert!(base.starts_with("k8s-ns-svc-"));
        assert!(is_valid_name(&base));
        assert_eq!(
            base,
            target_group_name("c", &k, "u", "lb", 80, "TCP", "instance", 30080)
        );
        // a target group never shares its load balancer's name
        assert_ne!(base, load_balancer_name("c", &k, "u", "internal"));
    }

    #[test]
    fn is_valid_name_rules() {
        let rows = [
            ("k8s-a-b-0123456789", true),
            ("a", true),
            ("", false),
            ("-a", false),
            ("a-", false),
            ("internal-a", false),
            ("a_b", false),
            ("é", false),
            (&"a".repeat(32), true),
            (&"a".repeat(33), false),
        ];
        for (name, ok) in rows {
            assert_eq!(is_valid_name(name), ok, "{name:?}");
        }
    }

    #[test]
    fn rule_description_rules() {
        // (description, parsed: cluster, namespace, name, kind)
        type Parsed = Option<(&'static str, &'static str, &'static str, &'static str)>;
        let rows: [(&str, Parsed); 10] = [
            // the plain form
            (
                "ferrolb:prod:default/web:client",
                Some(("prod", "default", "web", "client")),
            ),
            // a cluster name may contain ':'
            (
                "ferrolb:arn:aws:eks:x:default/web:health",
                Some(("arn:aws:eks:x", "default", "web", "health")),
            ),
            // another tool's rule
            ("kubernetes.io/rule/nlb/client=abc", None),
            // wrong prefix case
            ("FERROLB:prod:default/web:client", None),
            // no kind
            ("ferrolb:prod:default/web", None),
            // empty parts
            ("ferrolb::default/web:client", None),
            ("ferrolb:prod:/web:client", None),
            ("ferrolb:prod:default/:client", None),
            ("ferrolb:prod:default/web:", None),
            // a name with '/'
            ("ferrolb:prod:default/web/x:client", None),
        ];
        for (s, want) in rows {
            let want = want.map(|(c, ns, n, k)| (c.to_string(), key(ns, n), k.to_string()));
            assert_eq!(parse_rule_description(s), want, "{s}");
        }
        assert_eq!(
            rule_description("prod", &key("default", "web"), "client"),
            "ferrolb:prod:default/web:client"
        );
    }

    proptest! {
        #[test]
        fn names_are_valid_for_any_service(
            cluster in any::<String>(),
            ns in any::<String>(),
            name in any::<String>(),
            uid in any::<String>(),
            scheme in prop_oneof![Just("internal"), Just("internet-facing")],
            port in any::<u16>(),
            target_port in any::<u16>(),
        ) {
            let k = key(&ns, &name);
            let lb = load_balancer_name(&cluster, &k, &uid, scheme);
            prop_assert!(is_valid_name(&lb), "{}", lb);
            prop_assert!(lb.len() <= MAX_NAME_LEN);
            let tg = target_group_name(&cluster, &k, &uid, "lb", port, "TCP", "instance", target_port);
            prop_assert!(is_valid_name(&tg), "{}", tg);
            prop_assert!(tg.len() <= MAX_NAME_LEN);
        }

        #[test]
        fn names_are_deterministic(
            cluster in any::<String>(),
            ns in "[a-z0-9-]{1,63}",
            name in "[a-z0-9-]{1,63}",
            uid in any::<String>(),
            port in any::<u16>(),
        ) {
            let k = key(&ns, &name);
            prop_assert_eq!(
                load_balancer_name(&cluster, &k, &uid, "internal"),
                load_balancer_name(&cluster, &k.clone(), &uid.clone(), "internal")
            );
            prop_assert_eq!(
                target_group_name(&cluster, &k, &uid, "lb", port, "UDP", "ip", port),
                target_group_name(&cluster, &k.clone(), &uid.clone(), "lb", port, "UDP", "ip", port)
            );
        }

        #[test]
        fn distinct_uids_give_distinct_names(
            ns in "\\PC{0,70}",
            name in "\\PC{0,70}",
            uid_a in "[0-9a-f-]{36}",
            uid_b in "[0-9a-f-]{36}",
        ) {
            prop_assume!(uid_a != uid_b);
            let k = key(&ns, &name);
            prop_assert_ne!(
                load_balancer_name("c", &k, &uid_a, "internal"),
                load_balancer_name("c", &k, &uid_b, "internal")
            );
            prop_assert_ne!(
                target_group_name("c", &k, &uid_a, "lb", 80, "TCP", "instance", 30000),
                target_group_name("c", &k, &uid_b, "lb", 80, "TCP", "instance", 30000)
            );
        }

        #[test]
        fn rule_descriptions_round_trip(
            cluster in "[^\\n]{1,40}",
            ns in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?",
            name in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?",
            kind in "[a-z]{1,10}",
        ) {
            let k = key(&ns, &name);
            let s = rule_description(&cluster, &k, &kind);
            prop_assert_eq!(parse_rule_description(&s), Some((cluster, k, kind)));
        }
    }
}
