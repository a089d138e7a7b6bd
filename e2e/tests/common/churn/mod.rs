//! A seeded random churn of LoadBalancer Services: creates, port changes,
//! annotation changes (requested addresses, pool, sharing key, or just a
//! label-like annotation nobody reads) and deletes, over a fixed number of
//! slots, some of them for another loadBalancerClass.
//!
//! The churn is built so that every request it makes can be met (each slot
//! requests addresses no other slot requests; Services that share use ports
//! no other slot uses), so after it stops every Service must end up served,
//! and what a Service shows can be judged from the Service alone.
//!
//! Each request change bumps the Service's [`REQUEST_GEN`] annotation. The
//! [`observe`] checker uses it to tell an address that moved because the
//! user asked for something else from one that moved by itself.

#![allow(dead_code)] // crash.rs and apiserver_faults.rs use different parts

pub mod aws;
pub mod check;
pub mod killer;
pub mod observe;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferrolb_e2e::fixtures;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::watch;

use observe::Observed;

/// The class of the Services that belong to another install.
pub const OTHER_CLASS: &str = "example.com/other";
/// Bumped on every change of what a Service asks the allocator for.
pub const REQUEST_GEN: &str = "e2e.ferrolb.io/request-generation";
/// The churn operation that wrote the Service last, to tell after an error
/// whether the write happened.
pub const OP: &str = "e2e.ferrolb.io/op";
/// An annotation no controller reads.
pub const TOUCHED: &str = "example.com/touched";

pub const POOL: &str = "ferrolb.io/pool";
pub const LOAD_BALANCER_IPS: &str = "ferrolb.io/load-balancer-ips";
pub const SHARED: &str = "ferrolb.io/allow-shared-ip";
pub const ALLOCATED_FROM: &str = "ferrolb.io/ip-allocated-from-pool";
pub const ALLOCATED_IPS: &str = "ferrolb.io/allocated-ips";
pub const ALLOCATED_SHARING_KEY: &str = "ferrolb.io/allocated-sharing-key";
pub const ALLOCATED_SHARING_TERMS: &str = "ferrolb.io/allocated-sharing-terms";

/// The churn's pools: two that assign automatically, one that serves only
/// explicit requests, and one kept for a namespace the churn never uses.
pub const POOLS: [(&str, &str, bool); 4] = [
    ("blue", "10.10.0.0/23", true),
    ("green", "10.11.0.0/23", true),
    ("manual", "10.20.0.0/23", false),
    ("elsewhere", "10.30.0.0/24", true),
];
/// Sharing keys in use.
const KEYS: u8 = 5;
/// The name an AWS load balancer is asked to have.
pub const AWS_NAME: &str = "service.beta.kubernetes.io/aws-load-balancer-name";

/// Which provider's requests the churn makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    BareMetal,
    Aws,
}

impl Flavor {
    /// The class of its Services.
    pub fn class(self) -> &'static str {
        match self {
            Flavor::BareMetal => super::CLASS,
            Flavor::Aws => aws::CLASS,
        }
    }
}

/// splitmix64: small, seedable, good enough to pick operations.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Uniform in `lo..=hi`.
    pub fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_millis() as u64;
        lo + Duration::from_millis(self.below(span + 1))
    }

    /// A generator of its own, for another task.
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}

