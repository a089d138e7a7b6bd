//! `ferrolb speaker` advertising over BGP to a real gobgpd: three node
//! namespaces with real speakers, a router namespace running gobgpd, on one
//! bridge. Assertions read gobgpd's own RIB.

mod common;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::WAIT;
use common::l2::{L2Cluster, check_tools};
use ferrolb_baremetal::crd::{BGPAdvertisement, BGPAdvertisementSpec, BGPPeer, BGPPeerSpec};
use ferrolb_e2e::{FerrolbProcess, wait_for};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::Value;

const ROUTER: &str = "router";
const ROUTER_V4: &str = "10.77.0.3";
const ROUTER_AS: u32 = 64512;
const NODE_AS: u32 = 64513;

struct Router {
    _gobgpd: FerrolbProcess,
}

fn gobgpd_config(nodes: &[String]) -> String {
    let mut c = format!("[global.config]\n  as = {ROUTER_AS}\n  router-id = \"{ROUTER_V4}\"\n\n");
    for i in 0..nodes.len() {
        c.push_str(&format!(
            r#"[[neighbors]]
  [neighbors.config]
    neighbor-address = "{}"
    peer-as = {NODE_AS}
  [neighbors.transport.config]
    passive-mode = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"

"#,
            common::l2::node_v4(i)
        ));
    }
    c
}

async fn start_router(c: &mut L2Cluster) -> Result<Router> {
    if std::process::Command::new("gobgpd")
        .arg("--version")
        .output()
        .is_err()
    {
        bail!("gobgpd is missing: apt-get install gobgpd");
    }
    c.lan
        .add_host(ROUTER, &format!("{ROUTER_V4}/24"), "fd77::3/64")?;
    let path = c.env.cp.dir().join("gobgpd.toml");
    std::fs::write(&path, gobgpd_config(&c.nodes))?;
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(["netns", "exec", &c.lan.ns(ROUTER), "gobgpd", "-f"])
        .arg(&path)
        .args(["-t", "toml", "--log-plain", "--api-hosts=127.0.0.1:50051"]);
    let gobgpd = FerrolbProcess::spawn_command(cmd, c.env.cp.dir())?;
    let router = Router { _gobgpd: gobgpd };
    wait_for("gobgpd's API", WAIT, || async {
        Ok(gobgp(c, &["global"]).ok().map(|_| ()))
    })
    .await?;
    Ok(router)
}

