//! One view of the account's load balancers and target groups, shared by
//! every Service's resync and by the sweep for leftovers.
//!
//! Listing the account costs `ceil(LBs / 400) + ceil(TGs / 400)` reads; the
//! view is taken at most once at a time (callers that arrive while it is
//! being read wait for that read) and is reused for [`MAX_AGE`]. A resync
//! only uses it to confirm what [`Known`] already says: the load balancer and
//! each target group are there under the same ARNs, the load balancer is
//! active and the groups still belong to it with the same port and protocol.
//! It never decides what is ours; tags do (see [`crate::observe`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_elasticloadbalancingv2::types::{LoadBalancer, TargetGroup};

use crate::cloud::{CallError, Cloud};
use crate::known::Known;
use crate::model::NlbProtocol;

/// DescribeLoadBalancers and DescribeTargetGroups return at most this many
/// per page.
pub const PAGE_SIZE: i32 = 400;
/// How long a view is reused. A load balancer deleted by hand is noticed by
/// the first resync after a view newer than the deletion.
pub const MAX_AGE: Duration = Duration::from_secs(300);
/// How old a view the sweep for leftovers takes: a leftover is found at
/// most this much later.
pub const SWEEP_MAX_AGE: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenLoadBalancer {
    pub name: String,
    pub dns_name: String,
    pub state: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenTargetGroup {
    pub name: String,
    pub port: u16,
    pub protocol: Option<NlbProtocol>,
    /// The load balancers whose listeners forward to it.
    pub load_balancers: Vec<String>,
}

/// What the account held when the listing started, by ARN.
#[derive(Clone, Debug)]
pub struct Account {
    pub taken: Instant,
    pub load_balancers: BTreeMap<String, SeenLoadBalancer>,
    pub target_groups: BTreeMap<String, SeenTargetGroup>,
}

impl Account {
    pub fn arns(&self) -> impl Iterator<Item = &String> {
        self.load_balancers.keys().chain(self.target_groups.keys())
    }

    /// Whether a load balancer of this name was in the account (names are
    /// unique in a region).
    pub fn has_load_balancer_named(&self, name: &str) -> bool {
        self.load_balancers.values().any(|lb| lb.name == name)
    }
}

/// Whether `account` shows everything `known` says; otherwise what differs.
pub fn confirms(account: &Account, known: &Known) -> Result<(), String> {
    let Some(lb) = account.load_balancers.get(&known.lb.arn) else {
        return Err(format!("load balancer {} is gone", known.lb.arn));
    };
    if lb.name != known.lb_name || lb.dns_name != known.lb.dns_name {
        return Err(format!(
            "load balancer {} is not the one known",
            known.lb.arn
        ));
    }
    if lb.state.as_deref() != Some("active") {
        return Err(format!(
            "load balancer {} is {}",
            known.lb.arn,
            lb.state.as_deref().unwrap_or("in no state")
        ));
    }
    for tg in &known.target_groups {
        let Some(seen) = account.target_groups.get(&tg.arn) else {
            return Err(format!("target group {} is gone", tg.arn));
        };
        if seen.name != tg.name || seen.port != tg.port || seen.protocol != Some(tg.protocol) {
            return Err(format!("target group {} changed", tg.arn));
        }
        if !seen.load_balancers.contains(&known.lb.arn) {
            return Err(format!(
                "target group {} is no longer used by its load balancer",
                tg.arn
            ));
        }
    }
    Ok(())
}

/// The shared view, read once at a time.
pub struct Snapshots {
    cloud: Cloud,
    current: tokio::sync::Mutex<Option<Arc<Account>>>,
}

impl Snapshots {
    pub fn new(cloud: &Cloud) -> Self {
        Snapshots {
            cloud: cloud.clone(),
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// A view whose listing started after `after` and is younger than
    /// [`MAX_AGE`]: the one held, or a new one.
    pub async fn since(&self, after: Instant) -> Result<Arc<Account>, CallError> {
        let mut current = self.current.lock().await;
        if let Some(a) = current
            .as_ref()
            .filter(|a| a.taken >= after && a.taken.elapsed() < MAX_AGE)
        {
            return Ok(a.clone());
        }
        let account = Arc::new(list(&self.cloud).await?);
        *current = Some(account.clone());
        Ok(account)
    }

    /// A view at most `age` old.
    pub async fn recent(&self, age: Duration) -> Result<Arc<Account>, CallError> {
        let after = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        self.since(after).await
    }
}

/// Lists every load balancer and target group of the account, 400 a page.
pub async fn list(cloud: &Cloud) -> Result<Account, CallError> {
    let taken = Instant::now();
    let mut load_balancers = BTreeMap::new();
    let mut pages = cloud
        .elbv2
        .describe_load_balancers()
        .page_size(PAGE_SIZE)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = cloud
            .elb("DescribeLoadBalancers", std::future::ready(page))
            .await?;
        load_balancers.extend(page.load_balancers().iter().filter_map(seen_lb));
    }
    let mut target_groups = BTreeMap::new();
    let mut pages = cloud
        .elbv2
        .describe_target_groups()
        .page_size(PAGE_SIZE)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = cloud
            .elb("DescribeTargetGroups", std::future::ready(page))
            .await?;
        target_groups.extend(page.target_groups().iter().filter_map(seen_tg));
    }
    Ok(Account {
        taken,
        load_balancers,
        target_groups,
    })
}

fn seen_lb(lb: &LoadBalancer) -> Option<(String, SeenLoadBalancer)> {
    Some((
        lb.load_balancer_arn()?.to_string(),
        SeenLoadBalancer {
            name: lb.load_balancer_name().unwrap_or_default().to_string(),
            dns_name: lb.dns_name().unwrap_or_default().to_string(),
            state: lb
                .state()
                .and_then(|s| s.code())
                .map(|c| c.as_str().to_string()),
        },
    ))
}

fn seen_tg(tg: &TargetGroup) -> Option<(String, SeenTargetGroup)> {
    Some((
        tg.target_group_arn()?.to_string(),
        SeenTargetGroup {
            name: tg.target_group_name().unwrap_or_default().to_string(),
            port: tg
                .port()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or_default(),
            protocol: tg.protocol().and_then(|p| NlbProtocol::parse(p.as_str())),
            load_balancers: tg.load_balancer_arns().to_vec(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::apply::LbHandle;
    use crate::known::KnownTargetGroup;

    fn known() -> Known {
        Known {
            lb: LbHandle {
                arn: "arn:lb".into(),
                dns_name: "lb.example".into(),
                addresses: Vec::new(),
            },
            lb_name: "lb".into(),
            target_groups: vec![KnownTargetGroup {
                arn: "arn:tg".into(),
                name: "tg".into(),
                port: 30080,
                protocol: NlbProtocol::Tcp,
                targets: BTreeSet::new(),
            }],
            has_rules: false,
            spec: None,
            at: Instant::now(),
            confirms_left: 1,
        }
    }

    fn account() -> Account {
        Account {
            taken: Instant::now(),
            load_balancers: [(
                "arn:lb".to_string(),
                SeenLoadBalancer {
                    name: "lb".into(),
                    dns_name: "lb.example".into(),
                    state: Some("active".into()),
                },
            )]
            .into(),
            target_groups: [(
                "arn:tg".to_string(),
                SeenTargetGroup {
                    name: "tg".into(),
                    port: 30080,
                    protocol: Some(NlbProtocol::Tcp),
                    load_balancers: vec!["arn:lb".into()],
                },
            )]
            .into(),
        }
    }

    #[test]
    fn the_account_confirms_what_is_known() {
        assert_eq!(confirms(&account(), &known()), Ok(()));
    }

    #[test]
    fn anything_missing_or_different_is_not_confirmed() {
        let k = known();
        type Change = Box<dyn Fn(&mut Account)>;
        let cases: Vec<(&str, Change)> = vec![
            ("lb gone", Box::new(|a| a.load_balancers.clear())),
            (
                "lb provisioning",
                Box::new(|a| {
                    a.load_balancers.get_mut("arn:lb").unwrap().state = Some("provisioning".into())
                }),
            ),
            (
                "lb renamed",
                Box::new(|a| a.load_balancers.get_mut("arn:lb").unwrap().name = "other".into()),
            ),
            ("tg gone", Box::new(|a| a.target_groups.clear())),
            (
                "tg port",
                Box::new(|a| a.target_groups.get_mut("arn:tg").unwrap().port = 30081),
            ),
            (
                "tg protocol",
                Box::new(|a| {
                    a.target_groups.get_mut("arn:tg").unwrap().protocol = Some(NlbProtocol::Udp)
                }),
            ),
            (
                "listener gone",
                Box::new(|a| {
                    a.target_groups
                        .get_mut("arn:tg")
                        .unwrap()
                        .load_balancers
                        .clear()
                }),
            ),
        ];
        for (what, change) in cases {
            let mut a = account();
            change(&mut a);
            assert!(confirms(&a, &k).is_err(), "{what}");
        }
    }
}
