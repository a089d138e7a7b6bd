//! The bare-metal scale suite: many Services, Nodes and EndpointSlices made
//! against a real kube-apiserver, and what the controller costs at that size
//! (time to converge, writes, memory), next to what the apiserver itself costs
//! for the same work.
//!
//! `e2e/tests/scale.rs` runs it small in CI (so it cannot rot) and checks what
//! does not depend on timing; `e2e/examples/scale.rs` runs it at full size and
//! prints the table in `docs/benchmarks.md`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ferrolb::cache::list_all;
use ferrolb_e2e::fixtures::{self, EndpointSpec};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::bench::ms;
use super::ingress_ips;

/// A class no controller serves: the baseline's Services.
pub const UNSERVED_CLASS: &str = "bench.ferrolb.io/unserved";

/// The name of the `i`th Service of a run.
pub fn service_name(i: usize) -> String {
    format!("svc-{i:05}")
}

/// Runs `f(i)` for `0..n` with at most `concurrency` in flight; fails on the
/// first error.
pub async fn for_each_concurrent<F, Fut>(n: usize, concurrency: usize, f: F) -> Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    stream::iter((0..n).map(f))
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await
        .map(drop)
}

/// Creates `n` LoadBalancer Services of `class` in `ns`, `concurrency` at a
/// time, each with one TCP port and no node port; returns when each one's
/// create answered.
pub async fn create_services(
    client: &Client,
    ns: &str,
    class: &str,
    n: usize,
    concurrency: usize,
) -> Result<HashMap<String, Instant>> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let created = Arc::new(Mutex::new(HashMap::with_capacity(n)));
    for_each_concurrent(n, concurrency, |i| {
        let (api, created) = (api.clone(), created.clone());
        async move {
            let name = service_name(i);
            let mut svc = fixtures::lb_service(ns, &name, &[("TCP", 80)]);
            let spec = svc.spec.as_mut().unwrap();
            spec.load_balancer_class = Some(class.to_string());
            // The default range has 2,768 node ports; a bare-metal VIP needs none.
            spec.allocate_load_balancer_node_ports = Some(false);
            api.create(&PostParams::default(), &svc)
                .await
                .with_context(|| format!("creating Service {name}"))?;
            created.lock().unwrap().insert(name, Instant::now());
            Ok(())
        }
    })
    .await?;
    Ok(std::mem::take(&mut *created.lock().unwrap()))
}

/// Patches the status of Services `0..n` in `ns` with one address each,
/// `concurrency` at a time: the apiserver's own cost of what a controller
/// must write at the least.
pub async fn patch_statuses(
    client: &Client,
    ns: &str,
    n: usize,
    concurrency: usize,
    shape: Shape,
) -> Result<()> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    for_each_concurrent(n, concurrency, |i| {
        let api = api.clone();
        async move { patch_status(&api, &service_name(i), i, shape).await }
    })
    .await
}

/// What a plain client's status patch holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// The address alone: the issue's baseline.
    Address,
    /// What ferrolb's bare-metal write holds: its finalizer and the two
    /// annotations that record the allocation, with the address.
    Ferrolb,
}

async fn patch_status(api: &Api<Service>, name: &str, i: usize, shape: Shape) -> Result<()> {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i as u32);
    let mut patch =
        json!({"status": {"loadBalancer": {"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}}});
    if shape == Shape::Ferrolb {
        patch["metadata"] = json!({
            "finalizers": ["ferrolb.io/load-balancer-cleanup"],
            "annotations": {
                "ferrolb.io/ip-allocated-from-pool": "scale",
                "ferrolb.io/allocated-ips": ip.to_string(),
            },
        });
    }
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("patching the status of {name}"))?;
    Ok(())
}

/// Watches `ns` and records when each Service first shows an address, until
/// `n` do or `timeout` passes.
pub fn watch_addressed(
    client: &Client,
    ns: &str,
    n: usize,
    timeout: Duration,
) -> tokio::task::JoinHandle<Result<HashMap<String, Instant>>> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    tokio::spawn(async move {
        let mut seen = HashMap::with_capacity(n);
        let events = watcher(api, watcher::Config::default()).applied_objects();
        let mut events = std::pin::pin!(events);
        let deadline = tokio::time::Instant::now() + timeout;
        while seen.len() < n {
            let svc = match tokio::time::timeout_at(deadline, events.next()).await {
                Err(_) => bail!(
                    "only {} of {n} Services had an address after {timeout:?}",
                    seen.len()
                ),
                Ok(None) => bail!("the Service watch ended"),
                Ok(Some(svc)) => svc?,
            };
            if !ingress_ips(&svc).is_empty() {
                seen.entry(svc.name_any()).or_insert_with(Instant::now);
            }
        }
        Ok(seen)
    })
}

/// A controller that does nothing but the least: each new Service in `ns`
/// gets one status patch, `concurrency` at a time, as soon as it is seen.
/// It ends after `n` patches.
pub fn null_controller(
    client: &Client,
    ns: &str,
    n: usize,
    concurrency: usize,
) -> tokio::task::JoinHandle<Result<()>> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    tokio::spawn(async move {
        let mut queued = HashSet::new();
        let names = watcher(api.clone(), watcher::Config::default())
            .applied_objects()
            .try_filter_map(move |svc| {
                let fresh = ingress_ips(&svc).is_empty() && queued.insert(svc.name_any());
                futures::future::ready(Ok(fresh.then(|| svc.name_any())))
            })
            .take(n);
        names
            .map_err(anyhow::Error::from)
            .map_ok(|name| {
                let api = api.clone();
                async move {
                    let i: usize = name.trim_start_matches("svc-").parse().unwrap_or(0);
                    patch_status(&api, &name, i, Shape::Address).await
                }
            })
            .try_buffer_unordered(concurrency.max(1))
            .try_collect::<Vec<()>>()
            .await
            .map(drop)
    })
}

