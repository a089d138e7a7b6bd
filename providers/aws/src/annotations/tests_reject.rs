//! One row per rejected form: the error names the annotation and says what
//! was wrong.

use ferrolb_provider_api::{PortIntent, Protocol, TrafficPolicy};

use super::keys::*;
use super::parse;
use super::tests_support::{Pairs, ann, invalid, mixed_ports, parse_web, port};

const ARN: &str = "arn:aws:acm:us-east-1:123456789012:certificate/aaaa-1111";

/// (annotations, the key the error must name, a fragment of the reason)
type Row = (
    Vec<(&'static str, &'static str)>,
    &'static str,
    &'static str,
);

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    let long_name = "a234567890123456789012345678901bc";
    vec![
        (vec![(TYPE, "alb")], TYPE, "use one of: nlb, external, nlb-ip"),
        (vec![(TYPE, "classic")], TYPE, "\"classic\" is not allowed"),
        (vec![(NLB_TARGET_TYPE, "pod")], NLB_TARGET_TYPE, "use one of: instance, ip"),
        (vec![(TYPE, "nlb-ip"), (NLB_TARGET_TYPE, "instance")], NLB_TARGET_TYPE, "contradicts"),
        (vec![(SCHEME, "public")], SCHEME, "use one of: internet-facing, internal"),
        (vec![(SCHEME, "internet-facing"), (INTERNAL, "true")], SCHEME, "contradicts"),
        (vec![(SCHEME, "internal"), (INTERNAL, "false")], SCHEME, "remove"),
        (vec![(NAME, long_name)], NAME, "at most 32"),
        (vec![(NAME, "shop_frontend")], NAME, "letters, digits and '-'"),
        (vec![(NAME, "-shop")], NAME, "start or end with '-'"),
        (vec![(NAME, "shop-")], NAME, "start or end with '-'"),
        (vec![(NAME, "internal-shop")], NAME, "\"internal-\""),
        (vec![(SUBNETS, "subnet-1,subnet-1")], SUBNETS, "listed twice"),
        (vec![(SUBNETS, " , ")], SUBNETS, "lists nothing"),
        (vec![(EIP_ALLOCATIONS, "eipalloc-0abc")], EIP_ALLOCATIONS, "internet-facing"),
        (vec![(TYPE, "nlb"), (EIP_ALLOCATIONS, "eip-0abc")], EIP_ALLOCATIONS, "eipalloc-"),
        (vec![(TYPE, "nlb"), (SUBNETS, "subnet-1,subnet-2,subnet-3"), (EIP_ALLOCATIONS, "eipalloc-1,eipalloc-2")], EIP_ALLOCATIONS, "2 EIP allocations given for 3 subnets"),
        (vec![(PRIVATE_IPV4_ADDRESSES, "10.0.0.300")], PRIVATE_IPV4_ADDRESSES, "not an IPv4 address"),
        (vec![(PRIVATE_IPV4_ADDRESSES, "2001:db8::1")], PRIVATE_IPV4_ADDRESSES, "not an IPv4 address"),
        (vec![(TYPE, "nlb"), (PRIVATE_IPV4_ADDRESSES, "10.0.0.5")], PRIVATE_IPV4_ADDRESSES, "need an internal load balancer"),
        (vec![(SUBNETS, "subnet-1"), (PRIVATE_IPV4_ADDRESSES, "10.0.0.5,10.0.1.5")], PRIVATE_IPV4_ADDRESSES, "one per subnet"),
        (vec![(HC_PROTOCOL, "udp")], HC_PROTOCOL, "use one of: tcp, http, https"),
        (vec![(HC_PORT, "0")], HC_PORT, "from 1 to 65535"),
        (vec![(HC_PORT, "70000")], HC_PORT, "from 1 to 65535"),
        (vec![(HC_PORT, "metrics")], HC_PORT, "port names are: http, https"),
        (vec![(HC_PROTOCOL, "http"), (HC_PATH, "healthz")], HC_PATH, "start with '/'"),
        (vec![(HC_PATH, "/ready now")], HC_PATH, "no spaces"),
        (vec![(HC_INTERVAL, "4")], HC_INTERVAL, "from 5 to 300"),
        (vec![(HC_INTERVAL, "301")], HC_INTERVAL, "from 5 to 300"),
        (vec![(HC_INTERVAL, "10s")], HC_INTERVAL, "\"10s\" is not a whole number"),
        (vec![(HC_INTERVAL, "-1")], HC_INTERVAL, "whole number"),
        (vec![(HC_TIMEOUT, "1")], HC_TIMEOUT, "from 2 to 120"),
        (vec![(HC_TIMEOUT, "121")], HC_TIMEOUT, "from 2 to 120"),
        (vec![(HC_HEALTHY_THRESHOLD, "1")], HC_HEALTHY_THRESHOLD, "from 2 to 10"),
        (vec![(HC_HEALTHY_THRESHOLD, "11")], HC_HEALTHY_THRESHOLD, "from 2 to 10"),
        (vec![(HC_UNHEALTHY_THRESHOLD, "99999999999999")], HC_UNHEALTHY_THRESHOLD, "from 2 to 10"),
        (vec![(HC_SUCCESS_CODES, "100")], HC_SUCCESS_CODES, "between 200 and 599"),
        (vec![(HC_SUCCESS_CODES, "300-200")], HC_SUCCESS_CODES, "\"300-200\""),
        (vec![(HC_SUCCESS_CODES, "2xx")], HC_SUCCESS_CODES, "HTTP code or range"),
        (vec![(TARGET_GROUP_ATTRIBUTES, "preserve_client_ip.enabled=yes")], TARGET_GROUP_ATTRIBUTES, "true or false"),
        (vec![(TARGET_GROUP_ATTRIBUTES, "stickiness.enabled")], TARGET_GROUP_ATTRIBUTES, "not key=value"),
        (vec![(TARGET_GROUP_ATTRIBUTES, "a.b=1, a.b=2")], TARGET_GROUP_ATTRIBUTES, "given twice"),
        (vec![(TARGET_GROUP_ATTRIBUTES, "=1")], TARGET_GROUP_ATTRIBUTES, "empty key"),
        (vec![(TARGET_GROUP_ATTRIBUTES, "deregistration_delay.timeout_seconds=4000")], TARGET_GROUP_ATTRIBUTES, "from 0 to 3600"),
        (vec![(TARGET_GROUP_ATTRIBUTES, "bad-key=1")], TARGET_GROUP_ATTRIBUTES, "not an attribute name"),
        (vec![(PROXY_PROTOCOL, "true")], PROXY_PROTOCOL, "the only value is \"*\""),
        (vec![(ATTRIBUTES, "load_balancing.cross_zone.enabled=1")], ATTRIBUTES, "true or false"),
        (vec![(ATTRIBUTES, ",")], ATTRIBUTES, "no key=value pair"),
        (vec![(CROSS_ZONE, "yes")], CROSS_ZONE, "use one of: true, false"),
        (vec![(CROSS_ZONE, "false"), (ATTRIBUTES, "load_balancing.cross_zone.enabled=true")], CROSS_ZONE, "disagrees"),
        (vec![(ACCESS_LOG_ENABLED, "true")], ACCESS_LOG_ENABLED, "no S3 bucket"),
        (vec![(ATTRIBUTES, "access_logs.s3.enabled=true")], ATTRIBUTES, "no S3 bucket"),
        (vec![(ACCESS_LOG_ENABLED, "true"), (ACCESS_LOG_BUCKET, "a"), (ATTRIBUTES, "access_logs.s3.bucket=b")], ACCESS_LOG_BUCKET, "S3 bucket name"),
        (vec![(ACCESS_LOG_ENABLED, "true"), (ACCESS_LOG_BUCKET, "aaa"), (ATTRIBUTES, "access_logs.s3.bucket=bbb")], ACCESS_LOG_BUCKET, "disagrees"),
        (vec![(ACCESS_LOG_BUCKET, "My_Logs")], ACCESS_LOG_BUCKET, "S3 bucket name"),
        (vec![(ACCESS_LOG_PREFIX, "a\u{7}b")], ACCESS_LOG_PREFIX, "S3 key prefix"),
        (vec![(SSL_CERT, "my-certificate")], SSL_CERT, "certificate ARN"),
        (vec![(SSL_CERT, "arn:aws:acm")], SSL_CERT, "certificate ARN"),
        (vec![(SSL_CERT, ARN), (SSL_PORTS, "8443")], SSL_PORTS, "no port \"8443\"; its ports are: 80 (http), 443 (https)"),
        (vec![(SSL_PORTS, "metrics")], SSL_PORTS, "no port \"metrics\""),
        (vec![(SSL_PORTS, "443,443")], SSL_PORTS, "listed twice"),
        (vec![(SSL_CERT, ARN), (SSL_NEGOTIATION_POLICY, "my policy")], SSL_NEGOTIATION_POLICY, "security policy name"),
        (vec![(BACKEND_PROTOCOL, "udp")], BACKEND_PROTOCOL, "use one of: tcp, ssl, tls, http, https"),
        (vec![(ADDITIONAL_RESOURCE_TAGS, "kubernetes.io/cluster/prod=owned")], ADDITIONAL_RESOURCE_TAGS, "reserved prefix \"kubernetes.io/cluster/\""),
        (vec![(ADDITIONAL_RESOURCE_TAGS, "ferrolb.io/service=x")], ADDITIONAL_RESOURCE_TAGS, "reserved prefix \"ferrolb.io/\""),
        (vec![(ADDITIONAL_RESOURCE_TAGS, "aws:cloudformation:stack-name=x")], ADDITIONAL_RESOURCE_TAGS, "reserved prefix \"aws:\""),
        (vec![(ADDITIONAL_RESOURCE_TAGS, "AWS:x=y")], ADDITIONAL_RESOURCE_TAGS, "reserved prefix"),
        (vec![(ADDITIONAL_RESOURCE_TAGS, "team")], ADDITIONAL_RESOURCE_TAGS, "not key=value"),
        (vec![(ADDITIONAL_RESOURCE_TAGS, "team=a,team=b")], ADDITIONAL_RESOURCE_TAGS, "given twice"),
        (vec![(TARGET_NODE_LABELS, "bad key=x")], TARGET_NODE_LABELS, "not a label key"),
        (vec![(TARGET_NODE_LABELS, "Example.com/pool=x")], TARGET_NODE_LABELS, "not a label key"),
        (vec![(TARGET_NODE_LABELS, "pool=-web")], TARGET_NODE_LABELS, "not a label value"),
        (vec![(SECURITY_GROUPS, "sg-1,sg-1")], SECURITY_GROUPS, "listed twice"),
        (vec![(MANAGE_BACKEND_SG_RULES, "maybe")], MANAGE_BACKEND_SG_RULES, "use one of: true, false"),
        (vec![(IP_ADDRESS_TYPE, "ipv6")], IP_ADDRESS_TYPE, "use one of: ipv4, dualstack"),
        (vec![(IP_ADDRESS_TYPE, "dualstack-without-public-ipv4")], IP_ADDRESS_TYPE, "use one of: ipv4, dualstack"),
        (vec![(SOURCE_RANGES, "10.0.0.0")], SOURCE_RANGES, "not a CIDR"),
        (vec![(SOURCE_RANGES, "10.0.0.0/33")], SOURCE_RANGES, "not a CIDR"),
        (vec![(SOURCE_RANGES, "10.0.0.0/8,anywhere")], SOURCE_RANGES, "\"anywhere\""),
    ]
}

