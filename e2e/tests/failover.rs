//! Leader failover against a real apiserver with its audit log on: the
//! leader stalls (SIGSTOP, as a frozen VM or node would), the standby takes
//! the Lease over, and when the old leader wakes up nothing it sends lands.
//! The scenario is in `common/failover.rs`; `cargo run -p ferrolb-e2e
//! --example leader_failover` runs it many times and prints a table.

mod common;

use std::time::Duration;

use anyhow::{Result, ensure};
use common::failover::{LEASE, LEASE_DURATION, Stop, restart_under_the_same_identity, trial};

/// The standby's retry period (`elected_controller`'s 500 ms): it may have
/// read the record just before the last renewal; the rest for a busy machine.
const TAKEOVER_SLACK: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_leader_lands_nothing_after_the_standby_takes_over() -> Result<()> {
    let t = trial(Stop::Freeze).await?;
    eprintln!(
        "failover: lease {LEASE}, acquired {:?} after one's last renewal, {:?} after the freeze; \
         writes that landed: one {}, two {}; requests one's fence refused after waking: {}",
        t.gap, t.takeover, t.by_one, t.by_two, t.refused
    );
    ensure!(
        t.late.is_empty(),
        "writes of the old leader landed after two acquired the lease:\n{}",
        t.late.join("\n")
    );
    // Safety: two waited out the whole lease. Liveness: not much longer.
    ensure!(
        t.gap >= LEASE_DURATION,
        "two acquired the lease {:?} after one's last renewal; the lease is {LEASE}",
        t.gap
    );
    ensure!(
        t.gap <= LEASE_DURATION + TAKEOVER_SLACK,
        "two acquired the lease {:?} after one's last renewal; the lease is {LEASE}",
        t.gap
    );
    Ok(())
}

/// A process restarted under its predecessor's identity must not take the
/// predecessor's Lease as its own: what the dead one sent may still land.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_under_the_same_identity_waits_out_the_lease() -> Result<()> {
    let gap = restart_under_the_same_identity().await?;
    eprintln!(
        "restart under the same identity: took the lease over {gap:?} after the last renewal (lease {LEASE})"
    );
    ensure!(
        gap >= LEASE_DURATION,
        "the restarted process took the lease {gap:?} after its predecessor's last renewal; the lease is {LEASE}"
    );
    Ok(())
}
