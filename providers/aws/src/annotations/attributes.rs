//! The `key=value` annotations: target-group and load-balancer attributes (with
//! the older dedicated annotations mapped onto them), tags and node labels.

use std::collections::BTreeMap;

use ferrolb_provider_api::ProviderError;

use super::keys::{
    ACCESS_LOG_BUCKET, ACCESS_LOG_ENABLED, ACCESS_LOG_PREFIX, ADDITIONAL_RESOURCE_TAGS, ATTRIBUTES,
    CROSS_ZONE, PROXY_PROTOCOL, TARGET_GROUP_ATTRIBUTES, TARGET_NODE_LABELS,
};
use super::values::{Reader, Value, is_attribute_key, is_label_key, is_label_value, quote};

pub(super) const PROXY_PROTOCOL_V2: &str = "proxy_protocol_v2.enabled";
pub(super) const CROSS_ZONE_ATTR: &str = "load_balancing.cross_zone.enabled";
pub(super) const ACCESS_LOGS_ENABLED_ATTR: &str = "access_logs.s3.enabled";
pub(super) const ACCESS_LOGS_BUCKET_ATTR: &str = "access_logs.s3.bucket";
pub(super) const ACCESS_LOGS_PREFIX_ATTR: &str = "access_logs.s3.prefix";

/// Tag-key prefixes that ferrolb, Kubernetes or AWS own.
pub(super) const RESERVED_TAG_PREFIXES: &[&str] =
    &["kubernetes.io/cluster/", "ferrolb.io/", "aws:"];

/// What a known attribute's value must look like. Unknown keys pass as given:
/// AWS adds attributes faster than this list grows.
#[derive(Clone, Copy)]
enum Kind {
    Bool,
    Seconds(u32),
}

const TARGET_GROUP_KINDS: &[(&str, Kind)] = &[
    ("preserve_client_ip.enabled", Kind::Bool),
    (PROXY_PROTOCOL_V2, Kind::Bool),
    (
        "deregistration_delay.connection_termination.enabled",
        Kind::Bool,
    ),
    ("deregistration_delay.timeout_seconds", Kind::Seconds(3600)),
    ("stickiness.enabled", Kind::Bool),
    (
        "target_health_state.unhealthy.connection_termination.enabled",
        Kind::Bool,
    ),
    (
        "target_health_state.unhealthy.draining_interval_seconds",
        Kind::Seconds(360_000),
    ),
];

const LOAD_BALANCER_KINDS: &[(&str, Kind)] = &[
    ("deletion_protection.enabled", Kind::Bool),
    (CROSS_ZONE_ATTR, Kind::Bool),
    (ACCESS_LOGS_ENABLED_ATTR, Kind::Bool),
    ("zonal_shift.config.enabled", Kind::Bool),
];

fn attributes(
    v: Value<'_>,
    kinds: &[(&str, Kind)],
) -> Result<BTreeMap<String, String>, ProviderError> {
    let map = v.map(true)?;
    for (key, value) in &map {
        if !is_attribute_key(key) {
            return Err(v.invalid(format!(
                "key {} is not an attribute name (letters, digits, '.' and '_')",
                quote(key)
            )));
        }
        let kind = kinds.iter().find(|(k, _)| k == key).map(|(_, kind)| *kind);
        let ok = match kind {
            None => true,
            Some(Kind::Bool) => value == "true" || value == "false",
            Some(Kind::Seconds(max)) => super::values::number(value, &(0..=max)).is_some(),
        };
        if !ok {
            let expected = match kind {
                Some(Kind::Seconds(max)) => format!("a whole number of seconds from 0 to {max}"),
                _ => "true or false".to_string(),
            };
            return Err(v.invalid(format!(
                "{key}={} is not allowed; the value must be {expected}",
                quote(value)
            )));
        }
    }
    Ok(map)
}

pub(super) fn target_group(r: &Reader<'_>) -> Result<BTreeMap<String, String>, ProviderError> {
    let attrs = r.get(TARGET_GROUP_ATTRIBUTES);
    let proxy = r.get(PROXY_PROTOCOL);
    let mut out = match attrs {
        Some(v) => attributes(v, TARGET_GROUP_KINDS)?,
        None => BTreeMap::new(),
    };
    if let Some(v) = proxy {
        if v.text != "*" {
            return Err(v.bad("allowed; the only value is \"*\" (proxy protocol v2 on every port)"));
        }
        // As in LBC, the dedicated annotation wins over the attribute.
        out.insert(PROXY_PROTOCOL_V2.to_string(), "true".to_string());
    }
    Ok(out)
}