#[test]
fn annotations_rejected_forms() {
    for (pairs, key, fragment) in rows() {
        let (field, reason) = invalid(parse_web(&pairs, TrafficPolicy::Cluster));
        assert_eq!(
            field,
            format!("metadata.annotations[{key}]"),
            "{pairs:?}: {reason}"
        );
        assert!(
            reason.contains(fragment),
            "{pairs:?}: reason {reason:?} lacks {fragment:?}"
        );
    }
}

#[test]
fn annotations_rejects_long_tags() {
    let key = "k".repeat(129);
    let pairs = [(ADDITIONAL_RESOURCE_TAGS, format!("{key}=v"))];
    let map = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let (field, reason) = invalid(parse(&map, &[], TrafficPolicy::Cluster, None));
    assert!(field.contains(ADDITIONAL_RESOURCE_TAGS));
    assert!(reason.contains("1 to 128"), "{reason}");
}

#[test]
fn annotations_reject_sctp_ports() {
    let ports = vec![
        port("http", Protocol::Tcp, 80, 30080),
        port("sig", Protocol::Sctp, 3868, 30868),
    ];
    let (field, reason) = invalid(parse(&ann(&[]), &ports, TrafficPolicy::Cluster, None));
    assert_eq!(field, "spec.ports[1].protocol");
    assert!(reason.contains("SCTP"), "{reason}");
}

