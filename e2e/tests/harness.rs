//! The harness against a real kube-apiserver and etcd: what the other e2e tests rely on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use ferrolb_e2e::fixtures::{
    ENDPOINT_SLICE_MANAGER, create_endpoint_slice, create_namespace, create_node, lb_service,
    set_node_ready,
};
use ferrolb_e2e::{ControlPlane, EndpointSpec, wait_for};
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::PostParams;

fn ready_status(node: &Node) -> Option<String> {
    let conditions = node.status.as_ref()?.conditions.as_ref()?;
    let ready = conditions.iter().find(|c| c.type_ == "Ready")?;
    Some(ready.status.clone())
}

fn in_service_cidrs(ip: &str) -> bool {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.octets()[..2] == [10, 96],
        Ok(IpAddr::V6(v6)) => v6.segments()[..7] == [0xfd00, 0x10, 0x96, 0, 0, 0, 0],
        Err(_) => false,
    }
}

async fn start() -> ControlPlane {
    let started = Instant::now();
    let cp = ControlPlane::start().await.expect("control plane starts");
    eprintln!("ControlPlane::start took {:?}", started.elapsed());
    cp
}

#[tokio::test]
async fn apiserver_allocates_and_fixtures_look_real() {
    let cp = start().await;
    let client = cp.client().await.unwrap();
    let ns = "harness";
    create_namespace(&client, ns).await.unwrap();

    // A node as a kubelet would report it.
    let ips: [IpAddr; 2] = [
        Ipv4Addr::new(10, 0, 0, 10).into(),
        "fd00::10".parse::<Ipv6Addr>().unwrap().into(),
    ];
    let labels = [("topology.kubernetes.io/zone", "zone-a")];
    let provider_id = "aws:///zone-a/i-0123456789abcdef0";
    create_node(&client, "node-a", &ips, Some(provider_id), &labels, true)
        .await
        .unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get("node-a").await.unwrap();
    let addresses: Vec<_> = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.clone())
        .unwrap()
        .into_iter()
        .map(|a| (a.type_, a.address))
        .collect();
    assert_eq!(
        addresses,
        [
            ("InternalIP".to_owned(), "10.0.0.10".to_owned()),
            ("InternalIP".to_owned(), "fd00::10".to_owned())
        ]
    );
    assert_eq!(ready_status(&node).as_deref(), Some("True"));
    assert_eq!(
        node.spec.as_ref().and_then(|s| s.provider_id.as_deref()),
        Some(provider_id)
    );
    assert_eq!(
        node.metadata.labels.as_ref().unwrap()["topology.kubernetes.io/zone"],
        "zone-a"
    );
    set_node_ready(&client, "node-a", false).await.unwrap();
    let node = nodes.get("node-a").await.unwrap();
    assert_eq!(ready_status(&node).as_deref(), Some("False"));
    let conditions = node.status.unwrap().conditions.unwrap();
    assert_eq!(
        conditions.len(),
        1,
        "the patch replaced Ready instead of adding one"
    );
    set_node_ready(&client, "node-a", true).await.unwrap();
    assert_eq!(
        ready_status(&nodes.get("node-a").await.unwrap()).as_deref(),
        Some("True")
    );

    // An EndpointSlice as the EndpointSlice controller would write it.
    let endpoints = [
        EndpointSpec {
            address: "10.244.0.5".parse().unwrap(),
            node: Some("node-a"),
            ready: true,
        },
        EndpointSpec {
            address: "10.244.0.6".parse().unwrap(),
            node: None,
            ready: false,
        },
    ];
    let ports = [(Some("http"), "TCP", 8080)];
    create_endpoint_slice(&client, ns, "web", "web-1", &endpoints, &ports)
        .await
        .unwrap();
    let slice = Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .get("web-1")
        .await
        .unwrap();
    assert_eq!(slice.address_type, "IPv4");
    let labels = slice.metadata.labels.unwrap();
    assert_eq!(labels["kubernetes.io/service-name"], "web");
    assert_eq!(
        labels["endpointslice.kubernetes.io/managed-by"],
        ENDPOINT_SLICE_MANAGER
    );
    assert_eq!(slice.endpoints[0].node_name.as_deref(), Some("node-a"));
    let readiness: Vec<_> = slice
        .endpoints
        .iter()
        .map(|e| e.conditions.as_ref().unwrap().ready)
        .collect();
    assert_eq!(readiness, [Some(true), Some(false)]);
    let v6 = [EndpointSpec {
        address: "fd00:244::5".parse().unwrap(),
        node: Some("node-a"),
        ready: true,
    }];
    let slice_v6 = create_endpoint_slice(&client, ns, "web", "web-2", &v6, &ports)
        .await
        .unwrap();
    assert_eq!(slice_v6.address_type, "IPv6");

    // The apiserver allocates clusterIPs and nodePorts, as in a real cluster.
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let web = services
        .create(
            &PostParams::default(),
            &lb_service(ns, "web", &[("TCP", 80), ("TCP", 443)]),
        )
        .await
        .unwrap();
    let spec = web.spec.unwrap();
    let cluster_ip = spec.cluster_ip.unwrap();
    assert!(
        cluster_ip.parse::<Ipv4Addr>().is_ok() && in_service_cidrs(&cluster_ip),
        "{cluster_ip}"
    );
    let node_ports: Vec<i32> = spec
        .ports
        .unwrap()
        .iter()
        .map(|p| p.node_port.unwrap())
        .collect();
    assert_eq!(node_ports.len(), 2);
    assert!(
        node_ports.iter().all(|p| (30000..=32767).contains(p)),
        "{node_ports:?}"
    );
    assert_ne!(node_ports[0], node_ports[1]);
    assert_eq!(spec.health_check_node_port, None);

    // externalTrafficPolicy: Local also gets a healthCheckNodePort.
    let mut local = lb_service(ns, "local", &[("TCP", 80)]);
    local.spec.as_mut().unwrap().external_traffic_policy = Some("Local".to_owned());
    let local = services
        .create(&PostParams::default(), &local)
        .await
        .unwrap();
    let health_port = local.spec.unwrap().health_check_node_port.unwrap();
    assert!((30000..=32767).contains(&health_port), "{health_port}");

    // PreferDualStack gets one clusterIP per family.
    let mut dual = lb_service(ns, "dual", &[("UDP", 53)]);
    dual.spec.as_mut().unwrap().ip_family_policy = Some("PreferDualStack".to_owned());
    let dual = services
        .create(&PostParams::default(), &dual)
        .await
        .unwrap();
    let spec = dual.spec.unwrap();
    let cluster_ips = spec.cluster_ips.unwrap();
    assert_eq!(cluster_ips.len(), 2, "{cluster_ips:?}");
    assert!(
        cluster_ips[0].parse::<Ipv4Addr>().is_ok(),
        "{cluster_ips:?}"
    );
    assert!(
        cluster_ips[1].parse::<Ipv6Addr>().is_ok(),
        "{cluster_ips:?}"
    );
    assert!(
        cluster_ips.iter().all(|ip| in_service_cidrs(ip)),
        "{cluster_ips:?}"
    );
    assert_eq!(
        spec.ip_families.unwrap(),
        ["IPv4".to_owned(), "IPv6".to_owned()]
    );
}

