//! `assign`: choosing the addresses for one request.
//!
//! Choosing only reads the allocator's state (apart from dropping stale
//! free-set entries); the choice is committed at the end, so a failed request
//! leaves the Service's previous allocation untouched.

use std::net::IpAddr;

use ferrolb_provider_api::IpFamily;

use super::error::{AllocError, Denial};
use super::range::from_u128;
use super::state::{Allocator, Held};
use super::{Allocation, Request};

/// One address chosen for one family.
struct Choice {
    family: IpFamily,
    ip: IpAddr,
    /// The pool's name for [`Allocation::pool`].
    label: String,
    /// The pool it is in, if any pool holds it (a family added later tries
    /// this pool first).
    pool: Option<usize>,
}

impl Allocator {
    /// Gives the Service the addresses its request asks for; see the
    /// [module docs](super) for the rules. Idempotent: a Service whose addresses
    /// still satisfy the request keeps them. On error the Service's previous
    /// allocation is left untouched.
    pub fn assign(&mut self, req: &Request) -> Result<Allocation, AllocError> {
        let mut families: Vec<IpFamily> = Vec::with_capacity(2);
        for f in &req.families {
            if !families.contains(f) {
                families.push(*f);
            }
        }
        if families.is_empty() {
            return Err(AllocError::NoIpFamilies);
        }
        let mut chosen = self.choose(req, &families)?;
        chosen.sort_by_key(|c| families.iter().position(|f| *f == c.family));
        let allocation = Allocation {
            addresses: chosen.iter().map(|c| c.ip).collect(),
            pool: chosen.first().map(|c| c.label.clone()).unwrap_or_default(),
        };
        let held = Held {
            allocation: allocation.clone(),
            sharing: req.sharing.clone(),
        };
        if self.services.get(&req.service) != Some(&held) {
            self.replace(&req.service, held);
        }
        Ok(allocation)
    }

    fn choose(&mut self, req: &Request, families: &[IpFamily]) -> Result<Vec<Choice>, AllocError> {
        let mut explicit: Vec<IpAddr> = Vec::with_capacity(2);
        for ip in &req.addresses {
            let family = IpFamily::of(ip);
            if !families.contains(&family) {
                return Err(AllocError::WrongFamily {
                    address: *ip,
                    wanted: families.to_vec(),
                });
            }
            if explicit
                .iter()
                .any(|e| IpFamily::of(e) == family && e != ip)
            {
                let addresses = req
                    .addresses
                    .iter()
                    .filter(|a| IpFamily::of(a) == family)
                    .copied()
                    .collect();
                return Err(AllocError::TooManyAddresses { family, addresses });
            }
            explicit.push(*ip);
        }

        let current = self
            .services
            .get(&req.service)
            .map(|h| h.allocation.clone());
        let mut chosen = Vec::with_capacity(families.len());
        for &family in families {
            let held = current.as_ref().and_then(|c| {
                c.addresses
                    .iter()
                    .find(|ip| IpFamily::of(ip) == family)
                    .copied()
            });
            let kept = held.filter(|ip| self.keeps(req, current.as_ref(), ip));
            match explicit.iter().find(|ip| IpFamily::of(ip) == family) {
                Some(want) if kept == Some(*want) => {
                    chosen.push(self.kept(req, current.as_ref(), *want))
                }
                Some(want) => {
                    let pool = self.check_explicit(req, want)?;
                    chosen.push(Choice {
                        family,
                        ip: *want,
                        label: self.pools[pool].name().to_string(),
                        pool: Some(pool),
                    });
                }
                None => {
                    if let Some(ip) = kept {
                        chosen.push(self.kept(req, current.as_ref(), ip));
                    }
                }
            }
        }
        let missing: Vec<IpFamily> = families
            .iter()
            .copied()
            .filter(|f| !chosen.iter().any(|c| c.family == *f))
            .collect();
        if missing.is_empty() {
            Ok(chosen)
        } else if chosen.is_empty() {
            self.fresh(req, families)
        } else {
            self.complete(req, families, chosen, missing)
        }
    }

    /// Whether the Service may keep `ip`, which it holds: it is still
    /// shareable with the other holders, and in the requested pool if there is
    /// one (or was handed out from a pool of that name, which has changed since).
    fn keeps(&self, req: &Request, current: Option<&Allocation>, ip: &IpAddr) -> bool {
        if self
            .share_conflict(ip, &req.service, req.sharing.as_ref())
            .is_some()
        {
            return false;
        }
        match &req.pool {
            None => true,
            Some(name) => {
                current.is_some_and(|c| &c.pool == name)
                    || self
                        .by_name
                        .get(name)
                        .is_some_and(|&i| self.pools[i].contains(ip))
            }
        }
    }

