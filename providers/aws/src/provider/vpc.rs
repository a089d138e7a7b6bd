//! The cluster's VPC as the provider needs it: its subnets (read once in a
//! while, by one caller at a time), security groups named in annotations, and
//! the source-range rules on the nodes' security groups.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use aws_sdk_ec2::types::Filter;
use ferrolb_provider_api::{LoadBalancerIntent, ProviderError, ServiceKey};
use tracing::{info, warn};

use super::{AwsProvider, SUBNET_CACHE_TTL, lock};
use crate::annotations::HcPort;
use crate::model::{self, NlbProtocol};
use crate::security;
use crate::subnets::SubnetInfo;
use crate::tags::legacy_cluster_tag;

impl AwsProvider {
    /// The subnets of the cluster's VPC (the VPC of the subnets tagged
    /// `kubernetes.io/cluster/<cluster>`), with whether each routes to an
    /// internet gateway.
    pub(super) async fn vpc_subnets(&self) -> Result<Vec<SubnetInfo>, ProviderError> {
        let _reading = self.subnets_read.lock().await;
        if let Some((_, subnets)) = lock(&self.subnets)
            .as_ref()
            .filter(|(at, _)| at.elapsed() < SUBNET_CACHE_TTL)
        {
            return Ok(subnets.clone());
        }
        let tagged = self
            .cloud
            .ec2(
                "DescribeSubnets",
                self.cloud
                    .ec2
                    .describe_subnets()
                    .filters(
                        Filter::builder()
                            .name("tag-key")
                            .values(legacy_cluster_tag(&self.cluster))
                            .build(),
                    )
                    .send(),
            )
            .await?;
        let mut vpcs: Vec<String> = tagged
            .subnets()
            .iter()
            .filter_map(|s| s.vpc_id().map(str::to_string))
            .collect();
        vpcs.sort();
        vpcs.dedup();
        let vpc = match vpcs.as_slice() {
            [vpc] => vpc.clone(),
            [] => {
                return Err(ProviderError::unsatisfiable(format!(
                    "no subnet is tagged {}; tag the cluster's subnets so ferrolb can find its VPC",
                    legacy_cluster_tag(&self.cluster)
                )));
            }
            many => {
                return Err(ProviderError::unsatisfiable(format!(
                    "subnets tagged {} lie in several VPCs ({}); the cluster must use one",
                    legacy_cluster_tag(&self.cluster),
                    many.join(", ")
                )));
            }
        };
        let vpc_filter = || Filter::builder().name("vpc-id").values(&vpc).build();
        let all = self
            .cloud
            .ec2(
                "DescribeSubnets",
                self.cloud
                    .ec2
                    .describe_subnets()
                    .filters(vpc_filter())
                    .send(),
            )
            .await?;
        let tables = self
            .cloud
            .ec2(
                "DescribeRouteTables",
                self.cloud
                    .ec2
                    .describe_route_tables()
                    .filters(vpc_filter())
                    .send(),
            )
            .await?;
        let routes_to_igw = |t: &aws_sdk_ec2::types::RouteTable| {
            t.routes().iter().any(|r| {
                r.destination_cidr_block() == Some("0.0.0.0/0")
                    && r.gateway_id().is_some_and(|g| g.starts_with("igw-"))
            })
        };
        let main_public = tables
            .route_tables()
            .iter()
            .find(|t| t.associations().iter().any(|a| a.main() == Some(true)))
            .is_some_and(routes_to_igw);
        let mut explicit: BTreeMap<String, bool> = BTreeMap::new();
        for t in tables.route_tables() {
            for a in t.associations() {
                if let Some(s) = a.subnet_id() {
                    explicit.insert(s.to_string(), routes_to_igw(t));
                }
            }
        }
        let infos: Vec<SubnetInfo> = all
            .subnets()
            .iter()
            .map(|s| {
                let id = s.subnet_id().unwrap_or_default().to_string();
                SubnetInfo {
                    public: explicit.get(&id).copied().unwrap_or(main_public),
                    id,
                    zone: s.availability_zone().unwrap_or_default().to_string(),
                    zone_type: "availability-zone".to_string(),
                    vpc_id: vpc.clone(),
                    cidr: s.cidr_block().unwrap_or_default().to_string(),
                    tags: s
                        .tags()
                        .iter()
                        .filter_map(|t| {
                            Some((
                                t.key()?.to_string(),
                                t.value().unwrap_or_default().to_string(),
                            ))
                        })
                        .collect(),
                }
            })
            .collect();
        *lock(&self.subnets) = Some((Instant::now(), infos.clone()));
        Ok(infos)
    }

    /// The security-groups annotation's entries as IDs: `sg-…` as given, names
    /// looked up in the cluster's VPC (one DescribeSecurityGroups for all).
    pub(super) async fn security_group_ids(
        &self,
        vpc: &str,
        groups: &[String],
    ) -> Result<Vec<String>, ProviderError> {
        let names: Vec<&String> = groups.iter().filter(|g| !g.starts_with("sg-")).collect();
        if names.is_empty() {
            return Ok(groups.to_vec());
        }
        let found = self
            .cloud
            .ec2(
                "DescribeSecurityGroups",
                self.cloud
                    .ec2
                    .describe_security_groups()
                    .filters(Filter::builder().name("vpc-id").values(vpc).build())
                    .filters(
                        Filter::builder()
                            .name("group-name")
                            .set_values(Some(names.iter().map(|n| n.to_string()).collect()))
                            .build(),
                    )
                    .send(),
            )
            .await?;
        let by_name: BTreeMap<&str, &str> = found
            .security_groups()
            .iter()
            .filter_map(|g| Some((g.group_name()?, g.group_id()?)))
            .collect();
        groups
            .iter()
            .map(|g| {
                if g.starts_with("sg-") {
                    return Ok(g.clone());
                }
                by_name.get(g.as_str()).map(|id| id.to_string()).ok_or_else(|| {
                    ProviderError::invalid(
                        "metadata.annotations[service.beta.kubernetes.io/aws-load-balancer-security-groups]",
                        format!("no security group named {g:?} in the cluster's VPC {vpc}"),
                    )
                })
            })
            .collect()
    }