#[test]
fn annotations_reject_tls_where_no_port_can_take_it() {
    let udp_only = vec![port("dns", Protocol::Udp, 53, 30053)];
    let mixed_only = vec![
        port("dns-tcp", Protocol::Tcp, 53, 30053),
        port("dns-udp", Protocol::Udp, 53, 30053),
    ];
    let cases: [(&[PortIntent], Pairs, &str, &str); 5] = [
        (&udp_only, &[(SSL_CERT, ARN)], SSL_CERT, "no TCP port"),
        (&mixed_only, &[(SSL_CERT, ARN)], SSL_CERT, "also serves UDP"),
        (
            &mixed_only,
            &[(SSL_CERT, ARN), (SSL_PORTS, "*")],
            SSL_CERT,
            "also serves UDP",
        ),
        (
            &mixed_ports(),
            &[(SSL_CERT, ARN), (SSL_PORTS, "53")],
            SSL_PORTS,
            "serves TCP and UDP",
        ),
        (
            &mixed_ports(),
            &[(SSL_CERT, ARN), (SSL_PORTS, "mdns")],
            SSL_PORTS,
            "\"mdns\" is UDP",
        ),
    ];
    for (ports, pairs, key, fragment) in cases {
        let (field, reason) = invalid(parse(&ann(pairs), ports, TrafficPolicy::Cluster, None));
        assert_eq!(field, format!("metadata.annotations[{key}]"), "{pairs:?}");
        assert!(reason.contains(fragment), "{pairs:?}: {reason}");
    }
}

