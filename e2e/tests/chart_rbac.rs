//! The controller, started with the arguments the chart's Deployment gives
//! it and authenticated with a token of the chart's ServiceAccount, does a
//! Service's whole life with each provider without one forbidden call: the
//! chart's RBAC covers every call the controller makes.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::{Env, WAIT, WithLog};
use ferrolb_e2e::chart::{
    self, Helm, NAMESPACE, args_of, client_from, render_and_apply, service_account_kubeconfig,
};
use ferrolb_e2e::moto::Moto;
use ferrolb_e2e::process::ferrolb_bin;
use ferrolb_e2e::{ControlPlane, FerrolbProcess, fixtures, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::Value;

fn api_status(result: Result<impl std::fmt::Debug, kube::Error>) -> Option<u16> {
    match result {
        Err(kube::Error::Api(s)) => Some(s.code),
        _ => None,
    }
}

/// The chart's ServiceAccount, roles and bindings, applied for real, and what
/// the controller needs to run as that ServiceAccount.
struct Installed {
    /// Authenticates as the controller's ServiceAccount.
    kubeconfig: PathBuf,
    /// The Deployment's container args, with a metrics address for the host.
    args: Vec<String>,
}

impl Installed {
    /// Renders the chart with `values`, applies its RBAC for real and checks
    /// the token it gets is held to those rules.
    async fn new(cp: &ControlPlane, helm: &Helm, values: &[&str]) -> Result<Installed> {
        chart::prepare(cp).await?;
        let mut rbac = values.to_vec();
        rbac.extend([
            "--show-only",
            "templates/serviceaccounts.yaml",
            "--show-only",
            "templates/rbac.yaml",
        ]);
        render_and_apply(cp, helm, &rbac, true).await?;
        let mut deployment = values.to_vec();
        deployment.extend(["--show-only", "templates/controller-deployment.yaml"]);
        let (objects, _) = render_and_apply(cp, helm, &deployment, false).await?;
        let deployment = &objects[0];
        let sa = deployment["spec"]["template"]["spec"]["serviceAccountName"]
            .as_str()
            .context("the Deployment names no ServiceAccount")?;

        let kubeconfig = cp.dir().join("controller-sa.kubeconfig");
        service_account_kubeconfig(cp, sa, &kubeconfig).await?;
        let as_sa = client_from(&kubeconfig).await?;
        let secrets = Api::<Secret>::namespaced(as_sa.clone(), NAMESPACE)
            .list(&ListParams::default())
            .await;
        assert_eq!(
            api_status(secrets),
            Some(403),
            "the ServiceAccount reads no Secrets"
        );
        let elsewhere = Api::<Lease>::namespaced(as_sa, "kube-system")
            .list(&ListParams::default())
            .await;
        assert_eq!(
            api_status(elsewhere),
            Some(403),
            "Leases only in its own namespace"
        );

        // The chart's arguments as they are, but for the metrics address: the
        // test runs on the host, next to other tests.
        let mut args: Vec<String> = args_of(deployment)
            .into_iter()
            .filter(|a| !a.starts_with("--metrics-addr"))
            .collect();
        args.push("--metrics-addr=127.0.0.1:0".into());
        Ok(Installed { kubeconfig, args })
    }

    /// `ferrolb` with the chart's args, as the ServiceAccount, with `envs`.
    fn spawn(&self, cp: &ControlPlane, envs: &[(&str, &str)]) -> Result<FerrolbProcess> {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut envs = envs.to_vec();
        envs.push(("POD_NAME", "ferrolb-controller-rbac"));
        FerrolbProcess::spawn_program(&ferrolb_bin()?, &self.kubeconfig, cp.dir(), &args, &envs)
    }
}

/// Waits until the controller holds its Lease in the release namespace.
async fn wait_leader(admin: &kube::Client) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(admin.clone(), NAMESPACE);
    let holder = wait_for("the controller to take its Lease", WAIT, || {
        let leases = leases.clone();
        async move {
            Ok(leases
                .get_opt("ferrolb-controller")
                .await?
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity))
        }
    })
    .await?;
    assert!(holder.starts_with("ferrolb-controller-rbac-"), "{holder}");
    Ok(())
}

/// Every metric docs/troubleshooting.md lists is served, but the AWS
/// provider's own without `aws`, and the speaker's (`ferrolb_speaker_*`),
/// which the speaker serves, not the controller.
async fn assert_documented_metrics(ctl: &FerrolbProcess, aws: bool) -> Result<()> {
    let (code, metrics) = common::http_get(metrics_port(&ctl.log())?, "/metrics").await?;
    assert_eq!(code, 200);
    for name in common::documented_metrics()? {
        if (name.starts_with("ferrolb_aws_") && !aws) || name.starts_with("ferrolb_speaker_") {
            continue;
        }
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
            "docs/troubleshooting.md lists {name}, /metrics serves:\n{metrics}"
        );
    }
    Ok(())
}

/// SIGTERM: a clean exit that gives the Lease up.
async fn stop_and_check_release(ctl: &mut FerrolbProcess, admin: &kube::Client) -> Result<()> {
    let status = ctl.terminate().await?;
    assert!(status.success(), "the controller exited with {status}");
    let holder = Api::<Lease>::namespaced(admin.clone(), NAMESPACE)
        .get("ferrolb-controller")
        .await?
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder, None, "the Lease is released on SIGTERM");
    Ok(())
}

