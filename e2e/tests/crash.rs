//! Crash anywhere: a random churn of Services while the controller is killed
//! with SIGKILL at random moments and started again, then the invariants a
//! user relies on, checked by a watch of its own and by reading everything
//! back once the controller has caught up.
//!
//! The CI form is small enough for a few minutes on two cores; a longer run:
//!
//! ```text
//! FERROLB_CRASH_KILLS=300 FERROLB_CRASH_SERVICES=200 \
//!   cargo test -p ferrolb-e2e --test crash baremetal -- --nocapture
//! ```
//!
//! (`FERROLB_CRASH_AWS_SERVICES` sizes the AWS variant.)

mod common;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Result, bail, ensure};
use common::churn::aws::{self as aws_churn, AwsAccount};
use common::churn::{self, ChurnConfig, Flavor, Outcome, Rng, check, killer, observe::Observer};
use common::{Env, WithLog, audit};
use ferrolb_e2e::{FerrolbProcess, wait_for};
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use tokio::sync::watch;

/// Time the controller gets to catch up after the last kill.
const CONVERGE: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread")]
async fn baremetal_services_survive_kills_at_random_moments() -> Result<()> {
    let env = &Env::start_audited().await?;
    churn::create_pools(env).await?;
    let slots = churn::env_number("FERROLB_CRASH_SERVICES", 200);
    crash_anywhere(
        "bare metal",
        env,
        Flavor::BareMetal,
        slots,
        (Duration::from_millis(20), Duration::from_millis(200)),
        |args| env.controller(args),
        |outcome| async move { check::problems(&env.client, &env.ns, &outcome).await },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_services_survive_kills_at_random_moments() -> Result<()> {
    let env = &Env::start_audited().await?;
    let account = &AwsAccount::start(&env.client).await?;
    let slots = churn::env_number("FERROLB_CRASH_AWS_SERVICES", 40);
    crash_anywhere(
        "AWS",
        env,
        Flavor::Aws,
        slots,
        (Duration::from_millis(100), Duration::from_millis(600)),
        |args| account.controller(&env.cp, args),
        |outcome| async move { aws_churn::problems(&env.client, &env.ns, account, &outcome).await },
    )
    .await
}

/// The Lease of the crash runs: short, so that each restart waits out the
/// dead leader's Lease (about this long) without making the run slow.
const LEASE: &str = "2s";
const LEASE_RETRY: &str = "250ms";

/// The name each controller of a run goes by (in the Lease and in its
/// User-Agent, so the audit log tells them apart).
fn identity(n: usize) -> String {
    format!("crash-{n}")
}

/// Churns `slots` Services while killing the controller
/// `FERROLB_CRASH_KILLS` times, then waits for `problems` to find nothing.
/// `spawn` starts a controller with the given extra flags.
///
/// The controllers run with leader election, as they do in a cluster: each
/// new one waits until the dead one's Lease has expired, and the apiserver's
/// audit log must show that no write of a dead controller landed after its
/// successor took the Lease. `FERROLB_CRASH_LEADER_ELECTION=false` runs them
/// without, each started the moment the last one died; the run then reports
/// how many writes of a dead controller landed after its successor had
/// started, which leader election is there to prevent.
async fn crash_anywhere<Fut>(
    what: &str,
    env: &Env,
    flavor: Flavor,
    slots: usize,
    pause: (Duration, Duration),
    spawn: impl Fn(&[&str]) -> Result<FerrolbProcess>,
    problems: impl Fn(Arc<Outcome>) -> Fut,
) -> Result<()>
where
    Fut: Future<Output = Result<Vec<String>>>,
{
    let elected = std::env::var("FERROLB_CRASH_LEADER_ELECTION").map_or(true, |v| v != "false");
    let spawned = AtomicUsize::new(0);
    let spawn_next = || {
        let id = identity(spawned.fetch_add(1, Ordering::Relaxed));
        let mut args = vec!["--leader-election-identity", id.as_str()];
        if elected {
            args.extend([
                "--leader-election=true",
                "--lease-duration",
                LEASE,
                "--lease-retry-period",
                LEASE_RETRY,
            ]);
        } else {
            args.push("--leader-election=false");
        }
        spawn(&args)
    };
    let leading = if elected {
        "acquired leadership"
    } else {
        "starting controller"
    };
    let kills_wanted = churn::env_number("FERROLB_CRASH_KILLS", 50);
    let mut rng = Rng::new(churn::seed_from_env());
    let observer = Observer::start(env.services());
    let (stop_tx, stop_rx) = watch::channel(false);
    let churn = tokio::spawn(churn::run(
        env.services(),
        env.ns.clone(),
        observer.state.clone(),
        ChurnConfig {
            flavor,
            slots,
            other_every: 10,
            workers: 4,
            pause,
            max_ops: 50 * slots as u64,
        },
        rng.fork(),
        stop_rx,
    ));

    let killed = killer::kill_repeatedly(kills_wanted, rng.fork(), leading, spawn_next).await;
    let _ = stop_tx.send(true);
    let outcome = Arc::new(churn.await??);
    let (ctl, kills) = killed?;

    let converged = check::converge_with(CONVERGE, || problems(outcome.clone())).await;
    // Anything that still moves after convergence shows in the watch.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let violations = observer.violations();
    let late = late_writes(env, elected, spawned.load(Ordering::Relaxed));
    let seen = churn::lock(&observer.state);
    println!(
        "crash anywhere ({what}): {} kills ({} before the controller was ready) over {:.0?}; \
         {slots} Service slots, {} Services made, {} ops ({:?}); {} left, {} deleted; \
         {} watch events, {} address changes seen; converged {:?} after the last start; \
         {} invariant violations; {} restarts after a lost Lease; {} writes of a dead \
         controller landed after its successor {}",
        kills.kills,
        kills.before_ready,
        kills.elapsed,
        outcome.counts.creates,
        outcome.counts.ops(),
        outcome.counts,
        outcome.live.len(),
        outcome.deleted.len(),
        seen.events,
        seen.address_changes(),
        converged.as_ref().map_err(Vec::len),
        violations.len(),
        kills.lost_lease,
        late.as_ref()
            .map_or_else(|e| format!("(unknown: {e:#})"), |l| l.len().to_string()),
        if elected { "took the Lease" } else { "started" },
    );
    drop(seen);
    let result = (|| {
        ensure!(
            kills.kills == kills_wanted,
            "{} kills of {kills_wanted}",
            kills.kills
        );
        ensure!(
            violations.is_empty(),
            "invariants broken during the run:\n{}",
            violations.join("\n")
        );
        let late = late.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        ensure!(
            !elected || late.is_empty(),
            "writes of a dead controller landed after its successor took the Lease:\n{}",
            late.join("\n")
        );
        if let Err(problems) = &converged {
            bail!(
                "not converged {CONVERGE:?} after the last start:\n{}",
                problems.join("\n")
            );
        }
        Ok(())
    })();
    result.with_log(&ctl)
}

/// From the audit log: the writes of each controller of the run (numbered
/// `0..spawned`) that landed after its successor took the Lease (with
/// `elected`) or sent its first request (without). Fails when the log shows
/// no status write of any of them, which would make the check empty.
fn late_writes(env: &Env, elected: bool, spawned: usize) -> Result<Vec<String>> {
    let events = audit::events(&env.cp.audit_log())?;
    ensure!(
        events.iter().any(|e| {
            e.controller().is_some_and(|id| id.starts_with("crash-"))
                && e.landed()
                && e.on("services", "status")
        }),
        "the audit log shows no status write of the controllers"
    );
    let mut late = Vec::new();
    for n in 1..spawned {
        let successor = identity(n);
        let since = if elected {
            audit::lease_taken(&events, &successor, "ferrolb-controller")?
        } else {
            audit::first_request(&events, &successor)?
        };
        let Some(since) = since else { continue };
        for w in audit::writes_after(&events, &identity(n - 1), since)? {
            late.push(format!(
                "{}: {w}, after {successor} at {since}",
                identity(n - 1)
            ));
        }
    }
    Ok(late)
}

/// What a Service shows after a controller that served it died: our
/// finalizer, the pool annotation and `ip` in its status.
async fn served_by_a_dead_controller(
    env: &Env,
    name: &str,
    ip: &str,
    tweak: impl FnOnce(&mut k8s_openapi::api::core::v1::Service),
) -> Result<()> {
    env.create_service(name, |s| {
        s.metadata.finalizers = Some(vec!["ferrolb.io/load-balancer-cleanup".into()]);
        s.metadata.annotations =
            common::annotations(&[("ferrolb.io/ip-allocated-from-pool", "default")]);
        tweak(s);
    })
    .await?;
    let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}});
    env.services()
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

