//! Address ranges: what one entry of a pool's `addresses` means.
//!
//! Both families are handled as `u128` so that one piece of interval arithmetic
//! serves IPv4 and IPv6; the family always travels alongside the number.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ferrolb_provider_api::{IpFamily, quote};

/// The address as a number (an IPv4 address fills the low 32 bits).
pub(crate) fn to_u128(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

/// The inverse of [`to_u128`]. For IPv4 only the low 32 bits are used.
pub(crate) fn from_u128(family: IpFamily, value: u128) -> IpAddr {
    match family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::from((value & 0xffff_ffff) as u32)),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// An IPv4 address ending in .0 or .255, which some old equipment takes for a
/// broadcast address and drops.
pub(crate) fn is_buggy_v4(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V4(a) if matches!(a.octets()[3], 0 | 255))
}

/// An inclusive range of addresses of one family.
///
/// Parsing accepts, with optional whitespace around the whole entry and around
/// `-` and `/`:
/// - a CIDR, `10.0.0.0/24` or `fd00::/120`. Host bits may be set
///   (`10.0.0.7/24`): the entry then means the whole network `10.0.0.0/24`, as
///   it does for `ip route` and for MetalLB pools, rather than being rejected;
/// - an inclusive range, `10.0.0.1-10.0.0.5` or `fd00::1 - fd00::9`;
/// - a single address, `10.0.0.7`, meaning just that address.
///
/// A CIDR covers every address in it, network and broadcast addresses included;
/// `avoidBuggyIPs` on the pool is how .0 and .255 are kept out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddrRange {
    family: IpFamily,
    start: u128,
    end: u128,
}

impl AddrRange {
    /// Parses one pool entry; the error names the entry and says what is wrong
    /// with it.
    pub fn parse(s: &str) -> Result<AddrRange, String> {
        let entry = s.trim();
        let fail = |why: String| format!("{}: {why}", quote(entry));
        if entry.is_empty() {
            return Err(format!(
                "{entry:?}: empty entry; write a CIDR such as 192.168.10.0/24 or a range such as 192.168.10.1-192.168.10.9"
            ));
        }
        if let Some((first, last)) = entry.split_once('-') {
            let start = parse_ip(first.trim(), "range start").map_err(fail)?;
            let end = parse_ip(last.trim(), "range end").map_err(fail)?;
            return AddrRange::new(start, end).map_err(fail);
        }
        if let Some((addr, prefix)) = entry.split_once('/') {
            let addr = parse_ip(addr.trim(), "network address").map_err(fail)?;
            let prefix = prefix.trim();
            let bits: u32 = match addr {
                IpAddr::V4(_) => 32,
                IpAddr::V6(_) => 128,
            };
            let len: u32 = prefix
                .parse()
                .map_err(|_| fail(format!("prefix length {} is not a number", quote(prefix))))?;
            if len > bits {
                let family = IpFamily::of(&addr);
                return Err(fail(format!(
                    "prefix length {len} is too long for {family} (at most {bits})"
                )));
            }
            let host_bits = bits - len;
            let host_mask = if host_bits == 128 {
                u128::MAX
            } else {
                (1u128 << host_bits) - 1
            };
            let start = to_u128(&addr) & !host_mask;
            return Ok(AddrRange {
                family: IpFamily::of(&addr),
                start,
                end: start | host_mask,
            });
        }
        let addr = parse_ip(entry, "address").map_err(|_| {
            fail("not a CIDR (10.0.0.0/24), a range (10.0.0.1-10.0.0.9) or an address".into())
        })?;
        Ok(AddrRange::single(addr))
    }

    /// The inclusive range `start..=end`; both must be of one family and
    /// `start <= end`.
    pub fn new(start: IpAddr, end: IpAddr) -> Result<AddrRange, String> {
        let family = IpFamily::of(&start);
        if family != IpFamily::of(&end) {
            return Err(format!(
                "range mixes IPv4 and IPv6 ({start} is {family}, {end} is {})",
                IpFamily::of(&end)
            ));
        }
        let (start, end) = (to_u128(&start), to_u128(&end));
        if start > end {
            return Err("range start is after its end".into());
        }
        Ok(AddrRange { family, start, end })
    }

