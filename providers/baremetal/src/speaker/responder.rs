//! Answers ARP requests and neighbour solicitations for the addresses this
//! node announces, in userspace, on raw sockets: the addresses are never
//! added to an interface, so the kernel neither answers for them nor routes
//! them as local.
//!
//! Sockets are open only on the interfaces some announced address may use.
//! An ARP socket sees only ARP; an NDP socket sees only neighbour
//! solicitations (a socket filter drops every other IPv6 frame in the
//! kernel), and joins the solicited-node group of each announced IPv6 address.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use super::interfaces::{self, Interface};
use super::metrics::{HandoverLabels, ProtocolLabels, SpeakerMetrics};
use super::packet::{self, ETHERTYPE_ARP, ETHERTYPE_IPV6, Mac};
use super::plan::Interfaces;
use super::sys;

/// When gratuitous packets go out after taking an address over: at once, then
/// a few more, for switches and hosts that missed or dropped the first.
const GRATUITOUS_AT: [Duration; 5] = [
    Duration::ZERO,
    Duration::from_millis(250),
    Duration::from_millis(750),
    Duration::from_millis(1500),
    Duration::from_secs(3),
];

/// Only neighbour solicitations: IPv6 next header ICMPv6 (byte 20 of the
/// frame), ICMPv6 type 135 (byte 54). Extension headers never precede a
/// valid solicitation's ICMPv6 header in practice, and one that does is
/// dropped.
const NS_FILTER: [sys::Instruction; 6] = [
    sys::load_byte(20),
    sys::jump_if(58, 0, 3),
    sys::load_byte(54),
    sys::jump_if(135, 0, 1),
    sys::ret(0xffff),
    sys::ret(0),
];

type Table = BTreeMap<IpAddr, Interfaces>;

struct Shared {
    table: RwLock<Table>,
    metrics: Arc<SpeakerMetrics>,
}

fn allowed(ifaces: &Interfaces, iface: &Interface) -> bool {
    match ifaces {
        Interfaces::All => !iface.enslaved,
        Interfaces::Named(_) => ifaces.allows(&iface.name),
    }
}

struct Open {
    iface: Interface,
    arp: Arc<AsyncFd<OwnedFd>>,
    ndp: Arc<AsyncFd<OwnedFd>>,
    tasks: [AbortHandle; 2],
    /// Solicited-node groups joined on the NDP socket.
    joined: BTreeSet<Mac>,
}

