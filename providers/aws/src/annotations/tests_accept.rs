//! One row per accepted form of every annotation.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ferrolb_provider_api::TrafficPolicy;

use super::keys::*;
use super::tests_support::parse_web;
use super::*;

type Check = fn(&AwsOptions);

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    super::tests_support::ann(pairs)
}

const ARN1: &str = "arn:aws:acm:us-east-1:123456789012:certificate/aaaa-1111";
const ARN2: &str = "arn:aws:iam::123456789012:server-certificate/legacy";

#[rustfmt::skip]
fn rows() -> Vec<(Vec<(&'static str, &'static str)>, Check)> {
    vec![
        // type
        (vec![(TYPE, "nlb")], |o| { assert_eq!(o.lb_type, LbType::Nlb); assert_eq!(o.scheme, Scheme::InternetFacing) }),
        (vec![(TYPE, "external")], |o| { assert_eq!(o.lb_type, LbType::External); assert_eq!(o.scheme, Scheme::Internal) }),
        (vec![(TYPE, "nlb-ip")], |o| { assert_eq!(o.lb_type, LbType::NlbIp); assert_eq!(o.target_type, TargetType::Ip) }),
        (vec![(TYPE, " NLB ")], |o| assert_eq!(o.lb_type, LbType::Nlb)),
        (vec![(TYPE, "")], |o| assert_eq!(o.lb_type, LbType::Unset)),
        // nlb-target-type
        (vec![(NLB_TARGET_TYPE, "ip")], |o| assert_eq!(o.target_type, TargetType::Ip)),
        (vec![(NLB_TARGET_TYPE, "instance")], |o| assert_eq!(o.target_type, TargetType::Instance)),
        (vec![(TYPE, "external"), (NLB_TARGET_TYPE, "ip")], |o| assert_eq!(o.target_type, TargetType::Ip)),
        (vec![(TYPE, "nlb-ip"), (NLB_TARGET_TYPE, "IP")], |o| assert_eq!(o.target_type, TargetType::Ip)),
        (vec![(TYPE, "nlb"), (NLB_TARGET_TYPE, "ip")], |o| assert_eq!(o.target_type, TargetType::Ip)),
        // scheme and internal
        (vec![(SCHEME, "internet-facing")], |o| assert_eq!(o.scheme, Scheme::InternetFacing)),
        (vec![(SCHEME, "internal")], |o| assert_eq!(o.scheme, Scheme::Internal)),
        (vec![(TYPE, "nlb"), (SCHEME, "internal")], |o| assert_eq!(o.scheme, Scheme::Internal)),
        (vec![(TYPE, "nlb"), (INTERNAL, "true")], |o| assert_eq!(o.scheme, Scheme::Internal)),
        (vec![(TYPE, "nlb"), (INTERNAL, "0.0.0.0/0")], |o| assert_eq!(o.scheme, Scheme::Internal)),
        (vec![(INTERNAL, "false")], |o| assert_eq!(o.scheme, Scheme::InternetFacing)),
        (vec![(INTERNAL, "FALSE")], |o| assert_eq!(o.scheme, Scheme::InternetFacing)),
        (vec![(TYPE, "nlb"), (INTERNAL, "")], |o| assert_eq!(o.scheme, Scheme::InternetFacing)),
        (vec![(SCHEME, "internal"), (INTERNAL, "true")], |o| assert_eq!(o.scheme, Scheme::Internal)),
        (vec![(SCHEME, "internet-facing"), (INTERNAL, "false")], |o| assert_eq!(o.scheme, Scheme::InternetFacing)),
        // name
        (vec![(NAME, "shop-frontend")], |o| assert_eq!(o.name.as_deref(), Some("shop-frontend"))),
        (vec![(NAME, "a234567890123456789012345678901b")], |o| assert_eq!(o.name.as_ref().map(String::len), Some(32))),
        (vec![(NAME, "internalapi")], |o| assert_eq!(o.name.as_deref(), Some("internalapi"))),
        // subnets and static addresses
        (vec![(SUBNETS, "subnet-0a1, subnet-0b2,")], |o| assert_eq!(o.subnets, ["subnet-0a1", "subnet-0b2"])),
        (vec![(SUBNETS, "public-a,public b")], |o| assert_eq!(o.subnets, ["public-a", "public b"])),
        (vec![(SCHEME, "internet-facing"), (SUBNETS, "subnet-1,subnet-2"), (EIP_ALLOCATIONS, "eipalloc-0abc, eipalloc-0def")],
            |o| assert_eq!(o.eip_allocations, ["eipalloc-0abc", "eipalloc-0def"])),
        (vec![(TYPE, "nlb"), (EIP_ALLOCATIONS, "eipalloc-12345678")], |o| assert_eq!(o.eip_allocations, ["eipalloc-12345678"])),
        (vec![(SUBNETS, "subnet-1,subnet-2"), (PRIVATE_IPV4_ADDRESSES, "10.0.1.10, 10.0.2.10")],
            |o| assert_eq!(o.private_ipv4_addresses, [Ipv4Addr::new(10, 0, 1, 10), Ipv4Addr::new(10, 0, 2, 10)])),
        (vec![(TYPE, "nlb"), (INTERNAL, "true"), (PRIVATE_IPV4_ADDRESSES, "192.168.0.5")],
            |o| assert_eq!(o.private_ipv4_addresses, [Ipv4Addr::new(192, 168, 0, 5)])),
        // health check
        (vec![(HC_PROTOCOL, "HTTP")], |o| { assert_eq!(o.health_check.protocol, HcProtocol::Http); assert_eq!(o.health_check.path.as_deref(), Some("/")) }),
        (vec![(HC_PROTOCOL, "https"), (HC_PATH, "/ready?full=1")], |o| { assert_eq!(o.health_check.protocol, HcProtocol::Https); assert_eq!(o.health_check.path.as_deref(), Some("/ready?full=1")) }),
        (vec![(HC_PROTOCOL, "tcp"), (HC_PATH, "/ignored")], |o| assert_eq!(o.health_check.path, None)),
        (vec![(HC_PORT, "8080")], |o| assert_eq!(o.health_check.port, HcPort::Port(8080))),
        (vec![(HC_PORT, "traffic-port")], |o| assert_eq!(o.health_check.port, HcPort::TrafficPort)),
        (vec![(HC_PORT, "https")], |o| assert_eq!(o.health_check.port, HcPort::Port(30443))),
        (vec![(NLB_TARGET_TYPE, "ip"), (HC_PORT, "https")], |o| assert_eq!(o.health_check.port, HcPort::Port(8443))),
        (vec![(HC_INTERVAL, "5"), (HC_TIMEOUT, "120")], |o| { assert_eq!(o.health_check.interval_secs, 5); assert_eq!(o.health_check.timeout_secs, 120) }),
        (vec![(HC_INTERVAL, "300"), (HC_TIMEOUT, "2")], |o| { assert_eq!(o.health_check.interval_secs, 300); assert_eq!(o.health_check.timeout_secs, 2) }),
        (vec![(HC_HEALTHY_THRESHOLD, "10"), (HC_UNHEALTHY_THRESHOLD, "2")], |o| { assert_eq!(o.health_check.healthy_threshold, 10); assert_eq!(o.health_check.unhealthy_threshold, 2) }),
        (vec![(HC_PROTOCOL, "http"), (HC_SUCCESS_CODES, "200-399, 202 ,")], |o| assert_eq!(o.health_check.success_codes.as_deref(), Some("200-399,202"))),
        (vec![(HC_PROTOCOL, "http"), (HC_SUCCESS_CODES, "599")], |o| assert_eq!(o.health_check.success_codes.as_deref(), Some("599"))),
        (vec![(HC_SUCCESS_CODES, "200")], |o| assert_eq!(o.health_check.success_codes, None)),
        (vec![(HC_PROTOCOL, "http")], |o| assert_eq!(o.health_check.success_codes.as_deref(), Some("200-399"))),
        // target-group attributes and proxy protocol
        (vec![(TARGET_GROUP_ATTRIBUTES, "preserve_client_ip.enabled=false, deregistration_delay.timeout_seconds = 30")],
            |o| assert_eq!(o.target_group_attributes, map(&[("preserve_client_ip.enabled", "false"), ("deregistration_delay.timeout_seconds", "30")]))),
        (vec![(TARGET_GROUP_ATTRIBUTES, "some.future_attribute=anything goes")],
            |o| assert_eq!(o.target_group_attributes, map(&[("some.future_attribute", "anything goes")]))),
        (vec![(PROXY_PROTOCOL, "*")], |o| assert_eq!(o.target_group_attributes, map(&[("proxy_protocol_v2.enabled", "true")]))),
        (vec![(PROXY_PROTOCOL, "*"), (TARGET_GROUP_ATTRIBUTES, "proxy_protocol_v2.enabled=false")],
            |o| assert_eq!(o.target_group_attributes, map(&[("proxy_protocol_v2.enabled", "true")]))),
        // load-balancer attributes
        (vec![(ATTRIBUTES, "deletion_protection.enabled=true,dns_record.client_routing_policy=any_availability_zone")],
            |o| assert_eq!(o.load_balancer_attributes, map(&[("deletion_protection.enabled", "true"), ("dns_record.client_routing_policy", "any_availability_zone")]))),
        (vec![(CROSS_ZONE, "True")], |o| assert_eq!(o.load_balancer_attributes, map(&[("load_balancing.cross_zone.enabled", "true")]))),
        (vec![(CROSS_ZONE, "true"), (ATTRIBUTES, "load_balancing.cross_zone.enabled=true")],
            |o| assert_eq!(o.load_balancer_attributes, map(&[("load_balancing.cross_zone.enabled", "true")]))),
        (vec![(ACCESS_LOG_ENABLED, "true"), (ACCESS_LOG_BUCKET, "my-logs.example"), (ACCESS_LOG_PREFIX, "nlb/shop")],
            |o| assert_eq!(o.load_balancer_attributes, map(&[("access_logs.s3.enabled", "true"), ("access_logs.s3.bucket", "my-logs.example"), ("access_logs.s3.prefix", "nlb/shop")]))),
        (vec![(ATTRIBUTES, "access_logs.s3.enabled=true,access_logs.s3.bucket=logs")],
            |o| assert_eq!(o.load_balancer_attributes.get("access_logs.s3.bucket").map(String::as_str), Some("logs"))),
        (vec![(ACCESS_LOG_ENABLED, "false"), (ACCESS_LOG_BUCKET, "my-logs")],
            |o| assert_eq!(o.load_balancer_attributes, map(&[("access_logs.s3.enabled", "false")]))),
        // TLS
        (vec![(SSL_CERT, ARN1)], |o| assert_eq!(o.tls, Some(Tls { certificates: vec![ARN1.into()], ports: vec![80, 443], policy: None, backend: BackendProtocol::Tcp }))),
        (vec![(SSL_CERT, "arn:aws:acm:us-east-1:123456789012:certificate/aaaa-1111, arn:aws:iam::123456789012:server-certificate/legacy")],
            |o| assert_eq!(o.tls.as_ref().map(|t| t.certificates.clone()), Some(vec![ARN1.to_string(), ARN2.to_string()]))),
        (vec![(SSL_CERT, ARN1), (SSL_PORTS, "443")], |o| assert_eq!(o.tls.as_ref().map(|t| t.ports.clone()), Some(vec![443]))),
        (vec![(SSL_CERT, ARN1), (SSL_PORTS, "https")], |o| assert_eq!(o.tls.as_ref().map(|t| t.ports.clone()), Some(vec![443]))),
        (vec![(SSL_CERT, ARN1), (SSL_PORTS, "443, http")], |o| assert_eq!(o.tls.as_ref().map(|t| t.ports.clone()), Some(vec![80, 443]))),
        (vec![(SSL_CERT, ARN1), (SSL_PORTS, "*")], |o| assert_eq!(o.tls.as_ref().map(|t| t.ports.clone()), Some(vec![80, 443]))),
        (vec![(SSL_PORTS, "443")], |o| assert_eq!(o.tls, None)),
        (vec![(SSL_CERT, ARN1), (SSL_NEGOTIATION_POLICY, "ELBSecurityPolicy-TLS13-1-2-2021-06")],
            |o| assert_eq!(o.tls.as_ref().and_then(|t| t.policy.as_deref()), Some("ELBSecurityPolicy-TLS13-1-2-2021-06"))),
        (vec![(SSL_CERT, ARN1), (BACKEND_PROTOCOL, "ssl")], |o| assert_eq!(o.tls.as_ref().map(|t| t.backend), Some(BackendProtocol::Tls))),
        (vec![(SSL_CERT, ARN1), (BACKEND_PROTOCOL, "TLS")], |o| assert_eq!(o.tls.as_ref().map(|t| t.backend), Some(BackendProtocol::Tls))),
        (vec![(SSL_CERT, ARN1), (BACKEND_PROTOCOL, "https")], |o| assert_eq!(o.tls.as_ref().map(|t| t.backend), Some(BackendProtocol::Tls))),
        (vec![(SSL_CERT, ARN1), (BACKEND_PROTOCOL, "tcp")], |o| assert_eq!(o.tls.as_ref().map(|t| t.backend), Some(BackendProtocol::Tcp))),
        (vec![(SSL_CERT, ARN1), (BACKEND_PROTOCOL, "http")], |o| assert_eq!(o.tls.as_ref().map(|t| t.backend), Some(BackendProtocol::Tcp))),
        (vec![(BACKEND_PROTOCOL, "ssl")], |o| assert_eq!(o.tls, None)),
        // tags and node labels
        (vec![(ADDITIONAL_RESOURCE_TAGS, "team=shop, env = prod")], |o| assert_eq!(o.additional_tags, map(&[("team", "shop"), ("env", "prod")]))),
        (vec![(ADDITIONAL_RESOURCE_TAGS, "flag=,expr=a=b")], |o| assert_eq!(o.additional_tags, map(&[("flag", ""), ("expr", "a=b")]))),
        (vec![(ADDITIONAL_RESOURCE_TAGS, "kubernetes.io/role=web")], |o| assert_eq!(o.additional_tags, map(&[("kubernetes.io/role", "web")]))),
        (vec![(TARGET_NODE_LABELS, "node.kubernetes.io/pool=web, spot=")], |o| assert_eq!(o.target_node_labels, map(&[("node.kubernetes.io/pool", "web"), ("spot", "")]))),
        // security groups
        (vec![(SECURITY_GROUPS, "sg-0123, frontend")], |o| { assert_eq!(o.security_groups, ["sg-0123", "frontend"]); assert!(!o.manage_backend_security_group_rules) }),
        (vec![(SECURITY_GROUPS, "sg-0123"), (MANAGE_BACKEND_SG_RULES, "true")], |o| assert!(o.manage_backend_security_group_rules)),
        (vec![(MANAGE_BACKEND_SG_RULES, "false")], |o| assert!(!o.manage_backend_security_group_rules)),
        // ip-address-type
        (vec![(IP_ADDRESS_TYPE, "dualstack")], |o| assert_eq!(o.ip_address_type, IpAddressType::Dualstack)),
        (vec![(IP_ADDRESS_TYPE, "IPv4")], |o| assert_eq!(o.ip_address_type, IpAddressType::Ipv4)),
        // source ranges
        (vec![(SOURCE_RANGES, "10.0.0.0/8, 2001:db8::/32")], |o| assert_eq!(o.source_ranges, ["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse::<ipnet::IpNet>().unwrap()])),
        (vec![(SOURCE_RANGES, "10.1.2.3/8,10.0.0.0/8")], |o| assert_eq!(o.source_ranges, ["10.0.0.0/8".parse::<ipnet::IpNet>().unwrap()])),
        // keys for other controllers are ignored
        (vec![("service.beta.kubernetes.io/aws-load-balancer-connection-idle-timeout", "not a number")], |o| assert_eq!(o.lb_type, LbType::Unset)),
        (vec![("service.beta.kubernetes.io/aws-load-balancer-alpn-policy", "???")], |o| assert_eq!(o.tls, None)),
    ]
}

#[test]
fn annotations_accepted_forms() {
    for (pairs, check) in rows() {
        eprintln!("row: {pairs:?}");
        let opts = parse_web(&pairs, TrafficPolicy::Cluster)
            .unwrap_or_else(|e| panic!("{pairs:?} was rejected: {e}"));
        check(&opts);
    }
}
