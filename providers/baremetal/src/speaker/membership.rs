//! Which speakers are alive: every speaker sends a small UDP heartbeat to
//! every other node's speaker, and counts a peer dead when it has not heard
//! from it for the peer timeout. A speaker that stops cleanly says so, and
//! its peers take over at once instead of waiting for the timeout.
//!
//! A speaker that has just started says it is joining until it has listened
//! for a peer timeout: until then its peers keep its addresses, so a node
//! coming back never leaves an address unanswered while it learns who is
//! alive.
//!
//! Each speaker sends to every node (O(n²) packets in all, each ~40 bytes):
//! at 100 nodes and 100 ms, about 1,000 packets a second in and out per node.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{debug, info, warn};

const MAGIC: &[u8; 4] = b"FLB1";

/// Where a speaker is in its life, as its heartbeats say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Started, still learning who is alive: announces nothing yet.
    Joining = 3,
    /// Takes part in the election.
    Ready = 1,
    /// Stopping: has stopped answering.
    Leaving = 2,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub node: String,
    /// When the sending process started: a restarted speaker is a new member,
    /// and a stale "leaving" from its previous run is ignored.
    pub incarnation: u64,
    pub phase: Phase,
}

impl Heartbeat {
    pub fn encode(&self) -> Vec<u8> {
        let name = self.node.as_bytes();
        let name = &name[..name.len().min(255)];
        let mut b = Vec::with_capacity(14 + name.len());
        b.extend_from_slice(MAGIC);
        b.push(self.phase as u8);
        b.extend_from_slice(&self.incarnation.to_be_bytes());
        b.push(name.len() as u8);
        b.extend_from_slice(name);
        b
    }

    pub fn decode(b: &[u8]) -> Option<Heartbeat> {
        if b.len() < 14 || &b[..4] != MAGIC {
            return None;
        }
        let phase = match b[4] {
            1 => Phase::Ready,
            2 => Phase::Leaving,
            3 => Phase::Joining,
            _ => return None,
        };
        let incarnation = u64::from_be_bytes(b[5..13].try_into().ok()?);
        let len = usize::from(b[13]);
        let name = std::str::from_utf8(b.get(14..14 + len)?).ok()?;
        if name.is_empty() {
            return None;
        }
        Some(Heartbeat {
            node: name.to_string(),
            incarnation,
            phase,
        })
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub interval: Duration,
    pub timeout: Duration,
}

struct Peer {
    last: Instant,
    incarnation: u64,
    phase: Phase,
}

impl Peer {
    fn counts(&self, now: Instant, timeout: Duration) -> bool {
        self.phase == Phase::Ready && now - self.last < timeout
    }
}

struct State {
    peers: HashMap<String, Peer>,
    targets: Vec<SocketAddr>,
    phase: Phase,
}

/// The membership of one speaker. Cheap to clone.
#[derive(Clone)]
pub struct Membership {
    me: String,
    incarnation: u64,
    timing: Timing,
    socket: Arc<UdpSocket>,
    state: Arc<Mutex<State>>,
    alive: watch::Sender<BTreeSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Membership {
    /// Binds the heartbeat port (IPv6 and IPv4 where the host has IPv6) and
    /// starts sending and listening, as a joining member.
    pub async fn start(me: String, port: u16, timing: Timing) -> std::io::Result<Membership> {
        let socket =
            match UdpSocket::bind(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port)).await {
                Ok(s) => s,
                Err(_) => UdpSocket::bind(SocketAddr::new([0, 0, 0, 0].into(), port)).await?,
            };
        let incarnation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        let m = Membership {
            alive: watch::Sender::new(BTreeSet::new()),
            me,
            incarnation,
            timing,
            socket: Arc::new(socket),
            state: Arc::new(Mutex::new(State {
                peers: HashMap::new(),
                targets: Vec::new(),
                phase: Phase::Joining,
            })),
        };
        tokio::spawn(m.clone().send_loop());
        tokio::spawn(m.clone().receive_loop());
        Ok(m)
    }

    /// The speakers taking part in the election: those heard from within the
    /// timeout that are ready, and this one once it is ready, until it leaves.
    pub fn subscribe(&self) -> watch::Receiver<BTreeSet<String>> {
        self.alive.subscribe()
    }