/// The controller died after its cleanup of a deleted Service released the
/// address and gave it to another Service, before it removed the deleted
/// one's finalizer: both show the address. The live one keeps it.
#[tokio::test(flavor = "multi_thread")]
async fn killed_between_release_and_finalizer_removal() -> Result<()> {
    let env = Env::start().await?;
    env.create_pool("default", &["192.0.2.0/29"], |_| {})
        .await?;
    // Names in list order: the one on its way out comes first.
    served_by_a_dead_controller(&env, "a-leaving", "192.0.2.0", |_| {}).await?;
    env.services()
        .delete("a-leaving", &DeleteParams::default())
        .await?;
    served_by_a_dead_controller(&env, "b-taker", "192.0.2.0", |_| {}).await?;

    let ctl = env.controller(&[])?;
    let check = async {
        env.wait_gone("a-leaving").await?;
        // Its reconcile may have run; give a wrong move the time to show.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let taker = env.services().get("b-taker").await?;
        assert_eq!(
            common::ingress_ips(&taker),
            ["192.0.2.0"],
            "b-taker's address moved"
        );
        env.create_service("c-next", |_| {}).await?;
        let next = env.wait_ingress("c-next", 1).await?;
        assert_ne!(next, ["192.0.2.0"], "handed out twice");
        Ok(())
    };
    check.await.with_log(&ctl)
}

