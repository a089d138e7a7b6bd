//! Objects that a real cluster's kubelets and controllers would create, made by hand.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, Node, NodeSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// The `endpointslice.kubernetes.io/managed-by` value on slices made here, so that no
/// real EndpointSlice controller would ever claim them.
pub const ENDPOINT_SLICE_MANAGER: &str = "e2e.ferrolb.io";

pub async fn create_namespace(client: &Client, name: &str) -> Result<Namespace> {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .with_context(|| format!("creating namespace {name}"))
}

/// Creates a Node, then writes its status as a kubelet would: `InternalIP` addresses and
/// a `Ready` condition.
pub async fn create_node(
    client: &Client,
    name: &str,
    internal_ips: &[IpAddr],
    provider_id: Option<&str>,
    labels: &[(&str, &str)],
    ready: bool,
) -> Result<Node> {
    let nodes = Api::<Node>::all(client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(string_map(labels)),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            provider_id: provider_id.map(str::to_owned),
            ..NodeSpec::default()
        }),
        ..Node::default()
    };
    nodes
        .create(&PostParams::default(), &node)
        .await
        .with_context(|| format!("creating node {name}"))?;
    let addresses: Vec<_> = internal_ips
        .iter()
        .map(|ip| json!({"type": "InternalIP", "address": ip.to_string()}))
        .collect();
    let status = json!({"status": {
        "addresses": addresses,
        "conditions": [ready_condition(ready)],
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .with_context(|| format!("writing the status of node {name}"))
}

/// Sets the node's `Ready` condition, leaving its other conditions alone.
pub async fn set_node_ready(client: &Client, name: &str, ready: bool) -> Result<Node> {
    // A strategic merge patch merges `conditions` by `type`.
    let status = json!({"status": {"conditions": [ready_condition(ready)]}});
    Api::<Node>::all(client.clone())
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(&status))
        .await
        .with_context(|| format!("setting node {name} ready={ready}"))
}

fn ready_condition(ready: bool) -> serde_json::Value {
    let now = Timestamp::now().to_string();
    let (status, reason, message) = if ready {
        ("True", "KubeletReady", "kubelet is posting ready status")
    } else {
        (
            "False",
            "KubeletNotReady",
            "set not ready by the e2e harness",
        )
    };
    json!({
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    })
}

/// One endpoint of an EndpointSlice.
#[derive(Clone, Copy, Debug)]
pub struct EndpointSpec<'a> {
    pub address: IpAddr,
    /// `nodeName`: where the pod runs.
    pub node: Option<&'a str>,
    /// Sets `ready` and `serving`; `terminating` is always false.
    pub ready: bool,
}

/// Creates an EndpointSlice for `service_name`, as the EndpointSlice controller would.
/// `ports` are `(name, protocol, port)`. The address type follows the endpoints' family
/// (IPv4 when there are none); endpoints of both families are an error, as in the API.
pub async fn create_endpoint_slice(
    client: &Client,
    namespace: &str,
    service_name: &str,
    slice_name: &str,
    endpoints: &[EndpointSpec<'_>],
    ports: &[(Option<&str>, &str, i32)],
) -> Result<EndpointSlice> {
    let address_type = address_type(endpoints)?;
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            name: Some(slice_name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(string_map(&[
                ("kubernetes.io/service-name", service_name),
                (
                    "endpointslice.kubernetes.io/managed-by",
                    ENDPOINT_SLICE_MANAGER,
                ),
            ])),
            ..ObjectMeta::default()
        },
        address_type: address_type.to_owned(),
        endpoints: endpoints
            .iter()
            .map(|endpoint| Endpoint {
                addresses: vec![endpoint.address.to_string()],
                node_name: endpoint.node.map(str::to_owned),
                conditions: Some(EndpointConditions {
                    ready: Some(endpoint.ready),
                    serving: Some(endpoint.ready),
                    terminating: Some(false),
                }),
                ..Endpoint::default()
            })
            .collect(),
        ports: Some(
            ports
                .iter()
                .map(|&(name, protocol, port)| EndpointPort {
                    name: name.map(str::to_owned),
                    protocol: Some(protocol.to_owned()),
                    port: Some(port),
                    ..EndpointPort::default()
                })
                .collect(),
        ),
    };
    Api::<EndpointSlice>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &slice)
        .await
        .with_context(|| format!("creating EndpointSlice {namespace}/{slice_name}"))
}

fn address_type(endpoints: &[EndpointSpec<'_>]) -> Result<&'static str> {
    let v4 = endpoints.iter().filter(|e| e.address.is_ipv4()).count();
    match (v4, endpoints.len() - v4) {
        (_, 0) => Ok("IPv4"),
        (0, _) => Ok("IPv6"),
        _ => bail!("an EndpointSlice holds one address family; got IPv4 and IPv6 endpoints"),
    }
}

/// A `type: LoadBalancer` Service with one port per `(protocol, port)`, named
/// `<protocol>-<port>` in lower case, targeting the same port, with no selector.
/// Tweak it before creating it.
pub fn lb_service(namespace: &str, name: &str, ports: &[(&str, i32)]) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".to_owned()),
            ports: Some(
                ports
                    .iter()
                    .map(|&(protocol, port)| ServicePort {
                        name: Some(format!("{}-{port}", protocol.to_ascii_lowercase())),
                        protocol: Some(protocol.to_owned()),
                        port,
                        target_port: Some(IntOrString::Int(port)),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn string_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(address: &str) -> EndpointSpec<'static> {
        EndpointSpec {
            address: address.parse().unwrap(),
            node: None,
            ready: true,
        }
    }

    #[test]
    fn address_type_follows_the_family() {
        assert_eq!(address_type(&[]).unwrap(), "IPv4");
        assert_eq!(address_type(&[endpoint("10.0.0.1")]).unwrap(), "IPv4");
        assert_eq!(address_type(&[endpoint("fd00::1")]).unwrap(), "IPv6");
        assert!(address_type(&[endpoint("10.0.0.1"), endpoint("fd00::1")]).is_err());
    }

    #[test]
    fn lb_service_names_its_ports() {
        let service = lb_service("ns", "web", &[("TCP", 80), ("UDP", 53)]);
        let spec = service.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        let names: Vec<_> = spec
            .ports
            .unwrap()
            .into_iter()
            .map(|p| p.name.unwrap())
            .collect();
        assert_eq!(names, ["tcp-80", "udp-53"]);
    }
}
