//! Where moto_server comes from.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
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
    let (script, path) = crate::binaries::script_output(
        "moto-venv.sh",
        "locating moto_server (the first run installs it)",
        INSTALL_TIMEOUT,
    )
    .await?;
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