    /// Where the other speakers listen (the other nodes' addresses).
    pub fn set_targets(&self, addrs: Vec<IpAddr>) {
        let local = self.socket.local_addr().ok();
        let port = local.map(|a| a.port()).unwrap_or(0);
        let v6 = local.is_some_and(|a| a.is_ipv6());
        let targets = addrs
            .into_iter()
            .filter_map(|ip| match (ip, v6) {
                (IpAddr::V4(v4), true) => Some(SocketAddr::new(v4.to_ipv6_mapped().into(), port)),
                (IpAddr::V6(_), false) => None,
                (ip, _) => Some(SocketAddr::new(ip, port)),
            })
            .collect();
        lock(&self.state).targets = targets;
    }

    /// Joins the election, and tells the peers at once.
    pub async fn set_ready(&self) {
        self.enter(Phase::Ready, 1).await;
    }

    /// Tells every peer this speaker is going, a few times over in case one
    /// is lost, and stops counting itself.
    pub async fn leave(&self) {
        self.enter(Phase::Leaving, 3).await;
    }

    async fn enter(&self, phase: Phase, rounds: usize) {
        let targets = {
            let mut s = lock(&self.state);
            s.phase = phase;
            s.targets.clone()
        };
        self.publish();
        let msg = self.heartbeat(phase);
        for round in 0..rounds {
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for t in &targets {
                let _ = self.socket.send_to(&msg, t).await;
            }
        }
    }

    fn heartbeat(&self, phase: Phase) -> Vec<u8> {
        Heartbeat {
            node: self.me.clone(),
            incarnation: self.incarnation,
            phase,
        }
        .encode()
    }

    async fn send_loop(self) {
        let mut tick = tokio::time::interval(self.timing.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (targets, phase) = {
                let s = lock(&self.state);
                (s.targets.clone(), s.phase)
            };
            if phase == Phase::Leaving {
                return;
            }
            let msg = self.heartbeat(phase);
            for t in &targets {
                if let Err(e) = self.socket.send_to(&msg, t).await {
                    debug!(to = %t, error = %e, "heartbeat not sent");
                }
            }
            // Expire peers on the same tick.
            self.publish();
        }
    }

