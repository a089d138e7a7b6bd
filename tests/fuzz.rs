//! Fuzzing of the parsers that read what users write: IPPool address
//! entries, the requested-address annotation and `spec.loadBalancerIP`, the
//! bare-metal pool and sharing annotations, and the AWS annotations.
//!
//! Each target starts from a corpus checked in under `fuzz/corpus/` (one
//! JSON value per line: the inputs that have mattered, from the bad-input
//! catalogue and the peers' documented formats) and feeds the parser every
//! entry as it is, then mutations of them: characters inserted, replaced and
//! deleted, spans repeated, entries spliced together. The properties are
//! the same for every target: no panic, and an error names the field the
//! user wrote and stays short enough for an Event note.
//!
//! CI runs a short pass (`FUZZ_CASES`, 512 mutated inputs per target by
//! default); a longer run is `FUZZ_CASES=200000 cargo test --release --test fuzz`.
//! proptest writes a failing input, shrunk, to `tests/fuzz.proptest-regressions`;
//! checked in, it is replayed first on every later run.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::LazyLock;

use ferrolb::intent::{LOAD_BALANCER_IPS, METALLB_LOAD_BALANCER_IPS, requested_addresses};
use ferrolb_aws::annotations::{ANNOTATIONS, parse as parse_aws};
use ferrolb_baremetal::allocator::{AddrRange, pool_from_spec};
use ferrolb_baremetal::annotations::{ALLOW_SHARED_IP, POOL, parse as parse_baremetal};
use ferrolb_baremetal::crd::IPPoolSpec;
use ferrolb_provider_api::{IpFamily, PortIntent, Protocol, ProviderError, TrafficPolicy, quote};
use proptest::prelude::*;
use proptest::test_runner::Config;

/// Event notes are cut at 1,024 bytes; a reason must leave room for the
/// words around it.
const MAX_REASON: usize = 600;

fn corpus(name: &str) -> Vec<serde_json::Value> {
    let path = format!("{}/fuzz/corpus/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{path}: {l}: {e}")))
        .collect()
}

fn strings(name: &str) -> Vec<String> {
    corpus(name)
        .into_iter()
        .map(|v| v.as_str().expect("a JSON string").to_string())
        .collect()
}

static POOL_ENTRIES: LazyLock<Vec<String>> = LazyLock::new(|| strings("pool-entries.txt"));
static ADDRESSES: LazyLock<Vec<String>> = LazyLock::new(|| strings("load-balancer-ips.txt"));
static NAMES: LazyLock<Vec<String>> = LazyLock::new(|| strings("annotation-values.txt"));
static AWS: LazyLock<Vec<(String, String)>> = LazyLock::new(|| {
    corpus("aws-annotations.txt")
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("a [key, value] pair"))
        .collect()
});

/// One edit of an input; positions are taken modulo its length.
#[derive(Clone, Debug)]
enum Edit {
    Insert(usize, char),
    Replace(usize, char),
    Delete(usize, usize),
    Repeat(usize, usize, u8),
    /// Appends the start of another corpus entry.
    Splice(usize, usize),
}

/// Characters the parsers branch on, and any other now and then.
fn character() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::sample::select(
            "0123456789abcdefABCDEF.:/-,= %[]\t\n_".chars().collect::<Vec<_>>()
        ),
        1 => any::<char>(),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), character()).prop_map(|(at, c)| Edit::Insert(at, c)),
        (any::<usize>(), character()).prop_map(|(at, c)| Edit::Replace(at, c)),
        (any::<usize>(), 1usize..8).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), 1usize..6, 2u8..6).prop_map(|(at, n, k)| Edit::Repeat(at, n, k)),
        (any::<usize>(), any::<usize>()).prop_map(|(other, n)| Edit::Splice(other, n)),
    ]
}

