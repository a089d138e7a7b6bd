//! The allocator's state: pools, who holds what, and the bookkeeping that keeps
//! the pools' free sets and counters in step with the holders.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ferrolb_provider_api::{IpFamily, ServiceKey};

use super::error::{AllocError, ShareConflict};
use super::pool::{Pool, PoolState};
use super::range::{fmt_span, from_u128};
use super::{Allocation, PoolUsage, Record, Request, Sharing};

/// Hands out addresses from pools; see the [module docs](super).
#[derive(Clone, Debug, Default)]
pub struct Allocator {
    /// In the order pools are tried.
    pub(crate) pools: Vec<PoolState>,
    pub(crate) by_name: BTreeMap<String, usize>,
    /// Address -> the Services that hold it (more than one only when shared).
    /// The authority on what is taken.
    pub(crate) holders: BTreeMap<IpAddr, BTreeSet<ServiceKey>>,
    pub(crate) services: BTreeMap<ServiceKey, Held>,
    /// Addresses a Service moved away from that its published status may
    /// still show, with the sharing they were held under. They stay taken
    /// until [`Allocator::published`] says the new ones are out: were they
    /// handed on before, a restart would find two Services showing them.
    pub(crate) leaving: BTreeMap<ServiceKey, Vec<(IpAddr, Option<Sharing>)>>,
    /// Sharing key -> the addresses held under it as a Service's current
    /// address (a Service may join one of these; never a leaving one).
    pub(crate) shared: BTreeMap<String, BTreeSet<IpAddr>>,
    /// Free-set candidates looked at, in total: shows that finding a free
    /// address does not scan the pool.
    pub(crate) probes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) allocation: Allocation,
    pub(crate) sharing: Option<Sharing>,
}

