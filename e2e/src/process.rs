//! The ferrolb binary, run against a [`ControlPlane`].

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::Command;

use crate::child::Supervised;
use crate::control_plane::ControlPlane;

/// `RUST_LOG` for the child unless the caller passes one.
pub const DEFAULT_RUST_LOG: &str = "info,ferrolb=debug";
/// How long [`FerrolbProcess::terminate`] waits after SIGTERM.
pub const TERMINATE_GRACE: Duration = Duration::from_secs(10);

/// The ferrolb binary: `FERROLB_BIN`, else `<target dir>/debug/ferrolb`, where the target
/// dir is `CARGO_TARGET_DIR` (relative to the workspace root when relative) or
/// `<workspace root>/target`.
pub fn ferrolb_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("FERROLB_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("FERROLB_BIN={} does not exist", bin.display());
        }
        return Ok(bin);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the e2e crate has no parent directory")?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| root.join(dir))
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("debug/ferrolb");
    if !bin.is_file() {
        bail!(
            "{} does not exist; build it with `cargo build -p ferrolb` (or set FERROLB_BIN)",
            bin.display()
        );
    }
    Ok(bin)
}

/// A running ferrolb (or any program taking `--kubeconfig`), logging to
/// `<dir>/ferrolb-<n>.log`. Dropping it kills it.
pub struct FerrolbProcess {
    child: Supervised,
}

impl FerrolbProcess {
    /// Runs `ferrolb <args> --kubeconfig <cp's kubeconfig>`, logging into `cp.dir()`.
    pub fn spawn(cp: &ControlPlane, args: &[&str], envs: &[(&str, &str)]) -> Result<Self> {
        Self::spawn_program(&ferrolb_bin()?, cp.kubeconfig_path(), cp.dir(), args, envs)
    }

    /// Runs `ferrolb controller --provider aws` for `cluster`, without leader
    /// election unless `extra` has a `--leader-election` flag, with the AWS
    /// endpoint and credentials in `aws_env` (moto's, or a proxy's in front of
    /// it), metrics on `metrics_addr`, then `extra`.
    /// It logs at `info,ferrolb=debug,ferrolb_aws=debug` unless `extra` has
    /// a `--log` of its own.
    pub fn spawn_aws_controller(
        cp: &ControlPlane,
        aws_env: &[(String, String)],
        cluster: &str,
        metrics_addr: &str,
        extra: &[&str],
    ) -> Result<Self> {
        let mut args = vec![
            "controller",
            "--provider",
            "aws",
            "--cluster-name",
            cluster,
            "--metrics-addr",
            metrics_addr,
        ];
        if !extra.iter().any(|a| a.starts_with("--leader-election")) {
            args.push("--leader-election=false");
        }
        if !extra.contains(&"--log") {
            args.extend(["--log", "info,ferrolb=debug,ferrolb_aws=debug"]);
        }
        args.extend_from_slice(extra);
        let envs: Vec<(&str, &str)> = aws_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Self::spawn(cp, &args, &envs)
    }

