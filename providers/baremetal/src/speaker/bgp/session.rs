//! One BGP session to one peer: connect, exchange OPENs, keep the session
//! alive, advertise the routes it is given and withdraw the ones taken away,
//! reconnect with backoff when it fails, and withdraw everything before a
//! clean stop.
//!
//! The speaker only originates routes: what the peer advertises is read and
//! dropped.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::message::{
    self, AFI_IPV6, Attribute, Message, Notification, Open, SAFI_UNICAST, Update,
};
use crate::speaker::sys;

/// How to reach one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// The `BGPPeer`'s name, for logs and status.
    pub name: String,
    pub my_asn: u32,
    pub peer_asn: u32,
    pub peer: SocketAddr,
    pub source: Option<IpAddr>,
    /// The hold time offered; the session uses the smaller of both sides'.
    pub hold_time: Duration,
    /// Default: a third of the negotiated hold time.
    pub keepalive: Option<Duration>,
    /// TCP-MD5 password.
    pub password: Option<String>,
    pub router_id: Ipv4Addr,
    /// Allow more than one hop to an eBGP peer (TTL 255 instead of 1).
    pub ebgp_multihop: bool,
}

/// One route the speaker originates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub prefix: IpNet,
    pub next_hop: IpAddr,
    pub communities: Vec<u32>,
    pub large_communities: Vec<[u32; 3]>,
    pub local_pref: Option<u32>,
}

pub type Routes = BTreeMap<IpNet, Route>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Idle,
    Connect,
    OpenSent,
    OpenConfirm,
    Established,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        }
    }
}

/// What the session reports about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub state: State,
    /// Why the last session ended, or could not be made.
    pub last_error: Option<String>,
    /// Prefixes the peer has from us now.
    pub advertised: usize,
    /// UPDATE messages sent since the process started.
    pub updates_sent: u64,
}