/// The controller died after it moved a Service to the address the Service
/// asked for and gave the old one to another Service, before it wrote the
/// first one's new status: both show the old address. The one whose request
/// it still meets keeps it; the other gets what it asked for.
#[tokio::test(flavor = "multi_thread")]
async fn killed_between_moving_a_service_and_writing_its_status() -> Result<()> {
    let env = Env::start().await?;
    env.create_pool("default", &["192.0.2.0/29"], |_| {})
        .await?;
    served_by_a_dead_controller(&env, "a-moved", "192.0.2.0", |s| {
        s.spec.as_mut().unwrap().load_balancer_ip = Some("192.0.2.5".into());
    })
    .await?;
    served_by_a_dead_controller(&env, "b-taker", "192.0.2.0", |_| {}).await?;

    let ctl = env.controller(&[])?;
    let check = async {
        assert_eq!(
            wait_for(
                "a-moved to show what it asked for",
                common::WAIT,
                || async {
                    let ips = common::ingress_ips(&env.services().get("a-moved").await?);
                    Ok((ips != ["192.0.2.0"]).then_some(ips))
                }
            )
            .await?,
            ["192.0.2.5"]
        );
        let taker = env.services().get("b-taker").await?;
        assert_eq!(
            common::ingress_ips(&taker),
            ["192.0.2.0"],
            "b-taker's address moved"
        );
        Ok(())
    };
    check.await.with_log(&ctl)
}

/// Two Services shared an address under one key; one of them switched to
/// another key, and the controller died before it wrote that one's new
/// status (or was not running when the key changed): both show the address,
/// one under each key. Only the record written with the address tells which
/// one changed; the other keeps the address whatever the list order.
#[tokio::test(flavor = "multi_thread")]
async fn killed_after_a_sharing_key_changed() -> Result<()> {
    let env = Env::start().await?;
    env.create_pool("default", &["192.0.2.0/29"], |_| {})
        .await?;
    let shared_under = |key: &'static str, port: i32| {
        move |s: &mut k8s_openapi::api::core::v1::Service| {
            let a = s.metadata.annotations.get_or_insert_with(Default::default);
            a.insert("ferrolb.io/allow-shared-ip".into(), key.into());
            a.insert("ferrolb.io/allocated-ips".into(), "192.0.2.0".into());
            a.insert("ferrolb.io/allocated-sharing-key".into(), "old".into());
            s.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = port;
        }
    };
    // Names in list order: the one that changed comes first.
    served_by_a_dead_controller(&env, "a-switched", "192.0.2.0", shared_under("new", 80)).await?;
    served_by_a_dead_controller(&env, "b-kept", "192.0.2.0", shared_under("old", 81)).await?;

    let ctl = env.controller(&[])?;
    let check = async {
        let switched = wait_for(
            "a-switched to get an address of its own",
            common::WAIT,
            || async {
                let ips = common::ingress_ips(&env.services().get("a-switched").await?);
                Ok((ips != ["192.0.2.0"]).then_some(ips))
            },
        )
        .await?;
        assert_eq!(switched.len(), 1, "{switched:?}");
        let kept = env.services().get("b-kept").await?;
        assert_eq!(
            common::ingress_ips(&kept),
            ["192.0.2.0"],
            "b-kept's address moved"
        );
        let record = env.services().get("a-switched").await?;
        let annotations = record.metadata.annotations.unwrap_or_default();
        assert_eq!(
            annotations.get("ferrolb.io/allocated-ips"),
            Some(&switched[0])
        );
        assert_eq!(
            annotations
                .get("ferrolb.io/allocated-sharing-key")
                .map(String::as_str),
            Some("new")
        );
        Ok(())
    };
    check.await.with_log(&ctl)
}