#[test]
fn annotations_reject_unresolvable_health_check_ports() {
    let mut no_node_port = port("web", Protocol::Tcp, 80, 30080);
    no_node_port.node_port = None;
    let mut named_target = port("web", Protocol::Tcp, 80, 30080);
    named_target.target_port = None;
    let cases = [
        (
            vec![no_node_port],
            &[(HC_PORT, "web")][..],
            HC_PORT,
            "no nodePort",
        ),
        (
            vec![named_target.clone()],
            &[(HC_PORT, "web"), (NLB_TARGET_TYPE, "ip")][..],
            HC_PORT,
            "named targetPort",
        ),
        (vec![], &[(HC_PORT, "web")][..], HC_PORT, "have no names"),
    ];
    for (ports, pairs, key, fragment) in cases {
        let (field, reason) = invalid(parse(&ann(pairs), &ports, TrafficPolicy::Cluster, None));
        assert_eq!(field, format!("metadata.annotations[{key}]"), "{pairs:?}");
        assert!(reason.contains(fragment), "{pairs:?}: {reason}");
    }
    // Local policy with instance targets needs a healthCheckNodePort.
    let (field, reason) = invalid(parse(
        &ann(&[]),
        &[named_target],
        TrafficPolicy::Local,
        None,
    ));
    assert_eq!(field, "spec.healthCheckNodePort");
    assert!(reason.contains("has none"), "{reason}");
}
