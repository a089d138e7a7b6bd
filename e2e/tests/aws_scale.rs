//! The AWS provider at some scale, against a real kube-apiserver and moto: what the
//! creates, a periodic resync, a node joining or leaving and deletes cost in AWS calls,
//! read from the controller's own counters. 20 Services of 3 ports each on 6 nodes; the
//! resync period is 20 s so that one passes within the test.
//!
//! Call counts only, never times: the counts are deterministic, the times are not.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use aws_sdk_elasticloadbalancingv2::Client as Elb;
use common::{Env, free_port, http_get};
use ferrolb_e2e::moto::{Moto, Seed};
use ferrolb_e2e::{FerrolbProcess, fixtures, wait_for};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, ListParams};

const CLUSTER: &str = "e2e";
const CLASS: &str = "ferrolb.io/aws";
const SERVICES: usize = 20;
const PORTS: [i32; 3] = [80, 443, 8080];
const NODES: usize = 6;
const RESYNC: Duration = Duration::from_secs(20);
const WAIT: Duration = Duration::from_secs(180);

/// `ferrolb_aws_calls_total` and `ferrolb_aws_ensures_total`, summed over outcomes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Counters {
    calls: BTreeMap<String, u64>,
    /// By `path` (`confirmed`, `recent`, `targets`, `full`).
    ensures: BTreeMap<String, u64>,
}

impl Counters {
    fn since(&self, before: &Counters) -> Counters {
        let diff = |now: &BTreeMap<String, u64>, then: &BTreeMap<String, u64>| {
            now.iter()
                .map(|(k, v)| (k.clone(), v - then.get(k).copied().unwrap_or(0)))
                .filter(|(_, v)| *v > 0)
                .collect()
        };
        Counters {
            calls: diff(&self.calls, &before.calls),
            ensures: diff(&self.ensures, &before.ensures),
        }
    }

    fn call(&self, op: &str) -> u64 {
        self.calls.get(op).copied().unwrap_or(0)
    }

    fn reads(&self) -> u64 {
        self.calls
            .iter()
            .filter(|(op, _)| op.starts_with("Describe"))
            .map(|(_, n)| n)
            .sum()
    }

    fn mutations(&self) -> u64 {
        self.calls
            .iter()
            .filter(|(op, _)| !op.starts_with("Describe"))
            .map(|(_, n)| n)
            .sum()
    }
}

struct Scale {
    env: Env,
    moto: Moto,
    seed: Seed,
    elb: Elb,
    metrics_port: u16,
}

