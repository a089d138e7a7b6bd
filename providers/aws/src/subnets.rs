//! Which subnets a load balancer goes into, and which instance a Node is (pure).

use std::collections::BTreeMap;

pub use crate::annotations::Scheme;
use crate::tags::legacy_cluster_tag;

/// Zone type of a regular availability zone; see [`SubnetInfo::zone_type`].
pub const STANDARD_ZONE_TYPE: &str = "availability-zone";
/// Role tag that prefers a subnet for internet-facing load balancers.
pub const PUBLIC_ELB_ROLE_TAG: &str = "kubernetes.io/role/elb";
/// Role tag that prefers a subnet for internal load balancers.
pub const INTERNAL_ELB_ROLE_TAG: &str = "kubernetes.io/role/internal-elb";

/// Prefix of the cloud-provider-aws cluster tag keys.
const CLUSTER_TAG_PREFIX: &str = "kubernetes.io/cluster/";
/// Tag holding a subnet's name, which the subnets annotation may use.
const NAME_TAG: &str = "Name";

/// One subnet of the cluster's VPC, as plain values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubnetInfo {
    pub id: String,
    pub zone: String,
    /// `availability-zone`, `local-zone` or `wavelength-zone`; empty when
    /// unknown, which counts as a regular availability zone.
    pub zone_type: String,
    pub vpc_id: String,
    pub cidr: String,
    pub tags: BTreeMap<String, String>,
    /// Its route table sends `0.0.0.0/0` to an internet gateway (`igw-…`).
    pub public: bool,
}

impl SubnetInfo {
    fn is_standard_zone(&self) -> bool {
        self.zone_type.is_empty() || self.zone_type == STANDARD_ZONE_TYPE
    }

    fn has_tag(&self, key: &str) -> bool {
        self.tags.contains_key(key)
    }

    fn has_any_cluster_tag(&self) -> bool {
        self.tags.keys().any(|k| k.starts_with(CLUSTER_TAG_PREFIX))
    }
}

fn scheme_name(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::InternetFacing => "internet-facing",
        Scheme::Internal => "internal",
    }
}

/// The subnets for a new load balancer when the Service names none, as the
/// cloud-provider-aws chooses them:
///
/// 1. candidates are the subnets tagged `kubernetes.io/cluster/<cluster>`
///    (any value) or with no `kubernetes.io/cluster/*` tag at all;
/// 2. subnets outside regular availability zones (Local Zones, Wavelength)
///    are skipped;
/// 3. an internet-facing load balancer keeps only public subnets;
/// 4. one subnet per zone: the one with the role tag (`kubernetes.io/role/elb`
///    for internet-facing, `kubernetes.io/role/internal-elb` for internal),
///    then the one with the cluster tag, then the lowest id. The role tag
///    only breaks ties; it does not filter.
///
/// Returns subnet ids sorted by zone, or a reason saying what was looked for
/// when no subnet is left.
pub fn choose(
    candidates: &[SubnetInfo],
    cluster: &str,
    scheme: Scheme,
) -> Result<Vec<String>, String> {
    let cluster_tag = legacy_cluster_tag(cluster);
    let role_tag = match scheme {
        Scheme::InternetFacing => PUBLIC_ELB_ROLE_TAG,
        Scheme::Internal => INTERNAL_ELB_ROLE_TAG,
    };
    let (mut other_cluster, mut other_zone, mut private) = (0, 0, 0);
    let mut best: BTreeMap<&str, &SubnetInfo> = BTreeMap::new();
    for subnet in candidates {
        if !subnet.has_tag(&cluster_tag) && subnet.has_any_cluster_tag() {
            other_cluster += 1;
            continue;
        }
        if !subnet.is_standard_zone() {
            other_zone += 1;
            continue;
        }
        if scheme == Scheme::InternetFacing && !subnet.public {
            private += 1;
            continue;
        }
        // Higher ranks first: role tag, cluster tag, then the lowest id.
        let rank = |s: &SubnetInfo| {
            (
                s.has_tag(role_tag),
                s.has_tag(&cluster_tag),
                std::cmp::Reverse(s.id.clone()),
            )
        };
        best.entry(subnet.zone.as_str())
            .and_modify(|held| {
                if rank(subnet) > rank(held) {
                    *held = subnet;
                }
            })
            .or_insert(subnet);
    }
    if best.is_empty() {
        let mut reason = format!(
            "no subnet found for an {} load balancer: looked in the VPC's {} subnet(s) for ones tagged {cluster_tag} or with no kubernetes.io/cluster/* tag, in a regular availability zone",
            scheme_name(scheme),
            candidates.len(),
        );
        if scheme == Scheme::InternetFacing {
            reason.push_str(", with a route 0.0.0.0/0 to an internet gateway");
        }
        let mut skipped = Vec::new();
        if other_cluster > 0 {
            skipped.push(format!("{other_cluster} tagged for another cluster"));
        }
        if other_zone > 0 {
            skipped.push(format!("{other_zone} in a Local or Wavelength zone"));
        }
        if private > 0 {
            skipped.push(format!("{private} private"));
        }
        if !skipped.is_empty() {
            reason.push_str(&format!(" (skipped: {})", skipped.join(", ")));
        }
        reason.push_str(
            "; tag suitable subnets or name them in the service.beta.kubernetes.io/aws-load-balancer-subnets annotation",
        );
        return Err(reason);
    }
    Ok(best.into_values().map(|s| s.id.clone()).collect())
}

