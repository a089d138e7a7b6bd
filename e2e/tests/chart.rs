//! The Helm chart against a real kube-apiserver: it lints, it renders for
//! both providers, every object it renders passes the apiserver's validation
//! and admission (server-side dry-run, strict field validation, the restricted
//! Pod Security profile), bad values are refused, and the controller runs
//! under exactly the RBAC the chart grants.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use common::{Env, WAIT, WithLog};
use ferrolb_e2e::chart::{self, Helm};
use ferrolb_e2e::process::ferrolb_bin;
use ferrolb_e2e::{ControlPlane, FerrolbProcess, fixtures, wait_for};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;

const RELEASE: &str = "ferrolb";
const NAMESPACE: &str = "ferrolb-system";

fn values(name: &str) -> String {
    chart::chart_dir()
        .join("ci")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// The install's namespace, with the restricted Pod Security profile in warn
/// mode: the apiserver then warns about every pod template that breaks it.
const NAMESPACE_YAML: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: ferrolb-system
  labels:
    pod-security.kubernetes.io/warn: restricted
    pod-security.kubernetes.io/warn-version: latest
";

/// Applies the chart's CRDs for real and waits until they are served.
async fn apply_chart_crds(cp: &ControlPlane) -> Result<()> {
    let crds = std::fs::read_to_string(chart::chart_dir().join("crds/crds.yaml"))?;
    chart::apply(cp, &crds, false).await?;
    chart::kubectl(
        cp,
        &[
            "wait",
            "--for=condition=Established",
            "crd/ippools.ferrolb.io",
            "--timeout=30s",
        ],
        "",
    )
    .await?;
    Ok(())
}

fn kind_and_name(o: &Value) -> String {
    format!(
        "{}/{}",
        o["kind"].as_str().unwrap_or("?"),
        o["metadata"]["name"].as_str().unwrap_or("?")
    )
}

fn by_kind<'a>(objects: &[&'a Value], kind: &str) -> Vec<&'a Value> {
    objects
        .iter()
        .copied()
        .filter(|o| o["kind"] == kind)
        .collect()
}

/// Renders with `args`, applies the result with server-side dry-run, and
/// returns the objects the apiserver accepted and its warnings. Fails unless
/// every rendered document came back accepted.
async fn render_and_dry_run(
    cp: &ControlPlane,
    helm: &Helm,
    args: &[&str],
) -> Result<(Vec<Value>, String)> {
    let rendered = helm.template(RELEASE, NAMESPACE, args).await?;
    let (applied, warnings) = chart::apply(cp, &rendered, true)
        .await
        .with_context(|| format!("dry-run apply of the chart rendered with {args:?}"))?;
    let objects: Vec<Value> = chart::objects(&applied).into_iter().cloned().collect();
    let mut rendered_kinds = chart::document_kinds(&rendered);
    let mut applied_kinds: Vec<String> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    rendered_kinds.sort();
    applied_kinds.sort();
    assert_eq!(
        applied_kinds, rendered_kinds,
        "every rendered object is accepted ({args:?})"
    );
    Ok((objects, warnings))
}

/// No rule grants `*`, and Secrets are never granted cluster-wide.
fn assert_rbac_is_tight(objects: &[&Value]) {
    for role in by_kind(objects, "ClusterRole")
        .into_iter()
        .chain(by_kind(objects, "Role"))
    {
        for rule in role["rules"].as_array().into_iter().flatten() {
            for field in ["apiGroups", "resources", "verbs"] {
                let values: Vec<&str> = rule[field]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                assert!(
                    !values.contains(&"*"),
                    "{} grants {field} *: {rule}",
                    kind_and_name(role)
                );
                if role["kind"] == "ClusterRole" && field == "resources" {
                    assert!(
                        !values.contains(&"secrets"),
                        "{} reads Secrets cluster-wide",
                        kind_and_name(role)
                    );
                }
            }
        }
    }
}

fn container(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]["containers"][0]
}

