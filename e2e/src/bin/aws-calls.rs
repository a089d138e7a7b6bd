//! Counts the AWS API calls `ferrolb controller --provider aws` makes per operation, against
//! a real kube-apiserver and moto, from its `ferrolb_aws_calls_total` counters:
//!
//! ```text
//! cargo build -p ferrolb
//! cargo run -p ferrolb-e2e --bin aws-calls
//! ```
//!
//! Scenarios, in this order, each measured as the difference of the counters before and
//! after, once they have stopped changing:
//! 1. create a Service with 1 TCP port, then one with 3 (until each shows a hostname), and
//!    delete them again;
//! 2. create 50 Services of 2 TCP ports each on 3 nodes;
//! 3. a controller restart with those 50: every Service is reconciled once and, the
//!    provider's ensure cache starting empty, observed in full (a periodic resync of
//!    unchanged Services costs far less; `aws-scale` measures one);
//! 4. a node joins (until every target group has its instance) and a node leaves (until
//!    none has it);
//! 5. one of the 50 Services is deleted, with the other 49 load balancers still there.
//!
//! Prints a Markdown table with cloud-provider-aws's figures next to ferrolb's. Every wait
//! is bounded; the control plane, moto and the controller are killed when the run ends.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

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
/// Long enough that no periodic resync lands inside a measurement.
const RESYNC_PERIOD: &str = "60m";
/// The bound on every wait.
const WAIT: Duration = Duration::from_secs(120);
/// The counters count as settled when they have not changed for this long.
const QUIET: Duration = Duration::from_secs(6);
const POLL: Duration = Duration::from_secs(1);
/// A bound on each HTTP exchange with the controller or moto.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
const BULK_SERVICES: usize = 50;
const BULK_PORTS: [i32; 2] = [80, 443];

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

    let mut bench = Bench::start().await?;
    let result = bench.run().await;
    if let Err(err) = &result {
        eprintln!("aws-calls failed: {err:#}");
        if let Some(ctl) = &bench.controller {
            let log = ctl.log();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!("controller log (last 80 lines):");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
    // Dropping `bench` kills the controller, moto, kube-apiserver and etcd.
    drop(bench);
    let rows = result?;
    println!("{}", table(&rows));
    Ok(())
}

/// One measured scenario.
struct Row {
    scenario: String,
    /// Load balancers the scenario touched, to give a per-NLB figure.
    nlbs: usize,
    calls: Calls,
    /// `Provider::ensure` and `delete` calls in the same window.
    provider_calls: u64,
    reference: &'static str,
}

/// `ferrolb_aws_calls_total`, by (operation, outcome).
type Calls = BTreeMap<(String, String), u64>;

/// What the bench reads from `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Snapshot {
    aws: Calls,
    /// `ferrolb_provider_calls_total`, all operations and outcomes.
    provider_calls: u64,
    /// `ferrolb_reconciles_total`, by outcome.
    reconciles: BTreeMap<String, u64>,
}

