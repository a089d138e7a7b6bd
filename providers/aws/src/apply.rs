//! The only place with mutating AWS calls: carries out a plan.

use std::collections::BTreeMap;
use std::net::IpAddr;

use aws_sdk_elasticloadbalancingv2::types::{
    Action as ElbAction, ActionTypeEnum, Certificate, IpAddressType as ElbIpAddressType,
    LoadBalancer, LoadBalancerAttribute, LoadBalancerSchemeEnum, LoadBalancerTypeEnum, Matcher,
    ProtocolEnum, SubnetMapping, Tag, TargetDescription, TargetGroupAttribute, TargetTypeEnum,
};
use ferrolb_provider_api::ProviderError;

use crate::annotations::{HcPort, HcProtocol, HealthCheck, IpAddressType, Scheme, TargetType};
use crate::cloud::Cloud;
use crate::model::{DesiredLoadBalancer, DesiredTargetGroup, NlbProtocol, Target};
use crate::plan::{Action, TgRef};

/// RegisterTargets and DeregisterTargets take at most this many per call.
const TARGETS_PER_CALL: usize = 200;

/// A load balancer as the status needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LbHandle {
    pub arn: String,
    pub dns_name: String,
    /// The Elastic IPs or private addresses it holds (per zone), when it was
    /// given some; otherwise empty.
    pub addresses: Vec<IpAddr>,
}

impl LbHandle {
    pub fn of(lb: &LoadBalancer) -> Self {
        LbHandle {
            arn: lb.load_balancer_arn().unwrap_or_default().to_string(),
            dns_name: lb.dns_name().unwrap_or_default().to_string(),
            addresses: lb
                .availability_zones()
                .iter()
                .flat_map(|z| z.load_balancer_addresses())
                .filter_map(|a| {
                    a.ip_address()
                        .or(a.private_ipv4_address())
                        .and_then(|ip| ip.parse().ok())
                })
                .collect(),
        }
    }
}

/// What the load balancer is after the plan ran.
pub struct Applied {
    pub lb: LbHandle,
    /// Target groups the plan created, by name.
    pub new_target_groups: BTreeMap<String, String>,
}

