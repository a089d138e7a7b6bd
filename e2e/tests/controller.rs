//! `ferrolb controller` with the bare-metal provider against a real
//! kube-apiserver: what a user sees with kubectl.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{Env, WithLog, annotations, events_for, has_finalizer, ingress_ips};
use ferrolb_e2e::wait_for;
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn service_gets_an_address_and_gives_it_back_on_delete() -> Result<()> {
    let env = Env::start().await?;
    env.create_pool("default", &["192.0.2.0/30"], |_| {})
        .await?;
    let ctl = env.controller(&[])?;
    let check = async {
        env.create_service("web", |_| {}).await?;
        let ips = env.wait_ingress("web", 1).await?;
        assert_eq!(ips, ["192.0.2.0"], "first address of the pool");
        let svc = env.services().get("web").await?;
        assert!(has_finalizer(&svc), "finalizer added");
        assert_eq!(
            svc.annotations()
                .get("ferrolb.io/ip-allocated-from-pool")
                .map(String::as_str),
            Some("default")
        );
        let note = env.wait_event("web", "EnsuredLoadBalancer").await?;
        assert!(note.contains("192.0.2.0"), "{note}");
        // An address from a pool is there at once: no "Ensuring" first.
        let reasons: Vec<_> = events_for(&env.client, &env.ns, "web")
            .await?
            .into_iter()
            .filter_map(|e| e.reason)
            .collect();
        assert!(
            !reasons.iter().any(|r| r == "EnsuringLoadBalancer"),
            "{reasons:?}"
        );
        wait_for("pool status to count the address", common::WAIT, || async {
            let s = env.pool_status("default").await?;
            Ok(s.filter(|s| s.assigned_ipv4 == 1 && s.available_ipv4 == 3)
                .map(|_| ()))
        })
        .await?;

        env.services()
            .delete("web", &DeleteParams::default())
            .await?;
        env.wait_gone("web").await?;
        wait_for("pool status to free the address", common::WAIT, || async {
            let s = env.pool_status("default").await?;
            Ok(s.filter(|s| s.assigned_ipv4 == 0 && s.available_ipv4 == 4)
                .map(|_| ()))
        })
        .await?;
        // Released for real: the next Service gets the same first address.
        env.create_service("next", |_| {}).await?;
        assert_eq!(env.wait_ingress("next", 1).await?, ["192.0.2.0"]);
        Ok(())
    };
    check.await.with_log(&ctl)
}

