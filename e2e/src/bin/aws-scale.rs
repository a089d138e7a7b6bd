//! The AWS provider at scale, against a real kube-apiserver and moto: time and AWS calls
//! (from the controller's `ferrolb_aws_calls_total` and `ferrolb_aws_ensures_total`) for
//!
//! 1. convergence: `--services` Services of `--ports` TCP ports on `--nodes` nodes, until
//!    every one shows a hostname;
//! 2. a steady-state resync of all of them: one real `--resync-period` (not a restart),
//!    measured until every Service has been ensured again;
//! 3. a controller restart (the ensure cache starts empty, so every Service is observed in
//!    full once);
//! 4. the same resync with the ensure cache off (`--aws-ensure-cache=false`): the
//!    baseline, in the same run;
//! 5. node churn: `--churn-services` Services (the first ones and more) on the same
//!    nodes, `--churn` nodes join at once and then leave, with the cache on and then off,
//!    with no periodic resync in the way; time from the first Node written until the
//!    controller's last AWS call (to the 0.5 s poll), then every target group is checked.
//!
//! ```text
//! cargo build -p ferrolb
//! cargo run -p ferrolb-e2e --bin aws-scale -- [--services 200] [--ports 3] [--nodes 100]
//!     [--resync-period 120] [--churn-services 500] [--churn 10]
//! ```
//!
//! `--churn-services 0` leaves out step 5. Prints a Markdown table. Every wait is bounded;
//! the control plane, moto and the controller are killed when the run ends.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ferrolb_e2e::moto::{Instance, Seed};
use ferrolb_e2e::plain_http::{ElbQuery, free_port, http, samples};
use ferrolb_e2e::{ControlPlane, FerrolbProcess, Moto, fixtures, wait_for};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

const CLUSTER: &str = "bench";
const CLASS: &str = "ferrolb.io/aws";
const NAMESPACE: &str = "bench";
const ZONES: [&str; 2] = ["us-east-1a", "us-east-1b"];
/// The resync period while node churn is measured: longer than the run.
const CHURN_RESYNC: &str = "360m";
/// The bound on every wait; moto slows down as the account grows.
const WAIT: Duration = Duration::from_secs(1800);
/// The counters count as settled when they have not changed for this long.
const QUIET: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(500);
const HTTP_TIMEOUT: Duration = Duration::from_secs(120);

struct Args {
    services: usize,
    ports: usize,
    nodes: usize,
    resync_secs: u64,
    churn_services: usize,
    churn: usize,
}