fn gobgp(c: &L2Cluster, args: &[&str]) -> Result<Value> {
    let out = c
        .lan
        .command(ROUTER, "gobgp")
        .args(args)
        .arg("-j")
        .output()?;
    if !out.status.success() {
        bail!("gobgp {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

/// The next hops gobgpd has for `prefix`, one per path.
fn next_hops(c: &L2Cluster, prefix: &str) -> Result<Vec<String>> {
    let rib = gobgp(c, &["global", "rib", "-a", "ipv4"])?;
    let Some(paths) = rib.get(prefix).and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    let mut hops: Vec<String> = paths
        .iter()
        .filter_map(|p| {
            p["attrs"]
                .as_array()?
                .iter()
                .find_map(|a| a["nexthop"].as_str().map(str::to_string))
        })
        .collect();
    hops.sort();
    Ok(hops)
}

async fn configure_bgp(c: &L2Cluster, communities: &[&str]) -> Result<()> {
    Api::<BGPPeer>::all(c.env.client.clone())
        .create(
            &PostParams::default(),
            &BGPPeer::new(
                "router",
                BGPPeerSpec {
                    my_asn: NODE_AS,
                    peer_asn: ROUTER_AS,
                    peer_address: ROUTER_V4.into(),
                    hold_time: Some("9s".into()),
                    ..Default::default()
                },
            ),
        )
        .await?;
    Api::<BGPAdvertisement>::all(c.env.client.clone())
        .create(
            &PostParams::default(),
            &BGPAdvertisement::new(
                "lan",
                BGPAdvertisementSpec {
                    ip_pools: vec!["lan".into()],
                    communities: communities.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                },
            ),
        )
        .await?;
    Ok(())
}

fn node_ips(c: &L2Cluster, nodes: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = nodes
        .iter()
        .map(|n| {
            let i = c.nodes.iter().position(|x| x == n).unwrap();
            common::l2::node_v4(i).to_string()
        })
        .collect();
    v.sort();
    v
}

/// Every node advertises a Cluster Service's /32 with itself as next hop and
/// the configured community; a Local Service only from nodes with an
/// endpoint, following them; deleting the Service withdraws it.
#[tokio::test(flavor = "multi_thread")]
async fn routes_follow_services_and_endpoints_at_gobgpd() -> Result<()> {
    check_tools()?;
    let (mut c, vip) = L2Cluster::start_with_web(3).await?;
    let _router = start_router(&mut c).await?;
    configure_bgp(&c, &["65000:100"]).await?;
    let prefix = format!("{vip}/32");
    let all = node_ips(&c, &["node-0", "node-1", "node-2"]);
    wait_for("three paths at gobgpd", WAIT, || async {
        Ok((next_hops(&c, &prefix)? == all).then_some(()))
    })
    .await
    .with_context(|| c.logs())?;
    let rib = gobgp(&c, &["global", "rib", "-a", "ipv4"])?.to_string();
    assert!(
        rib.contains(&((65000u32 << 16) | 100).to_string()),
        "community missing: {rib}"
    );
    // The BGP metrics the troubleshooting guide names, with this peer.
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/troubleshooting.md"
    ))?;
    let documented: Vec<&str> = guide
        .lines()
        .filter_map(|l| l.strip_prefix("| `ferrolb_speaker_bgp_"))
        .filter_map(|rest| rest.split('`').next())
        .collect();
    assert_eq!(documented.len(), 3, "{documented:?}");
    wait_for("the BGP metrics of node-0", WAIT, || async {
        let metrics = c.speaker_metrics("node-0")?;
        let all = documented.iter().all(|name| {
            metrics
                .lines()
                .any(|l| l.starts_with(&format!("ferrolb_speaker_bgp_{name}{{peer=\"router\"}}")))
        });
        Ok(
            (all && metrics.contains("ferrolb_speaker_bgp_session_up{peer=\"router\"} 1"))
                .then_some(()),
        )
    })
    .await?;

    let ips = c.create_service("local", true, false, &["node-1"]).await?;
    let local = format!("{}/32", ips[0]);
    wait_for("one path for the Local Service", WAIT, || async {
        Ok((next_hops(&c, &local)? == node_ips(&c, &["node-1"])).then_some(()))
    })
    .await
    .with_context(|| c.logs())?;
    c.set_endpoints("local", &["node-2"]).await?;
    wait_for("the path to follow the endpoint", WAIT, || async {
        Ok((next_hops(&c, &local)? == node_ips(&c, &["node-2"])).then_some(()))
    })
    .await
    .with_context(|| c.logs())?;
    c.set_endpoints("local", &[]).await?;
    wait_for(
        "the Local route withdrawn with its last endpoint",
        WAIT,
        || async { Ok(next_hops(&c, &local)?.is_empty().then_some(())) },
    )
    .await?;

    c.env
        .services()
        .delete("web", &DeleteParams::default())
        .await?;
    wait_for("the route withdrawn on delete", WAIT, || async {
        Ok(next_hops(&c, &prefix)?.is_empty().then_some(()))
    })
    .await?;
    Ok(())
}

/// A speaker stopped with SIGTERM withdraws its routes before it exits.
#[tokio::test(flavor = "multi_thread")]
async fn a_stopping_speaker_withdraws_first() -> Result<()> {
    check_tools()?;
    let (mut c, vip) = L2Cluster::start_with_web(3).await?;
    let _router = start_router(&mut c).await?;
    configure_bgp(&c, &[]).await?;
    let prefix = format!("{vip}/32");
    let all = node_ips(&c, &["node-0", "node-1", "node-2"]);
    wait_for("three paths at gobgpd", WAIT, || async {
        Ok((next_hops(&c, &prefix)? == all).then_some(()))
    })
    .await
    .with_context(|| c.logs())?;
    c.terminate_speaker("node-0").await?;
    // Checked at once: the withdrawal came before the exit, not after a
    // hold timer.
    let hops = next_hops(&c, &prefix)?;
    assert_eq!(hops, node_ips(&c, &["node-1", "node-2"]), "{}", c.logs());
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}
