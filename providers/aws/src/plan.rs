//! The diff between the desired load balancer and what exists (pure).
//!
//! The plan is a list of actions in an order that never leaves a listener
//! without its target group nor a target group without its targets:
//! create the load balancer, create target groups and register their targets,
//! point listeners at them, then take away what is no longer wanted
//! (deregister, delete listeners, delete target groups). Anything not in the
//! plan is not touched, so an unchanged Service plans nothing.

use std::collections::{BTreeMap, BTreeSet};

use crate::annotations::{HealthCheck, TargetType};
use crate::model::{DesiredLoadBalancer, DesiredTargetGroup, NlbProtocol, Target};

/// What exists of one Service's load balancer (found by tags).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub load_balancer: Option<ObservedLoadBalancer>,
    pub listeners: Vec<ObservedListener>,
    pub target_groups: Vec<ObservedTargetGroup>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedLoadBalancer {
    pub arn: String,
    pub name: String,
    pub dns_name: String,
    /// Its Elastic IPs or requested private addresses, if it has any.
    pub addresses: Vec<std::net::IpAddr>,
    /// The subnets it lives in.
    pub subnets: Vec<String>,
    pub tags: BTreeMap<String, String>,
    /// Only read when the desired load balancer sets attributes.
    pub attributes: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedListener {
    pub arn: String,
    pub port: u16,
    pub protocol: Option<NlbProtocol>,
    /// The default certificate first, then the listener's other (SNI)
    /// certificates; those are only read for TLS listeners.
    pub certificates: Vec<String>,
    pub ssl_policy: Option<String>,
    /// The target group it forwards to.
    pub target_group_arn: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedTargetGroup {
    pub arn: String,
    pub name: String,
    pub port: u16,
    pub protocol: Option<NlbProtocol>,
    pub target_type: Option<TargetType>,
    pub health_check: HealthCheck,
    pub tags: BTreeMap<String, String>,
    /// Only read when the desired target group sets attributes.
    pub attributes: Option<BTreeMap<String, String>>,
    pub targets: BTreeSet<Target>,
}

/// A target group the plan refers to: one that exists, or one created earlier
/// in the same plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TgRef {
    Arn(String),
    New(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    CreateLoadBalancer,
    SetLoadBalancerAttributes(BTreeMap<String, String>),
    AddLoadBalancerTags(BTreeMap<String, String>),
    CreateTargetGroup(String),
    ModifyHealthCheck {
        arn: String,
        health_check: HealthCheck,
    },
    SetTargetGroupAttributes {
        tg: TgRef,
        attributes: BTreeMap<String, String>,
    },
    RegisterTargets {
        tg: TgRef,
        targets: Vec<Target>,
    },
    CreateListener {
        port: u16,
        tg: TgRef,
    },
    ModifyListener {
        arn: String,
        port: u16,
        tg: TgRef,
    },
    /// A listener's certificates beyond its default one (for SNI).
    ChangeListenerCertificates {
        arn: String,
        add: Vec<String>,
        remove: Vec<String>,
    },
    DeregisterTargets {
        arn: String,
        targets: Vec<Target>,
    },
    DeleteListener {
        arn: String,
    },
    DeleteTargetGroup {
        arn: String,
    },
}

/// The actions that make `observed` match `desired`.
pub fn plan(desired: &DesiredLoadBalancer, observed: &Observed) -> Vec<Action> {
    let mut first = Vec::new();
    let mut last = Vec::new();

    match &observed.load_balancer {
        None => {
            first.push(Action::CreateLoadBalancer);
            if !desired.attributes.is_empty() {
                first.push(Action::SetLoadBalancerAttributes(
                    desired.attributes.clone(),
                ));
            }
        }
        Some(lb) => {
            let missing = changed_entries(&desired.attributes, lb.attributes.as_ref());
            if !missing.is_empty() {
                first.push(Action::SetLoadBalancerAttributes(missing));
            }
            let tags = changed_entries(&desired.tags, Some(&lb.tags));
            if !tags.is_empty() {
                first.push(Action::AddLoadBalancerTags(tags));
            }
        }
    }

    // Target groups are matched by name: the name hashes everything that
    // cannot change in place (port, protocol, target type).
    let observed_tgs: BTreeMap<&str, &ObservedTargetGroup> = observed
        .target_groups
        .iter()
        .map(|tg| (tg.name.as_str(), tg))
        .collect();
    let mut tg_refs: BTreeMap<&str, TgRef> = BTreeMap::new();
    for tg in &desired.target_groups {
        match observed_tgs.get(tg.name.as_str()) {
            None => {
                first.push(Action::CreateTargetGroup(tg.name.clone()));
                let r = TgRef::New(tg.name.clone());
                if !tg.attributes.is_empty() {
                    first.push(Action::SetTargetGroupAttributes {
                        tg: r.clone(),
                        attributes: tg.attributes.clone(),
                    });
                }
                if !tg.targets.is_empty() {
                    first.push(Action::RegisterTargets {
                        tg: r.clone(),
                        targets: tg.targets.iter().cloned().collect(),
                    });
                }
                tg_refs.insert(&tg.name, r);
            }
            Some(seen) => {
                let r = TgRef::Arn(seen.arn.clone());
                plan_existing_target_group(tg, seen, &mut first, &mut last);
                tg_refs.insert(&tg.name, r);
            }
        }
    }

    let observed_listeners: BTreeMap<u16, &ObservedListener> =
        observed.listeners.iter().map(|l| (l.port, l)).collect();
    let wanted_tg_arns: BTreeSet<&str> = tg_refs
        .values()
        .filter_map(|r| match r {
            TgRef::Arn(a) => Some(a.as_str()),
            TgRef::New(_) => None,
        })
        .collect();
    for l in &desired.listeners {
        let tg = tg_refs[l.target_group.as_str()].clone();
        match observed_listeners.get(&l.port) {
            None => first.push(Action::CreateListener { port: l.port, tg }),
            Some(seen) => {
                let same_tg =
                    matches!(&tg, TgRef::Arn(a) if seen.target_group_arn.as_deref() == Some(a));
                let same = same_tg
                    && seen.protocol == Some(l.protocol)
                    && seen.certificates.first() == l.certificates.first()
                    && (l.ssl_policy.is_none() || seen.ssl_policy == l.ssl_policy);
                if !same {
                    first.push(Action::ModifyListener {
                        arn: seen.arn.clone(),
                        port: l.port,
                        tg,
                    });
                }
                let extra =
                    |c: &[String]| -> BTreeSet<String> { c.iter().skip(1).cloned().collect() };
                let (want, have) = (extra(&l.certificates), extra(&seen.certificates));
                if want != have {
                    first.push(Action::ChangeListenerCertificates {
                        arn: seen.arn.clone(),
                        add: want.difference(&have).cloned().collect(),
                        remove: have.difference(&want).cloned().collect(),
                    });
                }
            }
        }
    }
    let desired_ports: BTreeSet<u16> = desired.listeners.iter().map(|l| l.port).collect();
    for l in &observed.listeners {
        if !desired_ports.contains(&l.port) {
            last.push(Action::DeleteListener { arn: l.arn.clone() });
        }
    }
    for tg in &observed.target_groups {
        if !wanted_tg_arns.contains(tg.arn.as_str()) {
            last.push(Action::DeleteTargetGroup {
                arn: tg.arn.clone(),
            });
        }
    }

    first.extend(last);
    first
}

fn plan_existing_target_group(
    tg: &DesiredTargetGroup,
    seen: &ObservedTargetGroup,
    first: &mut Vec<Action>,
    last: &mut Vec<Action>,
) {
    if seen.health_check != tg.health_check {
        first.push(Action::ModifyHealthCheck {
            arn: seen.arn.clone(),
            health_check: tg.health_check.clone(),
        });
    }
    let attrs = changed_entries(&tg.attributes, seen.attributes.as_ref());
    if !attrs.is_empty() {
        first.push(Action::SetTargetGroupAttributes {
            tg: TgRef::Arn(seen.arn.clone()),
            attributes: attrs,
        });
    }
    let add: Vec<Target> = tg.targets.difference(&seen.targets).cloned().collect();
    if !add.is_empty() {
        first.push(Action::RegisterTargets {
            tg: TgRef::Arn(seen.arn.clone()),
            targets: add,
        });
    }
    let remove: Vec<Target> = seen.targets.difference(&tg.targets).cloned().collect();
    if !remove.is_empty() {
        last.push(Action::DeregisterTargets {
            arn: seen.arn.clone(),
            targets: remove,
        });
    }
}

/// The entries of `want` that `have` lacks or holds with another value.
fn changed_entries(
    want: &BTreeMap<String, String>,
    have: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    want.iter()
        .filter(|(k, v)| have.and_then(|h| h.get(*k)) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}