/// A running session. Dropping it ends the session without a goodbye; call
/// [`Session::stop`] to withdraw first.
pub struct Session {
    routes: watch::Sender<Routes>,
    status: watch::Receiver<Status>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Session {
    pub fn start(config: PeerConfig, routes: Routes) -> Session {
        let (routes_tx, routes_rx) = watch::channel(routes);
        let (status_tx, status_rx) = watch::channel(Status {
            state: State::Idle,
            last_error: None,
            advertised: 0,
            updates_sent: 0,
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(config, routes_rx, status_tx, stop_rx));
        Session {
            routes: routes_tx,
            status: status_rx,
            stop: stop_tx,
            task,
        }
    }

    /// Advertises exactly these routes from now on.
    pub fn set_routes(&self, routes: Routes) {
        self.routes.send_if_modified(|old| {
            let differ = *old != routes;
            if differ {
                *old = routes;
            }
            differ
        });
    }

    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Withdraws every route, says goodbye (Cease, administrative shutdown)
    /// and closes; gives up after two seconds.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), &mut self.task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the peer sent a malformed message: {0}")]
    Decode(#[from] message::DecodeError),
    #[error("the peer closed the session with NOTIFICATION: {0}")]
    PeerNotification(Notification),
    #[error("{0}")]
    Refused(String),
    #[error("hold timer expired")]
    HoldTimerExpired,
    #[error("the peer closed the connection")]
    Closed,
}

const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

async fn run(
    config: PeerConfig,
    mut routes: watch::Receiver<Routes>,
    status: watch::Sender<Status>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        if *stop.borrow() {
            return;
        }
        status.send_modify(|s| s.state = State::Connect);
        let started = Instant::now();
        let result = session(&config, &mut routes, &status, &mut stop).await;
        // One change, so a watcher never sees the state without its reason.
        status.send_modify(|s| {
            s.state = State::Idle;
            s.advertised = 0;
            if let Err(e) = &result {
                s.last_error = Some(e.to_string());
            }
        });
        match result {
            Ok(()) => return,
            Err(e) => {
                warn!(peer = %config.name, address = %config.peer, error = %e, "BGP session down; reconnecting")
            }
        }
        // A session that lived a while starts the backoff over.
        if started.elapsed() > MAX_BACKOFF {
            backoff = MIN_BACKOFF;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stopped(&mut stop) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn connect(config: &PeerConfig) -> Result<tokio::net::TcpStream, SessionError> {
    let socket = match config.peer {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(password) = &config.password {
        sys::set_tcp_md5(socket.as_fd(), config.peer, password.as_bytes())?;
    }
    if let Some(source) = config.source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(config.peer))
        .await
        .map_err(|_| {
            let why = if config.password.is_some() {
                // The kernel drops segments whose signature does not check,
                // so a wrong password shows only as silence.
                "connect timed out; with a TCP-MD5 password, check that both sides have the same one"
            } else {
                "connect timed out"
            };
            std::io::Error::new(std::io::ErrorKind::TimedOut, why)
        })??;
    stream.set_nodelay(true)?;
    // eBGP peers are one hop away unless multihop is allowed (RFC 4271 §5.1.3
    // leaves it to configuration; a TTL of 1 keeps a session on the link).
    let ebgp = config.my_asn != config.peer_asn;
    if ebgp && !config.ebgp_multihop && config.peer.is_ipv4() {
        stream.set_ttl(1)?;
    }
    Ok(stream)
}

/// Reads messages off the connection and hands them over, until it fails.
async fn read_loop(mut rd: OwnedReadHalf, tx: mpsc::Sender<Result<Message, SessionError>>) {
    let mut buf: Vec<u8> = Vec::with_capacity(message::MAX_MESSAGE * 2);
    loop {
        loop {
            match message::decode(&buf) {
                Ok(Some((msg, used))) => {
                    buf.drain(..used);
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => {
                let _ = tx.send(Err(SessionError::Closed)).await;
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        }
    }
}

async fn send(wr: &mut OwnedWriteHalf, msg: &Message) -> Result<(), SessionError> {
    wr.write_all(&message::encode(msg)).await?;
    Ok(())
}

/// Sends a NOTIFICATION and gives the peer a moment to read it.
async fn notify(wr: &mut OwnedWriteHalf, n: Notification) {
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        let _ = send(wr, &Message::Notification(n)).await;
        let _ = wr.flush().await;
        let _ = wr.shutdown().await;
    })
    .await;
}

/// One session's life: `Ok` when stopped on request, `Err` when it failed.
async fn session(
    config: &PeerConfig,
    routes: &mut watch::Receiver<Routes>,
    status: &watch::Sender<Status>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), SessionError> {
    let stream = tokio::select! {
        r = connect(config) => r?,
        () = stopped(stop) => return Ok(()),
    };
    let (rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel(64);
    let reader = tokio::spawn(read_loop(rd, tx));
    let _reader = AbortOnDrop(reader.abort_handle());

    let hold_secs = config.hold_time.as_secs().min(u64::from(u16::MAX)) as u16;
    send(
        &mut wr,
        &Message::Open(Open {
            asn: config.my_asn,
            hold_time: hold_secs,
            router_id: config.router_id,
            capabilities: Open::capabilities(config.my_asn),
        }),
    )
    .await?;
    status.send_modify(|s| s.state = State::OpenSent);

    // The peer's OPEN, within a generous hold time (RFC 4271 suggests 4 min).
    let their_open = match next(&mut rx, Duration::from_secs(240)).await? {
        Message::Open(o) => o,
        Message::Notification(n) => return Err(SessionError::PeerNotification(n)),
        other => {
            notify(&mut wr, Notification::new(5, 1)).await;
            return Err(SessionError::Refused(format!(
                "expected OPEN, got {other:?}"
            )));
        }
    };
    if their_open.asn != config.peer_asn {
        notify(&mut wr, Notification::new(2, 2)).await;
        return Err(SessionError::Refused(format!(
            "the peer's AS is {}, not the configured {}",
            their_open.asn, config.peer_asn
        )));
    }
    let hold = Duration::from_secs(u64::from(hold_secs.min(their_open.hold_time)));
    // A zero keepalive would send without pause: it means the default too.
    let keepalive = config
        .keepalive
        .filter(|k| !k.is_zero())
        .unwrap_or(hold / 3)
        .min(hold);
    let v6 = their_open.supports(AFI_IPV6, SAFI_UNICAST);
    send(&mut wr, &Message::Keepalive).await?;
    status.send_modify(|s| s.state = State::OpenConfirm);
    match next(&mut rx, hold.max(Duration::from_secs(3))).await? {
        Message::Keepalive => {}
        Message::Notification(n) => return Err(SessionError::PeerNotification(n)),
        other => {
            notify(&mut wr, Notification::new(5, 2)).await;
            return Err(SessionError::Refused(format!(
                "expected KEEPALIVE, got {other:?}"
            )));
        }
    }
    info!(peer = %config.name, address = %config.peer, hold = ?hold, "BGP session established");
    status.send_modify(|s| {
        s.state = State::Established;
        s.last_error = None;
    });

    let ibgp = config.my_asn == config.peer_asn;
    let mut advertised = Routes::new();
    let mut hold_deadline = tokio::time::Instant::now() + hold;
    let mut keepalive_at = tokio::time::Instant::now() + keepalive;
    loop {
        let want = routes.borrow_and_update().clone();
        let want: Routes = want
            .into_iter()
            .filter(|(p, _)| v6 || matches!(p, IpNet::V4(_)))
            .collect();
        if want != advertised {
            let updates = diff(config, ibgp, &advertised, &want);
            let n = updates.len() as u64;
            for u in updates {
                send(&mut wr, &Message::Update(u)).await?;
            }
            keepalive_at = tokio::time::Instant::now() + keepalive;
            advertised = want;
            status.send_modify(|s| {
                s.advertised = advertised.len();
                s.updates_sent += n;
            });
            debug!(peer = %config.name, prefixes = advertised.len(), updates = n, "routes sent");
        }
        tokio::select! {
            () = stopped(stop) => {
                let withdraw = diff(config, ibgp, &advertised, &Routes::new());
                for u in withdraw {
                    let _ = send(&mut wr, &Message::Update(u)).await;
                }
                notify(&mut wr, Notification::new(6, 2)).await;
                info!(peer = %config.name, "BGP session closed after withdrawing every route");
                return Ok(());
            }
            r = routes.changed() => if r.is_err() { return Ok(()) },
            () = tokio::time::sleep_until(keepalive_at), if !hold.is_zero() => {
                send(&mut wr, &Message::Keepalive).await?;
                keepalive_at = tokio::time::Instant::now() + keepalive;
            }
            () = tokio::time::sleep_until(hold_deadline), if !hold.is_zero() => {
                notify(&mut wr, Notification::new(4, 0)).await;
                return Err(SessionError::HoldTimerExpired);
            }
            msg = rx.recv() => match msg {
                Some(Ok(Message::Notification(n))) => return Err(SessionError::PeerNotification(n)),
                Some(Ok(Message::Open(_))) => {
                    notify(&mut wr, Notification::new(5, 3)).await;
                    return Err(SessionError::Refused("OPEN on an established session".into()));
                }
                Some(Ok(_)) => hold_deadline = tokio::time::Instant::now() + hold,
                Some(Err(SessionError::Decode(e))) => {
                    let mut n = Notification::new(e.code, e.subcode);
                    n.data = e.why.as_bytes().to_vec();
                    notify(&mut wr, n).await;
                    return Err(SessionError::Decode(e));
                }
                Some(Err(e)) => return Err(e),
                None => return Err(SessionError::Closed),
            },
        }
    }
}

/// Resolves once a stop is asked for.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn next(
    rx: &mut mpsc::Receiver<Result<Message, SessionError>>,
    within: Duration,
) -> Result<Message, SessionError> {
    match tokio::time::timeout(within, rx.recv()).await {
        Ok(Some(r)) => r,
        Ok(None) => Err(SessionError::Closed),
        Err(_) => Err(SessionError::HoldTimerExpired),
    }
}

fn v4s(prefixes: &[&IpNet]) -> Vec<ipnet::Ipv4Net> {
    prefixes
        .iter()
        .filter_map(|p| match p {
            IpNet::V4(n) => Some(*n),
            IpNet::V6(_) => None,
        })
        .collect()
}

fn v6s(prefixes: &[&IpNet]) -> Vec<ipnet::Ipv6Net> {
    prefixes
        .iter()
        .filter_map(|p| match p {
            IpNet::V6(n) => Some(*n),
            IpNet::V4(_) => None,
        })
        .collect()
}

/// What routes that can share an UPDATE have in common: next hop,
/// communities, large communities, LOCAL_PREF.
type PathKey = (IpAddr, Vec<u32>, Vec<[u32; 3]>, Option<u32>);

/// At most this many prefixes per UPDATE, well inside 4096 bytes even for
/// IPv6 /128s (17 bytes each).
const PER_UPDATE: usize = 150;

/// The UPDATEs that take the peer from `old` to `new`: withdrawals first,
/// then one UPDATE per set of path attributes.
fn diff(config: &PeerConfig, ibgp: bool, old: &Routes, new: &Routes) -> Vec<Update> {
    let mut out = Vec::new();
    let gone: Vec<&IpNet> = old.keys().filter(|p| !new.contains_key(*p)).collect();
    let (gone4, gone6): (Vec<&IpNet>, Vec<&IpNet>) =
        gone.into_iter().partition(|p| matches!(p, IpNet::V4(_)));
    for chunk in gone4.chunks(PER_UPDATE) {
        out.push(Update {
            withdrawn: v4s(chunk),
            ..Default::default()
        });
    }
    for chunk in gone6.chunks(PER_UPDATE) {
        out.push(Update {
            attributes: vec![Attribute::MpUnreach {
                withdrawn: v6s(chunk),
            }],
            ..Default::default()
        });
    }
    // New or changed routes, grouped by what they carry.
    let mut groups: BTreeMap<PathKey, Vec<IpNet>> = BTreeMap::new();
    for (p, r) in new {
        if old.get(p) == Some(r) {
            continue;
        }
        groups
            .entry((
                r.next_hop,
                r.communities.clone(),
                r.large_communities.clone(),
                r.local_pref,
            ))
            .or_default()
            .push(*p);
    }
    for ((next_hop, communities, large, local_pref), prefixes) in groups {
        let mut base = vec![
            Attribute::Origin(0),
            Attribute::AsPath(if ibgp {
                Vec::new()
            } else {
                vec![vec![config.my_asn]]
            }),
        ];
        if ibgp && let Some(lp) = local_pref {
            base.push(Attribute::LocalPref(lp));
        }
        if !communities.is_empty() {
            base.push(Attribute::Communities(communities));
        }
        if !large.is_empty() {
            base.push(Attribute::LargeCommunities(large));
        }
        let prefixes: Vec<&IpNet> = prefixes.iter().collect();
        for chunk in prefixes.chunks(PER_UPDATE) {
            let mut attributes = base.clone();
            match next_hop {
                IpAddr::V4(nh) => {
                    attributes.push(Attribute::NextHop(nh));
                    out.push(Update {
                        attributes,
                        nlri: v4s(chunk),
                        ..Default::default()
                    });
                }
                IpAddr::V6(nh) => {
                    attributes.push(Attribute::MpReach {
                        next_hops: vec![nh],
                        nlri: v6s(chunk),
                    });
                    out.push(Update {
                        attributes,
                        ..Default::default()
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::speaker::bgp::message::Capability;

    fn config(my: u32, peer: u32) -> PeerConfig {
        PeerConfig {
            name: "router".into(),
            my_asn: my,
            peer_asn: peer,
            peer: "127.0.0.1:179".parse().unwrap(),
            source: None,
            hold_time: Duration::from_secs(90),
            keepalive: None,
            password: None,
            router_id: Ipv4Addr::new(10, 0, 0, 11),
            ebgp_multihop: false,
        }
    }

    fn route(p: &str, nh: &str) -> (IpNet, Route) {
        let prefix: IpNet = p.parse().unwrap();
        (
            prefix,
            Route {
                prefix,
                next_hop: nh.parse().unwrap(),
                communities: vec![(65000 << 16) | 1],
                large_communities: vec![],
                local_pref: Some(200),
            },
        )
    }

    #[test]
    fn diff_announces_withdraws_and_groups() {
        let c = config(64512, 64512);
        let old: Routes = [
            route("192.0.2.1/32", "10.0.0.11"),
            route("fd00::1/128", "fd00::11"),
        ]
        .into_iter()
        .collect();
        let new: Routes = [
            route("192.0.2.2/32", "10.0.0.11"),
            route("192.0.2.3/32", "10.0.0.11"),
            route("fd00::1/128", "fd00::11"),
        ]
        .into_iter()
        .collect();
        let u = diff(&c, true, &old, &new);
        assert_eq!(u.len(), 2, "{u:#?}");
        assert_eq!(u[0].withdrawn, vec!["192.0.2.1/32".parse().unwrap()]);
        assert_eq!(u[1].nlri.len(), 2, "one UPDATE for both new prefixes");
        assert!(u[1].attributes.contains(&Attribute::LocalPref(200)));
        assert!(u[1].attributes.contains(&Attribute::AsPath(vec![])));

        // To an eBGP peer: our AS in the path, no LOCAL_PREF.
        let e = diff(&config(64512, 64513), false, &Routes::new(), &new);
        assert!(e.iter().all(|u| {
            !u.attributes
                .iter()
                .any(|a| matches!(a, Attribute::LocalPref(_)))
        }));
        assert!(
            e[0].attributes
                .contains(&Attribute::AsPath(vec![vec![64512]]))
        );
        // Everything withdrawn: one IPv4 withdrawal and one MP_UNREACH.
        let w = diff(&c, true, &new, &Routes::new());
        assert_eq!(w.len(), 2);
        assert!(matches!(w[1].attributes[0], Attribute::MpUnreach { .. }));
    }

    #[test]
    fn many_prefixes_fit_in_bounded_updates() {
        let new: Routes = (0..1000u32)
            .map(|i| route(&format!("fd00::{:x}/128", i + 1), "fd00::11"))
            .collect();
        for u in diff(&config(1, 1), true, &Routes::new(), &new) {
            assert!(message::encode(&Message::Update(u)).len() <= message::MAX_MESSAGE);
        }
    }

    /// A fake peer on loopback: OPEN and KEEPALIVE as a router would, then
    /// garbage. The session answers with a NOTIFICATION naming the header
    /// error, closes, says why, and reconnects; nothing panics.
    #[tokio::test]
    async fn a_malformed_message_closes_the_session_cleanly() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut cfg = config(64512, 64512);
        cfg.peer = listener.local_addr().unwrap();
        let session = Session::start(cfg, Routes::new());
        let (mut conn, _) = listener.accept().await.unwrap();
        let open = message::encode(&Message::Open(Open {
            asn: 64512,
            hold_time: 90,
            router_id: Ipv4Addr::new(10, 0, 0, 1),
            capabilities: vec![Capability::FourOctetAsn(64512)],
        }));
        conn.write_all(&open).await.unwrap();
        conn.write_all(&message::encode(&Message::Keepalive))
            .await
            .unwrap();
        let mut status = session.status();
        tokio::time::timeout(
            Duration::from_secs(5),
            status.wait_for(|s| s.state == State::Established),
        )
        .await
        .unwrap()
        .unwrap();
        // A header whose marker is wrong.
        conn.write_all(&[0u8; 19]).await.unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut got)).await;
        let mut at = 0;
        let mut notification = None;
        while let Ok(Some((m, used))) = message::decode(&got[at..]) {
            at += used;
            if let Message::Notification(n) = m {
                notification = Some(n);
            }
        }
        let n = notification.expect("a NOTIFICATION before the close");
        assert_eq!((n.code, n.subcode), (1, 1), "{n}");
        tokio::time::timeout(
            Duration::from_secs(5),
            status.wait_for(|s| s.last_error.is_some()),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(
            status
                .borrow()
                .last_error
                .as_deref()
                .unwrap()
                .contains("malformed"),
            "{:?}",
            status.borrow()
        );
        // And it tries again.
        tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .expect("a reconnect")
            .unwrap();
    }
}
