//! ferrolb's BGP session against a real gobgpd on loopback: the routes it is
//! given appear in gobgpd's RIB with their next hops and attributes, are
//! withdrawn when taken away and before a clean stop, and a wrong TCP-MD5
//! password keeps the session down and says why.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferrolb_baremetal::speaker::bgp::session::{PeerConfig, Route, Routes, Session, State};
use ferrolb_e2e::process::FerrolbProcess;
use ferrolb_e2e::wait_for;
use ipnet::IpNet;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const ROUTER_AS: u32 = 64512;
const OUR_AS: u32 = 64513;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// gobgpd on 127.0.0.1, passive, expecting us from 127.0.0.2.
struct Gobgpd {
    _process: FerrolbProcess,
    _dir: tempfile::TempDir,
    bgp_port: u16,
    api_port: u16,
}

impl Gobgpd {
    fn start(password: Option<&str>) -> Result<Gobgpd> {
        Self::start_with(password, OUR_AS)
    }

    /// With the session's other side in AS `peer_as` (ours for iBGP).
    fn start_with(password: Option<&str>, peer_as: u32) -> Result<Gobgpd> {
        if Command::new("gobgpd").arg("--version").output().is_err() {
            bail!("gobgpd is missing: apt-get install gobgpd");
        }
        let dir = tempfile::tempdir()?;
        let (bgp_port, api_port) = (free_port(), free_port());
        let auth = password
            .map(|p| format!("    auth-password = \"{p}\"\n"))
            .unwrap_or_default();
        let config = format!(
            r#"[global.config]
  as = {ROUTER_AS}
  router-id = "127.0.0.1"
  port = {bgp_port}
  local-address-list = ["127.0.0.1"]

[[neighbors]]
  [neighbors.config]
    neighbor-address = "127.0.0.2"
    peer-as = {peer_as}
{auth}  [neighbors.transport.config]
    passive-mode = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
"#
        );
        let path = dir.path().join("gobgpd.toml");
        std::fs::write(&path, config)?;
        let mut cmd = tokio::process::Command::new("gobgpd");
        cmd.args(["-f", path.to_str().unwrap(), "-t", "toml", "--log-plain"])
            .arg(format!("--api-hosts=127.0.0.1:{api_port}"));
        let process = FerrolbProcess::spawn_command(cmd, dir.path());
        let router = Gobgpd {
            _process: process?,
            _dir: dir,
            bgp_port,
            api_port,
        };
        // Its API answers once it has read its configuration.
        for _ in 0..100 {
            if router.cli(&["global"]).is_ok() {
                return Ok(router);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("gobgpd never answered:\n{}", router.log())
    }

    fn log(&self) -> String {
        self._process.log()
    }

    fn cli(&self, args: &[&str]) -> Result<Value> {
        let out = Command::new("gobgp")
            .args(["-p", &self.api_port.to_string()])
            .args(args)
            .arg("-j")
            .output()?;
        if !out.status.success() {
            bail!("gobgp {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
    }

    /// The RIB as prefix → the JSON of its best path.
    fn rib(&self, family: &str) -> Result<Vec<(String, Value)>> {
        let rib = self.cli(&["global", "rib", "-a", family])?;
        let mut out = Vec::new();
        if let Some(map) = rib.as_object() {
            for (prefix, paths) in map {
                if let Some(best) = paths.as_array().and_then(|p| p.first()) {
                    out.push((prefix.clone(), best.clone()));
                }
            }
        }
        Ok(out)
    }

    fn neighbor_state(&self) -> Result<String> {
        let n = self.cli(&["neighbor", "127.0.0.2"])?;
        Ok(n["state"]["session_state"]
            .as_str()
            .map(str::to_string)
            .or_else(|| n["state"]["session_state"].as_i64().map(|i| i.to_string()))
            .unwrap_or_default())
    }
}

fn config(router: &Gobgpd, password: Option<&str>) -> PeerConfig {
    PeerConfig {
        name: "gobgpd".into(),
        my_asn: OUR_AS,
        peer_asn: ROUTER_AS,
        peer: format!("127.0.0.1:{}", router.bgp_port).parse().unwrap(),
        source: Some("127.0.0.2".parse().unwrap()),
        hold_time: Duration::from_secs(9),
        keepalive: None,
        password: password.map(str::to_string),
        router_id: Ipv4Addr::new(127, 0, 0, 2),
        ebgp_multihop: false,
    }
}

fn route(prefix: &str, next_hop: &str) -> (IpNet, Route) {
    let prefix: IpNet = prefix.parse().unwrap();
    (
        prefix,
        Route {
            prefix,
            next_hop: next_hop.parse().unwrap(),
            communities: vec![(65000 << 16) | 100],
            large_communities: vec![[4_200_000_001, 7, 8]],
            local_pref: None,
        },
    )
}

async fn wait_established(session: &Session) -> Result<()> {
    let mut status = session.status();
    tokio::time::timeout(WAIT, status.wait_for(|s| s.state == State::Established))
        .await
        .with_context(|| format!("the session never came up: {:?}", session.status().borrow()))??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_reach_gobgpd_and_are_withdrawn() -> Result<()> {
    let router = Gobgpd::start(Some("s3cret"))?;
    let routes: Routes = [
        route("198.51.100.10/32", "192.0.2.11"),
        route("fd00:100::10/128", "fd00::2"),
    ]
    .into_iter()
    .collect();
    let session = Session::start(config(&router, Some("s3cret")), routes);
    wait_established(&session).await?;

    let v4 = wait_for("the IPv4 route at gobgpd", WAIT, || async {
        Ok(router
            .rib("ipv4")?
            .into_iter()
            .find(|(p, _)| p == "198.51.100.10/32"))
    })
    .await
    .with_context(|| {
        format!(
            "rib: {:?}\nneighbor: {:?}\n{}",
            router.cli(&["global", "rib", "-a", "ipv4"]),
            router.cli(&["neighbor", "127.0.0.2"]),
            router.log()
        )
    })?;
    let attrs = v4.1["attrs"].to_string();
    assert!(attrs.contains("192.0.2.11"), "next hop: {attrs}");
    assert!(
        attrs.contains(&((65000u32 << 16) | 100).to_string()),
        "community: {attrs}"
    );
    assert!(attrs.contains("4200000001"), "large community: {attrs}");
    assert!(attrs.contains(&OUR_AS.to_string()), "AS path: {attrs}");
    let v6 = wait_for("the IPv6 route at gobgpd", WAIT, || async {
        Ok(router
            .rib("ipv6")?
            .into_iter()
            .find(|(p, _)| p == "fd00:100::10/128"))
    })
    .await?;
    assert!(v6.1["attrs"].to_string().contains("fd00::2"), "{}", v6.1);

    // One route taken away: withdrawn, the other stays.
    session.set_routes([route("fd00:100::10/128", "fd00::2")].into_iter().collect());
    wait_for("the IPv4 route to be withdrawn", WAIT, || async {
        Ok(router.rib("ipv4")?.is_empty().then_some(()))
    })
    .await?;
    assert_eq!(router.rib("ipv6")?.len(), 1);

    // A clean stop withdraws before closing.
    session.stop().await;
    assert!(
        router.rib("ipv6")?.is_empty(),
        "withdrawn before the stop returned"
    );
    wait_for("gobgpd to see the session close", WAIT, || async {
        let state = router.neighbor_state()?;
        Ok((state != "established" && state != "6").then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_md5_password_keeps_the_session_down_and_says_so() -> Result<()> {
    let router = Gobgpd::start(Some("right"))?;
    let session = Session::start(
        config(&router, Some("wrong")),
        [route("198.51.100.10/32", "192.0.2.11")]
            .into_iter()
            .collect(),
    );
    let mut status = session.status();
    let error = tokio::time::timeout(WAIT, status.wait_for(|s| s.last_error.is_some()))
        .await
        .context("no error reported")??
        .last_error
        .clone()
        .unwrap();
    assert!(error.contains("TCP-MD5"), "{error}");
    assert_ne!(status.borrow().state, State::Established);
    assert!(router.rib("ipv4")?.is_empty());
    Ok(())
}

/// The peer dies without a word: the hold timer ends the session, and the
/// session comes back when the peer does.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_peer_is_dropped_and_the_session_comes_back() -> Result<()> {
    let router = Gobgpd::start(None)?;
    let mut cfg = config(&router, None);
    cfg.hold_time = Duration::from_secs(3);
    let session = Session::start(
        cfg,
        [route("198.51.100.10/32", "192.0.2.11")]
            .into_iter()
            .collect(),
    );
    wait_established(&session).await?;
    let pid = router._process.pid();
    // SIGSTOP: the TCP connection stays open but the peer says nothing.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::STOP,
    )?;
    let mut status = session.status();
    tokio::time::timeout(WAIT, status.wait_for(|s| s.state != State::Established))
        .await
        .context("the hold timer never fired")??;
    assert!(
        status
            .borrow()
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("hold timer"),
        "{:?}",
        status.borrow()
    );
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::CONT,
    )?;
    wait_established(&session).await?;
    wait_for("the route back at gobgpd", WAIT, || async {
        Ok((router.rib("ipv4")?.len() == 1).then_some(()))
    })
    .await?;
    Ok(())
}

/// iBGP: LOCAL_PREF reaches the peer, and the AS path stays empty.
#[tokio::test(flavor = "multi_thread")]
async fn ibgp_carries_local_pref() -> Result<()> {
    let router = Gobgpd::start_with(None, ROUTER_AS)?;
    let mut cfg = config(&router, None);
    cfg.my_asn = ROUTER_AS;
    let (prefix, mut r) = route("198.51.100.20/32", "192.0.2.11");
    r.local_pref = Some(150);
    let session = Session::start(cfg, [(prefix, r)].into_iter().collect());
    wait_established(&session).await?;
    let (_, path) = wait_for("the iBGP route at gobgpd", WAIT, || async {
        Ok(router
            .rib("ipv4")?
            .into_iter()
            .find(|(p, _)| p == "198.51.100.20/32"))
    })
    .await?;
    let attrs = path["attrs"].as_array().cloned().unwrap_or_default();
    let local_pref = attrs.iter().find(|a| a["type"] == 5);
    assert_eq!(
        local_pref.map(|a| a["value"].clone()),
        Some(serde_json::json!(150)),
        "{attrs:?}"
    );
    session.stop().await;
    Ok(())
}