impl Drop for Open {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What [`Responder::set`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub acquired: Vec<IpAddr>,
    pub released: Vec<IpAddr>,
}

pub struct Responder {
    shared: Arc<Shared>,
    open: Mutex<HashMap<String, Open>>,
    bursts: Mutex<HashMap<IpAddr, AbortHandle>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Responder {
    pub fn new(metrics: Arc<SpeakerMetrics>) -> Self {
        Self {
            shared: Arc::new(Shared {
                table: RwLock::default(),
                metrics,
            }),
            open: Mutex::default(),
            bursts: Mutex::default(),
        }
    }

    /// The addresses answered for now.
    pub fn announced(&self) -> Table {
        self.shared
            .table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Answers for exactly `want` from now on. Addresses no longer wanted stop
    /// being answered before this returns; new ones are answered, and
    /// announced gratuitously, at once.
    pub fn set(&self, want: Table) -> Changes {
        let mut changes = Changes::default();
        {
            let mut table = self.shared.table.write().unwrap_or_else(|e| e.into_inner());
            for ip in table.keys() {
                if !want.contains_key(ip) {
                    changes.released.push(*ip);
                }
            }
            for (ip, ifaces) in &want {
                match table.get(ip) {
                    None => changes.acquired.push(*ip),
                    // Other interfaces now: announce again on them.
                    Some(old) if old != ifaces => changes.acquired.push(*ip),
                    Some(_) => {}
                }
            }
            *table = want;
            self.shared.metrics.announced.set(table.len() as i64);
        }
        {
            let mut bursts = lock(&self.bursts);
            for ip in changes.released.iter().chain(&changes.acquired) {
                if let Some(b) = bursts.remove(ip) {
                    b.abort();
                }
            }
        }
        // Reading the interfaces costs a few dozen reads of /sys: only when
        // what is answered for changed (and on the caller's periodic rescan).
        if !changes.acquired.is_empty() || !changes.released.is_empty() {
            self.sync_interfaces();
        }
        let m = &self.shared.metrics;
        for ip in &changes.released {
            info!(address = %ip, "stopped answering");
            m.handovers
                .get_or_create(&HandoverLabels {
                    direction: "released",
                })
                .inc();
        }
        for ip in &changes.acquired {
            info!(address = %ip, "answering");
            m.handovers
                .get_or_create(&HandoverLabels {
                    direction: "acquired",
                })
                .inc();
            self.start_burst(*ip);
        }
        changes
    }

    /// Opens sockets on the interfaces the announced addresses may use and
    /// closes the others; picks up interfaces that appeared, went or changed.
    pub fn sync_interfaces(&self) {
        let table = self.announced();
        let present = interfaces::list();
        let needed: Vec<&Interface> = present
            .iter()
            .filter(|i| table.values().any(|ifs| allowed(ifs, i)))
            .collect();
        let mut open = lock(&self.open);
        open.retain(|name, o| {
            let keep = needed.iter().any(|i| &i.name == name && **i == o.iface);
            if !keep {
                debug!(interface = %name, "closing sockets");
            }
            keep
        });
        for iface in needed {
            if open.contains_key(&iface.name) {
                continue;
            }
            match self.open_interface(iface) {
                Ok(o) => {
                    debug!(interface = %iface.name, "listening for ARP and NDP");
                    open.insert(iface.name.clone(), o);
                }
                Err(e) => {
                    warn!(interface = %iface.name, error = %e, "cannot listen on the interface")
                }
            }
        }
        for o in open.values_mut() {
            let want: BTreeSet<Mac> = table
                .iter()
                .filter(|(_, ifs)| allowed(ifs, &o.iface))
                .filter_map(|(ip, _)| match ip {
                    IpAddr::V6(v6) => Some(packet::multicast_mac(&packet::solicited_node(v6))),
                    IpAddr::V4(_) => None,
                })
                .collect();
            for mac in want.difference(&o.joined.clone()) {
                match sys::multicast_membership(o.ndp.get_ref(), o.iface.index, *mac, true) {
                    Ok(()) => {
                        o.joined.insert(*mac);
                    }
                    Err(e) => {
                        warn!(interface = %o.iface.name, error = %e, "cannot join a multicast group")
                    }
                }
            }
            for mac in o.joined.clone().difference(&want) {
                let _ = sys::multicast_membership(o.ndp.get_ref(), o.iface.index, *mac, false);
                o.joined.remove(mac);
            }
        }
    }

    fn open_interface(&self, iface: &Interface) -> std::io::Result<Open> {
        let arp = Arc::new(sys::register(sys::packet_socket(
            iface.index,
            ETHERTYPE_ARP,
            None,
        )?)?);
        let ndp = Arc::new(sys::register(sys::packet_socket(
            iface.index,
            ETHERTYPE_IPV6,
            Some(&NS_FILTER),
        )?)?);
        let arp_task = tokio::spawn(answer(
            self.shared.clone(),
            iface.clone(),
            arp.clone(),
            Protocol::Arp,
        ));
        let ndp_task = tokio::spawn(answer(
            self.shared.clone(),
            iface.clone(),
            ndp.clone(),
            Protocol::Ndp,
        ));
        Ok(Open {
            iface: iface.clone(),
            arp,
            ndp,
            tasks: [arp_task.abort_handle(), ndp_task.abort_handle()],
            joined: BTreeSet::new(),
        })
    }

    fn start_burst(&self, ip: IpAddr) {
        let sockets: Vec<(Interface, Arc<AsyncFd<OwnedFd>>)> = {
            let open = lock(&self.open);
            open.values()
                .map(|o| {
                    let fd = match ip {
                        IpAddr::V4(_) => o.arp.clone(),
                        IpAddr::V6(_) => o.ndp.clone(),
                    };
                    (o.iface.clone(), fd)
                })
                .collect()
        };
        let shared = self.shared.clone();
        let task = tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            for at in GRATUITOUS_AT {
                tokio::time::sleep_until(start + at).await;
                let ifaces = {
                    let table = shared.table.read().unwrap_or_else(|e| e.into_inner());
                    match table.get(&ip) {
                        Some(i) => i.clone(),
                        None => return,
                    }
                };
                for (iface, fd) in sockets.iter().filter(|(i, _)| allowed(&ifaces, i)) {
                    let frames = match ip {
                        IpAddr::V4(v4) => vec![
                            packet::gratuitous_arp(iface.mac, v4, false),
                            packet::gratuitous_arp(iface.mac, v4, true),
                        ],
                        IpAddr::V6(v6) => {
                            vec![packet::unsolicited_neighbor_advertisement(iface.mac, v6)]
                        }
                    };
                    let protocol = match ip {
                        IpAddr::V4(_) => "arp",
                        IpAddr::V6(_) => "ndp",
                    };
                    for f in frames {
                        if send(&shared, fd, &f) {
                            shared
                                .metrics
                                .gratuitous
                                .get_or_create(&ProtocolLabels { protocol })
                                .inc();
                        }
                    }
                }
            }
        });
        lock(&self.bursts).insert(ip, task.abort_handle());
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        for (_, b) in lock(&self.bursts).drain() {
            b.abort();
        }
    }
}

#[derive(Clone, Copy)]
enum Protocol {
    Arp,
    Ndp,
}

fn send(shared: &Shared, fd: &AsyncFd<OwnedFd>, frame: &[u8]) -> bool {
    match sys::send(fd.get_ref(), frame) {
        Ok(_) => true,
        Err(e) => {
            debug!(error = %e, "sending a frame failed");
            shared.metrics.send_errors.inc();
            false
        }
    }
}

/// Reads requests off one socket and answers those for our addresses.
async fn answer(
    shared: Arc<Shared>,
    iface: Interface,
    fd: Arc<AsyncFd<OwnedFd>>,
    protocol: Protocol,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        let mut guard = match fd.readable().await {
            Ok(g) => g,
            Err(e) => {
                warn!(interface = %iface.name, error = %e, "socket failed; no longer answering on it");
                return;
            }
        };
        let n = match guard.try_io(|inner| sys::recv(inner.get_ref(), &mut buf)) {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                // ENETDOWN and the like: the interface is going; the next
                // sync closes the socket.
                debug!(interface = %iface.name, error = %e, "receive failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(_would_block) => continue,
        };
        let frame = &buf[..n];
        let (target, reply, label) = match protocol {
            Protocol::Arp => match packet::parse_arp_request(frame) {
                Some(req) => (
                    IpAddr::V4(req.target_ip),
                    packet::arp_reply(iface.mac, &req),
                    "arp",
                ),
                None => continue,
            },
            Protocol::Ndp => match packet::parse_neighbor_solicitation(frame) {
                Some(ns) => (
                    IpAddr::V6(ns.target),
                    packet::neighbor_advertisement(iface.mac, &ns),
                    "ndp",
                ),
                None => continue,
            },
        };
        let ours = shared
            .table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&target)
            .is_some_and(|ifs| allowed(ifs, &iface));
        if ours && send(&shared, &fd, &reply) {
            shared
                .metrics
                .replies
                .get_or_create(&ProtocolLabels { protocol: label })
                .inc();
        }
    }
}