impl Allocator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the whole pool set. Existing allocations are kept as they are,
    /// even if their pool changed or vanished (an address never moves by
    /// itself). Returns the problems found, only for pools that have some:
    /// duplicate names, pools without addresses, overlaps between pools. An
    /// address in two pools is still never handed out twice.
    pub fn set_pools(&mut self, pools: Vec<Pool>) -> BTreeMap<String, Vec<String>> {
        let mut problems: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut kept: Vec<Pool> = Vec::with_capacity(pools.len());
        for pool in pools {
            if kept.iter().any(|p| p.name == pool.name) {
                problems
                    .entry(pool.name.clone())
                    .or_default()
                    .push("another pool has the same name; only the first one is used".into());
            } else {
                kept.push(pool);
            }
        }
        kept.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        self.pools = kept.into_iter().map(PoolState::new).collect();
        self.by_name = self
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name().to_string(), i))
            .collect();
        for pool in &mut self.pools {
            for family in [IpFamily::V4, IpFamily::V6] {
                for &(s, e) in pool.ranges(family).spans().to_vec().iter() {
                    let range = from_u128(family, s)..=from_u128(family, e);
                    for ip in self.holders.range(range).map(|(ip, _)| *ip) {
                        pool.mark_held(&ip);
                    }
                }
            }
            if pool.ranges(IpFamily::V4).is_empty() && pool.ranges(IpFamily::V6).is_empty() {
                problems
                    .entry(pool.name().to_string())
                    .or_default()
                    .push("the pool has no addresses".into());
            }
        }
        for (pool, message) in self.overlaps() {
            problems.entry(pool).or_default().push(message);
        }
        problems
    }

    /// One message per pool and overlapping span, e.g. "overlaps pool b at
    /// 10.0.0.8-10.0.0.15".
    fn overlaps(&self) -> Vec<(String, String)> {
        let mut spans: Vec<(IpFamily, u128, u128, usize)> = Vec::new();
        for (i, pool) in self.pools.iter().enumerate() {
            for family in [IpFamily::V4, IpFamily::V6] {
                spans.extend(
                    pool.ranges(family)
                        .spans()
                        .iter()
                        .map(|&(s, e)| (family, s, e, i)),
                );
            }
        }
        spans.sort_unstable();
        let mut found = Vec::new();
        for (i, &(family, s, e, a)) in spans.iter().enumerate() {
            for &(other_family, os, oe, b) in &spans[i + 1..] {
                if other_family != family || os > e {
                    break;
                }
                if a == b {
                    continue;
                }
                let at = Span(family, os.max(s), oe.min(e));
                let (name_a, name_b) = (self.pools[a].name(), self.pools[b].name());
                found.push((
                    name_a.to_string(),
                    format!("overlaps pool {name_b} at {at}"),
                ));
                found.push((
                    name_b.to_string(),
                    format!("overlaps pool {name_a} at {at}"),
                ));
            }
        }
        found
    }

    /// Records an allocation that already exists (from a Service's status at
    /// start-up), replacing any the Service had. The addresses are taken as they
    /// are, without checking pools or autoAssign; this fails only if an address
    /// is held by another Service in a way sharing does not allow, and then
    /// nothing is recorded. Restoring no address just releases the Service.
    pub fn restore(
        &mut self,
        req: &Request,
        addresses: &[IpAddr],
    ) -> Result<Allocation, AllocError> {
        let mut addresses: Vec<IpAddr> = addresses.iter().fold(Vec::new(), |mut v, ip| {
            if !v.contains(ip) {
                v.push(*ip);
            }
            v
        });
        let rank = |ip: &IpAddr| {
            req.families
                .iter()
                .position(|f| *f == IpFamily::of(ip))
                .unwrap_or(usize::MAX)
        };
        addresses.sort_by_key(rank);
        for ip in &addresses {
            if let Some((holder, conflict)) =
                self.share_conflict(ip, &req.service, req.sharing.as_ref())
            {
                return Err(AllocError::AddressInUse {
                    address: *ip,
                    holder,
                    conflict,
                });
            }
        }
        let pool = match addresses.first() {
            Some(first) => self.pool_for_restored(req, first),
            None => String::new(),
        };
        let allocation = Allocation { addresses, pool };
        self.release(&req.service);
        if !allocation.addresses.is_empty() {
            self.record(&req.service, allocation.clone(), req.sharing.clone());
        }
        Ok(allocation)
    }

    /// Restores many Services at once (see [`Allocator::restore`]), the
    /// Services whose addresses still meet their request first.
    ///
    /// Two Services can show one address and not be allowed to share it:
    /// one of them was moved (its request changed) and the leader died
    /// before writing its new status, or its sharing key, ports or traffic
    /// policy changed while no leader ran. The one whose request the
    /// address still meets keeps it; the other gets new addresses. Each
    /// Service's [`Record`] tells which one changed: a Service whose record
    /// is [`Record::Stale`] goes after the others and does not count against
    /// them. Among the rest, those that show an address and ask for nothing
    /// that rules it out, the largest group under one sharing key counts as
    /// meeting it (a Service without a key counts only when it is alone).
    /// Within that group, the Services whose terms changed
    /// ([`Record::TermsChanged`]) come after the others, so that where the
    /// new terms clash, the Service that changed gives way. Records missing
    /// (a status written before they were kept), two groups of one size tie,
    /// and list order decides.
    pub fn restore_all(
        &mut self,
        services: Vec<(Request, Vec<IpAddr>, Record)>,
    ) -> Vec<(ServiceKey, Result<Allocation, AllocError>)> {
        let wanted: Vec<bool> = services
            .iter()
            .map(|(req, addrs, record)| *record != Record::Stale && self.asked_for(req, addrs))
            .collect();
        // Per address, how many Services that ask for it show it, per key.
        let mut shown: BTreeMap<IpAddr, BTreeMap<Option<&str>, usize>> = BTreeMap::new();
        for ((req, addrs, _), _) in services.iter().zip(&wanted).filter(|(_, w)| **w) {
            let key = req.sharing.as_ref().map(|s| s.key.as_str());
            for ip in addrs {
                *shown.entry(*ip).or_default().entry(key).or_default() += 1;
            }
        }
        let meets = |req: &Request, addrs: &[IpAddr]| {
            let key = req.sharing.as_ref().map(|s| s.key.as_str());
            addrs.iter().all(|ip| {
                let Some(by_key) = shown.get(ip) else {
                    return true;
                };
                let ours = by_key.get(&key).copied().unwrap_or(0);
                let largest_other = by_key
                    .iter()
                    .filter(|(k, _)| **k != key)
                    .map(|(_, n)| *n)
                    .max()
                    .unwrap_or(0);
                match key {
                    None => ours <= 1 && largest_other == 0,
                    Some(_) => ours >= largest_other,
                }
            })
        };
        // 0: meets it, unchanged; 1: meets it, its terms changed; 2: the rest.
        let tier: Vec<u8> = services
            .iter()
            .zip(&wanted)
            .map(
                |((req, addrs, record), wanted)| match *wanted && meets(req, addrs) {
                    false => 2,
                    true if *record == Record::TermsChanged => 1,
                    true => 0,
                },
            )
            .collect();
        let mut ordered: Vec<_> = services.into_iter().zip(tier).collect();
        // Stable: list order within a tier.
        ordered.sort_by_key(|(_, tier)| *tier);
        ordered
            .into_iter()
            .map(|((req, addrs, _), _)| {
                let result = self.restore(&req, &addrs);
                (req.service, result)
            })
            .collect()
    }

    /// Whether restored addresses are what the Service asks for now: the
    /// addresses it requests, in the pool it requests.
    fn asked_for(&self, req: &Request, addresses: &[IpAddr]) -> bool {
        addresses.iter().all(|ip| {
            let requested = req
                .addresses
                .iter()
                .filter(|a| IpFamily::of(a) == IpFamily::of(ip))
                .all(|a| a == ip);
            let in_pool = req.pool.as_ref().is_none_or(|name| {
                self.by_name
                    .get(name)
                    .is_some_and(|&i| self.pools[i].contains(ip))
            });
            requested && in_pool
        })
    }

    /// The pool a restored address is taken to come from: the requested pool if
    /// it holds it, else the first pool that holds it and serves the Service,
    /// else the first that holds it, else none ("").
    fn pool_for_restored(&self, req: &Request, ip: &IpAddr) -> String {
        let holding = || self.pools.iter().filter(|p| p.contains(ip));
        let requested = req
            .pool
            .as_deref()
            .and_then(|name| holding().find(|p| p.name() == name));
        requested
            .or_else(|| holding().find(|p| p.pool.allows(&req.service, &req.labels).is_ok()))
            .or_else(|| holding().next())
            .map(|p| p.name().to_string())
            .unwrap_or_default()
    }

    /// Frees the Service's addresses (a shared address is freed when its last
    /// holder goes). Returns whether it held any.
    pub fn release(&mut self, service: &ServiceKey) -> bool {
        for (ip, sharing) in self.leaving.remove(service).unwrap_or_default() {
            self.unhold(&ip, service, sharing.as_ref());
        }
        let Some(held) = self.services.remove(service) else {
            return false;
        };
        for ip in &held.allocation.addresses {
            self.unhold(ip, service, held.sharing.as_ref());
        }
        true
    }

    /// Says that the Service's status now shows `addresses`. If they are
    /// what it holds, the addresses it moved away from are freed. Returns
    /// whether any were.
    pub fn published(&mut self, service: &ServiceKey, addresses: &[IpAddr]) -> bool {
        let current = self.services.get(service).is_some_and(|h| {
            let held = &h.allocation.addresses;
            held.len() == addresses.len() && held.iter().all(|ip| addresses.contains(ip))
        });
        if !current {
            return false;
        }
        let Some(leaving) = self.leaving.remove(service) else {
            return false;
        };
        for (ip, sharing) in &leaving {
            self.unhold(ip, service, sharing.as_ref());
        }
        !leaving.is_empty()
    }

    /// The addresses the Service moved away from and still holds until
    /// [`Allocator::published`].
    pub fn leaving(&self, service: &ServiceKey) -> Vec<IpAddr> {
        self.leaving
            .get(service)
            .map(|l| l.iter().map(|(ip, _)| *ip).collect())
            .unwrap_or_default()
    }

    /// Makes `held` the Service's allocation in place of the one it has. An
    /// address it holds now and not in `held` becomes a leaving one (see
    /// [`Allocator::leaving`]); a leaving one it takes back is its own again.
    pub(crate) fn replace(&mut self, service: &ServiceKey, held: Held) {
        let mut leaving = self.leaving.remove(service).unwrap_or_default();
        if let Some(old) = self.services.remove(service) {
            for ip in old.allocation.addresses {
                if held.allocation.addresses.contains(&ip) {
                    self.unhold(&ip, service, old.sharing.as_ref());
                } else {
                    // Never among its leaving ones: those are not current.
                    if let Some(sharing) = &old.sharing {
                        self.unshare_unless_held(&ip, &sharing.key);
                    }
                    leaving.push((ip, old.sharing.clone()));
                }
            }
        }
        leaving.retain(|(ip, sharing)| {
            let back = held.allocation.addresses.contains(ip);
            if back {
                self.unhold(ip, service, sharing.as_ref());
            }
            !back
        });
        if !leaving.is_empty() {
            self.leaving.insert(service.clone(), leaving);
        }
        self.record(service, held.allocation, held.sharing);
    }

    /// The Services that hold addresses.
    pub fn holding(&self) -> impl Iterator<Item = &ServiceKey> {
        self.services.keys()
    }

    pub fn allocation(&self, service: &ServiceKey) -> Option<&Allocation> {
        self.services.get(service).map(|h| &h.allocation)
    }

    /// How much of the named pool is used; `None` for an unknown pool.
    pub fn usage(&self, pool: &str) -> Option<PoolUsage> {
        let p = &self.pools[*self.by_name.get(pool)?];
        let sat = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
        Some(PoolUsage {
            assigned_v4: sat(p.assigned(IpFamily::V4)),
            assigned_v6: sat(p.assigned(IpFamily::V6)),
            available_v4: sat(p.free(IpFamily::V4).count()),
            available_v6: sat(p.free(IpFamily::V6).count()),
        })
    }

    /// Who holds an address (for messages and tests).
    pub fn holders(&self, ip: &IpAddr) -> Vec<ServiceKey> {
        self.holders
            .get(ip)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Makes `allocation` the Service's, which must hold nothing now.
    pub(crate) fn record(
        &mut self,
        service: &ServiceKey,
        allocation: Allocation,
        sharing: Option<Sharing>,
    ) {
        for ip in &allocation.addresses {
            self.hold(ip, service, sharing.as_ref());
        }
        self.services.insert(
            service.clone(),
            Held {
                allocation,
                sharing,
            },
        );
    }

    fn hold(&mut self, ip: &IpAddr, service: &ServiceKey, sharing: Option<&Sharing>) {
        let holders = self.holders.entry(*ip).or_default();
        let was_free = holders.is_empty();
        holders.insert(service.clone());
        if was_free {
            for pool in self.pools.iter_mut().filter(|p| p.contains(ip)) {
                pool.mark_held(ip);
            }
        }
        if let Some(sharing) = sharing {
            self.shared
                .entry(sharing.key.clone())
                .or_default()
                .insert(*ip);
        }
    }

    fn unhold(&mut self, ip: &IpAddr, service: &ServiceKey, sharing: Option<&Sharing>) {
        let Some(holders) = self.holders.get_mut(ip) else {
            return;
        };
        holders.remove(service);
        if holders.is_empty() {
            self.holders.remove(ip);
            for pool in self.pools.iter_mut().filter(|p| p.contains(ip)) {
                pool.mark_free(ip);
            }
        }
        // Any other holders hold it under the same key (sharing demands it).
        if let Some(sharing) = sharing {
            self.unshare_unless_held(ip, &sharing.key);
        }
    }

    /// Takes `ip` out of the key's shared addresses unless a Service still
    /// holds it as its current address: nobody may join an address that is
    /// only leaving.
    fn unshare_unless_held(&mut self, ip: &IpAddr, key: &str) {
        let held = self
            .holders
            .get(ip)
            .is_some_and(|holders| holders.iter().any(|h| self.holds_now(h, ip)));
        if held {
            return;
        }
        if let Some(set) = self.shared.get_mut(key) {
            set.remove(ip);
            if set.is_empty() {
                self.shared.remove(key);
            }
        }
    }

    /// The first holder of `ip` (other than `service`) that `service`, with
    /// `sharing`, may not share it with, and why.
    pub(crate) fn share_conflict(
        &self,
        ip: &IpAddr,
        service: &ServiceKey,
        sharing: Option<&Sharing>,
    ) -> Option<(ServiceKey, ShareConflict)> {
        let holders = self.holders.get(ip)?;
        // An address only leaving Services hold goes to nobody until they
        // are gone; one that a Service still holds (this one included) is
        // shared by the rules of all its holders, the leaving ones' too.
        let only_leaving = holders.iter().all(|h| !self.holds_now(h, ip));
        for holder in holders.iter().filter(|h| *h != service) {
            let conflict = if only_leaving {
                Some(ShareConflict::Leaving)
            } else if self.holds_now(holder, ip) {
                let theirs = self.services.get(holder).and_then(|h| h.sharing.as_ref());
                sharing_conflict(sharing, theirs)
            } else {
                sharing_conflict(sharing, self.leaving_sharing(holder, ip))
            };
            if let Some(conflict) = conflict {
                return Some((holder.clone(), conflict));
            }
        }
        None
    }

    /// Whether `ip` is among the holder's current addresses (not only
    /// leaving).
    fn holds_now(&self, holder: &ServiceKey, ip: &IpAddr) -> bool {
        self.services
            .get(holder)
            .is_some_and(|held| held.allocation.addresses.contains(ip))
    }

    /// The sharing the holder held a leaving address under.
    fn leaving_sharing(&self, holder: &ServiceKey, ip: &IpAddr) -> Option<&Sharing> {
        self.leaving
            .get(holder)?
            .iter()
            .find(|(l, _)| l == ip)?
            .1
            .as_ref()
    }

    /// Free intervals of a pool's family (to show that fragmentation, not pool
    /// size, sets the free set's size).
    #[cfg(test)]
    pub(crate) fn free_spans(&self, pool: &str, family: IpFamily) -> usize {
        self.pools[self.by_name[pool]].free(family).span_len()
    }
}

/// Why two Services may not share an address, if they may not.
fn sharing_conflict(ours: Option<&Sharing>, theirs: Option<&Sharing>) -> Option<ShareConflict> {
    let Some(ours) = ours else {
        return Some(ShareConflict::NoSharingKey);
    };
    let Some(theirs) = theirs else {
        return Some(ShareConflict::HolderHasNoSharingKey);
    };
    if ours.key != theirs.key {
        return Some(ShareConflict::DifferentKey {
            ours: ours.key.clone(),
            theirs: theirs.key.clone(),
        });
    }
    if ours.backend != theirs.backend {
        return Some(ShareConflict::DifferentBackend);
    }
    let theirs_ports: BTreeSet<_> = theirs.ports.iter().collect();
    let overlap: BTreeSet<_> = ours
        .ports
        .iter()
        .filter(|p| theirs_ports.contains(p))
        .copied()
        .collect();
    if !overlap.is_empty() {
        return Some(ShareConflict::PortsOverlap {
            ports: overlap.into_iter().collect(),
        });
    }
    None
}

/// A span of addresses, displayed as `start-end`.
struct Span(IpFamily, u128, u128);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_span(f, self.0, self.1, self.2)
    }
}