/// Per-Service time from its create to its first address, and the time from
/// `start` to the last address.
pub struct Convergence {
    pub per_service: Vec<Duration>,
    pub total: Duration,
}

impl Convergence {
    pub fn of(
        start: Instant,
        created: &HashMap<String, Instant>,
        addressed: &HashMap<String, Instant>,
    ) -> Result<Convergence> {
        let mut per_service = Vec::with_capacity(created.len());
        let mut last = start;
        for (name, at) in addressed {
            let made = created
                .get(name)
                .with_context(|| format!("{name} has an address but was not created here"))?;
            per_service.push(at.saturating_duration_since(*made));
            last = last.max(*at);
        }
        per_service.sort();
        Ok(Convergence {
            per_service,
            total: last - start,
        })
    }

    pub fn percentile(&self, p: usize) -> Duration {
        let v = &self.per_service;
        v[(v.len() * p / 100).min(v.len() - 1)]
    }
}

/// Nodes `node-0000`.. with one InternalIP each in 10.200.0.0/16 (and beyond),
/// all Ready.
pub async fn create_nodes(client: &Client, n: usize, concurrency: usize) -> Result<()> {
    for_each_concurrent(n, concurrency, |i| async move {
        fixtures::create_node(client, &node_name(i), &[node_ip(i)], None, &[], true).await?;
        Ok(())
    })
    .await
}

pub fn node_name(i: usize) -> String {
    format!("node-{i:04}")
}

fn node_ip(i: usize) -> IpAddr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 0)) + i as u32).into()
}

/// One EndpointSlice per Service `0..n` in `ns`, with two ready endpoints on
/// two of the `nodes` nodes.
pub async fn create_slices(
    client: &Client,
    ns: &str,
    n: usize,
    nodes: usize,
    concurrency: usize,
) -> Result<()> {
    for_each_concurrent(n, concurrency, |i| async move {
        let (a, b) = (node_name(i % nodes), node_name((i + 1) % nodes));
        let base = u32::from(Ipv4Addr::new(10, 128, 0, 0)) + 2 * i as u32;
        let endpoints = [
            EndpointSpec {
                address: Ipv4Addr::from(base).into(),
                node: Some(&a),
                ready: true,
            },
            EndpointSpec {
                address: Ipv4Addr::from(base + 1).into(),
                node: Some(&b),
                ready: true,
            },
        ];
        let svc = service_name(i);
        fixtures::create_endpoint_slice(
            client,
            ns,
            &svc,
            &format!("{svc}-abcde"),
            &endpoints,
            &[(Some("tcp-80"), "TCP", 80)],
        )
        .await?;
        Ok(())
    })
    .await
}

/// The apiserver's count of write requests (POST, PUT, PATCH, DELETE) by
/// resource (with `/subresource`), from its `apiserver_request_total`.
pub async fn apiserver_writes(client: &Client) -> Result<BTreeMap<String, u64>> {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .context("building the /metrics request")?;
    let text = client
        .request_text(req)
        .await
        .context("reading the apiserver's /metrics")?;
    Ok(parse_writes(&text))
}

fn parse_writes(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        if !matches!(label("verb").as_str(), "POST" | "PUT" | "PATCH" | "DELETE") {
            continue;
        }
        let mut resource = label("resource");
        let sub = label("subresource");
        if !sub.is_empty() {
            resource = format!("{resource}/{sub}");
        }
        let n: f64 = value.trim().parse().unwrap_or(0.0);
        *out.entry(resource).or_default() += n as u64;
    }
    out
}

