//! Every annotation key the parser reads, and the one list that documents them.
//!
//! [`ANNOTATIONS`] feeds both the parser's key-coverage test and the generated
//! reference (`docs/aws-annotations.md`), so the two cannot drift apart.

/// Builds a full `service.beta.kubernetes.io/aws-load-balancer-*` key at
/// compile time (kept in step with [`super::PREFIX`] by a test).
macro_rules! aws_key {
    ($suffix:literal) => {
        concat!("service.beta.kubernetes.io/aws-load-balancer-", $suffix)
    };
}

pub const TYPE: &str = aws_key!("type");
pub const NLB_TARGET_TYPE: &str = aws_key!("nlb-target-type");
pub const SCHEME: &str = aws_key!("scheme");
pub const INTERNAL: &str = aws_key!("internal");
pub const NAME: &str = aws_key!("name");
pub const SUBNETS: &str = aws_key!("subnets");
pub const EIP_ALLOCATIONS: &str = aws_key!("eip-allocations");
pub const PRIVATE_IPV4_ADDRESSES: &str = aws_key!("private-ipv4-addresses");
pub const HC_PROTOCOL: &str = aws_key!("healthcheck-protocol");
pub const HC_PORT: &str = aws_key!("healthcheck-port");
pub const HC_PATH: &str = aws_key!("healthcheck-path");
pub const HC_INTERVAL: &str = aws_key!("healthcheck-interval");
pub const HC_TIMEOUT: &str = aws_key!("healthcheck-timeout");
pub const HC_HEALTHY_THRESHOLD: &str = aws_key!("healthcheck-healthy-threshold");
pub const HC_UNHEALTHY_THRESHOLD: &str = aws_key!("healthcheck-unhealthy-threshold");
pub const HC_SUCCESS_CODES: &str = aws_key!("healthcheck-success-codes");
pub const TARGET_GROUP_ATTRIBUTES: &str = aws_key!("target-group-attributes");
pub const PROXY_PROTOCOL: &str = aws_key!("proxy-protocol");
pub const ATTRIBUTES: &str = aws_key!("attributes");
pub const CROSS_ZONE: &str = aws_key!("cross-zone-load-balancing-enabled");
pub const ACCESS_LOG_ENABLED: &str = aws_key!("access-log-enabled");
pub const ACCESS_LOG_BUCKET: &str = aws_key!("access-log-s3-bucket-name");
pub const ACCESS_LOG_PREFIX: &str = aws_key!("access-log-s3-bucket-prefix");
pub const SSL_CERT: &str = aws_key!("ssl-cert");
pub const SSL_PORTS: &str = aws_key!("ssl-ports");
pub const SSL_NEGOTIATION_POLICY: &str = aws_key!("ssl-negotiation-policy");
pub const BACKEND_PROTOCOL: &str = aws_key!("backend-protocol");
pub const ADDITIONAL_RESOURCE_TAGS: &str = aws_key!("additional-resource-tags");
pub const TARGET_NODE_LABELS: &str = aws_key!("target-node-labels");
pub const SECURITY_GROUPS: &str = aws_key!("security-groups");
pub const MANAGE_BACKEND_SG_RULES: &str = aws_key!("manage-backend-security-group-rules");
pub const IP_ADDRESS_TYPE: &str = aws_key!("ip-address-type");
/// Not an `aws-load-balancer-*` key: the cloud-neutral annotation that both
/// peers read when `spec.loadBalancerSourceRanges` is empty.
pub const SOURCE_RANGES: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";

/// One row of the annotations reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnotationDoc {
    /// The full annotation key.
    pub name: &'static str,
    /// The values accepted, in Markdown.
    pub values: &'static str,
    /// What applies when the annotation is absent or empty.
    pub default: &'static str,
    /// Which peer controllers read the same key (`CCM`, `LBC`).
    pub peers: &'static str,
    pub description: &'static str,
}

const fn doc(
    name: &'static str,
    values: &'static str,
    default: &'static str,
    peers: &'static str,
    description: &'static str,
) -> AnnotationDoc {
    AnnotationDoc {
        name,
        values,
        default,
        peers,
        description,
    }
}