fn args_of(workload: &Value) -> Vec<String> {
    container(workload)["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn chart_lints_renders_and_passes_the_apiservers_validation() -> Result<()> {
    let helm = Helm::new().await?;
    let (aws, baremetal) = (values("aws-values.yaml"), values("baremetal-values.yaml"));
    for v in [&aws, &baremetal] {
        helm.lint(&["--namespace", NAMESPACE, "-f", v]).await?;
    }
    helm.lint(&["--namespace", NAMESPACE]).await?;

    let cp = ControlPlane::start().await?;
    apply_chart_crds(&cp).await?;
    chart::apply(&cp, NAMESPACE_YAML, false).await?;

    // AWS: controller only, IRSA annotation, no pool access.
    let (objects, warnings) = render_and_dry_run(&cp, &helm, &["-f", &aws]).await?;
    let objects: Vec<&Value> = objects.iter().collect();
    assert!(
        !warnings.contains("Warning:"),
        "the AWS install draws warnings:\n{warnings}"
    );
    let names: BTreeSet<String> = objects.iter().map(|o| kind_and_name(o)).collect();
    let expected: BTreeSet<String> = [
        "ServiceAccount/ferrolb-controller",
        "ClusterRole/ferrolb-controller",
        "ClusterRoleBinding/ferrolb-controller",
        "Role/ferrolb-controller",
        "RoleBinding/ferrolb-controller",
        "Service/ferrolb-controller-metrics",
        "Deployment/ferrolb-controller",
        "PodDisruptionBudget/ferrolb-controller",
    ]
    .map(String::from)
    .into();
    assert_eq!(names, expected);
    assert_rbac_is_tight(&objects);
    let sa = by_kind(&objects, "ServiceAccount")[0];
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::111122223333:role/ferrolb-controller"
    );
    let role = by_kind(&objects, "ClusterRole")[0];
    assert!(
        !role.to_string().contains("ippools"),
        "the AWS controller needs no pools: {role}"
    );
    let deployment = by_kind(&objects, "Deployment")[0];
    assert_eq!(deployment["spec"]["replicas"], 2);
    let args = args_of(deployment);
    for want in [
        "--provider=aws",
        "--cluster-name=prod-eu-1",
        "--leader-election=true",
        "--leader-election-namespace=ferrolb-system",
        "--leader-election-name=ferrolb-controller",
    ] {
        assert!(args.iter().any(|a| a == want), "{want} in {args:?}");
    }
    let env = container(deployment)["env"].to_string();
    assert!(env.contains("AWS_REGION"), "{env}");

    // Bare metal: pools in the ClusterRole, default class; the speaker stays off.
    let (objects, warnings) = render_and_dry_run(&cp, &helm, &["-f", &baremetal]).await?;
    let objects: Vec<&Value> = objects.iter().collect();
    assert!(!warnings.contains("Warning:"), "{warnings}");
    assert!(
        by_kind(&objects, "DaemonSet").is_empty(),
        "speaker is off by default"
    );
    assert_rbac_is_tight(&objects);
    let role = by_kind(&objects, "ClusterRole")[0].to_string();
    assert!(role.contains("ippools/status"), "{role}");
    let args = args_of(by_kind(&objects, "Deployment")[0]);
    assert!(args.iter().any(|a| a == "--default-class"), "{args:?}");

    // The speaker, when asked for: on every node, host network, NET_RAW only.
    let (objects, warnings) = render_and_dry_run(
        &cp,
        &helm,
        &["-f", &baremetal, "--set", "speaker.enabled=true"],
    )
    .await?;
    let objects: Vec<&Value> = objects.iter().collect();
    assert_rbac_is_tight(&objects);
    let speaker = by_kind(&objects, "DaemonSet")[0];
    let pod = &speaker["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(
        pod["tolerations"],
        serde_json::json!([{"operator": "Exists"}])
    );
    assert_eq!(
        container(speaker)["securityContext"]["capabilities"],
        serde_json::json!({"drop": ["ALL"], "add": ["NET_RAW"]})
    );
    assert!(
        args_of(speaker)
            .iter()
            .any(|a| a == "--node-name=$(NODE_NAME)"),
        "{:?}",
        args_of(speaker)
    );
    // The restricted profile is really checked: a host-network pod breaks it,
    // and only the speaker does.
    let violations: Vec<&str> = warnings
        .lines()
        .filter(|l| l.contains("would violate PodSecurity"))
        .collect();
    assert_eq!(violations.len(), 1, "{warnings}");
    assert!(violations[0].contains("hostNetwork"), "{warnings}");

    let (objects, _) = render_and_dry_run(
        &cp,
        &helm,
        &[
            "-f",
            &baremetal,
            "--set",
            "speaker.enabled=true",
            "--set",
            "speaker.capabilities.netAdmin=true",
        ],
    )
    .await?;
    let objects: Vec<&Value> = objects.iter().collect();
    assert_eq!(
        container(by_kind(&objects, "DaemonSet")[0])["securityContext"]["capabilities"]["add"],
        serde_json::json!(["NET_RAW", "NET_ADMIN"])
    );

    // The ServiceMonitor needs the Prometheus Operator's CRD, which this
    // apiserver lacks: it is checked as rendered.
    let monitor = helm
        .template(
            RELEASE,
            NAMESPACE,
            &[
                "--set",
                "serviceMonitor.enabled=true",
                "--set",
                "serviceMonitor.labels.release=prometheus",
                "--show-only",
                "templates/servicemonitor.yaml",
            ],
        )
        .await?;
    for want in [
        "kind: ServiceMonitor",
        "release: prometheus",
        "app.kubernetes.io/component: controller",
        "- port: metrics",
    ] {
        assert!(monitor.contains(want), "{want} in\n{monitor}");
    }
    Ok(())
}

