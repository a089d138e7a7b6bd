//! The cloud-faults scenario, shared by `tests/aws_faults.rs` and `examples/aws_faults.rs`:
//! ferrolb against moto through a [`FaultProxy`], Services created, changed and deleted,
//! and what the account shows at the end checked against what the Services ask for.
//!
//! 1. Look-alikes are planted first, none with our tags: a load balancer and a target
//!    group named in ferrolb's shape (one with a listener and a target), and a target
//!    group tagged for this Service key but another cluster.
//! 2. `services` Services of two TCP ports on `nodes` nodes, every other one with a
//!    source range (so security-group rules are written too), are created at once;
//!    converged when every one shows its NLB's DNS name and the account has, per
//!    Service, exactly one NLB with one listener per port, each forwarding to a target
//!    group of the Service holding every node at that port's nodePort, plus the
//!    source-range rules on the nodes' group.
//! 3. `changed` Services move their second port (443 → 8443) and flip their source
//!    range on or off; `deleted` others are deleted. Converged as above, with nothing
//!    left of the deleted ones.
//!
//! After each phase the calls are left to settle, and counted at the proxy (attempts,
//! faults) and in ferrolb's own metrics (operations after the SDK's retries,
//! reconciles by outcome).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_sdk_elasticloadbalancingv2::Client as Elb;
use aws_sdk_elasticloadbalancingv2::types::{
    Action as ElbAction, ActionTypeEnum, LoadBalancerTypeEnum, ProtocolEnum, Tag, TargetDescription,
};
use ferrolb_e2e::fault_proxy::{Counts, FaultProxy, Faults};
use ferrolb_e2e::moto::{Instance, Moto, Seed};
use ferrolb_e2e::plain_http::samples;
use ferrolb_e2e::{FerrolbProcess, fixtures, wait_for};
use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, ListParams, PostParams};

use super::{Env, free_port, http_get};

pub const CLUSTER: &str = "e2e";
pub const CLASS: &str = "ferrolb.io/aws";
const ZONES: [&str; 2] = ["us-east-1a", "us-east-1b"];
/// Every Service's ports; a changed Service moves the second one to [`MOVED_PORT`].
pub const PORTS: [i32; 2] = [80, 443];
const MOVED_PORT: i32 = 8443;
const SOURCE_RANGE: &str = "203.0.113.0/24";
/// The SDK gives up on an attempt after this long; what the proxy's "timeouts" cost.
const CALL_TIMEOUT: &str = "5s";
/// Calls have settled when the proxy has seen none for this long.
const QUIET: Duration = Duration::from_secs(10);
const CHECK_INTERVAL: Duration = Duration::from_secs(3);

/// One run's shape.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub services: usize,
    pub nodes: usize,
    /// Services whose ports and source range change in the second phase.
    pub changed: usize,
    /// Services deleted in the second phase (the last ones).
    pub deleted: usize,
    pub faults: Faults,
    /// The bound on each phase's convergence, and on the calls settling after it.
    pub wait: Duration,
}

/// What one phase took.
#[derive(Clone, Debug, Default)]
pub struct Phase {
    /// From the first write to the apiserver until the account matched.
    pub converged_after: Duration,
    /// Requests and faults at the proxy, until the calls settled.
    pub proxy: Counts,
    /// ferrolb's `ferrolb_aws_calls_total` by operation: calls as the provider made
    /// them, each counting once however many attempts the SDK made.
    pub operations: BTreeMap<String, u64>,
    /// ferrolb's `ferrolb_reconciles_total` by outcome.
    pub reconciles: BTreeMap<String, u64>,
}

impl Phase {
    pub fn failed_reconciles(&self) -> u64 {
        self.reconciles
            .iter()
            .filter(|(o, _)| *o != "success")
            .map(|(_, n)| n)
            .sum()
    }
}

#[derive(Debug)]
pub struct Report {
    pub create: Phase,
    pub change: Phase,
    /// Problems found in the account after the last phase (leaks, duplicates, touched
    /// look-alikes); empty when all is well.
    pub problems: Vec<String>,
}