impl Snapshot {
    fn since(&self, before: &Snapshot) -> (Calls, u64) {
        let calls = self
            .aws
            .iter()
            .map(|(k, v)| (k.clone(), v - before.aws.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect();
        (calls, self.provider_calls - before.provider_calls)
    }
}

struct Bench {
    // Dropped in this order: the controller first, then moto and the control plane.
    controller: Option<FerrolbProcess>,
    metrics_port: u16,
    moto: Moto,
    seed: Seed,
    elb: ElbQuery,
    client: Client,
    cp: ControlPlane,
}

impl Bench {
    async fn start() -> Result<Bench> {
        eprintln!("starting kube-apiserver, etcd and moto");
        let cp = ControlPlane::start().await?;
        let client = cp.client().await?;
        fixtures::create_namespace(&client, NAMESPACE).await?;
        let moto = Moto::start().await?;
        let seed = moto.seed(CLUSTER, &ZONES).await?;
        let elb = ElbQuery::new(moto.endpoint(), HTTP_TIMEOUT)?;
        Ok(Bench {
            controller: None,
            metrics_port: 0,
            moto,
            seed,
            elb,
            client,
            cp,
        })
    }

    async fn run(&mut self) -> Result<Vec<Row>> {
        for (n, zone) in ["us-east-1a", "us-east-1b", "us-east-1a"]
            .iter()
            .enumerate()
        {
            self.node(&format!("node-{}", n + 1), zone).await?;
        }
        self.start_controller()?;
        // Whatever the controller does at start with no Services is not part of any row.
        self.settle().await?;

        let mut rows = Vec::new();
        eprintln!("create and delete single Services");
        let before = self.settle().await?;
        self.create_service("one-port", &[80]).await?;
        self.wait_hostnames(&["one-port"]).await?;
        rows.push(
            self.row(&before, "create, 1 TCP port", 1, REF_CREATE_1)
                .await?,
        );

        let before = self.settle().await?;
        self.create_service("three-ports", &[80, 443, 8080]).await?;
        self.wait_hostnames(&["three-ports"]).await?;
        rows.push(
            self.row(&before, "create, 3 TCP ports", 1, REF_CREATE_3)
                .await?,
        );

        let before = self.settle().await?;
        self.delete_service("one-port").await?;
        rows.push(
            self.row(&before, "delete, 1 TCP port", 1, REF_DELETE_1)
                .await?,
        );

        let before = self.settle().await?;
        self.delete_service("three-ports").await?;
        rows.push(
            self.row(&before, "delete, 3 TCP ports", 1, REF_DELETE_3)
                .await?,
        );

        eprintln!(
            "create {BULK_SERVICES} Services of {} ports",
            BULK_PORTS.len()
        );
        let names: Vec<String> = (0..BULK_SERVICES).map(|i| format!("svc-{i:02}")).collect();
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let before = self.settle().await?;
        for name in &names {
            self.create_service(name, &BULK_PORTS).await?;
        }
        self.wait_hostnames(&name_refs).await?;
        rows.push(
            self.row(
                &before,
                "create 50 Services × 2 TCP ports",
                BULK_SERVICES,
                REF_CREATE_50,
            )
            .await?,
        );
        let groups = self.elb.target_groups().await?;
        ensure!(
            groups.len() == BULK_SERVICES * BULK_PORTS.len(),
            "expected {} target groups, moto has {}",
            BULK_SERVICES * BULK_PORTS.len(),
            groups.len()
        );

        eprintln!("controller restart with {BULK_SERVICES} Services");
        let old = self.controller.as_mut().context("no controller")?;
        old.terminate().await?;
        self.controller = None;
        self.start_controller()?;
        let restarted = Snapshot::default(); // a new process counts from zero
        self.wait_reconciles(BULK_SERVICES as u64).await?;
        rows.push(
            self.row(
                &restarted,
                "controller restart: 50 Services × 2 ports observed again",
                BULK_SERVICES,
                REF_RESYNC,
            )
            .await?,
        );

        eprintln!("a node joins");
        let before = self.settle().await?;
        let joined = self.node("node-4", "us-east-1b").await?;
        self.wait_targets(&joined.id, true).await?;
        rows.push(
            self.row(
                &before,
                "node joins (50 Services × 2 ports, 3 → 4 nodes)",
                BULK_SERVICES,
                REF_NODE,
            )
            .await?,
        );

        eprintln!("a node leaves");
        let before = self.settle().await?;
        Api::<Node>::all(self.client.clone())
            .delete("node-4", &DeleteParams::default())
            .await
            .context("deleting node-4")?;
        self.wait_targets(&joined.id, false).await?;
        rows.push(
            self.row(
                &before,
                "node leaves (50 Services × 2 ports, 4 → 3 nodes)",
                BULK_SERVICES,
                REF_NODE,
            )
            .await?,
        );

        // A delete finds what to delete by tags, among everything in the account: here
        // 50 load balancers and 100 target groups, where the rows above had one or two.
        eprintln!("delete one of {BULK_SERVICES} Services");
        let before = self.settle().await?;
        self.delete_service(&names[0]).await?;
        rows.push(
            self.row(
                &before,
                "delete, 2 TCP ports, with 50 NLBs in the account",
                1,
                REF_DELETE_2,
            )
            .await?,
        );
        Ok(rows)
    }

    /// Waits for the counters to settle and makes a row of what changed since `before`.
    async fn row(
        &self,
        before: &Snapshot,
        scenario: &str,
        nlbs: usize,
        reference: &'static str,
    ) -> Result<Row> {
        let after = self.settle().await?;
        let failed: u64 = after
            .reconciles
            .iter()
            .filter(|(outcome, _)| *outcome != "success")
            .map(|(_, n)| n)
            .sum::<u64>()
            - before
                .reconciles
                .iter()
                .filter(|(outcome, _)| *outcome != "success")
                .map(|(_, n)| n)
                .sum::<u64>();
        if failed > 0 {
            eprintln!("note: {failed} reconcile(s) failed during \"{scenario}\"");
        }
        let (calls, provider_calls) = after.since(before);
        eprintln!("{scenario}: {}", by_operation(&calls));
        Ok(Row {
            scenario: scenario.to_owned(),
            nlbs,
            calls,
            provider_calls,
            reference,
        })
    }

    fn start_controller(&mut self) -> Result<()> {
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        self.controller = Some(FerrolbProcess::spawn_aws_controller(
            &self.cp,
            &self.moto.env(),
            CLUSTER,
            &addr,
            &["--resync-period", RESYNC_PERIOD, "--log", "info"],
        )?);
        self.metrics_port = port;
        Ok(())
    }

    /// A moto instance and a Ready Node for it, with its providerID and zone.
    async fn node(&self, name: &str, zone: &str) -> Result<Instance> {
        self.moto
            .run_node(&self.client, &self.seed, name, zone)
            .await
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    async fn create_service(&self, name: &str, ports: &[i32]) -> Result<()> {
        let ports: Vec<(&str, i32)> = ports.iter().map(|&p| ("TCP", p)).collect();
        let mut svc = fixtures::lb_service(NAMESPACE, name, &ports);
        if let Some(spec) = svc.spec.as_mut() {
            spec.load_balancer_class = Some(CLASS.to_owned());
        }
        self.services()
            .create(&PostParams::default(), &svc)
            .await
            .with_context(|| format!("creating Service {name}"))?;
        Ok(())
    }

    async fn delete_service(&self, name: &str) -> Result<()> {
        let api = self.services();
        api.delete(name, &DeleteParams::default())
            .await
            .with_context(|| format!("deleting Service {name}"))?;
        wait_for(&format!("Service {name} to be gone"), WAIT, || {
            let api = api.clone();
            async move { Ok(api.get_opt(name).await?.is_none().then_some(())) }
        })
        .await
    }

    /// Waits until every named Service shows a hostname.
    async fn wait_hostnames(&self, names: &[&str]) -> Result<()> {
        let api = self.services();
        wait_for(
            &format!("a hostname on {} Service(s)", names.len()),
            WAIT,
            || {
                let api = api.clone();
                async move {
                    let list = api.list(&ListParams::default()).await?;
                    let done = list
                        .items
                        .iter()
                        .filter(|s| names.contains(&s.metadata.name.as_deref().unwrap_or("")))
                        .filter(|s| hostname(s).is_some())
                        .count();
                    Ok((done == names.len()).then_some(()))
                }
            },
        )
        .await
    }

    /// Waits until every target group has (`present`) or no target group has the instance.
    async fn wait_targets(&self, instance: &str, present: bool) -> Result<()> {
        let what = if present {
            format!("{instance} in every target group")
        } else {
            format!("{instance} in no target group")
        };
        wait_for(&what, WAIT, || async {
            let groups = self.elb.target_groups().await?;
            if groups.is_empty() {
                bail!("no target groups");
            }
            for group in &groups {
                let has = self.elb.targets(group).await?.iter().any(|t| t == instance);
                if has != present {
                    return Ok(None);
                }
            }
            Ok(Some(()))
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

    /// Waits until the controller has reconciled `n` times (any outcome).
    async fn wait_reconciles(&self, n: u64) -> Result<()> {
        wait_for(&format!("{n} reconciles"), WAIT, || async {
            let done: u64 = self.snapshot().await?.reconciles.values().sum();
            Ok((done >= n).then_some(()))
        })
        .await
    }

    /// Waits until the counters have not changed for [`QUIET`], and returns them.
    async fn settle(&self) -> Result<Snapshot> {
        let mut last = wait_for("/metrics to answer", WAIT, || async {
            Ok(Some(self.snapshot().await?))
        })
        .await?;
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(POLL).await;
            let now = self.snapshot().await?;
            if now != last {
                last = now;
                quiet_since = tokio::time::Instant::now();
            } else if quiet_since.elapsed() >= QUIET {
                return Ok(last);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the counters kept changing for {WAIT:?}: {last:?}");
            }
        }
    }
}

fn hostname(svc: &Service) -> Option<&str> {
    svc.status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .iter()
        .find_map(|i| i.hostname.as_deref())
}

/// The counters the bench needs from the Prometheus text format.
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
            "ferrolb_provider_calls_total" => snapshot.provider_calls += value,
            "ferrolb_reconciles_total" => {
                *snapshot.reconciles.entry(label("outcome")).or_default() += value;
            }
            _ => {}
        }
    }
    snapshot
}

fn is_read(operation: &str) -> bool {
    operation.starts_with("Describe")
}

/// `DescribeLoadBalancers 2 (1 not_found), CreateLoadBalancer 1`: reads first, then
/// mutations, each by name.
fn by_operation(calls: &Calls) -> String {
    let mut ops: BTreeMap<&str, (u64, Vec<String>)> = BTreeMap::new();
    for ((op, outcome), n) in calls {
        let entry = ops.entry(op.as_str()).or_default();
        entry.0 += n;
        if outcome != "success" {
            entry.1.push(format!("{n} {outcome}"));
        }
    }
    let mut ordered: Vec<(&str, (u64, Vec<String>))> = ops.into_iter().collect();
    ordered.sort_by_key(|(op, _)| (!is_read(op), *op));
    let parts: Vec<String> = ordered
        .into_iter()
        .map(|(op, (n, odd))| {
            if odd.is_empty() {
                format!("{op} {n}")
            } else {
                format!("{op} {n} ({})", odd.join(", "))
            }
        })
        .collect();
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

fn per(total: u64, n: usize) -> String {
    let n = n.max(1) as u64;
    if total.is_multiple_of(n) {
        (total / n).to_string()
    } else {
        format!("{:.2}", total as f64 / n as f64)
    }
}

fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "| scenario | AWS calls by operation (total) | mutating | reads | total | per NLB | ensure/delete calls | cloud-provider-aws (reference) |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|\n");
    for row in rows {
        let mutating: u64 = row
            .calls
            .iter()
            .filter(|((op, _), _)| !is_read(op))
            .map(|(_, n)| n)
            .sum();
        let reads: u64 = row
            .calls
            .iter()
            .filter(|((op, _), _)| is_read(op))
            .map(|(_, n)| n)
            .sum();
        let total = mutating + reads;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} ({} + {}) | {} | {} |",
            row.scenario,
            by_operation(&row.calls),
            mutating,
            reads,
            total,
            per(total, row.nlbs),
            per(mutating, row.nlbs),
            per(reads, row.nlbs),
            row.provider_calls,
            row.reference,
        );
    }
    out
}