/// Writes the apiserver makes on its own: the IPAddress object behind each
/// Service's ClusterIP (part of the create), its identity Lease and the
/// `kubernetes` Service's Endpoints. No controller here writes these (leader
/// election is off).
const APISERVER_OWN: [&str; 4] = ["ipaddresses", "leases", "endpoints", "endpointslices"];

/// `after - before`, per resource, without the zeros and without the
/// apiserver's own writes.
pub fn writes_between(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter(|(k, _)| !APISERVER_OWN.contains(&k.as_str()))
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// `resource n, resource n` for a table cell.
pub fn writes_cell(writes: &BTreeMap<String, u64>) -> String {
    if writes.is_empty() {
        return "none".into();
    }
    writes
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Resident and peak resident memory of a process, in MiB, from
/// `/proc/<pid>/status`.
pub fn memory_mib(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = |field: &str| -> Result<f64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
        let n: f64 = line
            .split_whitespace()
            .nth(1)
            .context("malformed line")?
            .parse()?;
        Ok(n / 1024.0)
    };
    Ok((kib("VmRSS:")?, kib("VmHWM:")?))
}

/// Waits until `n` Services in `ns` show an address, polling with a list.
pub async fn wait_all_addressed(
    client: &Client,
    ns: &str,
    n: usize,
    timeout: Duration,
) -> Result<()> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + timeout;
    loop {
        let have = count_addressed(&api).await?;
        if have >= n {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "only {have} of {n} Services in {ns} had an address after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How many Services the list shows with an address (paged).
pub async fn count_addressed(api: &Api<Service>) -> Result<usize> {
    let addressed = list_all(api, |s| (!ingress_ips(&s).is_empty()).then_some(())).await?;
    Ok(addressed.len())
}

/// `ferrolb controller` for the suite: bare metal, no leader election, info
/// logs, metrics on a port of its own; returns once `/readyz` answers 200.
pub struct Controller {
    pub process: ferrolb_e2e::FerrolbProcess,
    pub port: u16,
    pub started: Instant,
    pub ready_after: Duration,
}

impl Controller {
    pub async fn start(env: &super::Env, class: &str, extra: &[&str]) -> Result<Controller> {
        let port = super::free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut args = vec![
            "controller",
            "--log",
            "info",
            "--leader-election=false",
            "--metrics-addr",
            &addr,
            "--load-balancer-class",
            class,
        ];
        args.extend_from_slice(extra);
        let started = Instant::now();
        let process = ferrolb_e2e::FerrolbProcess::spawn(&env.cp, &args, &[])?;
        let deadline = started + Duration::from_secs(300);
        loop {
            if let Ok((200, _)) = super::http_get(port, "/readyz").await {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the controller was not ready after 300 s; log:\n{}",
                process.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Controller {
            process,
            port,
            ready_after: started.elapsed(),
            started,
        })
    }

    /// The sum of a metric's series whose line starts with `prefix`
    /// (a name, or a name and the start of its labels).
    pub async fn metric(&self, prefix: &str) -> Result<f64> {
        let (code, body) = super::http_get(self.port, "/metrics").await?;
        ensure!(code == 200, "GET /metrics gave {code}");
        Ok(body
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum())
    }

    /// Waits until the controller has reconciled at least `n` Services
    /// successfully since it started.
    pub async fn wait_reconciled(&self, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let done = self
                .metric("ferrolb_reconciles_total{outcome=\"success\"}")
                .await?;
            if done as usize >= n {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "{done} of {n} reconciles after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn memory_mib(&self) -> Result<(f64, f64)> {
        memory_mib(self.process.pid())
    }
}

/// One row of the convergence table.
pub struct ConvergenceRow {
    pub what: String,
    pub services: usize,
    pub total: Duration,
    /// Per-Service time from create to address; `None` where it does not apply.
    pub p50_p99: Option<(Duration, Duration)>,
    /// Writes to the apiserver per Service, beyond the Service's own create.
    pub writes: BTreeMap<String, u64>,
    /// CPU used over the timed span.
    pub cpu: Cpu,
}

/// CPU time (user and system) used over a span: by kube-apiserver and etcd
/// together, and by ferrolb where it ran.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    pub control_plane: Duration,
    pub controller: Option<Duration>,
}

/// CPU time a process has used so far, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses; the fields that
    // follow it start with the state (field 3), so utime (14) and stime (15)
    // are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("malformed /proc/<pid>/stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks =
        |i: usize| -> Result<u64> { Ok(fields.get(i).context("short /proc/<pid>/stat")?.parse()?) };
    let hz = rustix::param::clock_ticks_per_second();
    Ok(Duration::from_secs_f64(
        (ticks(11)? + ticks(12)?) as f64 / hz as f64,
    ))
}

/// Counts CPU time from its start: the control plane's and, when given, a
/// controller's.
struct CpuMeter {
    pids: Vec<u32>,
    controller: Option<u32>,
    at_start: Vec<Duration>,
    controller_at_start: Option<Duration>,
}

impl CpuMeter {
    fn start(env: &super::Env, controller: Option<u32>) -> Result<CpuMeter> {
        let pids: Vec<u32> = [env.cp.apiserver_pid(), env.cp.etcd_pid()]
            .into_iter()
            .flatten()
            .collect();
        Ok(CpuMeter {
            at_start: pids.iter().map(|p| cpu_time(*p)).collect::<Result<_>>()?,
            pids,
            controller_at_start: controller.map(cpu_time).transpose()?,
            controller,
        })
    }

    fn read(&self) -> Result<Cpu> {
        let mut control_plane = Duration::ZERO;
        for (pid, at_start) in self.pids.iter().zip(&self.at_start) {
            control_plane += cpu_time(*pid)?.saturating_sub(*at_start);
        }
        let controller = match (self.controller, self.controller_at_start) {
            (Some(pid), Some(at_start)) => Some(cpu_time(pid)?.saturating_sub(at_start)),
            _ => None,
        };
        Ok(Cpu {
            control_plane,
            controller,
        })
    }
}

/// Convergence of `n` Services created at once (`concurrency` creates in
/// flight), for a controller with each set of flags in `runs`, next to the
/// apiserver's own cost, all on one apiserver:
/// - creating `n` Services alone;
/// - `n` status patches alone from a plain client (the issue's baseline);
/// - the same patches with ferrolb's finalizer and annotations in them,
///   into `n` other Services: the apiserver's cost of the writes ferrolb
///   makes;
/// - a plain client that lists and watches `n` Services created before it
///   and patches each one's status: the same writes as the baseline, plus
///   the list and the watch any controller needs;
/// - ferrolb started over `n` Services created before it, timed from its
///   start to the last address: the same `n` status writes into Services
///   that are there already, so the row to hold against that baseline;
/// - creating `n` Services with a null controller that patches each one's
///   status once as soon as it sees it (the least any controller can do);
/// - the same with ferrolb;
/// - the null controller again, since each row finds the Services of the
///   rows before it in etcd and so runs on a fuller apiserver: each ferrolb
///   row is compared with the null controller's total interpolated to its
///   place between the two.
///
/// Each run has a namespace and a `loadBalancerClass` of its own, so no run
/// reconciles another's Services.
pub async fn convergence(
    env: &super::Env,
    n: usize,
    concurrency: usize,
    runs: &[&[&str]],
) -> Result<Vec<ConvergenceRow>> {
    let client = &env.client;
    let timeout = Duration::from_secs(60 + n as u64 / 5);
    let pool_size = (n * (runs.len() + 2)).next_power_of_two().max(256);
    let prefix = 32 - pool_size.trailing_zeros();
    env.create_pool("scale", &[&format!("10.64.0.0/{prefix}")], |_| {})
        .await?;
    let mut rows = Vec::new();

    let ns = "base-patch";
    fixtures::create_namespace(client, ns).await?;
    let before = apiserver_writes(client).await?;
    let meter = CpuMeter::start(env, None)?;
    let start = Instant::now();
    create_services(client, ns, UNSERVED_CLASS, n, concurrency).await?;
    let created = start.elapsed();
    let creating = meter.read()?;
    let meter = CpuMeter::start(env, None)?;
    let start = Instant::now();
    patch_statuses(client, ns, n, concurrency, Shape::Address).await?;
    let patched = start.elapsed();
    let patching = meter.read()?;
    let writes = writes_between(&before, &apiserver_writes(client).await?);
    rows.push(ConvergenceRow {
        what: format!("apiserver: {n} creates alone"),
        services: n,
        total: created,
        p50_p99: None,
        writes: BTreeMap::new(),
        cpu: creating,
    });
    rows.push(ConvergenceRow {
        what: format!("apiserver: {n} status patches alone (baseline)"),
        services: n,
        total: patched,
        p50_p99: None,
        writes: without_creates(writes, n),
        cpu: patching,
    });
    rows.push(shaped_patches(env, n, concurrency).await?);
    rows.push(null_started_over(env, n, concurrency, timeout).await?);
    rows.push(started_over_services(env, n, concurrency, timeout).await?);

    let null_row = async |ns: &str, what: &str| -> Result<ConvergenceRow> {
        fixtures::create_namespace(client, ns).await?;
        let row = run_converging(
            env,
            ns,
            UNSERVED_CLASS,
            n,
            concurrency,
            timeout,
            None,
            || null_controller(client, ns, n, concurrency),
        )
        .await?;
        Ok(ConvergenceRow {
            what: format!(
                "{NULL_CONTROLLER}{what}: creates + 1 status patch each, {concurrency} in flight"
            ),
            ..row
        })
    };
    rows.push(null_row("base-null", "").await?);

    for (i, flags) in runs.iter().enumerate() {
        let ns = format!("ferrolb-{i}");
        let class = format!("bench.ferrolb.io/run{i}");
        let label = if flags.is_empty() {
            "defaults".to_string()
        } else {
            flags.join(" ")
        };
        fixtures::create_namespace(client, &ns).await?;
        let ctl = Controller::start(env, &class, flags).await?;
        let pid = Some(ctl.process.pid());
        let row = run_converging(env, &ns, &class, n, concurrency, timeout, pid, || {
            tokio::spawn(async { Ok(()) })
        })
        .await
        .with_context(|| format!("ferrolb {label}; log:\n{}", tail(&ctl.process.log())))?;
        rows.push(ConvergenceRow {
            what: format!("ferrolb ({label}): creates + convergence"),
            ..row
        });
        drop(ctl);
    }
    rows.push(null_row("base-null-again", " (again, after ferrolb)").await?);
    Ok(rows)
}

/// The baseline's patches with what ferrolb's write holds besides the
/// address (see [`Shape::Ferrolb`]), into `n` new Services: what the
/// apiserver takes for the writes ferrolb makes, with no controller.
async fn shaped_patches(env: &super::Env, n: usize, concurrency: usize) -> Result<ConvergenceRow> {
    let client = &env.client;
    let ns = "base-patch-shaped";
    fixtures::create_namespace(client, ns).await?;
    create_services(client, ns, UNSERVED_CLASS, n, concurrency).await?;
    let before = apiserver_writes(client).await?;
    let meter = CpuMeter::start(env, None)?;
    let start = Instant::now();
    patch_statuses(client, ns, n, concurrency, Shape::Ferrolb).await?;
    let total = start.elapsed();
    let cpu = meter.read()?;
    Ok(ConvergenceRow {
        what: format!(
            "apiserver: {n} status patches alone, with ferrolb's finalizer and annotations"
        ),
        services: n,
        total,
        p50_p99: None,
        writes: writes_between(&before, &apiserver_writes(client).await?),
        cpu,
    })
}

/// What the started-over rows begin with: `n` Services of `class` in a new
/// namespace, made before anything serves them, and a watch of their
/// addresses.
struct Waiting {
    names: Vec<String>,
    /// The apiserver's write counts once the Services were made.
    before: BTreeMap<String, u64>,
    addressed: tokio::task::JoinHandle<Result<HashMap<String, Instant>>>,
}

async fn services_waiting(
    env: &super::Env,
    ns: &str,
    class: &str,
    n: usize,
    concurrency: usize,
    timeout: Duration,
) -> Result<Waiting> {
    let client = &env.client;
    fixtures::create_namespace(client, ns).await?;
    let created = create_services(client, ns, class, n, concurrency).await?;
    let before = apiserver_writes(client).await?;
    let addressed = watch_addressed(client, ns, n, timeout);
    // Let the watch start before whatever serves the Services does.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(Waiting {
        names: created.into_keys().collect(),
        before,
        addressed,
    })
}

/// Every Service as if made at `start`: each one's time counts from there.
fn all_made_at(names: &[String], start: Instant) -> HashMap<String, Instant> {
    names.iter().map(|n| (n.clone(), start)).collect()
}

/// The least a controller started over `n` Services can do: a plain client
/// that lists and watches them and patches each one's status, `concurrency`
/// at a time, from the moment it starts (in this process: no start-up).
/// The floor for the row after it.
async fn null_started_over(
    env: &super::Env,
    n: usize,
    concurrency: usize,
    timeout: Duration,
) -> Result<ConvergenceRow> {
    let client = &env.client;
    let ns = "base-null-start";
    let Waiting {
        names,
        before,
        addressed,
    } = services_waiting(env, ns, UNSERVED_CLASS, n, concurrency, timeout).await?;
    let meter = CpuMeter::start(env, None)?;
    let start = Instant::now();
    let patching = null_controller(client, ns, n, concurrency);
    let addressed = addressed.await??;
    let cpu = meter.read()?;
    patching.await??;
    let c = Convergence::of(start, &all_made_at(&names, start), &addressed)?;
    Ok(ConvergenceRow {
        what: format!(
            "plain client, list + watch + 1 status patch each: started over {n} Services"
        ),
        services: n,
        total: c.total,
        p50_p99: Some((c.percentile(50), c.percentile(99))),
        writes: writes_between(&before, &apiserver_writes(client).await?),
        cpu,
    })
}

/// ferrolb with its defaults, started once `n` Services of its class are
/// there: from the process's start to the last address.
async fn started_over_services(
    env: &super::Env,
    n: usize,
    concurrency: usize,
    timeout: Duration,
) -> Result<ConvergenceRow> {
    let client = &env.client;
    let (ns, class) = ("ferrolb-start", "bench.ferrolb.io/start");
    let Waiting {
        names,
        before,
        addressed,
    } = services_waiting(env, ns, class, n, concurrency, timeout).await?;
    let meter = CpuMeter::start(env, None)?;
    let ctl = Controller::start(env, class, &[]).await?;
    let addressed = addressed.await?.with_context(|| {
        format!(
            "ferrolb started over Services; log:\n{}",
            tail(&ctl.process.log())
        )
    })?;
    // The controller's CPU counts from its start.
    let cpu = Cpu {
        controller: Some(cpu_time(ctl.process.pid())?),
        ..meter.read()?
    };
    // Each Service's time counts from the controller's start.
    let c = Convergence::of(ctl.started, &all_made_at(&names, ctl.started), &addressed)?;
    let writes = writes_between(&before, &settled_writes(client).await?);
    // Where the start-up time goes: until `/readyz` (the caches listed and
    // the state restored), then until the first address.
    let first = c.per_service.first().copied().unwrap_or_default();
    Ok(ConvergenceRow {
        what: format!(
            "ferrolb (defaults): started over {n} Services, start to last address \
             (ready at {} ms, first address at {} ms)",
            ctl.ready_after.as_millis(),
            first.as_millis()
        ),
        services: n,
        total: c.total,
        p50_p99: Some((c.percentile(50), c.percentile(99))),
        writes,
        cpu,
    })
}

/// How the rows of the null controller start.
const NULL_CONTROLLER: &str = "null controller";

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The Service creates themselves are not the controller's writes.
fn without_creates(mut writes: BTreeMap<String, u64>, n: usize) -> BTreeMap<String, u64> {
    if let Some(c) = writes.get_mut("services") {
        *c = c.saturating_sub(n as u64);
        if *c == 0 {
            writes.remove("services");
        }
    }
    writes
}

/// Creates `n` Services of `class` in `ns` with whatever `converger` starts
/// doing its job, and times until every one has an address; the CPU of the
/// process `controller` counts when given.
#[allow(clippy::too_many_arguments)]
async fn run_converging(
    env: &super::Env,
    ns: &str,
    class: &str,
    n: usize,
    concurrency: usize,
    timeout: Duration,
    controller: Option<u32>,
    converger: impl FnOnce() -> tokio::task::JoinHandle<Result<()>>,
) -> Result<ConvergenceRow> {
    let client = &env.client;
    let before = apiserver_writes(client).await?;
    let addressed = watch_addressed(client, ns, n, timeout);
    let converging = converger();
    // Let both watches start before the first create.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let meter = CpuMeter::start(env, controller)?;
    let start = Instant::now();
    let created = create_services(client, ns, class, n, concurrency).await?;
    let addressed = addressed.await??;
    let cpu = meter.read()?;
    converging.await??;
    let c = Convergence::of(start, &created, &addressed)?;
    // Writes that trail the addresses (Events) are the controller's too.
    let writes = without_creates(writes_between(&before, &settled_writes(client).await?), n);
    Ok(ConvergenceRow {
        what: String::new(),
        services: n,
        total: c.total,
        p50_p99: Some((c.percentile(50), c.percentile(99))),
        writes,
        cpu,
    })
}

/// The apiserver's write counts once those not its own have stood still for
/// a second (at most a minute): the Events that follow a burst count whole.
async fn settled_writes(client: &Client) -> Result<BTreeMap<String, u64>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = apiserver_writes(client).await?;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = apiserver_writes(client).await?;
        // The apiserver's own writes go on regardless.
        if writes_between(&last, &now).is_empty() || Instant::now() > deadline {
            return Ok(now);
        }
        last = now;
    }
}

