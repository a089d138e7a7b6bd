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

/// The one object called `Kind/name`.
fn named<'a>(objects: &'a [Value], kind_name: &str) -> &'a Value {
    let found: Vec<&Value> = objects
        .iter()
        .filter(|o| kind_and_name(o) == kind_name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{kind_name} among {:?}",
        objects.iter().map(kind_and_name).collect::<Vec<_>>()
    );
    found[0]
}

/// The first container's ports, as (name, port, protocol).
fn ports_of(workload: &Value) -> Vec<(String, i64, String)> {
    container(workload)["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_owned(),
                p["containerPort"].as_i64().unwrap_or_default(),
                p["protocol"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
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

    // AWS: controller only (there is no speaker for AWS, though
    // speaker.enabled is on by default), IRSA annotation, no pool access.
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
        !role["rules"].to_string().contains("ferrolb.io"),
        "the AWS controller needs no pools or advertisements: {role}"
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

    // Bare metal: pools and advertisements in the controller's ClusterRole,
    // the default class, and the speaker, which is on by default.
    let (objects, warnings) = render_and_apply(&cp, &helm, &["-f", &baremetal], false).await?;
    let names: BTreeSet<String> = objects.iter().map(kind_and_name).collect();
    for want in [
        "ServiceAccount/ferrolb-speaker",
        "ClusterRole/ferrolb-speaker",
        "ClusterRoleBinding/ferrolb-speaker",
        "DaemonSet/ferrolb-speaker",
        "Deployment/ferrolb-controller",
    ] {
        assert!(names.contains(want), "{want} in {names:?}");
    }
    assert_rbac_is_tight(&objects);
    let role = named(&objects, "ClusterRole/ferrolb-controller");
    let rules = role["rules"].as_array().cloned().unwrap_or_default();
    assert!(
        role["rules"].to_string().contains("ippools/status"),
        "{role}"
    );
    let advertisements = serde_json::json!({
        "apiGroups": ["ferrolb.io"],
        "resources": ["l2advertisements", "bgpadvertisements"],
        "verbs": ["list", "watch"],
    });
    assert!(
        rules.contains(&advertisements),
        "the controller reads the advertisements: {role}"
    );
    let args = args_of(named(&objects, "Deployment/ferrolb-controller"));
    assert!(args.iter().any(|a| a == "--default-class"), "{args:?}");

    // The speaker's ClusterRole is the calls it makes, and no more.
    assert_eq!(
        named(&objects, "ClusterRole/ferrolb-speaker")["rules"],
        serde_json::json!([
            {"apiGroups": [""], "resources": ["services", "nodes"], "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            {"apiGroups": ["ferrolb.io"], "resources": ["ippools", "l2advertisements", "bgppeers", "bgpadvertisements"], "verbs": ["list", "watch"]},
            {"apiGroups": [""], "resources": ["services/status"], "verbs": ["patch"]},
            {"apiGroups": ["ferrolb.io"], "resources": ["bgppeers/status"], "verbs": ["patch"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
        ])
    );
    // BGP passwords: get, by name, in the release namespace only.
    assert_eq!(
        named(&objects, "Role/ferrolb-speaker")["rules"],
        serde_json::json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}])
    );
    assert_eq!(
        named(&objects, "Role/ferrolb-speaker")["metadata"]["namespace"],
        NAMESPACE
    );
    let binding = named(&objects, "ClusterRoleBinding/ferrolb-speaker");
    assert_eq!(binding["roleRef"]["name"], "ferrolb-speaker");
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "ferrolb-speaker", "namespace": NAMESPACE}])
    );

    // On every node, host network, root with NET_RAW only, its node's name
    // from the downward API.
    let speaker = named(&objects, "DaemonSet/ferrolb-speaker");
    let pod = &speaker["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(pod["serviceAccountName"], "ferrolb-speaker");
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(
        pod["tolerations"],
        serde_json::json!([{"operator": "Exists"}])
    );
    assert!(
        pod["terminationGracePeriodSeconds"].as_i64().unwrap_or(30) <= 10,
        "{}",
        pod["terminationGracePeriodSeconds"]
    );
    let c = container(speaker);
    assert_eq!(
        c["securityContext"],
        serde_json::json!({
            "runAsUser": 0,
            "runAsNonRoot": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"], "add": ["NET_RAW"]},
        })
    );
    assert_eq!(
        c["env"][0],
        serde_json::json!({
            "name": "FERROLB_NODE_NAME",
            "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}},
        })
    );
    let args = args_of(speaker);
    assert_eq!(args[0], "speaker", "{args:?}");
    for want in [
        "--load-balancer-class=ferrolb.io/baremetal",
        "--default-class",
        "--metrics-addr=0.0.0.0:7473",
        "--heartbeat-port=7946",
        "--heartbeat-interval=100ms",
        "--peer-timeout=500ms",
    ] {
        assert!(args.iter().any(|a| a == want), "{want} in {args:?}");
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--node-name")),
        "the node name comes from FERROLB_NODE_NAME: {args:?}"
    );
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
    assert_eq!(
        ports_of(speaker),
        [
            ("metrics".into(), 7473, "TCP".into()),
            ("heartbeat".into(), 7946, "UDP".into())
        ]
    );
    // The restricted profile is really checked: a host-network pod breaks it,
    // and only the speaker does.
    let violations: Vec<&str> = warnings
        .lines()
        .filter(|l| l.contains("would violate PodSecurity"))
        .collect();
    assert_eq!(violations.len(), 1, "{warnings}");
    assert!(violations[0].contains("hostNetwork"), "{warnings}");

    // Without the speaker: nothing of it, and nothing breaks the profile.
    let (objects, warnings) = render_and_apply(
        &cp,
        &helm,
        &["-f", &baremetal, "--set", "speaker.enabled=false"],
        false,
    )
    .await?;
    assert!(!warnings.contains("Warning:"), "{warnings}");
    let speaker_parts: Vec<String> = objects
        .iter()
        .map(kind_and_name)
        .filter(|n| n.contains("speaker"))
        .collect();
    assert!(speaker_parts.is_empty(), "{speaker_parts:?}");

    // The speaker's settings reach its flags and ports.
    let (objects, _) = render_and_apply(
        &cp,
        &helm,
        &[
            "-f",
            &baremetal,
            "--set",
            "loadBalancerClass=example.com/lan",
            "--set",
            "defaultClass=false",
            "--set",
            "speaker.metrics.port=9473",
            "--set",
            "speaker.heartbeatPort=8946",
            "--set",
            "speaker.heartbeatInterval=1s",
            "--set",
            "speaker.peerTimeout=3s",
            "--set",
            "speaker.priorityClassName=",
        ],
        false,
    )
    .await?;
    let speaker = named(&objects, "DaemonSet/ferrolb-speaker");
    let args = args_of(speaker);
    for want in [
        "--load-balancer-class=example.com/lan",
        "--metrics-addr=0.0.0.0:9473",
        "--heartbeat-port=8946",
        "--heartbeat-interval=1s",
        "--peer-timeout=3s",
    ] {
        assert!(args.iter().any(|a| a == want), "{want} in {args:?}");
    }
    assert!(!args.iter().any(|a| a == "--default-class"), "{args:?}");
    assert_eq!(
        ports_of(speaker),
        [
            ("metrics".into(), 9473, "TCP".into()),
            ("heartbeat".into(), 8946, "UDP".into())
        ]
    );
    assert!(
        speaker["spec"]["template"]["spec"]["priorityClassName"].is_null(),
        "{speaker}"
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
        (&["--set", "speaker.enabled=yes"], "/speaker/enabled"),
        (
            &["--set", "speaker.metrics.port=0"],
            "/speaker/metrics/port",
        ),
        (
            &["--set", "speaker.heartbeatPort=65536"],
            "/speaker/heartbeatPort",
        ),
        (
            &["--set", "speaker.heartbeatInterval=0ms"],
            "/speaker/heartbeatInterval",
        ),
        (
            &["--set", "speaker.peerTimeout=500"],
            "/speaker/peerTimeout",
        ),
        // The speaker never changes the nodes' interfaces: no NET_ADMIN knob.
        (
            &["--set", "speaker.capabilities.netAdmin=true"],
            "capabilities",
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
    // A peer is declared dead only after two heartbeats are missed, as the
    // speaker itself insists.
    for (interval, timeout) in [("500ms", "500ms"), ("1s", "1900ms"), ("1m", "30s")] {
        let (interval, timeout) = (
            format!("speaker.heartbeatInterval={interval}"),
            format!("speaker.peerTimeout={timeout}"),
        );
        let out = helm
            .run_template(RELEASE, NAMESPACE, &["--set", &interval, "--set", &timeout])
            .await?;
        assert!(
            !out.success
                && out
                    .stderr
                    .contains("must be at least twice speaker.heartbeatInterval"),
            "{interval} {timeout}:\n{}",
            out.stderr
        );
    }
    // Units are compared, not digits.
    helm.template(
        RELEASE,
        NAMESPACE,
        &[
            "--set",
            "speaker.heartbeatInterval=900ms",
            "--set",
            "speaker.peerTimeout=2s",
        ],
    )
    .await?;
    Ok(())
}

/// The IAM policy in docs/install-aws.md allows exactly the AWS calls the
/// provider makes: the operation names its call wrapper counts.
#[test]
fn iam_policy_in_the_docs_allows_every_aws_call() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut called: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Every .rs file under providers/aws/src, in subdirectories too.
    let mut dirs = vec![root.join("providers/aws/src")];
    let mut files = Vec::new();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    for path in files {
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
