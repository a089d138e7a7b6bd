//! Defaults: which peer's rule applies for each traffic policy, target type
//! and load-balancer type.

use std::collections::BTreeMap;

use ferrolb_provider_api::{Protocol, TrafficPolicy};

use super::keys::*;
use super::tests_support::{HCNP, Pairs, ann, mixed_ports, parse_web, port};
use super::*;

fn hc(
    protocol: HcProtocol,
    port: HcPort,
    path: Option<&str>,
    timing: (u16, u16, u8, u8),
) -> HealthCheck {
    HealthCheck {
        protocol,
        port,
        path: path.map(Into::into),
        interval_secs: timing.0,
        timeout_secs: timing.1,
        healthy_threshold: timing.2,
        unhealthy_threshold: timing.3,
        success_codes: (protocol != HcProtocol::Tcp).then(|| "200-399".into()),
    }
}

fn cluster_hc(interval: u16) -> HealthCheck {
    hc(
        HcProtocol::Tcp,
        HcPort::TrafficPort,
        None,
        (interval, 10, 3, 3),
    )
}

fn local_hc() -> HealthCheck {
    hc(
        HcProtocol::Http,
        HcPort::Port(HCNP),
        Some("/healthz"),
        (10, 6, 2, 2),
    )
}

#[test]
fn annotations_defaults_without_any_annotation_follow_lbc() {
    let opts = parse_web(&[], TrafficPolicy::Cluster).unwrap();
    assert_eq!(
        opts,
        AwsOptions {
            lb_type: LbType::Unset,
            target_type: TargetType::Instance,
            scheme: Scheme::Internal,
            name: None,
            subnets: vec![],
            eip_allocations: vec![],
            private_ipv4_addresses: vec![],
            health_check: cluster_hc(10),
            target_group_attributes: BTreeMap::new(),
            load_balancer_attributes: BTreeMap::new(),
            tls: None,
            additional_tags: BTreeMap::new(),
            target_node_labels: BTreeMap::new(),
            security_groups: vec![],
            manage_backend_security_group_rules: true,
            ip_address_type: IpAddressType::Ipv4,
            source_ranges: vec![],
        }
    );
}

#[test]
fn annotations_defaults_by_type_and_policy() {
    use TrafficPolicy::{Cluster, Local};
    #[rustfmt::skip]
    let cases: Vec<(Pairs, TrafficPolicy, Scheme, TargetType, HealthCheck)> = vec![
        (&[], Cluster, Scheme::Internal, TargetType::Instance, cluster_hc(10)),
        (&[(TYPE, "external")], Cluster, Scheme::Internal, TargetType::Instance, cluster_hc(10)),
        (&[(TYPE, "nlb")], Cluster, Scheme::InternetFacing, TargetType::Instance, cluster_hc(30)),
        (&[(TYPE, "nlb-ip")], Cluster, Scheme::Internal, TargetType::Ip, cluster_hc(10)),
        (&[], Local, Scheme::Internal, TargetType::Instance, local_hc()),
        (&[(TYPE, "external")], Local, Scheme::Internal, TargetType::Instance, local_hc()),
        // The CCM's Local health check is the same as LBC's.
        (&[(TYPE, "nlb")], Local, Scheme::InternetFacing, TargetType::Instance, local_hc()),
        // Pods are checked directly: the Cluster defaults apply.
        (&[(TYPE, "nlb-ip")], Local, Scheme::Internal, TargetType::Ip, cluster_hc(10)),
        (&[(TYPE, "external"), (NLB_TARGET_TYPE, "ip")], Local, Scheme::Internal, TargetType::Ip, cluster_hc(10)),
        (&[(TYPE, "nlb"), (NLB_TARGET_TYPE, "ip")], Local, Scheme::InternetFacing, TargetType::Ip, cluster_hc(30)),
    ];
    for (pairs, policy, scheme, target_type, health_check) in cases {
        let opts = parse_web(pairs, policy).unwrap();
        assert_eq!(opts.scheme, scheme, "{pairs:?} {policy:?}");
        assert_eq!(opts.target_type, target_type, "{pairs:?} {policy:?}");
        assert_eq!(opts.health_check, health_check, "{pairs:?} {policy:?}");
    }
}

