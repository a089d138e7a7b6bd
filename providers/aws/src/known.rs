//! What the provider remembers of each Service's last full ensure, and the
//! pure decision of how much the next ensure must read (pure).
//!
//! A full ensure (observe → plan → apply) leaves behind a [`Known`]: the
//! desired model it converged to, without targets, and the load balancer and
//! target groups it made, with the targets each holds. The next ensure of the
//! same Service compares its own desired model with that:
//!
//! - **same model, same targets** (a periodic resync): [`Path::Confirm`]; the
//!   load balancer and its target groups only need to be seen in the shared
//!   account snapshot ([`crate::snapshot`]), no per-Service call;
//! - **same model, other targets** (a node joined or left, an endpoint moved):
//!   [`Path::Targets`]; exactly the difference is registered and deregistered,
//!   one call per target group that changes, nothing read;
//! - anything else: [`Path::Full`].
//!
//! Drift below the snapshot's view (a listener or a target changed by hand) is
//! caught by a full ensure every [`DEEP_EVERY`] to `2 × DEEP_EVERY − 1`
//! resyncs of a Service, the number depending on the Service's key so that
//! Services made together do not all deep-observe in the same period.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::time::Instant;

use ferrolb_provider_api::ServiceKey;

use crate::apply::LbHandle;
use crate::model::{DesiredLoadBalancer, NlbProtocol, Target};
use crate::plan::{Action, TgRef};

/// A confirmed resync is followed by a full one after this many confirmed
/// resyncs at least (so about once an hour at the default 10-minute period).
pub const DEEP_EVERY: u32 = 6;

/// What the desired model depends on besides the targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The desired load balancer before subnets or security groups were
    /// resolved for a create, with every target group's targets removed.
    pub desired: DesiredLoadBalancer,
    /// The source ranges the nodes' security groups get rules for.
    pub ranges: Vec<ipnet::IpNet>,
}

