//! ARP and NDP frames: parsing what arrives, building what the speaker sends.
//!
//! Pure functions over byte slices, so every rule can be tested without a
//! socket. Frames are whole Ethernet frames, as an `AF_PACKET` raw socket
//! reads and writes them.

use std::net::{Ipv4Addr, Ipv6Addr};

pub type Mac = [u8; 6];

pub const BROADCAST: Mac = [0xff; 6];
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

const ETH_HEADER: usize = 14;
const ARP_LEN: usize = 28;
const IPV6_HEADER: usize = 40;
const ICMPV6_NEXT_HEADER: u8 = 58;
const NEIGHBOR_SOLICITATION: u8 = 135;
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
const OPT_SOURCE_LL: u8 = 1;
const OPT_TARGET_LL: u8 = 2;
/// Ethernet's minimum frame without the FCS; shorter frames are padded.
const MIN_FRAME: usize = 60;

/// An ARP request asking who has `target`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpRequest {
    pub sender_mac: Mac,
    /// `0.0.0.0` in an address probe (RFC 5227).
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

/// Reads an Ethernet/IPv4 ARP request. Replies, gratuitous announcements
/// (sender and target the same) and anything malformed give `None`.
pub fn parse_arp_request(frame: &[u8]) -> Option<ArpRequest> {
    if frame.len() < ETH_HEADER + ARP_LEN || u16_at(frame, 12) != ETHERTYPE_ARP {
        return None;
    }
    let arp = &frame[ETH_HEADER..];
    // Ethernet hardware, IPv4 protocol, 6- and 4-byte addresses, request.
    if u16_at(arp, 0) != 1 || u16_at(arp, 2) != 0x0800 || arp[4] != 6 || arp[5] != 4 {
        return None;
    }
    if u16_at(arp, 6) != 1 {
        return None;
    }
    let sender_mac: Mac = arp[8..14].try_into().ok()?;
    let sender_ip = ipv4_at(arp, 14);
    let target_ip = ipv4_at(arp, 24);
    if sender_ip == target_ip {
        return None;
    }
    Some(ArpRequest {
        sender_mac,
        sender_ip,
        target_ip,
    })
}

/// The reply to `req`, saying `req.target_ip` is at `mac`. An address probe
/// (sender `0.0.0.0`) is answered by broadcast, as RFC 5227 expects of the
/// address's owner.
pub fn arp_reply(mac: Mac, req: &ArpRequest) -> Vec<u8> {
    let dst = if req.sender_ip.is_unspecified() {
        BROADCAST
    } else {
        req.sender_mac
    };
    arp_frame(dst, mac, 2, req.target_ip, req.sender_mac, req.sender_ip)
}

/// A gratuitous ARP for `ip` at `mac`, broadcast. Hosts differ in which kind
/// they heed, so the speaker sends both: `reply = false` gives a request
/// (target hardware address zero), `true` a reply.
pub fn gratuitous_arp(mac: Mac, ip: Ipv4Addr, reply: bool) -> Vec<u8> {
    if reply {
        arp_frame(BROADCAST, mac, 2, ip, BROADCAST, ip)
    } else {
        arp_frame(BROADCAST, mac, 1, ip, [0; 6], ip)
    }
}

fn arp_frame(
    dst: Mac,
    src: Mac,
    op: u16,
    sender_ip: Ipv4Addr,
    target_mac: Mac,
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(MIN_FRAME);
    ethernet_header(&mut f, dst, src, ETHERTYPE_ARP);
    f.extend_from_slice(&1u16.to_be_bytes());
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(&[6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&src);
    f.extend_from_slice(&sender_ip.octets());
    f.extend_from_slice(&target_mac);
    f.extend_from_slice(&target_ip.octets());
    f.resize(MIN_FRAME, 0);
    f
}

/// A neighbour solicitation asking for `target`'s link-layer address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighborSolicitation {
    /// The frame's Ethernet source.
    pub sender_mac: Mac,
    /// `::` during duplicate address detection.
    pub sender_ip: Ipv6Addr,
    pub target: Ipv6Addr,
}