/// What the memory and restart scenario measured.
pub struct Steady {
    pub services: usize,
    pub nodes: usize,
    pub slices: usize,
    /// Creating the Nodes, EndpointSlices and Services (apiserver alone).
    pub populate: Duration,
    /// A plain client's paged list of every Service, Node and EndpointSlice:
    /// the least a starting controller must read.
    pub list_baseline: Duration,
    /// The controller's RSS on the empty cluster, just after start.
    pub idle_rss: f64,
    /// First start over unaddressed Services: ready, then all addressed.
    pub cold_ready: Duration,
    pub cold_converged: Duration,
    pub cold_writes: BTreeMap<String, u64>,
    /// RSS and peak RSS once converged.
    pub rss: (f64, f64),
    /// Restart over converged Services: ready, then all reconciled.
    pub restart_ready: Duration,
    pub restart_reconciled: Duration,
    pub restart_writes: BTreeMap<String, u64>,
    pub restart_rss: (f64, f64),
}

/// `services` Services (one port, our class) with one EndpointSlice each and
/// `nodes` Nodes: the controller's memory once converged, and what a restart
/// costs when nothing changed.
pub async fn steady_state(
    env: &super::Env,
    services: usize,
    nodes: usize,
    concurrency: usize,
) -> Result<Steady> {
    let client = &env.client;
    let class = super::CLASS;
    let ns = "steady";
    let timeout = Duration::from_secs(120 + services as u64 / 20);
    let idle = Controller::start(env, class, &[]).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = idle.memory_mib()?.0;
    drop(idle);

    let pool_size = services.next_power_of_two().max(256) * 2;
    let prefix = 32 - pool_size.trailing_zeros();
    env.create_pool("steady", &[&format!("10.96.0.0/{prefix}")], |_| {})
        .await?;
    fixtures::create_namespace(client, ns).await?;
    let start = Instant::now();
    create_nodes(client, nodes, concurrency).await?;
    create_slices(client, ns, services, nodes, concurrency).await?;
    create_services(client, ns, class, services, concurrency).await?;
    let populate = start.elapsed();

    let start = Instant::now();
    list_everything(client).await?;
    let list_baseline = start.elapsed();

    let before = apiserver_writes(client).await?;
    let ctl = Controller::start(env, class, &[]).await?;
    wait_all_addressed(client, ns, services, timeout)
        .await
        .with_context(|| tail(&ctl.process.log()))?;
    let cold_converged = ctl.started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cold_writes = writes_between(&before, &apiserver_writes(client).await?);
    let rss = ctl.memory_mib()?;
    let cold_ready = ctl.ready_after;
    let mut ctl = ctl;
    ctl.process.terminate().await?;

    let before = apiserver_writes(client).await?;
    let ctl = Controller::start(env, class, &[]).await?;
    ctl.wait_reconciled(services, timeout)
        .await
        .with_context(|| tail(&ctl.process.log()))?;
    let restart_reconciled = ctl.started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restart_writes = writes_between(&before, &apiserver_writes(client).await?);
    let restart_rss = ctl.memory_mib()?;
    Ok(Steady {
        services,
        nodes,
        slices: services,
        populate,
        list_baseline,
        idle_rss,
        cold_ready,
        cold_converged,
        cold_writes,
        rss,
        restart_ready: ctl.ready_after,
        restart_reconciled,
        restart_writes,
        restart_rss,
    })
}