impl Spec {
    pub fn of(desired: &DesiredLoadBalancer, ranges: &[ipnet::IpNet]) -> Spec {
        let mut desired = desired.clone();
        for tg in &mut desired.target_groups {
            tg.targets.clear();
        }
        Spec {
            desired,
            ranges: ranges.to_vec(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownTargetGroup {
    pub arn: String,
    pub name: String,
    pub port: u16,
    pub protocol: NlbProtocol,
    /// What it holds: after a full ensure, its desired targets.
    pub targets: BTreeSet<Target>,
}

/// What ferrolb last made for a Service.
#[derive(Clone, Debug)]
pub struct Known {
    pub lb: LbHandle,
    pub lb_name: String,
    pub target_groups: Vec<KnownTargetGroup>,
    /// Whether source-range rules exist for the Service.
    pub has_rules: bool,
    /// What the last full ensure converged to; `None` when the fast paths are
    /// off, and then every ensure is a full one.
    pub spec: Option<Spec>,
    /// When the last full ensure finished: an account snapshot taken before
    /// that may not show what it made.
    pub at: Instant,
    /// Confirmed resyncs left before the next full one.
    pub confirms_left: u32,
}

impl Known {
    pub fn target_group_arns(&self) -> Vec<String> {
        self.target_groups.iter().map(|t| t.arn.clone()).collect()
    }
}

/// Why an ensure takes the full path (a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FullReason {
    /// Nothing known: the first ensure since the controller started.
    Unknown,
    /// The fast paths are turned off.
    Disabled,
    /// The desired load balancer changed other than in its targets.
    Changed,
    /// Targets changed, and the source-range rules depend on the targets'
    /// security groups.
    Rules,
    /// Time for the periodic deep look.
    DeepCheck,
    /// The account snapshot did not show what is known.
    Drift,
    /// A target change failed (a target group gone, a target refused).
    TargetsFailed,
}

impl FullReason {
    pub fn label(self) -> &'static str {
        match self {
            FullReason::Unknown => "unknown",
            FullReason::Disabled => "disabled",
            FullReason::Changed => "changed",
            FullReason::Rules => "rules",
            FullReason::DeepCheck => "deep_check",
            FullReason::Drift => "drift",
            FullReason::TargetsFailed => "targets_failed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Path {
    Confirm,
    /// Register and deregister these (in this order), then done.
    Targets(Vec<Action>),
    Full(FullReason),
}

/// How the ensure of `desired` (with effective source ranges `ranges`)
/// proceeds, given what the last full ensure left.
pub fn decide(
    known: Option<&Known>,
    desired: &DesiredLoadBalancer,
    ranges: &[ipnet::IpNet],
) -> Path {
    let Some(known) = known else {
        return Path::Full(FullReason::Unknown);
    };
    let Some(spec) = &known.spec else {
        return Path::Full(FullReason::Disabled);
    };
    if *spec != Spec::of(desired, ranges) {
        return Path::Full(FullReason::Changed);
    }
    let mut register = Vec::new();
    let mut deregister = Vec::new();
    for want in &desired.target_groups {
        // The specs are equal, so the names are the ones the full ensure made.
        let Some(have) = known.target_groups.iter().find(|t| t.name == want.name) else {
            return Path::Full(FullReason::Changed);
        };
        let add: Vec<Target> = want.targets.difference(&have.targets).cloned().collect();
        let remove: Vec<Target> = have.targets.difference(&want.targets).cloned().collect();
        if !add.is_empty() {
            register.push(Action::RegisterTargets {
                tg: TgRef::Arn(have.arn.clone()),
                targets: add,
            });
        }
        if !remove.is_empty() {
            deregister.push(Action::DeregisterTargets {
                arn: have.arn.clone(),
                targets: remove,
            });
        }
    }
    if register.is_empty() && deregister.is_empty() {
        if known.confirms_left == 0 {
            return Path::Full(FullReason::DeepCheck);
        }
        return Path::Confirm;
    }
    if known.has_rules || !ranges.is_empty() {
        return Path::Full(FullReason::Rules);
    }
    register.extend(deregister);
    Path::Targets(register)
}

/// The known state after `actions` (from [`Path::Targets`]) succeeded.
pub fn with_targets(known: &Known, desired: &DesiredLoadBalancer) -> Known {
    let mut next = known.clone();
    for tg in &mut next.target_groups {
        if let Some(want) = desired.target_groups.iter().find(|d| d.name == tg.name) {
            tg.targets = want.targets.clone();
        }
    }
    next
}

/// Confirmed resyncs allowed after a full ensure of `key`: between
/// `DEEP_EVERY − 1` and `2 × DEEP_EVERY − 2`, fixed per key.
pub fn confirms_after_full(key: &ServiceKey) -> u32 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    let stagger = (h.finish() % u64::from(DEEP_EVERY)) as u32;
    DEEP_EVERY - 1 + stagger
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::annotations::{HcPort, HcProtocol, HealthCheck, IpAddressType, Scheme, TargetType};
    use crate::model::{DesiredListener, DesiredTargetGroup};

    fn target(id: &str) -> Target {
        Target {
            id: id.into(),
            port: 30080,
        }
    }

    fn health_check() -> HealthCheck {
        HealthCheck {
            protocol: HcProtocol::Tcp,
            port: HcPort::TrafficPort,
            path: None,
            interval_secs: 10,
            timeout_secs: 10,
            healthy_threshold: 3,
            unhealthy_threshold: 3,
            success_codes: None,
        }
    }

    fn desired(targets: &[&str]) -> DesiredLoadBalancer {
        let tgs = [("tg-80", 80), ("tg-443", 443)]
            .iter()
            .map(|(name, port)| DesiredTargetGroup {
                name: name.to_string(),
                service_port: *port,
                port: 30000 + port,
                protocol: NlbProtocol::Tcp,
                target_type: TargetType::Instance,
                health_check: health_check(),
                attributes: BTreeMap::new(),
                tags: BTreeMap::new(),
                targets: targets.iter().map(|t| target(t)).collect(),
            })
            .collect();
        DesiredLoadBalancer {
            name: "lb".into(),
            scheme: Scheme::InternetFacing,
            subnets: Vec::new(),
            eip_allocations: Vec::new(),
            private_ipv4_addresses: Vec::new(),
            ip_address_type: IpAddressType::Ipv4,
            security_groups: Vec::new(),
            attributes: BTreeMap::new(),
            tags: BTreeMap::new(),
            listeners: vec![DesiredListener {
                port: 80,
                protocol: NlbProtocol::Tcp,
                certificates: Vec::new(),
                ssl_policy: None,
                target_group: "tg-80".into(),
            }],
            target_groups: tgs,
        }
    }

    fn known(d: &DesiredLoadBalancer) -> Known {
        Known {
            lb: LbHandle {
                arn: "arn:lb".into(),
                dns_name: "lb.example".into(),
                addresses: Vec::new(),
            },
            lb_name: d.name.clone(),
            target_groups: d
                .target_groups
                .iter()
                .map(|t| KnownTargetGroup {
                    arn: format!("arn:{}", t.name),
                    name: t.name.clone(),
                    port: t.port,
                    protocol: t.protocol,
                    targets: t.targets.clone(),
                })
                .collect(),
            has_rules: false,
            spec: Some(Spec::of(d, &[])),
            at: Instant::now(),
            confirms_left: 3,
        }
    }

    #[test]
    fn an_unchanged_service_is_confirmed_until_the_deep_check_is_due() {
        let d = desired(&["i-1", "i-2"]);
        let mut k = known(&d);
        assert_eq!(decide(Some(&k), &d, &[]), Path::Confirm);
        k.confirms_left = 0;
        assert_eq!(decide(Some(&k), &d, &[]), Path::Full(FullReason::DeepCheck));
    }

    #[test]
    fn nothing_known_or_the_cache_off_means_a_full_ensure() {
        let d = desired(&["i-1"]);
        assert_eq!(decide(None, &d, &[]), Path::Full(FullReason::Unknown));
        let mut k = known(&d);
        k.spec = None;
        assert_eq!(decide(Some(&k), &d, &[]), Path::Full(FullReason::Disabled));
    }

    #[test]
    fn a_target_change_registers_and_deregisters_exactly_the_difference() {
        let before = desired(&["i-1", "i-2"]);
        let k = known(&before);
        let after = desired(&["i-2", "i-3"]);
        let Path::Targets(actions) = decide(Some(&k), &after, &[]) else {
            panic!("expected a targets-only path");
        };
        // Registers first, then deregisters; one of each per target group.
        assert_eq!(
            actions,
            vec![
                Action::RegisterTargets {
                    tg: TgRef::Arn("arn:tg-80".into()),
                    targets: vec![target("i-3")],
                },
                Action::RegisterTargets {
                    tg: TgRef::Arn("arn:tg-443".into()),
                    targets: vec![target("i-3")],
                },
                Action::DeregisterTargets {
                    arn: "arn:tg-80".into(),
                    targets: vec![target("i-1")],
                },
                Action::DeregisterTargets {
                    arn: "arn:tg-443".into(),
                    targets: vec![target("i-1")],
                },
            ]
        );
        // Afterwards the known targets are the new ones, and nothing is left to do.
        let next = with_targets(&k, &after);
        assert_eq!(decide(Some(&next), &after, &[]), Path::Confirm);
        assert_eq!(next.at, k.at, "a target change confirms no ARN");
    }

    #[test]
    fn only_the_target_groups_that_change_get_a_call() {
        let before = desired(&["i-1"]);
        let k = known(&before);
        let mut after = before.clone();
        after.target_groups[1].targets.insert(target("i-9"));
        assert_eq!(
            decide(Some(&k), &after, &[]),
            Path::Targets(vec![Action::RegisterTargets {
                tg: TgRef::Arn("arn:tg-443".into()),
                targets: vec![target("i-9")],
            }])
        );
    }

    #[test]
    fn any_other_change_means_a_full_ensure() {
        let d = desired(&["i-1"]);
        let k = known(&d);
        let mut other = d.clone();
        other.target_groups[0].health_check.interval_secs += 5;
        assert_eq!(
            decide(Some(&k), &other, &[]),
            Path::Full(FullReason::Changed)
        );
        let mut other = d.clone();
        other.listeners[0].port = 8080;
        assert_eq!(
            decide(Some(&k), &other, &[]),
            Path::Full(FullReason::Changed)
        );
        let range: ipnet::IpNet = "10.0.0.0/8".parse().unwrap();
        assert_eq!(
            decide(Some(&k), &d, &[range]),
            Path::Full(FullReason::Changed)
        );
    }

    #[test]
    fn target_changes_with_source_range_rules_take_the_full_path() {
        // The rules go on the targets' security groups, which only the full
        // path reads.
        let range: ipnet::IpNet = "10.0.0.0/8".parse().unwrap();
        let d = desired(&["i-1"]);
        let mut k = known(&d);
        k.spec = Some(Spec::of(&d, &[range]));
        k.has_rules = true;
        assert_eq!(decide(Some(&k), &d, &[range]), Path::Confirm);
        let after = desired(&["i-1", "i-2"]);
        assert_eq!(
            decide(Some(&k), &after, &[range]),
            Path::Full(FullReason::Rules)
        );
    }

    #[test]
    fn deep_checks_are_staggered_but_never_on_the_first_resync() {
        let counts: BTreeSet<u32> = (0..50)
            .map(|i| confirms_after_full(&ServiceKey::new("ns", format!("svc-{i}"))))
            .collect();
        assert!(
            counts
                .iter()
                .all(|c| (DEEP_EVERY - 1..=2 * DEEP_EVERY - 2).contains(c))
        );
        assert!(counts.len() > 1, "the keys spread over several counts");
        let key = ServiceKey::new("ns", "web");
        assert_eq!(confirms_after_full(&key), confirms_after_full(&key));
    }
}
