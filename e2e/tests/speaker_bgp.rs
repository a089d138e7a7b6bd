//! `ferrolb speaker` advertising over BGP to a real gobgpd: three node
//! namespaces with real speakers, a router namespace running gobgpd, on one
//! bridge. Assertions read gobgpd's own RIB.

mod common;

use anyhow::{Context, Result};
use common::WAIT;
use common::bgp::{configure_bgp, gobgp, next_hops, node_ips, start_bird, start_router};
use common::l2::{L2Cluster, check_tools};
use ferrolb_e2e::wait_for;
use kube::api::DeleteParams;

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
    // Each node's session shows in the BGPPeer's status.
    let peers: kube::Api<ferrolb_baremetal::crd::BGPPeer> = kube::Api::all(c.env.client.clone());
    wait_for(
        "every node's session in the BGPPeer's status",
        WAIT,
        || async {
            let status = peers.get("router").await?.status.unwrap_or_default();
            let mut up: Vec<&str> = status
                .nodes
                .iter()
                .filter(|n| n.state == "Established" && n.prefixes == 1)
                .map(|n| n.node.as_str())
                .collect();
            up.sort();
            Ok((up == ["node-0", "node-1", "node-2"]).then_some(()))
        },
    )
    .await
    .with_context(|| c.logs())?;
    // The Service says which nodes advertise it, and the pool which
    // advertisements announce it.
    wait_for("the Service's BGP condition", WAIT, || async {
        let svc = c.env.services().get("web").await?;
        let cond = svc
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "ferrolb.io/BGPAdvertisedIPv4" && c.status == "True");
        Ok(cond
            .filter(|c| {
                ["node-0", "node-1", "node-2"]
                    .iter()
                    .all(|n| c.message.contains(n))
            })
            .map(|_| ()))
    })
    .await
    .with_context(|| c.logs())?;
    wait_for("the pool to list the BGPAdvertisement", WAIT, || async {
        let s = c.env.pool_status("lan").await?;
        Ok(
            s.filter(|s| s.advertisements.iter().any(|a| a == "BGPAdvertisement/lan"))
                .map(|_| ()),
        )
    })
    .await?;
    let rib = gobgp(&c, &["global", "rib", "-a", "ipv4"])?.to_string();
    assert!(
        rib.contains(&((65000u32 << 16) | 100).to_string()),
        "community missing: {rib}"
    );
    // The BGP metrics the troubleshooting guide names, with this peer.
    let documented: Vec<String> = common::documented_metrics()?
        .into_iter()
        .filter(|n| n.starts_with("ferrolb_speaker_bgp_"))
        .collect();
    assert_eq!(documented.len(), 3, "{documented:?}");
    wait_for("the BGP metrics of node-0", WAIT, || async {
        let metrics = c.speaker_metrics("node-0")?;
        let all = documented.iter().all(|name| {
            metrics
                .lines()
                .any(|l| l.starts_with(&format!("{name}{{peer=\"router\"}}")))
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
    Ok(())
}

/// The same routes at BIRD, so we know we interoperate with more than one
/// implementation: three paths with the community, withdrawn on delete.
#[tokio::test(flavor = "multi_thread")]
async fn routes_reach_bird_too() -> Result<()> {
    check_tools()?;
    let (mut c, vip) = L2Cluster::start_with_web(3).await?;
    let bird = start_bird(&mut c).await?;
    configure_bgp(&c, &["65000:100", "large:4200000001:1:2"]).await?;
    let prefix = format!("{vip}/32");
    let all = node_ips(&c, &["node-0", "node-1", "node-2"]);
    wait_for("three paths at BIRD", WAIT, || async {
        Ok((bird.next_hops(&prefix)? == all).then_some(()))
    })
    .await
    .with_context(|| {
        format!(
            "{}\n{}",
            bird.birdc(&["show", "protocols"]).unwrap_or_default(),
            c.logs()
        )
    })?;
    let text = bird.birdc(&["show", "route", "for", &prefix, "all"])?;
    assert!(text.contains("(65000,100)"), "community: {text}");
    assert!(
        text.contains("(4200000001, 1, 2)"),
        "large community: {text}"
    );
    c.env
        .services()
        .delete("web", &DeleteParams::default())
        .await?;
    wait_for("the route withdrawn at BIRD", WAIT, || async {
        Ok(bird.next_hops(&prefix)?.is_empty().then_some(()))
    })
    .await?;
    Ok(())
}

/// A BGPPeer whose password Secret is missing is reported, on every node, in
/// its status (state `Invalid`, the problem in `lastError`) and in a Warning
/// Event; the other peer keeps its routes. Once the Secret exists (and the
/// peer is touched, so the speakers read it now rather than within the
/// minute), the entries leave `Invalid`.
#[tokio::test(flavor = "multi_thread")]
async fn a_peer_with_a_missing_password_secret_is_reported_and_others_still_peer() -> Result<()> {
    use ferrolb_baremetal::crd::{BGPPeer, BGPPeerSpec, SecretReference};
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::api::events::v1::Event;
    use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

    check_tools()?;
    let (mut c, vip) = L2Cluster::start_with_web(3).await?;
    let _router = start_router(&mut c).await?;
    configure_bgp(&c, &[]).await?;
    let client = c.env.client.clone();
    let peers: Api<BGPPeer> = Api::all(client.clone());
    peers
        .create(
            &PostParams::default(),
            &BGPPeer::new(
                "guarded",
                BGPPeerSpec {
                    my_asn: 64512,
                    peer_asn: 64513,
                    // Nobody listens there; the session only has to be tried.
                    peer_address: "192.0.2.254".into(),
                    password_secret: Some(SecretReference {
                        name: "bgp-password".into(),
                    }),
                    ..Default::default()
                },
            ),
        )
        .await?;

    let states = |peers: Api<BGPPeer>| async move {
        let status = peers.get("guarded").await?.status.unwrap_or_default();
        anyhow::Ok(status.nodes)
    };
    let nodes = wait_for(
        "three Invalid entries on the guarded peer",
        WAIT,
        || async {
            let nodes = states(peers.clone()).await?;
            Ok((nodes.len() == 3 && nodes.iter().all(|n| n.state == "Invalid")).then_some(nodes))
        },
    )
    .await
    .with_context(|| c.logs())?;
    for n in &nodes {
        let err = n.last_error.as_deref().unwrap_or_default();
        assert!(
            err.contains("spec.passwordSecret") && err.contains("bgp-password"),
            "{}: {err}",
            n.node
        );
    }
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let note = wait_for("an InvalidBGPPeer Event", WAIT, || async {
        Ok(events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("InvalidBGPPeer")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("guarded")
            })
            .and_then(|e| e.note))
    })
    .await?;
    assert!(note.contains("spec.passwordSecret"), "{note}");
    // The good peer still has every node's route.
    let prefix = format!("{vip}/32");
    let all = node_ips(&c, &["node-0", "node-1", "node-2"]);
    wait_for("three paths at gobgpd", WAIT, || async {
        Ok((next_hops(&c, &prefix)? == all).then_some(()))
    })
    .await
    .with_context(|| c.logs())?;

    ferrolb_e2e::fixtures::create_namespace(&client, "ferrolb-system").await?;
    Api::<Secret>::namespaced(client.clone(), "ferrolb-system")
        .create(
            &PostParams::default(),
            &Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some("bgp-password".into()),
                    ..Default::default()
                },
                string_data: Some([("password".to_string(), "s3cret".to_string())].into()),
                ..Default::default()
            },
        )
        .await?;
    peers
        .patch(
            "guarded",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"touched": "1"}}})),
        )
        .await?;
    wait_for(
        "the guarded peer's entries to leave Invalid",
        WAIT,
        || async {
            let nodes = states(peers.clone()).await?;
            Ok((nodes.len() == 3 && nodes.iter().all(|n| n.state != "Invalid")).then_some(()))
        },
    )
    .await
    .with_context(|| c.logs())?;
    Ok(())
}