/// Reads a neighbour solicitation (RFC 4861 §7.1.1 checks: hop limit 255,
/// code 0, a valid checksum, a unicast target; from `::` only to a
/// solicited-node group and without a source link-layer option).
pub fn parse_neighbor_solicitation(frame: &[u8]) -> Option<NeighborSolicitation> {
    if frame.len() < ETH_HEADER + IPV6_HEADER + 24 || u16_at(frame, 12) != ETHERTYPE_IPV6 {
        return None;
    }
    let ip = &frame[ETH_HEADER..];
    if ip[0] >> 4 != 6 || ip[6] != ICMPV6_NEXT_HEADER || ip[7] != 255 {
        return None;
    }
    let payload_len = usize::from(u16_at(ip, 4));
    let icmp = ip.get(IPV6_HEADER..IPV6_HEADER + payload_len)?;
    if icmp.len() < 24 || icmp[0] != NEIGHBOR_SOLICITATION || icmp[1] != 0 {
        return None;
    }
    let src = ipv6_at(ip, 8);
    let dst = ipv6_at(ip, 24);
    if icmpv6_checksum(&src, &dst, icmp) != 0 {
        return None;
    }
    let target = ipv6_at(icmp, 8);
    if target.is_multicast() || target.is_unspecified() {
        return None;
    }
    let mut options = &icmp[24..];
    while !options.is_empty() {
        let len = usize::from(*options.get(1)?) * 8;
        if len == 0 || len > options.len() {
            return None;
        }
        if options[0] == OPT_SOURCE_LL && src.is_unspecified() {
            return None;
        }
        options = &options[len..];
    }
    if src.is_unspecified() && dst != solicited_node(&target) {
        return None;
    }
    Some(NeighborSolicitation {
        sender_mac: frame[6..12].try_into().ok()?,
        sender_ip: src,
        target,
    })
}

/// The advertisement answering `ns`: solicited and overriding, from the
/// target address itself, with our link-layer address. A solicitation from
/// `::` is answered to all nodes, unsolicited (RFC 4861 §7.2.4).
pub fn neighbor_advertisement(mac: Mac, ns: &NeighborSolicitation) -> Vec<u8> {
    if ns.sender_ip.is_unspecified() {
        unsolicited_neighbor_advertisement(mac, ns.target)
    } else {
        na_frame(mac, ns.sender_mac, ns.sender_ip, ns.target, true)
    }
}

/// An unsolicited advertisement of `target` at `mac` to all nodes
/// (`ff02::1`), with the override flag, so neighbours update their caches.
pub fn unsolicited_neighbor_advertisement(mac: Mac, target: Ipv6Addr) -> Vec<u8> {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    na_frame(mac, multicast_mac(&all_nodes), all_nodes, target, false)
}

fn na_frame(mac: Mac, dst_mac: Mac, dst: Ipv6Addr, target: Ipv6Addr, solicited: bool) -> Vec<u8> {
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[NEIGHBOR_ADVERTISEMENT, 0, 0, 0]);
    // Override, and Solicited when answering.
    icmp.push(if solicited { 0x60 } else { 0x20 });
    icmp.extend_from_slice(&[0, 0, 0]);
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[OPT_TARGET_LL, 1]);
    icmp.extend_from_slice(&mac);
    let sum = icmpv6_checksum(&target, &dst, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = Vec::with_capacity(ETH_HEADER + IPV6_HEADER + icmp.len());
    ethernet_header(&mut f, dst_mac, mac, ETHERTYPE_IPV6);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[ICMPV6_NEXT_HEADER, 255]);
    f.extend_from_slice(&target.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&icmp);
    f
}

