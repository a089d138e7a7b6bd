//! The churn against the AWS provider and moto: the account as the checker
//! reads it, by ownership tags, and what it must show once the controller
//! has caught up.

use std::collections::BTreeMap;

use anyhow::Result;
use aws_sdk_elasticloadbalancingv2::Client as Elb;
use ferrolb_e2e::moto::{Moto, Seed};
use ferrolb_e2e::{ControlPlane, FerrolbProcess};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::observe::ingress;
use super::{AWS_NAME, Outcome};
use crate::common::has_finalizer;

pub const CLUSTER: &str = "crash";
pub const CLASS: &str = "ferrolb.io/aws";
const CLUSTER_TAG: &str = "ferrolb.io/cluster";
const SERVICE_TAG: &str = "ferrolb.io/service";

/// moto with a VPC for [`CLUSTER`] and two Nodes backed by instances.
pub struct AwsAccount {
    pub moto: Moto,
    pub seed: Seed,
    pub elb: Elb,
}

impl AwsAccount {
    pub async fn start(client: &Client) -> Result<AwsAccount> {
        let moto = Moto::start().await?;
        let seed = moto.seed(CLUSTER, &["us-east-1a", "us-east-1b"]).await?;
        for (name, zone) in [("node-a", "us-east-1a"), ("node-b", "us-east-1b")] {
            moto.run_node(client, &seed, name, zone).await?;
        }
        let elb = Elb::new(&moto.sdk_config().await);
        Ok(AwsAccount { moto, seed, elb })
    }

    /// `ferrolb controller --provider aws` against moto.
    pub fn controller(&self, cp: &ControlPlane, extra: &[&str]) -> Result<FerrolbProcess> {
        FerrolbProcess::spawn_aws_controller(cp, &self.moto.env(), CLUSTER, "127.0.0.1:0", extra)
    }

    /// Every load balancer and target group tagged for [`CLUSTER`], by the
    /// Service its tags name.
    async fn owned(&self) -> Result<BTreeMap<String, Owned>> {
        let mut arns: Vec<(String, Kind)> = Vec::new();
        let mut lbs = self.elb.describe_load_balancers().into_paginator().send();
        while let Some(page) = lbs.next().await {
            for lb in page?.load_balancers() {
                arns.push((
                    lb.load_balancer_arn().unwrap_or_default().to_string(),
                    Kind::LoadBalancer {
                        name: lb.load_balancer_name().unwrap_or_default().to_string(),
                        dns: lb.dns_name().unwrap_or_default().to_string(),
                    },
                ));
            }
        }
        let mut tgs = self.elb.describe_target_groups().into_paginator().send();
        while let Some(page) = tgs.next().await {
            for tg in page?.target_groups() {
                arns.push((
                    tg.target_group_arn().unwrap_or_default().to_string(),
                    Kind::TargetGroup,
                ));
            }
        }
        let mut owned: BTreeMap<String, Owned> = BTreeMap::new();
        for chunk in arns.chunks(20) {
            let kinds: BTreeMap<&str, &Kind> = chunk.iter().map(|(a, k)| (a.as_str(), k)).collect();
            let tags = self
                .elb
                .describe_tags()
                .set_resource_arns(Some(chunk.iter().map(|(a, _)| a.clone()).collect()))
                .send()
                .await?;
            for desc in tags.tag_descriptions() {
                let tag = |key: &str| {
                    desc.tags()
                        .iter()
                        .find(|t| t.key() == Some(key))
                        .and_then(|t| t.value())
                };
                let (Some(CLUSTER), Some(service)) = (tag(CLUSTER_TAG), tag(SERVICE_TAG)) else {
                    continue;
                };
                let entry = owned.entry(service.to_string()).or_default();
                match kinds.get(desc.resource_arn().unwrap_or_default()) {
                    Some(Kind::LoadBalancer { name, dns }) => {
                        entry.load_balancers.push((name.clone(), dns.clone()))
                    }
                    Some(Kind::TargetGroup) => entry.target_groups += 1,
                    None => {}
                }
            }
        }
        Ok(owned)
    }
}

enum Kind {
    LoadBalancer { name: String, dns: String },
    TargetGroup,
}

#[derive(Debug, Default)]
struct Owned {
    /// (name, DNS name)
    load_balancers: Vec<(String, String)>,
    target_groups: usize,
}

/// What is still wrong with the Services and the account; empty once
/// everything converged.
pub async fn problems(
    client: &Client,
    ns: &str,
    account: &AwsAccount,
    outcome: &Outcome,
) -> Result<Vec<String>> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let listed: BTreeMap<String, Service> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|s| (s.name_any(), s))
        .collect();
    let mut owned = account.owned().await?;
    let mut problems = Vec::new();
    for name in &outcome.deleted {
        if listed.contains_key(name) {
            problems.push(format!("{name} was deleted but is still there"));
        }
    }
    for d in &outcome.live {
        let Some(svc) = listed.get(&d.name) else {
            problems.push(format!("{} is missing", d.name));
            continue;
        };
        let shown = ingress(svc);
        let mine = owned
            .remove(&format!("{ns}/{}", d.name))
            .unwrap_or_default();
        if d.other {
            if has_finalizer(svc)
                || !shown.is_empty()
                || mine.target_groups > 0
                || !mine.load_balancers.is_empty()
            {
                problems.push(format!("{} is of another class but was touched", d.name));
            }
            continue;
        }
        let [(lb_name, dns)] = mine.load_balancers.as_slice() else {
            problems.push(format!(
                "{} has {} load balancers: {:?}",
                d.name,
                mine.load_balancers.len(),
                mine.load_balancers
            ));
            continue;
        };
        if shown != [dns.clone()] {
            problems.push(format!(
                "{} shows {shown:?}; its load balancer is {dns}",
                d.name
            ));
        }
        if mine.target_groups != d.ports.len() {
            problems.push(format!(
                "{} has {} target groups for {} ports",
                d.name,
                mine.target_groups,
                d.ports.len()
            ));
        }
        if let Some(wanted) = svc.annotations().get(AWS_NAME)
            && wanted != lb_name
        {
            problems.push(format!(
                "{} asks for load balancer {wanted}; it is {lb_name}",
                d.name
            ));
        }
        if !has_finalizer(svc) {
            problems.push(format!("{} has no finalizer", d.name));
        }
    }
    for (service, left) in owned {
        problems.push(format!("{service} has no Service but still owns {left:?}"));
    }
    Ok(problems)
}