impl Scale {
    async fn counters(&self) -> Result<Counters> {
        let (_, body) = http_get(self.metrics_port, "/metrics").await?;
        let mut out = Counters::default();
        for line in body.lines() {
            let (map, label) = if line.starts_with("ferrolb_aws_calls_total{") {
                (&mut out.calls, "operation")
            } else if line.starts_with("ferrolb_aws_ensures_total{") {
                (&mut out.ensures, "path")
            } else {
                continue;
            };
            let key = line
                .split(&format!("{label}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .context("no label")?;
            let n: f64 = line.rsplit(' ').next().unwrap_or("0").parse()?;
            *map.entry(key.to_string()).or_default() += n as u64;
        }
        Ok(out)
    }

    /// The counters once they have not changed for 3 s (and the metrics server
    /// answers: the controller may still be starting).
    async fn settled(&self) -> Result<Counters> {
        let mut last = wait_for("the controller's metrics", WAIT, || async {
            self.counters().await.map(Some)
        })
        .await?;
        for _ in 0..120 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let now = self.counters().await?;
            if now == last {
                return Ok(now);
            }
            last = now;
        }
        anyhow::bail!("the counters never settled: {last:?}")
    }

    /// Every target group's ARN.
    async fn target_groups(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut pages = self.elb.describe_target_groups().into_paginator().send();
        while let Some(page) = pages.next().await {
            out.extend(
                page?
                    .target_groups()
                    .iter()
                    .filter_map(|t| t.target_group_arn().map(str::to_string)),
            );
        }
        Ok(out)
    }

    /// Waits until every target group has (or none has) the instance.
    async fn wait_targets(&self, instance: &str, present: bool) -> Result<()> {
        let groups = self.target_groups().await?;
        ensure!(
            groups.len() == SERVICES * PORTS.len(),
            "{} target groups",
            groups.len()
        );
        wait_for(
            &format!("{instance} present={present} everywhere"),
            WAIT,
            || {
                let groups = groups.clone();
                async move {
                    for g in &groups {
                        let health = self
                            .elb
                            .describe_target_health()
                            .target_group_arn(g)
                            .send()
                            .await?;
                        let has = health
                            .target_health_descriptions()
                            .iter()
                            .any(|d| d.target().and_then(|t| t.id()) == Some(instance));
                        if has != present {
                            return Ok(None);
                        }
                    }
                    Ok(Some(()))
                }
            },
        )
        .await
    }
}

fn controller(s: &Scale) -> Result<FerrolbProcess> {
    let addr = format!("127.0.0.1:{}", s.metrics_port);
    let resync = format!("{}s", RESYNC.as_secs());
    FerrolbProcess::spawn_aws_controller(
        &s.env.cp,
        &s.moto.env(),
        CLUSTER,
        &addr,
        &[
            "--resync-period",
            &resync,
            "--log",
            "info,ferrolb_aws=debug",
        ],
    )
}

/// Reads of one listing of the account: load balancers and target groups, 400 a page.
fn listing_reads(lbs: usize, tgs: usize) -> u64 {
    (lbs.div_ceil(400) + tgs.div_ceil(400)) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_and_node_churn_cost_what_the_api_minimum_allows() -> Result<()> {
    let env = Env::start().await?;
    let moto = Moto::start().await?;
    let seed = moto.seed(CLUSTER, &["us-east-1a", "us-east-1b"]).await?;
    let elb = Elb::new(&moto.sdk_config().await);
    let s = Scale {
        env,
        moto,
        seed,
        elb,
        metrics_port: free_port(),
    };
    let zones = ["us-east-1a", "us-east-1b"];
    for n in 0..NODES {
        s.moto
            .run_node(&s.env.client, &s.seed, &format!("node-{n}"), zones[n % 2])
            .await?;
    }
    let ctl = controller(&s)?;
    let result = run(&s).await;
    if result.is_err() {
        eprintln!("{}", ctl.log());
    }
    result
}

async fn run(s: &Scale) -> Result<()> {
    let api = s.env.services();
    let before = s.settled().await?;
    for i in 0..SERVICES {
        let ports: Vec<(&str, i32)> = PORTS.iter().map(|&p| ("TCP", p)).collect();
        let mut svc = fixtures::lb_service(&s.env.ns, &format!("svc-{i:02}"), &ports);
        svc.spec.as_mut().unwrap().load_balancer_class = Some(CLASS.into());
        api.create(&Default::default(), &svc).await?;
    }
    wait_for(&format!("a hostname on {SERVICES} Services"), WAIT, || {
        let api = api.clone();
        async move {
            let list = api.list(&ListParams::default()).await?;
            let ready = list
                .items
                .iter()
                .filter(|svc| {
                    svc.status
                        .as_ref()
                        .and_then(|st| st.load_balancer.as_ref())
                        .and_then(|lb| lb.ingress.as_ref())
                        .is_some_and(|i| i.iter().any(|i| i.hostname.is_some()))
                })
                .count();
            Ok((ready == SERVICES).then_some(()))
        }
    })
    .await?;

    // The creates: one call per resource, and no read of each Service's name. A
    // listing of the account reads one page of load balancers and one of target
    // groups, so any DescribeLoadBalancers beyond those pairs is a Service's own.
    let after = s.settled().await?;
    let create = after.since(&before);
    eprintln!("create of {SERVICES} Services: {create:?}");
    let per_service = 1 + 3 * PORTS.len() as u64;
    ensure!(
        create.mutations() == SERVICES as u64 * per_service,
        "{create:?}"
    );
    ensure!(
        create.call("DescribeLoadBalancers") == create.call("DescribeTargetGroups"),
        "a Service's own existence read in the creates: {create:?}"
    );
    // Otherwise only reads shared by all the creates: the VPC's subnets (2) and route
    // tables, the look for earlier source-range rules, and listings of the account
    // (the sweep's, or a resync's if a period falls inside).
    let bound = 4 + 2 * listing_reads(SERVICES, SERVICES * PORTS.len());
    ensure!(
        create.reads() - create.call("DescribeTags") <= bound,
        "create reads over {bound}: {create:?}"
    );
    // (The sweep for leftovers may read the tags of what it lists while the creates
    // are under way, so DescribeTags is not counted here.)
    for op in ["DescribeListeners", "DescribeTargetHealth"] {
        ensure!(create.call(op) == 0, "{op} in the creates: {create:?}");
    }

    // One resync period: every Service is ensured again, unchanged.
    let before = after;
    let confirmed = before.ensures.get("confirmed").copied().unwrap_or(0);
    wait_for("every Service to be resynced", WAIT, || async {
        let now = s.counters().await?;
        let done = now.ensures.get("confirmed").copied().unwrap_or(0) - confirmed;
        Ok((done >= SERVICES as u64).then_some(()))
    })
    .await?;
    let resync = s.settled().await?.since(&before);
    eprintln!("resync of {SERVICES} Services: {resync:?}");
    let tgs = SERVICES * PORTS.len();
    // At most two listings of the account in one period: one for a resync that finds
    // the held view older than what it knows, one for the sweep for leftovers when the
    // view is older than a minute. Nothing per Service, no tags (known since creation).
    let bound = 2 * listing_reads(SERVICES, tgs);
    ensure!(resync.mutations() == 0, "a resync mutated: {resync:?}");
    ensure!(
        resync.reads() <= bound,
        "resync reads over {bound}: {resync:?}"
    );
    for op in ["DescribeListeners", "DescribeTargetHealth", "DescribeTags"] {
        ensure!(resync.call(op) == 0, "{op} in a resync: {resync:?}");
    }
    ensure!(
        !resync.ensures.contains_key("full"),
        "full ensures in a resync: {resync:?}"
    );

    // A node joins: one RegisterTargets per target group, nothing read per Service.
    let before = s.settled().await?;
    let joined = s
        .moto
        .run_node(&s.env.client, &s.seed, "node-new", "us-east-1a")
        .await?;
    s.wait_targets(&joined.id, true).await?;
    let join = s.settled().await?.since(&before);
    eprintln!("node joins: {join:?}");
    ensure!(join.call("RegisterTargets") == tgs as u64, "{join:?}");
    ensure!(join.mutations() == tgs as u64, "{join:?}");
    check_no_per_service_reads(&join, tgs)?;

    // The node leaves: one DeregisterTargets per target group.
    let before = s.settled().await?;
    Api::<Node>::all(s.env.client.clone())
        .delete("node-new", &DeleteParams::default())
        .await?;
    s.wait_targets(&joined.id, false).await?;
    let leave = s.settled().await?.since(&before);
    eprintln!("node leaves: {leave:?}");
    ensure!(leave.call("DeregisterTargets") == tgs as u64, "{leave:?}");
    ensure!(leave.mutations() == tgs as u64, "{leave:?}");
    check_no_per_service_reads(&leave, tgs)?;

    // Half the Services are deleted at once. Each finds what is tagged for it in a
    // listing of the account they share, and reads again only its own candidates'
    // tags (one call for a load balancer and 3 groups), not those of all 80.
    let before = s.settled().await?;
    let deleted = SERVICES / 2;
    for i in 0..deleted {
        api.delete(&format!("svc-{i:02}"), &DeleteParams::default())
            .await?;
    }
    let left = (SERVICES - deleted) * PORTS.len();
    wait_for(
        "the deleted Services' target groups to go",
        WAIT,
        || async { Ok((s.target_groups().await?.len() == left).then_some(())) },
    )
    .await?;
    let delete = s.settled().await?.since(&before);
    eprintln!("delete of {deleted} Services: {delete:?}");
    ensure!(
        delete.call("DeleteLoadBalancer") == deleted as u64,
        "{delete:?}"
    );
    ensure!(
        delete.call("DeleteTargetGroup") == (deleted * PORTS.len()) as u64,
        "{delete:?}"
    );
    ensure!(
        delete.mutations() == (deleted * (1 + PORTS.len())) as u64,
        "{delete:?}"
    );
    ensure!(
        delete.call("DescribeTags") == deleted as u64,
        "tags read beyond each delete's own candidates: {delete:?}"
    );
    ensure!(
        delete.call("DescribeLoadBalancers") == delete.call("DescribeTargetGroups"),
        "a read of one load balancer in the deletes: {delete:?}"
    );
    // None has source ranges, and the ensures of this process know it.
    ensure!(
        delete.call("DescribeSecurityGroups") == 0,
        "security groups read in the deletes: {delete:?}"
    );
    // Listings: those the deletes share, and a resync's or the sweep's.
    let bound = 3 * listing_reads(SERVICES, tgs);
    ensure!(
        delete.call("DescribeLoadBalancers") + delete.call("DescribeTargetGroups") <= bound,
        "listings over {bound}: {delete:?}"
    );
    Ok(())
}

/// Only listings of the account (a resync or the sweep may land in the window), no
/// read of one Service's load balancer, listeners, targets or tags.
fn check_no_per_service_reads(c: &Counters, tgs: usize) -> Result<()> {
    for op in ["DescribeListeners", "DescribeTargetHealth", "DescribeTags"] {
        ensure!(c.call(op) == 0, "{op} after a node change: {c:?}");
    }
    let bound = 2 * listing_reads(SERVICES, tgs);
    ensure!(c.reads() <= bound, "reads over {bound}: {c:?}");
    ensure!(!c.ensures.contains_key("full"), "full ensures: {c:?}");
    Ok(())
}