    /// Source-range rules on the nodes' security groups; returns whether any
    /// exist afterwards. Reads the groups only when rules are wanted, or may
    /// exist from before (first ensure since start, or rules last time).
    pub(super) async fn converge_rules(
        &self,
        intent: &LoadBalancerIntent,
        desired: &model::DesiredLoadBalancer,
        ranges: &[ipnet::IpNet],
        lb_subnets: &[String],
        vpc: Option<&str>,
    ) -> Result<bool, ProviderError> {
        let known_rules = lock(&self.known).get(&intent.key).map(|k| k.has_rules);
        if ranges.is_empty() && known_rules == Some(false) {
            return Ok(false);
        }
        let Some(vpc) = vpc else { return Ok(false) };
        if ranges.is_empty() && known_rules.is_none() && !self.had_rules(vpc, &intent.key).await? {
            return Ok(false);
        }
        let want = if ranges.is_empty() {
            BTreeSet::new()
        } else {
            let instances: BTreeSet<String> = desired
                .target_groups
                .iter()
                .flat_map(|t| t.targets.iter().map(|t| t.id.clone()))
                .collect();
            let instances: Vec<String> = instances.into_iter().collect();
            let groups = security::node_groups(&self.cloud, &instances, &self.cluster).await?;
            let node_ports: Vec<(String, u16)> = desired
                .target_groups
                .iter()
                .flat_map(|t| {
                    let protocols: &[&str] = match t.protocol {
                        NlbProtocol::Udp => &["udp"],
                        NlbProtocol::TcpUdp => &["tcp", "udp"],
                        NlbProtocol::Tcp | NlbProtocol::Tls => &["tcp"],
                    };
                    protocols.iter().map(|p| (p.to_string(), t.port))
                })
                .collect();
            let infos = self.vpc_subnets().await?;
            let subnet_cidrs: Vec<ipnet::IpNet> = infos
                .iter()
                .filter(|s| lb_subnets.contains(&s.id))
                .filter_map(|s| s.cidr.parse().ok())
                .collect();
            let mut rules = BTreeSet::new();
            for tg in &desired.target_groups {
                let health_port = match tg.health_check.port {
                    HcPort::TrafficPort => tg.port,
                    HcPort::Port(p) => p,
                };
                rules.extend(security::desired(
                    &groups,
                    ranges,
                    &node_ports,
                    &subnet_cidrs,
                    Some(health_port),
                ));
            }
            rules
        };
        let have = security::observed(&self.cloud, vpc, &self.cluster, &intent.key).await?;
        if !want.is_empty() || !have.is_empty() {
            // There are rules, or are about to be: known at once, so that if
            // this ensure fails after this point the next one and the delete
            // still look for them.
            if let Some(k) = lock(&self.known).get_mut(&intent.key) {
                k.has_rules = true;
            }
        }
        if want != have {
            info!(service = %intent.key, add = want.difference(&have).count(), remove = have.difference(&want).count(), "updating source-range rules");
            security::converge(&self.cloud, &self.cluster, &intent.key, &want, &have).await?;
        }
        Ok(!want.is_empty())
    }

    /// Removes a deleted Service's source-range rules. Rules are written
    /// only by ensures, and one of this process records in `known` that it
    /// may have written some before it writes them; a Service it does not
    /// know may have rules from anywhere, so its are looked for.
    pub(super) async fn drop_rules(&self, key: &ServiceKey) -> Result<(), ProviderError> {
        if lock(&self.known).get(key).is_some_and(|k| !k.has_rules) {
            return Ok(());
        }
        let vpc = match self.vpc_subnets().await {
            Ok(infos) => infos.first().map(|s| s.vpc_id.clone()),
            // No VPC is tagged for the cluster: nothing could have been built
            // there either. Any other failure (throttling, a network error)
            // is retried, or the rules would outlive the Service.
            Err(e @ ProviderError::Unsatisfiable { .. }) => {
                warn!(service = %key, error = %e, "cannot look for source-range rules");
                None
            }
            Err(e) => return Err(e),
        };
        let Some(vpc) = vpc else { return Ok(()) };
        let have = security::observed(&self.cloud, &vpc, &self.cluster, key).await?;
        if !have.is_empty() {
            security::converge(&self.cloud, &self.cluster, key, &BTreeSet::new(), &have).await?;
        }
        Ok(())
    }

    /// Whether the Service had source-range rules in `vpc` before this
    /// process wrote any: one DescribeSecurityGroups for all Services.
    pub(super) async fn had_rules(
        &self,
        vpc: &str,
        key: &ServiceKey,
    ) -> Result<bool, ProviderError> {
        let mut had = self.had_rules.lock().await;
        if let Some((_, keys)) = had.as_ref().filter(|(v, _)| v == vpc) {
            return Ok(keys.contains(key));
        }
        let keys: BTreeSet<ServiceKey> = security::observed_all(&self.cloud, vpc, &self.cluster)
            .await?
            .into_keys()
            .collect();
        let found = keys.contains(key);
        *had = Some((vpc.to_string(), keys));
        Ok(found)
    }
}
