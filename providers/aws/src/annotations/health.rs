//! The target-group health check: peer defaults by traffic policy, target type
//! and load-balancer type, then the `healthcheck-*` annotations on top.

use ferrolb_provider_api::{PortIntent, ProviderError, TrafficPolicy};

use super::keys::{
    HC_HEALTHY_THRESHOLD, HC_INTERVAL, HC_PATH, HC_PORT, HC_PROTOCOL, HC_SUCCESS_CODES, HC_TIMEOUT,
    HC_UNHEALTHY_THRESHOLD,
};
use super::values::{Reader, Value, number, quote};
use super::{HcPort, HcProtocol, HealthCheck, LbType, TargetType};

/// What the defaults depend on.
pub(super) struct Context<'p> {
    pub lb_type: LbType,
    pub target_type: TargetType,
    pub traffic_policy: TrafficPolicy,
    pub health_check_node_port: Option<u16>,
    pub ports: &'p [PortIntent],
}

impl Context<'_> {
    /// kube-proxy answers `/healthz` on the healthCheckNodePort only for nodes;
    /// with ip targets the pods are checked directly, so the Cluster defaults
    /// apply (as in LBC).
    fn node_local(&self) -> bool {
        self.traffic_policy == TrafficPolicy::Local && self.target_type == TargetType::Instance
    }
}

/// The HTTP codes an NLB health check takes as healthy unless told otherwise.
pub const DEFAULT_SUCCESS_CODES: &str = "200-399";

pub(super) fn parse(r: &Reader<'_>, cx: &Context<'_>) -> Result<HealthCheck, ProviderError> {
    let protocol = r.get(HC_PROTOCOL);
    let port = r.get(HC_PORT);
    let path = r.get(HC_PATH);
    let interval = r.get(HC_INTERVAL);
    let timeout = r.get(HC_TIMEOUT);
    let healthy = r.get(HC_HEALTHY_THRESHOLD);
    let unhealthy = r.get(HC_UNHEALTHY_THRESHOLD);
    let success_codes = r.get(HC_SUCCESS_CODES);

    let local = cx.node_local();
    let protocol = match protocol {
        Some(v) => v.choice(&[
            ("tcp", HcProtocol::Tcp),
            ("http", HcProtocol::Http),
            ("https", HcProtocol::Https),
        ])?,
        None if local => HcProtocol::Http,
        None => HcProtocol::Tcp,
    };
    let port = match port {
        Some(v) => parse_port(v, cx)?,
        None if local => match cx.health_check_node_port {
            Some(p) => HcPort::Port(p),
            None => {
                return Err(ProviderError::invalid(
                    "spec.healthCheckNodePort",
                    "externalTrafficPolicy Local with instance targets is health-checked on \
                     the healthCheckNodePort, and the Service has none; set one, or name a \
                     port in the healthcheck-port annotation",
                ));
            }
        },
        None => HcPort::TrafficPort,
    };
    let path = path.map(parse_path).transpose()?;
    let success_codes = success_codes.map(parse_success_codes).transpose()?;
    let num = |v: Option<Value<'_>>, range, default: u32| match v {
        Some(v) => v.number(range),
        None => Ok(default),
    };
    let ccm_cluster = cx.lb_type == LbType::Nlb && !local;
    let interval = num(interval, 5..=300, if ccm_cluster { 30 } else { 10 })?;
    let timeout = num(timeout, 2..=120, if local { 6 } else { 10 })?;
    let healthy = num(healthy, 2..=10, if local { 2 } else { 3 })?;
    let unhealthy = num(unhealthy, 2..=10, if local { 2 } else { 3 })?;

    let http = protocol != HcProtocol::Tcp;
    let default_path = if local { "/healthz" } else { "/" };
    // The ranges above keep every number far below u8::MAX, so the casts hold.
    Ok(HealthCheck {
        protocol,
        port,
        path: http.then(|| path.unwrap_or_else(|| default_path.to_string())),
        interval_secs: interval as u16,
        timeout_secs: timeout as u16,
        healthy_threshold: healthy as u8,
        unhealthy_threshold: unhealthy as u8,
        // Sent explicitly (AWS's own NLB default when none is asked for), so
        // that what DescribeTargetGroups reports back compares equal and a
        // resync finds nothing to modify.
        success_codes: http.then(|| success_codes.unwrap_or_else(|| DEFAULT_SUCCESS_CODES.into())),
    })
}

/// `traffic-port`, a number, or the name of a Service port.
fn parse_port(v: Value<'_>, cx: &Context<'_>) -> Result<HcPort, ProviderError> {
    if v.text.eq_ignore_ascii_case("traffic-port") {
        return Ok(HcPort::TrafficPort);
    }
    if v.text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(HcPort::Port(v.number(1..=65535)? as u16));
    }
    let Some(port) = cx.ports.iter().find(|p| p.name.as_deref() == Some(v.text)) else {
        let names: Vec<&str> = cx.ports.iter().filter_map(|p| p.name.as_deref()).collect();
        let known = if names.is_empty() {
            "the Service's ports have no names".to_string()
        } else {
            format!("port names are: {}", names.join(", "))
        };
        return Err(v.invalid(format!(
            "{} is not traffic-port, a port number, nor the name of a Service port ({known})",
            quote(v.text)
        )));
    };
    let resolved = match cx.target_type {
        TargetType::Instance => port.node_port.ok_or_else(|| {
            v.invalid(format!(
                "port {} has no nodePort to health-check (allocateLoadBalancerNodePorts is \
                 false); give a port number instead",
                quote(v.text)
            ))
        })?,
        TargetType::Ip => port.target_port.ok_or_else(|| {
            v.invalid(format!(
                "port {} has a named targetPort, which ip targets cannot health-check by \
                 name; give a port number instead",
                quote(v.text)
            ))
        })?,
    };
    Ok(HcPort::Port(resolved))
}

fn parse_path(v: Value<'_>) -> Result<String, ProviderError> {
    let ok = v.text.starts_with('/')
        && v.text.len() <= 1024
        && v.text.chars().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(v.text.to_string())
    } else {
        Err(v.bad("a path: it must start with '/', hold no spaces and be at most 1024 characters"))
    }
}

/// `200`, `200,202`, `200-399`: codes from 200 to 599.
fn parse_success_codes(v: Value<'_>) -> Result<String, ProviderError> {
    let code = |s: &str| number(s, &(200..=599));
    let mut items = Vec::new();
    for item in v.list()? {
        let ok = match item.split_once('-') {
            Some((lo, hi)) => {
                matches!((code(lo.trim()), code(hi.trim())), (Some(l), Some(h)) if l <= h)
            }
            None => code(item).is_some(),
        };
        if !ok {
            return Err(v.invalid(format!(
                "item {} is not an HTTP code or range (like 200 or 200-399) between 200 and 599",
                quote(item)
            )));
        }
        items.push(item.split('-').map(str::trim).collect::<Vec<_>>().join("-"));
    }
    Ok(items.join(","))
}