/// Resolves the subnets annotation (subnet ids and `Name` tag values, mixed)
/// against the VPC's subnets:
///
/// - every entry must match exactly one subnet, by id or by `Name` tag;
/// - no subnet may be listed twice, and no two may share a zone;
/// - an internet-facing load balancer may not use a private subnet.
///
/// Cluster and role tags play no part: the user chose. Returns the ids in the
/// annotation's order, or a reason naming the offending entry.
pub fn resolve(
    requested: &[String],
    candidates: &[SubnetInfo],
    scheme: Scheme,
) -> Result<Vec<String>, String> {
    if requested.is_empty() {
        return Err("no subnet is listed".to_string());
    }
    let mut chosen: Vec<&SubnetInfo> = Vec::with_capacity(requested.len());
    for entry in requested {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err("an entry is empty".to_string());
        }
        let matches: Vec<&SubnetInfo> = candidates
            .iter()
            .filter(|s| s.id == entry || s.tags.get(NAME_TAG).is_some_and(|n| n == entry))
            .collect();
        let subnet = match matches.as_slice() {
            [] => {
                return Err(format!(
                    "{entry:?} matches no subnet id or Name tag in the VPC"
                ));
            }
            [one] => *one,
            many => {
                let ids: Vec<&str> = many.iter().map(|s| s.id.as_str()).collect();
                return Err(format!(
                    "{entry:?} matches {} subnets ({}); use subnet ids",
                    many.len(),
                    ids.join(", ")
                ));
            }
        };
        if let Some(earlier) = chosen.iter().find(|s| s.id == subnet.id) {
            return Err(format!("{entry:?} lists subnet {} twice", earlier.id));
        }
        if let Some(earlier) = chosen.iter().find(|s| s.zone == subnet.zone) {
            return Err(format!(
                "{entry:?} ({}) is in zone {}, like {}; a load balancer takes one subnet per zone",
                subnet.id, subnet.zone, earlier.id
            ));
        }
        if scheme == Scheme::InternetFacing && !subnet.public {
            return Err(format!(
                "{entry:?} ({}) is private (no route 0.0.0.0/0 to an internet gateway) and cannot hold an internet-facing load balancer",
                subnet.id
            ));
        }
        chosen.push(subnet);
    }
    Ok(chosen.into_iter().map(|s| s.id.clone()).collect())
}

