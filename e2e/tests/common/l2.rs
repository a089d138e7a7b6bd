//! A layer-2 cluster for the speaker tests and the failover benchmark: the
//! control plane and controller from [`Env`], a LAN of network namespaces with
//! three (or more) node hosts each running a real `ferrolb speaker`, and a
//! client host that asks for the addresses with `arping` and `ndisc6`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferrolb_baremetal::crd::{L2Advertisement, L2AdvertisementSpec};
use ferrolb_e2e::netns::Lan;
use ferrolb_e2e::process::ferrolb_bin;
use ferrolb_e2e::{EndpointSpec, FerrolbProcess, fixtures, wait_for};
use kube::api::{Api, DeleteParams, PostParams};

use super::{Env, WAIT};

pub const CLIENT: &str = "client";
pub const POOL_V4: &str = "10.77.0.100-10.77.0.150";
pub const POOL_V6: &str = "fd77::100-fd77::150";

pub struct L2Cluster {
    pub env: Env,
    pub lan: Lan,
    pub nodes: Vec<String>,
    macs: BTreeMap<String, String>,
    speakers: BTreeMap<String, FerrolbProcess>,
    pub controller: FerrolbProcess,
    /// What the speakers authenticate with; the admin's kubeconfig if `None`.
    pub speaker_kubeconfig: Option<std::path::PathBuf>,
    endpoint_n: usize,
}

pub fn node_v4(i: usize) -> IpAddr {
    format!("10.77.0.{}", 11 + i).parse().unwrap()
}

impl L2Cluster {
    /// `n` node hosts with speakers, a client host, a dual-stack pool, an
    /// L2Advertisement for every pool, and the controller.
    pub async fn start(n: usize) -> Result<L2Cluster> {
        let env = Env::start().await?;
        let mut lan = Lan::new()?;
        lan.add_host(CLIENT, "10.77.0.2/24", "fd77::2/64")?;
        let apiserver: SocketAddr = env
            .cp
            .apiserver_url()
            .trim_start_matches("https://")
            .parse()
            .context("apiserver address")?;
        let mut nodes = Vec::new();
        let mut macs = BTreeMap::new();
        for i in 0..n {
            let name = format!("node-{i}");
            lan.add_host(
                &name,
                &format!("{}/24", node_v4(i)),
                &format!("fd77::{}/64", 11 + i),
            )?;
            lan.forward_apiserver(&name, apiserver)?;
            let zone = if i % 2 == 0 { "a" } else { "b" };
            fixtures::create_node(
                &env.client,
                &name,
                &[node_v4(i)],
                None,
                &[("zone", zone)],
                true,
            )
            .await?;
            macs.insert(lan.mac(&name)?, name.clone());
            nodes.push(name);
        }
        env.create_pool("lan", &[POOL_V4, POOL_V6], |_| {}).await?;
        let controller = env.controller(&[])?;
        let mut cluster = L2Cluster {
            env,
            lan,
            nodes,
            macs,
            speakers: BTreeMap::new(),
            controller,
            speaker_kubeconfig: None,
            endpoint_n: 0,
        };
        cluster
            .create_advertisement("all", L2AdvertisementSpec::default())
            .await?;
        for node in cluster.nodes.clone() {
            cluster.start_speaker(&node)?;
        }
        cluster.wait_speakers_ready().await?;
        Ok(cluster)
    }

    /// [`Self::start`], then a Service `web` with a ready endpoint on every
    /// node, announced: the cluster and the Service's address.
    pub async fn start_with_web(n: usize) -> Result<(L2Cluster, String)> {
        let mut c = L2Cluster::start(n).await?;
        let nodes = c.nodes.clone();
        let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
        let ips = c.create_service("web", false, false, &nodes).await?;
        let vip = ips[0].clone();
        Ok((c, vip))
    }

    /// Waits until every running speaker hears all the others, so a test
    /// starts after the start-up election has settled.
    pub async fn wait_speakers_ready(&self) -> Result<()> {
        let want = format!("ferrolb_speaker_peers_alive {}", self.speakers.len());
        for node in self.speakers.keys() {
            wait_for(
                &format!("the speaker on {node} to hear every speaker"),
                WAIT,
                || async {
                    Ok(self
                        .speaker_metrics(node)
                        .ok()
                        .filter(|m| m.lines().any(|l| l == want))
                        .map(|_| ()))
                },
            )
            .await
            .with_context(|| self.logs())?;
        }
        Ok(())
    }

