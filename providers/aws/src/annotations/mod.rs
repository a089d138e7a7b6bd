//! The `service.beta.kubernetes.io/aws-load-balancer-*` annotations, parsed into
//! typed, validated options (pure: no I/O, no SDK types).
//!
//! ferrolb reads the keys of both peers, cloud-provider-aws (CCM) and
//! aws-load-balancer-controller (LBC), so a Service written for either works
//! unchanged. Where the peers disagree on a default, `type: nlb` (the CCM's
//! value) selects the CCM's default and anything else selects LBC's. Unknown
//! `aws-load-balancer-*` keys are ignored; every known key must parse.

mod attributes;
mod docs;
mod health;
pub mod keys;
mod tls;
mod values;

#[cfg(test)]
mod tests_accept;
#[cfg(test)]
mod tests_defaults;
#[cfg(test)]
mod tests_props;
#[cfg(test)]
mod tests_reject;
#[cfg(test)]
mod tests_support;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ferrolb_provider_api::{PortIntent, Protocol, ProviderError, TrafficPolicy};
use ipnet::IpNet;

pub use docs::reference_markdown;
pub use keys::{ANNOTATIONS, AnnotationDoc};

use keys::*;
use values::{Reader, Value, is_eip_allocation, is_id_or_name, quote};

/// The prefix of every AWS load-balancer annotation.
pub const PREFIX: &str = "service.beta.kubernetes.io/aws-load-balancer-";

