//! helm, built once per machine by `e2e/scripts/helm-bin.sh`, and the chart in
//! `charts/ferrolb`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;
use tokio::process::Command;
use tokio::sync::OnceCell;

use crate::binaries::script_output;

/// Building helm from its module takes a few minutes on two cores.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// One `helm template` or `helm lint`.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

static BIN: OnceCell<PathBuf> = OnceCell::const_new();

/// `charts/ferrolb` in this repository.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/ferrolb")
}

/// helm, with its config, cache and data directories in a temporary directory
/// so that nothing the user has configured changes what it does.
pub struct Helm {
    bin: PathBuf,
    home: TempDir,
}

/// What one helm command did.
#[derive(Debug)]
pub struct HelmOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Helm {
    /// `FERROLB_HELM`, else the helm that `helm-bin.sh` built (building it on
    /// the first call on this machine).
    pub async fn new() -> Result<Helm> {
        let bin = BIN
            .get_or_try_init(|| async {
                let (script, bin) = script_output(
                    "helm-bin.sh",
                    "locating helm (the first run builds it, which takes minutes)",
                    BUILD_TIMEOUT,
                )
                .await?;
                if !bin.is_file() {
                    bail!(
                        "{} printed {}, which is no file",
                        script.display(),
                        bin.display()
                    );
                }
                Ok(bin)
            })
            .await?
            .clone();
        let home = tempfile::Builder::new()
            .prefix("ferrolb-helm-")
            .tempdir()
            .context("creating helm's home")?;
        Ok(Helm { bin, home })
    }

    /// Runs `helm <args>` and returns what it printed, whether it succeeded or not.
    pub async fn run(&self, args: &[&str]) -> Result<HelmOutput> {
        let home = self.home.path();
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_DATA_HOME", home.join("data"))
            // `helm template` and `helm lint` never talk to a cluster.
            .env("KUBECONFIG", home.join("no-kubeconfig"))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(RUN_TIMEOUT, cmd.output())
            .await
            .with_context(|| format!("helm {} did not finish in {RUN_TIMEOUT:?}", args.join(" ")))?
            .with_context(|| format!("running {}", self.bin.display()))?;
        Ok(HelmOutput {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// `helm template <release> charts/ferrolb --namespace <namespace> <args>`:
    /// the rendered manifests, or an error with helm's message.
    pub async fn template(&self, release: &str, namespace: &str, args: &[&str]) -> Result<String> {
        let out = self.run_template(release, namespace, args).await?;
        if !out.success {
            bail!("helm template {} failed:\n{}", args.join(" "), out.stderr);
        }
        Ok(out.stdout)
    }

    /// Like [`Helm::template`], but hands back a failure instead of raising it.
    pub async fn run_template(
        &self,
        release: &str,
        namespace: &str,
        args: &[&str],
    ) -> Result<HelmOutput> {
        let chart = chart_dir();
        let chart = chart.to_str().context("the chart path is not UTF-8")?;
        let mut all = vec!["template", release, chart, "--namespace", namespace];
        all.extend_from_slice(args);
        self.run(&all).await
    }

    /// `helm lint --strict charts/ferrolb <args>`: Ok with its report when it
    /// passes (warnings count as failures).
    pub async fn lint(&self, args: &[&str]) -> Result<String> {
        let chart = chart_dir();
        let chart = chart.to_str().context("the chart path is not UTF-8")?;
        let mut all = vec!["lint", "--strict", chart];
        all.extend_from_slice(args);
        let out = self.run(&all).await?;
        if !out.success {
            bail!(
                "helm lint {} failed:\n{}{}",
                args.join(" "),
                out.stdout,
                out.stderr
            );
        }
        Ok(out.stdout)
    }
}

/// The `kind: …` of each document in a rendered manifest stream, in order:
/// what kubectl must have applied, counted independently of kubectl.
pub fn document_kinds(manifests: &str) -> Vec<String> {
    manifests
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .map(|k| k.trim().to_owned())
        .collect()
}