pub(super) fn load_balancer(r: &Reader<'_>) -> Result<BTreeMap<String, String>, ProviderError> {
    let attrs = r.get(ATTRIBUTES);
    let cross_zone = r.get(CROSS_ZONE);
    let logs = r.get(ACCESS_LOG_ENABLED);
    let bucket = r.get(ACCESS_LOG_BUCKET);
    let prefix = r.get(ACCESS_LOG_PREFIX);

    let mut out = match attrs {
        Some(v) => attributes(v, LOAD_BALANCER_KINDS)?,
        None => BTreeMap::new(),
    };
    if let Some(v) = cross_zone {
        let on = v.boolean()?;
        merge(&mut out, v, CROSS_ZONE_ATTR, on.to_string())?;
    }
    if let Some(v) = logs {
        let on = v.boolean()?;
        merge(&mut out, v, ACCESS_LOGS_ENABLED_ATTR, on.to_string())?;
    }
    if let Some(v) = bucket {
        let ok = (3..=63).contains(&v.text.len())
            && v.text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !ok {
            return Err(v.bad("an S3 bucket name (3 to 63 lowercase letters, digits, '.' and '-')"));
        }
    }
    if let Some(v) = prefix
        && (v.text.len() > 1024 || v.text.chars().any(char::is_control))
    {
        return Err(v.bad("an S3 key prefix (at most 1024 printable characters)"));
    }
    // Like the peers, the bucket and prefix count only when logs are on.
    if out.get(ACCESS_LOGS_ENABLED_ATTR).map(String::as_str) == Some("true") {
        if let Some(v) = bucket {
            merge(&mut out, v, ACCESS_LOGS_BUCKET_ATTR, v.text.to_string())?;
        }
        if let Some(v) = prefix {
            merge(&mut out, v, ACCESS_LOGS_PREFIX_ATTR, v.text.to_string())?;
        }
        if out
            .get(ACCESS_LOGS_BUCKET_ATTR)
            .is_none_or(String::is_empty)
        {
            let on_key = if logs.is_some() {
                ACCESS_LOG_ENABLED
            } else {
                ATTRIBUTES
            };
            return Err(ProviderError::invalid(
                super::values::field(on_key),
                format!(
                    "access logs are turned on but no S3 bucket is named; set {ACCESS_LOG_BUCKET} \
                     or {ACCESS_LOGS_BUCKET_ATTR} in {ATTRIBUTES}"
                ),
            ));
        }
    }
    Ok(out)
}

/// Puts a dedicated annotation's value onto its attribute key; the same key
/// with another value in `attributes` is a contradiction the user must settle.
fn merge(
    out: &mut BTreeMap<String, String>,
    v: Value<'_>,
    key: &str,
    value: String,
) -> Result<(), ProviderError> {
    match out.get(key) {
        Some(existing) if *existing != value => Err(v.invalid(format!(
            "{} disagrees with {key}={} in {ATTRIBUTES}; remove one of them",
            quote(v.text),
            quote(existing)
        ))),
        _ => {
            out.insert(key.to_string(), value);
            Ok(())
        }
    }
}

/// AWS tags: keys 1–128 characters, values up to 256, empty values allowed.
pub(super) fn tags(r: &Reader<'_>) -> Result<BTreeMap<String, String>, ProviderError> {
    let Some(v) = r.get(ADDITIONAL_RESOURCE_TAGS) else {
        return Ok(BTreeMap::new());
    };
    let map = v.map(true)?;
    for (key, value) in &map {
        if let Some(prefix) = RESERVED_TAG_PREFIXES
            .iter()
            .find(|p| key.to_ascii_lowercase().starts_with(*p))
        {
            return Err(v.invalid(format!(
                "tag key {} starts with the reserved prefix {prefix:?}; ferrolb, Kubernetes \
                 and AWS set those tags themselves",
                quote(key)
            )));
        }
        if key.chars().count() > 128 || key.chars().any(char::is_control) {
            return Err(v.invalid(format!(
                "tag key {} is not 1 to 128 printable characters",
                quote(key)
            )));
        }
        if value.chars().count() > 256 || value.chars().any(char::is_control) {
            return Err(v.invalid(format!(
                "the value of tag {} is not at most 256 printable characters",
                quote(key)
            )));
        }
    }
    Ok(map)
}

/// A node label selector: `key=value` pairs, all of which a node must carry.
pub(super) fn node_labels(r: &Reader<'_>) -> Result<BTreeMap<String, String>, ProviderError> {
    let Some(v) = r.get(TARGET_NODE_LABELS) else {
        return Ok(BTreeMap::new());
    };
    let map = v.map(true)?;
    for (key, value) in &map {
        if !is_label_key(key) {
            return Err(v.invalid(format!(
                "{} is not a label key (an optional DNS prefix and '/', then up to 63 letters, \
                 digits, '-', '_' and '.')",
                quote(key)
            )));
        }
        if !is_label_value(value) {
            return Err(v.invalid(format!(
                "the value of label {} is not a label value (up to 63 letters, digits, '-', \
                 '_' and '.', starting and ending with a letter or digit)",
                quote(key)
            )));
        }
    }
    Ok(map)
}