/// `aws-load-balancer-type`: which peer's conventions the Service was written
/// for. Every value gets a Network Load Balancer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LbType {
    /// `nlb` (CCM).
    Nlb,
    /// `external` (LBC).
    External,
    /// `nlb-ip` (LBC), which implies ip targets.
    NlbIp,
    Unset,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TargetType {
    /// Nodes, on the Service's nodePorts.
    Instance,
    /// Pods, on their target ports.
    Ip,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scheme {
    InternetFacing,
    Internal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpAddressType {
    Ipv4,
    Dualstack,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HcProtocol {
    Tcp,
    Http,
    Https,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HcPort {
    /// The port each target receives traffic on.
    TrafficPort,
    Port(u16),
}

/// A target group's health check, with every default already applied.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    pub protocol: HcProtocol,
    pub port: HcPort,
    /// Set for HTTP and HTTPS checks only.
    pub path: Option<String>,
    pub interval_secs: u16,
    pub timeout_secs: u16,
    pub healthy_threshold: u8,
    pub unhealthy_threshold: u8,
    /// HTTP codes or ranges (`200,202`, `200-399`); HTTP and HTTPS only.
    /// `None` leaves AWS's default.
    pub success_codes: Option<String>,
}

/// How a TLS listener reaches the targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BackendProtocol {
    Tcp,
    Tls,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    /// Certificate ARNs; the first is the listener's default certificate.
    pub certificates: Vec<String>,
    /// The Service port numbers that get TLS listeners, sorted.
    pub ports: Vec<u16>,
    pub policy: Option<String>,
    pub backend: BackendProtocol,
}

/// Everything the annotations ask of the load balancer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsOptions {
    pub lb_type: LbType,
    pub target_type: TargetType,
    pub scheme: Scheme,
    pub name: Option<String>,
    /// Subnet IDs or `Name` tags; empty means discover them.
    pub subnets: Vec<String>,
    pub eip_allocations: Vec<String>,
    pub private_ipv4_addresses: Vec<Ipv4Addr>,
    pub health_check: HealthCheck,
    /// Includes `proxy_protocol_v2.enabled=true` when `proxy-protocol` is `*`.
    pub target_group_attributes: BTreeMap<String, String>,
    /// From `attributes`, plus the cross-zone and access-log annotations
    /// mapped onto their attribute keys.
    pub load_balancer_attributes: BTreeMap<String, String>,
    pub tls: Option<Tls>,
    pub additional_tags: BTreeMap<String, String>,
    pub target_node_labels: BTreeMap<String, String>,
    pub security_groups: Vec<String>,
    pub manage_backend_security_group_rules: bool,
    pub ip_address_type: IpAddressType,
    /// From the `service.beta.kubernetes.io/load-balancer-source-ranges`
    /// annotation; the caller prefers `spec.loadBalancerSourceRanges` when it
    /// is set. Empty means no restriction was asked for.
    pub source_ranges: Vec<IpNet>,
}

/// Parses every annotation the provider knows. Unknown `aws-load-balancer-*`
/// keys are ignored, a blank value counts as absent, and every known key must
/// parse. The first problem comes back as [`ProviderError::Invalid`] naming
/// the field (`metadata.annotations[<full key>]` or `spec.ports[i].protocol`).
pub fn parse(
    annotations: &BTreeMap<String, String>,
    ports: &[PortIntent],
    traffic_policy: TrafficPolicy,
    health_check_node_port: Option<u16>,
) -> Result<AwsOptions, ProviderError> {
    parse_with(
        &Reader::new(annotations),
        ports,
        traffic_policy,
        health_check_node_port,
    )
}

fn parse_with(
    r: &Reader<'_>,
    ports: &[PortIntent],
    traffic_policy: TrafficPolicy,
    health_check_node_port: Option<u16>,
) -> Result<AwsOptions, ProviderError> {
    if let Some(i) = ports.iter().position(|p| p.protocol == Protocol::Sctp) {
        return Err(ProviderError::invalid(
            format!("spec.ports[{i}].protocol"),
            "SCTP is not served by AWS Network Load Balancers; use TCP or UDP",
        ));
    }
    let lb_type = lb_type(r)?;
    let target_type = target_type(r, lb_type)?;
    let scheme = scheme(r, lb_type)?;
    let name = name(r)?;
    let (subnets, eip_allocations, private_ipv4_addresses) = addresses(r, scheme)?;
    let health_check = health::parse(
        r,
        &health::Context {
            lb_type,
            target_type,
            traffic_policy,
            health_check_node_port,
            ports,
        },
    )?;
    let target_group_attributes = attributes::target_group(r)?;
    let load_balancer_attributes = attributes::load_balancer(r)?;
    let tls = tls::parse(r, ports)?;
    let additional_tags = attributes::tags(r)?;
    let target_node_labels = attributes::node_labels(r)?;
    let (security_groups, manage_backend_security_group_rules) = security_groups(r)?;
    let ip_address_type = match r.get(IP_ADDRESS_TYPE) {
        Some(v) => v.choice(&[
            ("ipv4", IpAddressType::Ipv4),
            ("dualstack", IpAddressType::Dualstack),
        ])?,
        None => IpAddressType::Ipv4,
    };
    let source_ranges = source_ranges(r)?;
    Ok(AwsOptions {
        lb_type,
        target_type,
        scheme,
        name,
        subnets,
        eip_allocations,
        private_ipv4_addresses,
        health_check,
        target_group_attributes,
        load_balancer_attributes,
        tls,
        additional_tags,
        target_node_labels,
        security_groups,
        manage_backend_security_group_rules,
        ip_address_type,
        source_ranges,
    })
}

fn lb_type(r: &Reader<'_>) -> Result<LbType, ProviderError> {
    match r.get(TYPE) {
        Some(v) => v.choice(&[
            ("nlb", LbType::Nlb),
            ("external", LbType::External),
            ("nlb-ip", LbType::NlbIp),
        ]),
        None => Ok(LbType::Unset),
    }
}

fn target_type(r: &Reader<'_>, lb_type: LbType) -> Result<TargetType, ProviderError> {
    let given = r
        .get(NLB_TARGET_TYPE)
        .map(|v| {
            v.choice(&[("instance", TargetType::Instance), ("ip", TargetType::Ip)])
                .map(|t| (v, t))
        })
        .transpose()?;
    match (lb_type, given) {
        (LbType::NlbIp, Some((v, TargetType::Instance))) => Err(v.invalid(format!(
            "{} contradicts {TYPE}: nlb-ip, which means ip targets; use ip, or type external \
             for instance targets",
            quote(v.text)
        ))),
        (_, Some((_, t))) => Ok(t),
        (LbType::NlbIp, None) => Ok(TargetType::Ip),
        (_, None) => Ok(TargetType::Instance),
    }
}

fn scheme(r: &Reader<'_>, lb_type: LbType) -> Result<Scheme, ProviderError> {
    let scheme = r
        .get(SCHEME)
        .map(|v| {
            v.choice(&[
                ("internet-facing", Scheme::InternetFacing),
                ("internal", Scheme::Internal),
            ])
            .map(|s| (v, s))
        })
        .transpose()?;
    // The CCM's rule: any value but "false" means internal.
    let internal = r.get(INTERNAL).map(|v| {
        let s = if v.text.eq_ignore_ascii_case("false") {
            Scheme::InternetFacing
        } else {
            Scheme::Internal
        };
        (v, s)
    });
    match (scheme, internal) {
        (Some((v, s)), Some((i, si))) if s != si => Err(v.invalid(format!(
            "{} contradicts {INTERNAL}: {}; remove {INTERNAL} (scheme replaces it)",
            quote(v.text),
            quote(i.text)
        ))),
        (Some((_, s)), _) | (None, Some((_, s))) => Ok(s),
        (None, None) if lb_type == LbType::Nlb => Ok(Scheme::InternetFacing),
        (None, None) => Ok(Scheme::Internal),
    }
}

/// AWS load-balancer names: 1–32 letters, digits and `-`, not starting or
/// ending with `-`, not starting with `internal-`.
fn name(r: &Reader<'_>) -> Result<Option<String>, ProviderError> {
    let Some(v) = r.get(NAME) else {
        return Ok(None);
    };
    let n = v.text;
    if n.len() > 32 || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(v.bad("a load-balancer name: at most 32 letters, digits and '-'"));
    }
    if n.starts_with('-') || n.ends_with('-') {
        return Err(v.bad("a load-balancer name: it may not start or end with '-'"));
    }
    if n.to_ascii_lowercase().starts_with("internal-") {
        return Err(v.bad("a load-balancer name: AWS reserves names starting with \"internal-\""));
    }
    Ok(Some(n.to_string()))
}

