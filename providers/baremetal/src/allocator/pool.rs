//! Pools as the allocator sees them, and their conversion from the IPPool spec.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_provider_api::{IpFamily, ServiceKey};

use super::error::Denial;
use super::freeset::FreeSet;
use super::range::{AddrRange, RangeSet, is_buggy_v4, to_u128};
use super::selector::Selector;
use crate::crd::IPPoolSpec;

/// A pool of addresses and the rules for handing them out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub ranges: Vec<AddrRange>,
    /// Whether Services that name neither this pool nor one of its addresses may
    /// be given addresses from it.
    pub auto_assign: bool,
    /// Never hand out IPv4 x.x.x.0 or x.x.x.255.
    pub avoid_buggy_ips: bool,
    /// Namespaces whose Services may use the pool; empty = every namespace.
    pub namespaces: Vec<String>,
    /// Empty = every Service; else any one must match the Service's labels.
    pub service_selectors: Vec<Selector>,
    /// Lower is tried first; pools without a priority come after every pool
    /// with one; ties are broken by name.
    pub priority: Option<i32>,
}

impl Pool {
    /// Whether the address is in one of the pool's ranges.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }

    /// Whether the pool's namespace and selector rules let this Service use it.
    pub fn allows(
        &self,
        service: &ServiceKey,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), Denial> {
        if !self.namespaces.is_empty() && !self.namespaces.contains(&service.namespace) {
            return Err(Denial::Namespace {
                namespace: service.namespace.clone(),
                allowed: self.namespaces.clone(),
            });
        }
        if !self.service_selectors.is_empty()
            && !self.service_selectors.iter().any(|s| s.matches(labels))
        {
            return Err(Denial::Selectors);
        }
        Ok(())
    }

    /// The order in which pools are tried.
    pub(crate) fn order_key(&self) -> (bool, Option<i32>, &str) {
        (self.priority.is_none(), self.priority, &self.name)
    }
}