impl Args {
    fn parse() -> Result<Args> {
        let mut a = Args {
            services: 200,
            ports: 3,
            nodes: 100,
            resync_secs: 120,
            churn_services: 500,
            churn: 10,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let value: usize = it
                .next()
                .with_context(|| format!("{flag} needs a value"))?
                .parse()
                .with_context(|| format!("{flag} takes a number"))?;
            match flag.as_str() {
                "--services" => a.services = value,
                "--ports" => a.ports = value,
                "--nodes" => a.nodes = value,
                "--resync-period" => a.resync_secs = value as u64,
                "--churn-services" => a.churn_services = value,
                "--churn" => a.churn = value,
                other => bail!("unknown flag {other}"),
            }
        }
        ensure!(a.ports >= 1 && a.ports <= 50, "--ports between 1 and 50");
        ensure!(
            a.churn_services == 0 || a.churn_services >= a.services,
            "--churn-services adds to --services"
        );
        ensure!(a.churn < a.nodes, "--churn must be below --nodes");
        Ok(a)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,kube_client=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    ferrolb_e2e::install_crypto_provider();
    let args = Args::parse()?;
    let mut bench = Bench::start(&args).await?;
    let mut rows = Vec::new();
    let result = bench.run(&args, &mut rows).await;
    if let Err(err) = &result {
        eprintln!("aws-scale failed: {err:#}");
        if let Some(ctl) = &bench.controller {
            let log = ctl.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
    drop(bench);
    // What was measured before a failure is still worth printing.
    println!("{}", table(&rows));
    result
}

/// `ferrolb_aws_calls_total` by (operation, outcome).
type Calls = BTreeMap<(String, String), u64>;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Snapshot {
    aws: Calls,
    /// `ferrolb_aws_ensures_total` by path.
    ensures: BTreeMap<String, u64>,
}

impl Snapshot {
    fn since(&self, before: &Snapshot) -> Snapshot {
        Snapshot {
            aws: self
                .aws
                .iter()
                .map(|(k, v)| (k.clone(), v - before.aws.get(k).copied().unwrap_or(0)))
                .filter(|(_, v)| *v > 0)
                .collect(),
            ensures: self
                .ensures
                .iter()
                .map(|(k, v)| (k.clone(), v - before.ensures.get(k).copied().unwrap_or(0)))
                .filter(|(_, v)| *v > 0)
                .collect(),
        }
    }

    fn ensures(&self) -> u64 {
        self.ensures.values().sum()
    }

    fn op(&self, op: &str) -> u64 {
        self.aws
            .iter()
            .filter(|((o, _), _)| o == op)
            .map(|(_, n)| n)
            .sum()
    }
}

struct Row {
    scenario: String,
    cache: bool,
    nlbs: usize,
    seconds: Option<f64>,
    delta: Snapshot,
    reference: &'static str,
}

struct Bench {
    controller: Option<FerrolbProcess>,
    cache: bool,
    metrics_port: u16,
    resync: String,
    moto: Moto,
    seed: Seed,
    elb: ElbQuery,
    client: Client,
    cp: ControlPlane,
    nodes: Vec<(String, Instance)>,
    services: usize,
}

impl Bench {
    async fn start(args: &Args) -> Result<Bench> {
        eprintln!("starting kube-apiserver, etcd and moto");
        let cp = ControlPlane::start().await?;
        let client = cp.client().await?;
        fixtures::create_namespace(&client, NAMESPACE).await?;
        let moto = Moto::start().await?;
        let seed = moto.seed(CLUSTER, &ZONES).await?;
        let elb = ElbQuery::new(moto.endpoint(), HTTP_TIMEOUT)?;
        Ok(Bench {
            controller: None,
            cache: true,
            metrics_port: 0,
            resync: format!("{}s", args.resync_secs),
            moto,
            seed,
            elb,
            client,
            cp,
            nodes: Vec::new(),
            services: 0,
        })
    }

    async fn run(&mut self, args: &Args, rows: &mut Vec<Row>) -> Result<()> {
        self.add_nodes(args.nodes).await?;
        self.start_controller(true)?;
        let start = self.settle().await?;

        let n = args.services;
        eprintln!("create {n} Services × {} ports", args.ports);
        let t = Instant::now();
        self.create_services(n, args.ports).await?;
        self.wait_hostnames(n).await?;
        let seconds = t.elapsed().as_secs_f64();
        let after = self.settle().await?;
        rows.push(self.row(
            format!(
                "create {n} Services × {} ports, {} nodes",
                args.ports, args.nodes
            ),
            n,
            Some(seconds),
            after.since(&start),
            REF_CREATE,
        ));

        for cache in [true, false] {
            if cache != self.cache {
                eprintln!("restart with the ensure cache {}", on_off(cache));
                self.restart(cache).await?;
                self.wait_ensures(&Snapshot::default(), n as u64).await?;
                self.settle().await?;
            }
            eprintln!(
                "steady-state resync of {n} Services, cache {}",
                on_off(cache)
            );
            // Timed by the period, not by the controller: no time in the table.
            let before = self.settle().await?;
            self.wait_ensures(&before, n as u64).await?;
            let after = self.settle().await?;
            rows.push(self.row(
                format!(
                    "resync of {n} Services × {} ports (period {})",
                    args.ports, self.resync
                ),
                n,
                None,
                after.since(&before),
                REF_RESYNC,
            ));
            if cache {
                eprintln!("restart, cache on");
                self.restart(true).await?;
                let t = Instant::now();
                self.wait_ensures(&Snapshot::default(), n as u64).await?;
                let seconds = t.elapsed().as_secs_f64();
                let after = self.settle().await?;
                rows.push(self.row(
                    format!("restart: first ensure of {n} Services"),
                    n,
                    Some(seconds),
                    after,
                    REF_RESTART,
                ));
            }
        }

        if args.churn_services == 0 {
            return Ok(());
        }
        let m = args.churn_services;
        eprintln!("grow to {m} Services (not measured)");
        // No periodic resync lands inside the churn measurements.
        self.resync = CHURN_RESYNC.to_owned();
        self.restart(true).await?;
        self.wait_ensures(&Snapshot::default(), n as u64).await?;
        self.create_services(m - n, args.ports).await?;
        self.wait_hostnames(m).await?;
        self.settle().await?;
        let tgs = m * args.ports;
        for cache in [true, false] {
            if cache != self.cache {
                eprintln!("restart with the ensure cache {}", on_off(cache));
                self.restart(cache).await?;
                self.wait_ensures(&Snapshot::default(), m as u64).await?;
            }
            for join in [true, false] {
                let what = if join { "join" } else { "leave" };
                eprintln!("{} nodes {what}, cache {}", args.churn, on_off(cache));
                let before = self.settle().await?;
                let (seconds, delta) = self.churn(args.churn, join, tgs, &before).await?;
                rows.push(self.row(
                    format!(
                        "{} of {} nodes {what}, {m} Services × {} ports",
                        args.churn, args.nodes, args.ports
                    ),
                    m,
                    Some(seconds),
                    delta,
                    REF_CHURN,
                ));
            }
        }
        Ok(())
    }

    fn row(
        &self,
        scenario: String,
        nlbs: usize,
        seconds: Option<f64>,
        delta: Snapshot,
        reference: &'static str,
    ) -> Row {
        eprintln!(
            "{scenario} (cache {}): {:?} s, ensures {:?}, {}",
            on_off(self.cache),
            seconds,
            delta.ensures,
            by_operation(&delta.aws)
        );
        Row {
            scenario,
            cache: self.cache,
            nlbs,
            seconds,
            delta,
            reference,
        }
    }

    /// `n` nodes join (`join`) or the last `n` leave, all at once; waits until the
    /// last Register/DeregisterTargets the change needs (one per target group) has
    /// returned, then checks every target group.
    async fn churn(
        &mut self,
        n: usize,
        join: bool,
        tgs: usize,
        before: &Snapshot,
    ) -> Result<(f64, Snapshot)> {
        let (op, made, gone) = if join {
            let mut made = Vec::new();
            for i in 0..n {
                let zone = ZONES[(self.nodes.len() + i) % ZONES.len()];
                made.push(self.moto.run_instance(&self.seed, zone).await?);
            }
            ("RegisterTargets", made, Vec::new())
        } else {
            let at = self.nodes.len().saturating_sub(n);
            ("DeregisterTargets", Vec::new(), self.nodes.split_off(at))
        };
        // The instances are made before the clock starts: the clock measures the
        // controller, not moto's RunInstances.
        let t = Instant::now();
        for inst in made {
            let name = format!("node-{}", self.nodes.len());
            fixtures::create_node(
                &self.client,
                &name,
                &[inst.private_ip],
                Some(&inst.provider_id),
                &[("topology.kubernetes.io/zone", &inst.zone)],
                true,
            )
            .await?;
            self.nodes.push((name, inst));
        }
        for (name, _) in &gone {
            Api::<Node>::all(self.client.clone())
                .delete(name, &DeleteParams::default())
                .await?;
        }
        let want = before.op(op) + tgs as u64;
        wait_for(&format!("{tgs} {op} calls"), WAIT, || async {
            Ok((self.snapshot().await?.op(op) >= want).then_some(()))
        })
        .await?;
        let (after, last_change) = self.settle_at().await?;
        let seconds = last_change.duration_since(t).as_secs_f64();
        // Not timed: every target group holds exactly the remaining nodes.
        let expected: std::collections::BTreeSet<String> =
            self.nodes.iter().map(|(_, i)| i.id.clone()).collect();
        for group in self.elb.target_groups().await? {
            let has: std::collections::BTreeSet<String> =
                self.elb.targets(&group).await?.into_iter().collect();
            ensure!(has == expected, "{group} holds {has:?}, not {expected:?}");
        }
        Ok((seconds, after.since(before)))
    }

    async fn add_nodes(&mut self, n: usize) -> Result<()> {
        for _ in 0..n {
            let name = format!("node-{}", self.nodes.len());
            let zone = ZONES[self.nodes.len() % ZONES.len()];
            let inst = self
                .moto
                .run_node(&self.client, &self.seed, &name, zone)
                .await?;
            self.nodes.push((name, inst));
        }
        Ok(())
    }

    fn start_controller(&mut self, cache: bool) -> Result<()> {
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let extra = [
            "--resync-period",
            &self.resync,
            "--log",
            "warn",
            if cache {
                "--aws-ensure-cache=true"
            } else {
                "--aws-ensure-cache=false"
            },
        ];
        self.controller = Some(FerrolbProcess::spawn_aws_controller(
            &self.cp,
            &self.moto.env(),
            CLUSTER,
            &addr,
            &extra,
        )?);
        self.metrics_port = port;
        self.cache = cache;
        Ok(())
    }

    async fn restart(&mut self, cache: bool) -> Result<()> {
        if let Some(mut old) = self.controller.take() {
            old.terminate().await?;
        }
        self.start_controller(cache)
    }

    async fn create_services(&mut self, n: usize, ports: usize) -> Result<()> {
        let ports: Vec<(&str, i32)> = (0..ports).map(|i| ("TCP", 80 + i as i32)).collect();
        let api: Api<Service> = Api::namespaced(self.client.clone(), NAMESPACE);
        for _ in 0..n {
            let name = format!("svc-{:03}", self.services);
            let mut svc = fixtures::lb_service(NAMESPACE, &name, &ports);
            if let Some(spec) = svc.spec.as_mut() {
                spec.load_balancer_class = Some(CLASS.to_owned());
            }
            api.create(&PostParams::default(), &svc)
                .await
                .with_context(|| format!("creating Service {name}"))?;
            self.services += 1;
        }
        Ok(())
    }

    async fn wait_hostnames(&self, n: usize) -> Result<()> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), NAMESPACE);
        wait_for(&format!("a hostname on {n} Services"), WAIT, || {
            let api = api.clone();
            async move {
                let list = api.list(&ListParams::default()).await?;
                let done = list.items.iter().filter(|s| has_hostname(s)).count();
                Ok((done >= n).then_some(()))
            }
        })
        .await
    }

