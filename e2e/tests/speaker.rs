//! `ferrolb speaker` on a LAN of network namespaces: three node hosts with a
//! real speaker each, a client asking with `arping` and `ndisc6`, the
//! controller and a real kube-apiserver.

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::l2::{L2Cluster, check_tools};
use common::{WAIT, events_for};
use ferrolb_baremetal::crd::L2AdvertisementSpec;
use ferrolb_e2e::wait_for;
use k8s_openapi::api::core::v1::Service;
use kube::api::DeleteParams;

/// The Service's condition of that type: (status, message).
async fn condition(c: &L2Cluster, svc: &str, type_: &str) -> Result<Option<(String, String)>> {
    let svc: Service = c.env.services().get(svc).await?;
    Ok(svc
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|cond| cond.type_ == type_)
        .map(|cond| (cond.status, cond.message)))
}

async fn wait_condition(
    c: &L2Cluster,
    svc: &str,
    type_: &str,
    want: impl Fn(&str, &str) -> bool,
) -> Result<String> {
    wait_for(&format!("{type_} on {svc}"), WAIT, || async {
        Ok(condition(c, svc, type_)
            .await?
            .filter(|(s, m)| want(s, m))
            .map(|(_, m)| m))
    })
    .await
    .with_context(|| c.logs())
}

/// The VIP resolves to one node's MAC, the Service says which node, another
/// node takes over when that one's speaker is killed, and deleting the
/// Service silences every node.
#[tokio::test(flavor = "multi_thread")]
async fn one_node_answers_and_another_takes_over_when_it_dies() -> Result<()> {
    check_tools()?;
    let (mut c, vip) = L2Cluster::start_with_web(3).await?;
    let first = c.wait_arp(&vip, |_| true).await?;
    assert!(c.nodes.contains(&first), "{first} is not a node's MAC");

    wait_condition(&c, "web", "ferrolb.io/L2AnnouncedIPv4", |s, m| {
        s == "True" && m.contains(&first)
    })
    .await?;
    let events = events_for(&c.env.client, &c.env.ns, "web").await?;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("AnnouncerChanged")),
        "no AnnouncerChanged event"
    );

    c.kill_speaker(&first).await?;
    let second = c.wait_arp(&vip, |n| n != first).await?;
    assert!(c.nodes.contains(&second));
    let msg = wait_condition(&c, "web", "ferrolb.io/L2AnnouncedIPv4", |s, m| {
        s == "True" && m.contains(&second)
    })
    .await?;
    assert!(!msg.contains(&first));
    wait_for("an event naming the old announcer", WAIT, || async {
        let events = events_for(&c.env.client, &c.env.ns, "web").await?;
        Ok(events
            .into_iter()
            .filter_map(|e| e.note)
            .find(|n| n.contains(&format!("it was {first}"))))
    })
    .await?;

    // The dead node comes back: the address may move back to it, but only
    // ever one node answers.
    c.start_speaker(&first)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.wait_arp(&vip, |_| true).await?;

    c.env
        .services()
        .delete("web", &DeleteParams::default())
        .await?;
    c.wait_arp_silent(&vip).await?;
    Ok(())
}

/// A graceful stop hands the address over; taking the announcer's link down
/// moves it too.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_and_link_down_hand_over() -> Result<()> {
    check_tools()?;
    let (mut c, vip) = L2Cluster::start_with_web(3).await?;
    let first = c.wait_arp(&vip, |_| true).await?;
    c.terminate_speaker(&first).await?;
    let second = c.wait_arp(&vip, |n| n != first).await?;

    c.lan.set_link(&second, false)?;
    let third = c.wait_arp(&vip, |n| n != first && n != second).await?;
    assert_ne!(third, second);
    Ok(())
}

