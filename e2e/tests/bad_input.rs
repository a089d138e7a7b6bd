//! The bad-input catalogue (bare metal): malformed Services and IPPools, all
//! at once, against one controller. Each bad Service gets a Warning Event
//! that names the field and the problem and no address; each bad pool shows
//! its problems in `status.errors`; the good Services among them are served
//! all the same. The table is in `common/bad_input.rs` and in
//! docs/reliability.md, and the test checks that the two agree.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::bad_input::{
    CATALOGUE, Case, GOOD, HOLDERS, LONGEST_NAME, Make, REJECTED, check_doc_table,
    create_good_pools, doc_rows, pool, service,
};
use common::{Env, WAIT, WithLog, events_for, ingress_ips};
use ferrolb_baremetal::crd::IPPool;
use ferrolb_e2e::wait_for;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

async fn create(env: &Env, case: &Case) -> Result<()> {
    let pp = PostParams::default();
    match case.make {
        Make::Service(tweak) => {
            env.services()
                .create(&pp, &service(env, case.name, tweak))
                .await?;
        }
        Make::Pool(tweak) => {
            Api::<IPPool>::all(env.client.clone())
                .create(&pp, &pool(case.name, tweak))
                .await?;
        }
    }
    Ok(())
}

/// What a user sees for a case: the newest Warning Event's note, or the
/// pool's `status.errors` joined, once a Warning Event on the pool says the
/// same; `None` while there is nothing yet.
async fn seen(env: &Env, case: &Case) -> Result<Option<String>> {
    match case.make {
        Make::Service(_) => {
            let events = events_for(&env.client, &env.ns, case.name).await?;
            // The newest, should the Service have had another problem first.
            Ok(events
                .into_iter()
                .filter(|e| e.type_.as_deref() == Some("Warning"))
                .filter(|e| e.reason.as_deref() == Some("SyncLoadBalancerFailed"))
                .max_by_key(|e| {
                    let last = e.series.as_ref().map(|s| s.last_observed_time.0);
                    last.or(e.event_time.as_ref().map(|t| t.0))
                })
                .map(|e| e.note.unwrap_or_default()))
        }
        Make::Pool(_) => {
            let errors = env
                .pool_status(case.name)
                .await?
                .map(|s| s.errors)
                .unwrap_or_default();
            if errors.is_empty() {
                return Ok(None);
            }
            // The same problems, as a Warning Event on the pool (a
            // cluster-scoped object's Events are in `default`).
            let errors = errors.join("; ");
            let events = events_for(&env.client, "default", case.name).await?;
            let warned = events.iter().any(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.reason.as_deref() == Some("InvalidIPPool")
                    && e.note.as_deref() == Some(errors.as_str())
            });
            Ok(warned.then_some(errors))
        }
    }
}

fn says_all(note: &str, case: &Case) -> bool {
    case.says.iter().all(|w| note.contains(w))
}

