//! Golden tests of the plan: each case renders its actions, one per line, and
//! compares them with `testdata/plan/<case>.golden`. `FERROLB_BLESS=1 cargo
//! test -p ferrolb-aws plan` rewrites the files; review the diff.

use std::collections::{BTreeMap, BTreeSet};

use crate::annotations::{HcPort, HcProtocol, HealthCheck, IpAddressType, Scheme, TargetType};
use crate::model::{DesiredListener, DesiredLoadBalancer, DesiredTargetGroup, NlbProtocol, Target};
use crate::plan::{
    Action, Observed, ObservedListener, ObservedLoadBalancer, ObservedTargetGroup, TgRef, plan,
};

fn hc() -> HealthCheck {
    HealthCheck {
        protocol: HcProtocol::Tcp,
        port: HcPort::TrafficPort,
        path: None,
        interval_secs: 10,
        timeout_secs: 10,
        healthy_threshold: 3,
        unhealthy_threshold: 3,
        success_codes: None,
    }
}

fn targets(ids: &[&str], port: u16) -> BTreeSet<Target> {
    ids.iter()
        .map(|id| Target {
            id: id.to_string(),
            port,
        })
        .collect()
}

fn tg(port: u16, node_port: u16, nodes: &[&str]) -> DesiredTargetGroup {
    DesiredTargetGroup {
        name: format!("tg-{port}"),
        service_port: port,
        port: node_port,
        protocol: NlbProtocol::Tcp,
        target_type: TargetType::Instance,
        health_check: hc(),
        attributes: BTreeMap::new(),
        tags: BTreeMap::from([("ferrolb.io/role".into(), "target-group".into())]),
        targets: targets(nodes, node_port),
    }
}

fn desired(tgs: Vec<DesiredTargetGroup>) -> DesiredLoadBalancer {
    DesiredLoadBalancer {
        name: "k8s-ns-web-0123456789".into(),
        scheme: Scheme::Internal,
        subnets: vec!["subnet-a".into()],
        eip_allocations: Vec::new(),
        private_ipv4_addresses: Vec::new(),
        ip_address_type: IpAddressType::Ipv4,
        security_groups: Vec::new(),
        attributes: BTreeMap::new(),
        tags: BTreeMap::from([("ferrolb.io/role".into(), "load-balancer".into())]),
        listeners: tgs
            .iter()
            .map(|t| DesiredListener {
                port: t.service_port,
                protocol: t.protocol,
                certificates: Vec::new(),
                ssl_policy: None,
                target_group: t.name.clone(),
            })
            .collect(),
        target_groups: tgs,
    }
}

/// What exists after `desired` was applied: the same thing, with ARNs.
fn observed_from(d: &DesiredLoadBalancer) -> Observed {
    Observed {
        load_balancer: Some(ObservedLoadBalancer {
            arn: "arn:lb".into(),
            name: d.name.clone(),
            dns_name: "lb.example".into(),
            addresses: Vec::new(),
            subnets: d.subnets.clone(),
            tags: d.tags.clone(),
            attributes: None,
        }),
        listeners: d
            .listeners
            .iter()
            .map(|l| ObservedListener {
                arn: format!("arn:listener/{}", l.port),
                port: l.port,
                protocol: Some(l.protocol),
                certificates: l.certificates.clone(),
                ssl_policy: None,
                target_group_arn: Some(format!("arn:tg/{}", l.target_group)),
            })
            .collect(),
        target_groups: d
            .target_groups
            .iter()
            .map(|t| ObservedTargetGroup {
                arn: format!("arn:tg/{}", t.name),
                name: t.name.clone(),
                port: t.port,
                protocol: Some(t.protocol),
                target_type: Some(t.target_type),
                health_check: t.health_check.clone(),
                tags: t.tags.clone(),
                attributes: None,
                targets: t.targets.clone(),
            })
            .collect(),
    }
}