/// With `externalTrafficPolicy: Local` the announcer is a node with a ready
/// endpoint, and follows the endpoint when it moves; with no endpoint at
/// all, nobody answers and the Service gets a Warning.
#[tokio::test(flavor = "multi_thread")]
async fn local_policy_follows_endpoints() -> Result<()> {
    check_tools()?;
    let mut c = L2Cluster::start(3).await?;
    let ips = c.create_service("local", true, false, &["node-1"]).await?;
    let vip = ips[0].clone();
    assert_eq!(c.wait_arp(&vip, |_| true).await?, "node-1");

    c.set_endpoints("local", &["node-2"]).await?;
    assert_eq!(c.wait_arp(&vip, |n| n == "node-2").await?, "node-2");

    c.set_endpoints("local", &[]).await?;
    c.wait_arp_silent(&vip).await?;
    let msg = wait_condition(&c, "local", "ferrolb.io/L2AnnouncedIPv4", |s, _| {
        s == "False"
    })
    .await?;
    assert!(msg.contains("ready endpoint"), "{msg}");
    wait_for("a NotAnnounced warning", WAIT, || async {
        let events = events_for(&c.env.client, &c.env.ns, "local").await?;
        Ok(events
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("NotAnnounced") && e.type_.as_deref() == Some("Warning")
            })
            .map(|_| ()))
    })
    .await?;
    Ok(())
}

/// IPv6: a dual-stack Service's IPv6 address is answered by NDP from one node,
/// its IPv4 one by ARP; each family's condition names its announcer.
#[tokio::test(flavor = "multi_thread")]
async fn ipv6_is_answered_by_ndp() -> Result<()> {
    check_tools()?;
    let mut c = L2Cluster::start(3).await?;
    let ips = c
        .create_service("dual", false, true, &["node-0", "node-1", "node-2"])
        .await?;
    let v6 = ips
        .iter()
        .find(|ip| ip.contains(':'))
        .context("no IPv6 address")?
        .clone();
    let node = wait_for(
        &format!("one node to answer NDP for {v6}"),
        WAIT,
        || async {
            let seen = c.ndp_all(&v6)?;
            Ok((seen.len() == 1).then(|| seen.into_iter().next().unwrap()))
        },
    )
    .await
    .with_context(|| c.logs())?;
    assert!(c.nodes.contains(&node), "{node}");
    wait_condition(&c, "dual", "ferrolb.io/L2AnnouncedIPv6", |s, m| {
        s == "True" && m.contains(&node)
    })
    .await?;

    c.kill_speaker(&node).await?;
    wait_for(
        &format!("another node to answer NDP for {v6}"),
        WAIT,
        || async {
            let seen = c.ndp_all(&v6)?;
            Ok((seen.len() == 1 && !seen.contains(&node)).then_some(()))
        },
    )
    .await
    .with_context(|| c.logs())?;
    Ok(())
}