#[tokio::test]
async fn values_schema_rejects_wrong_values() -> Result<()> {
    let helm = Helm::new().await?;
    // The defaults render.
    helm.template(RELEASE, NAMESPACE, &[]).await?;
    let cases: &[(&[&str], &str)] = &[
        (&["--set", "provider=gcp"], "/provider"),
        (&["--set", "provider="], "/provider"),
        (&["--set", "logLevel=verbose"], "/logLevel"),
        (&["--set", "logFormat=xml"], "/logFormat"),
        (&["--set", "clusterName="], "/clusterName"),
        (
            &["--set", "loadBalancerClass=not a class"],
            "/loadBalancerClass",
        ),
        (&["--set", "defaultClass=maybe"], "/defaultClass"),
        (
            &["--set", "image.pullPolicy=Sometimes"],
            "/image/pullPolicy",
        ),
        (&["--set", "controller.replicas=0"], "/controller/replicas"),
        (
            &["--set", "controller.leaderElection.leaseDuration=15"],
            "/controller/leaderElection/leaseDuration",
        ),
        (
            &["--set", "controller.metrics.port=70000"],
            "/controller/metrics/port",
        ),
        (&["--set", "controler.replicas=2"], "controler"),
        (
            &["--set", "speaker.enabled=true", "--set", "provider=aws"],
            "/speaker/enabled",
        ),
    ];
    for (args, path) in cases {
        let out = helm.run_template(RELEASE, NAMESPACE, args).await?;
        assert!(
            !out.success,
            "helm template {args:?} succeeded:\n{}",
            out.stdout
        );
        assert!(
            out.stderr.contains("schema") && out.stderr.contains(path),
            "helm template {args:?} failed without naming {path}:\n{}",
            out.stderr
        );
    }
    Ok(())
}

/// A kubeconfig like the admin's, but authenticated as the ServiceAccount
/// with a token from the TokenRequest API, as a pod would be.
async fn service_account_kubeconfig(cp: &ControlPlane, sa: &str, path: &Path) -> Result<()> {
    let admin = cp.client().await?;
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(), // the apiserver's own
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(admin, NAMESPACE)
        .create_token_request(sa, &PostParams::default(), &request)
        .await
        .with_context(|| format!("requesting a token for ServiceAccount {sa}"))?
        .status
        .context("the TokenRequest has no status")?
        .token;
    let mut kubeconfig = Kubeconfig::read_from(cp.kubeconfig_path())?;
    for user in &mut kubeconfig.auth_infos {
        let auth = user.auth_info.get_or_insert_with(Default::default);
        auth.token = Some(token.clone().into());
    }
    // JSON is YAML: kube and kubectl read it as a kubeconfig.
    std::fs::write(path, serde_json::to_vec_pretty(&kubeconfig)?)
        .with_context(|| format!("writing {}", path.display()))
}

async fn client_from(path: &Path) -> Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

fn api_status(result: Result<impl std::fmt::Debug, kube::Error>) -> Option<u16> {
    match result {
        Err(kube::Error::Api(s)) => Some(s.code),
        _ => None,
    }
}