    /// Runs `program <args> --kubeconfig <kubeconfig>` with stdout and stderr in the first
    /// free `<log_dir>/ferrolb-<n>.log` (n = 0, 1, …). `envs` are added to the inherited
    /// environment; `RUST_LOG` defaults to [`DEFAULT_RUST_LOG`].
    pub fn spawn_program(
        program: &Path,
        kubeconfig: &Path,
        log_dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Self> {
        let mut cmd = Command::new(program);
        cmd.args(args).arg("--kubeconfig").arg(kubeconfig);
        if !envs.iter().any(|(key, _)| *key == "RUST_LOG") {
            cmd.env("RUST_LOG", DEFAULT_RUST_LOG);
        }
        cmd.envs(envs.iter().copied());
        Self::spawn_command(cmd, log_dir)
    }

    /// Runs `cmd` as it is (a peer such as a routing daemon), supervised and
    /// logging like the others.
    pub fn spawn_command(cmd: Command, log_dir: &Path) -> Result<Self> {
        let log_path = new_log_file(log_dir)?;
        let name = Path::new(cmd.as_std().get_program())
            .file_name()
            .map_or_else(|| "ferrolb".into(), |n| n.to_string_lossy().into_owned());
        let child = Supervised::spawn(&name, cmd, &log_path)?;
        Ok(FerrolbProcess { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    pub fn log_path(&self) -> &Path {
        self.child.log_path()
    }

    /// Everything it has written so far (stdout and stderr, interleaved).
    pub fn log(&self) -> String {
        std::fs::read(self.log_path())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The exit status if it has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// SIGKILL, then wait for it to exit.
    pub async fn kill(&mut self) -> Result<ExitStatus> {
        self.child.kill().await
    }

    /// SIGSTOP: the process stays, frozen, until [`resume`](Self::resume),
    /// as a stalled node or VM would leave it.
    pub fn pause(&self) -> Result<()> {
        self.signal(rustix::process::Signal::STOP)
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) -> Result<()> {
        self.signal(rustix::process::Signal::CONT)
    }

    fn signal(&self, signal: rustix::process::Signal) -> Result<()> {
        let pid =
            rustix::process::Pid::from_raw(self.pid() as i32).context("the process has no pid")?;
        rustix::process::kill_process(pid, signal)
            .with_context(|| format!("sending {signal:?} to {}", self.pid()))
    }

    /// SIGTERM, then wait up to [`TERMINATE_GRACE`]; SIGKILL if it is still running.
    pub async fn terminate(&mut self) -> Result<ExitStatus> {
        self.child.terminate(TERMINATE_GRACE).await
    }
}

/// Creates the first `ferrolb-<n>.log` that does not exist yet.
fn new_log_file(dir: &Path) -> Result<PathBuf> {
    for n in 0.. {
        let path = dir.join(format!("ferrolb-{n}.log"));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(_) => return Ok(path),
            Err(err) if err.kind() == ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(err).with_context(|| format!("creating {}", path.display())),
        }
    }
    unreachable!("an unbounded range ends")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wait::wait_for;

    /// `sh -c <script> sh --kubeconfig <path>`: the appended flag lands in `$1 $2`.
    fn spawn_sh(dir: &Path, script: &str, envs: &[(&str, &str)]) -> FerrolbProcess {
        let args = ["-c", script, "sh"];
        FerrolbProcess::spawn_program(Path::new("/bin/sh"), Path::new("/kc"), dir, &args, envs)
            .unwrap()
    }

    async fn wait_for_log(process: &FerrolbProcess, needle: &str) {
        wait_for(needle, Duration::from_secs(5), || async {
            Ok(process.log().contains(needle).then_some(()))
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn passes_kubeconfig_and_rust_log_and_numbers_logs() {
        let dir = tempfile::tempdir().unwrap();
        let script = r#"echo "args=$1 $2 log=$RUST_LOG""#;
        let mut first = spawn_sh(dir.path(), script, &[]);
        let mut second = spawn_sh(dir.path(), script, &[("RUST_LOG", "trace")]);
        wait_for_log(&first, "args=--kubeconfig /kc log=info,ferrolb=debug").await;
        wait_for_log(&second, "args=--kubeconfig /kc log=trace").await;
        assert!(first.log_path().ends_with("ferrolb-0.log"));
        assert!(second.log_path().ends_with("ferrolb-1.log"));
        // Both may have exited already; either way they are reaped.
        first.kill().await.unwrap();
        second.terminate().await.unwrap();
    }

    #[tokio::test]
    async fn terminate_lets_it_exit_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let script = "trap 'echo bye; exit 0' TERM; echo up; while :; do sleep 0.05; done";
        let mut process = spawn_sh(dir.path(), script, &[]);
        wait_for_log(&process, "up").await;
        let status = process.terminate().await.unwrap();
        assert!(status.success(), "{status}");
        assert!(process.log().contains("bye"));
    }

    #[tokio::test]
    async fn kill_does_not_wait_for_a_process_ignoring_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let mut process = spawn_sh(dir.path(), "trap '' TERM; echo up; sleep 60", &[]);
        wait_for_log(&process, "up").await;
        let pid = process.pid();
        let started = std::time::Instant::now();
        let status = process.kill().await.unwrap();
        assert!(!status.success());
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(process.try_wait().unwrap().is_some());
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}