/// Waits, 40 s at most for all of them, until every case is reported with
/// the words it should be; returns what each one showed.
async fn wait_reported(env: &Env, cases: &[&Case]) -> Result<BTreeMap<&'static str, String>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let mut notes: BTreeMap<&'static str, String> = BTreeMap::new();
    loop {
        for case in cases {
            if notes.get(case.name).is_some_and(|n| says_all(n, case)) {
                continue;
            }
            if let Some(note) = seen(env, case).await? {
                notes.insert(case.name, note);
            }
        }
        let missing: Vec<&str> = cases
            .iter()
            .filter(|c| !notes.get(c.name).is_some_and(|n| says_all(n, c)))
            .map(|c| c.name)
            .collect();
        if missing.is_empty() {
            return Ok(notes);
        }
        if tokio::time::Instant::now() > deadline {
            let shown: Vec<String> = missing
                .iter()
                .map(|m| format!("{m}: {:?}", notes.get(m)))
                .collect();
            bail!(
                "{} of {} cases not reported as the catalogue says:\n{}",
                missing.len(),
                cases.len(),
                shown.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_reported_and_creates_nothing() -> Result<()> {
    assert_eq!(LONGEST_NAME.len(), 63);
    assert_eq!(GOOD[1].0.len(), 63);

    let env = Env::start().await?;
    create_good_pools(&env).await?;
    let mut ctl = env.controller(&[])?;
    let check = async {
        for (name, tweak) in HOLDERS {
            env.services()
                .create(&PostParams::default(), &service(&env, name, *tweak))
                .await
                .with_context(|| format!("creating {name}"))?;
        }
        for (name, _) in HOLDERS {
            env.wait_ingress(name, 1).await?;
        }

        // The bad pools first, all at once: a Service that names one must
        // find it already known, invalid.
        let pools: Vec<&Case> = CATALOGUE
            .iter()
            .filter(|c| matches!(c.make, Make::Pool(_)))
            .collect();
        for case in &pools {
            create(&env, case)
                .await
                .with_context(|| format!("creating {}", case.name))?;
        }
        let mut notes = wait_reported(&env, &pools).await?;

        // Then every Service at once, a good one after every fifth bad one.
        let services: Vec<&Case> = CATALOGUE
            .iter()
            .filter(|c| matches!(c.make, Make::Service(_)))
            .collect();
        let mut good = GOOD.iter();
        for (i, case) in services.iter().enumerate() {
            create(&env, case)
                .await
                .with_context(|| format!("creating {}", case.name))?;
            if i % 5 == 4
                && let Some((name, tweak)) = good.next()
            {
                env.services()
                    .create(&PostParams::default(), &service(&env, name, *tweak))
                    .await
                    .with_context(|| format!("creating {name}"))?;
            }
        }
        for (name, tweak) in good {
            env.services()
                .create(&PostParams::default(), &service(&env, name, *tweak))
                .await
                .with_context(|| format!("creating {name}"))?;
        }
        notes.extend(wait_reported(&env, &services).await?);
        for (name, note) in &notes {
            eprintln!("{name}: {note}");
        }

        // The good ones are all served ...
        for (name, _) in GOOD {
            env.wait_ingress(name, 1).await?;
        }
        // ... and the bad ones got nothing: no address, no pool recorded.
        for case in CATALOGUE {
            if let Make::Service(_) = case.make {
                let svc = env.services().get(case.name).await?;
                assert!(ingress_ips(&svc).is_empty(), "{} got an address", case.name);
                let anns = svc.metadata.annotations.unwrap_or_default();
                assert!(
                    !anns.contains_key("ferrolb.io/ip-allocated-from-pool"),
                    "{} was given a pool",
                    case.name
                );
            }
        }
        // The good pools show no problem.
        for name in ["main", "prod-only", "edge-only", "no-buggy", "tiny"] {
            let errors = env.pool_status(name).await?.map(|s| s.errors);
            assert_eq!(
                errors.unwrap_or_default(),
                Vec::<String>::new(),
                "pool {name}"
            );
            let warned = events_for(&env.client, "default", name).await?;
            assert!(warned.is_empty(), "pool {name} has Events: {warned:?}");
        }

        // The apiserver turns these away before the controller sees them.
        let mut wrong = Vec::new();
        for case in REJECTED {
            match create(&env, case).await {
                Ok(()) => wrong.push(format!("{}: accepted", case.name)),
                Err(e) => {
                    let err = e
                        .downcast_ref::<kube::Error>()
                        .and_then(|e| match e {
                            kube::Error::Api(s) => Some(s.message.clone()),
                            _ => None,
                        })
                        .unwrap_or_else(|| format!("{e:#}"));
                    eprintln!("{}: {err}", case.name);
                    if !says_all(&err, case) {
                        wrong.push(format!("{}: {err}", case.name));
                    }
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "the apiserver did not refuse as the catalogue says:\n{}",
            wrong.join("\n")
        );

        // A Service whose problem changes is told the new one: a Warning
        // Event with the new note, not one more count on the old Event.
        let patch = json!({ "metadata": { "annotations": { "ferrolb.io/pool": "also-missing" } } });
        env.services()
            .patch(
                "pool-missing",
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        let (client, ns) = (env.client.clone(), env.ns.clone());
        wait_for("a Warning about also-missing on pool-missing", WAIT, || {
            let (client, ns) = (client.clone(), ns.clone());
            async move {
                let events = events_for(&client, &ns, "pool-missing").await?;
                Ok(events
                    .iter()
                    .any(|e| {
                        e.type_.as_deref() == Some("Warning")
                            && e.note.as_deref().is_some_and(|n| {
                                n.contains("requested pool also-missing does not exist")
                            })
                    })
                    .then_some(()))
            }
        })
        .await?;
        Ok(())
    };
    check.await.with_log(&ctl)?;
    assert!(
        ctl.try_wait()?.is_none(),
        "the controller exited while serving bad input"
    );
    Ok(())
}

/// The doc's table lists the same cases, in the same order, with the same
/// description and a note holding the same words.
#[test]
fn the_doc_lists_the_catalogue() -> Result<()> {
    let rows = doc_rows(
        "## The bad-input catalogue (bare metal)",
        Some("## The bad-input catalogue (AWS)"),
    )?;
    let cases: Vec<(&str, &str, &[&str])> = CATALOGUE
        .iter()
        .chain(REJECTED)
        .map(|c| (c.name, c.wrong, c.says))
        .collect();
    check_doc_table(&rows, &cases);
    Ok(())
}
