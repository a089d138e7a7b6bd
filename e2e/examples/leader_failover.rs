//! Leader failover benchmark: two controllers with a 4 s lease; the leader
//! stops halfway through 100 new Services (frozen by SIGSTOP and woken after
//! the takeover, killed, or terminated), and the standby takes over.
//!
//! Each trial runs on a fresh control plane with its audit log on, and
//! reports how long after the old leader's last renewal the new one acquired
//! the Lease (at least the lease duration, unless the Lease was released),
//! how long after the stop the test saw it, and how many writes of the old
//! leader landed after that (the goal: none). The baseline, in the same run,
//! is the graceful stop, where the leader hands the Lease over.
//!
//! `cargo build -p ferrolb && cargo run -p ferrolb-e2e --example leader_failover [-- --trials N]`

#[path = "../tests/common/mod.rs"]
mod common;

use anyhow::Result;
use common::bench::{count_flag, ms, summary};
use common::failover::{LEASE, Stop, trial};

#[tokio::main]
async fn main() -> Result<()> {
    ferrolb_e2e::install_crypto_provider();
    let trials = count_flag("trials", 5)?.max(1);
    println!("## Leader failover: lease {LEASE}, retry 500 ms, {trials} trials each\n");
    println!(
        "| the leader was | acquired after its last renewal: median | worst | seen after the stop: median | worst | its writes that landed after | requests its fence refused |"
    );
    println!("|---|---|---|---|---|---|---|");
    for stop in [Stop::Terminate, Stop::Kill, Stop::Freeze] {
        let (mut gaps, mut seen, mut late, mut refused) = (Vec::new(), Vec::new(), 0, 0);
        for _ in 0..trials {
            let t = trial(stop).await?;
            for l in &t.late {
                eprintln!("late write: {l}");
            }
            gaps.push(t.gap);
            seen.push(t.takeover);
            late += t.late.len();
            refused += t.refused;
        }
        let (g50, _, gmax) = summary(gaps);
        let (s50, _, smax) = summary(seen);
        println!(
            "| {} | {} | {} | {} | {} | {late} | {refused} |",
            stop.label(),
            ms(g50),
            ms(gmax),
            ms(s50),
            ms(smax)
        );
    }
    Ok(())
}
