//! `spec.loadBalancerSourceRanges` as security-group rules on the nodes.
//!
//! An NLB with instance targets keeps the client's address, so who may reach a
//! Service is decided by the nodes' security groups. For each source range,
//! ferrolb admits that range to each of the Service's nodePorts on the nodes'
//! security group, and admits the load balancer's subnets to the health-check
//! port. Every rule carries a description naming the cluster, the Service and
//! the rule's kind (`naming::rule_description`): that is how ferrolb finds its
//! own rules again, changes only those, and removes them when the ranges or
//! the Service go. Rules it did not write are never touched.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{Filter, IpPermission, IpRange, Ipv6Range};
use ferrolb_provider_api::{ProviderError, ServiceKey};
use ipnet::IpNet;

use crate::cloud::Cloud;
use crate::naming::{parse_rule_description, rule_description};
use crate::tags::legacy_cluster_tag;

pub const CLIENT: &str = "client";
pub const HEALTH: &str = "health";

/// One ingress rule: a port of one protocol, from one range, on one group.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub group: String,
    pub protocol: String,
    pub port: u16,
    pub cidr: IpNet,
    pub kind: &'static str,
}

/// The rules a Service needs: each range to each (protocol, nodePort), and the
/// load balancer's subnets to the health-check port, on every node group.
pub fn desired(
    groups: &BTreeSet<String>,
    ranges: &[IpNet],
    node_ports: &[(String, u16)],
    subnets: &[IpNet],
    health_port: Option<u16>,
) -> BTreeSet<Rule> {
    let mut out = BTreeSet::new();
    if ranges.is_empty() {
        return out;
    }
    for group in groups {
        for cidr in ranges {
            for (protocol, port) in node_ports {
                out.insert(Rule {
                    group: group.clone(),
                    protocol: protocol.clone(),
                    port: *port,
                    cidr: *cidr,
                    kind: CLIENT,
                });
            }
        }
        if let Some(port) = health_port {
            for cidr in subnets {
                out.insert(Rule {
                    group: group.clone(),
                    protocol: "tcp".into(),
                    port,
                    cidr: *cidr,
                    kind: HEALTH,
                });
            }
        }
    }
    out
}

/// The security group of each node instance: the one tagged for the cluster
/// when an instance has several, else its only one.
pub async fn node_groups(
    cloud: &Cloud,
    instances: &[String],
    cluster: &str,
) -> Result<BTreeSet<String>, ProviderError> {
    if instances.is_empty() {
        return Ok(BTreeSet::new());
    }
    let out = cloud
        .ec2(
            "DescribeInstances",
            cloud
                .ec2
                .describe_instances()
                .set_instance_ids(Some(instances.to_vec()))
                .send(),
        )
        .await?;
    let mut per_instance: Vec<Vec<String>> = Vec::new();
    let mut all: BTreeSet<String> = BTreeSet::new();
    for i in out.reservations().iter().flat_map(|r| r.instances()) {
        let ids: Vec<String> = i
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect();
        all.extend(ids.iter().cloned());
        per_instance.push(ids);
    }
    if per_instance.iter().all(|g| g.len() <= 1) {
        return Ok(all);
    }
    // Some instance has several groups: take the ones tagged for the cluster.
    let described = cloud
        .ec2(
            "DescribeSecurityGroups",
            cloud
                .ec2
                .describe_security_groups()
                .set_group_ids(Some(all.iter().cloned().collect()))
                .send(),
        )
        .await?;
    let tagged: BTreeSet<String> = described
        .security_groups()
        .iter()
        .filter(|g| {
            g.tags()
                .iter()
                .any(|t| t.key() == Some(legacy_cluster_tag(cluster).as_str()))
        })
        .filter_map(|g| g.group_id().map(str::to_string))
        .collect();
    Ok(per_instance
        .into_iter()
        .flat_map(|groups| {
            let mine: Vec<String> = groups
                .iter()
                .filter(|g| tagged.contains(*g))
                .cloned()
                .collect();
            if mine.is_empty() { groups } else { mine }
        })
        .collect())
}

/// The rules ferrolb wrote for this Service, on any group of the VPC.
pub async fn observed(
    cloud: &Cloud,
    vpc: &str,
    cluster: &str,
    key: &ServiceKey,
) -> Result<BTreeSet<Rule>, ProviderError> {
    Ok(observed_all(cloud, vpc, cluster)
        .await?
        .remove(key)
        .unwrap_or_default())
}

