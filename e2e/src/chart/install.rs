//! The chart put into a [`ControlPlane`] the way the chart tests need it: its
//! CRDs for real, its namespace, and rendered objects applied with
//! server-side dry-run or for real.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;

use super::helm::{Helm, chart_dir, document_kinds};
use super::kubectl::{apply, kubectl, objects};
use crate::ControlPlane;

/// The release the tests install.
pub const RELEASE: &str = "ferrolb";
/// Its namespace.
pub const NAMESPACE: &str = "ferrolb-system";

/// The install's namespace, with the restricted Pod Security profile in warn
/// mode: the apiserver then warns about every pod template that breaks it.
pub const NAMESPACE_YAML: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: ferrolb-system
  labels:
    pod-security.kubernetes.io/warn: restricted
    pod-security.kubernetes.io/warn-version: latest
";

/// The path of `charts/ferrolb/ci/<name>`, a values file the tests use.
pub fn ci_values(name: &str) -> String {
    chart_dir()
        .join("ci")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Applies the chart's CRDs (`crds/crds.yaml`, as Helm would) for real and the
/// namespace, and waits until the CRDs are served.
pub async fn prepare(cp: &ControlPlane) -> Result<()> {
    let crds = std::fs::read_to_string(chart_dir().join("crds/crds.yaml"))?;
    apply(cp, &crds, false).await?;
    kubectl(
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
    apply(cp, NAMESPACE_YAML, false).await?;
    Ok(())
}

/// Renders [`RELEASE`] in [`NAMESPACE`] with `args` and applies the result,
/// with server-side dry-run unless `for_real`. Returns the objects as the
/// apiserver accepted them and kubectl's stderr (the apiserver's warnings).
/// Fails unless every rendered document came back.
pub async fn render_and_apply(
    cp: &ControlPlane,
    helm: &Helm,
    args: &[&str],
    for_real: bool,
) -> Result<(Vec<Value>, String)> {
    let rendered = helm.template(RELEASE, NAMESPACE, args).await?;
    let (applied, warnings) = apply(cp, &rendered, !for_real)
        .await
        .with_context(|| format!("applying the chart rendered with {args:?}"))?;
    let objects: Vec<Value> = objects(&applied).into_iter().cloned().collect();
    let mut rendered_kinds = document_kinds(&rendered);
    let mut applied_kinds: Vec<String> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    rendered_kinds.sort();
    applied_kinds.sort();
    ensure!(
        applied_kinds == rendered_kinds,
        "rendered {rendered_kinds:?} but the apiserver returned {applied_kinds:?} ({args:?})"
    );
    Ok((objects, warnings))
}

/// `Kind/name`.
pub fn kind_and_name(o: &Value) -> String {
    format!(
        "{}/{}",
        o["kind"].as_str().unwrap_or("?"),
        o["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// The objects of one kind.
pub fn by_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The first container of a Deployment or DaemonSet.
pub fn container(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]["containers"][0]
}

/// The first container's `args`.
pub fn args_of(workload: &Value) -> Vec<String> {
    container(workload)["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// A kubeconfig like the admin's, but authenticated as the ServiceAccount
/// with a token from the TokenRequest API, as a pod would be.
pub async fn service_account_kubeconfig(cp: &ControlPlane, sa: &str, path: &Path) -> Result<()> {
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

/// A client from a kubeconfig file.
pub async fn client_from(path: &Path) -> Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}