/// A seed from `FERROLB_CHURN_SEED`, else from the clock; printed so that a
/// failing run's choices can be made again.
pub fn seed_from_env() -> u64 {
    let seed = std::env::var("FERROLB_CHURN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    println!("churn seed: {seed} (FERROLB_CHURN_SEED={seed} makes the same choices again)");
    seed
}

/// A number from the environment, else `default`.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// What a Service of ours asks the allocator for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Any address from a pool that assigns automatically.
    Auto,
    /// An address from this pool.
    Pool(&'static str),
    /// The slot's own address number `alt` in the manual pool, through
    /// `spec.loadBalancerIP` or the annotation.
    Ip { alt: u8, by_spec: bool },
    /// An address shared with the other Services of this key.
    Shared(u8),
    /// An AWS load balancer of a given name (`crash-<slot>-<n>`), or of the
    /// name ferrolb makes up (`None`).
    Named(Option<u64>),
}

impl Request {
    fn random(rng: &mut Rng, flavor: Flavor) -> Request {
        if flavor == Flavor::Aws {
            return Request::Named(rng.percent(50).then(|| rng.below(1000)));
        }
        match rng.below(100) {
            0..35 => Request::Auto,
            35..55 => Request::Pool(if rng.percent(50) { "blue" } else { "green" }),
            55..75 => Request::Ip {
                alt: rng.below(2) as u8,
                by_spec: rng.percent(50),
            },
            _ => Request::Shared(rng.below(u64::from(KEYS)) as u8),
        }
    }

    /// The address of slot `slot` number `alt` in the manual pool.
    pub fn requested_ip(slot: usize, alt: u8) -> String {
        let n = slot * 2 + usize::from(alt);
        format!("10.20.{}.{}", n / 256, n % 256)
    }

    pub fn sharing_key(&self) -> Option<String> {
        match self {
            Request::Shared(k) => Some(format!("key-{k}")),
            _ => None,
        }
    }
}

/// One Service as the churn last wrote it.
#[derive(Clone, Debug)]
pub struct Desired {
    pub name: String,
    /// The class it has unless it is `other`.
    pub class: &'static str,
    pub slot: usize,
    pub other: bool,
    pub request: Request,
    pub generation: u64,
    pub ports: Vec<i32>,
    pub touched: u64,
    /// It asked for an address of the manual pool at some point (an
    /// address it may keep when it stops asking).
    pub had_ip: bool,
}

impl Desired {
    /// The annotations (and `spec.loadBalancerIP`) that carry the request,
    /// with `null` for those it does not use, for a merge patch.
    fn request_fields(&self) -> (BTreeMap<&'static str, Value>, Value) {
        let mut a = BTreeMap::from([
            (POOL, Value::Null),
            (LOAD_BALANCER_IPS, Value::Null),
            (SHARED, Value::Null),
            (AWS_NAME, Value::Null),
        ]);
        let mut spec_ip = Value::Null;
        match &self.request {
            Request::Auto => {}
            Request::Pool(p) => {
                a.insert(POOL, json!(p));
            }
            Request::Ip { alt, by_spec } => {
                let ip = Request::requested_ip(self.slot, *alt);
                if *by_spec {
                    spec_ip = json!(ip);
                } else {
                    a.insert(LOAD_BALANCER_IPS, json!(ip));
                }
            }
            Request::Shared(_) => {
                a.insert(SHARED, json!(self.request.sharing_key()));
            }
            Request::Named(None) => {}
            Request::Named(Some(n)) => {
                a.insert(AWS_NAME, json!(format!("crash-{}-{n}", self.slot)));
            }
        }
        a.insert(REQUEST_GEN, json!(self.generation.to_string()));
        (a, spec_ip)
    }

    fn ports_json(&self) -> Value {
        Value::Array(
            self.ports
                .iter()
                .map(|p| json!({"name": format!("tcp-{p}"), "protocol": "TCP", "port": p, "targetPort": p}))
                .collect(),
        )
    }

    /// The Service as the churn makes it, stamped with operation `op`.
    pub fn object(&self, ns: &str, op: u64) -> Service {
        let ports: Vec<(&str, i32)> = self.ports.iter().map(|p| ("TCP", *p)).collect();
        let mut svc = fixtures::lb_service(ns, &self.name, &ports);
        let spec = svc.spec.as_mut().expect("lb_service has a spec");
        spec.load_balancer_class = Some(if self.other { OTHER_CLASS } else { self.class }.into());
        let (fields, spec_ip) = self.request_fields();
        spec.load_balancer_ip = spec_ip.as_str().map(String::from);
        let mut annotations: BTreeMap<String, String> = fields
            .into_iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.to_string(), v.to_string())))
            .collect();
        annotations.insert(OP.into(), op.to_string());
        annotations.insert(TOUCHED.into(), self.touched.to_string());
        svc.metadata.annotations = Some(annotations);
        svc
    }
}

/// The ports of a Service: one per slot and flip for sharing Services (so
/// Services of one key never collide), one or two random ones otherwise.
fn ports_for(request: &Request, slot: usize, rng: &mut Rng) -> Vec<i32> {
    if request.sharing_key().is_some() {
        let flip = rng.below(2) as i32;
        vec![10000 + 1000 * flip + slot as i32]
    } else {
        let first = 20000 + rng.below(10000) as i32;
        if rng.percent(30) {
            let offset = 1 + rng.below(9998) as i32;
            vec![first, 20000 + (first - 20000 + offset) % 10000]
        } else {
            vec![first]
        }
    }
}

/// What the churn did.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub creates: u64,
    pub port_changes: u64,
    pub request_changes: u64,
    pub touches: u64,
    pub deletes: u64,
    /// Calls that failed; each was checked afterwards for whether it happened.
    pub failed_calls: u64,
}