    async fn receive_loop(self) {
        let mut buf = [0u8; 512];
        loop {
            let (n, from) = match self.socket.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => {
                    warn!(error = %e, "heartbeat socket failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(hb) = Heartbeat::decode(&buf[..n]) else {
                debug!(%from, "ignoring a malformed heartbeat");
                continue;
            };
            if hb.node == self.me {
                continue;
            }
            let changed = {
                let mut s = lock(&self.state);
                let now = Instant::now();
                let timeout = self.timing.timeout;
                let peer = s.peers.entry(hb.node.clone()).or_insert(Peer {
                    last: now,
                    incarnation: hb.incarnation,
                    phase: Phase::Joining,
                });
                if hb.incarnation < peer.incarnation {
                    // A message from a run that has since been replaced.
                    false
                } else {
                    let before = peer.counts(now, timeout);
                    // A leave is final for its run.
                    if hb.incarnation > peer.incarnation || peer.phase != Phase::Leaving {
                        peer.phase = hb.phase;
                    }
                    peer.incarnation = hb.incarnation;
                    peer.last = now;
                    before != peer.counts(now, timeout)
                }
            };
            if changed {
                if hb.phase == Phase::Leaving {
                    info!(node = %hb.node, "speaker left");
                }
                self.publish();
            }
        }
    }

    /// Recomputes the alive set and tells subscribers if it changed.
    fn publish(&self) {
        let now = Instant::now();
        let alive: BTreeSet<String> = {
            let s = lock(&self.state);
            let mut alive: BTreeSet<String> = s
                .peers
                .iter()
                .filter(|(_, p)| p.counts(now, self.timing.timeout))
                .map(|(n, _)| n.clone())
                .collect();
            if s.phase == Phase::Ready {
                alive.insert(self.me.clone());
            }
            alive
        };
        self.alive.send_if_modified(|old| {
            if *old == alive {
                return false;
            }
            for gone in old.difference(&alive) {
                info!(node = %gone, "speaker no longer alive");
            }
            for new in alive.difference(old) {
                info!(node = %new, "speaker alive");
            }
            *old = alive;
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn heartbeats_round_trip() {
        for phase in [Phase::Joining, Phase::Ready, Phase::Leaving] {
            let hb = Heartbeat {
                node: "worker-1.example".into(),
                incarnation: 1_700_000_000_123,
                phase,
            };
            assert_eq!(Heartbeat::decode(&hb.encode()), Some(hb));
        }
        assert_eq!(Heartbeat::decode(b"FLB1"), None);
        assert_eq!(Heartbeat::decode(b"XXXX\x01\0\0\0\0\0\0\0\x01\x01a"), None);
    }

    proptest! {
        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Heartbeat::decode(&b);
        }
    }

    async fn trio(timeout: Duration) -> [Membership; 3] {
        let timing = Timing {
            interval: Duration::from_millis(20),
            timeout,
        };
        let mut ms = Vec::new();
        for name in ["a", "b", "c"] {
            ms.push(Membership::start(name.into(), 0, timing).await.unwrap());
        }
        // Ports differ here, so each is told the others' exact addresses.
        let addrs: Vec<SocketAddr> = ms.iter().map(|m| m.socket.local_addr().unwrap()).collect();
        for (i, m) in ms.iter().enumerate() {
            lock(&m.state).targets = addrs
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, a)| *a)
                .collect();
        }
        for m in &ms {
            m.set_ready().await;
        }
        ms.try_into().unwrap_or_else(|_| unreachable!())
    }

    async fn wait_for(rx: &mut watch::Receiver<BTreeSet<String>>, want: &[&str]) {
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| *s == want))
            .await
            .unwrap_or_else(|_| panic!("alive set never became {want:?}"))
            .unwrap();
    }

    /// A speaker that leaves is dropped by its peers at once: with a timeout
    /// of a minute, only the leave message can do it within the wait.
    #[tokio::test]
    async fn a_leaving_peer_is_dropped_at_once() {
        let [a, b, _c] = trio(Duration::from_secs(60)).await;
        let mut rx = a.subscribe();
        wait_for(&mut rx, &["a", "b", "c"]).await;
        b.leave().await;
        wait_for(&mut rx, &["a", "c"]).await;
        assert!(
            !b.subscribe().borrow().contains("b"),
            "b no longer counts itself"
        );
    }

    /// A speaker that goes silent (killed, or its link down) is dropped
    /// after the timeout, and counted again when it is heard from.
    #[tokio::test]
    async fn a_silent_peer_is_dropped_and_comes_back() {
        let [a, _b, c] = trio(Duration::from_millis(150)).await;
        let mut rx = a.subscribe();
        wait_for(&mut rx, &["a", "b", "c"]).await;
        let targets = std::mem::take(&mut lock(&c.state).targets);
        wait_for(&mut rx, &["a", "b"]).await;
        lock(&c.state).targets = targets;
        wait_for(&mut rx, &["a", "b", "c"]).await;
    }

    /// A joining speaker is heard but not counted until it says it is ready.
    #[tokio::test]
    async fn a_joining_peer_counts_only_once_ready() {
        let timing = Timing {
            interval: Duration::from_millis(20),
            timeout: Duration::from_secs(60),
        };
        let a = Membership::start("a".into(), 0, timing).await.unwrap();
        let b = Membership::start("b".into(), 0, timing).await.unwrap();
        lock(&a.state).targets = vec![b.socket.local_addr().unwrap()];
        lock(&b.state).targets = vec![a.socket.local_addr().unwrap()];
        a.set_ready().await;
        let mut rx = a.subscribe();
        wait_for(&mut rx, &["a"]).await;
        // b's joining heartbeats have arrived by now, and do not count.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(*rx.borrow(), BTreeSet::from(["a".to_string()]));
        assert!(
            !b.subscribe().borrow().contains("b"),
            "b does not count itself while joining"
        );
        b.set_ready().await;
        wait_for(&mut rx, &["a", "b"]).await;
    }
}