type Addresses = (Vec<String>, Vec<String>, Vec<Ipv4Addr>);

fn addresses(r: &Reader<'_>, scheme: Scheme) -> Result<Addresses, ProviderError> {
    let subnets = r.get(SUBNETS);
    let eips = r.get(EIP_ALLOCATIONS);
    let private = r.get(PRIVATE_IPV4_ADDRESSES);

    let subnet_list = match subnets {
        Some(v) => v.list_of(is_id_or_name, "a subnet ID or Name tag")?,
        None => Vec::new(),
    };
    let count_matches = |v: Value<'_>, n: usize, what: &str| {
        if subnets.is_some() && n != subnet_list.len() {
            Err(v.invalid(format!(
                "{n} {what} given for {} subnets in {SUBNETS}; give exactly one per subnet, in \
                 the same order",
                subnet_list.len()
            )))
        } else {
            Ok(())
        }
    };
    let eip_list = match eips {
        Some(v) => {
            let list = v.list_of(
                is_eip_allocation,
                "an Elastic IP allocation ID (eipalloc-…)",
            )?;
            if scheme == Scheme::Internal {
                return Err(v.invalid(
                    "Elastic IPs need an internet-facing load balancer, and this one is \
                     internal; set the scheme annotation to internet-facing or remove the EIPs",
                ));
            }
            count_matches(v, list.len(), "EIP allocations")?;
            list
        }
        None => Vec::new(),
    };
    let private_list = match private {
        Some(v) => {
            let mut list = Vec::new();
            for item in v.list()? {
                let addr = item.parse::<Ipv4Addr>().map_err(|_| {
                    v.invalid(format!("item {} is not an IPv4 address", quote(item)))
                })?;
                list.push(addr);
            }
            if scheme == Scheme::InternetFacing {
                return Err(v.invalid(
                    "fixed private addresses need an internal load balancer, and this one is \
                     internet-facing; set the scheme annotation to internal or remove the \
                     addresses",
                ));
            }
            count_matches(v, list.len(), "private IPv4 addresses")?;
            list
        }
        None => Vec::new(),
    };
    Ok((subnet_list, eip_list, private_list))
}

fn security_groups(r: &Reader<'_>) -> Result<(Vec<String>, bool), ProviderError> {
    let groups = match r.get(SECURITY_GROUPS) {
        Some(v) => v.list_of(is_id_or_name, "a security group ID or name")?,
        None => Vec::new(),
    };
    let manage = match r.get(MANAGE_BACKEND_SG_RULES) {
        Some(v) => v.boolean()?,
        // LBC: the user who brings their own groups manages the rules too.
        None => groups.is_empty(),
    };
    Ok((groups, manage))
}

fn source_ranges(r: &Reader<'_>) -> Result<Vec<IpNet>, ProviderError> {
    let Some(v) = r.get(SOURCE_RANGES) else {
        return Ok(Vec::new());
    };
    let mut out: Vec<IpNet> = Vec::new();
    for item in v.list()? {
        // Host bits are dropped, as Kubernetes does: 10.1.2.3/8 is 10.0.0.0/8.
        let net = item.parse::<IpNet>().map(|net| net.trunc()).map_err(|_| {
            v.invalid(format!(
                "item {} is not a CIDR like 203.0.113.0/24 or 2001:db8::/32",
                quote(item)
            ))
        })?;
        if !out.contains(&net) {
            out.push(net);
        }
    }
    Ok(out)
}
