//! Layer-2 failover benchmark: how long a client's ARP for a VIP goes
//! unanswered when the announcing node dies, loses its link or stops.
//!
//! Three node namespaces run real speakers with default settings; a client
//! namespace asks with `arping` every few milliseconds. Each trial measures
//! from the moment the announcer is hit until a different node answers. The
//! baseline, in the same run, is how long one answered ARP takes with no
//! failover: the floor of what the probe can see.
//!
//! Run as root: `cargo run -p ferrolb-e2e --example l2_failover [-- --trials N]`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::bench::{count_flag, ms, summary};
use common::l2::{L2Cluster, check_tools};

#[derive(Clone, Copy, Debug)]
enum Hit {
    Sigkill,
    LinkDown,
    Sigterm,
}

impl Hit {
    fn label(self) -> &'static str {
        match self {
            Hit::Sigkill => "speaker killed (SIGKILL)",
            Hit::LinkDown => "announcer's link down",
            Hit::Sigterm => "speaker stopped (SIGTERM)",
        }
    }
}

/// Probes until a node other than `old` answers; the time since `since`.
fn until_other_answers(c: &L2Cluster, vip: &str, old: &str, since: Instant) -> Result<Duration> {
    let deadline = since + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(node) = c.arp_quick(vip)?
            && node != old
        {
            return Ok(since.elapsed());
        }
    }
    bail!("no other node answered for {vip} within 20 s\n{}", c.logs())
}

async fn trial(c: &mut L2Cluster, vip: &str, hit: Hit) -> Result<Duration> {
    let old = c.wait_arp(vip, |_| true).await?;
    let since = Instant::now();
    match hit {
        Hit::Sigkill => c.kill_speaker(&old).await?,
        Hit::Sigterm => {
            // Signal, and let the process exit in the background: the
            // handover is what is measured, not the exit.
            c.signal_speaker(&old, rustix::process::Signal::TERM)?
        }
        Hit::LinkDown => c.lan.set_link(&old, false)?,
    }
    let took = until_other_answers(c, vip, &old, since)?;
    // Put the node back and let the cluster settle before the next trial.
    match hit {
        Hit::Sigkill | Hit::Sigterm => {
            c.reap_speaker(&old).await?;
            c.start_speaker(&old)?;
        }
        Hit::LinkDown => c.lan.set_link(&old, true)?,
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    Ok(took)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    ferrolb_e2e::install_crypto_provider();
    let trials = count_flag("trials", 20)?;
    check_tools()?;
    let (mut c, vip) = L2Cluster::start_with_web(3).await?;
    c.wait_arp(&vip, |_| true).await?;

    let mut baseline = Vec::new();
    for _ in 0..trials {
        let since = Instant::now();
        c.arp_quick(&vip)?.context("no answer in steady state")?;
        baseline.push(since.elapsed());
    }
    let mut rows = vec![("baseline: one answered ARP, no failover", baseline)];
    for (hit, n) in [
        (Hit::Sigkill, trials),
        (Hit::LinkDown, trials),
        (Hit::Sigterm, trials),
    ] {
        let mut times = Vec::new();
        for i in 0..n {
            let t = trial(&mut c, &vip, hit).await?;
            eprintln!("{} trial {i}: {}", hit.label(), ms(t));
            times.push(t);
        }
        rows.push((hit.label(), times));
    }
    println!("| what | trials | median | p90 | worst |");
    println!("|---|---|---|---|---|");
    for (label, times) in rows {
        let n = times.len();
        let (median, p90, worst) = summary(times);
        println!(
            "| {label} | {n} | {} | {} | {} |",
            ms(median),
            ms(p90),
            ms(worst)
        );
    }
    Ok(())
}
