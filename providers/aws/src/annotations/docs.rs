//! `docs/aws-annotations.md`, generated from [`ANNOTATIONS`] and the rules the
//! parser enforces.

use std::fmt::Write as _;

use super::keys::ANNOTATIONS;

/// The rules that tie annotations together, one Markdown paragraph each.
const RULES: &[&str] = &[
    "**Scheme default.** The peers disagree: cloud-provider-aws makes internet-facing \
     load balancers, aws-load-balancer-controller internal ones. ferrolb follows the CCM \
     when `aws-load-balancer-type` is `nlb` and LBC otherwise (`external`, `nlb-ip` or \
     unset), so a Service with no annotation at all gets an **internal** load balancer. \
     `scheme` and the older `internal` may both be set only if they agree.",
    "**Target type.** `instance` unless `nlb-target-type` says otherwise; type `nlb-ip` \
     means `ip`, and combining it with `nlb-target-type: instance` is an error.",
    "**Health-check defaults.** With `externalTrafficPolicy: Cluster` (and with any policy \
     when the targets are pods): TCP on the traffic port, timeout 10 s, thresholds 3/3, \
     interval 10 s as in LBC, except 30 s with type `nlb` as in the CCM. With \
     `externalTrafficPolicy: Local` and instance targets: HTTP `/healthz` on the \
     Service's healthCheckNodePort, interval 10 s, timeout 6 s, thresholds 2/2, so only \
     nodes holding a ready endpoint receive traffic. Each `healthcheck-*` annotation \
     overrides its own field and keeps the others' defaults; HTTP and HTTPS checks \
     default to path `/` (`/healthz` in the Local case). Intervals are 5–300 s, \
     timeouts 2–120 s, thresholds 2–10. Path and success codes are ignored by TCP \
     checks but must still be valid.",
    "**Static addresses.** `eip-allocations` needs an internet-facing load balancer and \
     `private-ipv4-addresses` an internal one. When `subnets` is given, each list must \
     have exactly one entry per subnet; when subnets are discovered, the provider checks \
     the count against the subnets it found.",
    "**TLS.** `ssl-cert` turns on TLS listeners for the ports `ssl-ports` names (all TCP \
     ports by default). A port number that serves both TCP and UDP becomes one TCP_UDP \
     listener, which cannot terminate TLS: the default leaves it alone and naming it is \
     an error. Naming a port the Service does not have, or a UDP port, is an error, and \
     so is a certificate when no port can take it. `ssl-ports` is checked even without \
     a certificate.",
    "**Lists and maps.** Lists are comma-separated; spaces around items and a trailing \
     comma are ignored, an item given twice is an error. Maps are `k1=v1,k2=v2`; spaces \
     around keys and values are ignored, a value may contain `=`, an empty value is \
     allowed (`k=`), and a key given twice is an error.",
    "**Attributes.** `target-group-attributes` and `attributes` pass any key to AWS, but \
     known boolean keys must be `true` or `false` and known second counts whole numbers \
     in range. `proxy-protocol: \"*\"` sets `proxy_protocol_v2.enabled=true` over the \
     attribute, as in LBC. `cross-zone-load-balancing-enabled` and `access-log-*` are \
     mapped onto `load_balancing.cross_zone.enabled` and `access_logs.s3.*`; the same \
     key with another value in `attributes` is an error. The bucket and prefix count \
     only when access logs are on, and turning logs on without a bucket is an error.",
    "**Tags.** `additional-resource-tags` may not set keys starting with \
     `kubernetes.io/cluster/`, `ferrolb.io/` or `aws:` (any case): ferrolb finds its \
     resources by those tags.",
    "**Security groups.** `manage-backend-security-group-rules` defaults to `true`, or to \
     `false` when `security-groups` brings your own groups.",
    "**Values.** Fixed words (`nlb`, `internal`, `http`, `true`, …) are matched without \
     regard to case. An annotation whose value is empty or only spaces counts as absent. \
     Unknown `aws-load-balancer-*` keys are ignored; a known key with a bad value stops \
     the Service with a Warning event naming the annotation. SCTP ports are rejected: \
     Network Load Balancers do not serve SCTP.",
];

/// The content of `docs/aws-annotations.md`.
pub fn reference_markdown() -> String {
    let mut out = String::new();
    out.push_str("# AWS annotations\n\n");
    out.push_str(
        "<!-- Generated from providers/aws/src/annotations; do not edit. Regenerate with \
         `FERROLB_BLESS=1 cargo test -p ferrolb-aws annotations`. -->\n\n",
    );
    out.push_str(
        "ferrolb's AWS provider builds a Network Load Balancer for each Service and reads \
         the annotations of both cloud-provider-aws (CCM) and \
         aws-load-balancer-controller (LBC), so a Service written for either keeps \
         working. The peers' defaults differ; the rules below say which one applies.\n\n",
    );
    out.push_str("## Rules\n\n");
    for rule in RULES {
        let _ = writeln!(out, "{rule}\n");
    }
    out.push_str("## Annotations\n\n");
    out.push_str("| Annotation | Values | Default | Also read by | Description |\n");
    out.push_str("|---|---|---|---|---|\n");
    for a in ANNOTATIONS {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} |",
            a.name,
            cell(a.values),
            cell(a.default),
            cell(a.peers),
            cell(a.description)
        );
    }
    out
}

/// Keeps a table cell on one row: pipes escaped, whitespace runs collapsed.
fn cell(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}