/// Runs the scenario; the controller's log is attached to an error.
pub async fn run(sc: &Scenario) -> Result<Report> {
    let env = Env::start().await?;
    let moto = Moto::start().await?;
    let seed = moto.seed(CLUSTER, &ZONES).await?;
    let elb = Elb::new(&moto.sdk_config().await);
    let ec2 = aws_sdk_ec2::Client::new(&moto.sdk_config().await);
    let mut nodes = Vec::new();
    for n in 0..sc.nodes {
        nodes.push(
            moto.run_node(&env.client, &seed, &format!("node-{n}"), ZONES[n % 2])
                .await?,
        );
    }
    let account = Account {
        elb,
        ec2,
        seed,
        nodes,
        ns: env.ns.clone(),
    };
    let lookalikes = account.plant_lookalikes().await?;
    let proxy = FaultProxy::start(&moto, sc.faults.clone()).await?;
    let metrics_port = free_port();
    let ctl = controller(&env, &proxy, &moto, metrics_port)?;
    let run = Run {
        sc,
        env: &env,
        account: &account,
        proxy: &proxy,
        metrics_port,
    };
    let result = async {
        wait_for("the controller's metrics", sc.wait, || async {
            Ok(run.metrics().await.ok())
        })
        .await?;
        run.phases(&lookalikes).await
    }
    .await;
    result.map_err(|e| {
        let log = ctl.log();
        let tail: Vec<&str> = log.lines().rev().take(80).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        e.context(format!(
            "proxy saw {:?}\ncontroller log (last 80 lines):\n{}",
            proxy.counts(),
            tail.join("\n")
        ))
    })
}

fn controller(
    env: &Env,
    proxy: &FaultProxy,
    moto: &Moto,
    metrics_port: u16,
) -> Result<FerrolbProcess> {
    let addr = format!("127.0.0.1:{metrics_port}");
    FerrolbProcess::spawn_aws_controller(
        &env.cp,
        &proxy.env(moto),
        CLUSTER,
        &addr,
        &[
            "--aws-call-timeout",
            CALL_TIMEOUT,
            "--log",
            "info,ferrolb_aws=debug",
        ],
    )
}

struct Run<'a> {
    sc: &'a Scenario,
    env: &'a Env,
    account: &'a Account,
    proxy: &'a FaultProxy,
    metrics_port: u16,
}