/// Runs `actions` in order. `lb` is the existing load balancer, if any;
/// `vpc_id` is where new target groups go.
pub async fn apply(
    cloud: &Cloud,
    desired: &DesiredLoadBalancer,
    actions: &[Action],
    lb: Option<LbHandle>,
    vpc_id: Option<&str>,
) -> Result<Applied, ProviderError> {
    let mut lb = lb;
    let mut new_tgs: BTreeMap<String, String> = BTreeMap::new();
    let tg_arn = |r: &TgRef, new_tgs: &BTreeMap<String, String>| -> String {
        match r {
            TgRef::Arn(a) => a.clone(),
            TgRef::New(name) => new_tgs.get(name).cloned().unwrap_or_default(),
        }
    };
    for action in actions {
        match action {
            Action::CreateLoadBalancer => lb = Some(create_load_balancer(cloud, desired).await?),
            Action::SetLoadBalancerAttributes(attrs) => {
                let arn = lb_arn(&lb)?;
                let attrs: Vec<LoadBalancerAttribute> = attrs
                    .iter()
                    .map(|(k, v)| LoadBalancerAttribute::builder().key(k).value(v).build())
                    .collect();
                cloud
                    .elb(
                        "ModifyLoadBalancerAttributes",
                        cloud
                            .elbv2
                            .modify_load_balancer_attributes()
                            .load_balancer_arn(arn)
                            .set_attributes(Some(attrs))
                            .send(),
                    )
                    .await?;
            }
            Action::AddLoadBalancerTags(t) => {
                let arn = lb_arn(&lb)?;
                cloud
                    .elb(
                        "AddTags",
                        cloud
                            .elbv2
                            .add_tags()
                            .resource_arns(arn)
                            .set_tags(Some(elb_tags(t)))
                            .send(),
                    )
                    .await?;
            }
            Action::CreateTargetGroup(name) => {
                let tg = desired
                    .target_groups
                    .iter()
                    .find(|t| &t.name == name)
                    .expect("the plan names desired target groups");
                let vpc = vpc_id.ok_or_else(|| ProviderError::Transient {
                    operation: "CreateTargetGroup",
                    source: "the load balancer's VPC is not known".into(),
                })?;
                let arn = create_target_group(cloud, tg, vpc).await?;
                new_tgs.insert(name.clone(), arn);
            }
            Action::ModifyHealthCheck { arn, health_check } => {
                let h = HealthArgs::from(health_check);
                cloud
                    .elb(
                        "ModifyTargetGroup",
                        cloud
                            .elbv2
                            .modify_target_group()
                            .target_group_arn(arn)
                            .health_check_protocol(h.protocol)
                            .health_check_port(h.port)
                            .set_health_check_path(h.path)
                            .health_check_interval_seconds(h.interval)
                            .health_check_timeout_seconds(h.timeout)
                            .healthy_threshold_count(h.healthy)
                            .unhealthy_threshold_count(h.unhealthy)
                            .set_matcher(h.matcher)
                            .send(),
                    )
                    .await?;
            }
            Action::SetTargetGroupAttributes { tg, attributes } => {
                let attrs: Vec<TargetGroupAttribute> = attributes
                    .iter()
                    .map(|(k, v)| TargetGroupAttribute::builder().key(k).value(v).build())
                    .collect();
                cloud
                    .elb(
                        "ModifyTargetGroupAttributes",
                        cloud
                            .elbv2
                            .modify_target_group_attributes()
                            .target_group_arn(tg_arn(tg, &new_tgs))
                            .set_attributes(Some(attrs))
                            .send(),
                    )
                    .await?;
            }
            Action::RegisterTargets { tg, targets } => {
                let arn = tg_arn(tg, &new_tgs);
                for chunk in targets.chunks(TARGETS_PER_CALL) {
                    cloud
                        .elb(
                            "RegisterTargets",
                            cloud
                                .elbv2
                                .register_targets()
                                .target_group_arn(&arn)
                                .set_targets(Some(descriptions(chunk)))
                                .send(),
                        )
                        .await?;
                }
            }
            Action::CreateListener { port, tg } => {
                let l = desired
                    .listeners
                    .iter()
                    .find(|l| l.port == *port)
                    .expect("the plan names desired listeners");
                let created = cloud
                    .elb(
                        "CreateListener",
                        cloud
                            .elbv2
                            .create_listener()
                            .load_balancer_arn(lb_arn(&lb)?)
                            .port(i32::from(l.port))
                            .protocol(protocol(l.protocol))
                            .set_certificates(default_certificate(&l.certificates))
                            .set_ssl_policy(l.ssl_policy.clone())
                            .default_actions(forward(&tg_arn(tg, &new_tgs)))
                            .send(),
                    )
                    .await?;
                // A listener takes one default certificate; the others are
                // added to it for SNI.
                if l.certificates.len() > 1 {
                    let arn = created
                        .listeners()
                        .first()
                        .and_then(|l| l.listener_arn())
                        .unwrap_or_default();
                    add_listener_certificates(cloud, arn, &l.certificates[1..]).await?;
                }
            }
            Action::ChangeListenerCertificates { arn, add, remove } => {
                if !add.is_empty() {
                    add_listener_certificates(cloud, arn, add).await?;
                }
                if !remove.is_empty() {
                    cloud
                        .elb(
                            "RemoveListenerCertificates",
                            cloud
                                .elbv2
                                .remove_listener_certificates()
                                .listener_arn(arn)
                                .set_certificates(certificates(remove))
                                .send(),
                        )
                        .await?;
                }
            }
            Action::ModifyListener { arn, port, tg } => {
                let l = desired
                    .listeners
                    .iter()
                    .find(|l| l.port == *port)
                    .expect("the plan names desired listeners");
                cloud
                    .elb(
                        "ModifyListener",
                        cloud
                            .elbv2
                            .modify_listener()
                            .listener_arn(arn)
                            .protocol(protocol(l.protocol))
                            .set_certificates(default_certificate(&l.certificates))
                            .set_ssl_policy(l.ssl_policy.clone())
                            .default_actions(forward(&tg_arn(tg, &new_tgs)))
                            .send(),
                    )
                    .await?;
            }
            Action::DeregisterTargets { arn, targets } => {
                for chunk in targets.chunks(TARGETS_PER_CALL) {
                    let r = cloud
                        .elb(
                            "DeregisterTargets",
                            cloud
                                .elbv2
                                .deregister_targets()
                                .target_group_arn(arn)
                                .set_targets(Some(descriptions(chunk)))
                                .send(),
                        )
                        .await;
                    // A target that is already gone is what we wanted.
                    match r {
                        Ok(_) => {}
                        Err(e) if e.code_is("InvalidTarget") => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Action::DeleteListener { arn } => {
                match cloud
                    .elb(
                        "DeleteListener",
                        cloud.elbv2.delete_listener().listener_arn(arn).send(),
                    )
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Action::DeleteTargetGroup { arn } => delete_target_group(cloud, arn).await?,
        }
    }
    let lb = lb.ok_or_else(|| ProviderError::Provisioning {
        what: "the load balancer was not created".into(),
    })?;
    Ok(Applied {
        lb,
        new_target_groups: new_tgs,
    })
}

fn lb_arn(lb: &Option<LbHandle>) -> Result<&str, ProviderError> {
    lb.as_ref()
        .map(|lb| lb.arn.as_str())
        .ok_or_else(|| ProviderError::Provisioning {
            what: "the load balancer does not exist yet".into(),
        })
}

async fn create_load_balancer(
    cloud: &Cloud,
    desired: &DesiredLoadBalancer,
) -> Result<LbHandle, ProviderError> {
    let mappings: Vec<SubnetMapping> = desired
        .subnets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            SubnetMapping::builder()
                .subnet_id(s)
                .set_allocation_id(desired.eip_allocations.get(i).cloned())
                .set_private_ipv4_address(
                    desired.private_ipv4_addresses.get(i).map(|a| a.to_string()),
                )
                .build()
        })
        .collect();
    let out = cloud
        .elb(
            "CreateLoadBalancer",
            cloud
                .elbv2
                .create_load_balancer()
                .name(&desired.name)
                .r#type(LoadBalancerTypeEnum::Network)
                .scheme(match desired.scheme {
                    Scheme::InternetFacing => LoadBalancerSchemeEnum::InternetFacing,
                    Scheme::Internal => LoadBalancerSchemeEnum::Internal,
                })
                .set_subnet_mappings(Some(mappings))
                .ip_address_type(match desired.ip_address_type {
                    IpAddressType::Ipv4 => ElbIpAddressType::Ipv4,
                    IpAddressType::Dualstack => ElbIpAddressType::Dualstack,
                })
                .set_security_groups(
                    (!desired.security_groups.is_empty()).then(|| desired.security_groups.clone()),
                )
                .set_tags(Some(elb_tags(&desired.tags)))
                .send(),
        )
        .await?;
    let lb = out
        .load_balancers()
        .first()
        .ok_or_else(|| ProviderError::Transient {
            operation: "CreateLoadBalancer",
            source: "the answer held no load balancer".into(),
        })?;
    Ok(LbHandle::of(lb))
}

/// The target group of `tg`'s name when it carries `tg`'s ownership tags:
/// one that a controller killed between creating it and attaching it to a
/// listener left behind. Its name is derived from what it serves, so it is
/// the group this ensure wants; without this, every later ensure would fail
/// on the name and the Service would never be served.
async fn adopt_target_group(
    cloud: &Cloud,
    tg: &DesiredTargetGroup,
) -> Result<Option<String>, ProviderError> {
    let found = cloud
        .elb(
            "DescribeTargetGroups",
            cloud.elbv2.describe_target_groups().names(&tg.name).send(),
        )
        .await?;
    let Some(arn) = found
        .target_groups()
        .first()
        .and_then(|t| t.target_group_arn())
        .map(str::to_string)
    else {
        return Ok(None);
    };
    let tags = crate::observe::tags_of(cloud, std::slice::from_ref(&arn)).await?;
    let ours = tags.get(&arn).is_some_and(|have| {
        [crate::tags::CLUSTER_TAG, crate::tags::SERVICE_TAG]
            .iter()
            .all(|k| tg.tags.get(*k).is_some_and(|v| have.get(*k) == Some(v)))
    });
    if ours {
        tracing::info!(target_group = %tg.name, "adopting a target group of ours left unattached");
    }
    Ok(ours.then_some(arn))
}

async fn create_target_group(
    cloud: &Cloud,
    tg: &DesiredTargetGroup,
    vpc_id: &str,
) -> Result<String, ProviderError> {
    let h = HealthArgs::from(&tg.health_check);
    let out = cloud
        .elb(
            "CreateTargetGroup",
            cloud
                .elbv2
                .create_target_group()
                .name(&tg.name)
                .protocol(protocol(tg.protocol))
                .port(i32::from(tg.port))
                .vpc_id(vpc_id)
                .target_type(match tg.target_type {
                    TargetType::Instance => TargetTypeEnum::Instance,
                    TargetType::Ip => TargetTypeEnum::Ip,
                })
                .health_check_enabled(true)
                .health_check_protocol(h.protocol)
                .health_check_port(h.port)
                .set_health_check_path(h.path)
                .health_check_interval_seconds(h.interval)
                .health_check_timeout_seconds(h.timeout)
                .healthy_threshold_count(h.healthy)
                .unhealthy_threshold_count(h.unhealthy)
                .set_matcher(h.matcher)
                .set_tags(Some(elb_tags(&tg.tags)))
                .send(),
        )
        .await;
    let out = match out {
        Err(e) if e.code_is("DuplicateTargetGroupName") => {
            return adopt_target_group(cloud, tg).await?.ok_or_else(|| e.into());
        }
        other => other?,
    };
    out.target_groups()
        .first()
        .and_then(|t| t.target_group_arn())
        .map(str::to_string)
        .ok_or_else(|| ProviderError::Transient {
            operation: "CreateTargetGroup",
            source: "the answer held no target group".into(),
        })
}

/// Deletes a target group; one already gone is fine.
pub async fn delete_target_group(cloud: &Cloud, arn: &str) -> Result<(), ProviderError> {
    match cloud
        .elb(
            "DeleteTargetGroup",
            cloud
                .elbv2
                .delete_target_group()
                .target_group_arn(arn)
                .send(),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) if e.code_is("ResourceInUse") => Err(ProviderError::Provisioning {
            what: format!("target group {arn} is still in use by a listener"),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Deletes a load balancer (and with it its listeners); one already gone is fine.
pub async fn delete_load_balancer(cloud: &Cloud, arn: &str) -> Result<(), ProviderError> {
    match cloud
        .elb(
            "DeleteLoadBalancer",
            cloud
                .elbv2
                .delete_load_balancer()
                .load_balancer_arn(arn)
                .send(),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

struct HealthArgs {
    protocol: ProtocolEnum,
    port: String,
    path: Option<String>,
    interval: i32,
    timeout: i32,
    healthy: i32,
    unhealthy: i32,
    matcher: Option<Matcher>,
}

impl From<&HealthCheck> for HealthArgs {
    fn from(h: &HealthCheck) -> Self {
        let http = !matches!(h.protocol, HcProtocol::Tcp);
        HealthArgs {
            protocol: match h.protocol {
                HcProtocol::Tcp => ProtocolEnum::Tcp,
                HcProtocol::Http => ProtocolEnum::Http,
                HcProtocol::Https => ProtocolEnum::Https,
            },
            port: match h.port {
                HcPort::TrafficPort => "traffic-port".into(),
                HcPort::Port(p) => p.to_string(),
            },
            path: h.path.clone().filter(|_| http),
            interval: i32::from(h.interval_secs),
            timeout: i32::from(h.timeout_secs),
            healthy: i32::from(h.healthy_threshold),
            unhealthy: i32::from(h.unhealthy_threshold),
            matcher: h
                .success_codes
                .clone()
                .filter(|_| http)
                .map(|c| Matcher::builder().http_code(c).build()),
        }
    }
}

fn protocol(p: NlbProtocol) -> ProtocolEnum {
    match p {
        NlbProtocol::Tcp => ProtocolEnum::Tcp,
        NlbProtocol::Udp => ProtocolEnum::Udp,
        NlbProtocol::TcpUdp => ProtocolEnum::TcpUdp,
        NlbProtocol::Tls => ProtocolEnum::Tls,
    }
}

fn forward(tg_arn: &str) -> ElbAction {
    ElbAction::builder()
        .r#type(ActionTypeEnum::Forward)
        .target_group_arn(tg_arn)
        .build()
}

async fn add_listener_certificates(
    cloud: &Cloud,
    listener_arn: &str,
    arns: &[String],
) -> Result<(), ProviderError> {
    cloud
        .elb(
            "AddListenerCertificates",
            cloud
                .elbv2
                .add_listener_certificates()
                .listener_arn(listener_arn)
                .set_certificates(certificates(arns))
                .send(),
        )
        .await?;
    Ok(())
}

/// The first of a listener's certificates, its default; the rest are added
/// with AddListenerCertificates.
fn default_certificate(arns: &[String]) -> Option<Vec<Certificate>> {
    certificates(&arns[..arns.len().min(1)])
}

fn certificates(arns: &[String]) -> Option<Vec<Certificate>> {
    (!arns.is_empty()).then(|| {
        arns.iter()
            .map(|a| Certificate::builder().certificate_arn(a).build())
            .collect()
    })
}

fn descriptions(targets: &[Target]) -> Vec<TargetDescription> {
    targets
        .iter()
        .map(|t| {
            TargetDescription::builder()
                .id(&t.id)
                .port(i32::from(t.port))
                .build()
        })
        .collect()
}

fn elb_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}