/// Two pairs of Services shared an address each under one key; in each pair
/// one Service changed so that the pair may no longer share (its ports came
/// to overlap the other's, or its `externalTrafficPolicy` changed), and the
/// controller died before it wrote that one's new status. The key is the
/// same on both sides, so only the terms recorded with the address tell
/// which one changed; the other keeps the address whatever the list order.
#[tokio::test(flavor = "multi_thread")]
async fn killed_after_the_terms_of_a_sharing_changed() -> Result<()> {
    let env = Env::start().await?;
    env.create_pool("default", &["192.0.2.0/29"], |_| {})
        .await?;
    let shared = |ip: &'static str, port: i32, local: bool, was_port: i32| {
        move |s: &mut k8s_openapi::api::core::v1::Service| {
            let a = s.metadata.annotations.get_or_insert_with(Default::default);
            a.insert("ferrolb.io/allow-shared-ip".into(), "k".into());
            a.insert("ferrolb.io/allocated-ips".into(), ip.into());
            a.insert("ferrolb.io/allocated-sharing-key".into(), "k".into());
            a.insert(
                "ferrolb.io/allocated-sharing-terms".into(),
                format!("ports=TCP/{was_port};externalTrafficPolicy=Cluster"),
            );
            let spec = s.spec.as_mut().unwrap();
            spec.ports.as_mut().unwrap()[0].port = port;
            if local {
                spec.external_traffic_policy = Some("Local".into());
            }
        }
    };
    // Names in list order: the one that changed comes first in each pair.
    let pairs = [
        ("a-ports-overlap", "b-kept", "192.0.2.0"),
        ("c-went-local", "d-kept", "192.0.2.1"),
    ];
    // (name, address, port now, Local now, port recorded)
    let services = [
        (pairs[0].0, pairs[0].2, 81, false, 80),
        (pairs[0].1, pairs[0].2, 81, false, 81),
        (pairs[1].0, pairs[1].2, 82, true, 82),
        (pairs[1].1, pairs[1].2, 83, false, 83),
    ];
    for (name, ip, port, local, was_port) in services {
        served_by_a_dead_controller(&env, name, ip, shared(ip, port, local, was_port)).await?;
    }

    let ctl = env.controller(&[])?;
    let check = async {
        for (changed, kept, ip) in pairs {
            let moved = wait_for(
                &format!("{changed} to get an address of its own"),
                common::WAIT,
                || async {
                    let ips = common::ingress_ips(&env.services().get(changed).await?);
                    Ok((ips != [ip]).then_some(ips))
                },
            )
            .await?;
            assert_eq!(moved.len(), 1, "{moved:?}");
            let stayed = env.services().get(kept).await?;
            assert_eq!(common::ingress_ips(&stayed), [ip], "{kept}'s address moved");
        }
        // The records now say what each Service was given, under which terms.
        let moved = env.services().get("c-went-local").await?;
        let annotations = moved.metadata.annotations.unwrap_or_default();
        assert_eq!(
            annotations
                .get("ferrolb.io/allocated-sharing-terms")
                .map(String::as_str),
            Some("ports=TCP/82;externalTrafficPolicy=Local")
        );
        Ok(())
    };
    check.await.with_log(&ctl)
}