#[tokio::test(flavor = "multi_thread")]
async fn type_change_to_cluster_ip_releases_everything() -> Result<()> {
    let env = Env::start().await?;
    env.create_pool("one", &["192.0.2.10/32"], |_| {}).await?;
    let ctl = env.controller(&[])?;
    let check = async {
        env.create_service("a", |_| {}).await?;
        assert_eq!(env.wait_ingress("a", 1).await?, ["192.0.2.10"]);

        let patch = json!({ "spec": { "type": "ClusterIP", "loadBalancerClass": null, "externalTrafficPolicy": null } });
        env.services()
            .patch("a", &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let api = env.services();
        wait_for(
            "a to lose finalizer, address and pool annotation",
            common::WAIT,
            || async {
                let svc = api.get("a").await?;
                let clean = !has_finalizer(&svc)
                    && ingress_ips(&svc).is_empty()
                    && !svc
                        .annotations()
                        .contains_key("ferrolb.io/ip-allocated-from-pool");
                Ok(clean.then_some(()))
            },
        )
        .await?;
        env.wait_event("a", "DeletedLoadBalancer").await?;
        // The pool's only address is free again.
        env.create_service("b", |_| {}).await?;
        assert_eq!(env.wait_ingress("b", 1).await?, ["192.0.2.10"]);
        Ok(())
    };
    check.await.with_log(&ctl)
}

#[tokio::test(flavor = "multi_thread")]
async fn other_classes_are_untouched() -> Result<()> {
    let env = Env::start().await?;
    env.create_pool("default", &["192.0.2.0/29"], |_| {})
        .await?;
    let ctl = env.controller(&[])?;
    let check = async {
        env.create_service("other-class", |s| {
            s.spec.as_mut().unwrap().load_balancer_class = Some("example.com/other".into());
        })
        .await?;
        env.create_service("no-class", |s| {
            s.spec.as_mut().unwrap().load_balancer_class = None
        })
        .await?;
        // Another install of ferrolb (same finalizer name) serves this one
        // and has given it an address: it is that install's, not ours.
        env.create_service("other-install", |s| {
            s.spec.as_mut().unwrap().load_balancer_class = Some("example.com/other".into());
            s.metadata.finalizers = Some(vec!["ferrolb.io/load-balancer-cleanup".into()]);
            s.metadata.annotations =
                annotations(&[("ferrolb.io/ip-allocated-from-pool", "theirs")]);
        })
        .await?;
        let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.9", "ipMode": "VIP"}]}}});
        env.services()
            .patch_status(
                "other-install",
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await?;
        env.create_service("ours", |_| {}).await?;
        env.wait_ingress("ours", 1).await?;
        // Ours converged after the others were created; give the others one
        // more second in case a wrong reconcile of them was still in flight.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let theirs = env.services().get("other-install").await?;
        assert!(
            has_finalizer(&theirs),
            "the other install's finalizer was removed"
        );
        assert_eq!(
            ingress_ips(&theirs),
            ["198.51.100.9"],
            "its status was touched"
        );
        assert_eq!(
            theirs
                .annotations()
                .get("ferrolb.io/ip-allocated-from-pool")
                .map(String::as_str),
            Some("theirs")
        );
        for name in ["other-class", "no-class", "other-install"] {
            let svc = env.services().get(name).await?;
            if name != "other-install" {
                assert!(!has_finalizer(&svc), "{name} got our finalizer");
                assert!(ingress_ips(&svc).is_empty(), "{name} got an address");
            }
            let events = events_for(&env.client, &env.ns, name).await?;
            let ours: Vec<_> = events
                .iter()
                .filter(|e| e.reporting_controller.as_deref() == Some("ferrolb-controller"))
                .map(|e| (e.reason.clone(), e.note.clone()))
                .collect();
            assert!(ours.is_empty(), "{name} got events from ferrolb: {ours:?}");
        }
        Ok(())
    };
    check.await.with_log(&ctl)
}

#[tokio::test(flavor = "multi_thread")]
async fn requested_addresses_pools_sharing_and_dual_stack() -> Result<()> {
    let env = Env::start().await?;
    env.create_pool("v4", &["192.0.2.0/28"], |_| {}).await?;
    env.create_pool("manual", &["198.51.100.1-198.51.100.3"], |s| {
        s.auto_assign = false
    })
    .await?;
    env.create_pool("dual", &["203.0.113.0/30", "2001:db8::/126"], |s| {
        s.service_allocation = Some(ferrolb_baremetal::crd::ServiceAllocation {
            priority: Some(1),
            namespaces: vec!["test".into()],
            ..Default::default()
        })
    })
    .await?;
    let ctl = env.controller(&[])?;
    let check = async {
        env.create_service("by-spec", |s| {
            s.spec.as_mut().unwrap().load_balancer_ip = Some("192.0.2.7".into());
        })
        .await?;
        assert_eq!(env.wait_ingress("by-spec", 1).await?, ["192.0.2.7"]);

        // A pool without autoAssign serves only explicit requests.
        env.create_service("by-annotation", |s| {
            s.metadata.annotations =
                annotations(&[("ferrolb.io/load-balancer-ips", "198.51.100.2")]);
        })
        .await?;
        assert_eq!(
            env.wait_ingress("by-annotation", 1).await?,
            ["198.51.100.2"]
        );

        env.create_service("by-pool", |s| {
            s.metadata.annotations = annotations(&[("ferrolb.io/pool", "v4")]);
        })
        .await?;
        let ip = env.wait_ingress("by-pool", 1).await?;
        assert!(ip[0].starts_with("192.0.2."), "{ip:?}");

        // Priority 1 puts "dual" first for namespace test.
        env.create_service("dual", |s| {
            s.spec.as_mut().unwrap().ip_family_policy = Some("PreferDualStack".into());
        })
        .await?;
        let ips = env.wait_ingress("dual", 2).await?;
        assert_eq!(
            ips,
            ["203.0.113.0", "2001:db8::"],
            "one address per family, same pool"
        );

        // Same key, disjoint ports, same policy: one address.
        for (name, port) in [("dns-udp", 53), ("dns-tcp", 5353)] {
            env.create_service(name, |s| {
                s.metadata.annotations = annotations(&[
                    ("ferrolb.io/allow-shared-ip", "dns"),
                    ("ferrolb.io/pool", "v4"),
                ]);
                s.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = port;
            })
            .await?;
        }
        let a = env.wait_ingress("dns-udp", 1).await?;
        let b = env.wait_ingress("dns-tcp", 1).await?;
        assert_eq!(a, b, "shared address");
        assert_ne!(a, ip, "not the address of an unrelated Service");
        Ok(())
    };
    check.await.with_log(&ctl)
}

#[tokio::test(flavor = "multi_thread")]
async fn unsatisfiable_requests_warn_and_stay_pending() -> Result<()> {
    let env = Env::start().await?;
    env.create_pool("tiny", &["192.0.2.1/32"], |_| {}).await?;
    let ctl = env.controller(&[])?;
    let check = async {
        env.create_service("outside", |s| {
            s.spec.as_mut().unwrap().load_balancer_ip = Some("198.51.100.9".into());
        })
        .await?;
        let note = env.wait_event("outside", "SyncLoadBalancerFailed").await?;
        assert!(
            note.contains("198.51.100.9") && note.contains("not in any"),
            "{note}"
        );

        env.create_service("wrong-family", |s| {
            s.metadata.annotations =
                annotations(&[("ferrolb.io/load-balancer-ips", "2001:db8::1")]);
        })
        .await?;
        let note = env
            .wait_event("wrong-family", "SyncLoadBalancerFailed")
            .await?;
        assert!(
            note.contains("IPv6") && note.contains("load-balancer-ips"),
            "{note}"
        );

        env.create_service("no-such-pool", |s| {
            s.metadata.annotations = annotations(&[("ferrolb.io/pool", "missing")]);
        })
        .await?;
        let note = env
            .wait_event("no-such-pool", "SyncLoadBalancerFailed")
            .await?;
        assert!(note.contains("missing"), "{note}");

        // A pool kept for another namespace says so.
        env.create_pool("elsewhere", &["198.51.100.0/30"], |s| {
            s.service_allocation = Some(ferrolb_baremetal::crd::ServiceAllocation {
                namespaces: vec!["prod".into()],
                ..Default::default()
            })
        })
        .await?;
        env.create_service("not-allowed", |s| {
            s.metadata.annotations = annotations(&[("ferrolb.io/pool", "elsewhere")]);
        })
        .await?;
        let note = env
            .wait_event("not-allowed", "SyncLoadBalancerFailed")
            .await?;
        assert!(
            note.contains("elsewhere") && note.contains("namespace"),
            "{note}"
        );

        env.create_service("first", |_| {}).await?;
        assert_eq!(env.wait_ingress("first", 1).await?, ["192.0.2.1"]);
        env.create_service("second", |_| {}).await?;
        let note = env.wait_event("second", "SyncLoadBalancerFailed").await?;
        assert!(note.contains("tiny"), "names the exhausted pool: {note}");

        for name in [
            "outside",
            "wrong-family",
            "no-such-pool",
            "not-allowed",
            "second",
        ] {
            let svc = env.services().get(name).await?;
            assert!(ingress_ips(&svc).is_empty(), "{name} must stay pending");
        }

        // Freeing the address unblocks the waiting Service without any change to it.
        env.services()
            .delete("first", &DeleteParams::default())
            .await?;
        assert_eq!(env.wait_ingress("second", 1).await?, ["192.0.2.1"]);

        // So does moving its holder away, once the holder's new status is
        // out: before that, its old status still shows the address.
        env.create_service("third", |_| {}).await?;
        env.wait_event("third", "SyncLoadBalancerFailed").await?;
        env.create_pool("spare", &["192.0.2.9/32"], |s| s.auto_assign = false)
            .await?;
        let patch = json!({"metadata": {"annotations": {"ferrolb.io/pool": "spare"}}});
        env.services()
            .patch("second", &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        assert_eq!(env.wait_ingress("third", 1).await?, ["192.0.2.1"]);
        let second = env.services().get("second").await?;
        assert_eq!(
            ingress_ips(&second),
            ["192.0.2.9"],
            "the moved Service shows its new address by the time its old one is handed on"
        );
        Ok(())
    };
    check.await.with_log(&ctl)
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_every_address() -> Result<()> {
    let env = Env::start().await?;
    env.create_pool("default", &["192.0.2.0/28"], |_| {})
        .await?;
    let mut ctl = env.controller(&[])?;
    let mut before = Vec::new();
    let check = async {
        for name in ["a", "b", "c"] {
            env.create_service(name, |_| {}).await?;
            before.push(env.wait_ingress(name, 1).await?);
        }
        Ok(())
    };
    check.await.with_log(&ctl)?;
    ctl.kill().await?;

    // While it is down: a new Service, and one of the old ones goes away (its
    // finalizer holds it until the controller is back).
    env.create_service("d", |_| {}).await?;
    env.services().delete("a", &DeleteParams::default()).await?;

    let ctl = env.controller(&[])?;
    let check = async {
        let d = env.wait_ingress("d", 1).await?;
        env.wait_gone("a").await?;
        for (i, name) in ["b", "c"].into_iter().enumerate() {
            let now = ingress_ips(&env.services().get(name).await?);
            assert_eq!(
                now,
                before[i + 1],
                "{name} kept its address across the restart"
            );
        }
        assert!(
            !before[1..].contains(&d),
            "d got an address nobody else holds: {d:?} vs {before:?}"
        );
        // d may take a's old address only after a released it; either way no
        // address is held twice.
        Ok(())
    };
    check.await.with_log(&ctl)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_controllers_exactly_one_acts() -> Result<()> {
    let env = Env::start().await?;
    env.create_pool("default", &["192.0.2.0/28"], |_| {})
        .await?;
    let mut one = env.elected_controller("one", "4s")?;
    // Let "one" win the lease first so the test knows whom to kill.
    wait_for("controller one to hold the lease", common::WAIT, || async {
        Ok(env.lease_holder().await?.filter(|h| h == "one"))
    })
    .await
    .with_log(&one)?;
    let two = env.elected_controller("two", "4s")?;

    env.create_service("a", |_| {}).await?;
    env.wait_ingress("a", 1).await.with_log(&one)?;
    // Events go out a moment after the address: wait for one, so that the
    // check below has something to look at.
    env.wait_event("a", "EnsuredLoadBalancer")
        .await
        .with_log(&one)?;
    for e in events_for(&env.client, &env.ns, "a").await? {
        assert_eq!(
            e.reporting_instance.as_deref(),
            Some("one"),
            "only the leader writes events"
        );
    }
    assert!(
        !two.log().contains("acquired leadership"),
        "standby must not lead:\n{}",
        two.log()
    );
    assert!(
        !two.log().contains("allocated"),
        "standby must not allocate:\n{}",
        two.log()
    );

    one.kill().await?;
    wait_for(
        "controller two to take over",
        Duration::from_secs(20),
        || async { Ok(env.lease_holder().await?.filter(|h| h == "two")) },
    )
    .await
    .with_log(&two)?;
    env.create_service("b", |_| {}).await?;
    let b = env.wait_ingress("b", 1).await.with_log(&two)?;
    let a = ingress_ips(&env.services().get("a").await?);
    assert_ne!(
        a, b,
        "the new leader restored a's address before allocating"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_annotation_is_reported_and_others_still_served() -> Result<()> {
    let env = Env::start().await?;
    env.create_pool("default", &["192.0.2.0/28"], |_| {})
        .await?;
    let ctl = env.controller(&[])?;
    let check = async {
        env.create_service("bad", |s| {
            s.metadata.annotations = annotations(&[("ferrolb.io/load-balancer-ips", "not-an-ip")]);
        })
        .await?;
        env.create_service("good", |_| {}).await?;
        env.wait_ingress("good", 1).await?;
        let note = env.wait_event("bad", "SyncLoadBalancerFailed").await?;
        assert!(
            note.contains("ferrolb.io/load-balancer-ips") && note.contains("not-an-ip"),
            "{note}"
        );
        // Fixing the Service is enough: no restart, no other change.
        let patch = json!({ "metadata": { "annotations": { "ferrolb.io/load-balancer-ips": "192.0.2.9" } } });
        env.services()
            .patch("bad", &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        assert_eq!(env.wait_ingress("bad", 1).await?, ["192.0.2.9"]);
        Ok(())
    };
    check.await.with_log(&ctl)
}

#[tokio::test(flavor = "multi_thread")]
async fn default_class_serves_unclassed_services_until_it_is_no_longer_default() -> Result<()> {
    let env = Env::start().await?;
    env.create_pool("default", &["192.0.2.0/29"], |_| {})
        .await?;
    let mut ctl = env.controller(&["--default-class"])?;
    let check = async {
        env.create_service("plain", |s| {
            s.spec.as_mut().unwrap().load_balancer_class = None
        })
        .await?;
        assert_eq!(env.wait_ingress("plain", 1).await?, ["192.0.2.0"]);
        Ok(())
    };
    check.await.with_log(&ctl)?;
    ctl.kill().await?;

    // The same install, no longer the default: the Service is not ours any
    // more, so everything it was given is taken back.
    let ctl = env.controller(&[])?;
    let check = async {
        let api = env.services();
        wait_for("plain to be released", common::WAIT, || async {
            let svc = api.get("plain").await?;
            Ok((!has_finalizer(&svc) && ingress_ips(&svc).is_empty()).then_some(()))
        })
        .await?;
        env.create_service("classed", |_| {}).await?;
        assert_eq!(
            env.wait_ingress("classed", 1).await?,
            ["192.0.2.0"],
            "the address was freed"
        );
        Ok(())
    };
    check.await.with_log(&ctl)
}

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_metrics() -> Result<()> {
    let env = Env::start().await?;
    env.create_pool("default", &["192.0.2.0/29"], |_| {})
        .await?;
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let ctl = env.controller(&["--metrics-addr", &addr])?;
    let check = async {
        wait_for("/readyz to answer 200", common::WAIT, || async {
            Ok(common::http_get(port, "/readyz")
                .await
                .ok()
                .filter(|(c, _)| *c == 200))
        })
        .await?;
        assert_eq!(common::http_get(port, "/healthz").await?.0, 200);
        env.create_service("web", |_| {}).await?;
        env.wait_ingress("web", 1).await?;
        let (code, body) = common::http_get(port, "/metrics").await?;
        assert_eq!(code, 200);
        for want in [
            "ferrolb_reconciles_total{outcome=\"success\"}",
            "ferrolb_provider_calls_total{provider=\"baremetal\",operation=\"ensure\",outcome=\"success\"}",
            "ferrolb_reconcile_duration_seconds_bucket",
            "ferrolb_leader 1",
        ] {
            assert!(body.contains(want), "/metrics lacks {want}:\n{body}");
        }
        Ok(())
    };
    check.await.with_log(&ctl)
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_stop_hands_the_lease_over() -> Result<()> {
    let env = Env::start().await?;
    env.create_pool("default", &["192.0.2.0/29"], |_| {})
        .await?;
    // A lease far longer than the wait below: only a released lease can move.
    let mut one = env.elected_controller("one", "60s")?;
    wait_for("one to lead", common::WAIT, || async {
        Ok(env.lease_holder().await?.filter(|h| h == "one"))
    })
    .await
    .with_log(&one)?;
    let two = env.elected_controller("two", "60s")?;
    let status = one.terminate().await?;
    assert!(
        status.success(),
        "graceful stop exits 0: {status:?}\n{}",
        one.log()
    );
    assert!(one.log().contains("released leadership"), "{}", one.log());
    wait_for("two to take over", Duration::from_secs(20), || async {
        Ok(env.lease_holder().await?.filter(|h| h == "two"))
    })
    .await
    .with_log(&two)?;
    env.create_service("web", |_| {}).await?;
    env.wait_ingress("web", 1).await.with_log(&two)?;
    Ok(())
}
