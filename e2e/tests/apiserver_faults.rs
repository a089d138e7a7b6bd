//! apiserver faults: while Services are created, changed and deleted, the
//! apiserver is restarted several times and every connection between the
//! controller and the apiserver is cut now and then (a proxy in between).
//! The controller must ride it out as one process, serve every Service
//! (including those made right after a restart), and let go of every
//! deleted one.
//!
//! A longer run:
//!
//! ```text
//! FERROLB_FAULT_RESTARTS=20 FERROLB_FAULT_CUTS=100 FERROLB_FAULT_SERVICES=200 \
//!   cargo test -p ferrolb-e2e --test apiserver_faults -- --nocapture
//! ```

mod common;

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use common::churn::{self, ChurnConfig, Desired, Flavor, Request, Rng, check, observe::Observer};
use common::proxy::{CuttingProxy, apiserver_addr};
use common::{Env, WithLog};
use ferrolb_e2e::{FerrolbProcess, process::ferrolb_bin, wait_for};
use kube::api::{DeleteParams, PostParams};
use tokio::sync::watch;

const CONVERGE: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug)]
enum Fault {
    RestartApiserver,
    CutConnections,
}

#[tokio::test(flavor = "multi_thread")]
async fn controller_rides_out_apiserver_restarts_and_cut_watches() -> Result<()> {
    let restarts = churn::env_number("FERROLB_FAULT_RESTARTS", 4);
    let cuts = churn::env_number("FERROLB_FAULT_CUTS", 12);
    let slots = churn::env_number("FERROLB_FAULT_SERVICES", 60);
    let mut rng = Rng::new(churn::seed_from_env());

    let mut env = Env::start().await?;
    churn::create_pools(&env).await?;
    let proxy = CuttingProxy::start(apiserver_addr(&env.cp)?).await?;
    let kubeconfig = proxy.kubeconfig(&env.cp)?;
    // Leader election on, with a lease longer than a restart takes: losing
    // it would make the controller exit, which is not what is tested here.
    let mut ctl = FerrolbProcess::spawn_program(
        &ferrolb_bin()?,
        &kubeconfig,
        env.cp.dir(),
        &[
            "controller",
            "--log",
            "info,ferrolb=debug",
            "--metrics-addr",
            "127.0.0.1:0",
            "--leader-election=true",
            "--leader-election-identity",
            "faults",
            "--lease-duration",
            "60s",
            "--lease-retry-period",
            "1s",
        ],
        &[],
    )?;
    wait_for(
        "the controller to be ready",
        Duration::from_secs(60),
        || async { Ok(ctl.log().contains("controller ready").then_some(())) },
    )
    .await
    .with_log(&ctl)?;

    let observer = Observer::start(env.services());
    let (stop_tx, stop_rx) = watch::channel(false);
    let churn = tokio::spawn(churn::run(
        env.services(),
        env.ns.clone(),
        observer.state.clone(),
        ChurnConfig {
            flavor: Flavor::BareMetal,
            slots,
            other_every: 10,
            workers: 3,
            pause: (Duration::from_millis(20), Duration::from_millis(250)),
            max_ops: 100 * slots as u64,
        },
        rng.fork(),
        stop_rx,
    ));

    let mut faults: Vec<Fault> = std::iter::repeat_n(Fault::RestartApiserver, restarts)
        .chain(std::iter::repeat_n(Fault::CutConnections, cuts))
        .collect();
    for i in (1..faults.len()).rev() {
        faults.swap(i, rng.below(i as u64 + 1) as usize);
    }
    // Services made just before a restart (the controller may have taken an
    // address for them without writing it down) and deleted at once after
    // it, and Services made as soon as the apiserver is back.
    let mut extra_live = Vec::new();
    let mut extra_deleted = Vec::new();
    let mut cut_connections = 0;
    let started = Instant::now();
    let faulted = async {
        for (n, fault) in faults.iter().enumerate() {
            tokio::time::sleep(rng.duration(Duration::from_millis(500), Duration::from_secs(4)))
                .await;
            match fault {
                Fault::CutConnections => cut_connections += proxy.cut_all(),
                Fault::RestartApiserver => {
                    let doomed = extra(format!("doomed-{n}"));
                    create(&env, &doomed).await?;
                    tokio::time::sleep(rng.duration(Duration::ZERO, Duration::from_millis(300)))
                        .await;
                    env.cp.restart_apiserver().await?;
                    let fresh = extra(format!("fresh-{n}"));
                    create(&env, &fresh).await?;
                    delete(&env, &doomed.name).await?;
                    extra_deleted.push(doomed.name);
                    extra_live.push(fresh);
                }
            }
            if let Some(status) = ctl.try_wait()? {
                bail!("the controller exited ({status}) after fault {n} ({fault:?})");
            }
        }
        anyhow::Ok(())
    };
    let faulted = faulted.await;
    let _ = stop_tx.send(true);
    let mut outcome = churn.await??;
    faulted.with_log(&ctl)?;
    let faults_took = started.elapsed();
    outcome.live.extend(extra_live);
    outcome.deleted.extend(extra_deleted);

    let converged = check::converge(&env.client, &env.ns, &outcome, CONVERGE).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let violations = observer.violations();
    let still_running = ctl.try_wait()?.is_none();
    let starts = ctl.log().matches("starting controller").count();
    println!(
        "apiserver faults: {restarts} apiserver restarts, {cuts} cuts ({cut_connections} connections cut) over {faults_took:.0?}; \
         {slots} Service slots, {} Services made by the churn and {} around restarts, {} ops ({:?}); converged {:?} after the last fault; \
         controller still running: {still_running}; {} invariant violations",
        outcome.counts.creates,
        2 * restarts,
        outcome.counts.ops(),
        outcome.counts,
        converged.as_ref().map_err(Vec::len),
        violations.len(),
    );
    let result = (|| {
        ensure!(still_running && starts == 1, "the controller restarted");
        ensure!(
            violations.is_empty(),
            "invariants broken during the run:\n{}",
            violations.join("\n")
        );
        if let Err(problems) = &converged {
            bail!(
                "not converged {CONVERGE:?} after the last fault:\n{}",
                problems.join("\n")
            );
        }
        Ok(())
    })();
    result.with_log(&ctl)
}

/// A plain Service of ours outside the churn's slots.
fn extra(name: String) -> Desired {
    Desired {
        name,
        class: common::CLASS,
        slot: usize::MAX,
        other: false,
        request: Request::Auto,
        generation: 0,
        ports: vec![80],
        touched: 0,
        had_ip: false,
    }
}

/// Creates the Service, retrying while the apiserver is still coming back.
async fn create(env: &Env, d: &Desired) -> Result<()> {
    let svc = d.object(&env.ns, 0);
    wait_for(
        &format!("creating {}", d.name),
        Duration::from_secs(60),
        || {
            let (api, svc) = (env.services(), svc.clone());
            async move {
                match api.create(&PostParams::default(), &svc).await {
                    Ok(_) => Ok(Some(())),
                    // An earlier try went through after all.
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(Some(())),
                    Err(e) => Err(e.into()),
                }
            }
        },
    )
    .await
}

/// Deletes the Service, retrying while the apiserver is still coming back.
async fn delete(env: &Env, name: &str) -> Result<()> {
    wait_for(&format!("deleting {name}"), Duration::from_secs(60), || {
        let api = env.services();
        async move {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => Ok(Some(())),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(Some(())),
                Err(e) => Err(e.into()),
            }
        }
    })
    .await
}
