//! Kills the controller with SIGKILL at random moments and starts it again.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ferrolb_e2e::FerrolbProcess;

use super::Rng;

/// What the killer did.
#[derive(Clone, Debug, Default)]
pub struct Kills {
    pub kills: usize,
    /// Kills that came before the controller said it was ready (while it
    /// listed, restored or had not even connected).
    pub before_ready: usize,
    pub elapsed: Duration,
    /// Controllers that exited by themselves because they lost the Lease
    /// (a renewal that did not make it in time, as under heavy load); each
    /// was started again, as its Pod would be.
    pub lost_lease: usize,
}

/// How long a new controller may take to log its start marker.
const START: Duration = Duration::from_secs(60);

/// How long the controller runs before the next kill, from when it took the
/// Lease: a quarter of the kills come within 250 ms (during restore and the
/// first reconciles), most within 2 s, the rest within 5 s.
fn lifetime(rng: &mut Rng) -> Duration {
    let ms = Duration::from_millis;
    match rng.below(100) {
        0..25 => rng.duration(ms(0), ms(250)),
        25..70 => rng.duration(ms(250), ms(2000)),
        _ => rng.duration(ms(2000), ms(5000)),
    }
}

/// Kills the controller `kills` times, each time at a random moment after
/// its log shows `leading` (with leader election on, the line that says it
/// took the Lease, so the moments fall in the leader's work and not in its
/// wait for the dead one's Lease), and starts a new one right after; returns
/// the last one, running. A controller that exited by itself fails the run,
/// unless it lost the Lease.
pub async fn kill_repeatedly(
    kills: usize,
    mut rng: Rng,
    leading: &str,
    mut spawn: impl FnMut() -> Result<FerrolbProcess>,
) -> Result<(FerrolbProcess, Kills)> {
    let started = Instant::now();
    let mut report = Kills::default();
    let mut ctl = spawn()?;
    while report.kills < kills {
        let deadline = Instant::now() + START;
        let exited = loop {
            if let Some(status) = ctl.try_wait()? {
                break Some(status);
            }
            if ctl.log().contains(leading) {
                break None;
            }
            if Instant::now() > deadline {
                bail!(
                    "the controller did not log {leading:?} within {START:?}:\n{}",
                    tail(&ctl)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if exited.is_none() {
            tokio::time::sleep(lifetime(&mut rng)).await;
        }
        if let Some(status) = exited.or(ctl.try_wait()?) {
            if !ctl.log().contains("lost the leader lease") {
                bail!(
                    "the controller exited by itself ({status}) after {} kills; log tail:\n{}",
                    report.kills,
                    tail(&ctl)
                );
            }
            report.lost_lease += 1;
            if report.lost_lease > kills {
                bail!(
                    "{} controllers lost the Lease by themselves; log tail of the last:\n{}",
                    report.lost_lease,
                    tail(&ctl)
                );
            }
            ctl = spawn()?;
            continue;
        }
        if !ctl.log().contains("controller ready") {
            report.before_ready += 1;
        }
        ctl.kill().await?;
        report.kills += 1;
        ctl = spawn()?;
    }
    report.elapsed = started.elapsed();
    Ok((ctl, report))
}

/// The last 40 lines of the controller's log.
fn tail(ctl: &FerrolbProcess) -> String {
    let log = ctl.log();
    let lines: Vec<&str> = log.lines().rev().take(40).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}
