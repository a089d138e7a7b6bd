//! The Helm chart against a real kube-apiserver: it lints, it renders for
//! both providers, every object it renders passes the apiserver's validation
//! and admission (server-side dry-run, strict field validation, the restricted
//! Pod Security profile), and bad values are refused. chart_rbac.rs runs the
//! controller under the chart's RBAC.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use ferrolb_e2e::ControlPlane;
use ferrolb_e2e::chart::{
    self, Helm, NAMESPACE, RELEASE, args_of, by_kind, container, kind_and_name, render_and_apply,
};
use serde_json::Value;

/// No rule grants `*`, and Secrets are never granted cluster-wide.
fn assert_rbac_is_tight(objects: &[Value]) {
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

#[tokio::test(flavor = "multi_thread")]
async fn chart_lints_renders_and_passes_the_apiservers_validation() -> Result<()> {
    let helm = Helm::new().await?;
    let (aws, baremetal) = (
        chart::ci_values("aws-values.yaml"),
        chart::ci_values("baremetal-values.yaml"),
    );
    for v in [&aws, &baremetal] {
        helm.lint(&["--namespace", NAMESPACE, "-f", v]).await?;
    }
    helm.lint(&["--namespace", NAMESPACE]).await?;

    let cp = ControlPlane::start().await?;
    chart::prepare(&cp).await?;

    // AWS: controller only, IRSA annotation, no pool access.
    let (objects, warnings) = render_and_apply(&cp, &helm, &["-f", &aws], false).await?;
    assert!(
        !warnings.contains("Warning:"),
        "the AWS install draws warnings:\n{warnings}"
    );
    let names: BTreeSet<String> = objects.iter().map(kind_and_name).collect();
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
    let (objects, warnings) = render_and_apply(&cp, &helm, &["-f", &baremetal], false).await?;
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
    let (objects, warnings) = render_and_apply(
        &cp,
        &helm,
        &["-f", &baremetal, "--set", "speaker.enabled=true"],
        false,
    )
    .await?;
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

    let (objects, _) = render_and_apply(
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
        false,
    )
    .await?;
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
