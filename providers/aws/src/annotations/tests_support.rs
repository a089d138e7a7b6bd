//! Shared helpers for the annotation tests.

use std::collections::BTreeMap;

use ferrolb_provider_api::{PortIntent, Protocol, ProviderError, TrafficPolicy};

use super::{AwsOptions, parse};

pub(super) const HCNP: u16 = 32100;

/// Annotations written as `(key, value)` pairs.
pub(super) type Pairs<'a> = &'a [(&'a str, &'a str)];

pub(super) fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(super) fn port(name: &str, protocol: Protocol, port: u16, node_port: u16) -> PortIntent {
    PortIntent {
        name: (!name.is_empty()).then(|| name.to_string()),
        protocol,
        port,
        node_port: Some(node_port),
        target_port: Some(port + 8000),
    }
}

/// `http` 80 → 30080 (target 8080) and `https` 443 → 30443 (target 8443).
pub(super) fn web_ports() -> Vec<PortIntent> {
    vec![
        port("http", Protocol::Tcp, 80, 30080),
        port("https", Protocol::Tcp, 443, 30443),
    ]
}

/// 53 over TCP and UDP (one TCP_UDP listener), 443 over TCP, 5353 over UDP.
pub(super) fn mixed_ports() -> Vec<PortIntent> {
    vec![
        port("dns-tcp", Protocol::Tcp, 53, 30053),
        port("dns-udp", Protocol::Udp, 53, 30053),
        port("https", Protocol::Tcp, 443, 30443),
        port("mdns", Protocol::Udp, 5353, 30353),
    ]
}

pub(super) fn parse_web(
    pairs: &[(&str, &str)],
    policy: TrafficPolicy,
) -> Result<AwsOptions, ProviderError> {
    parse(&ann(pairs), &web_ports(), policy, Some(HCNP))
}

/// The field and reason of an `Invalid` error; panics on anything else.
pub(super) fn invalid(result: Result<AwsOptions, ProviderError>) -> (String, String) {
    match result {
        Err(ProviderError::Invalid { field, reason }) => (field, reason),
        Err(other) => panic!("expected an Invalid error, got {other:?}"),
        Ok(opts) => panic!("expected an Invalid error, parsed {opts:#?}"),
    }
}