#[tokio::test]
async fn restart_keeps_state_and_drop_leaves_nothing() {
    let mut cp = start().await;
    let client = cp.client().await.unwrap();
    create_namespace(&client, "before-restart").await.unwrap();

    let old_pid = cp.apiserver_pid().unwrap();
    let started = Instant::now();
    cp.restart_apiserver().await.unwrap();
    eprintln!("restart_apiserver took {:?}", started.elapsed());
    let new_pid = cp.apiserver_pid().unwrap();
    assert_ne!(old_pid, new_pid);
    assert!(!Path::new(&format!("/proc/{old_pid}")).exists());

    // The client made before the restart works again; etcd kept the namespace.
    let namespaces: Api<Namespace> = Api::all(client);
    let found = wait_for(
        "the old client to work again",
        Duration::from_secs(10),
        || async { Ok(Some(namespaces.get_opt("before-restart").await?)) },
    )
    .await
    .unwrap();
    assert!(found.is_some(), "the namespace did not survive the restart");
    create_namespace(&cp.client().await.unwrap(), "after-restart")
        .await
        .unwrap();

    let dir = cp.dir().to_owned();
    assert!(dir.join("etcd.log").is_file());
    assert!(dir.join("kube-apiserver.log").is_file());
    let pids = [cp.etcd_pid().unwrap(), cp.apiserver_pid().unwrap()];
    drop(cp);
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{pid} still exists"
        );
        // Each process led its own group (with its watchdog); the group is empty too.
        let group = rustix::process::Pid::from_raw(pid as i32).unwrap();
        assert!(
            rustix::process::test_kill_process_group(group).is_err(),
            "group {pid} still has members"
        );
    }
    if std::env::var_os("FERROLB_E2E_KEEP").is_none() {
        assert!(!dir.exists(), "{} was not removed", dir.display());
    }
}