/// Paged lists of every Service, Node and EndpointSlice, 500 a page.
async fn list_everything(client: &Client) -> Result<()> {
    use k8s_openapi::api::core::v1::Node;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let (services, nodes, slices) = (
        Api::<Service>::all(client.clone()),
        Api::<Node>::all(client.clone()),
        Api::<EndpointSlice>::all(client.clone()),
    );
    // Read and decoded; nothing kept.
    let (a, b, c) = tokio::join!(
        list_all(&services, |_| None::<()>),
        list_all(&nodes, |_| None::<()>),
        list_all(&slices, |_| None::<()>),
    );
    a?;
    b?;
    c?;
    Ok(())
}

/// The convergence table, in Markdown.
pub fn convergence_table(rows: &[ConvergenceRow]) -> String {
    let baseline = rows
        .iter()
        .find(|r| r.what.contains("(baseline)"))
        .map(|r| r.total);
    // What a row is compared with: for a row between the null controller's
    // first and last runs, its total interpolated by the row's place between
    // them; for the rest (the last run too, which so shows the drift), its
    // first run.
    let nulls: Vec<(usize, Duration)> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.what.starts_with(NULL_CONTROLLER))
        .map(|(i, r)| (i, r.total))
        .collect();
    let null = |i: usize| -> Option<Duration> {
        let (&(a, ta), &(b, tb)) = (nulls.first()?, nulls.last()?);
        if i <= a || i >= b {
            return Some(ta);
        }
        let f = (i - a) as f64 / (b - a) as f64;
        Some(ta.mul_f64(1.0 - f) + tb.mul_f64(f))
    };
    let mut out = String::from(
        "| what | Services | total | per Service p50 | p99 | × baseline | × null controller | writes per Service (besides the create) | CPU: apiserver + etcd / ferrolb |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for (i, r) in rows.iter().enumerate() {
        let ratio = |b: Option<Duration>| {
            b.map_or("".into(), |b| {
                format!("{:.2}", r.total.as_secs_f64() / b.as_secs_f64())
            })
        };
        let (p50, p99) = r
            .p50_p99
            .map_or(("".into(), "".into()), |(a, b)| (ms(a), ms(b)));
        let per: Vec<String> = r
            .writes
            .iter()
            .map(|(k, v)| format!("{k} {:.2}", *v as f64 / r.services as f64))
            .collect();
        let cpu = match r.cpu.controller {
            Some(c) => format!("{} / {}", ms(r.cpu.control_plane), ms(c)),
            None => ms(r.cpu.control_plane),
        };
        out += &format!(
            "| {} | {} | {} | {p50} | {p99} | {} | {} | {} | {cpu} |\n",
            r.what,
            r.services,
            ms(r.total),
            ratio(baseline),
            ratio(null(i)),
            if per.is_empty() {
                "none".into()
            } else {
                per.join(", ")
            },
        );
    }
    out
}