/// The solicited-node multicast group of an address (RFC 4291 §2.7.1).
pub fn solicited_node(ip: &Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

/// The Ethernet address an IPv6 multicast group is sent to (RFC 2464 §7).
pub fn multicast_mac(group: &Ipv6Addr) -> Mac {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// The ICMPv6 checksum over the pseudo-header and `icmp`; over a message that
/// carries its checksum, a valid one gives 0.
fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, icmp: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for chunk in bytes.chunks(2) {
            let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(icmp.len() as u32).to_be_bytes());
    add(&[0, 0, 0, ICMPV6_NEXT_HEADER]);
    add(icmp);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ethernet_header(f: &mut Vec<u8>, dst: Mac, src: Mac, ethertype: u16) {
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn ipv4_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

fn ipv6_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(o)
}

/// Formats a MAC the usual way, `02:00:5e:10:00:01`.
pub fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Reads `02:00:5e:10:00:01`.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OURS: Mac = [0x02, 0, 0, 0, 0, 0xaa];
    const THEIRS: Mac = [0x02, 0, 0, 0, 0, 0xbb];

    fn request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
        arp_frame(BROADCAST, THEIRS, 1, sender, [0; 6], target)
    }

    #[test]
    fn arp_request_round_trip_and_reply() {
        let vip = Ipv4Addr::new(192, 0, 2, 10);
        let client = Ipv4Addr::new(192, 0, 2, 1);
        let req = parse_arp_request(&request(client, vip)).unwrap();
        assert_eq!(req.target_ip, vip);
        assert_eq!(req.sender_mac, THEIRS);

        let reply = arp_reply(OURS, &req);
        assert_eq!(reply.len(), MIN_FRAME);
        assert_eq!(&reply[0..6], &THEIRS, "unicast back to the asker");
        assert_eq!(&reply[6..12], &OURS);
        assert_eq!(u16_at(&reply, 20), 2, "a reply");
        assert_eq!(&reply[22..28], &OURS, "sender hardware address");
        assert_eq!(ipv4_at(&reply, 28), vip);
        assert_eq!(ipv4_at(&reply, 38), client);
        // Our own replies are not requests.
        assert_eq!(parse_arp_request(&reply), None);
    }

    #[test]
    fn address_probes_are_answered_by_broadcast() {
        let vip = Ipv4Addr::new(192, 0, 2, 10);
        let req = parse_arp_request(&request(Ipv4Addr::UNSPECIFIED, vip)).unwrap();
        assert_eq!(&arp_reply(OURS, &req)[0..6], &BROADCAST);
    }

    #[test]
    fn gratuitous_arps_are_not_taken_for_requests() {
        let vip = Ipv4Addr::new(192, 0, 2, 10);
        for reply in [false, true] {
            let g = gratuitous_arp(OURS, vip, reply);
            assert_eq!(&g[0..6], &BROADCAST);
            assert_eq!(ipv4_at(&g, 28), vip);
            assert_eq!(ipv4_at(&g, 38), vip);
            assert_eq!(parse_arp_request(&g), None);
        }
    }

    #[test]
    fn malformed_arp_is_ignored() {
        let good = request(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        assert!(parse_arp_request(&good).is_some());
        assert_eq!(parse_arp_request(&good[..41]), None);
        for (at, value) in [(13, 0x00), (14, 9), (16, 0x86), (18, 8), (21, 3)] {
            let mut bad = good.clone();
            bad[at] = value;
            assert_eq!(parse_arp_request(&bad), None, "byte {at} = {value}");
        }
    }

    fn solicitation(src: Ipv6Addr, dst: Ipv6Addr, target: Ipv6Addr, slla: bool) -> Vec<u8> {
        let mut icmp = vec![NEIGHBOR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&target.octets());
        if slla {
            icmp.extend_from_slice(&[OPT_SOURCE_LL, 1]);
            icmp.extend_from_slice(&THEIRS);
        }
        let sum = icmpv6_checksum(&src, &dst, &icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut f = Vec::new();
        ethernet_header(&mut f, multicast_mac(&dst), THEIRS, ETHERTYPE_IPV6);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        f.extend_from_slice(&[ICMPV6_NEXT_HEADER, 255]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(&icmp);
        f
    }

    #[test]
    fn solicitation_parses_and_is_answered() {
        let vip: Ipv6Addr = "fd00::10".parse().unwrap();
        let client: Ipv6Addr = "fe80::1".parse().unwrap();
        let frame = solicitation(client, solicited_node(&vip), vip, true);
        let ns = parse_neighbor_solicitation(&frame).unwrap();
        assert_eq!(ns.target, vip);
        assert_eq!(ns.sender_ip, client);
        assert_eq!(ns.sender_mac, THEIRS);

        let na = neighbor_advertisement(OURS, &ns);
        assert_eq!(&na[0..6], &THEIRS);
        assert_eq!(&na[6..12], &OURS);
        let ip = &na[ETH_HEADER..];
        assert_eq!(ip[7], 255, "hop limit");
        assert_eq!(ipv6_at(ip, 8), vip);
        assert_eq!(ipv6_at(ip, 24), client);
        let icmp = &ip[IPV6_HEADER..];
        assert_eq!(icmp[0], NEIGHBOR_ADVERTISEMENT);
        assert_eq!(icmp[4], 0x60, "solicited and override");
        assert_eq!(ipv6_at(icmp, 8), vip);
        assert_eq!(&icmp[24..26], &[OPT_TARGET_LL, 1]);
        assert_eq!(&icmp[26..32], &OURS);
        assert_eq!(icmpv6_checksum(&vip, &client, icmp), 0);
        assert_eq!(parse_neighbor_solicitation(&na), None);
    }

    #[test]
    fn duplicate_address_detection_is_answered_to_all_nodes() {
        let vip: Ipv6Addr = "fd00::10".parse().unwrap();
        let frame = solicitation(Ipv6Addr::UNSPECIFIED, solicited_node(&vip), vip, false);
        let ns = parse_neighbor_solicitation(&frame).unwrap();
        let na = neighbor_advertisement(OURS, &ns);
        assert_eq!(&na[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(na[ETH_HEADER + IPV6_HEADER + 4], 0x20, "override only");
        // From `::` with a source link-layer option is invalid.
        let bad = solicitation(Ipv6Addr::UNSPECIFIED, solicited_node(&vip), vip, true);
        assert_eq!(parse_neighbor_solicitation(&bad), None);
    }

    #[test]
    fn invalid_solicitations_are_ignored() {
        let vip: Ipv6Addr = "fd00::10".parse().unwrap();
        let client: Ipv6Addr = "fd00::1".parse().unwrap();
        let good = solicitation(client, solicited_node(&vip), vip, true);
        assert!(parse_neighbor_solicitation(&good).is_some());
        // Hop limit, next header, type, a checksum byte, the option length.
        for at in [21, 20, 54, 57, good.len() - 7] {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            assert_eq!(parse_neighbor_solicitation(&bad), None, "byte {at}");
        }
        let mcast = solicitation(
            client,
            solicited_node(&vip),
            "ff02::1".parse().unwrap(),
            false,
        );
        assert_eq!(parse_neighbor_solicitation(&mcast), None);
        assert_eq!(parse_neighbor_solicitation(&good[..70]), None);
    }

    #[test]
    fn solicited_node_groups() {
        let ip: Ipv6Addr = "2001:db8::1:2345:6789".parse().unwrap();
        assert_eq!(
            solicited_node(&ip),
            "ff02::1:ff45:6789".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            multicast_mac(&solicited_node(&ip)),
            [0x33, 0x33, 0xff, 0x45, 0x67, 0x89]
        );
    }

    #[test]
    fn macs_format_and_parse() {
        assert_eq!(format_mac(&OURS), "02:00:00:00:00:aa");
        assert_eq!(parse_mac("02:00:00:00:00:aa\n"), Some(OURS));
        assert_eq!(parse_mac("02:00:00:00:00"), None);
        assert_eq!(parse_mac("02:00:00:00:00:aa:01"), None);
    }

    proptest! {
        /// Whatever arrives on the wire, the parsers never panic.
        #[test]
        fn parsers_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_arp_request(&frame);
            let _ = parse_neighbor_solicitation(&frame);
        }

        /// Flipping bits in a valid solicitation never panics either, and a
        /// frame that still parses still names a unicast target.
        #[test]
        fn mutated_solicitations(at in 0usize..86, bit in 0u8..8) {
            let vip: Ipv6Addr = "fd00::10".parse().unwrap();
            let mut frame = solicitation("fe80::1".parse().unwrap(), solicited_node(&vip), vip, true);
            frame[at] ^= 1 << bit;
            if let Some(ns) = parse_neighbor_solicitation(&frame) {
                prop_assert!(!ns.target.is_multicast());
            }
        }
    }
}
