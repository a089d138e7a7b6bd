//! Kubernetes Events, sent when the apiserver has time for them.
//!
//! An Event tells a user what happened; a Service's address is what they
//! wait for. When a thousand Services arrive at once, sending each one's
//! Event as soon as it is made puts a thousand more writes in the queue the
//! apiserver serves the status writes from. So Events wait, in the order
//! they were made, until no reconcile has started or ended for [`QUIET`],
//! and never longer than [`MAX_DELAY`]; at most [`IN_FLIGHT`] are sent at
//! once. An Event still waiting when the process dies is lost, as one in
//! flight would be.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, Recorder};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tracing::warn;

use crate::lock;

/// How long no reconcile may have started or ended before Events go out.
pub const QUIET: Duration = Duration::from_millis(200);
/// The longest an Event waits for a quiet moment.
pub const MAX_DELAY: Duration = Duration::from_secs(10);
/// Events sent to the apiserver at once.
pub const IN_FLIGHT: usize = 2;

struct Queued {
    made: Instant,
    recorder: Recorder,
    event: Event,
    reference: ObjectReference,
}

/// The queue's handle; see the [module docs](self).
pub struct Events {
    tx: mpsc::UnboundedSender<Queued>,
    busy: Arc<Mutex<Instant>>,
}

impl Events {
    /// Starts the sender on the current tokio runtime. It stops when the
    /// handle is dropped, after sending what is still queued.
    pub fn start() -> Events {
        let (tx, rx) = mpsc::unbounded_channel();
        let busy = Arc::new(Mutex::new(Instant::now()));
        tokio::spawn(run(rx, busy.clone()));
        Events { tx, busy }
    }

    /// Says that a reconcile starts, and when the guard is dropped that it
    /// ended: either way Events wait a little longer.
    pub fn reconciling(&self) -> Reconciling<'_> {
        *lock(&self.busy) = Instant::now();
        Reconciling(&self.busy)
    }

    /// Queues an Event about `reference`, sent through `recorder`.
    pub fn send(&self, recorder: Recorder, event: Event, reference: ObjectReference) {
        let queued = Queued {
            made: Instant::now(),
            recorder,
            event,
            reference,
        };
        // The sender only stops once this handle is gone.
        let _ = self.tx.send(queued);
    }
}

/// A reconcile under way; see [`Events::reconciling`].
pub struct Reconciling<'a>(&'a Mutex<Instant>);

impl Drop for Reconciling<'_> {
    fn drop(&mut self) {
        *lock(self.0) = Instant::now();
    }
}

/// When the oldest queued Event, made at `made`, may go, the last reconcile
/// having started or ended at `busy`.
pub fn send_at(busy: Instant, made: Instant) -> Instant {
    (busy + QUIET).min(made + MAX_DELAY)
}

async fn run(mut rx: mpsc::UnboundedReceiver<Queued>, busy: Arc<Mutex<Instant>>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut queue: VecDeque<Queued> = VecDeque::new();
    let mut open = true;
    loop {
        let due = queue.front().map(|q| {
            if open {
                send_at(*lock(&busy), q.made)
            } else {
                Instant::now()
            }
        });
        match due {
            None if !open => return,
            None => match rx.recv().await {
                Some(q) => queue.push_back(q),
                None => open = false,
            },
            Some(at) if at > Instant::now() => {
                tokio::select! {
                    got = rx.recv(), if open => match got {
                        Some(q) => queue.push_back(q),
                        None => open = false,
                    },
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            Some(_) => {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let Some(q) = queue.pop_front() else {
                    continue;
                };
                tokio::spawn(async move {
                    let _slot = slot;
                    if let Err(e) = q.recorder.publish(&q.event, &q.reference).await {
                        warn!(error = %e, reason = %q.event.reason, "publishing an event failed");
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_waits_for_a_quiet_moment() {
        let t0 = Instant::now();
        // Made during a burst: it goes QUIET after the last reconcile.
        let busy = t0 + Duration::from_secs(3);
        assert_eq!(send_at(busy, t0), busy + QUIET);
        // Made after the burst: the same.
        assert_eq!(send_at(t0, t0 + Duration::from_millis(50)), t0 + QUIET);
    }

    #[test]
    fn an_event_never_waits_longer_than_the_limit() {
        let t0 = Instant::now();
        // Reconciles never stop: the Event goes after MAX_DELAY anyway.
        let busy = t0 + Duration::from_secs(60);
        assert_eq!(send_at(busy, t0), t0 + MAX_DELAY);
        let made = t0 + Duration::from_secs(5);
        assert_eq!(send_at(busy, made), made + MAX_DELAY);
    }
}