    fn kept(&self, req: &Request, current: Option<&Allocation>, ip: IpAddr) -> Choice {
        let holding = |name: &str| {
            self.by_name
                .get(name)
                .copied()
                .filter(|&i| self.pools[i].contains(&ip))
        };
        let pool = req
            .pool
            .as_deref()
            .and_then(holding)
            .or_else(|| current.and_then(|c| holding(&c.pool)))
            .or_else(|| {
                self.pools.iter().position(|p| {
                    p.contains(&ip) && p.pool.allows(&req.service, &req.labels).is_ok()
                })
            });
        // With a requested pool the address is kept only as that pool's (see
        // `keeps`), so it keeps that name even if the pool has changed since;
        // naming another pool would make the next `assign` move it.
        let label = match (&req.pool, pool) {
            (Some(name), _) => name.clone(),
            (None, Some(i)) => self.pools[i].name().to_string(),
            (None, None) => current.map(|c| c.pool.clone()).unwrap_or_default(),
        };
        Choice {
            family: IpFamily::of(&ip),
            ip,
            label,
            pool,
        }
    }

    /// The pool that may give `ip` to this Service, or why none may.
    fn check_explicit(&self, req: &Request, ip: &IpAddr) -> Result<usize, AllocError> {
        let pool = if let Some(name) = &req.pool {
            let i = self.requested_pool(req, name)?;
            let pool = &self.pools[i];
            if !pool.contains(ip) {
                return Err(AllocError::AddressNotInRequestedPool {
                    address: *ip,
                    pool: name.clone(),
                });
            }
            pool.check_address(ip)
                .map_err(|d| AllocError::AddressNotAllowed {
                    address: *ip,
                    denials: vec![(name.clone(), d)],
                })?;
            i
        } else {
            let mut denials = Vec::new();
            let mut found = None;
            for (i, p) in self
                .pools
                .iter()
                .enumerate()
                .filter(|(_, p)| p.contains(ip))
            {
                match p
                    .pool
                    .allows(&req.service, &req.labels)
                    .and_then(|()| p.check_address(ip))
                {
                    Ok(()) => {
                        found = Some(i);
                        break;
                    }
                    Err(d) => denials.push((p.name().to_string(), d)),
                }
            }
            match found {
                Some(i) => i,
                None if denials.is_empty() => {
                    return Err(AllocError::AddressNotInAnyPool { address: *ip });
                }
                None => {
                    return Err(AllocError::AddressNotAllowed {
                        address: *ip,
                        denials,
                    });
                }
            }
        };
        if let Some((holder, conflict)) =
            self.share_conflict(ip, &req.service, req.sharing.as_ref())
        {
            return Err(AllocError::AddressInUse {
                address: *ip,
                holder,
                conflict,
            });
        }
        Ok(pool)
    }

    fn requested_pool(&self, req: &Request, name: &str) -> Result<usize, AllocError> {
        let &i = self
            .by_name
            .get(name)
            .ok_or_else(|| AllocError::PoolNotFound {
                pool: name.to_string(),
            })?;
        self.pools[i]
            .pool
            .allows(&req.service, &req.labels)
            .map_err(|denial| AllocError::PoolNotAllowed {
                pool: name.to_string(),
                denial,
            })?;
        Ok(i)
    }

    /// The pools automatic allocation may use, in order: the requested pool, or
    /// every autoAssign pool that serves the Service.
    fn candidates(&self, req: &Request) -> Result<Vec<usize>, AllocError> {
        if let Some(name) = &req.pool {
            return Ok(vec![self.requested_pool(req, name)?]);
        }
        let mut out = Vec::new();
        let mut denials = Vec::new();
        for (i, p) in self.pools.iter().enumerate() {
            let verdict = if p.pool.auto_assign {
                p.pool.allows(&req.service, &req.labels)
            } else {
                Err(Denial::NotAutoAssign)
            };
            match verdict {
                Ok(()) => out.push(i),
                Err(d) => denials.push((p.name().to_string(), d)),
            }
        }
        if out.is_empty() {
            return Err(AllocError::NoPoolForService { denials });
        }
        Ok(out)
    }

    /// Moves to the front (keeping their order) the pools holding an address
    /// the Service may share under its sharing key.
    fn sharing_first(&self, req: &Request, pools: Vec<usize>, families: &[IpFamily]) -> Vec<usize> {
        if req.sharing.is_none() {
            return pools;
        }
        let (mut first, rest): (Vec<usize>, Vec<usize>) = pools.into_iter().partition(|&p| {
            families
                .iter()
                .any(|&f| self.shared_candidate(req, p, f).is_some())
        });
        first.extend(rest);
        first
    }