    /// The range holding just `addr`.
    pub fn single(addr: IpAddr) -> AddrRange {
        let v = to_u128(&addr);
        AddrRange {
            family: IpFamily::of(&addr),
            start: v,
            end: v,
        }
    }

    pub fn family(&self) -> IpFamily {
        self.family
    }

    pub fn start(&self) -> IpAddr {
        from_u128(self.family, self.start)
    }

    pub fn end(&self) -> IpAddr {
        from_u128(self.family, self.end)
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        IpFamily::of(ip) == self.family && (self.start..=self.end).contains(&to_u128(ip))
    }

    /// How many addresses the range holds; `::/0` saturates at `u128::MAX`.
    pub fn len(&self) -> u128 {
        (self.end - self.start).saturating_add(1)
    }

    /// Never true: a range holds at least one address. (Here for clippy's
    /// `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        false
    }

    pub(crate) fn bounds(&self) -> (u128, u128) {
        (self.start, self.end)
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_span(f, self.family, self.start, self.end)
    }
}

/// Writes `start-end`, or just the address when the span holds one.
pub(crate) fn fmt_span(
    f: &mut fmt::Formatter<'_>,
    family: IpFamily,
    start: u128,
    end: u128,
) -> fmt::Result {
    if start == end {
        write!(f, "{}", from_u128(family, start))
    } else {
        write!(f, "{}-{}", from_u128(family, start), from_u128(family, end))
    }
}

fn parse_ip(s: &str, what: &str) -> Result<IpAddr, String> {
    if s.is_empty() {
        return Err(format!("{what} is missing"));
    }
    s.parse()
        .map_err(|_| format!("{what} {} is not an IPv4 or IPv6 address", quote(s)))
}

/// Sorted, disjoint, non-adjacent spans of one family: the addresses of a pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RangeSet {
    spans: Vec<(u128, u128)>,
}

impl RangeSet {
    /// The union of the given spans (which may overlap or touch).
    pub(crate) fn new(mut spans: Vec<(u128, u128)>) -> RangeSet {
        spans.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(spans.len());
        for (s, e) in spans {
            match merged.last_mut() {
                Some((_, last_end)) if s <= last_end.saturating_add(1) => {
                    *last_end = (*last_end).max(e);
                }
                _ => merged.push((s, e)),
            }
        }
        RangeSet { spans: merged }
    }

    pub(crate) fn contains(&self, v: u128) -> bool {
        let after = self.spans.partition_point(|&(s, _)| s <= v);
        after > 0 && self.spans[after - 1].1 >= v
    }

