//! Node and EndpointSlice changes reach exactly the Services whose targets
//! they change, and nothing else. Run with the AWS provider against moto:
//! it is the provider that reads targets (the bare-metal one reads none, so
//! its intents are built without them).

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;
use common::{Env, WithLog, free_port};
use ferrolb_e2e::moto::Moto;
use ferrolb_e2e::{EndpointSpec, FerrolbProcess, fixtures, wait_for};
use kube::api::{Api, Patch, PatchParams};

const CLUSTER: &str = "e2e";

/// How often each Service was reconciled in the log from byte `from` on.
fn reconciles_since(ctl: &FerrolbProcess, from: usize) -> BTreeMap<String, usize> {
    let log = ctl.log();
    let mut out = BTreeMap::new();
    for line in log.get(from..).unwrap_or_default().lines() {
        if !line.contains("reconciling") {
            continue;
        }
        if let Some(rest) = line.split("service=test/").nth(1) {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            *out.entry(name).or_default() += 1;
        }
    }
    out
}

/// Waits until the log stops growing in reconciles, then returns its length.
async fn quiet(ctl: &FerrolbProcess) -> Result<usize> {
    let mut last = ctl.log().len();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let now = ctl.log().len();
        if reconciles_since(ctl, last).is_empty() {
            return Ok(now);
        }
        last = now;
    }
    anyhow::bail!("the controller never went quiet")
}

async fn expect_reconciled(
    ctl: &FerrolbProcess,
    from: usize,
    want: &[&str],
    what: &str,
) -> Result<usize> {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    wait_for(what, common::WAIT, || async {
        let got: Vec<String> = reconciles_since(ctl, from).into_keys().collect();
        Ok(want.iter().all(|w| got.contains(w)).then_some(()))
    })
    .await?;
    let end = quiet(ctl).await?;
    let got: Vec<String> = reconciles_since(ctl, from).into_keys().collect();
    anyhow::ensure!(
        got == want,
        "{what}: reconciled {got:?}, want exactly {want:?}"
    );
    Ok(end)
}

#[tokio::test(flavor = "multi_thread")]
async fn node_and_endpoint_changes_reconcile_only_affected_services() -> Result<()> {
    let env = Env::start().await?;
    let moto = Moto::start().await?;
    let zone = "us-east-1a";
    let seed = moto.seed(CLUSTER, &[zone]).await?;
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    // n1 and n2 Ready, n3 not yet; each backed by a moto instance.
    for (name, ready) in [("n1", true), ("n2", true), ("n3", false)] {
        let instance = moto.run_instance(&seed, zone).await?;
        fixtures::create_node(
            &env.client,
            name,
            &[instance.private_ip],
            Some(&instance.provider_id),
            &[("topology.kubernetes.io/zone", zone)],
            ready,
        )
        .await?;
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let ctl = FerrolbProcess::spawn_aws_controller(&env.cp, &moto.env(), CLUSTER, &addr, &[])?;
    let aws_class = |s: &mut k8s_openapi::api::core::v1::Service| {
        s.spec.as_mut().unwrap().load_balancer_class = Some("ferrolb.io/aws".into());
    };
    let check = async {
        for name in ["c1", "c2"] {
            env.create_service(name, aws_class).await?;
        }
        for (name, node) in [("l1", "n1"), ("l2", "n2")] {
            env.create_service(name, |s| {
                aws_class(s);
                s.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
            })
            .await?;
            let ep = EndpointSpec {
                address: ip(if node == "n1" { "10.1.0.1" } else { "10.1.0.2" }),
                node: Some(node),
                ready: true,
            };
            fixtures::create_endpoint_slice(
                &env.client,
                &env.ns,
                name,
                &format!("{name}-a"),
                &[ep],
                &[(Some("tcp-80"), "TCP", 80)],
            )
            .await?;
        }
        for name in ["c1", "c2", "l1", "l2"] {
            common::wait_hostname(&env.services(), name).await?;
        }
        let mark = quiet(&ctl).await?;

        // A heartbeat changes no target.
        fixtures::set_node_ready(&env.client, "n1", true).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let calm = reconciles_since(&ctl, mark);
        anyhow::ensure!(calm.is_empty(), "a heartbeat reconciled {calm:?}");

        // n3 becomes a target of every Cluster Service, and of no Local one.
        fixtures::set_node_ready(&env.client, "n3", true).await?;
        let mark = expect_reconciled(&ctl, mark, &["c1", "c2"], "n3 turning Ready").await?;

        // n2 leaves: the Cluster Services and l2, whose endpoint runs there.
        fixtures::set_node_ready(&env.client, "n2", false).await?;
        let mark =
            expect_reconciled(&ctl, mark, &["c1", "c2", "l2"], "n2 turning NotReady").await?;

        // An unrelated label on an eligible node changes no target.
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(env.client.clone());
        let patch = serde_json::json!({ "metadata": { "labels": { "team": "blue" } } });
        nodes
            .patch("n1", &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let calm = reconciles_since(&ctl, mark);
        anyhow::ensure!(calm.is_empty(), "a label change reconciled {calm:?}");

        // A new ready endpoint of l1 reconciles l1 alone.
        let ep = EndpointSpec {
            address: ip("10.1.0.9"),
            node: Some("n3"),
            ready: true,
        };
        fixtures::create_endpoint_slice(
            &env.client,
            &env.ns,
            "l1",
            "l1-b",
            &[ep],
            &[(Some("tcp-80"), "TCP", 80)],
        )
        .await?;
        expect_reconciled(&ctl, mark, &["l1"], "a new endpoint of l1").await?;
        Ok(())
    };
    check.await.with_log(&ctl)
}

/// The bare-metal provider reads no targets, so its controller does not
/// watch Nodes: a Node coming, turning Ready and going reconciles nothing.
#[tokio::test(flavor = "multi_thread")]
async fn bare_metal_services_ignore_nodes() -> Result<()> {
    let env = Env::start().await?;
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    env.create_pool("default", &["192.0.2.0/28"], |_| {})
        .await?;
    let ctl = env.controller(&[])?;
    let check = async {
        env.create_service("c1", |_| {}).await?;
        env.wait_ingress("c1", 1).await?;
        let mark = quiet(&ctl).await?;
        fixtures::create_node(&env.client, "n1", &[ip("10.0.0.1")], None, &[], false).await?;
        fixtures::set_node_ready(&env.client, "n1", true).await?;
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(env.client.clone());
        nodes.delete("n1", &Default::default()).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let calm = reconciles_since(&ctl, mark);
        anyhow::ensure!(calm.is_empty(), "Node changes reconciled {calm:?}");
        Ok(())
    };
    check.await.with_log(&ctl)
}