impl Counts {
    pub fn ops(&self) -> u64 {
        self.creates + self.port_changes + self.request_changes + self.touches + self.deletes
    }

    fn add(&mut self, o: &Counts) {
        self.creates += o.creates;
        self.port_changes += o.port_changes;
        self.request_changes += o.request_changes;
        self.touches += o.touches;
        self.deletes += o.deletes;
        self.failed_calls += o.failed_calls;
    }
}

/// Where the churn left things.
#[derive(Debug, Default)]
pub struct Outcome {
    pub counts: Counts,
    /// The Services that should exist, as last written.
    pub live: Vec<Desired>,
    /// The Services it deleted.
    pub deleted: Vec<String>,
}

pub struct ChurnConfig {
    pub flavor: Flavor,
    pub slots: usize,
    /// Every `other_every`-th slot holds Services of [`OTHER_CLASS`].
    pub other_every: usize,
    pub workers: usize,
    /// Pause between two operations of one worker.
    pub pause: (Duration, Duration),
    /// At most this many operations in all.
    pub max_ops: u64,
}

/// Runs the churn until `stop` says so or `max_ops` are done.
pub async fn run(
    api: Api<Service>,
    ns: String,
    observed: Arc<Mutex<Observed>>,
    config: ChurnConfig,
    mut rng: Rng,
    stop: watch::Receiver<bool>,
) -> Result<Outcome> {
    let ops = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..config.workers {
        let slots: Vec<usize> = (w..config.slots).step_by(config.workers).collect();
        let worker = Worker {
            flavor: config.flavor,
            api: api.clone(),
            ns: ns.clone(),
            observed: observed.clone(),
            rng: rng.fork(),
            ops: ops.clone(),
            max_ops: config.max_ops,
            pause: config.pause,
            slots: slots
                .into_iter()
                .map(|slot| Slot {
                    index: slot,
                    other: config.other_every > 0
                        && slot % config.other_every == config.other_every - 1,
                    incarnation: 0,
                    live: None,
                })
                .collect(),
            counts: Counts::default(),
            deleted: Vec::new(),
        };
        tasks.push(tokio::spawn(worker.run(stop.clone())));
    }
    let mut outcome = Outcome::default();
    for task in tasks {
        let worker = task.await.context("a churn worker panicked")??;
        outcome.counts.add(&worker.counts);
        outcome.deleted.extend(worker.deleted);
        outcome
            .live
            .extend(worker.slots.into_iter().filter_map(|s| s.live));
    }
    Ok(outcome)
}

struct Slot {
    index: usize,
    other: bool,
    incarnation: u32,
    live: Option<Desired>,
}

struct Worker {
    flavor: Flavor,
    api: Api<Service>,
    ns: String,
    observed: Arc<Mutex<Observed>>,
    rng: Rng,
    ops: Arc<AtomicU64>,
    max_ops: u64,
    pause: (Duration, Duration),
    slots: Vec<Slot>,
    counts: Counts,
    deleted: Vec<String>,
}

enum Op {
    Create(Desired),
    Patch { next: Desired, patch: Value },
    Delete(String),
}

impl Worker {
    async fn run(mut self, stop: watch::Receiver<bool>) -> Result<Worker> {
        while !*stop.borrow() {
            let op_id = self.ops.fetch_add(1, Ordering::Relaxed);
            if op_id >= self.max_ops {
                break;
            }
            let i = self.rng.below(self.slots.len() as u64) as usize;
            let op = self.choose(i, op_id);
            self.perform(i, op, op_id).await?;
            let pause = self.rng.duration(self.pause.0, self.pause.1);
            tokio::time::sleep(pause).await;
        }
        Ok(self)
    }