#[test]
fn annotations_explicit_health_check_wins_over_each_default() {
    use TrafficPolicy::{Cluster, Local};
    #[rustfmt::skip]
    let cases: Vec<(Pairs, TrafficPolicy, HealthCheck)> = vec![
        (&[(HC_PROTOCOL, "tcp")], Local, hc(HcProtocol::Tcp, HcPort::Port(HCNP), None, (10, 6, 2, 2))),
        (&[(HC_PORT, "traffic-port")], Local, hc(HcProtocol::Http, HcPort::TrafficPort, Some("/healthz"), (10, 6, 2, 2))),
        (&[(HC_PATH, "/livez"), (HC_INTERVAL, "30")], Local, hc(HcProtocol::Http, HcPort::Port(HCNP), Some("/livez"), (30, 6, 2, 2))),
        (&[(HC_PROTOCOL, "https")], Local, hc(HcProtocol::Https, HcPort::Port(HCNP), Some("/healthz"), (10, 6, 2, 2))),
        (&[(HC_PROTOCOL, "http")], Cluster, hc(HcProtocol::Http, HcPort::TrafficPort, Some("/"), (10, 10, 3, 3))),
        (&[(TYPE, "nlb"), (HC_PROTOCOL, "http"), (HC_PORT, "10256"), (HC_PATH, "/healthz")], Cluster,
            hc(HcProtocol::Http, HcPort::Port(10256), Some("/healthz"), (30, 10, 3, 3))),
        (&[(HC_TIMEOUT, "5"), (HC_HEALTHY_THRESHOLD, "4"), (HC_UNHEALTHY_THRESHOLD, "5")], Cluster,
            hc(HcProtocol::Tcp, HcPort::TrafficPort, None, (10, 5, 4, 5))),
    ];
    for (pairs, policy, health_check) in cases {
        assert_eq!(
            parse_web(pairs, policy).unwrap().health_check,
            health_check,
            "{pairs:?} {policy:?}"
        );
    }
}

#[test]
fn annotations_local_policy_without_health_check_node_port_needs_an_explicit_port() {
    let opts = parse(
        &ann(&[(HC_PORT, "8080")]),
        &[port("web", Protocol::Tcp, 80, 30080)],
        TrafficPolicy::Local,
        None,
    )
    .unwrap();
    assert_eq!(opts.health_check.port, HcPort::Port(8080));
}

#[test]
fn annotations_leave_tcp_udp_ports_untouched() {
    const ARN: &str = "arn:aws:acm:eu-west-1:123456789012:certificate/x";
    let ports = mixed_ports();
    // Without TLS nothing about the ports changes the options.
    let plain = parse(&ann(&[]), &ports, TrafficPolicy::Cluster, None).unwrap();
    assert_eq!(plain.tls, None);
    assert_eq!(plain.health_check, cluster_hc(10));
    // TLS by default, and with "*", goes only to the TCP-only port: 53 stays
    // one TCP_UDP listener and 5353 stays UDP.
    for pairs in [
        &[(SSL_CERT, ARN)][..],
        &[(SSL_CERT, ARN), (SSL_PORTS, "*")][..],
    ] {
        let tls = parse(&ann(pairs), &ports, TrafficPolicy::Cluster, None)
            .unwrap()
            .tls
            .unwrap();
        assert_eq!(tls.ports, [443], "{pairs:?}");
    }
    let named = parse(
        &ann(&[(SSL_CERT, ARN), (SSL_PORTS, "https")]),
        &ports,
        TrafficPolicy::Cluster,
        None,
    )
    .unwrap();
    assert_eq!(named.tls.unwrap().ports, [443]);
}
