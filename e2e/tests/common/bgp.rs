//! BGP routers for the speaker tests and benchmark: gobgpd or BIRD in a
//! namespace of the layer-2 LAN, passive, with every node as a neighbour, and
//! the `BGPPeer` and `BGPAdvertisement` that point the speakers at it.

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

/// BIRD 2 as the router instead: its own view, read with `birdc`.
pub struct Bird {
    _bird: FerrolbProcess,
    socket: std::path::PathBuf,
}

pub async fn start_bird(c: &mut L2Cluster) -> Result<Bird> {
    if std::process::Command::new("bird")
        .arg("--version")
        .output()
        .is_err()
    {
        bail!("bird is missing: apt-get install bird2");
    }
    c.lan
        .add_host(ROUTER, &format!("{ROUTER_V4}/24"), "fd77::3/64")?;
    let mut conf = format!(
        "router id {ROUTER_V4};\nprotocol device {{}}\n\
         template bgp nodes {{\n  local as {ROUTER_AS};\n  passive on;\n  \
         ipv4 {{ import all; export none; }};\n}}\n"
    );
    for i in 0..c.nodes.len() {
        conf.push_str(&format!(
            "protocol bgp n{i} from nodes {{ neighbor {} as {NODE_AS}; }}\n",
            super::l2::node_v4(i)
        ));
    }
    let path = c.env.cp.dir().join("bird.conf");
    std::fs::write(&path, conf)?;
    let socket = c.env.cp.dir().join("bird.ctl");
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(["netns", "exec", &c.lan.ns(ROUTER), "bird", "-f", "-c"])
        .arg(&path)
        .arg("-s")
        .arg(&socket);
    let bird = FerrolbProcess::spawn_command(cmd, c.env.cp.dir())?;
    let router = Bird {
        _bird: bird,
        socket,
    };
    wait_for("BIRD's control socket", WAIT, || async {
        Ok(router.birdc(&["show", "status"]).ok().map(|_| ()))
    })
    .await?;
    Ok(router)
}

impl Bird {
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        let out = std::process::Command::new("birdc")
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!("birdc {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The next hops BIRD has for `prefix` (`via` lines of `show route`).
    pub fn next_hops(&self, prefix: &str) -> Result<Vec<String>> {
        // birdc exits non-zero with "Network not found" once it is gone.
        let out = std::process::Command::new("birdc")
            .arg("-s")
            .arg(&self.socket)
            .args(["show", "route", "for", prefix, "all"])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("not found") {
            return Ok(Vec::new());
        }
        if !out.status.success() {
            bail!("birdc show route: {text}");
        }
        if !text.contains(prefix) {
            return Ok(Vec::new());
        }
        let mut hops: Vec<String> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("via "))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(str::to_string)
            .collect();
        hops.sort();
        Ok(hops)
    }
}