/// The rules of every Service of `cluster` on the VPC's security groups,
/// from one (paged) DescribeSecurityGroups.
pub async fn observed_all(
    cloud: &Cloud,
    vpc: &str,
    cluster: &str,
) -> Result<BTreeMap<ServiceKey, BTreeSet<Rule>>, ProviderError> {
    let mut out: BTreeMap<ServiceKey, BTreeSet<Rule>> = BTreeMap::new();
    let mut pages = cloud
        .ec2
        .describe_security_groups()
        .filters(Filter::builder().name("vpc-id").values(vpc).build())
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = cloud
            .ec2("DescribeSecurityGroups", std::future::ready(page))
            .await?;
        for g in page.security_groups() {
            let Some(group) = g.group_id() else { continue };
            for p in g.ip_permissions() {
                let (Some(protocol), Some(from), Some(to)) =
                    (p.ip_protocol(), p.from_port(), p.to_port())
                else {
                    continue;
                };
                let Ok(port) = u16::try_from(from) else {
                    continue;
                };
                if from != to {
                    continue; // we only ever write single ports
                }
                let v4 = p.ip_ranges().iter().map(|r| (r.cidr_ip(), r.description()));
                let v6 = p
                    .ipv6_ranges()
                    .iter()
                    .map(|r| (r.cidr_ipv6(), r.description()));
                for (cidr, description) in v4.chain(v6) {
                    let Some((c, k, kind)) = description.and_then(parse_rule_description) else {
                        continue;
                    };
                    let kind = match kind.as_str() {
                        CLIENT => CLIENT,
                        HEALTH => HEALTH,
                        _ => continue,
                    };
                    if c != cluster {
                        continue;
                    }
                    let Some(cidr) = cidr.and_then(|c| c.parse().ok()) else {
                        continue;
                    };
                    out.entry(k).or_default().insert(Rule {
                        group: group.to_string(),
                        protocol: protocol.to_string(),
                        port,
                        cidr,
                        kind,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Adds the missing rules and removes the stale ones, one call per group and
/// direction.
pub async fn converge(
    cloud: &Cloud,
    cluster: &str,
    key: &ServiceKey,
    want: &BTreeSet<Rule>,
    have: &BTreeSet<Rule>,
) -> Result<(), ProviderError> {
    for (group, rules) in by_group(want.difference(have)) {
        cloud
            .ec2(
                "AuthorizeSecurityGroupIngress",
                cloud
                    .ec2
                    .authorize_security_group_ingress()
                    .group_id(&group)
                    .set_ip_permissions(Some(permissions(&rules, cluster, key)))
                    .send(),
            )
            .await?;
    }
    for (group, rules) in by_group(have.difference(want)) {
        let r = cloud
            .ec2(
                "RevokeSecurityGroupIngress",
                cloud
                    .ec2
                    .revoke_security_group_ingress()
                    .group_id(&group)
                    .set_ip_permissions(Some(permissions(&rules, cluster, key)))
                    .send(),
            )
            .await;
        match r {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {} // the group or rule is gone already
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn by_group<'a>(rules: impl Iterator<Item = &'a Rule>) -> BTreeMap<String, Vec<Rule>> {
    let mut out: BTreeMap<String, Vec<Rule>> = BTreeMap::new();
    for r in rules {
        out.entry(r.group.clone()).or_default().push(r.clone());
    }
    out
}

fn permissions(rules: &[Rule], cluster: &str, key: &ServiceKey) -> Vec<IpPermission> {
    rules
        .iter()
        .map(|r| {
            let description = rule_description(cluster, key, r.kind);
            let b = IpPermission::builder()
                .ip_protocol(&r.protocol)
                .from_port(i32::from(r.port))
                .to_port(i32::from(r.port));
            match r.cidr {
                IpNet::V4(c) => b.ip_ranges(
                    IpRange::builder()
                        .cidr_ip(c.to_string())
                        .description(description)
                        .build(),
                ),
                IpNet::V6(c) => b.ipv6_ranges(
                    Ipv6Range::builder()
                        .cidr_ipv6(c.to_string())
                        .description(description)
                        .build(),
                ),
            }
            .build()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn no_ranges_no_rules() {
        let groups = BTreeSet::from(["sg-1".to_string()]);
        let rules = desired(
            &groups,
            &[],
            &[("tcp".into(), 30080)],
            &[net("10.0.0.0/20")],
            Some(30080),
        );
        assert!(rules.is_empty());
    }

    #[test]
    fn each_range_to_each_node_port_and_subnets_to_the_health_port() {
        let groups = BTreeSet::from(["sg-1".to_string(), "sg-2".to_string()]);
        let rules = desired(
            &groups,
            &[net("203.0.113.0/24"), net("2001:db8::/64")],
            &[("tcp".into(), 30080), ("udp".into(), 30053)],
            &[net("10.0.0.0/20"), net("10.0.16.0/20")],
            Some(32000),
        );
        // 2 groups × (2 ranges × 2 ports + 2 subnets)
        assert_eq!(rules.len(), 12);
        assert_eq!(rules.iter().filter(|r| r.kind == HEALTH).count(), 4);
        assert!(rules.contains(&Rule {
            group: "sg-2".into(),
            protocol: "udp".into(),
            port: 30053,
            cidr: net("2001:db8::/64"),
            kind: CLIENT,
        }));
    }

    #[test]
    fn permissions_carry_the_description_that_finds_them_again() {
        let key = ServiceKey::new("shop", "web");
        let rule = Rule {
            group: "sg-1".into(),
            protocol: "tcp".into(),
            port: 30080,
            cidr: net("203.0.113.0/24"),
            kind: CLIENT,
        };
        let p = permissions(&[rule], "prod", &key);
        let d = p[0].ip_ranges()[0].description().unwrap();
        assert_eq!(
            parse_rule_description(d),
            Some(("prod".into(), key, CLIENT.into()))
        );
    }
}