/// Every key [`super::parse`] reads, in the order the reference lists them.
pub const ANNOTATIONS: &[AnnotationDoc] = &[
    doc(
        TYPE,
        "`nlb`, `external`, `nlb-ip`",
        "unset",
        "CCM (`nlb`), LBC (`external`, `nlb-ip`)",
        "Which peer's conventions apply. `nlb` selects the CCM defaults (internet-facing, \
         30 s health checks); `external` and unset select the LBC defaults; `nlb-ip` also \
         means ip targets. Every value builds a Network Load Balancer.",
    ),
    doc(
        NLB_TARGET_TYPE,
        "`instance`, `ip`",
        "`instance` (`ip` with type `nlb-ip`)",
        "LBC",
        "`instance` registers the nodes on their nodePorts; `ip` registers the ready pod \
         addresses on their target ports.",
    ),
    doc(
        SCHEME,
        "`internet-facing`, `internal`",
        "`internet-facing` with type `nlb`, otherwise `internal`",
        "LBC",
        "Whether the load balancer gets public addresses.",
    ),
    doc(
        INTERNAL,
        "any text",
        "unset",
        "CCM, LBC (deprecated)",
        "The older boolean form of `scheme`: any value other than `false` means internal, \
         `false` means internet-facing.",
    ),
    doc(
        NAME,
        "1–32 letters, digits and `-`",
        "a name derived from the Service",
        "LBC",
        "The load balancer's name. It may not start or end with `-` nor start with \
         `internal-`. AWS cannot rename a load balancer once it exists.",
    ),
    doc(
        SUBNETS,
        "comma list of subnet IDs or `Name` tags",
        "discovered from subnet tags",
        "CCM, LBC",
        "The subnets (at most one per zone) the load balancer is placed in.",
    ),
    doc(
        EIP_ALLOCATIONS,
        "comma list of `eipalloc-…` IDs",
        "none",
        "CCM, LBC",
        "Elastic IPs for an internet-facing load balancer, one per subnet, in subnet order.",
    ),
    doc(
        PRIVATE_IPV4_ADDRESSES,
        "comma list of IPv4 addresses",
        "none",
        "CCM, LBC",
        "Fixed private addresses for an internal load balancer, one per subnet, in subnet \
         order.",
    ),
    doc(
        HC_PROTOCOL,
        "`tcp`, `http`, `https` (any case)",
        "`tcp`; `http` for Local policy with instance targets",
        "CCM, LBC",
        "Health-check protocol.",
    ),
    doc(
        HC_PORT,
        "`traffic-port`, a port number, or a Service port name",
        "`traffic-port`; the healthCheckNodePort for Local policy with instance targets",
        "CCM, LBC",
        "Health-check port. A port name means that port's nodePort (instance targets) or \
         numeric targetPort (ip targets).",
    ),
    doc(
        HC_PATH,
        "a path starting with `/`",
        "`/`; `/healthz` for Local policy with instance targets",
        "CCM, LBC",
        "Health-check path, used only by `http` and `https` health checks.",
    ),
    doc(
        HC_INTERVAL,
        "5–300 (seconds)",
        "10; 30 with type `nlb` and Cluster policy",
        "CCM, LBC",
        "Seconds between health checks.",
    ),
    doc(
        HC_TIMEOUT,
        "2–120 (seconds)",
        "10; 6 for Local policy with instance targets",
        "CCM, LBC",
        "Seconds before a health check counts as failed.",
    ),
    doc(
        HC_HEALTHY_THRESHOLD,
        "2–10",
        "3; 2 for Local policy with instance targets",
        "CCM, LBC",
        "Consecutive successes before a target is healthy.",
    ),
    doc(
        HC_UNHEALTHY_THRESHOLD,
        "2–10",
        "3; 2 for Local policy with instance targets",
        "CCM, LBC",
        "Consecutive failures before a target is unhealthy.",
    ),
    doc(
        HC_SUCCESS_CODES,
        "comma list of codes or ranges in 200–599, e.g. `200,202` or `200-399`",
        "AWS's default (`200-399`)",
        "LBC",
        "HTTP codes that count as healthy, used only by `http` and `https` health checks.",
    ),
    doc(
        TARGET_GROUP_ATTRIBUTES,
        "`key=value,…`",
        "none",
        "CCM (two keys), LBC",
        "Target-group attributes, passed to AWS as given. Known boolean keys must be \
         `true` or `false`, known second counts must be whole numbers in range.",
    ),
    doc(
        PROXY_PROTOCOL,
        "`*`",
        "unset",
        "LBC",
        "`*` turns on proxy protocol v2 on every target group \
         (`proxy_protocol_v2.enabled=true`), over any target-group attribute.",
    ),
    doc(
        ATTRIBUTES,
        "`key=value,…`",
        "none",
        "LBC",
        "Load-balancer attributes, passed to AWS as given. Known boolean keys must be \
         `true` or `false`.",
    ),
    doc(
        CROSS_ZONE,
        "`true`, `false`",
        "AWS's default (off)",
        "CCM, LBC (deprecated)",
        "Sets the `load_balancing.cross_zone.enabled` attribute.",
    ),
    doc(
        ACCESS_LOG_ENABLED,
        "`true`, `false`",
        "AWS's default (off)",
        "CCM, LBC (deprecated)",
        "Sets the `access_logs.s3.enabled` attribute; turning logs on needs a bucket.",
    ),
    doc(
        ACCESS_LOG_BUCKET,
        "an S3 bucket name",
        "none",
        "CCM, LBC (deprecated)",
        "Sets `access_logs.s3.bucket` when access logs are on.",
    ),
    doc(
        ACCESS_LOG_PREFIX,
        "a key prefix",
        "none",
        "CCM, LBC (deprecated)",
        "Sets `access_logs.s3.prefix` when access logs are on.",
    ),
    doc(
        SSL_CERT,
        "comma list of certificate ARNs",
        "none",
        "CCM, LBC",
        "Turns the TLS ports into TLS listeners. The first certificate is the default one, \
         the others are added to the listener's certificate list.",
    ),
    doc(
        SSL_PORTS,
        "`*` or a comma list of Service port numbers and names",
        "every TCP port that does not also serve UDP",
        "CCM, LBC",
        "Which Service ports get TLS listeners when `ssl-cert` is set.",
    ),
    doc(
        SSL_NEGOTIATION_POLICY,
        "an ELB security policy name",
        "AWS's default",
        "CCM, LBC",
        "The TLS listeners' security policy.",
    ),
    doc(
        BACKEND_PROTOCOL,
        "`tcp`, `ssl`, `tls`, `http`, `https`",
        "`tcp`",
        "CCM, LBC",
        "How a TLS listener talks to the targets: `ssl`, `tls` and `https` re-encrypt (TLS \
         target group); `tcp` and `http` send plain TCP.",
    ),
    doc(
        ADDITIONAL_RESOURCE_TAGS,
        "`key=value,…` (empty values allowed)",
        "none",
        "CCM, LBC",
        "Extra tags on every AWS resource of the Service. Keys starting with \
         `kubernetes.io/cluster/`, `ferrolb.io/` or `aws:` are reserved.",
    ),
    doc(
        TARGET_NODE_LABELS,
        "`key=value,…` (label syntax, empty values allowed)",
        "none",
        "CCM, LBC",
        "Instance targets are only the eligible nodes that carry every one of these \
         labels with the given value. A node's label change reconciles only the \
         Services that set this.",
    ),
    doc(
        SECURITY_GROUPS,
        "comma list of security group IDs or names",
        "none: the NLB has no security group",
        "CCM (managed mode), LBC",
        "Security groups to attach to the load balancer when it is created; names are \
         looked up in the cluster's VPC, and one that is not there is a Warning.",
    ),
    doc(
        MANAGE_BACKEND_SG_RULES,
        "`true`, `false`",
        "`true`; `false` when `security-groups` is set",
        "LBC",
        "Whether ferrolb writes the nodes' security-group rules for the source ranges. \
         With `false` it writes none and removes any it wrote before; the user's own \
         rules are never touched either way.",
    ),
    doc(
        IP_ADDRESS_TYPE,
        "`ipv4`, `dualstack`",
        "`ipv4`",
        "LBC",
        "Address families of the load balancer's frontend.",
    ),
    doc(
        SOURCE_RANGES,
        "comma list of CIDRs",
        "`0.0.0.0/0` (everyone)",
        "Kubernetes, CCM, LBC",
        "Client ranges allowed in, when `spec.loadBalancerSourceRanges` is empty. With \
         instance targets, each range is admitted to the nodePorts on the nodes' security \
         group, and the load balancer's subnets to the health-check port, by rules ferrolb \
         names and removes again. Not supported with ip targets yet (a Warning, nothing \
         created).",
    ),
];
