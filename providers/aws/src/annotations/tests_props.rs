//! Properties: `parse` never panics, every key it reads is documented, and the
//! checked-in reference matches the code.

use std::collections::BTreeSet;

use ferrolb_provider_api::{PortIntent, Protocol, ProviderError, TrafficPolicy};
use proptest::prelude::*;

use super::keys::{ANNOTATIONS, SOURCE_RANGES, TYPE};
use super::tests_support::{ann, port, web_ports};
use super::values::Reader;
use super::{PREFIX, parse, parse_with, reference_markdown};

fn documented() -> BTreeSet<&'static str> {
    ANNOTATIONS.iter().map(|a| a.name).collect()
}

#[test]
fn annotations_read_are_exactly_the_documented_ones() {
    assert_eq!(
        documented().len(),
        ANNOTATIONS.len(),
        "a key is listed twice"
    );
    for policy in [TrafficPolicy::Cluster, TrafficPolicy::Local] {
        let map = ann(&[]);
        let reader = Reader::new(&map);
        parse_with(&reader, &web_ports(), policy, Some(32100)).unwrap();
        assert_eq!(reader.keys_read(), documented(), "{policy:?}");
    }
}

#[test]
fn annotations_keys_share_the_prefix() {
    assert_eq!(TYPE, format!("{PREFIX}type"));
    for a in ANNOTATIONS {
        assert!(
            a.name.starts_with(PREFIX) || a.name == SOURCE_RANGES,
            "{}",
            a.name
        );
        for text in [a.values, a.default, a.peers, a.description] {
            assert!(!text.trim().is_empty(), "{} has an empty doc cell", a.name);
        }
    }
}

#[test]
fn annotations_reference_doc_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/aws-annotations.md");
    let want = reference_markdown();
    if std::env::var("FERROLB_BLESS").as_deref() == Ok("1") {
        std::fs::write(path, &want).expect("write docs/aws-annotations.md");
        return;
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        have == want,
        "docs/aws-annotations.md is out of date with the annotations code; regenerate it \
         with `FERROLB_BLESS=1 cargo test -p ferrolb-aws annotations` and commit the result"
    );
    for a in ANNOTATIONS {
        assert!(
            want.contains(a.name),
            "{} missing from the reference",
            a.name
        );
    }
}

/// Values built from the characters annotation values are made of, so the
/// parser's deeper branches are reached, not only its first check.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9=,*:/. _-]{0,40}",
        "(nlb|ip|instance|internal|internet-facing|true|false|http|https|tcp|ssl|traffic-port|\\*|[0-9]{1,6}|[a-z._]{1,12}=[a-z0-9]{0,4}|10\\.0\\.[0-9]{1,3}\\.[0-9]{1,3}(/[0-9]{1,2})?|arn:aws:acm:x:1:certificate/[a-z]{1,3}|eipalloc-[0-9a-f]{1,4}|subnet-[0-9]{1,2})( ?, ?(http|https|443|80|[0-9]{1,5}|[a-z._]{1,12}=[a-z0-9]{0,4}))*",
    ]
}

fn ports() -> impl Strategy<Value = Vec<PortIntent>> {
    let one = (
        prop_oneof![
            Just(Protocol::Tcp),
            Just(Protocol::Udp),
            Just(Protocol::Sctp)
        ],
        prop_oneof![Just(80u16), Just(443), Just(53)],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(protocol, number, named, has_node_port)| {
            let name = if named {
                format!("p{number}")
            } else {
                String::new()
            };
            let mut p = port(&name, protocol, number, 30000 + number);
            if !has_node_port {
                p.node_port = None;
            }
            p
        });
    prop::collection::vec(one, 0..4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn annotations_parse_never_panics(
        values in prop::collection::vec(
            (prop::sample::select(ANNOTATIONS).prop_map(|a| a.name), value()),
            0..8,
        ),
        ports in ports(),
        local in any::<bool>(),
        hcnp in prop::option::of(1u16..),
    ) {
        let map = values.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let policy = if local { TrafficPolicy::Local } else { TrafficPolicy::Cluster };
        match parse(&map, &ports, policy, hcnp) {
            Ok(opts) => {
                let hc = opts.health_check;
                prop_assert!((5..=300).contains(&hc.interval_secs));
                prop_assert!((2..=120).contains(&hc.timeout_secs));
                prop_assert!((2..=10).contains(&hc.healthy_threshold));
                prop_assert!((2..=10).contains(&hc.unhealthy_threshold));
            }
            Err(ProviderError::Invalid { field, reason }) => {
                prop_assert!(!reason.is_empty());
                let known = field.starts_with("spec.")
                    || field
                        .strip_prefix("metadata.annotations[")
                        .and_then(|f| f.strip_suffix(']'))
                        .is_some_and(|key| documented().contains(key));
                prop_assert!(known, "unexpected field {field}");
            }
            Err(other) => prop_assert!(false, "not an Invalid error: {other:?}"),
        }
    }
}