/// Fails with the lines of the log where the apiserver refused a call.
fn assert_nothing_forbidden(ctl: &FerrolbProcess) -> Result<()> {
    let log = ctl.log();
    let denied: Vec<&str> = log
        .lines()
        .filter(|l| {
            // kube-rs shows a refusal as "... is forbidden: ..." with
            // "code: 403"; a bare "403" would also match timestamps.
            let l = l.to_ascii_lowercase();
            l.contains("forbidden") || l.contains("code: 403") || l.contains("\"code\":403")
        })
        .collect();
    if !denied.is_empty() {
        bail!(
            "the controller was denied calls under the chart's RBAC:\n{}",
            denied.join("\n")
        );
    }
    assert!(
        log.contains("controller ready"),
        "the log is the controller's:\n{log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn baremetal_controller_runs_under_the_charts_rbac() -> Result<()> {
    let helm = Helm::new().await?;
    let cp = ControlPlane::start().await?;
    let admin = cp.client().await?;
    let values = chart::ci_values("baremetal-values.yaml");
    let installed = Installed::new(&cp, &helm, &["-f", &values]).await?;
    fixtures::create_namespace(&admin, "test").await?;
    let mut ctl = installed.spawn(&cp, &[])?;
    let env = Env {
        client: admin.clone(),
        cp,
        ns: "test".into(),
    };
    let check = async {
        wait_leader(&admin).await?;
        env.create_pool("default", &["192.0.2.0/30"], |_| {})
            .await?;
        // The chart's values make this install the default class.
        env.create_service("web", |svc| {
            svc.spec.as_mut().unwrap().load_balancer_class = None;
        })
        .await?;
        assert_eq!(env.wait_ingress("web", 1).await?, ["192.0.2.0"]);
        env.wait_event("web", "EnsuredLoadBalancer").await?;
        wait_for("the pool's status to count the address", WAIT, || async {
            let s = env.pool_status("default").await?;
            Ok(s.filter(|s| s.assigned_ipv4 == 1).map(|_| ()))
        })
        .await?;
        env.services()
            .delete("web", &DeleteParams::default())
            .await?;
        env.wait_gone("web").await?;
        env.wait_event("web", "DeletedLoadBalancer").await?;
        assert_documented_metrics(&ctl, false).await?;
        stop_and_check_release(&mut ctl, &admin).await
    };
    check.await.with_log(&ctl)?;
    assert_nothing_forbidden(&ctl)
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_controller_runs_under_the_charts_rbac() -> Result<()> {
    const CLUSTER: &str = "e2e";
    const ZONE: &str = "us-east-1a";
    let helm = Helm::new().await?;
    let cp = ControlPlane::start().await?;
    let admin = cp.client().await?;
    let moto = Moto::start().await?;
    let seed = moto.seed(CLUSTER, &[ZONE]).await?;
    let values = chart::ci_values("aws-values.yaml");
    let cluster = format!("clusterName={CLUSTER}");
    let installed = Installed::new(&cp, &helm, &["-f", &values, "--set", &cluster]).await?;
    fixtures::create_namespace(&admin, "test").await?;
    let instance = moto.run_instance(&seed, ZONE).await?;
    fixtures::create_node(
        &admin,
        "node-a",
        &[instance.private_ip],
        Some(&instance.provider_id),
        &[("topology.kubernetes.io/zone", ZONE)],
        true,
    )
    .await?;

    // moto's endpoint, region and credentials, as the SDK's default chain
    // would find them in a pod.
    let moto_env = moto.env();
    let moto_env: Vec<(&str, &str)> = moto_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut ctl = installed.spawn(&cp, &moto_env)?;
    let env = Env {
        client: admin.clone(),
        cp,
        ns: "test".into(),
    };
    let check = async {
        wait_leader(&admin).await?;
        let mut svc = fixtures::lb_service("test", "web", &[("TCP", 80)]);
        svc.spec.as_mut().unwrap().load_balancer_class = Some("ferrolb.io/aws".into());
        env.services().create(&PostParams::default(), &svc).await?;
        wait_for(
            "a hostname on Service web",
            Duration::from_secs(90),
            || async {
                let svc = env.services().get("web").await?;
                Ok(svc
                    .status
                    .and_then(|s| s.load_balancer)
                    .and_then(|lb| lb.ingress)
                    .and_then(|i| i.into_iter().find_map(|i| i.hostname)))
            },
        )
        .await?;
        env.wait_event("web", "EnsuredLoadBalancer").await?;
        env.services()
            .delete("web", &DeleteParams::default())
            .await?;
        wait_for(
            "Service web to be gone",
            Duration::from_secs(90),
            || async { Ok(env.services().get_opt("web").await?.is_none().then_some(())) },
        )
        .await?;
        assert_documented_metrics(&ctl, true).await?;
        stop_and_check_release(&mut ctl, &admin).await
    };
    check.await.with_log(&ctl)?;
    assert_nothing_forbidden(&ctl)
}

/// The port of `/metrics` from the controller's (JSON) log.
fn metrics_port(log: &str) -> Result<u16> {
    let line = log
        .lines()
        .find(|l| l.contains("serving /metrics"))
        .context("the controller logged no metrics address")?;
    let entry: Value = serde_json::from_str(line)?;
    let addr: std::net::SocketAddr = entry["fields"]["addr"]
        .as_str()
        .context("no addr field")?
        .parse()?;
    Ok(addr.port())
}