/// The memory and restart table, in Markdown.
pub fn steady_table(s: &Steady) -> String {
    format!(
        "| what | figure |\n|---|---|\n\
         | objects | {} Services (LoadBalancer, one port), {} Nodes, {} EndpointSlices |\n\
         | apiserver: creating them | {} |\n\
         | apiserver: one paged list of all of them (baseline for a start) | {} |\n\
         | controller RSS, empty cluster (baseline) | {:.1} MiB |\n\
         | first start, no Service addressed yet: ready / all addressed | {} / {} |\n\
         | first start: writes | {} |\n\
         | RSS once converged (peak) | {:.1} MiB ({:.1} MiB) |\n\
         | restart, all converged: ready / all reconciled | {} / {} |\n\
         | restart: writes | {} |\n\
         | RSS after the restart (peak) | {:.1} MiB ({:.1} MiB) |\n",
        s.services,
        s.nodes,
        s.slices,
        ms(s.populate),
        ms(s.list_baseline),
        s.idle_rss,
        ms(s.cold_ready),
        ms(s.cold_converged),
        writes_cell(&s.cold_writes),
        s.rss.0,
        s.rss.1,
        ms(s.restart_ready),
        ms(s.restart_reconciled),
        writes_cell(&s.restart_writes),
        s.restart_rss.0,
        s.restart_rss.1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_read_from_the_apiserver_metrics() {
        let text = r#"# HELP apiserver_request_total x
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="services",scope="resource",subresource="",verb="POST",version="v1"} 10
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="services",scope="resource",subresource="status",verb="PATCH",version="v1"} 7
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="services",scope="namespace",subresource="",verb="LIST",version="v1"} 3
apiserver_request_total{code="409",component="apiserver",dry_run="",group="",resource="services",scope="resource",subresource="",verb="POST",version="v1"} 1
"#;
        let w = parse_writes(text);
        assert_eq!(w.get("services"), Some(&11));
        assert_eq!(w.get("services/status"), Some(&7));
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn rows_between_the_null_runs_are_compared_with_their_interpolation() {
        let row = |what: &str, ms: u64| ConvergenceRow {
            what: what.into(),
            services: 10,
            total: Duration::from_millis(ms),
            p50_p99: None,
            writes: BTreeMap::new(),
            cpu: Cpu::default(),
        };
        let rows = [
            row("apiserver: creates alone", 500),
            row("null controller: first", 1000),
            row("ferrolb (a)", 1100),
            row("ferrolb (b)", 1800),
            row("null controller (again): last", 1600),
        ];
        let ratios: Vec<String> = convergence_table(&rows)
            .lines()
            .skip(2)
            .map(|l| l.split(" | ").nth(6).unwrap_or_default().to_string())
            .collect();
        // (a) against 1200 ms, a third of the way; (b) against 1400 ms; the
        // last null run against the first, which shows the drift.
        assert_eq!(ratios, ["0.50", "1.00", "0.92", "1.29", "1.60"]);
    }
}
