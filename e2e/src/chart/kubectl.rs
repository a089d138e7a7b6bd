//! kubectl against a [`ControlPlane`]: applies manifests as a user would, with
//! the apiserver's own YAML handling, validation and warnings.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::ControlPlane;

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// What one kubectl command did.
#[derive(Debug)]
pub struct KubectlOutput {
    pub stdout: String,
    /// kubectl prints the apiserver's warnings (`Warning: …`) here.
    pub stderr: String,
}

/// `kubectl <args> --kubeconfig <cp's kubeconfig>` with `stdin` on its standard
/// input; fails with kubectl's message unless it exits 0.
pub async fn kubectl(cp: &ControlPlane, args: &[&str], stdin: &str) -> Result<KubectlOutput> {
    let mut cmd = Command::new("kubectl");
    cmd.args(args)
        .arg("--kubeconfig")
        .arg(cp.kubeconfig_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .context("running kubectl (it must be on PATH)")?;
    let mut input = child.stdin.take().context("kubectl's stdin")?;
    input.write_all(stdin.as_bytes()).await?;
    drop(input);
    let output = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .with_context(|| {
            format!(
                "kubectl {} did not finish in {RUN_TIMEOUT:?}",
                args.join(" ")
            )
        })??;
    let out = KubectlOutput {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    if !output.status.success() {
        bail!(
            "kubectl {} failed ({}):\n{}",
            args.join(" "),
            output.status,
            out.stderr
        );
    }
    Ok(out)
}

/// Server-side apply of a manifest stream, for real or (`dry_run`) only
/// validated and admitted by the apiserver; unknown or misplaced fields are
/// errors. Returns the objects as the apiserver answered them (a `List` when
/// the stream holds more than one) and kubectl's stderr, warnings included.
pub async fn apply(
    cp: &ControlPlane,
    manifests: &str,
    dry_run: bool,
) -> Result<(serde_json::Value, String)> {
    let mut args = vec![
        "apply",
        "--server-side",
        "--field-manager=ferrolb-e2e",
        "--validate=strict",
        "-o",
        "json",
        "-f",
        "-",
    ];
    if dry_run {
        args.push("--dry-run=server");
    }
    let out = kubectl(cp, &args, manifests).await?;
    let json = serde_json::from_str(&out.stdout)
        .with_context(|| format!("kubectl printed no JSON:\n{}", out.stdout))?;
    Ok((json, out.stderr))
}

/// The objects in what [`apply`] returned: the items of a `List`, or the one object.
pub fn objects(applied: &serde_json::Value) -> Vec<&serde_json::Value> {
    match applied.get("items").and_then(|i| i.as_array()) {
        Some(items) if applied["kind"] == "List" => items.iter().collect(),
        _ => vec![applied],
    }
}