fn apply(input: &str, edits: &[Edit], corpus: &[String]) -> String {
    let mut chars: Vec<char> = input.chars().collect();
    for edit in edits {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
        match *edit {
            Edit::Insert(i, c) => chars.insert(at(i, chars.len() + 1), c),
            Edit::Replace(i, c) if !chars.is_empty() => {
                let i = at(i, chars.len());
                chars[i] = c;
            }
            Edit::Delete(i, n) if !chars.is_empty() => {
                let i = at(i, chars.len());
                chars.drain(i..(i + n).min(chars.len()));
            }
            Edit::Repeat(i, n, k) if !chars.is_empty() => {
                let i = at(i, chars.len());
                let span: Vec<char> = chars[i..(i + n).min(chars.len())].to_vec();
                for _ in 1..k {
                    chars.splice(i..i, span.iter().copied());
                }
            }
            Edit::Splice(other, n) => {
                let other: Vec<char> = corpus[other % corpus.len()].chars().collect();
                chars.extend(other.iter().take(n % (other.len() + 1)));
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

/// An entry of `corpus`, unchanged a quarter of the time, else edited.
fn mutated(corpus: &'static LazyLock<Vec<String>>) -> impl Strategy<Value = String> {
    let len = corpus.len();
    (
        0..len,
        prop_oneof![1 => Just(Vec::new()), 3 => prop::collection::vec(edit(), 1..6)],
    )
        .prop_map(move |(i, edits)| apply(&corpus[i], &edits, corpus))
}

fn config() -> Config {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    Config {
        cases,
        ..Config::default()
    }
}

fn check_pool_entry(entry: &str) -> Result<(), TestCaseError> {
    match AddrRange::parse(entry) {
        Ok(range) => {
            prop_assert!(range.start() <= range.end());
            prop_assert!(range.contains(&range.start()));
            prop_assert!(range.contains(&range.end()));
            prop_assert!(!range.is_empty());
        }
        Err(why) => {
            let quoted = format!("{}:", quote(entry.trim()));
            prop_assert!(
                why.starts_with(&quoted),
                "{why:?} does not start with {quoted}"
            );
        }
    }
    let spec = IPPoolSpec {
        addresses: vec!["192.0.2.0/28".into(), entry.to_string()],
        auto_assign: true,
        ..Default::default()
    };
    match pool_from_spec("fuzz", &spec) {
        Ok(pool) => {
            let first: IpAddr = "192.0.2.0".parse().unwrap();
            prop_assert!(pool.contains(&first));
        }
        Err(problems) => {
            prop_assert!(!problems.is_empty());
            for p in &problems {
                prop_assert!(p.starts_with("spec.addresses["), "{p:?} names no field");
                prop_assert!(p.len() <= MAX_REASON, "{} bytes", p.len());
            }
        }
    }
    Ok(())
}

fn families(pick: u8) -> &'static [IpFamily] {
    match pick % 3 {
        0 => &[IpFamily::V4],
        1 => &[IpFamily::V6],
        _ => &[IpFamily::V4, IpFamily::V6],
    }
}

fn check_requested(
    value: &str,
    in_spec: bool,
    metallb: bool,
    pick: u8,
) -> Result<(), TestCaseError> {
    let families = families(pick);
    let key = if metallb {
        METALLB_LOAD_BALANCER_IPS
    } else {
        LOAD_BALANCER_IPS
    };
    let (spec, annotations) = if in_spec {
        (Some(value), BTreeMap::new())
    } else {
        (None, BTreeMap::from([(key.to_string(), value.to_string())]))
    };
    match requested_addresses(spec, &annotations, families) {
        Ok(ips) => {
            prop_assert!(ips.len() <= families.len());
            for ip in &ips {
                let family = if ip.is_ipv4() {
                    IpFamily::V4
                } else {
                    IpFamily::V6
                };
                prop_assert!(
                    families.contains(&family),
                    "{ip} is of a family the Service lacks"
                );
            }
            if ips.len() == 2 {
                prop_assert_ne!(ips[0].is_ipv4(), ips[1].is_ipv4(), "two of one family");
            }
        }
        Err(e) => {
            let field = if in_spec {
                "spec.loadBalancerIP".to_string()
            } else {
                format!("metadata.annotations[{key}]")
            };
            prop_assert_eq!(&e.field, &field);
            prop_assert!(e.reason.len() <= MAX_REASON, "{} bytes", e.reason.len());
        }
    }
    Ok(())
}

fn check_baremetal_annotation(key: &str, value: &str) -> Result<(), TestCaseError> {
    let annotations = BTreeMap::from([(key.to_string(), value.to_string())]);
    match parse_baremetal(&annotations) {
        Ok(requests) => {
            let got = requests.pool.or(requests.sharing_key).unwrap_or_default();
            prop_assert_eq!(got.as_str(), value.trim());
            prop_assert!(!got.is_empty() && got.len() <= 253);
            prop_assert!(got.chars().all(|c| !c.is_control()));
        }
        Err(ProviderError::Invalid { field, reason }) => {
            prop_assert_eq!(field, format!("metadata.annotations[{key}]"));
            prop_assert!(reason.len() <= MAX_REASON, "{} bytes", reason.len());
        }
        Err(other) => prop_assert!(false, "not an Invalid error: {other:?}"),
    }
    Ok(())
}

fn web_ports() -> Vec<PortIntent> {
    [(80, 30080), (443, 30443)]
        .into_iter()
        .map(|(port, node_port)| PortIntent {
            name: Some(format!("p{port}")),
            protocol: Protocol::Tcp,
            port,
            node_port: Some(node_port),
            target_port: Some(8080),
        })
        .collect()
}

fn check_aws(pairs: &[(String, String)], local: bool) -> Result<(), TestCaseError> {
    let annotations: BTreeMap<String, String> = pairs.iter().cloned().collect();
    let policy = if local {
        TrafficPolicy::Local
    } else {
        TrafficPolicy::Cluster
    };
    match parse_aws(&annotations, &web_ports(), policy, Some(32100)) {
        Ok(_) => {}
        Err(ProviderError::Invalid { field, reason }) => {
            let key = field
                .strip_prefix("metadata.annotations[")
                .and_then(|f| f.strip_suffix(']'));
            prop_assert!(
                field.starts_with("spec.") || key.is_some_and(|k| annotations.contains_key(k)),
                "{field} is not a field the Service sets"
            );
            prop_assert!(
                reason.len() <= MAX_REASON,
                "{} bytes: {reason}",
                reason.len()
            );
        }
        Err(other) => prop_assert!(false, "not an Invalid error: {other:?}"),
    }
    Ok(())
}

#[test]
fn the_corpus_as_it_is() {
    for entry in POOL_ENTRIES.iter() {
        check_pool_entry(entry).unwrap_or_else(|e| panic!("pool entry {entry:?}: {e}"));
    }
    for value in ADDRESSES.iter() {
        for (in_spec, metallb, pick) in [(true, false, 2), (false, false, 0), (false, true, 2)] {
            check_requested(value, in_spec, metallb, pick)
                .unwrap_or_else(|e| panic!("addresses {value:?}: {e}"));
        }
    }
    for value in NAMES.iter() {
        for key in [POOL, ALLOW_SHARED_IP] {
            check_baremetal_annotation(key, value)
                .unwrap_or_else(|e| panic!("{key}={value:?}: {e}"));
        }
    }
    let documented: Vec<&str> = ANNOTATIONS.iter().map(|a| a.name).collect();
    for (key, value) in AWS.iter() {
        assert!(
            documented.contains(&key.as_str()),
            "{key} in the AWS corpus is not an annotation we read"
        );
        check_aws(&[(key.clone(), value.clone())], false)
            .unwrap_or_else(|e| panic!("{key}={value:?}: {e}"));
    }
}

/// AWS values from the corpus, each edited, under keys drawn from the
/// documented ones (a value meant for one key lands under another too).
fn aws_pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    static VALUES: LazyLock<Vec<String>> =
        LazyLock::new(|| AWS.iter().map(|(_, v)| v.clone()).collect());
    let pair = (0..AWS.len(), any::<bool>(), mutated(&VALUES)).prop_map(|(i, own_key, value)| {
        let key = if own_key {
            AWS[i].0.clone()
        } else {
            ANNOTATIONS[i % ANNOTATIONS.len()].name.to_string()
        };
        (key, value)
    });
    prop::collection::vec(pair, 1..6)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn pool_entries(entry in mutated(&POOL_ENTRIES)) {
        check_pool_entry(&entry)?;
    }

    #[test]
    fn load_balancer_ips(
        value in mutated(&ADDRESSES),
        in_spec in any::<bool>(),
        metallb in any::<bool>(),
        pick in any::<u8>(),
    ) {
        check_requested(&value, in_spec, metallb, pick)?;
    }

    #[test]
    fn baremetal_annotations(value in mutated(&NAMES), sharing in any::<bool>()) {
        check_baremetal_annotation(if sharing { ALLOW_SHARED_IP } else { POOL }, &value)?;
    }

    #[test]
    fn aws_annotations(pairs in aws_pairs(), local in any::<bool>()) {
        check_aws(&pairs, local)?;
    }
}
