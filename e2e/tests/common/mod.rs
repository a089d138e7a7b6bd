//! Shared set-up for the controller tests: a control plane with ferrolb's CRDs,
//! pools, Services, and ways to read what a user would read.

#![allow(dead_code)] // each test binary uses a different part

pub mod audit;
pub mod bad_input;
pub mod bench;
pub mod bgp;
pub mod churn;
pub mod failover;
pub mod faults;
pub mod l2;
pub mod proxy;
pub mod scale;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result};
use ferrolb_baremetal::crd::{IPPool, IPPoolSpec, IPPoolStatus};
use ferrolb_e2e::{ControlPlane, FerrolbProcess, fixtures, wait_for};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};

pub const CLASS: &str = "ferrolb.io/baremetal";
pub const WAIT: Duration = Duration::from_secs(30);

pub struct Env {
    pub cp: ControlPlane,
    pub client: Client,
    pub ns: String,
}

impl Env {
    /// A fresh control plane with the CRDs installed and a namespace `test`.
    pub async fn start() -> Result<Env> {
        Self::on(ControlPlane::start().await?).await
    }

    /// [`start`](Self::start), with the apiserver's audit log on
    /// ([`ControlPlane::audit_log`]).
    pub async fn start_audited() -> Result<Env> {
        Self::on(ControlPlane::start_audited().await?).await
    }

    async fn on(cp: ControlPlane) -> Result<Env> {
        let client = cp.client().await?;
        install_crds(&client).await?;
        fixtures::create_namespace(&client, "test").await?;
        Ok(Env {
            cp,
            client,
            ns: "test".into(),
        })
    }

    /// `ferrolb controller` with the bare-metal provider and no leader election.
    pub fn controller(&self, extra: &[&str]) -> Result<FerrolbProcess> {
        let mut args = vec!["controller", "--log", "info,ferrolb=debug"];
        if !extra.iter().any(|a| a.starts_with("--metrics-addr")) {
            args.extend(["--metrics-addr", "127.0.0.1:0"]);
        }
        if !extra.iter().any(|a| a.starts_with("--leader-election")) {
            args.push("--leader-election=false");
        }
        args.extend_from_slice(extra);
        FerrolbProcess::spawn(&self.cp, &args, &[])
    }

    /// `ferrolb controller` with leader election on, as `identity`, with the
    /// given lease duration and a 500 ms retry period.
    pub fn elected_controller(
        &self,
        identity: &str,
        lease_duration: &str,
    ) -> Result<FerrolbProcess> {
        self.controller(&[
            "--leader-election=true",
            "--leader-election-identity",
            identity,
            "--lease-duration",
            lease_duration,
            "--lease-retry-period",
            "500ms",
        ])
    }

    /// The controller's Lease record, if there is one.
    pub async fn lease_spec(
        &self,
    ) -> Result<Option<k8s_openapi::api::coordination::v1::LeaseSpec>> {
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.client.clone(), "kube-system");
        Ok(leases
            .get_opt("ferrolb-controller")
            .await?
            .and_then(|l| l.spec))
    }

    /// Who holds the controller's Lease, if anyone.
    pub async fn lease_holder(&self) -> Result<Option<String>> {
        Ok(self.lease_spec().await?.and_then(|s| s.holder_identity))
    }

    pub fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn create_pool(
        &self,
        name: &str,
        addresses: &[&str],
        tweak: impl FnOnce(&mut IPPoolSpec),
    ) -> Result<IPPool> {
        let mut spec = IPPoolSpec {
            addresses: addresses.iter().map(|s| s.to_string()).collect(),
            auto_assign: true,
            ..Default::default()
        };
        tweak(&mut spec);
        let pool = IPPool::new(name, spec);
        Api::<IPPool>::all(self.client.clone())
            .create(&PostParams::default(), &pool)
            .await
            .with_context(|| format!("creating IPPool {name}"))
    }

    pub async fn pool_status(&self, name: &str) -> Result<Option<IPPoolStatus>> {
        Ok(Api::<IPPool>::all(self.client.clone())
            .get(name)
            .await?
            .status)
    }

    /// Creates a LoadBalancer Service of our class with one TCP port, after
    /// `tweak` has had its say.
    pub async fn create_service(
        &self,
        name: &str,
        tweak: impl FnOnce(&mut Service),
    ) -> Result<Service> {
        let mut svc = fixtures::lb_service(&self.ns, name, &[("TCP", 80)]);
        svc.spec.as_mut().unwrap().load_balancer_class = Some(CLASS.into());
        tweak(&mut svc);
        self.services()
            .create(&PostParams::default(), &svc)
            .await
            .with_context(|| format!("creating Service {name}"))
    }

    /// Waits until the Service shows `n` ingress addresses, and returns them.
    pub async fn wait_ingress(&self, name: &str, n: usize) -> Result<Vec<String>> {
        let api = self.services();
        wait_for(
            &format!("{n} ingress address(es) on Service {name}"),
            WAIT,
            || {
                let api = api.clone();
                async move {
                    let ips = ingress_ips(&api.get(name).await?);
                    Ok((ips.len() == n).then_some(ips))
                }
            },
        )
        .await
    }

    /// Waits until an Event with `reason` about the Service exists; returns its note.
    pub async fn wait_event(&self, name: &str, reason: &str) -> Result<String> {
        let client = self.client.clone();
        let ns = self.ns.clone();
        wait_for(&format!("a {reason} Event on Service {name}"), WAIT, || {
            let (client, ns) = (client.clone(), ns.clone());
            async move {
                let events = events_for(&client, &ns, name).await?;
                Ok(events
                    .into_iter()
                    .find(|e| e.reason.as_deref() == Some(reason))
                    .map(|e| e.note.unwrap_or_default()))
            }
        })
        .await
    }

    /// Waits until the Service no longer exists.
    pub async fn wait_gone(&self, name: &str) -> Result<()> {
        let api = self.services();
        wait_for(&format!("Service {name} to be gone"), WAIT, || {
            let api = api.clone();
            async move { Ok(api.get_opt(name).await?.is_none().then_some(())) }
        })
        .await
    }
}

