//! Reads that many reconciles make at about the same time, coalesced into
//! fewer calls.
//!
//! A node joining or leaving reconciles every Service it targets, up to
//! `--concurrency` at once, and each one starts by looking up its load
//! balancer and reading tags. DescribeLoadBalancers and DescribeTags both take
//! up to 20 names or ARNs, so the lookups that arrive within a few
//! milliseconds of each other go out together.
//!
//! The first caller of a quiet batcher starts a task that waits for the
//! window, then takes everything queued and makes the calls; everyone,
//! including that first caller, waits for their share of the answers. The
//! calls run in that task, so a reconcile that is cancelled while it waits
//! leaves the others unharmed.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::cloud::{CallError, Outcome};

type Answer<V> = Result<BTreeMap<String, V>, CallError>;
type FetchFuture<V> = Pin<Box<dyn Future<Output = Answer<V>> + Send>>;
type Fetch<V> = Arc<dyn Fn(Vec<String>) -> FetchFuture<V> + Send + Sync>;

struct Waiter<V> {
    keys: Vec<String>,
    tx: oneshot::Sender<Answer<V>>,
}

pub struct Batcher<V> {
    window: Duration,
    per_call: usize,
    fetch: Fetch<V>,
    queue: Arc<Mutex<Vec<Waiter<V>>>>,
}

impl<V: Clone + Send + 'static> Batcher<V> {
    /// `fetch` reads up to `per_call` keys in one call and returns what it
    /// found; a key it leaves out does not exist.
    pub fn new<F, Fut>(window: Duration, per_call: usize, fetch: F) -> Self
    where
        F: Fn(Vec<String>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Answer<V>> + Send + 'static,
    {
        Self {
            window,
            per_call: per_call.max(1),
            fetch: Arc::new(move |keys| Box::pin(fetch(keys))),
            queue: Arc::default(),
        }
    }

    /// What exists of `keys`, read together with whatever else is asked for
    /// within the window.
    pub async fn get(&self, keys: Vec<String>) -> Answer<V> {
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut queue = lock(&self.queue);
            queue.push(Waiter { keys, tx });
            queue.len() == 1
        };
        if first {
            let queue = self.queue.clone();
            let fetch = self.fetch.clone();
            let (window, per_call) = (self.window, self.per_call);
            tokio::spawn(async move {
                tokio::time::sleep(window).await;
                let waiters = std::mem::take(&mut *lock(&queue));
                answer(waiters, per_call, &fetch).await;
            });
        }
        rx.await.unwrap_or_else(|_| {
            Err(CallError {
                service: "elbv2",
                operation: "batched read",
                code: None,
                message: "the batched read was abandoned".into(),
                outcome: Outcome::Error,
            })
        })
    }
}

async fn answer<V: Clone>(waiters: Vec<Waiter<V>>, per_call: usize, fetch: &Fetch<V>) {
    let keys: BTreeSet<&String> = waiters.iter().flat_map(|w| &w.keys).collect();
    let keys: Vec<String> = keys.into_iter().cloned().collect();
    let mut found = BTreeMap::new();
    let mut failed: Vec<(BTreeSet<String>, CallError)> = Vec::new();
    for chunk in keys.chunks(per_call) {
        match fetch(chunk.to_vec()).await {
            Ok(values) => found.extend(values),
            Err(e) => failed.push((chunk.iter().cloned().collect(), e)),
        }
    }
    for w in waiters {
        let error = failed
            .iter()
            .find(|(chunk, _)| w.keys.iter().any(|k| chunk.contains(k)));
        let answer = match error {
            Some((_, e)) => Err(e.clone()),
            None => Ok(w
                .keys
                .iter()
                .filter_map(|k| found.get(k).map(|v| (k.clone(), v.clone())))
                .collect()),
        };
        // A caller that went away no longer wants it.
        let _ = w.tx.send(answer);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn batcher(calls: Arc<AtomicUsize>, fail_on: &'static str) -> Arc<Batcher<usize>> {
        Arc::new(Batcher::new(
            Duration::from_millis(20),
            3,
            move |keys: Vec<String>| {
                let calls = calls.clone();
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    if keys.iter().any(|k| k == fail_on) {
                        return Err(CallError {
                            service: "elbv2",
                            operation: "Test",
                            code: Some("Throttling".into()),
                            message: "slow down".into(),
                            outcome: Outcome::Throttled,
                        });
                    }
                    // "missing" does not exist; the others map to their length.
                    Ok(keys
                        .into_iter()
                        .filter(|k| k != "missing")
                        .map(|k| (k.clone(), k.len()))
                        .collect())
                }
            },
        ))
    }

    #[tokio::test]
    async fn concurrent_reads_share_calls_and_each_gets_its_own_answer() {
        let calls = Arc::new(AtomicUsize::new(0));
        let b = batcher(calls.clone(), "never");
        let asks = [
            vec!["a"],
            vec!["bb", "missing"],
            vec!["a", "ccc"],
            vec!["dddd"],
            vec!["eeeee"],
        ];
        let answers = futures::future::join_all(asks.iter().map(|keys| {
            let b = b.clone();
            let keys = keys.iter().map(|k| k.to_string()).collect();
            async move { b.get(keys).await.unwrap() }
        }))
        .await;
        // Six distinct keys, three per call.
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let want = |pairs: &[(&str, usize)]| -> BTreeMap<String, usize> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        assert_eq!(answers[0], want(&[("a", 1)]));
        assert_eq!(answers[1], want(&[("bb", 2)]));
        assert_eq!(answers[2], want(&[("a", 1), ("ccc", 3)]));
        assert_eq!(answers[4], want(&[("eeeee", 5)]));

        // Later reads are a batch of their own.
        b.get(vec!["a".into()]).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_failed_call_fails_only_the_reads_it_carried() {
        let calls = Arc::new(AtomicUsize::new(0));
        let b = batcher(calls, "bad");
        let (x, y, z) = tokio::join!(
            b.get(vec!["a".into(), "bad".into()]),
            b.get(vec!["c".into()]),
            b.get(vec!["d".into(), "e".into()]),
        );
        // Keys sorted: a, bad, c in the first call; d, e in the second.
        assert!(x.is_err());
        assert!(y.is_err());
        assert_eq!(z.unwrap().len(), 2);
    }
}
