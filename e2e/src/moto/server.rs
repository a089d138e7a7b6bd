//! Where moto_server comes from.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::Command;
use tokio::sync::OnceCell;

/// Installing moto from PyPI takes about a minute; allow for a slow network.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(15 * 60);

static MOTO_SERVER: OnceCell<PathBuf> = OnceCell::const_new();

/// The `moto_server` executable, found once per process: `FERROLB_MOTO_SERVER` if set,
/// else the last line printed by `e2e/scripts/moto-venv.sh`, which installs the pinned
/// moto into a venv in the cache outside the repository when it is missing.
pub async fn moto_server_path() -> Result<PathBuf> {
    MOTO_SERVER.get_or_try_init(find).await.cloned()
}

async fn find() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("FERROLB_MOTO_SERVER") {
        let path = PathBuf::from(path);
        if !is_executable(&path) {
            bail!(
                "FERROLB_MOTO_SERVER={} is not an executable file",
                path.display()
            );
        }
        return Ok(path);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/moto-venv.sh");
    tracing::info!(script = %script.display(), "locating moto_server (the first run installs it)");
    // stderr is inherited so that pip's progress and errors reach the terminal.
    let output = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(INSTALL_TIMEOUT, output)
        .await
        .with_context(|| format!("{} did not finish in {INSTALL_TIMEOUT:?}", script.display()))?
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed ({}); its stderr is above",
            script.display(),
            output.status
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let path = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(PathBuf::from)
        .with_context(|| format!("{} printed no path", script.display()))?;
    if !is_executable(&path) {
        bail!(
            "{} printed {}, which is not an executable file",
            script.display(),
            path.display()
        );
    }
    Ok(path)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
