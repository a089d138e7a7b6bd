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
}

/// How long the controller runs before the next kill: a quarter of the kills
/// come within 250 ms of the start (before or during restore), most within
/// 2 s, the rest within 5 s.
fn lifetime(rng: &mut Rng) -> Duration {
    let ms = Duration::from_millis;
    match rng.below(100) {
        0..25 => rng.duration(ms(0), ms(250)),
        25..70 => rng.duration(ms(250), ms(2000)),
        _ => rng.duration(ms(2000), ms(5000)),
    }
}

/// Kills the controller `kills` times, each time at a random moment, and
/// starts a new one right after; returns the last one, running. A
/// controller that exited by itself fails the run.
pub async fn kill_repeatedly(
    kills: usize,
    mut rng: Rng,
    mut spawn: impl FnMut() -> Result<FerrolbProcess>,
) -> Result<(FerrolbProcess, Kills)> {
    let started = Instant::now();
    let mut report = Kills::default();
    let mut ctl = spawn()?;
    for _ in 0..kills {
        tokio::time::sleep(lifetime(&mut rng)).await;
        if let Some(status) = ctl.try_wait()? {
            let log = ctl.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            bail!(
                "the controller exited by itself ({status}) after {} kills; log tail:\n{}",
                report.kills,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
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