pub fn ingress_ips(svc: &Service) -> Vec<String> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone())
        .collect()
}

pub async fn events_for(client: &Client, ns: &str, name: &str) -> Result<Vec<Event>> {
    let events = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    Ok(events
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect())
}

pub fn has_finalizer(svc: &Service) -> bool {
    svc.finalizers()
        .iter()
        .any(|f| f == "ferrolb.io/load-balancer-cleanup")
}

pub async fn install_crds(client: &Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in ferrolb::crds::all() {
        let name = crd.name_any();
        api.create(&PostParams::default(), &crd)
            .await
            .with_context(|| format!("creating CRD {name}"))?;
        wait_for(&format!("CRD {name} to be established"), WAIT, || {
            let (api, name) = (api.clone(), name.clone());
            async move {
                let crd = api.get(&name).await?;
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                Ok(established.then_some(()))
            }
        })
        .await?;
    }
    Ok(())
}

pub fn annotations(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// Fails with the controller's log attached, so a red test says why.
pub trait WithLog<T> {
    fn with_log(self, p: &FerrolbProcess) -> Result<T>;
}

impl<T> WithLog<T> for Result<T> {
    fn with_log(self, p: &FerrolbProcess) -> Result<T> {
        self.map_err(|e| {
            let log = p.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            e.context(format!(
                "controller log (last 60 lines):\n{}",
                tail.join("\n")
            ))
        })
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// A plain HTTP/1.0 GET on 127.0.0.1: (status code, body).
pub async fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut raw)).await??;
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// The metric names in the first column of docs/troubleshooting.md's table;
/// a histogram is checked by its `_count` series.
pub fn documented_metrics() -> Result<Vec<String>> {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/troubleshooting.md"),
    )?;
    let names: Vec<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `ferrolb_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once('`')?;
            let histogram = rest
                .trim_start_matches(" |")
                .trim_start()
                .starts_with("histogram");
            Some(format!(
                "ferrolb_{name}{}",
                if histogram { "_count" } else { "" }
            ))
        })
        .collect();
    if names.len() < 5 {
        anyhow::bail!("docs/troubleshooting.md lists no metrics table: {names:?}");
    }
    Ok(names)
}

/// A LoadBalancer Service of another class, `example.com/other`, in a
/// namespace of its own: ferrolb must never write it.
pub struct Foreign {
    api: Api<Service>,
    version: String,
}

impl Foreign {
    pub async fn create(client: &Client) -> Result<Foreign> {
        fixtures::create_namespace(client, "elsewhere").await?;
        let mut svc = fixtures::lb_service("elsewhere", "other-class", &[("TCP", 80)]);
        svc.spec.as_mut().unwrap().load_balancer_class = Some("example.com/other".into());
        let api: Api<Service> = Api::namespaced(client.clone(), "elsewhere");
        let created = api
            .create(&PostParams::default(), &svc)
            .await
            .context("creating the Service of another class")?;
        Ok(Foreign {
            api,
            version: created.resource_version().unwrap_or_default(),
        })
    }

    /// Fails when anyone wrote the Service since it was created.
    pub async fn assert_untouched(&self) -> Result<()> {
        let now = self.api.get("other-class").await?;
        anyhow::ensure!(
            now.resource_version().as_deref() == Some(self.version.as_str()),
            "the Service of another class was written: {:?}",
            now.metadata
        );
        Ok(())
    }
}

/// Waits, 90 s at most, until the Service shows a hostname (an NLB's DNS
/// name) in its status, and returns it.
pub async fn wait_hostname(api: &Api<Service>, name: &str) -> Result<String> {
    wait_for(
        &format!("a hostname on Service {name}"),
        Duration::from_secs(90),
        || {
            let api = api.clone();
            async move {
                let svc = api.get(name).await?;
                Ok(svc
                    .status
                    .and_then(|s| s.load_balancer)
                    .and_then(|lb| lb.ingress)
                    .and_then(|i| i.into_iter().find_map(|i| i.hostname)))
            }
        },
    )
    .await
}

/// The (instance, port) targets registered in a target group.
pub async fn registered_targets(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    target_group_arn: &str,
) -> Result<BTreeSet<(String, i32)>> {
    let health = elb
        .describe_target_health()
        .target_group_arn(target_group_arn)
        .send()
        .await?;
    Ok(health
        .target_health_descriptions()
        .iter()
        .filter_map(|d| d.target())
        .map(|t| {
            (
                t.id().unwrap_or_default().to_string(),
                t.port().unwrap_or_default(),
            )
        })
        .collect())
}
