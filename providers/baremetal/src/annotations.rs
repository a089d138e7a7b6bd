//! The Service annotations the bare-metal provider reads and writes.

use std::collections::BTreeMap;

use ferrolb_provider_api::{ProviderError, quote};

/// Take addresses only from this pool.
pub const POOL: &str = "ferrolb.io/pool";
/// Services with the same key, disjoint ports and the same traffic policy share
/// one address.
pub const ALLOW_SHARED_IP: &str = "ferrolb.io/allow-shared-ip";
/// Written by ferrolb: the pool the Service's addresses came from.
pub const ALLOCATED_FROM_POOL: &str = "ferrolb.io/ip-allocated-from-pool";
/// Written by ferrolb, in the write of the status that shows them: the
/// addresses it gave the Service (comma-separated) ...
pub const ALLOCATED_IPS: &str = "ferrolb.io/allocated-ips";
/// ... the sharing key it gave them under (absent for none) ...
pub const ALLOCATED_SHARING_KEY: &str = "ferrolb.io/allocated-sharing-key";
/// ... and the terms of that sharing: the ports and the traffic policy, as
/// `ports=TCP/80,UDP/53;externalTrafficPolicy=Cluster` (absent for none). On
/// a restart the three tell a Service whose status is stale (it was given
/// other addresses since, or its key, ports or policy changed after) from one
/// that still holds what it shows, when both show one address and may not
/// share it.
pub const ALLOCATED_SHARING_TERMS: &str = "ferrolb.io/allocated-sharing-terms";

/// MetalLB's names for the same requests, read so a MetalLB cluster can switch
/// without rewriting its Services. Ours win when both are set.
const METALLB_POOL: &str = "metallb.io/address-pool";
const METALLB_ALLOW_SHARED_IP: &str = "metallb.io/allow-shared-ip";

/// What a Service's annotations ask of the allocator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    pub pool: Option<String>,
    pub sharing_key: Option<String>,
}

pub fn parse(annotations: &BTreeMap<String, String>) -> Result<Requests, ProviderError> {
    Ok(Requests {
        pool: lookup(
            annotations,
            &[POOL, METALLB_POOL],
            is_object_name,
            "a pool name (lowercase letters, digits, '-' and '.')",
        )?,
        sharing_key: lookup(
            annotations,
            &[ALLOW_SHARED_IP, METALLB_ALLOW_SHARED_IP],
            is_sharing_key,
            "a non-empty key of at most 253 printable characters",
        )?,
    })
}

/// The annotation that names the Service's pool, when one does.
pub fn pool_key(annotations: &BTreeMap<String, String>) -> Option<&'static str> {
    [POOL, METALLB_POOL]
        .into_iter()
        .find(|k| annotations.contains_key(*k))
}

fn lookup(
    annotations: &BTreeMap<String, String>,
    keys: &[&str],
    valid: fn(&str) -> bool,
    what: &str,
) -> Result<Option<String>, ProviderError> {
    let Some((key, value)) = keys
        .iter()
        .find_map(|k| annotations.get(*k).map(|v| (*k, v)))
    else {
        return Ok(None);
    };
    let value = value.trim();
    if !valid(value) {
        return Err(ProviderError::invalid(
            format!("metadata.annotations[{key}]"),
            format!("{} is not {what}", quote(value)),
        ));
    }
    Ok(Some(value.to_string()))
}

/// A DNS-1123 subdomain, as Kubernetes requires of object names.
fn is_object_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn is_sharing_key(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.chars().all(|c| !c.is_control())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Annotations from pairs (for the crate's tests).
    pub(crate) fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pool_key_is_the_annotation_parse_reads() {
        assert_eq!(pool_key(&ann(&[])), None);
        assert_eq!(pool_key(&ann(&[(METALLB_POOL, "a")])), Some(METALLB_POOL));
        assert_eq!(
            pool_key(&ann(&[(POOL, "a"), (METALLB_POOL, "b")])),
            Some(POOL)
        );
    }

    #[test]
    fn table() {
        let ok = |pool: Option<&str>, key: Option<&str>| {
            Ok::<_, String>(Requests {
                pool: pool.map(Into::into),
                sharing_key: key.map(Into::into),
            })
        };
        let long = "x".repeat(254);
        let cases: Vec<(BTreeMap<String, String>, Result<Requests, String>)> = vec![
            (ann(&[]), ok(None, None)),
            (ann(&[(POOL, "prod-v4")]), ok(Some("prod-v4"), None)),
            (ann(&[(POOL, " prod.v4 ")]), ok(Some("prod.v4"), None)),
            (ann(&[(METALLB_POOL, "legacy")]), ok(Some("legacy"), None)),
            (
                ann(&[(POOL, "ours"), (METALLB_POOL, "theirs")]),
                ok(Some("ours"), None),
            ),
            (ann(&[(ALLOW_SHARED_IP, "dns")]), ok(None, Some("dns"))),
            (
                ann(&[(METALLB_ALLOW_SHARED_IP, "dns")]),
                ok(None, Some("dns")),
            ),
            (
                ann(&[(POOL, "")]),
                Err("metadata.annotations[ferrolb.io/pool]".into()),
            ),
            (
                ann(&[(POOL, "Prod_Pool")]),
                Err("\"Prod_Pool\" is not a pool name".into()),
            ),
            (ann(&[(POOL, "-x")]), Err("is not a pool name".into())),
            (
                ann(&[(ALLOW_SHARED_IP, "")]),
                Err("metadata.annotations[ferrolb.io/allow-shared-ip]".into()),
            ),
            (ann(&[(ALLOW_SHARED_IP, &long)]), Err("at most 253".into())),
            (
                ann(&[(ALLOW_SHARED_IP, "a\nb")]),
                Err("allow-shared-ip".into()),
            ),
        ];
        for (i, (input, want)) in cases.into_iter().enumerate() {
            match (parse(&input), want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "case {i}"),
                (Err(e), Err(w)) => {
                    assert!(e.to_string().contains(&w), "case {i}: {e:?} lacks {w:?}")
                }
                (g, w) => panic!("case {i}: got {g:?}, want {w:?}"),
            }
        }
    }
}
