//! Read-only calls: what exists of one Service's load balancer, found by tags.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::types::{
    Listener, LoadBalancer, ProtocolEnum, TargetGroup, TargetTypeEnum,
};
use ferrolb_provider_api::{ProviderError, ServiceKey};

use crate::annotations::{HcPort, HcProtocol, HealthCheck, TargetType};
use crate::apply::LbHandle;
use crate::batch::Batcher;
use crate::cloud::{CallError, Cloud};
use crate::model::{DesiredLoadBalancer, NlbProtocol, Target};
use crate::plan::{Observed, ObservedListener, ObservedLoadBalancer, ObservedTargetGroup};
use crate::tags;

/// DescribeTags takes at most 20 resources per call.
const TAGS_PER_CALL: usize = 20;

/// How long a batched read waits for others to join it.
const BATCH_WINDOW: Duration = Duration::from_millis(25);
/// DescribeLoadBalancers takes at most this many names.
const NAMES_PER_CALL: usize = 20;

/// The reads that observe shares across Services, batched.
pub struct Reads {
    load_balancers: Batcher<LoadBalancer>,
    tags: Batcher<BTreeMap<String, String>>,
}

impl Reads {
    pub fn new(cloud: &Cloud) -> Self {
        let (c1, c2) = (cloud.clone(), cloud.clone());
        Reads {
            load_balancers: Batcher::new(BATCH_WINDOW, NAMES_PER_CALL, move |names| {
                load_balancers_named(c1.clone(), names)
            }),
            tags: Batcher::new(BATCH_WINDOW, TAGS_PER_CALL, move |arns| {
                let cloud = c2.clone();
                async move { tags_of(&cloud, &arns).await }
            }),
        }
    }
}