    pub async fn create_advertisement(&self, name: &str, spec: L2AdvertisementSpec) -> Result<()> {
        Api::<L2Advertisement>::all(self.env.client.clone())
            .create(&PostParams::default(), &L2Advertisement::new(name, spec))
            .await
            .with_context(|| format!("creating L2Advertisement {name}"))?;
        Ok(())
    }

    pub async fn delete_advertisement(&self, name: &str) -> Result<()> {
        Api::<L2Advertisement>::all(self.env.client.clone())
            .delete(name, &DeleteParams::default())
            .await?;
        Ok(())
    }

    /// Starts `ferrolb speaker` inside the node's namespace.
    pub fn start_speaker(&mut self, node: &str) -> Result<()> {
        let bin = ferrolb_bin()?;
        let ns = self.lan.ns(node);
        let args = [
            "netns",
            "exec",
            &ns,
            bin.to_str().context("binary path")?,
            "speaker",
            "--node-name",
            node,
            "--metrics-addr",
            "127.0.0.1:7473",
            "--log",
            "info,ferrolb=debug",
        ];
        let kubeconfig = self
            .speaker_kubeconfig
            .as_deref()
            .unwrap_or(self.env.cp.kubeconfig_path());
        let p = FerrolbProcess::spawn_program(
            Path::new("ip"),
            kubeconfig,
            self.env.cp.dir(),
            &args,
            &[],
        )?;
        self.speakers.insert(node.to_string(), p);
        Ok(())
    }

    pub async fn kill_speaker(&mut self, node: &str) -> Result<()> {
        if let Some(mut p) = self.speakers.remove(node) {
            p.kill().await?;
        }
        Ok(())
    }

    pub async fn terminate_speaker(&mut self, node: &str) -> Result<()> {
        if let Some(mut p) = self.speakers.remove(node) {
            p.terminate().await?;
        }
        Ok(())
    }

    /// Sends `signal` to the node's speaker without waiting for it to exit;
    /// [`Self::reap_speaker`] waits.
    pub fn signal_speaker(&mut self, node: &str, signal: rustix::process::Signal) -> Result<()> {
        let p = self.speakers.get(node).context("no speaker on that node")?;
        let pid = rustix::process::Pid::from_raw(p.pid() as i32).context("pid")?;
        rustix::process::kill_process(pid, signal)?;
        Ok(())
    }

    /// Waits for the node's speaker to exit (killing it after the grace
    /// period) and forgets it.
    pub async fn reap_speaker(&mut self, node: &str) -> Result<()> {
        self.terminate_speaker(node).await
    }

    /// The speaker's `/metrics`, fetched from inside its node.
    pub fn speaker_metrics(&self, node: &str) -> Result<String> {
        let out = ferrolb_e2e::netns::run(
            self.lan
                .command(node, "curl")
                .args(["-sf", "http://127.0.0.1:7473/metrics"]),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn speaker_log(&self, node: &str) -> String {
        self.speakers.get(node).map(|p| p.log()).unwrap_or_default()
    }

    /// Every process's log tail, for a failed test's message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let tail = |log: String| {
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        out.push_str(&format!(
            "--- controller\n{}\n",
            tail(self.controller.log())
        ));
        for (node, p) in &self.speakers {
            out.push_str(&format!("--- speaker {node}\n{}\n", tail(p.log())));
        }
        out
    }

    /// The node whose `eth0` has this MAC.
    pub fn node_of(&self, mac: &str) -> Option<String> {
        self.macs.get(&mac.to_ascii_lowercase()).cloned()
    }

    /// Runs `arping` in the client with `args` and the address: the nodes
    /// (or unknown MACs) that answered, in the order they did.
    fn arping(&self, args: &[&str], ip: &str) -> Result<Vec<String>> {
        let out = self
            .lan
            .command(CLIENT, "arping")
            .args(args)
            .args(["-I", "eth0", ip])
            .output()?;
        Ok(macs_in(&String::from_utf8_lossy(&out.stdout))
            .into_iter()
            .map(|m| self.node_of(&m).unwrap_or(m))
            .collect())
    }

    /// One ARP request that waits at most 50 ms for its answer: the probe of
    /// the failover benchmark.
    pub fn arp_quick(&self, ip: &str) -> Result<Option<String>> {
        Ok(self
            .arping(&["-C", "1", "-c", "1", "-w", "0.05"], ip)?
            .into_iter()
            .next())
    }

    /// Three ARP requests, 200 ms apart: every node (or unknown MAC) that
    /// answered any of them.
    pub fn arp_all(&self, ip: &str) -> Result<BTreeSet<String>> {
        Ok(self
            .arping(&["-c", "3", "-W", "0.2", "-w", "1"], ip)?
            .into_iter()
            .collect())
    }

    /// One neighbour solicitation from the client: every node that answered
    /// within 500 ms.
    pub fn ndp_all(&self, ip: &str) -> Result<BTreeSet<String>> {
        let out = self
            .lan
            .command(CLIENT, "ndisc6")
            .args(["-m", "-n", "-r", "1", "-w", "500", ip, "eth0"])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .lines()
            .filter_map(|l| l.split("link-layer address:").nth(1))
            .map(|m| {
                let m = m.trim().to_ascii_lowercase();
                self.node_of(&m).unwrap_or(m)
            })
            .collect())
    }

