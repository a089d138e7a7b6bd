//! A child process that cannot outlive the harness.
//!
//! Three layers make sure of that:
//! - the child leads its own process group, and every kill goes to the whole group, so
//!   anything it forks dies with it;
//! - a watchdog (`sh`, in the same group) blocks reading a pipe whose only writer is this
//!   process; when this process dies for any reason, even SIGKILL, the read returns EOF
//!   and the watchdog kills the group;
//! - `Drop` kills the group and reaps the children before it returns, and tokio's
//!   `kill_on_drop` backs that up.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustix::process::{Pid, Signal, kill_process, kill_process_group};
use tokio::process::{Child, Command};

/// How long `Drop` waits for killed processes to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// Blocks until its stdin reaches EOF, then SIGKILLs its own process group.
const WATCHDOG_SCRIPT: &str = "read -r _; kill -9 0";

pub(crate) struct Supervised {
    name: String,
    pid: u32,
    child: Child,
    exit: Option<ExitStatus>,
    watchdog: Option<Child>,
    log_path: PathBuf,
}

impl Supervised {
    /// Spawns `cmd` with stdin closed and stdout and stderr appended to `log_path`.
    pub(crate) fn spawn(name: &str, mut cmd: Command, log_path: &Path) -> Result<Supervised> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let log_err = log.try_clone().context("duplicating the log file handle")?;
        cmd.stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {name} ({:?})", cmd.as_std().get_program()))?;
        let pid = child
            .id()
            .with_context(|| format!("{name} has no pid right after spawn"))?;
        let mut supervised = Supervised {
            name: name.to_owned(),
            pid,
            child,
            exit: None,
            watchdog: None,
            log_path: log_path.to_owned(),
        };
        // If the watchdog cannot start, dropping `supervised` kills the child.
        supervised.watchdog = Some(spawn_watchdog(pid).context("spawning the watchdog")?);
        tracing::debug!(name, pid, log = %log_path.display(), "spawned");
        Ok(supervised)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The exit status if the child has exited, without blocking.
    pub(crate) fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.exit.is_none() {
            self.exit = self
                .child
                .try_wait()
                .with_context(|| format!("waiting for {}", self.name))?;
        }
        Ok(self.exit)
    }

    /// SIGKILLs the process group and waits for the child and the watchdog.
    pub(crate) async fn kill(&mut self) -> Result<ExitStatus> {
        self.signal_group(Signal::KILL);
        let status = match self.exit {
            Some(status) => status,
            None => {
                let status = tokio::time::timeout(REAP_TIMEOUT, self.child.wait())
                    .await
                    .with_context(|| format!("{} did not die after SIGKILL", self.name))?
                    .with_context(|| format!("waiting for {}", self.name))?;
                self.exit = Some(status);
                status
            }
        };
        self.reap_watchdog().await?;
        Ok(status)
    }

    /// SIGTERMs the child alone and waits up to `grace` for it to exit, then SIGKILLs the
    /// group. Whatever the child left behind in its group is killed either way.
    pub(crate) async fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        if self.exit.is_none() {
            if let Some(pid) = Pid::from_raw(self.pid as i32) {
                // ESRCH cannot happen before the child is reaped; ignore it anyway.
                let _ = kill_process(pid, Signal::TERM);
            }
            if let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await {
                self.exit = Some(status.with_context(|| format!("waiting for {}", self.name))?);
            } else {
                tracing::warn!(name = %self.name, pid = self.pid, ?grace, "no exit after SIGTERM; sending SIGKILL");
            }
        }
        self.kill().await
    }

    /// Sends `signal` to the whole group, unless the group is known to be gone (then the
    /// id could belong to somebody else).
    fn signal_group(&self, signal: Signal) {
        if self.exit.is_some() && self.watchdog.is_none() {
            return;
        }
        if let Some(pgid) = Pid::from_raw(self.pid as i32) {
            // ESRCH: every member already exited; they are reaped below.
            let _ = kill_process_group(pgid, signal);
        }
    }

    async fn reap_watchdog(&mut self) -> Result<()> {
        if let Some(mut watchdog) = self.watchdog.take() {
            tokio::time::timeout(REAP_TIMEOUT, watchdog.wait())
                .await
                .with_context(|| format!("the watchdog of {} did not die", self.name))?
                .with_context(|| format!("waiting for the watchdog of {}", self.name))?;
        }
        Ok(())
    }

    /// Synchronous kill-and-reap for `Drop`, where nothing can be awaited.
    fn kill_blocking(&mut self) {
        self.signal_group(Signal::KILL);
        let deadline = Instant::now() + REAP_TIMEOUT;
        loop {
            if self.exit.is_none() {
                self.exit = self.child.try_wait().ok().flatten();
            }
            if let Some(watchdog) = &mut self.watchdog
                && !matches!(watchdog.try_wait(), Ok(None))
            {
                self.watchdog = None;
            }
            if self.exit.is_some() && self.watchdog.is_none() {
                return;
            }
            if Instant::now() >= deadline {
                tracing::warn!(name = %self.name, pid = self.pid, "not reaped after SIGKILL");
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill_blocking();
    }
}

fn spawn_watchdog(pgid: u32) -> Result<Child> {
    let watchdog = Command::new("/bin/sh")
        .args(["-c", WATCHDOG_SCRIPT])
        // The write end stays in the returned `Child` (std opens pipes close-on-exec, so
        // no other child inherits it) and closes when this process exits.
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(pgid as i32)
        .kill_on_drop(true)
        .spawn()?;
    Ok(watchdog)
}

/// The last `lines` lines of a log file, for error messages.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..].join("\n")
        }
        Err(err) => format!("(cannot read {}: {err})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", script]);
        cmd
    }

    fn group_exists(pgid: u32) -> bool {
        rustix::process::test_kill_process_group(Pid::from_raw(pgid as i32).unwrap()).is_ok()
    }

    #[tokio::test]
    async fn kill_takes_the_whole_group_down() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("child.log");
        // The grandchild `sleep` stays in the group.
        let mut child =
            Supervised::spawn("sleeper", sh("echo hello; sleep 60 & wait"), &log).unwrap();
        let pid = child.pid();
        crate::wait::wait_for("the child to log", Duration::from_secs(5), || async {
            Ok(log_tail(&log, 5).contains("hello").then_some(()))
        })
        .await
        .unwrap();
        assert!(group_exists(pid));
        let status = child.kill().await.unwrap();
        assert!(!status.success());
        // The orphaned `sleep` is reparented and reaped by someone else; give it a moment.
        crate::wait::wait_for("the group to be empty", Duration::from_secs(5), || async {
            Ok((!group_exists(pid)).then_some(()))
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn drop_reaps_the_child() {
        let dir = tempfile::tempdir().unwrap();
        let child =
            Supervised::spawn("sleeper", sh("sleep 60"), &dir.path().join("c.log")).unwrap();
        let pid = child.pid();
        drop(child);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.log");
        std::fs::write(&path, "a\nb\nc\nd\n").unwrap();
        assert_eq!(log_tail(&path, 2), "c\nd");
        assert_eq!(log_tail(&path, 10), "a\nb\nc\nd");
        assert!(log_tail(&dir.path().join("missing"), 2).contains("cannot read"));
    }
}
