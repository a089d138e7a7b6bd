//! BGP-4 messages (RFC 4271) with 4-octet AS numbers (RFC 6793),
//! multiprotocol IPv6 unicast (RFC 4760, RFC 2545), communities (RFC 1997)
//! and large communities (RFC 8092): encoding what the speaker sends and
//! decoding what a peer sends.
//!
//! Decoding never panics, whatever the bytes: a malformed message is a
//! [`DecodeError`] that names the NOTIFICATION the session answers it with.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

const MARKER: [u8; 16] = [0xff; 16];
const HEADER: usize = 19;
pub const MAX_MESSAGE: usize = 4096;

const OPEN: u8 = 1;
const UPDATE: u8 = 2;
const NOTIFICATION: u8 = 3;
const KEEPALIVE: u8 = 4;

pub const AFI_IPV4: u16 = 1;
pub const AFI_IPV6: u16 = 2;
pub const SAFI_UNICAST: u8 = 1;
/// The AS number an OPEN carries when the real one needs four octets.
pub const AS_TRANS: u16 = 23456;

const ATTR_OPTIONAL: u8 = 0x80;
const ATTR_TRANSITIVE: u8 = 0x40;
const ATTR_EXTENDED: u8 = 0x10;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    /// The speaker's AS, four octets wide (sent in the capability; the
    /// two-octet field carries it or [`AS_TRANS`]).
    pub asn: u32,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// What the speaker offers: IPv4 and IPv6 unicast, and its AS in four
    /// octets.
    pub fn capabilities(asn: u32) -> Vec<Capability> {
        vec![
            Capability::MultiProtocol {
                afi: AFI_IPV4,
                safi: SAFI_UNICAST,
            },
            Capability::MultiProtocol {
                afi: AFI_IPV6,
                safi: SAFI_UNICAST,
            },
            Capability::FourOctetAsn(asn),
        ]
    }

    /// The AS the peer really has: from its 4-octet capability, else the
    /// two-octet field.
    pub fn four_octet_asn(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAsn(asn) => Some(*asn),
            _ => None,
        })
    }

    pub fn supports(&self, afi: u16, safi: u8) -> bool {
        self.capabilities
            .contains(&Capability::MultiProtocol { afi, safi })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Capability {
    MultiProtocol { afi: u16, safi: u8 },
    RouteRefresh,
    FourOctetAsn(u32),
    Unknown { code: u8, value: Vec<u8> },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update {
    pub withdrawn: Vec<Ipv4Net>,
    pub attributes: Vec<Attribute>,
    pub nlri: Vec<Ipv4Net>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attribute {
    /// 0 IGP, 1 EGP, 2 incomplete.
    Origin(u8),
    /// AS_SEQUENCE segments of 4-octet AS numbers.
    AsPath(Vec<Vec<u32>>),
    NextHop(Ipv4Addr),
    Med(u32),
    LocalPref(u32),
    Communities(Vec<u32>),
    LargeCommunities(Vec<[u32; 3]>),
    MpReach {
        next_hops: Vec<Ipv6Addr>,
        nlri: Vec<Ipv6Net>,
    },
    MpUnreach {
        withdrawn: Vec<Ipv6Net>,
    },
    Unknown {
        flags: u8,
        code: u8,
        value: Vec<u8>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: u8, subcode: u8) -> Self {
        Self {
            code,
            subcode,
            data: Vec::new(),
        }
    }
}

impl std::fmt::Display for Notification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match (self.code, self.subcode) {
            (1, _) => "message header error",
            (2, 2) => "bad peer AS",
            (2, 6) => "unacceptable hold time",
            (2, _) => "OPEN message error",
            (3, _) => "UPDATE message error",
            (4, _) => "hold timer expired",
            (5, _) => "finite state machine error",
            (6, 2) => "administrative shutdown",
            (6, 4) => "administrative reset",
            (6, _) => "cease",
            _ => "unknown error",
        };
        write!(f, "{what} ({}/{})", self.code, self.subcode)
    }
}

/// Why a message could not be read, and the NOTIFICATION that says so.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{why} (answered with NOTIFICATION {code}/{subcode})")]
pub struct DecodeError {
    pub code: u8,
    pub subcode: u8,
    pub why: String,
}

fn header_error(subcode: u8, why: impl Into<String>) -> DecodeError {
    DecodeError {
        code: 1,
        subcode,
        why: why.into(),
    }
}

fn open_error(subcode: u8, why: impl Into<String>) -> DecodeError {
    DecodeError {
        code: 2,
        subcode,
        why: why.into(),
    }
}

fn update_error(subcode: u8, why: impl Into<String>) -> DecodeError {
    DecodeError {
        code: 3,
        subcode,
        why: why.into(),
    }
}

/// Reads one message off the front of `buf`: `Ok(None)` until the whole
/// message is there, else the message and how many bytes it took.
pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, DecodeError> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    if buf[..16] != MARKER {
        return Err(header_error(1, "the header's marker is not all ones"));
    }
    let len = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
    if !(HEADER..=MAX_MESSAGE).contains(&len) {
        return Err(header_error(2, format!("bad message length {len}")));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let body = &buf[HEADER..len];
    let msg = match buf[18] {
        OPEN => Message::Open(decode_open(body)?),
        UPDATE => Message::Update(decode_update(body)?),
        NOTIFICATION => {
            if body.len() < 2 {
                return Err(header_error(2, "NOTIFICATION shorter than 2 bytes"));
            }
            Message::Notification(Notification {
                code: body[0],
                subcode: body[1],
                data: body[2..].to_vec(),
            })
        }
        KEEPALIVE => {
            if !body.is_empty() {
                return Err(header_error(2, "KEEPALIVE with a body"));
            }
            Message::Keepalive
        }
        t => return Err(header_error(3, format!("unknown message type {t}"))),
    };
    Ok(Some((msg, len)))
}

/// A cursor over a message's bytes; running out is an error of `make`.
struct Reader<'a> {
    b: &'a [u8],
    make: fn(u8, String) -> DecodeError,
    subcode: u8,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if self.b.len() < n {
            return Err((self.make)(self.subcode, format!("{what} is cut short")));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

fn decode_open(body: &[u8]) -> Result<Open, DecodeError> {
    let mut r = Reader {
        b: body,
        make: |s, w| open_error(s, w),
        subcode: 0,
    };
    let version = r.u8("version")?;
    if version != 4 {
        return Err(open_error(1, format!("BGP version {version}")));
    }
    let my_as = r.u16("my AS")?;
    let hold_time = r.u16("hold time")?;
    if hold_time == 1 || hold_time == 2 {
        return Err(open_error(6, format!("hold time {hold_time}")));
    }
    let router_id = Ipv4Addr::from(r.u32("BGP identifier")?);
    let params_len = usize::from(r.u8("optional parameters length")?);
    let mut params = Reader {
        b: r.take(params_len, "optional parameters")?,
        make: |s, w| open_error(s, w),
        subcode: 0,
    };
    let mut capabilities = Vec::new();
    while !params.b.is_empty() {
        let kind = params.u8("parameter type")?;
        let len = usize::from(params.u8("parameter length")?);
        let value = params.take(len, "parameter")?;
        if kind != 2 {
            return Err(open_error(
                4,
                format!("unsupported optional parameter {kind}"),
            ));
        }
        let mut caps = Reader {
            b: value,
            make: |s, w| open_error(s, w),
            subcode: 0,
        };
        while !caps.b.is_empty() {
            let code = caps.u8("capability code")?;
            let len = usize::from(caps.u8("capability length")?);
            let mut v = Reader {
                b: caps.take(len, "capability")?,
                make: |s, w| open_error(s, w),
                subcode: 0,
            };
            capabilities.push(match (code, len) {
                (1, 4) => {
                    let afi = v.u16("AFI")?;
                    v.u8("reserved")?;
                    Capability::MultiProtocol {
                        afi,
                        safi: v.u8("SAFI")?,
                    }
                }
                (2, 0) => Capability::RouteRefresh,
                (65, 4) => Capability::FourOctetAsn(v.u32("AS")?),
                _ => Capability::Unknown {
                    code,
                    value: v.b.to_vec(),
                },
            });
        }
    }
    let open = Open {
        asn: u32::from(my_as),
        hold_time,
        router_id,
        capabilities,
    };
    Ok(Open {
        asn: open.four_octet_asn().unwrap_or(open.asn),
        ..open
    })
}

fn decode_prefixes_v4(b: &[u8]) -> Result<Vec<Ipv4Net>, DecodeError> {
    decode_prefixes(b, 32)?
        .into_iter()
        .map(|(o, len)| {
            Ipv4Net::new(Ipv4Addr::new(o[0], o[1], o[2], o[3]), len)
                .map_err(|_| update_error(10, "bad IPv4 prefix"))
        })
        .collect()
}

fn decode_prefixes_v6(b: &[u8]) -> Result<Vec<Ipv6Net>, DecodeError> {
    decode_prefixes(b, 128)?
        .into_iter()
        .map(|(o, len)| {
            Ipv6Net::new(Ipv6Addr::from(o), len).map_err(|_| update_error(10, "bad IPv6 prefix"))
        })
        .collect()
}

/// `(length, prefix)` pairs, each prefix in as few octets as its length
/// needs: the octets (zero-padded) and the length.
fn decode_prefixes(mut b: &[u8], max: u8) -> Result<Vec<([u8; 16], u8)>, DecodeError> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = b.split_first() {
        if len > max {
            return Err(update_error(10, format!("prefix length {len}")));
        }
        let n = usize::from(len).div_ceil(8);
        if rest.len() < n {
            return Err(update_error(10, "prefix is cut short"));
        }
        let mut octets = [0u8; 16];
        octets[..n].copy_from_slice(&rest[..n]);
        out.push((octets, len));
        b = &rest[n..];
    }
    Ok(out)
}

fn decode_update(body: &[u8]) -> Result<Update, DecodeError> {
    let mut r = Reader {
        b: body,
        make: |s, w| update_error(s, w),
        subcode: 1,
    };
    let wlen = usize::from(r.u16("withdrawn routes length")?);
    let withdrawn = decode_prefixes_v4(r.take(wlen, "withdrawn routes")?)?;
    let alen = usize::from(r.u16("path attributes length")?);
    let mut attrs = Reader {
        b: r.take(alen, "path attributes")?,
        make: |s, w| update_error(s, w),
        subcode: 1,
    };
    let mut attributes = Vec::new();
    while !attrs.b.is_empty() {
        let flags = attrs.u8("attribute flags")?;
        let code = attrs.u8("attribute type")?;
        let len = if flags & ATTR_EXTENDED != 0 {
            usize::from(attrs.u16("attribute length")?)
        } else {
            usize::from(attrs.u8("attribute length")?)
        };
        attrs.subcode = 5;
        let value = attrs.take(len, "attribute")?;
        attrs.subcode = 1;
        attributes.push(decode_attribute(flags, code, value)?);
    }
    let nlri = decode_prefixes_v4(r.b)?;
    Ok(Update {
        withdrawn,
        attributes,
        nlri,
    })
}

fn decode_attribute(flags: u8, code: u8, value: &[u8]) -> Result<Attribute, DecodeError> {
    let mut v = Reader {
        b: value,
        make: |s, w| update_error(s, w),
        subcode: 5,
    };
    let fixed = |n: usize| {
        if value.len() == n {
            Ok(())
        } else {
            Err(update_error(
                5,
                format!("attribute {code} has length {}", value.len()),
            ))
        }
    };
    Ok(match code {
        1 => {
            fixed(1)?;
            Attribute::Origin(v.u8("origin")?)
        }
        2 => {
            let mut segments = Vec::new();
            while !v.b.is_empty() {
                let _kind = v.u8("segment type")?;
                let n = usize::from(v.u8("segment length")?);
                let mut seg = Vec::with_capacity(n);
                for _ in 0..n {
                    seg.push(v.u32("AS number")?);
                }
                segments.push(seg);
            }
            Attribute::AsPath(segments)
        }
        3 => {
            fixed(4)?;
            Attribute::NextHop(Ipv4Addr::from(v.u32("next hop")?))
        }
        4 => {
            fixed(4)?;
            Attribute::Med(v.u32("MED")?)
        }
        5 => {
            fixed(4)?;
            Attribute::LocalPref(v.u32("local preference")?)
        }
        8 => {
            if !value.len().is_multiple_of(4) {
                return Err(update_error(5, "communities length"));
            }
            let mut c = Vec::new();
            while !v.b.is_empty() {
                c.push(v.u32("community")?);
            }
            Attribute::Communities(c)
        }
        32 => {
            if !value.len().is_multiple_of(12) {
                return Err(update_error(5, "large communities length"));
            }
            let mut c = Vec::new();
            while !v.b.is_empty() {
                c.push([v.u32("global")?, v.u32("local 1")?, v.u32("local 2")?]);
            }
            Attribute::LargeCommunities(c)
        }
        14 if value.len() >= 5 && u16::from_be_bytes([value[0], value[1]]) == AFI_IPV6 => {
            v.take(3, "AFI/SAFI")?;
            let nh_len = usize::from(v.u8("next hop length")?);
            let nh = v.take(nh_len, "next hop")?;
            if nh_len != 16 && nh_len != 32 {
                return Err(update_error(9, format!("IPv6 next hop length {nh_len}")));
            }
            let next_hops = nh
                .chunks(16)
                .map(|c| {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(c);
                    Ipv6Addr::from(a)
                })
                .collect();
            v.u8("reserved")?;
            Attribute::MpReach {
                next_hops,
                nlri: decode_prefixes_v6(v.b)?,
            }
        }
        15 if value.len() >= 3 && u16::from_be_bytes([value[0], value[1]]) == AFI_IPV6 => {
            v.take(3, "AFI/SAFI")?;
            Attribute::MpUnreach {
                withdrawn: decode_prefixes_v6(v.b)?,
            }
        }
        _ => Attribute::Unknown {
            flags,
            code,
            value: value.to_vec(),
        },
    })
}

/// The message on the wire.
pub fn encode(msg: &Message) -> Vec<u8> {
    let (kind, body) = match msg {
        Message::Open(o) => (OPEN, encode_open(o)),
        Message::Update(u) => (UPDATE, encode_update(u)),
        Message::Notification(n) => {
            let mut b = vec![n.code, n.subcode];
            b.extend_from_slice(&n.data);
            (NOTIFICATION, b)
        }
        Message::Keepalive => (KEEPALIVE, Vec::new()),
    };
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(&MARKER);
    out.extend_from_slice(&((HEADER + body.len()) as u16).to_be_bytes());
    out.push(kind);
    out.extend_from_slice(&body);
    out
}

fn encode_open(o: &Open) -> Vec<u8> {
    let mut caps = Vec::new();
    for c in &o.capabilities {
        match c {
            Capability::MultiProtocol { afi, safi } => {
                caps.extend_from_slice(&[1, 4]);
                caps.extend_from_slice(&afi.to_be_bytes());
                caps.extend_from_slice(&[0, *safi]);
            }
            Capability::RouteRefresh => caps.extend_from_slice(&[2, 0]),
            Capability::FourOctetAsn(asn) => {
                caps.extend_from_slice(&[65, 4]);
                caps.extend_from_slice(&asn.to_be_bytes());
            }
            Capability::Unknown { code, value } => {
                caps.extend_from_slice(&[*code, value.len() as u8]);
                caps.extend_from_slice(value);
            }
        }
    }
    let mut b = vec![4];
    let two_octet = u16::try_from(o.asn).unwrap_or(AS_TRANS);
    b.extend_from_slice(&two_octet.to_be_bytes());
    b.extend_from_slice(&o.hold_time.to_be_bytes());
    b.extend_from_slice(&o.router_id.octets());
    if caps.is_empty() {
        b.push(0);
    } else {
        b.push(caps.len() as u8 + 2);
        b.extend_from_slice(&[2, caps.len() as u8]);
        b.extend_from_slice(&caps);
    }
    b
}

fn encode_prefix(out: &mut Vec<u8>, octets: &[u8], len: u8) {
    out.push(len);
    out.extend_from_slice(&octets[..usize::from(len).div_ceil(8)]);
}

fn encode_update(u: &Update) -> Vec<u8> {
    let mut withdrawn = Vec::new();
    for p in &u.withdrawn {
        encode_prefix(&mut withdrawn, &p.network().octets(), p.prefix_len());
    }
    let mut attrs = Vec::new();
    for a in &u.attributes {
        encode_attribute(&mut attrs, a);
    }
    let mut b = Vec::new();
    b.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    b.extend_from_slice(&withdrawn);
    b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    b.extend_from_slice(&attrs);
    for p in &u.nlri {
        encode_prefix(&mut b, &p.network().octets(), p.prefix_len());
    }
    b
}

fn encode_attribute(out: &mut Vec<u8>, a: &Attribute) {
    let mut v = Vec::new();
    let (flags, code) = match a {
        Attribute::Origin(o) => {
            v.push(*o);
            (ATTR_TRANSITIVE, 1)
        }
        Attribute::AsPath(segments) => {
            for seg in segments {
                v.extend_from_slice(&[2, seg.len() as u8]);
                for asn in seg {
                    v.extend_from_slice(&asn.to_be_bytes());
                }
            }
            (ATTR_TRANSITIVE, 2)
        }
        Attribute::NextHop(nh) => {
            v.extend_from_slice(&nh.octets());
            (ATTR_TRANSITIVE, 3)
        }
        Attribute::Med(m) => {
            v.extend_from_slice(&m.to_be_bytes());
            (ATTR_OPTIONAL, 4)
        }
        Attribute::LocalPref(p) => {
            v.extend_from_slice(&p.to_be_bytes());
            (ATTR_TRANSITIVE, 5)
        }
        Attribute::Communities(c) => {
            for x in c {
                v.extend_from_slice(&x.to_be_bytes());
            }
            (ATTR_OPTIONAL | ATTR_TRANSITIVE, 8)
        }
        Attribute::LargeCommunities(c) => {
            for x in c.iter().flatten() {
                v.extend_from_slice(&x.to_be_bytes());
            }
            (ATTR_OPTIONAL | ATTR_TRANSITIVE, 32)
        }
        Attribute::MpReach { next_hops, nlri } => {
            v.extend_from_slice(&AFI_IPV6.to_be_bytes());
            v.push(SAFI_UNICAST);
            v.push((next_hops.len() * 16) as u8);
            for nh in next_hops {
                v.extend_from_slice(&nh.octets());
            }
            v.push(0);
            for p in nlri {
                encode_prefix(&mut v, &p.network().octets(), p.prefix_len());
            }
            (ATTR_OPTIONAL, 14)
        }
        Attribute::MpUnreach { withdrawn } => {
            v.extend_from_slice(&AFI_IPV6.to_be_bytes());
            v.push(SAFI_UNICAST);
            for p in withdrawn {
                encode_prefix(&mut v, &p.network().octets(), p.prefix_len());
            }
            (ATTR_OPTIONAL, 15)
        }
        Attribute::Unknown { flags, code, value } => {
            v.extend_from_slice(value);
            (*flags & !ATTR_EXTENDED, *code)
        }
    };
    if v.len() > 255 {
        out.extend_from_slice(&[flags | ATTR_EXTENDED, code]);
        out.extend_from_slice(&(v.len() as u16).to_be_bytes());
    } else {
        out.extend_from_slice(&[flags, code, v.len() as u8]);
    }
    out.extend_from_slice(&v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(m: Message) {
        let wire = encode(&m);
        assert_eq!(decode(&wire), Ok(Some((m, wire.len()))));
        // Any shorter prefix is incomplete, never an error or a panic.
        for n in 0..wire.len() {
            assert_eq!(decode(&wire[..n]), Ok(None), "{n} bytes");
        }
    }

    fn open(asn: u32) -> Open {
        Open {
            asn,
            hold_time: 90,
            router_id: Ipv4Addr::new(10, 0, 0, 1),
            capabilities: Open::capabilities(asn),
        }
    }

    #[test]
    fn open_with_a_four_octet_asn_sends_as_trans() {
        let o = open(4_200_000_001);
        let wire = encode(&Message::Open(o.clone()));
        assert_eq!(u16::from_be_bytes([wire[20], wire[21]]), AS_TRANS);
        round_trip(Message::Open(o.clone()));
        assert!(o.supports(AFI_IPV6, SAFI_UNICAST));
        round_trip(Message::Open(open(64512)));
    }

    #[test]
    fn updates_round_trip() {
        round_trip(Message::Update(Update {
            withdrawn: vec!["10.0.0.7/32".parse().unwrap()],
            attributes: vec![
                Attribute::Origin(0),
                Attribute::AsPath(vec![vec![64512]]),
                Attribute::NextHop(Ipv4Addr::new(10, 0, 0, 11)),
                Attribute::LocalPref(150),
                Attribute::Communities(vec![(64512 << 16) | 100]),
                Attribute::LargeCommunities(vec![[4_200_000_001, 1, 2]]),
            ],
            nlri: vec![
                "198.51.100.10/32".parse().unwrap(),
                "198.51.100.0/24".parse().unwrap(),
                "0.0.0.0/0".parse().unwrap(),
            ],
        }));
        round_trip(Message::Update(Update {
            attributes: vec![
                Attribute::Origin(0),
                Attribute::AsPath(vec![]),
                Attribute::MpReach {
                    next_hops: vec!["fd00::11".parse().unwrap()],
                    nlri: vec!["fd00:100::10/128".parse().unwrap()],
                },
            ],
            ..Default::default()
        }));
        round_trip(Message::Update(Update {
            attributes: vec![Attribute::MpUnreach {
                withdrawn: vec!["fd00:100::10/128".parse().unwrap()],
            }],
            ..Default::default()
        }));
        round_trip(Message::Keepalive);
        round_trip(Message::Notification(Notification {
            code: 6,
            subcode: 2,
            data: b"bye".to_vec(),
        }));
    }

    #[test]
    fn a_long_attribute_uses_the_extended_length() {
        let communities: Vec<u32> = (0..100).collect();
        let m = Message::Update(Update {
            attributes: vec![Attribute::Communities(communities)],
            ..Default::default()
        });
        let wire = encode(&m);
        assert_eq!(wire[23] & ATTR_EXTENDED, ATTR_EXTENDED);
        round_trip(m);
    }

    #[test]
    fn malformed_messages_name_their_notification() {
        let mut bad = encode(&Message::Keepalive);
        bad[0] = 0;
        assert_eq!(decode(&bad).unwrap_err().code, 1);
        let mut bad = encode(&Message::Keepalive);
        bad[17] = 18;
        assert_eq!(decode(&bad).unwrap_err().subcode, 2, "length below 19");
        let mut bad = encode(&Message::Keepalive);
        bad[18] = 9;
        assert_eq!(decode(&bad).unwrap_err().subcode, 3, "unknown type");
        let mut bad = encode(&Message::Open(open(65001)));
        bad[19] = 3;
        assert_eq!(
            (
                decode(&bad).unwrap_err().code,
                decode(&bad).unwrap_err().subcode
            ),
            (2, 1),
            "version 3"
        );
        let mut bad = encode(&Message::Open(open(65001)));
        bad[22..24].copy_from_slice(&2u16.to_be_bytes());
        assert_eq!(decode(&bad).unwrap_err().subcode, 6, "hold time 2");
        // An UPDATE whose attribute claims more bytes than there are.
        let mut bad = encode(&Message::Update(Update {
            attributes: vec![Attribute::LocalPref(1)],
            ..Default::default()
        }));
        let at = HEADER + 2 + 2 + 2;
        bad[at] = 200;
        assert_eq!(decode(&bad).unwrap_err().code, 3);
    }

    fn arb_v4() -> impl Strategy<Value = Ipv4Net> {
        (any::<u32>(), 0u8..=32)
            .prop_map(|(a, l)| Ipv4Net::new(Ipv4Addr::from(a), l).unwrap().trunc())
    }

    fn arb_v6() -> impl Strategy<Value = Ipv6Net> {
        (any::<u128>(), 0u8..=128)
            .prop_map(|(a, l)| Ipv6Net::new(Ipv6Addr::from(a), l).unwrap().trunc())
    }

    proptest! {
        /// Garbage never panics the decoder.
        #[test]
        fn decode_never_panics(mut b in proptest::collection::vec(any::<u8>(), 0..600), fix_header in any::<bool>()) {
            if fix_header && b.len() >= HEADER {
                b[..16].copy_from_slice(&MARKER);
                let len = b.len() as u16;
                b[16..18].copy_from_slice(&len.to_be_bytes());
            }
            let _ = decode(&b);
        }

        /// Bit flips in a valid UPDATE never panic the decoder.
        #[test]
        fn mutated_updates_never_panic(at in 0usize..80, bit in 0u8..8) {
            let mut wire = encode(&Message::Update(Update {
                withdrawn: vec!["10.0.0.7/32".parse().unwrap()],
                attributes: vec![
                    Attribute::Origin(0),
                    Attribute::AsPath(vec![vec![64512, 64513]]),
                    Attribute::NextHop(Ipv4Addr::new(10, 0, 0, 11)),
                    Attribute::MpReach { next_hops: vec!["fd00::1".parse().unwrap()], nlri: vec!["fd00::/64".parse().unwrap()] },
                ],
                nlri: vec!["198.51.100.10/32".parse().unwrap()],
            }));
            let at = at % wire.len();
            wire[at] ^= 1 << bit;
            let _ = decode(&wire);
        }

        /// Every UPDATE we can build reads back the same.
        #[test]
        fn updates_round_trip_for_any_prefixes(
            withdrawn in proptest::collection::vec(arb_v4(), 0..20),
            nlri in proptest::collection::vec(arb_v4(), 0..20),
            v6 in proptest::collection::vec(arb_v6(), 0..10),
            local_pref in any::<u32>(),
            communities in proptest::collection::vec(any::<u32>(), 0..80),
        ) {
            let m = Message::Update(Update {
                withdrawn,
                attributes: vec![
                    Attribute::Origin(0),
                    Attribute::LocalPref(local_pref),
                    Attribute::Communities(communities),
                    Attribute::MpReach { next_hops: vec!["fd00::1".parse().unwrap()], nlri: v6 },
                ],
                nlri,
            });
            let wire = encode(&m);
            prop_assert_eq!(decode(&wire), Ok(Some((m, wire.len()))));
        }
    }
}