/// Advertisements decide: restricted to zone b, only zone-b nodes answer; with
/// none, nobody answers and the pool's status says so.
#[tokio::test(flavor = "multi_thread")]
async fn advertisements_pick_nodes_and_pools() -> Result<()> {
    check_tools()?;
    let mut c = L2Cluster::start(3).await?;
    c.delete_advertisement("all").await?;
    let ips = c
        .create_service("web", false, false, &["node-0", "node-1", "node-2"])
        .await?;
    let vip = ips[0].clone();
    c.wait_arp_silent(&vip).await?;
    wait_condition(&c, "web", "ferrolb.io/L2AnnouncedIPv4", |s, m| {
        s == "False" && m.contains("no L2Advertisement")
    })
    .await?;
    wait_for("the pool to say it is not announced", WAIT, || async {
        let s = c.env.pool_status("lan").await?;
        Ok(
            s.filter(|s| s.warnings.iter().any(|w| w.contains("not announced")))
                .map(|_| ()),
        )
    })
    .await
    .with_context(|| c.logs())?;

    // node-1 is the only node in zone b.
    let sel = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
        match_labels: Some([("zone".to_string(), "b".to_string())].into()),
        ..Default::default()
    };
    c.create_advertisement(
        "zone-b",
        L2AdvertisementSpec {
            ip_pools: vec!["lan".into()],
            node_selectors: vec![sel],
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(c.wait_arp(&vip, |_| true).await?, "node-1");
    wait_for("the pool to list its advertisement", WAIT, || async {
        let s = c.env.pool_status("lan").await?;
        Ok(
            s.filter(|s| s.warnings.is_empty() && s.advertisements == ["L2Advertisement/zone-b"])
                .map(|_| ()),
        )
    })
    .await?;
    // Its speaker dies: no other node is selected, so nobody answers.
    c.kill_speaker("node-1").await?;
    c.wait_arp_silent(&vip).await?;
    Ok(())
}

/// What goes on the wire at a takeover, read back with tcpdump on the
/// client: the new announcer sends gratuitous ARPs for the VIP with its own
/// MAC, more than once; and the speakers' metrics count what they did.
#[tokio::test(flavor = "multi_thread")]
async fn takeover_sends_repeated_gratuitous_arps() -> Result<()> {
    check_tools()?;
    let (mut c, vip) = L2Cluster::start_with_web(3).await?;
    let first = c.wait_arp(&vip, |_| true).await?;
    let metrics = c.speaker_metrics(&first)?;
    assert!(
        metrics.contains("ferrolb_speaker_announced_addresses 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ferrolb_speaker_replies_total{protocol=\"arp\"}")),
        "{metrics}"
    );

    let capture = tempfile::NamedTempFile::new()?;
    let mut tcpdump = c
        .lan
        .command(common::l2::CLIENT, "tcpdump")
        .args(["-i", "eth0", "-l", "-nn", "-e", "arp"])
        .stdout(capture.reopen()?)
        .stderr(std::process::Stdio::null())
        .spawn()?;
    // tcpdump needs a moment before it captures.
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.kill_speaker(&first).await?;
    let second = c.wait_arp(&vip, |n| n != first).await?;
    // The burst lasts 3 s.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let _ = tcpdump.kill();
    let _ = tcpdump.wait();
    let text = std::fs::read_to_string(capture.path())?;
    let mac = c.lan.mac(&second)?;
    let gratuitous: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&mac) && l.contains(&format!("who-has {vip} tell {vip}")))
        .collect();
    assert!(
        gratuitous.len() >= 3,
        "expected repeated gratuitous ARPs from {second} ({mac}):\n{text}"
    );
    let metrics = c.speaker_metrics(&second)?;
    let acquired = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ferrolb_speaker_handovers_total{direction=\"acquired\"} "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(acquired >= Some(1), "{metrics}");
    // Every speaker metric the troubleshooting guide names is served.
    // (The BGP ones are checked where a BGP peer exists, in speaker_bgp.rs.)
    let documented: Vec<String> = common::documented_metrics()?
        .into_iter()
        .filter(|n| n.starts_with("ferrolb_speaker_") && !n.starts_with("ferrolb_speaker_bgp_"))
        .collect();
    assert!(documented.len() >= 5, "{documented:?}");
    for name in documented {
        assert!(
            metrics.lines().any(|l| l.starts_with(&name)),
            "{name} is documented but not served:\n{metrics}"
        );
    }
    Ok(())
}

