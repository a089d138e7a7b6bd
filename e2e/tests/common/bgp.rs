//! A BGP router for the speaker tests and benchmark: gobgpd in a namespace
//! of the layer-2 LAN, passive, with every node as a neighbour, and the
//! `BGPPeer` and `BGPAdvertisement` that point the speakers at it.

use anyhow::{Result, bail};
use ferrolb_baremetal::crd::{BGPAdvertisement, BGPAdvertisementSpec, BGPPeer, BGPPeerSpec};
use ferrolb_e2e::{FerrolbProcess, wait_for};
use kube::api::{Api, PostParams};
use serde_json::Value;

use super::WAIT;
use super::l2::L2Cluster;

pub const ROUTER: &str = "router";
pub const ROUTER_V4: &str = "10.77.0.3";
pub const ROUTER_AS: u32 = 64512;
const NODE_AS: u32 = 64513;

pub struct Router {
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
            super::l2::node_v4(i)
        ));
    }
    c
}

pub async fn start_router(c: &mut L2Cluster) -> Result<Router> {
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

pub fn gobgp(c: &L2Cluster, args: &[&str]) -> Result<Value> {
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
pub fn next_hops(c: &L2Cluster, prefix: &str) -> Result<Vec<String>> {
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

pub async fn configure_bgp(c: &L2Cluster, communities: &[&str]) -> Result<()> {
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

pub fn node_ips(c: &L2Cluster, nodes: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = nodes
        .iter()
        .map(|n| {
            let i = c.nodes.iter().position(|x| x == n).unwrap();
            super::l2::node_v4(i).to_string()
        })
        .collect();
    v.sort();
    v
}
