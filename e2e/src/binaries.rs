//! Where kube-apiserver and etcd come from.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::Command;
use tokio::sync::OnceCell;

pub const KUBE_APISERVER: &str = "kube-apiserver";
pub const ETCD: &str = "etcd";

/// Building both binaries from source takes several minutes on two cores.
const BUILD_TIMEOUT: Duration = Duration::from_secs(45 * 60);

static BIN_DIR: OnceCell<PathBuf> = OnceCell::const_new();

/// The directory holding `kube-apiserver` and `etcd`, found once per process:
/// 1. `FERROLB_CONTROL_PLANE_BIN`, which must hold both;
/// 2. `KUBEBUILDER_ASSETS`, if it holds both (envtest users already have one);
/// 3. the last line printed by `e2e/scripts/control-plane-bins.sh`, which builds the
///    pinned versions into a cache outside the repository when they are missing.
pub async fn control_plane_bin_dir() -> Result<PathBuf> {
    BIN_DIR.get_or_try_init(find_bin_dir).await.cloned()
}

async fn find_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("FERROLB_CONTROL_PLANE_BIN") {
        let dir = PathBuf::from(dir);
        if let Some(missing) = missing_binary(&dir) {
            bail!(
                "FERROLB_CONTROL_PLANE_BIN={} has no executable {missing}",
                dir.display()
            );
        }
        return Ok(dir);
    }
    if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS") {
        let dir = PathBuf::from(dir);
        match missing_binary(&dir) {
            None => return Ok(dir),
            Some(missing) => tracing::info!(
                dir = %dir.display(),
                missing,
                "KUBEBUILDER_ASSETS lacks a binary; using control-plane-bins.sh"
            ),
        }
    }
    run_build_script().await
}

fn missing_binary(dir: &Path) -> Option<&'static str> {
    [KUBE_APISERVER, ETCD]
        .into_iter()
        .find(|name| !is_executable(&dir.join(name)))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

async fn run_build_script() -> Result<PathBuf> {
    let (script, dir) = script_output(
        "control-plane-bins.sh",
        "locating control-plane binaries (the first run builds them, which takes minutes)",
        BUILD_TIMEOUT,
    )
    .await?;
    if let Some(missing) = missing_binary(&dir) {
        bail!(
            "{} printed {}, which has no executable {missing}",
            script.display(),
            dir.display()
        );
    }
    Ok(dir)
}

/// Runs `e2e/scripts/<name>` and takes the last non-empty line it printed
/// (the scripts print the path of what they built or found there). Its stderr
/// goes to the terminal, so build progress and errors stay visible.
pub(crate) async fn script_output(
    name: &str,
    what: &str,
    timeout: Duration,
) -> Result<(PathBuf, PathBuf)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name);
    tracing::info!(script = %script.display(), "{what}");
    let output = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(timeout, output)
        .await
        .with_context(|| format!("{} did not finish in {timeout:?}", script.display()))?
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed ({}); its stderr is above",
            script.display(),
            output.status
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(PathBuf::from)
        .with_context(|| format!("{} printed nothing", script.display()))?;
    Ok((script, last))
}