/// The speakers authenticated as the chart's speaker ServiceAccount, under
/// the chart's RBAC applied for real: they announce, hand over, write their
/// conditions and Events, and are never refused.
#[tokio::test(flavor = "multi_thread")]
async fn speakers_run_under_the_charts_rbac() -> Result<()> {
    use ferrolb_e2e::chart::{self, Helm, render_and_apply, service_account_kubeconfig};
    check_tools()?;
    let mut c = L2Cluster::start(3).await?;
    let helm = Helm::new().await?;
    chart::prepare(&c.env.cp).await?;
    let values = chart::ci_values("baremetal-values.yaml");
    let rbac = [
        "-f",
        &values,
        "--show-only",
        "templates/serviceaccounts.yaml",
        "--show-only",
        "templates/rbac.yaml",
    ];
    render_and_apply(&c.env.cp, &helm, &rbac, true).await?;
    let daemonset = [
        "-f",
        &values,
        "--show-only",
        "templates/speaker-daemonset.yaml",
    ];
    let (objects, _) = render_and_apply(&c.env.cp, &helm, &daemonset, false).await?;
    let sa = objects[0]["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .context("the DaemonSet names no ServiceAccount")?
        .to_string();
    let kubeconfig = c.env.cp.dir().join("speaker-sa.kubeconfig");
    service_account_kubeconfig(&c.env.cp, &sa, &kubeconfig).await?;
    c.speaker_kubeconfig = Some(kubeconfig);
    for node in c.nodes.clone() {
        c.kill_speaker(&node).await?;
        c.start_speaker(&node)?;
    }
    c.wait_speakers_ready().await?;

    // A BGP peer with a password: the speakers read the Secret in the
    // release namespace and write their sessions into the peer's status.
    // Nothing listens at the peer's address, so the sessions stay down.
    let secret = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("router-bgp".into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/basic-auth".into()),
        string_data: Some([("password".to_string(), "s3cret".to_string())].into()),
        ..Default::default()
    };
    kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(
        c.env.client.clone(),
        ferrolb_e2e::chart::NAMESPACE,
    )
    .create(&Default::default(), &secret)
    .await?;
    let peers: kube::Api<ferrolb_baremetal::crd::BGPPeer> = kube::Api::all(c.env.client.clone());
    peers
        .create(
            &Default::default(),
            &ferrolb_baremetal::crd::BGPPeer::new(
                "router",
                ferrolb_baremetal::crd::BGPPeerSpec {
                    my_asn: 64513,
                    peer_asn: 64512,
                    peer_address: "10.77.0.3".into(),
                    password_secret: Some(ferrolb_baremetal::crd::SecretReference {
                        name: "router-bgp".into(),
                    }),
                    ..Default::default()
                },
            ),
        )
        .await?;
    wait_for(
        "every node's session in the BGPPeer's status",
        WAIT,
        || async {
            let nodes = peers.get("router").await?.status.unwrap_or_default().nodes;
            Ok((nodes.len() == 3).then_some(()))
        },
    )
    .await
    .with_context(|| c.logs())?;

    let ips = c
        .create_service("web", false, false, &["node-0", "node-1", "node-2"])
        .await?;
    let vip = ips[0].clone();
    let first = c.wait_arp(&vip, |_| true).await?;
    wait_condition(&c, "web", "ferrolb.io/L2AnnouncedIPv4", |s, m| {
        s == "True" && m.contains(&first)
    })
    .await?;
    c.terminate_speaker(&first).await?;
    let second = c.wait_arp(&vip, |n| n != first).await?;
    wait_condition(&c, "web", "ferrolb.io/L2AnnouncedIPv4", |s, m| {
        s == "True" && m.contains(&second)
    })
    .await?;
    wait_for(
        "an AnnouncerChanged event from the new node",
        WAIT,
        || async {
            let events = events_for(&c.env.client, &c.env.ns, "web").await?;
            Ok(events
                .into_iter()
                .filter_map(|e| e.note)
                .find(|n| n.contains(&format!("by {second}")))
                .map(|_| ()))
        },
    )
    .await?;
    for node in &c.nodes {
        let log = c.speaker_log(node);
        let refused: Vec<&str> = log
            .lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                l.contains("forbidden") || l.contains("code: 403")
            })
            .collect();
        assert!(
            refused.is_empty(),
            "speaker on {node} was refused:\n{}",
            refused.join("\n")
        );
    }
    Ok(())
}