/// The (zone, instance id) of a Node's `spec.providerID`:
/// `aws:///us-east-1a/i-0123abcd` and `aws://us-east-1a/i-0123abcd` give
/// `(Some("us-east-1a"), "i-0123abcd")`, `aws:///i-0123abcd` gives
/// `(None, "i-0123abcd")`. `None` for anything else: other clouds, Fargate,
/// malformed ids.
pub fn parse_provider_id(provider_id: &str) -> Option<(Option<String>, String)> {
    let rest = provider_id.strip_prefix("aws://")?;
    let (zone, id) = match rest.strip_prefix('/') {
        // aws:///zone/id or aws:///id
        Some(path) => match path.split_once('/') {
            Some((zone, id)) => (Some(zone), id),
            None => (None, path),
        },
        // aws://zone/id
        None => {
            let (zone, id) = rest.split_once('/')?;
            (Some(zone), id)
        }
    };
    if let Some(zone) = zone
        && (zone.is_empty()
            || !zone
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
    {
        return None;
    }
    if !is_instance_id(id) {
        return None;
    }
    Some((zone.map(str::to_string), id.to_string()))
}

/// `i-` followed by lowercase hex (8 or 17 digits on AWS).
fn is_instance_id(id: &str) -> bool {
    id.strip_prefix("i-").is_some_and(|hex| {
        !hex.is_empty()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CLUSTER: &str = "prod";

    fn subnet(id: &str, zone: &str, public: bool, tags: &[(&str, &str)]) -> SubnetInfo {
        SubnetInfo {
            id: id.into(),
            zone: zone.into(),
            zone_type: STANDARD_ZONE_TYPE.into(),
            vpc_id: "vpc-1".into(),
            cidr: "10.0.0.0/24".into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            public,
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn choose_rules() {
        let owned = ("kubernetes.io/cluster/prod", "owned");
        let shared = ("kubernetes.io/cluster/prod", "shared");
        let foreign = ("kubernetes.io/cluster/dev", "owned");
        let elb = (PUBLIC_ELB_ROLE_TAG, "1");
        let internal_elb = (INTERNAL_ELB_ROLE_TAG, "");
        let local_zone = SubnetInfo {
            zone_type: "local-zone".into(),
            ..subnet("subnet-l", "us-east-1-bos-1a", true, &[])
        };
        let wavelength = SubnetInfo {
            zone_type: "wavelength-zone".into(),
            ..subnet("subnet-w", "us-east-1-wl1-bos-wlz-1", true, &[])
        };
        let unknown_type = SubnetInfo {
            zone_type: String::new(),
            ..subnet("subnet-u", "a", true, &[])
        };
        // (rule, candidates, scheme, chosen)
        let rows: Vec<(&str, Vec<SubnetInfo>, Scheme, Vec<String>)> = vec![
            (
                "untagged subnets are candidates",
                vec![subnet("subnet-1", "a", true, &[])],
                Scheme::InternetFacing,
                ids(&["subnet-1"]),
            ),
            (
                "the cluster tag with any value makes a candidate",
                vec![subnet("subnet-1", "a", true, &[shared])],
                Scheme::InternetFacing,
                ids(&["subnet-1"]),
            ),
            (
                "another cluster's subnets are skipped",
                vec![
                    subnet("subnet-1", "a", true, &[foreign]),
                    subnet("subnet-2", "b", true, &[]),
                ],
                Scheme::InternetFacing,
                ids(&["subnet-2"]),
            ),
            (
                "a subnet tagged for this and another cluster is a candidate",
                vec![subnet("subnet-1", "a", true, &[foreign, owned])],
                Scheme::Internal,
                ids(&["subnet-1"]),
            ),
            (
                "internet-facing keeps only public subnets",
                vec![
                    subnet("subnet-1", "a", false, &[elb]),
                    subnet("subnet-2", "b", true, &[]),
                ],
                Scheme::InternetFacing,
                ids(&["subnet-2"]),
            ),
            (
                "internal takes private and public subnets",
                vec![
                    subnet("subnet-1", "a", false, &[]),
                    subnet("subnet-2", "b", true, &[]),
                ],
                Scheme::Internal,
                ids(&["subnet-1", "subnet-2"]),
            ),
            (
                "local and wavelength zones are skipped",
                vec![
                    local_zone.clone(),
                    wavelength.clone(),
                    subnet("subnet-1", "b", true, &[]),
                ],
                Scheme::InternetFacing,
                ids(&["subnet-1"]),
            ),
            (
                "an unknown zone type counts as a regular zone",
                vec![unknown_type],
                Scheme::Internal,
                ids(&["subnet-u"]),
            ),
            (
                "the role tag wins a zone",
                vec![
                    subnet("subnet-1", "a", true, &[owned]),
                    subnet("subnet-2", "a", true, &[elb]),
                ],
                Scheme::InternetFacing,
                ids(&["subnet-2"]),
            ),
            (
                "the internal role tag wins a zone for internal",
                vec![
                    subnet("subnet-1", "a", false, &[owned, elb]),
                    subnet("subnet-2", "a", false, &[internal_elb]),
                ],
                Scheme::Internal,
                ids(&["subnet-2"]),
            ),
            (
                "the role tag does not filter",
                vec![
                    subnet("subnet-1", "a", true, &[elb]),
                    subnet("subnet-2", "b", true, &[]),
                ],
                Scheme::InternetFacing,
                ids(&["subnet-1", "subnet-2"]),
            ),
            (
                "then the cluster tag wins a zone",
                vec![
                    subnet("subnet-1", "a", true, &[]),
                    subnet("subnet-2", "a", true, &[owned]),
                ],
                Scheme::InternetFacing,
                ids(&["subnet-2"]),
            ),
            (
                "then the lowest id wins a zone",
                vec![
                    subnet("subnet-b", "a", true, &[]),
                    subnet("subnet-a", "a", true, &[]),
                    subnet("subnet-c", "a", true, &[]),
                ],
                Scheme::InternetFacing,
                ids(&["subnet-a"]),
            ),
            (
                "one subnet per zone, sorted by zone",
                vec![
                    subnet("subnet-1", "us-east-1c", true, &[]),
                    subnet("subnet-2", "us-east-1a", true, &[]),
                    subnet("subnet-3", "us-east-1b", true, &[]),
                    subnet("subnet-4", "us-east-1a", true, &[]),
                ],
                Scheme::InternetFacing,
                ids(&["subnet-2", "subnet-3", "subnet-1"]),
            ),
        ];
        for (rule, candidates, scheme, want) in rows {
            assert_eq!(choose(&candidates, CLUSTER, scheme), Ok(want), "{rule}");
        }
    }

    #[test]
    fn choose_explains_an_empty_result() {
        let rows: Vec<(&str, Vec<SubnetInfo>, Scheme, &[&str])> = vec![
            (
                "no subnets at all",
                vec![],
                Scheme::Internal,
                &["internal", "kubernetes.io/cluster/prod", "0 subnet(s)"],
            ),
            (
                "only private subnets for internet-facing",
                vec![subnet("subnet-1", "a", false, &[])],
                Scheme::InternetFacing,
                &["internet-facing", "internet gateway", "1 private"],
            ),
            (
                "only other clusters' and local-zone subnets",
                vec![
                    subnet(
                        "subnet-1",
                        "a",
                        true,
                        &[("kubernetes.io/cluster/dev", "owned")],
                    ),
                    SubnetInfo {
                        zone_type: "local-zone".into(),
                        ..subnet("subnet-2", "b", true, &[])
                    },
                ],
                Scheme::Internal,
                &[
                    "1 tagged for another cluster",
                    "1 in a Local or Wavelength zone",
                ],
            ),
        ];
        for (rule, candidates, scheme, needles) in rows {
            let err = choose(&candidates, CLUSTER, scheme).unwrap_err();
            for needle in needles {
                assert!(err.contains(needle), "{rule}: {err}");
            }
            assert!(err.contains("aws-load-balancer-subnets"), "{rule}: {err}");
        }
    }

    #[test]
    fn resolve_rules() {
        let vpc = vec![
            subnet("subnet-1", "a", true, &[("Name", "pub-a")]),
            subnet("subnet-2", "b", true, &[("Name", "pub-b")]),
            subnet("subnet-3", "c", false, &[("Name", "priv-c")]),
            subnet("subnet-4", "a", false, &[("Name", "priv-a")]),
            subnet("subnet-5", "d", true, &[("Name", "dup")]),
            subnet("subnet-6", "e", true, &[("Name", "dup")]),
            subnet(
                "subnet-7",
                "f",
                true,
                &[("Name", "x"), ("kubernetes.io/cluster/dev", "owned")],
            ),
        ];
        // (rule, requested, scheme, result: Ok(ids) or Err(substring))
        type Row = (
            &'static str,
            &'static [&'static str],
            Scheme,
            Result<Vec<String>, &'static str>,
        );
        let rows: Vec<Row> = vec![
            (
                "ids resolve, in the annotation's order",
                &["subnet-2", "subnet-1"],
                Scheme::InternetFacing,
                Ok(ids(&["subnet-2", "subnet-1"])),
            ),
            (
                "Name tags resolve, mixed with ids",
                &["pub-a", "subnet-2", "priv-c"],
                Scheme::Internal,
                Ok(ids(&["subnet-1", "subnet-2", "subnet-3"])),
            ),
            (
                "surrounding spaces are ignored",
                &[" pub-a "],
                Scheme::Internal,
                Ok(ids(&["subnet-1"])),
            ),
            (
                "cluster tags play no part",
                &["x"],
                Scheme::Internal,
                Ok(ids(&["subnet-7"])),
            ),
            (
                "an unknown entry is an error",
                &["subnet-9"],
                Scheme::Internal,
                Err("matches no subnet"),
            ),
            (
                "an ambiguous Name tag is an error",
                &["dup"],
                Scheme::Internal,
                Err("matches 2 subnets"),
            ),
            (
                "the same subnet twice is an error",
                &["subnet-1", "pub-a"],
                Scheme::Internal,
                Err("twice"),
            ),
            (
                "two subnets in one zone are an error",
                &["subnet-1", "subnet-4"],
                Scheme::Internal,
                Err("one subnet per zone"),
            ),
            (
                "a private subnet for internet-facing is an error",
                &["subnet-1", "priv-c"],
                Scheme::InternetFacing,
                Err("is private"),
            ),
            (
                "an empty list is an error",
                &[],
                Scheme::Internal,
                Err("no subnet"),
            ),
            (
                "an empty entry is an error",
                &["subnet-1", " "],
                Scheme::Internal,
                Err("empty"),
            ),
        ];
        for (rule, requested, scheme, want) in rows {
            let got = resolve(&ids(requested), &vpc, scheme);
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{rule}"),
                (Err(got), Err(needle)) => assert!(got.contains(needle), "{rule}: {got}"),
                (got, want) => panic!("{rule}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn parse_provider_id_rules() {
        let some = |zone: Option<&str>, id: &str| Some((zone.map(str::to_string), id.to_string()));
        let rows = [
            (
                "aws:///us-east-1a/i-0123abcd",
                some(Some("us-east-1a"), "i-0123abcd"),
            ),
            (
                "aws:///eu-west-3c/i-0123456789abcdef0",
                some(Some("eu-west-3c"), "i-0123456789abcdef0"),
            ),
            ("aws:///i-0123abcd", some(None, "i-0123abcd")),
            (
                "aws://us-east-1a/i-0123abcd",
                some(Some("us-east-1a"), "i-0123abcd"),
            ),
            // Local Zone names have more dashes
            (
                "aws:///us-east-1-bos-1a/i-0123abcd",
                some(Some("us-east-1-bos-1a"), "i-0123abcd"),
            ),
            // other clouds
            ("gce://project/us-central1-a/node-1", None),
            ("azure:///subscriptions/x/y", None),
            ("kind://docker/kind/kind-worker", None),
            // Fargate
            ("aws:///us-east-1a/fargate-ip-10-0-0-1.ec2.internal", None),
            ("aws:///us-east-1a/abc/fargate-ip-10-0-0-1", None),
            // garbage
            ("", None),
            ("aws://", None),
            ("aws:///", None),
            ("aws:////i-0123abcd", None),
            ("aws:///us-east-1a/", None),
            ("aws://i-0123abcd", None),
            ("aws:///us-east-1a/i-", None),
            ("aws:///us-east-1a/i-XYZ", None),
            ("aws:///US-EAST-1A/i-0123abcd", None),
            ("aws:///us-east-1a/i-0123abcd/extra", None),
            ("AWS:///us-east-1a/i-0123abcd", None),
            ("i-0123abcd", None),
        ];
        for (input, want) in rows {
            assert_eq!(parse_provider_id(input), want, "{input:?}");
        }
    }

    proptest! {
        #[test]
        fn provider_ids_round_trip(
            zone in proptest::option::of("[a-z]{2}-[a-z]+-[0-9][a-z]"),
            id in "i-[0-9a-f]{8}([0-9a-f]{9})?",
            with_host in any::<bool>(),
        ) {
            let s = match (&zone, with_host) {
                (Some(z), true) => format!("aws://{z}/{id}"),
                (Some(z), false) => format!("aws:///{z}/{id}"),
                (None, _) => format!("aws:///{id}"),
            };
            prop_assert_eq!(parse_provider_id(&s), Some((zone, id)));
        }

        #[test]
        fn parse_provider_id_never_panics(s in "\\PC*") {
            let _ = parse_provider_id(&s);
        }

        #[test]
        fn choose_takes_one_candidate_per_zone(
            raw in prop::collection::vec(
                ("[0-9a-f]{4}", "[a-c]", any::<bool>(), any::<bool>(), any::<bool>()),
                0..12,
            ),
            internet_facing in any::<bool>(),
        ) {
            let scheme = if internet_facing { Scheme::InternetFacing } else { Scheme::Internal };
            let candidates: Vec<SubnetInfo> = raw
                .iter()
                .enumerate()
                .map(|(i, (suffix, zone, public, owned, foreign))| {
                    // unique ids, in an order unrelated to the input order
                    let id = format!("subnet-{suffix}{i:02}");
                    let mut tags = vec![];
                    if *owned { tags.push(("kubernetes.io/cluster/prod", "owned")); }
                    if *foreign { tags.push(("kubernetes.io/cluster/dev", "owned")); }
                    subnet(&id, zone, *public, &tags)
                })
                .collect();
            match choose(&candidates, CLUSTER, scheme) {
                Ok(chosen) => {
                    prop_assert!(!chosen.is_empty());
                    let zones: Vec<&str> = chosen
                        .iter()
                        .map(|id| candidates.iter().find(|s| &s.id == id).unwrap().zone.as_str())
                        .collect();
                    let mut sorted = zones.clone();
                    sorted.sort();
                    sorted.dedup();
                    prop_assert_eq!(&zones, &sorted);
                    for id in &chosen {
                        let s = candidates.iter().find(|s| &s.id == id).unwrap();
                        prop_assert!(s.public || scheme == Scheme::Internal);
                        let tagged = s.tags.contains_key("kubernetes.io/cluster/prod");
                        prop_assert!(tagged || !s.tags.contains_key("kubernetes.io/cluster/dev"));
                    }
                    // the choice is a valid explicit request too
                    prop_assert_eq!(resolve(&chosen, &candidates, scheme), Ok(chosen.clone()));
                }
                Err(reason) => prop_assert!(reason.contains("no subnet found")),
            }
        }
    }
}