// cloud-provider-aws's figures, from /work/shared/reference/aws.md section 2 ("AWS API
// calls": one port, default config, under 100 nodes).
const REF_CREATE_1: &str =
    "≈12–15 (incl. DescribeInstances, DescribeSecurityGroups and node-SG rule calls)";
const REF_CREATE_3: &str = "≈18–21 (12–15, + 3 per extra port)";
const REF_DELETE_1: &str = "≈4 + security-group calls (no total given)";
const REF_DELETE_3: &str = "≈6 + security-group calls (no total given)";
const REF_DELETE_2: &str = "≈5 + security-group calls (no total given)";
const REF_CREATE_50: &str = "≈15–18 per NLB, ≈750–900 in all";
const REF_RESYNC: &str = "0: a restart re-ensures nothing unchanged";
const REF_NODE: &str = "≈12 + 2 per port per NLB: ≈16 × 50 ≈ 800, serially";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_counters() {
        let body = "# TYPE ferrolb_aws_calls counter\n\
            ferrolb_aws_calls_total{service=\"elbv2\",operation=\"DescribeLoadBalancers\",outcome=\"not_found\"} 1\n\
            ferrolb_aws_calls_total{service=\"elbv2\",operation=\"DescribeLoadBalancers\",outcome=\"success\"} 3\n\
            ferrolb_provider_calls_total{provider=\"aws\",operation=\"ensure\",outcome=\"success\"} 2\n\
            ferrolb_reconciles_total{outcome=\"success\"} 2\n\
            # EOF\n";
        let s = parse_metrics(body);
        assert_eq!(
            by_operation(&s.aws),
            "DescribeLoadBalancers 4 (1 not_found)"
        );
        assert_eq!(s.provider_calls, 2);
        assert_eq!(s.reconciles.get("success"), Some(&2));
    }
}