/// Load balancers by name. AWS answers a list with a missing name with
/// LoadBalancerNotFound for all of them, so such a list is asked again one
/// name at a time.
async fn load_balancers_named(
    cloud: Cloud,
    names: Vec<String>,
) -> Result<BTreeMap<String, LoadBalancer>, CallError> {
    let by_name = |lbs: &[LoadBalancer]| -> BTreeMap<String, LoadBalancer> {
        lbs.iter()
            .filter_map(|lb| Some((lb.load_balancer_name()?.to_string(), lb.clone())))
            .collect()
    };
    let describe = |names: Vec<String>| {
        cloud.elb(
            "DescribeLoadBalancers",
            cloud
                .elbv2
                .describe_load_balancers()
                .set_names(Some(names))
                .send(),
        )
    };
    match describe(names.clone()).await {
        Ok(out) => Ok(by_name(out.load_balancers())),
        Err(e) if e.is_not_found() && names.len() > 1 => {
            let mut found = BTreeMap::new();
            for name in names {
                match describe(vec![name]).await {
                    Ok(out) => found.extend(by_name(out.load_balancers())),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(found)
        }
        Err(e) if e.is_not_found() => Ok(BTreeMap::new()),
        Err(e) => Err(e),
    }
}

/// The load balancer named like the desired one, if it exists and is ours,
/// with its listeners, target groups and targets. A load balancer of that name
/// without our tags is somebody else's: it is reported, never touched.
///
/// `expected`: the Service is thought to have its load balancer already, so
/// the lookup waits a moment to share a call with other Services'; otherwise
/// it asks on its own (a batch with a missing name costs a call more). A
/// Service's first create in a process does not come here at all when the
/// account view shows no such name (see `AwsProvider::absent_from_view`).
pub async fn observe(
    cloud: &Cloud,
    reads: &Reads,
    desired: &DesiredLoadBalancer,
    cluster: &str,
    key: &ServiceKey,
    expected: bool,
) -> Result<(Observed, Option<String>), ProviderError> {
    let names = vec![desired.name.clone()];
    let mut found = if expected {
        reads.load_balancers.get(names).await?
    } else {
        load_balancers_named(cloud.clone(), names).await?
    };
    let lb = found.remove(&desired.name);
    let Some(lb) = lb else {
        return Ok((Observed::default(), None));
    };
    let lb_arn = lb.load_balancer_arn().unwrap_or_default().to_string();
    let vpc_id = lb.vpc_id().map(str::to_string);

    let listeners: Vec<Listener> = cloud
        .elb(
            "DescribeListeners",
            cloud
                .elbv2
                .describe_listeners()
                .load_balancer_arn(&lb_arn)
                .send(),
        )
        .await?
        .listeners()
        .to_vec();
    let sni = sni_certificates(cloud, &listeners).await?;
    let mut target_groups: Vec<TargetGroup> = cloud
        .elb(
            "DescribeTargetGroups",
            cloud
                .elbv2
                .describe_target_groups()
                .load_balancer_arn(&lb_arn)
                .send(),
        )
        .await
        .map(|o| o.target_groups().to_vec())
        .or_else(|e| {
            if e.is_not_found() {
                Ok(Vec::new())
            } else {
                Err(e)
            }
        })?;
    // A listener may forward to a group the load balancer filter does not
    // return (moved there by ModifyListener); read those too.
    let known: BTreeSet<String> = target_groups
        .iter()
        .filter_map(|t| t.target_group_arn().map(str::to_string))
        .collect();
    let missing: Vec<String> = listeners
        .iter()
        .filter_map(forward_target)
        .filter(|arn| !known.contains(arn))
        .collect();
    if !missing.is_empty() {
        let more = cloud
            .elb(
                "DescribeTargetGroups",
                cloud
                    .elbv2
                    .describe_target_groups()
                    .set_target_group_arns(Some(missing))
                    .send(),
            )
            .await?;
        target_groups.extend(more.target_groups().iter().cloned());
    }

    let mut arns = vec![lb_arn.clone()];
    arns.extend(
        target_groups
            .iter()
            .filter_map(|t| t.target_group_arn().map(str::to_string)),
    );
    let all_tags = reads.tags.get(arns).await?;
    let lb_tags = all_tags.get(&lb_arn).cloned().unwrap_or_default();
    if !tags::is_owned_by(&lb_tags, cluster, key) {
        return Err(ProviderError::unsatisfiable(format!(
            "a load balancer named {} exists but is not tagged for this Service; ferrolb leaves it alone. Delete or rename it, or set another name with the aws-load-balancer-name annotation",
            desired.name
        )));
    }

    let lb_attributes = if desired.attributes.is_empty() {
        None
    } else {
        let out = cloud
            .elb(
                "DescribeLoadBalancerAttributes",
                cloud
                    .elbv2
                    .describe_load_balancer_attributes()
                    .load_balancer_arn(&lb_arn)
                    .send(),
            )
            .await?;
        Some(
            out.attributes()
                .iter()
                .filter_map(|a| Some((a.key()?.to_string(), a.value()?.to_string())))
                .collect(),
        )
    };

    let mut observed_tgs = Vec::new();
    for tg in target_groups {
        let arn = tg.target_group_arn().unwrap_or_default().to_string();
        let tg_tags = all_tags.get(&arn).cloned().unwrap_or_default();
        if !tags::is_owned_by(&tg_tags, cluster, key) {
            continue; // not ours: never read further, never changed
        }
        let name = tg.target_group_name().unwrap_or_default().to_string();
        let wants_attributes = desired
            .target_groups
            .iter()
            .any(|d| d.name == name && !d.attributes.is_empty());
        let attributes = if wants_attributes {
            let out = cloud
                .elb(
                    "DescribeTargetGroupAttributes",
                    cloud
                        .elbv2
                        .describe_target_group_attributes()
                        .target_group_arn(&arn)
                        .send(),
                )
                .await?;
            Some(
                out.attributes()
                    .iter()
                    .filter_map(|a| Some((a.key()?.to_string(), a.value()?.to_string())))
                    .collect(),
            )
        } else {
            None
        };
        let health = cloud
            .elb(
                "DescribeTargetHealth",
                cloud
                    .elbv2
                    .describe_target_health()
                    .target_group_arn(&arn)
                    .send(),
            )
            .await?;
        let targets = health
            .target_health_descriptions()
            .iter()
            .filter_map(|d| d.target())
            .filter_map(|t| {
                Some(Target {
                    id: t.id()?.to_string(),
                    port: u16::try_from(t.port()?).ok()?,
                })
            })
            .collect();
        observed_tgs.push(ObservedTargetGroup {
            arn,
            name,
            port: tg
                .port()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or_default(),
            protocol: tg.protocol().and_then(|p| NlbProtocol::parse(p.as_str())),
            target_type: tg.target_type().and_then(|t| match t {
                TargetTypeEnum::Instance => Some(TargetType::Instance),
                TargetTypeEnum::Ip => Some(TargetType::Ip),
                _ => None,
            }),
            health_check: health_check_of(&tg),
            tags: tg_tags,
            attributes,
            targets,
        });
    }

    let handle = LbHandle::of(&lb);
    let observed = Observed {
        load_balancer: Some(ObservedLoadBalancer {
            arn: lb_arn,
            name: lb.load_balancer_name().unwrap_or_default().to_string(),
            dns_name: handle.dns_name,
            addresses: handle.addresses,
            subnets: lb
                .availability_zones()
                .iter()
                .filter_map(|z| z.subnet_id().map(str::to_string))
                .collect(),
            tags: lb_tags,
            attributes: lb_attributes,
        }),
        listeners: listeners
            .iter()
            .map(|l| ObservedListener {
                arn: l.listener_arn().unwrap_or_default().to_string(),
                port: l
                    .port()
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or_default(),
                protocol: l.protocol().and_then(|p| NlbProtocol::parse(p.as_str())),
                certificates: {
                    let default = l.certificates().first().and_then(|c| c.certificate_arn());
                    let arn = l.listener_arn().unwrap_or_default();
                    let others = sni.get(arn).into_iter().flatten();
                    default
                        .map(str::to_string)
                        .into_iter()
                        .chain(others.filter(|c| Some(c.as_str()) != default).cloned())
                        .collect()
                },
                ssl_policy: l.ssl_policy().map(str::to_string),
                target_group_arn: forward_target(l),
            })
            .collect(),
        target_groups: observed_tgs,
    };
    Ok((observed, vpc_id))
}

/// The non-default certificates of each TLS listener, by listener ARN: one
/// DescribeListenerCertificates per TLS listener, none for TCP or UDP.
async fn sni_certificates(
    cloud: &Cloud,
    listeners: &[Listener],
) -> Result<BTreeMap<String, Vec<String>>, ProviderError> {
    let mut out = BTreeMap::new();
    for l in listeners {
        if l.protocol() != Some(&ProtocolEnum::Tls) {
            continue;
        }
        let arn = l.listener_arn().unwrap_or_default();
        let certs = cloud
            .elb(
                "DescribeListenerCertificates",
                cloud
                    .elbv2
                    .describe_listener_certificates()
                    .listener_arn(arn)
                    .send(),
            )
            .await?;
        let mut others: Vec<String> = certs
            .certificates()
            .iter()
            .filter(|c| c.is_default() != Some(true))
            .filter_map(|c| c.certificate_arn().map(str::to_string))
            .collect();
        others.sort();
        out.insert(arn.to_string(), others);
    }
    Ok(out)
}

/// The target group a listener forwards to.
fn forward_target(l: &Listener) -> Option<String> {
    l.default_actions().iter().find_map(|a| {
        a.target_group_arn().map(str::to_string).or_else(|| {
            a.forward_config()
                .and_then(|f| f.target_groups().first())
                .and_then(|t| t.target_group_arn())
                .map(str::to_string)
        })
    })
}

fn health_check_of(tg: &TargetGroup) -> HealthCheck {
    let protocol = match tg.health_check_protocol() {
        Some(ProtocolEnum::Http) => HcProtocol::Http,
        Some(ProtocolEnum::Https) => HcProtocol::Https,
        _ => HcProtocol::Tcp,
    };
    let port = match tg.health_check_port() {
        Some("traffic-port") | None => HcPort::TrafficPort,
        Some(p) => p.parse().map(HcPort::Port).unwrap_or(HcPort::TrafficPort),
    };
    let num = |v: Option<i32>| v.and_then(|v| u16::try_from(v).ok()).unwrap_or_default();
    HealthCheck {
        protocol,
        port,
        path: match protocol {
            HcProtocol::Tcp => None,
            _ => tg.health_check_path().map(str::to_string),
        },
        interval_secs: num(tg.health_check_interval_seconds()),
        timeout_secs: num(tg.health_check_timeout_seconds()),
        healthy_threshold: num(tg.healthy_threshold_count()) as u8,
        unhealthy_threshold: num(tg.unhealthy_threshold_count()) as u8,
        success_codes: match protocol {
            HcProtocol::Tcp => None,
            _ => tg.matcher().and_then(|m| m.http_code()).map(str::to_string),
        },
    }
}

/// Tags of many resources, 20 per call.
pub async fn tags_of(
    cloud: &Cloud,
    arns: &[String],
) -> Result<BTreeMap<String, BTreeMap<String, String>>, CallError> {
    let mut out = BTreeMap::new();
    for chunk in arns.chunks(TAGS_PER_CALL) {
        let resp = cloud
            .elb(
                "DescribeTags",
                cloud
                    .elbv2
                    .describe_tags()
                    .set_resource_arns(Some(chunk.to_vec()))
                    .send(),
            )
            .await?;
        for d in resp.tag_descriptions() {
            let Some(arn) = d.resource_arn() else {
                continue;
            };
            let tags = d
                .tags()
                .iter()
                .filter_map(|t| {
                    Some((
                        t.key()?.to_string(),
                        t.value().unwrap_or_default().to_string(),
                    ))
                })
                .collect();
            out.insert(arn.to_string(), tags);
        }
    }
    Ok(out)
}

/// The load balancers and target groups of each Service, by `owner` (which
/// reads the tags).
pub fn owners_of<'a>(
    lbs: impl IntoIterator<Item = &'a String>,
    tgs: impl IntoIterator<Item = &'a String>,
    owner: impl Fn(&String) -> Option<ServiceKey>,
) -> BTreeMap<ServiceKey, (Vec<String>, Vec<String>)> {
    let mut out: BTreeMap<ServiceKey, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for lb in lbs {
        if let Some(key) = owner(lb) {
            out.entry(key).or_default().0.push(lb.clone());
        }
    }
    for tg in tgs {
        if let Some(key) = owner(tg) {
            out.entry(key).or_default().1.push(tg.clone());
        }
    }
    out
}