fn render(actions: &[Action]) -> String {
    let tg = |r: &TgRef| match r {
        TgRef::Arn(a) => a.clone(),
        TgRef::New(n) => format!("new:{n}"),
    };
    let ts = |t: &[Target]| {
        t.iter()
            .map(|t| format!("{}:{}", t.id, t.port))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut out = String::new();
    for a in actions {
        let line = match a {
            Action::CreateLoadBalancer => "CreateLoadBalancer".to_string(),
            Action::SetLoadBalancerAttributes(m) => format!("ModifyLoadBalancerAttributes {m:?}"),
            Action::AddLoadBalancerTags(m) => format!("AddTags {m:?}"),
            Action::CreateTargetGroup(n) => format!("CreateTargetGroup {n}"),
            Action::ModifyHealthCheck { arn, health_check } => {
                format!("ModifyTargetGroup {arn} {health_check:?}")
            }
            Action::SetTargetGroupAttributes { tg: r, attributes } => {
                format!("ModifyTargetGroupAttributes {} {attributes:?}", tg(r))
            }
            Action::RegisterTargets { tg: r, targets } => {
                format!("RegisterTargets {} {}", tg(r), ts(targets))
            }
            Action::CreateListener { port, tg: r } => format!("CreateListener {port} -> {}", tg(r)),
            Action::ModifyListener { arn, port, tg: r } => {
                format!("ModifyListener {arn} {port} -> {}", tg(r))
            }
            Action::ChangeListenerCertificates { arn, add, remove } => {
                format!("ChangeListenerCertificates {arn} +{add:?} -{remove:?}")
            }
            Action::DeregisterTargets { arn, targets } => {
                format!("DeregisterTargets {arn} {}", ts(targets))
            }
            Action::DeleteListener { arn } => format!("DeleteListener {arn}"),
            Action::DeleteTargetGroup { arn } => format!("DeleteTargetGroup {arn}"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn golden(case: &str, actions: &[Action]) {
    let path = format!("{}/testdata/plan/{case}.golden", env!("CARGO_MANIFEST_DIR"));
    let got = render(actions);
    if std::env::var_os("FERROLB_BLESS").is_some() {
        std::fs::create_dir_all(std::path::Path::new(&path).parent().unwrap()).unwrap();
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{path} is missing; run with FERROLB_BLESS=1 to write it"));
    assert_eq!(got, want, "plan for {case} differs from {path}");
}

#[test]
fn create_with_three_ports() {
    let d = desired(vec![
        tg(80, 30080, &["i-1", "i-2"]),
        tg(443, 30443, &["i-1", "i-2"]),
        tg(8080, 31080, &["i-1", "i-2"]),
    ]);
    golden("create_three_ports", &plan(&d, &Observed::default()));
}

#[test]
fn unchanged_plans_nothing() {
    let d = desired(vec![
        tg(80, 30080, &["i-1", "i-2"]),
        tg(443, 30443, &["i-1"]),
    ]);
    assert_eq!(plan(&d, &observed_from(&d)), Vec::<Action>::new());
}

#[test]
fn node_joins_and_leaves() {
    let before = desired(vec![
        tg(80, 30080, &["i-1", "i-2"]),
        tg(443, 30443, &["i-1", "i-2"]),
    ]);
    let after = desired(vec![
        tg(80, 30080, &["i-1", "i-3"]),
        tg(443, 30443, &["i-1", "i-3"]),
    ]);
    golden(
        "node_joins_and_leaves",
        &plan(&after, &observed_from(&before)),
    );
}

#[test]
fn health_check_change_touches_one_target_group() {
    let before = desired(vec![tg(80, 30080, &["i-1"]), tg(443, 30443, &["i-1"])]);
    let mut after = before.clone();
    after.target_groups[1].health_check.interval_secs = 30;
    let actions = plan(&after, &observed_from(&before));
    golden("health_check_change", &actions);
    assert_eq!(actions.len(), 1);
}

#[test]
fn port_added_and_removed() {
    let before = desired(vec![tg(80, 30080, &["i-1"]), tg(443, 30443, &["i-1"])]);
    let after = desired(vec![tg(80, 30080, &["i-1"]), tg(8443, 30843, &["i-1"])]);
    golden(
        "port_added_and_removed",
        &plan(&after, &observed_from(&before)),
    );
}

#[test]
fn node_port_changed_replaces_the_target_group() {
    let before = desired(vec![tg(80, 30080, &["i-1"])]);
    let mut after = desired(vec![tg(80, 30081, &["i-1"])]);
    after.target_groups[0].name = "tg-80-b".into();
    after.listeners[0].target_group = "tg-80-b".into();
    golden("node_port_changed", &plan(&after, &observed_from(&before)));
}

#[test]
fn attributes_and_tags_only_when_they_differ() {
    let mut d = desired(vec![tg(80, 30080, &["i-1"])]);
    d.attributes = BTreeMap::from([("load_balancing.cross_zone.enabled".into(), "true".into())]);
    d.target_groups[0].attributes =
        BTreeMap::from([("proxy_protocol_v2.enabled".into(), "true".into())]);
    let mut seen = observed_from(&d);
    seen.load_balancer.as_mut().unwrap().attributes = Some(BTreeMap::from([(
        "load_balancing.cross_zone.enabled".into(),
        "false".into(),
    )]));
    seen.target_groups[0].attributes = Some(BTreeMap::from([(
        "proxy_protocol_v2.enabled".into(),
        "true".into(),
    )]));
    seen.load_balancer.as_mut().unwrap().tags.clear();
    golden("attributes_and_tags", &plan(&d, &seen));
}

#[test]
fn a_removed_service_port_and_foreign_listener_protocol_change() {
    let before = desired(vec![tg(53, 30053, &["i-1"])]);
    let mut after = before.clone();
    after.listeners[0].protocol = NlbProtocol::TcpUdp;
    golden(
        "listener_protocol_change",
        &plan(&after, &observed_from(&before)),
    );
}

#[test]
fn tls_certificates_default_and_sni_apart() {
    let tls = |certs: &[&str]| {
        let mut d = desired(vec![tg(443, 30443, &["i-1"])]);
        d.listeners[0].protocol = NlbProtocol::Tls;
        d.listeners[0].certificates = certs.iter().map(|c| c.to_string()).collect();
        d
    };
    let seen = observed_from(&tls(&["arn:cert/a", "arn:cert/b", "arn:cert/d"]));
    // Same default, and the SNI set in another order: nothing to do.
    assert_eq!(
        plan(&tls(&["arn:cert/a", "arn:cert/d", "arn:cert/b"]), &seen),
        Vec::<Action>::new()
    );
    // One SNI certificate swapped for another, and then a new default.
    let mut actions = plan(&tls(&["arn:cert/a", "arn:cert/b", "arn:cert/c"]), &seen);
    actions.extend(plan(
        &tls(&["arn:cert/x", "arn:cert/b", "arn:cert/d"]),
        &seen,
    ));
    golden("tls_certificates", &actions);
}
