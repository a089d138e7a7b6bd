//! TLS listeners: certificates, which Service ports get them, the security
//! policy and how the load balancer talks to the targets.

use std::collections::BTreeSet;

use ferrolb_provider_api::{PortIntent, Protocol, ProviderError};

use super::keys::{BACKEND_PROTOCOL, SSL_CERT, SSL_NEGOTIATION_POLICY, SSL_PORTS};
use super::values::{Reader, Value, is_arn, is_policy_name, quote};
use super::{BackendProtocol, Tls};

pub(super) fn parse(
    r: &Reader<'_>,
    service_ports: &[PortIntent],
) -> Result<Option<Tls>, ProviderError> {
    let cert = r.get(SSL_CERT);
    let ssl_ports = r.get(SSL_PORTS);
    let policy = r.get(SSL_NEGOTIATION_POLICY);
    let backend = r.get(BACKEND_PROTOCOL);

    let certificates = cert
        .map(|v| {
            v.list_of(
                is_arn,
                "a certificate ARN (arn:aws:acm:<region>:<account>:certificate/<id>)",
            )
        })
        .transpose()?;
    let selected = ssl_ports.map(|v| select(v, service_ports)).transpose()?;
    let policy = policy
        .map(|v| {
            if is_policy_name(v.text) {
                Ok(v.text.to_string())
            } else {
                Err(v.bad("an ELB security policy name (like ELBSecurityPolicy-TLS13-1-2-2021-06)"))
            }
        })
        .transpose()?;
    let backend = match backend {
        Some(v) => v.choice(&[
            ("tcp", BackendProtocol::Tcp),
            ("ssl", BackendProtocol::Tls),
            ("tls", BackendProtocol::Tls),
            ("http", BackendProtocol::Tcp),
            ("https", BackendProtocol::Tls),
        ])?,
        None => BackendProtocol::Tcp,
    };

    let (Some(certificates), Some(cert)) = (certificates, cert) else {
        return Ok(None);
    };
    let ports = selected.unwrap_or_else(|| tls_capable(service_ports));
    if ports.is_empty() {
        let reason = if service_ports.iter().any(|p| p.protocol == Protocol::Tcp) {
            "every TCP port of the Service also serves UDP, and a TCP_UDP listener cannot \
             terminate TLS; add a TCP-only port or remove the certificate"
        } else {
            "the Service has no TCP port to put a TLS listener on; add one or remove the \
             certificate"
        };
        return Err(cert.invalid(reason));
    }
    Ok(Some(Tls {
        certificates,
        ports,
        policy,
        backend,
    }))
}

/// Port numbers with a TCP port and no UDP port of the same number: a number
/// that serves both becomes one TCP_UDP listener, which cannot terminate TLS.
fn tls_capable(ports: &[PortIntent]) -> Vec<u16> {
    let udp: BTreeSet<u16> = numbers(ports, Protocol::Udp);
    numbers(ports, Protocol::Tcp)
        .into_iter()
        .filter(|n| !udp.contains(n))
        .collect()
}

fn numbers(ports: &[PortIntent], protocol: Protocol) -> BTreeSet<u16> {
    ports
        .iter()
        .filter(|p| p.protocol == protocol)
        .map(|p| p.port)
        .collect()
}

/// `*`, or port numbers and names, each naming a TLS-capable Service port.
fn select(v: Value<'_>, ports: &[PortIntent]) -> Result<Vec<u16>, ProviderError> {
    let items = v.list()?;
    if items.contains(&"*") {
        return Ok(tls_capable(ports));
    }
    let tcp = numbers(ports, Protocol::Tcp);
    let udp = numbers(ports, Protocol::Udp);
    let mut out = BTreeSet::new();
    for item in items {
        let number = if item.bytes().all(|b| b.is_ascii_digit()) {
            item.parse::<u16>()
                .ok()
                .filter(|n| tcp.contains(n) || udp.contains(n))
        } else {
            ports
                .iter()
                .find(|p| p.name.as_deref() == Some(item))
                .map(|p| p.port)
        };
        let Some(number) = number else {
            let known: Vec<String> = ports
                .iter()
                .map(|p| match &p.name {
                    Some(name) => format!("{} ({name})", p.port),
                    None => p.port.to_string(),
                })
                .collect();
            return Err(v.invalid(format!(
                "the Service has no port {}; its ports are: {}",
                quote(item),
                known.join(", ")
            )));
        };
        match (tcp.contains(&number), udp.contains(&number)) {
            (true, false) => {}
            (true, true) => {
                return Err(v.invalid(format!(
                    "port {} serves TCP and UDP, and a TCP_UDP listener cannot terminate TLS",
                    quote(item)
                )));
            }
            _ => {
                return Err(v.invalid(format!(
                    "port {} is UDP; only TCP ports can get TLS listeners",
                    quote(item)
                )));
            }
        }
        out.insert(number);
    }
    Ok(out.into_iter().collect())
}