    pub(crate) fn spans(&self) -> &[(u128, u128)] {
        &self.spans
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_good_entries() {
        let cases: &[(&str, &str, &str, u128)] = &[
            ("10.0.0.0/24", "10.0.0.0", "10.0.0.255", 256),
            ("  10.0.0.0/30 ", "10.0.0.0", "10.0.0.3", 4),
            ("10.0.0.7/24", "10.0.0.0", "10.0.0.255", 256),
            ("10.0.0.7 / 32", "10.0.0.7", "10.0.0.7", 1),
            ("0.0.0.0/0", "0.0.0.0", "255.255.255.255", 1 << 32),
            ("10.0.0.1-10.0.0.5", "10.0.0.1", "10.0.0.5", 5),
            ("10.0.0.1 - 10.0.0.5", "10.0.0.1", "10.0.0.5", 5),
            ("10.0.0.9-10.0.0.9", "10.0.0.9", "10.0.0.9", 1),
            ("10.0.0.9", "10.0.0.9", "10.0.0.9", 1),
            ("fd00::/120", "fd00::", "fd00::ff", 256),
            ("fd00::1:2/112", "fd00::1:0", "fd00::1:ffff", 65536),
            ("fd00::1-fd00::9", "fd00::1", "fd00::9", 9),
            ("fd00::1 -fd00::9", "fd00::1", "fd00::9", 9),
            ("fd00::/128", "fd00::", "fd00::", 1),
            (
                "::/0",
                "::",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                u128::MAX,
            ),
        ];
        for &(input, start, end, len) in cases {
            let r = AddrRange::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(
                (r.start(), r.end(), r.len()),
                (ip(start), ip(end), len),
                "{input}"
            );
            assert_eq!(r.family(), IpFamily::of(&ip(start)), "{input}");
        }
    }

    #[test]
    fn rejects_bad_entries_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            (
                "10.0.0.9-10.0.0.1",
                "\"10.0.0.9-10.0.0.1\": range start is after its end",
            ),
            ("fd00::9-fd00::1", "range start is after its end"),
            ("10.0.0.1-fd00::1", "range mixes IPv4 and IPv6"),
            (
                "10.0.0.0/33",
                "prefix length 33 is too long for IPv4 (at most 32)",
            ),
            (
                "fd00::/129",
                "prefix length 129 is too long for IPv6 (at most 128)",
            ),
            ("10.0.0.0/x", "prefix length \"x\" is not a number"),
            ("10.0.0.0/", "prefix length \"\" is not a number"),
            (
                "10.0.0/24",
                "network address \"10.0.0\" is not an IPv4 or IPv6 address",
            ),
            ("10.0.0.1-", "range end is missing"),
            ("-10.0.0.1", "range start is missing"),
            (
                "10.0.0.1-10.0.0.300",
                "range end \"10.0.0.300\" is not an IPv4",
            ),
            ("pool-a", "range start \"pool\" is not an IPv4"),
            ("hello", "not a CIDR (10.0.0.0/24), a range"),
            ("", "empty entry"),
            ("fe80::1%eth0", "not a CIDR"),
        ];
        for &(input, want) in cases {
            let err = AddrRange::parse(input).expect_err(input);
            assert!(err.contains(want), "{input}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn contains_respects_family_and_bounds() {
        let r = AddrRange::parse("10.0.0.8-10.0.0.15").unwrap();
        assert!(r.contains(&ip("10.0.0.8")));
        assert!(r.contains(&ip("10.0.0.15")));
        assert!(!r.contains(&ip("10.0.0.7")));
        assert!(!r.contains(&ip("10.0.0.16")));
        // The IPv6 address with the same number is another address.
        assert!(!r.contains(&ip("::a00:8")));
        assert_eq!(r.to_string(), "10.0.0.8-10.0.0.15");
        assert_eq!(AddrRange::parse("fd00::5").unwrap().to_string(), "fd00::5");
    }

    #[test]
    fn range_set_merges_and_answers_membership() {
        let set = RangeSet::new(vec![(10, 20), (0, 3), (4, 5), (15, 30), (40, 40)]);
        assert_eq!(set.spans(), &[(0, 5), (10, 30), (40, 40)]);
        for (v, inside) in [
            (0, true),
            (5, true),
            (6, false),
            (9, false),
            (30, true),
            (40, true),
            (41, false),
        ] {
            assert_eq!(set.contains(v), inside, "{v}");
        }
        let full = RangeSet::new(vec![(0, u128::MAX), (5, 6)]);
        assert_eq!(full.spans(), &[(0, u128::MAX)]);
        assert!(full.contains(u128::MAX));
    }

    #[test]
    fn buggy_addresses_are_ipv4_dot_zero_and_dot_255() {
        assert!(is_buggy_v4(&ip("10.0.1.0")));
        assert!(is_buggy_v4(&ip("10.0.1.255")));
        assert!(!is_buggy_v4(&ip("10.0.1.1")));
        assert!(!is_buggy_v4(&ip("fd00::ff")));
    }
}