    /// The next operation on slot `i`. A request change waits until the
    /// Service shows an address for its current request (the checker could
    /// not tell otherwise which request an address was given for); until
    /// then the Service gets a port change instead.
    fn choose(&mut self, i: usize, op_id: u64) -> Op {
        let slot = &mut self.slots[i];
        let Some(current) = slot.live.clone() else {
            slot.incarnation += 1;
            let request = Request::random(&mut self.rng, self.flavor);
            let ports = ports_for(&request, slot.index, &mut self.rng);
            let had_ip = matches!(request, Request::Ip { .. });
            return Op::Create(Desired {
                had_ip,
                name: format!("s{}-{}", slot.index, slot.incarnation),
                class: self.flavor.class(),
                slot: slot.index,
                other: slot.other,
                request,
                generation: 0,
                ports,
                touched: 0,
            });
        };
        let roll = self.rng.below(100);
        let settled =
            current.other || lock(&self.observed).settled(&current.name, current.generation);
        let mut next = current.clone();
        let mut annotations = serde_json::Map::new();
        annotations.insert(OP.into(), json!(op_id.to_string()));
        let mut spec = serde_json::Map::new();
        match roll {
            0..20 => return Op::Delete(current.name),
            20..35 => {
                next.touched += 1;
                annotations.insert(TOUCHED.into(), json!(next.touched.to_string()));
            }
            35..65 if settled => {
                let mut request = Request::random(&mut self.rng, self.flavor);
                while request == current.request {
                    request = Request::random(&mut self.rng, self.flavor);
                }
                next.had_ip |= matches!(request, Request::Ip { .. });
                next.request = request;
                next.generation += 1;
                if next.request.sharing_key().is_some() != current.request.sharing_key().is_some() {
                    next.ports = ports_for(&next.request, slot.index, &mut self.rng);
                }
                let (fields, spec_ip) = next.request_fields();
                annotations.extend(fields.into_iter().map(|(k, v)| (k.to_string(), v)));
                spec.insert("loadBalancerIP".into(), spec_ip);
                spec.insert("ports".into(), next.ports_json());
            }
            _ => {
                next.ports = ports_for(&next.request, slot.index, &mut self.rng);
                spec.insert("ports".into(), next.ports_json());
            }
        }
        let patch = json!({"metadata": {"annotations": annotations}, "spec": spec});
        Op::Patch { next, patch }
    }

    async fn perform(&mut self, i: usize, op: Op, op_id: u64) -> Result<()> {
        match op {
            Op::Create(d) => {
                let svc = d.object(&self.ns, op_id);
                let result = self.api.create(&PostParams::default(), &svc).await;
                if self.happened(&d.name, op_id, result.map(drop)).await? {
                    self.counts.creates += 1;
                    self.slots[i].live = Some(d);
                }
            }
            Op::Patch { next, patch } => {
                let result = self
                    .api
                    .patch(&next.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
                if self.happened(&next.name, op_id, result.map(drop)).await? {
                    let current = self.slots[i].live.as_ref().expect("patched a live slot");
                    if current.generation != next.generation {
                        self.counts.request_changes += 1;
                    } else if current.touched != next.touched {
                        self.counts.touches += 1;
                    } else {
                        self.counts.port_changes += 1;
                    }
                    self.slots[i].live = Some(next);
                }
            }
            Op::Delete(name) => {
                let result = self.api.delete(&name, &DeleteParams::default()).await;
                let gone = match result {
                    Ok(_) => true,
                    Err(e) => {
                        self.counts.failed_calls += 1;
                        tracing::info!(service = %name, error = %e, "delete failed; checking");
                        let svc = self.get_eventually(&name).await?;
                        svc.is_none_or(|s| s.metadata.deletion_timestamp.is_some())
                    }
                };
                if gone {
                    self.counts.deletes += 1;
                    self.slots[i].live = None;
                    self.deleted.push(name);
                }
            }
        }
        Ok(())
    }

    /// Whether a create or patch stamped with `op_id` happened: at once when
    /// the call succeeded, else by reading the Service back.
    async fn happened(
        &mut self,
        name: &str,
        op_id: u64,
        result: Result<(), kube::Error>,
    ) -> Result<bool> {
        let Err(e) = result else { return Ok(true) };
        self.counts.failed_calls += 1;
        tracing::info!(service = %name, error = %e, "churn call failed; checking whether it happened");
        let svc = self.get_eventually(name).await?;
        Ok(svc.is_some_and(|s| s.annotations().get(OP) == Some(&op_id.to_string())))
    }

    /// Reads a Service, retrying for a while (the apiserver may be down).
    async fn get_eventually(&self, name: &str) -> Result<Option<Service>> {
        let mut last = None;
        for _ in 0..120 {
            match self.api.get_opt(name).await {
                Ok(svc) => return Ok(svc),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        bail!("reading Service {name} kept failing: {last:?}")
    }
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The churn's pools, in the cluster.
pub async fn create_pools(env: &super::Env) -> Result<()> {
    for (name, cidr, auto) in POOLS {
        env.create_pool(name, &[cidr], |spec| {
            spec.auto_assign = auto;
            if name == "elsewhere" {
                spec.service_allocation = Some(ferrolb_baremetal::crd::ServiceAllocation {
                    namespaces: vec!["prod".into()],
                    ..Default::default()
                });
            }
        })
        .await?;
    }
    Ok(())
}