impl Run<'_> {
    async fn phases(&self, lookalikes: &[Lookalike]) -> Result<Report> {
        let api = self.env.services();
        let create = self
            .phase("create", || async {
                for i in 0..self.sc.services {
                    let mut svc =
                        fixtures::lb_service(&self.env.ns, &name(i), &[("TCP", 80), ("TCP", 443)]);
                    let spec = svc.spec.as_mut().expect("a spec");
                    spec.load_balancer_class = Some(CLASS.into());
                    if i % 2 == 0 {
                        spec.load_balancer_source_ranges = Some(vec![SOURCE_RANGE.into()]);
                    }
                    api.create(&PostParams::default(), &svc).await?;
                }
                Ok(())
            })
            .await?;
        let change = self
            .phase("change", || async {
                for i in 0..self.sc.changed {
                    let mut svc = api.get(&name(i)).await?;
                    let spec = svc.spec.as_mut().expect("a spec");
                    for p in spec.ports.iter_mut().flatten() {
                        if p.port == PORTS[1] {
                            p.port = MOVED_PORT;
                            p.name = Some(format!("tcp-{MOVED_PORT}"));
                            p.node_port = None;
                        }
                    }
                    spec.load_balancer_source_ranges = if i % 2 == 0 {
                        None
                    } else {
                        Some(vec![SOURCE_RANGE.into()])
                    };
                    api.replace(&name(i), &PostParams::default(), &svc).await?;
                }
                for i in self.sc.services - self.sc.deleted..self.sc.services {
                    api.delete(&name(i), &DeleteParams::default()).await?;
                }
                Ok(())
            })
            .await?;
        let mut problems = self.account.problems(&self.wanted().await?).await?;
        problems.extend(self.account.touched(lookalikes).await?);
        Ok(Report {
            create,
            change,
            problems,
        })
    }

    /// Runs `writes`, waits (bounded) until the account matches the Services, then until
    /// the calls settle, and counts what it took.
    async fn phase<F, Fut>(&self, what: &str, writes: F) -> Result<Phase>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let proxy_before = self.proxy.counts();
        let (ops_before, rec_before) = self.metrics().await?;
        let started = Instant::now();
        writes().await?;
        let last = RefCell::new(Vec::new());
        let converged = wait_for(
            &format!("the {what} phase to converge"),
            self.sc.wait,
            || {
                let last = &last;
                async move {
                    tokio::time::sleep(CHECK_INTERVAL).await;
                    let wanted = self.wanted().await?;
                    let waiting: Vec<String> = wanted
                        .iter()
                        .filter(|(_, w)| w.hostname.is_none() || w.deleting)
                        .map(|(name, w)| {
                            let what = if w.deleting {
                                "being deleted"
                            } else {
                                "no hostname"
                            };
                            format!("{name}: {what}")
                        })
                        .collect();
                    if !waiting.is_empty() {
                        *last.borrow_mut() = waiting;
                        return Ok(None);
                    }
                    let problems = self.account.problems(&wanted).await?;
                    let done = problems.is_empty();
                    *last.borrow_mut() = problems;
                    Ok(done.then_some(()))
                }
            },
        )
        .await;
        if let Err(e) = converged {
            return Err(e.context(format!("what was still wrong: {:#?}", last.borrow())));
        }
        let converged_after = started.elapsed();
        self.settle().await?;
        let (ops, rec) = self.metrics().await?;
        Ok(Phase {
            converged_after,
            proxy: self.proxy.counts().since(&proxy_before),
            operations: diff(&ops, &ops_before),
            reconciles: diff(&rec, &rec_before),
        })
    }

    /// Waits (bounded) until the proxy has seen no request for [`QUIET`]: no reconcile is
    /// still retrying.
    async fn settle(&self) -> Result<()> {
        let deadline = Instant::now() + self.sc.wait;
        let mut last = self.proxy.counts().total_requests();
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < QUIET {
            if Instant::now() > deadline {
                bail!(
                    "AWS calls did not settle within {:?}: {:?}",
                    self.sc.wait,
                    self.proxy.counts()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = self.proxy.counts().total_requests();
            if now != last {
                last = now;
                quiet_since = Instant::now();
            }
        }
        Ok(())
    }

    /// ferrolb's AWS operations and its reconciles, by operation and by outcome.
    async fn metrics(&self) -> Result<(BTreeMap<String, u64>, BTreeMap<String, u64>)> {
        let (_, body) = http_get(self.metrics_port, "/metrics").await?;
        let (mut ops, mut reconciles) = (BTreeMap::new(), BTreeMap::new());
        for s in samples(&body) {
            match s.name {
                "ferrolb_aws_calls_total" => {
                    *ops.entry(s.label("operation")).or_default() += s.value as u64;
                }
                "ferrolb_reconciles_total" => {
                    *reconciles.entry(s.label("outcome")).or_default() += s.value as u64;
                }
                _ => {}
            }
        }
        Ok((ops, reconciles))
    }

    /// What each of our Services asks for, by name.
    async fn wanted(&self) -> Result<BTreeMap<String, Wanted>> {
        let list = self.env.services().list(&ListParams::default()).await?;
        Ok(list
            .items
            .iter()
            .filter(|s| {
                s.spec
                    .as_ref()
                    .and_then(|s| s.load_balancer_class.as_deref())
                    == Some(CLASS)
            })
            .map(|s| (s.metadata.name.clone().unwrap_or_default(), Wanted::of(s)))
            .collect())
    }
}

fn name(i: usize) -> String {
    format!("svc-{i:02}")
}

fn diff(now: &BTreeMap<String, u64>, then: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    now.iter()
        .map(|(k, v)| (k.clone(), v - then.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// What one Service asks of the account.
#[derive(Debug)]
struct Wanted {
    /// Service port → nodePort.
    ports: BTreeMap<i32, i32>,
    ranges: bool,
    hostname: Option<String>,
    deleting: bool,
}

impl Wanted {
    fn of(svc: &Service) -> Wanted {
        let spec = svc.spec.as_ref();
        Wanted {
            ports: spec
                .and_then(|s| s.ports.as_ref())
                .into_iter()
                .flatten()
                .map(|p| (p.port, p.node_port.unwrap_or_default()))
                .collect(),
            ranges: spec
                .and_then(|s| s.load_balancer_source_ranges.as_ref())
                .is_some_and(|r| !r.is_empty()),
            hostname: svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .and_then(|i| i.iter().find_map(|i| i.hostname.clone())),
            deleting: svc.metadata.deletion_timestamp.is_some(),
        }
    }
}

/// The account, read straight from moto (not through the proxy).
struct Account {
    elb: Elb,
    ec2: aws_sdk_ec2::Client,
    seed: Seed,
    nodes: Vec<Instance>,
    ns: String,
}

/// A resource planted before the controller starts, and what it looked like.
#[derive(Debug, PartialEq, Eq)]
struct Lookalike {
    arn: String,
    state: String,
}

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

impl Account {
    /// Resources named like ferrolb's but without its tags (or with another cluster's).
    async fn plant_lookalikes(&self) -> Result<Vec<Lookalike>> {
        let name = format!("k8s-{}-svc-00-0123456789", self.ns);
        let subnet = self
            .seed
            .public_subnets
            .values()
            .next()
            .context("a subnet")?;
        let lb = self
            .elb
            .create_load_balancer()
            .name(&name)
            .r#type(LoadBalancerTypeEnum::Network)
            .subnets(subnet)
            .send()
            .await?;
        let lb = lb.load_balancers()[0]
            .load_balancer_arn()
            .context("an ARN")?
            .to_string();
        let mut arns = vec![lb.clone()];
        for (name, tags) in [
            (name.clone(), vec![]),
            (
                format!("k8s-{}-svc-01-abcdef0123", self.ns),
                vec![
                    tag("ferrolb.io/cluster", "another-cluster"),
                    tag("ferrolb.io/service", &format!("{}/svc-01", self.ns)),
                    tag("ferrolb.io/role", "target-group"),
                ],
            ),
        ] {
            let tg = self
                .elb
                .create_target_group()
                .name(name)
                .protocol(ProtocolEnum::Tcp)
                .port(30080)
                .vpc_id(&self.seed.vpc_id)
                .set_tags(Some(tags).filter(|t| !t.is_empty()))
                .send()
                .await?;
            let tg = tg.target_groups()[0]
                .target_group_arn()
                .context("an ARN")?
                .to_string();
            self.elb
                .register_targets()
                .target_group_arn(&tg)
                .targets(
                    TargetDescription::builder()
                        .id(&self.nodes[0].id)
                        .port(30080)
                        .build(),
                )
                .send()
                .await?;
            arns.push(tg);
        }
        self.elb
            .create_listener()
            .load_balancer_arn(&lb)
            .protocol(ProtocolEnum::Tcp)
            .port(80)
            .default_actions(
                ElbAction::builder()
                    .r#type(ActionTypeEnum::Forward)
                    .target_group_arn(&arns[1])
                    .build(),
            )
            .send()
            .await?;
        let mut out = Vec::new();
        for arn in arns {
            out.push(Lookalike {
                state: self.state_of(&arn).await?,
                arn,
            });
        }
        Ok(out)
    }

    /// Tags, listeners and targets of a resource, as text to compare.
    async fn state_of(&self, arn: &str) -> Result<String> {
        let tags = self.elb.describe_tags().resource_arns(arn).send().await?;
        let mut state = format!("{:?}", tags.tag_descriptions().first().map(|d| d.tags()));
        if arn.contains(":loadbalancer/") {
            let listeners = self
                .elb
                .describe_listeners()
                .load_balancer_arn(arn)
                .send()
                .await?;
            for l in listeners.listeners() {
                state += &format!(" listener {:?}->{:?}", l.port(), forward_target(l));
            }
        } else {
            let health = self
                .elb
                .describe_target_health()
                .target_group_arn(arn)
                .send()
                .await?;
            for d in health.target_health_descriptions() {
                state += &format!(" target {:?}", d.target().map(|t| (t.id(), t.port())));
            }
        }
        Ok(state)
    }

    /// The look-alikes that are gone or changed.
    async fn touched(&self, planted: &[Lookalike]) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for l in planted {
            match self.state_of(&l.arn).await {
                Ok(state) if state == l.state => {}
                Ok(state) => out.push(format!(
                    "look-alike {} changed: {} → {state}",
                    l.arn, l.state
                )),
                Err(e) => out.push(format!("look-alike {} is gone: {e:#}", l.arn)),
            }
        }
        Ok(out)
    }

    /// Everything in the account that differs from what `wanted` asks for: missing or
    /// wrong load balancers, listeners, target groups, targets and rules, and anything
    /// tagged for this cluster that no Service wants (a leak).
    async fn problems(&self, wanted: &BTreeMap<String, Wanted>) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let owned = self.owned().await?;
        let instances: BTreeSet<&str> = self.nodes.iter().map(|n| n.id.as_str()).collect();
        for (svc, w) in wanted {
            let key = format!("{}/{svc}", self.ns);
            let Some(res) = owned.get(&key) else {
                problems.push(format!("{key}: no load balancer"));
                continue;
            };
            if res.load_balancers.len() != 1 {
                problems.push(format!(
                    "{key}: {} load balancers",
                    res.load_balancers.len()
                ));
                continue;
            }
            let (lb_dns, listeners) = &res.load_balancers[0];
            if w.hostname.as_deref() != Some(lb_dns.as_str()) {
                problems.push(format!(
                    "{key}: status shows {:?}, NLB is {lb_dns}",
                    w.hostname
                ));
            }
            let ports: BTreeSet<i32> = listeners.iter().map(|(p, _)| *p).collect();
            let want_ports: BTreeSet<i32> = w.ports.keys().copied().collect();
            if ports != want_ports || listeners.len() != want_ports.len() {
                problems.push(format!(
                    "{key}: listeners {listeners:?}, ports {want_ports:?}"
                ));
            }
            let used: BTreeSet<&str> = listeners.iter().map(|(_, tg)| tg.as_str()).collect();
            let groups: BTreeSet<&str> = res.target_groups.keys().map(String::as_str).collect();
            if used != groups {
                problems.push(format!(
                    "{key}: listeners use {used:?}, tagged groups {groups:?}"
                ));
            }
            for (port, tg) in listeners {
                let node_port = w.ports.get(port).copied().unwrap_or_default();
                let want: BTreeSet<(String, i32)> = instances
                    .iter()
                    .map(|i| (i.to_string(), node_port))
                    .collect();
                match res.target_groups.get(tg) {
                    Some(targets) if *targets == want => {}
                    got => {
                        problems.push(format!("{key}: port {port} targets {got:?}, want {want:?}"))
                    }
                }
            }
            let rules = res.rules.clone();
            let want_rules: BTreeSet<i32> = if w.ranges {
                w.ports.values().copied().collect()
            } else {
                BTreeSet::new()
            };
            if rules != want_rules {
                problems.push(format!(
                    "{key}: client rules on ports {rules:?}, want {want_rules:?}"
                ));
            }
        }
        for key in owned.keys() {
            let name = key.rsplit('/').next().unwrap_or_default();
            if !wanted.contains_key(name) {
                problems.push(format!("leak: {key} has {:?}", owned[key]));
            }
        }
        Ok(problems)
    }

    /// What is tagged for this cluster, by Service key.
    async fn owned(&self) -> Result<BTreeMap<String, Owned>> {
        let mut lbs = Vec::new();
        let mut pages = self.elb.describe_load_balancers().into_paginator().send();
        while let Some(page) = pages.next().await {
            lbs.extend(page?.load_balancers().to_vec());
        }
        let mut tgs = Vec::new();
        let mut pages = self.elb.describe_target_groups().into_paginator().send();
        while let Some(page) = pages.next().await {
            tgs.extend(page?.target_groups().to_vec());
        }
        let arns: Vec<String> = lbs
            .iter()
            .filter_map(|l| l.load_balancer_arn())
            .chain(tgs.iter().filter_map(|t| t.target_group_arn()))
            .map(str::to_string)
            .collect();
        let mut owner: BTreeMap<String, String> = BTreeMap::new();
        for chunk in arns.chunks(20) {
            let out = self
                .elb
                .describe_tags()
                .set_resource_arns(Some(chunk.to_vec()))
                .send()
                .await?;
            for d in out.tag_descriptions() {
                let get = |k: &str| {
                    d.tags()
                        .iter()
                        .find(|t| t.key() == Some(k))
                        .and_then(|t| t.value())
                };
                if get("ferrolb.io/cluster") == Some(CLUSTER)
                    && let (Some(arn), Some(svc)) = (d.resource_arn(), get("ferrolb.io/service"))
                {
                    owner.insert(arn.to_string(), svc.to_string());
                }
            }
        }
        let mut out: BTreeMap<String, Owned> = BTreeMap::new();
        for lb in &lbs {
            let arn = lb.load_balancer_arn().unwrap_or_default();
            let Some(svc) = owner.get(arn) else { continue };
            let listeners = self
                .elb
                .describe_listeners()
                .load_balancer_arn(arn)
                .send()
                .await?;
            let listeners = listeners
                .listeners()
                .iter()
                .map(|l| {
                    (
                        l.port().unwrap_or_default(),
                        forward_target(l).unwrap_or_default(),
                    )
                })
                .collect();
            out.entry(svc.clone())
                .or_default()
                .load_balancers
                .push((lb.dns_name().unwrap_or_default().to_string(), listeners));
        }
        for tg in &tgs {
            let arn = tg.target_group_arn().unwrap_or_default();
            let Some(svc) = owner.get(arn) else { continue };
            let targets = super::registered_targets(&self.elb, arn).await?;
            out.entry(svc.clone())
                .or_default()
                .target_groups
                .insert(arn.to_string(), targets);
        }
        for (svc, ports) in self.client_rules().await? {
            out.entry(svc).or_default().rules = ports;
        }
        Ok(out)
    }

    /// The nodePorts each Service's client rules open on the nodes' security group.
    async fn client_rules(&self) -> Result<BTreeMap<String, BTreeSet<i32>>> {
        let out = self
            .ec2
            .describe_security_groups()
            .group_ids(&self.seed.node_security_group)
            .send()
            .await?;
        let prefix = format!("ferrolb:{CLUSTER}:");
        let mut rules: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
        for p in out
            .security_groups()
            .iter()
            .flat_map(|g| g.ip_permissions())
        {
            for r in p.ip_ranges() {
                let Some(rest) = r.description().and_then(|d| d.strip_prefix(&prefix)) else {
                    continue;
                };
                if let Some(svc) = rest.strip_suffix(":client") {
                    rules
                        .entry(svc.to_string())
                        .or_default()
                        .insert(p.from_port().unwrap_or_default());
                }
            }
        }
        Ok(rules)
    }
}

/// What is tagged for one Service.
#[derive(Debug, Default)]
struct Owned {
    /// (DNS name, [(listener port, target group ARN)]) of each load balancer.
    load_balancers: Vec<(String, Vec<(i32, String)>)>,
    /// Target group ARN → its (instance, port) targets.
    target_groups: BTreeMap<String, BTreeSet<(String, i32)>>,
    /// nodePorts with a client rule.
    rules: BTreeSet<i32>,
}

fn forward_target(l: &aws_sdk_elasticloadbalancingv2::types::Listener) -> Option<String> {
    l.default_actions()
        .iter()
        .find_map(|a| a.target_group_arn().map(str::to_string))
}