/// Converts an IPPool's spec, with one message per problem, each naming the
/// field, e.g. `spec.addresses[2]: "10.0.0.9-10.0.0.1": range start is after its end`.
pub fn pool_from_spec(name: &str, spec: &IPPoolSpec) -> Result<Pool, Vec<String>> {
    let mut problems = Vec::new();
    if spec.addresses.is_empty() {
        problems.push("spec.addresses: at least one CIDR or range is required".to_string());
    }
    let mut ranges = Vec::new();
    for (i, entry) in spec.addresses.iter().enumerate() {
        match AddrRange::parse(entry) {
            Ok(r) => ranges.push(r),
            Err(e) => problems.push(format!("spec.addresses[{i}]: {e}")),
        }
    }
    let allocation = spec.service_allocation.clone().unwrap_or_default();
    for (i, ns) in allocation.namespaces.iter().enumerate() {
        if ns.trim().is_empty() {
            problems.push(format!(
                "spec.serviceAllocation.namespaces[{i}]: empty namespace name"
            ));
        }
    }
    let mut service_selectors = Vec::new();
    for (i, s) in allocation.service_selectors.iter().enumerate() {
        match Selector::from_label_selector(s) {
            Ok(s) => service_selectors.push(s),
            Err(e) => problems.push(format!("spec.serviceAllocation.serviceSelectors[{i}]: {e}")),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Pool {
        name: name.to_string(),
        ranges,
        auto_assign: spec.auto_assign,
        avoid_buggy_ips: spec.avoid_buggy_ips,
        namespaces: allocation.namespaces,
        service_selectors,
        priority: allocation.priority,
    })
}

/// A pool with its addresses merged, its free sets and its counters.
#[derive(Clone, Debug)]
pub(crate) struct PoolState {
    pub(crate) pool: Pool,
    v4: RangeSet,
    v6: RangeSet,
    free_v4: FreeSet,
    free_v6: FreeSet,
    /// Held addresses inside the pool's ranges, whoever handed them out.
    assigned_v4: u128,
    assigned_v6: u128,
}

impl PoolState {
    /// A pool with every address free; the caller takes out the held ones.
    pub(crate) fn new(pool: Pool) -> PoolState {
        let spans = |family| {
            pool.ranges
                .iter()
                .filter(|r| r.family() == family)
                .map(AddrRange::bounds)
                .collect::<Vec<_>>()
        };
        let v4 = RangeSet::new(spans(IpFamily::V4));
        let v6 = RangeSet::new(spans(IpFamily::V6));
        let free_v4 = FreeSet::new(pool.avoid_buggy_ips, v4.spans());
        let free_v6 = FreeSet::new(false, v6.spans());
        PoolState {
            pool,
            v4,
            v6,
            free_v4,
            free_v6,
            assigned_v4: 0,
            assigned_v6: 0,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.pool.name
    }

    pub(crate) fn ranges(&self, family: IpFamily) -> &RangeSet {
        match family {
            IpFamily::V4 => &self.v4,
            IpFamily::V6 => &self.v6,
        }
    }

    pub(crate) fn free(&self, family: IpFamily) -> &FreeSet {
        match family {
            IpFamily::V4 => &self.free_v4,
            IpFamily::V6 => &self.free_v6,
        }
    }

    fn free_mut(&mut self, family: IpFamily) -> &mut FreeSet {
        match family {
            IpFamily::V4 => &mut self.free_v4,
            IpFamily::V6 => &mut self.free_v6,
        }
    }

    fn assigned_mut(&mut self, family: IpFamily) -> &mut u128 {
        match family {
            IpFamily::V4 => &mut self.assigned_v4,
            IpFamily::V6 => &mut self.assigned_v6,
        }
    }

    pub(crate) fn assigned(&self, family: IpFamily) -> u128 {
        match family {
            IpFamily::V4 => self.assigned_v4,
            IpFamily::V6 => self.assigned_v6,
        }
    }

    pub(crate) fn contains(&self, ip: &IpAddr) -> bool {
        self.ranges(IpFamily::of(ip)).contains(to_u128(ip))
    }

    /// Whether this pool, by its own rules, could hand out `ip` (ignoring who
    /// holds it): it is in the pool and not a buggy address the pool avoids.
    pub(crate) fn check_address(&self, ip: &IpAddr) -> Result<(), Denial> {
        if self.pool.avoid_buggy_ips && is_buggy_v4(ip) {
            return Err(Denial::BuggyAddress);
        }
        Ok(())
    }

    /// Records that `ip` (inside this pool) went from free to held.
    pub(crate) fn mark_held(&mut self, ip: &IpAddr) {
        let family = IpFamily::of(ip);
        self.free_mut(family).remove(to_u128(ip));
        *self.assigned_mut(family) += 1;
    }

    /// Records that `ip` (inside this pool) went from held to free.
    pub(crate) fn mark_free(&mut self, ip: &IpAddr) {
        let family = IpFamily::of(ip);
        self.free_mut(family).insert(to_u128(ip));
        let assigned = self.assigned_mut(family);
        *assigned = assigned.saturating_sub(1);
    }

    /// Drops a free-set entry found to be held (through another pool); the
    /// holder map is the authority.
    pub(crate) fn drop_stale(&mut self, family: IpFamily, v: u128) {
        self.free_mut(family).remove(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ServiceAllocation;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    fn spec(addresses: &[&str]) -> IPPoolSpec {
        IPPoolSpec {
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            auto_assign: true,
            ..Default::default()
        }
    }

    #[test]
    fn converts_a_good_spec() {
        let mut s = spec(&["10.0.0.0/24", "fd00::1-fd00::9"]);
        s.auto_assign = false;
        s.avoid_buggy_ips = true;
        s.service_allocation = Some(ServiceAllocation {
            priority: Some(3),
            namespaces: vec!["web".into()],
            service_selectors: vec![LabelSelector::default()],
        });
        let pool = pool_from_spec("a", &s).unwrap();
        assert_eq!(pool.name, "a");
        assert_eq!(pool.ranges.len(), 2);
        assert_eq!(pool.ranges[1].family(), IpFamily::V6);
        assert!(!pool.auto_assign && pool.avoid_buggy_ips);
        assert_eq!(
            (pool.priority, pool.namespaces.clone()),
            (Some(3), vec!["web".to_string()])
        );
        assert_eq!(pool.service_selectors, vec![Selector::default()]);
    }

    #[test]
    fn reports_every_problem_with_its_field() {
        let mut s = spec(&["10.0.0.0/24", "bogus", "10.0.0.9-10.0.0.1"]);
        s.service_allocation = Some(ServiceAllocation {
            priority: None,
            namespaces: vec!["ok".into(), "".into()],
            service_selectors: vec![LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "a".into(),
                    operator: "Maybe".into(),
                    values: None,
                }]),
                ..Default::default()
            }],
        });
        let problems = pool_from_spec("a", &s).unwrap_err();
        assert_eq!(
            problems,
            vec![
                "spec.addresses[1]: \"bogus\": not a CIDR (10.0.0.0/24), a range (10.0.0.1-10.0.0.9) or an address",
                "spec.addresses[2]: \"10.0.0.9-10.0.0.1\": range start is after its end",
                "spec.serviceAllocation.namespaces[1]: empty namespace name",
                "spec.serviceAllocation.serviceSelectors[0]: matchExpressions[0]: operator \"Maybe\" is not one of In, NotIn, Exists, DoesNotExist",
            ]
        );
        assert_eq!(
            pool_from_spec("a", &spec(&[])).unwrap_err(),
            vec!["spec.addresses: at least one CIDR or range is required"]
        );
    }

    #[test]
    fn allows_by_namespace_then_selectors() {
        let web = Selector::from_label_selector(&LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            ..Default::default()
        })
        .unwrap();
        let pool = Pool {
            name: "a".into(),
            ranges: vec![],
            auto_assign: true,
            avoid_buggy_ips: false,
            namespaces: vec!["prod".into()],
            service_selectors: vec![web],
            priority: None,
        };
        let app = |v: &str| BTreeMap::from([("app".to_string(), v.to_string())]);
        assert_eq!(
            pool.allows(&ServiceKey::new("prod", "s"), &app("web")),
            Ok(())
        );
        assert_eq!(
            pool.allows(&ServiceKey::new("prod", "s"), &app("db")),
            Err(Denial::Selectors)
        );
        assert_eq!(
            pool.allows(&ServiceKey::new("dev", "s"), &app("web")),
            Err(Denial::Namespace {
                namespace: "dev".into(),
                allowed: vec!["prod".into()]
            })
        );
    }
}