/// The controller, started with the arguments the chart's Deployment gives
/// it and authenticated with its ServiceAccount's token, does a bare-metal
/// Service's whole life without one forbidden call.
#[tokio::test(flavor = "multi_thread")]
async fn controller_runs_under_the_charts_rbac() -> Result<()> {
    let helm = Helm::new().await?;
    let cp = ControlPlane::start().await?;
    let admin = cp.client().await?;
    apply_chart_crds(&cp).await?;
    chart::apply(&cp, NAMESPACE_YAML, false).await?;
    fixtures::create_namespace(&admin, "test").await?;

    let baremetal = values("baremetal-values.yaml");
    let rbac = helm
        .template(
            RELEASE,
            NAMESPACE,
            &[
                "-f",
                &baremetal,
                "--show-only",
                "templates/serviceaccounts.yaml",
                "--show-only",
                "templates/rbac.yaml",
            ],
        )
        .await?;
    chart::apply(&cp, &rbac, false).await?;
    let (deployment, _) = render_and_dry_run(
        &cp,
        &helm,
        &[
            "-f",
            &baremetal,
            "--show-only",
            "templates/controller-deployment.yaml",
        ],
    )
    .await?;
    let deployment = &deployment[0];
    let sa = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .context("the Deployment names no ServiceAccount")?
        .to_owned();

    let kubeconfig = cp.dir().join("controller-sa.kubeconfig");
    service_account_kubeconfig(&cp, &sa, &kubeconfig).await?;
    // The token is really the ServiceAccount's, and it is held to its rules.
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
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut ctl = FerrolbProcess::spawn_program(
        &ferrolb_bin()?,
        &kubeconfig,
        cp.dir(),
        &args,
        &[("POD_NAME", "ferrolb-controller-rbac")],
    )?;

    let env = Env {
        client: admin.clone(),
        cp,
        ns: "test".into(),
    };
    let check =
        async {
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

            // Every metric docs/troubleshooting.md lists is served (the AWS
            // provider's own only with the AWS provider).
            let (code, metrics) = common::http_get(metrics_port(&ctl.log())?, "/metrics").await?;
            assert_eq!(code, 200);
            for name in documented_metrics()? {
                if name.starts_with("ferrolb_aws_") {
                    continue;
                }
                assert!(
                    metrics.lines().any(|l| l.starts_with(&format!("{name}{{"))
                        || l.starts_with(&format!("{name} "))),
                    "docs/troubleshooting.md lists {name}, /metrics serves:\n{metrics}"
                );
            }

            let status = ctl.terminate().await?;
            assert!(status.success(), "the controller exited with {status}");
            let holder = leases
                .get("ferrolb-controller")
                .await?
                .spec
                .and_then(|s| s.holder_identity);
            assert_eq!(holder, None, "the Lease is released on SIGTERM");
            Ok::<_, anyhow::Error>(())
        };
    check.await.with_log(&ctl)?;

    let log = ctl.log();
    let denied: Vec<&str> = log
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("forbidden") || l.contains("403")
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

/// The metric names in the first column of docs/troubleshooting.md's table;
/// a histogram is checked by its `_count` series.
fn documented_metrics() -> Result<Vec<String>> {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/troubleshooting.md"),
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
        bail!("docs/troubleshooting.md lists no metrics table: {names:?}");
    }
    Ok(names)
}

/// The IAM policy in docs/install-aws.md allows exactly the AWS calls the
/// provider makes: the operation names its call wrapper counts.
#[test]
fn iam_policy_in_the_docs_allows_every_aws_call() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut called: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let src = root.join("providers/aws/src");
    for entry in std::fs::read_dir(&src)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        // `.elb(` / `.ec2(`, then the operation's name as the first argument.
        for (wrapper, service) in [(".elb(", "elasticloadbalancing"), (".ec2(", "ec2")] {
            for (at, _) in text.match_indices(wrapper) {
                let rest = text[at + wrapper.len()..].trim_start();
                let Some(rest) = rest.strip_prefix('"') else {
                    continue;
                };
                let Some(end) = rest.find('"') else { continue };
                called
                    .entry(service.to_owned())
                    .or_default()
                    .insert(rest[..end].to_owned());
            }
        }
    }
    assert!(
        called.values().map(BTreeSet::len).sum::<usize>() > 20,
        "found the provider's calls: {called:?}"
    );

    let doc = std::fs::read_to_string(root.join("docs/install-aws.md"))?;
    let start = doc
        .find("```json\n")
        .context("docs/install-aws.md has no ```json block")?
        + "```json\n".len();
    let end = start
        + doc[start..]
            .find("```")
            .context("unterminated ```json block")?;
    let policy: Value = serde_json::from_str(&doc[start..end]).context("the policy is no JSON")?;
    let mut allowed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for statement in policy["Statement"].as_array().context("no Statement")? {
        assert_eq!(statement["Effect"], "Allow");
        for action in statement["Action"].as_array().context("no Action list")? {
            let action = action.as_str().context("an action is no string")?;
            let (service, op) = action.split_once(':').context("action without service")?;
            assert!(!op.contains('*'), "{action}: the policy names each action");
            allowed
                .entry(service.to_owned())
                .or_default()
                .insert(op.to_owned());
        }
    }
    assert_eq!(allowed, called, "docs/install-aws.md vs providers/aws/src");
    Ok(())
}