    /// An address of `family` in pool `p`, held under the request's sharing
    /// key, that the Service may share.
    fn shared_candidate(&self, req: &Request, p: usize, family: IpFamily) -> Option<IpAddr> {
        let sharing = req.sharing.as_ref()?;
        let pool = &self.pools[p];
        self.shared.get(&sharing.key)?.iter().copied().find(|ip| {
            IpFamily::of(ip) == family
                && pool.contains(ip)
                && pool.check_address(ip).is_ok()
                && self
                    .share_conflict(ip, &req.service, Some(sharing))
                    .is_none()
        })
    }

    /// An address of `family` pool `p` can give the Service: a shareable one
    /// first, else the lowest free one.
    fn pick(&mut self, req: &Request, p: usize, family: IpFamily) -> Option<IpAddr> {
        if let Some(ip) = self.shared_candidate(req, p, family) {
            return Some(ip);
        }
        loop {
            let v = self.pools[p].free(family).first()?;
            self.probes += 1;
            let ip = from_u128(family, v);
            if !self.holders.contains_key(&ip) {
                return Some(ip);
            }
            // Held through another pool: the holder map is the authority.
            self.pools[p].drop_stale(family, v);
        }
    }

    /// Every family from scratch: from one pool if any can give them all,
    /// else the primary from the first pool that can give it and the other
    /// family as [`Self::complete`] finds it.
    fn fresh(&mut self, req: &Request, families: &[IpFamily]) -> Result<Vec<Choice>, AllocError> {
        let order = self.candidates(req)?;
        let order = self.sharing_first(req, order, families);
        for &p in &order {
            let picks: Vec<Option<IpAddr>> =
                families.iter().map(|&f| self.pick(req, p, f)).collect();
            if picks.iter().all(Option::is_some) {
                let label = self.pools[p].name().to_string();
                return Ok(families
                    .iter()
                    .zip(picks.into_iter().flatten())
                    .map(|(&family, ip)| Choice {
                        family,
                        ip,
                        label: label.clone(),
                        pool: Some(p),
                    })
                    .collect());
            }
        }
        let primary = families[0];
        for &p in &order {
            if let Some(ip) = self.pick(req, p, primary) {
                let chosen = vec![Choice {
                    family: primary,
                    ip,
                    label: self.pools[p].name().to_string(),
                    pool: Some(p),
                }];
                return self.complete(req, families, chosen, families[1..].to_vec());
            }
        }
        Err(self.family_error(primary, &order))
    }

    /// The families still missing next to kept or explicit addresses: from
    /// those addresses' pools first, then from the usual pools.
    fn complete(
        &mut self,
        req: &Request,
        families: &[IpFamily],
        mut chosen: Vec<Choice>,
        missing: Vec<IpFamily>,
    ) -> Result<Vec<Choice>, AllocError> {
        let mut order: Vec<usize> = Vec::new();
        for p in chosen.iter().filter_map(|c| c.pool) {
            let pool = &self.pools[p];
            let usable = pool.pool.allows(&req.service, &req.labels).is_ok()
                && req.pool.as_deref().is_none_or(|name| name == pool.name());
            if usable && !order.contains(&p) {
                order.push(p);
            }
        }
        let candidates = self.candidates(req);
        let rest: Vec<usize> = candidates
            .iter()
            .flatten()
            .copied()
            .filter(|p| !order.contains(p))
            .collect();
        order.extend(self.sharing_first(req, rest, &missing));

        for family in missing {
            let is_primary = family == families[0];
            let mut found = None;
            for &p in &order {
                if let Some(ip) = self.pick(req, p, family) {
                    found = Some((p, ip));
                    break;
                }
            }
            match found {
                Some((p, ip)) => chosen.push(Choice {
                    family,
                    ip,
                    label: self.pools[p].name().to_string(),
                    pool: Some(p),
                }),
                None if !is_primary && !req.require_all => {}
                None if order.is_empty() => {
                    return Err(candidates
                        .err()
                        .unwrap_or(AllocError::NoPoolForService { denials: vec![] }));
                }
                None if is_primary => return Err(self.family_error(family, &order)),
                None => {
                    let pools = order
                        .iter()
                        .map(|&p| self.pools[p].name().to_string())
                        .collect();
                    return Err(AllocError::DualStackUnavailable { family, pools });
                }
            }
        }
        Ok(chosen)
    }

    /// Why none of `pools` could give an address of `family`.
    fn family_error(&self, family: IpFamily, pools: &[usize]) -> AllocError {
        let with_family: Vec<String> = pools
            .iter()
            .map(|&p| &self.pools[p])
            .filter(|p| !p.ranges(family).is_empty())
            .map(|p| p.name().to_string())
            .collect();
        if with_family.is_empty() {
            AllocError::NoPoolWithFamily {
                family,
                pools: pools
                    .iter()
                    .map(|&p| self.pools[p].name().to_string())
                    .collect(),
            }
        } else {
            AllocError::Exhausted {
                family,
                pools: with_family,
            }
        }
    }
}