    /// Waits until ARP for `ip` is answered by exactly one node, passing
    /// `accept`, and returns it.
    pub async fn wait_arp(&self, ip: &str, accept: impl Fn(&str) -> bool) -> Result<String> {
        wait_for(
            &format!("one node to answer ARP for {ip}"),
            WAIT,
            || async {
                let seen = self.arp_all(ip)?;
                Ok(match seen.iter().collect::<Vec<_>>()[..] {
                    [one] if accept(one) => Some(one.clone()),
                    _ => None,
                })
            },
        )
        .await
        .with_context(|| self.logs())
    }

    /// Waits until nobody answers ARP for `ip`.
    pub async fn wait_arp_silent(&self, ip: &str) -> Result<()> {
        wait_for(&format!("nobody to answer ARP for {ip}"), WAIT, || async {
            Ok(self.arp_all(ip)?.is_empty().then_some(()))
        })
        .await
        .with_context(|| self.logs())
    }

    /// A dual-stack-capable Service of our class with a ready endpoint on
    /// each of `endpoint_nodes`.
    pub async fn create_service(
        &mut self,
        name: &str,
        local: bool,
        dual_stack: bool,
        endpoint_nodes: &[&str],
    ) -> Result<Vec<String>> {
        self.env
            .create_service(name, |svc| {
                let spec = svc.spec.as_mut().unwrap();
                if local {
                    spec.external_traffic_policy = Some("Local".into());
                }
                if dual_stack {
                    spec.ip_family_policy = Some("RequireDualStack".into());
                    spec.ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
                }
            })
            .await?;
        self.set_endpoints(name, endpoint_nodes).await?;
        let n = if dual_stack { 2 } else { 1 };
        self.env.wait_ingress(name, n).await
    }

    /// Replaces the Service's endpoints with one ready pod per node.
    pub async fn set_endpoints(&mut self, name: &str, nodes: &[&str]) -> Result<()> {
        let api: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
            Api::namespaced(self.env.client.clone(), &self.env.ns);
        let _ = api
            .delete(&format!("{name}-eps"), &DeleteParams::default())
            .await;
        let endpoints: Vec<EndpointSpec> = nodes
            .iter()
            .map(|node| {
                self.endpoint_n += 1;
                EndpointSpec {
                    address: format!(
                        "10.244.{}.{}",
                        self.endpoint_n / 250,
                        self.endpoint_n % 250 + 1
                    )
                    .parse()
                    .unwrap(),
                    node: Some(node),
                    ready: true,
                }
            })
            .collect();
        // The delete above may still be in flight; retry the create briefly.
        for attempt in 0.. {
            match fixtures::create_endpoint_slice(
                &self.env.client,
                &self.env.ns,
                name,
                &format!("{name}-eps"),
                &endpoints,
                &[(Some("tcp-80"), "TCP", 80)],
            )
            .await
            {
                Ok(_) => break,
                Err(e) if attempt < 20 => {
                    tracing::debug!(error = %e, "retrying the EndpointSlice");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// MAC addresses in `arping` output lines such as
/// `42 bytes from c6:95:c8:11:3b:b1 (10.9.0.2): index=0 ...`.
pub fn macs_in(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split(" bytes from ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(|m| m.to_ascii_lowercase())
        .collect()
}

/// Fails unless the tools the layer-2 tests need are here.
pub fn check_tools() -> Result<()> {
    if !ferrolb_e2e::netns::available() {
        bail!("the layer-2 tests need root and iproute2 (`ip netns`)");
    }
    for tool in ["arping", "ndisc6"] {
        if std::process::Command::new(tool)
            .arg("--help")
            .output()
            .is_err()
        {
            bail!("{tool} is missing: apt-get install arping ndisc6");
        }
    }
    Ok(())
}