    /// Waits until `n` ensures have run since `before`.
    async fn wait_ensures(&self, before: &Snapshot, n: u64) -> Result<()> {
        wait_for(&format!("{n} ensures"), WAIT, || async {
            let done = self.snapshot().await?.since(before).ensures();
            Ok((done >= n).then_some(()))
        })
        .await
    }

    async fn snapshot(&self) -> Result<Snapshot> {
        let (status, body) = http(
            ("127.0.0.1", self.metrics_port),
            &format!(
                "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n",
                self.metrics_port
            ),
            HTTP_TIMEOUT,
        )
        .await?;
        ensure!(status == 200, "GET /metrics gave {status}");
        Ok(parse_metrics(&body))
    }

    /// Waits until the counters have not changed for [`QUIET`], and returns them.
    async fn settle(&self) -> Result<Snapshot> {
        Ok(self.settle_at().await?.0)
    }

    /// [`Bench::settle`], and when the counters last changed.
    async fn settle_at(&self) -> Result<(Snapshot, Instant)> {
        let mut last = wait_for("/metrics to answer", WAIT, || async {
            Ok(Some(self.snapshot().await?))
        })
        .await?;
        let deadline = Instant::now() + WAIT;
        let mut quiet_since = Instant::now();
        loop {
            tokio::time::sleep(POLL).await;
            let now = self.snapshot().await?;
            if now != last {
                last = now;
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= QUIET {
                return Ok((last, quiet_since));
            }
            if Instant::now() > deadline {
                bail!("the counters kept changing for {WAIT:?}");
            }
        }
    }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

fn has_hostname(svc: &Service) -> bool {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .is_some_and(|i| i.iter().any(|i| i.hostname.is_some()))
}

fn parse_metrics(body: &str) -> Snapshot {
    let mut snapshot = Snapshot::default();
    for sample in samples(body) {
        let value = sample.value as u64;
        let label = |key: &str| sample.label(key);
        match sample.name {
            "ferrolb_aws_calls_total" => {
                *snapshot
                    .aws
                    .entry((label("operation"), label("outcome")))
                    .or_default() += value;
            }
            "ferrolb_aws_ensures_total" => {
                let path = match label("reason").as_str() {
                    "" => label("path"),
                    reason => format!("{} ({reason})", label("path")),
                };
                *snapshot.ensures.entry(path).or_default() += value;
            }
            _ => {}
        }
    }
    snapshot
}

fn is_read(operation: &str) -> bool {
    operation.starts_with("Describe")
}

fn by_operation(calls: &Calls) -> String {
    let mut ops: BTreeMap<&str, u64> = BTreeMap::new();
    for ((op, _), n) in calls {
        *ops.entry(op.as_str()).or_default() += n;
    }
    let mut ordered: Vec<(&str, u64)> = ops.into_iter().collect();
    ordered.sort_by_key(|(op, _)| (!is_read(op), *op));
    let parts: Vec<String> = ordered
        .into_iter()
        .map(|(op, n)| format!("{op} {n}"))
        .collect();
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

fn per(total: u64, n: usize) -> String {
    format!("{:.2}", total as f64 / n.max(1) as f64)
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | ensure cache | time | ensures (path) | AWS calls by operation | mutating | reads | per NLB | reference |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let calls = &row.delta.aws;
        let mutating: u64 = calls
            .iter()
            .filter(|((op, _), _)| !is_read(op))
            .map(|(_, n)| n)
            .sum();
        let reads: u64 = calls
            .iter()
            .filter(|((op, _), _)| is_read(op))
            .map(|(_, n)| n)
            .sum();
        let ensures: Vec<String> = row
            .delta
            .ensures
            .iter()
            .map(|(p, n)| format!("{p} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.scenario,
            on_off(row.cache),
            row.seconds
                .map(|s| format!("{s:.1} s"))
                .unwrap_or_else(|| "–".into()),
            ensures.join(", "),
            by_operation(calls),
            mutating,
            reads,
            per(mutating + reads, row.nlbs),
            row.reference,
        );
    }
    out
}

// cloud-provider-aws, from /work/shared/reference/aws.md section 2.
const REF_CREATE: &str = "≈12–15 per 1-port NLB + 3 per extra port; ≈18–21 per 3-port NLB";
const REF_RESYNC: &str = "0 (no periodic drift correction at all)";
const REF_RESTART: &str = "0 (a restart re-ensures nothing that did not change)";
const REF_CHURN: &str =
    "≈12 + 2 per port per NLB for every node change, serially: ≈18 × NLBs per change";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_calls_and_paths() {
        let body = "ferrolb_aws_calls_total{service=\"elbv2\",operation=\"DescribeTags\",outcome=\"success\"} 3\n\
            ferrolb_aws_ensures_total{path=\"confirmed\",reason=\"\"} 20\n\
            ferrolb_aws_ensures_total{path=\"full\",reason=\"unknown\"} 2\n";
        let s = parse_metrics(body);
        assert_eq!(s.op("DescribeTags"), 3);
        assert_eq!(s.ensures(), 22);
        assert_eq!(s.ensures.get("full (unknown)"), Some(&2));
    }
}
