//! The write fence: whether this replica may still act on the cluster and
//! the cloud.
//!
//! With leader election on, the elector opens the fence until the renew
//! deadline of each successful round, measured from when the round started.
//! Every request to the apiserver and to a cloud API checks the fence just
//! before it is sent and is refused, unsent, once the deadline has passed. A
//! standby takes the Lease only after it has seen the record unchanged for a
//! whole lease duration, which is later than that deadline, so a leader that
//! was paused (SIGSTOP, a stalled VM, a long GC-like stall of the runtime)
//! cannot land a write after another replica took over: when it wakes, its
//! clock says the deadline is gone before its renew loop has even run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Cheap to clone; all clones share one state.
#[derive(Clone, Debug)]
pub struct Fence(Arc<State>);

#[derive(Debug)]
struct State {
    /// The instant deadlines are counted from.
    base: Instant,
    /// Nanoseconds after `base` until which requests may go out;
    /// `u64::MAX` means always (no leader election).
    open_until: AtomicU64,
}

/// The error a fenced request fails with.
#[derive(Debug, thiserror::Error)]
#[error("not sent: this replica no longer holds the leader lease (its renew deadline has passed)")]
pub struct Fenced;

impl Fence {
    /// A fence that never closes, for a controller without leader election.
    pub fn always_open() -> Self {
        Self::with(u64::MAX)
    }

    /// A closed fence, for a replica that has yet to win the Lease.
    pub fn closed() -> Self {
        Self::with(0)
    }

    fn with(open_until: u64) -> Self {
        Self(Arc::new(State {
            base: Instant::now(),
            open_until: AtomicU64::new(open_until),
        }))
    }

    /// Lets requests out until `deadline`. Never extends a fence that is
    /// always open, and never moves a deadline backwards.
    pub fn open_until(&self, deadline: Instant) {
        let nanos = self.nanos(deadline).min(u64::MAX - 1);
        self.0.open_until.fetch_max(nanos, Ordering::SeqCst);
    }

    /// Refuses every request from now on, until the next `open_until`.
    pub fn close(&self) {
        // An always-open fence has no lease to lose; leave it open.
        let _ = self
            .0
            .open_until
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                (v != u64::MAX).then_some(0)
            });
    }

    pub fn is_open(&self) -> bool {
        self.nanos(Instant::now()) < self.0.open_until.load(Ordering::SeqCst)
    }

    /// `Ok` when a request may go out now.
    pub fn check(&self) -> Result<(), Fenced> {
        if self.is_open() { Ok(()) } else { Err(Fenced) }
    }

    fn nanos(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.0.base);
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn always_open_stays_open() {
        let f = Fence::always_open();
        assert!(f.is_open());
        f.close();
        assert!(f.is_open(), "without election there is no lease to lose");
    }

    #[test]
    fn opens_until_the_deadline_then_refuses() {
        let f = Fence::closed();
        assert!(f.check().is_err());
        f.open_until(Instant::now() + Duration::from_secs(60));
        assert!(f.check().is_ok());
        f.open_until(Instant::now());
        assert!(
            f.is_open(),
            "an earlier deadline does not shorten the fence"
        );
        f.close();
        assert!(f.check().is_err());
    }

    #[test]
    fn a_passed_deadline_closes_it_without_anyone_acting() {
        let f = Fence::closed();
        f.open_until(Instant::now() + Duration::from_millis(20));
        let clone = f.clone();
        std::thread::sleep(Duration::from_millis(40));
        assert!(!clone.is_open());
    }
}
