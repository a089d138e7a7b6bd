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
/// Services made just before each apiserver restart and deleted right after.
const DOOMED: usize = 5;

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
    let mut ctl = proxied_controller(&env, &proxy)?;
    wait_ready(&ctl).await?;

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
                    // Some will have been seen by the controller, and maybe
                    // given an address, and not yet written down.
                    let mut doomed = Vec::new();
                    for k in 0..DOOMED {
                        let d = extra(format!("doomed-{n}-{k}"));
                        create(&env, &d).await?;
                        doomed.push(d.name);
                        tokio::time::sleep(rng.duration(Duration::ZERO, Duration::from_millis(60)))
                            .await;
                    }
                    env.cp.restart_apiserver().await?;
                    let fresh = extra(format!("fresh-{n}"));
                    create(&env, &fresh).await?;
                    for name in doomed {
                        delete(&env, &name).await?;
                        extra_deleted.push(name);
                    }
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
        (DOOMED + 1) * restarts,
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

/// `ferrolb controller` talking to the apiserver through `proxy`, with
/// leader election on and a lease longer than a restart takes: losing it
/// would make the controller exit, which is not what is tested here.
fn proxied_controller(env: &Env, proxy: &CuttingProxy) -> Result<FerrolbProcess> {
    FerrolbProcess::spawn_program(
        &ferrolb_bin()?,
        &proxy.kubeconfig(&env.cp)?,
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
    )
}

async fn wait_ready(ctl: &FerrolbProcess) -> Result<()> {
    wait_for(
        "the controller to be ready",
        Duration::from_secs(60),
        || async { Ok(ctl.log().contains("controller ready").then_some(())) },
    )
    .await
    .with_log(ctl)
}

/// The controller, still the process it was, gives a new Service the pool's
/// first address: the one the deleted Service held.
async fn serves_the_next(env: &Env, ctl: &mut FerrolbProcess) -> Result<()> {
    env.create_service("next", |_| {}).await?;
    assert_eq!(env.wait_ingress("next", 1).await?, ["192.0.2.0"]);
    ensure!(ctl.try_wait()?.is_none(), "the controller exited");
    Ok(())
}

/// The label that makes the apiserver refuse our finalizer on a Service.
const REFUSE: &str = "e2e.ferrolb.io/refuse-finalizer";

/// A ValidatingAdmissionPolicy that refuses, as invalid, any update that
/// puts our finalizer on a Service labelled [`REFUSE`]; returns once the
/// apiserver enforces it.
async fn refuse_our_finalizer(env: &Env) -> Result<()> {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "refuse-ferrolb-finalizer"},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["UPDATE"], "resources": ["services", "services/status"],
            }]},
            "validations": [{
                "expression": "!has(object.metadata.finalizers) || !('ferrolb.io/load-balancer-cleanup' in object.metadata.finalizers)",
                "message": "this Service takes no finalizer",
                "reason": "Invalid",
            }],
        },
    }))?;
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "refuse-ferrolb-finalizer"},
        "spec": {
            "policyName": "refuse-ferrolb-finalizer",
            "validationActions": ["Deny"],
            "matchResources": {"objectSelector": {"matchLabels": {REFUSE: "true"}}},
        },
    }))?;
    kube::Api::<ValidatingAdmissionPolicy>::all(env.client.clone())
        .create(&PostParams::default(), &policy)
        .await?;
    kube::Api::<ValidatingAdmissionPolicyBinding>::all(env.client.clone())
        .create(&PostParams::default(), &binding)
        .await?;
    // Policies load asynchronously: probe with a dry run until refused.
    env.create_service("probe", |s| {
        s.metadata.labels = Some([(REFUSE.to_string(), "true".to_string())].into());
    })
    .await?;
    let patch =
        serde_json::json!({"metadata": {"finalizers": ["ferrolb.io/load-balancer-cleanup"]}});
    // The controller writes the finalizer through the status subresource.
    wait_for(
        "the policy to refuse the finalizer",
        Duration::from_secs(30),
        || async {
            let dry = kube::api::PatchParams {
                dry_run: true,
                ..Default::default()
            };
            match env
                .services()
                .patch_status("probe", &dry, &kube::api::Patch::Merge(&patch))
                .await
            {
                Err(kube::Error::Api(s)) if s.code == 422 => Ok(Some(())),
                Ok(_) => Ok(None),
                Err(e) => Err(e.into()),
            }
        },
    )
    .await?;
    env.services()
        .delete("probe", &DeleteParams::default())
        .await?;
    Ok(())
}

/// A Service the controller took an address for but could not put its
/// finalizer on, deleted while the controller could not reach the
/// apiserver, across an apiserver restart (so the controller's watch lists
/// again and sees no delete event): its address is released all the same.
#[tokio::test(flavor = "multi_thread")]
async fn a_service_deleted_while_the_watch_was_down_is_released() -> Result<()> {
    let mut env = Env::start().await?;
    env.create_pool("default", &["192.0.2.0/30"], |_| {})
        .await?;
    refuse_our_finalizer(&env).await?;
    let proxy = CuttingProxy::start(apiserver_addr(&env.cp)?).await?;
    let mut ctl = proxied_controller(&env, &proxy)?;
    wait_ready(&ctl).await?;
    let assigned = async |env: &Env| -> Result<u64> {
        Ok(env
            .pool_status("default")
            .await?
            .unwrap_or_default()
            .assigned_ipv4)
    };

    let check = async {
        env.create_service("refused", |s| {
            s.metadata.labels = Some([(REFUSE.to_string(), "true".to_string())].into());
        })
        .await?;
        wait_for(
            "the controller to take an address and be refused",
            common::WAIT,
            || async {
                let log = ctl.log();
                Ok((log.contains("allocated service=test/refused")
                    && log.contains("reconcile failed service=test/refused"))
                .then_some(()))
            },
        )
        .await?;
        wait_for("the pool to count it", common::WAIT, || async {
            Ok((assigned(&env).await? == 1).then_some(()))
        })
        .await?;

        proxy.block();
        env.services()
            .delete("refused", &DeleteParams::default())
            .await?;
        env.wait_gone("refused").await?;
        env.cp.restart_apiserver().await?;
        proxy.reopen();

        wait_for(
            "the address to be released",
            Duration::from_secs(60),
            || async { Ok((assigned(&env).await? == 0).then_some(())) },
        )
        .await?;
        serves_the_next(&env, &mut ctl).await
    };
    check.await.with_log(&ctl)
}

/// Headless Services that make the controller's Service list take more than
/// one page (the watcher asks for 500 at a time).
const FILLERS: usize = 600;

/// A Service of ours, with its finalizer, deleted while the controller could
/// not reach the apiserver, across an apiserver restart: the watch lists
/// again, and the Service (still there, marked deleted) comes in the first
/// page. The store holds the old list until the last page is in, so a
/// reconcile the first page set off would read the old, live copy, do
/// nothing, and never run again. The controller cleans it up all the same.
#[tokio::test(flavor = "multi_thread")]
async fn a_service_deleted_while_the_watch_was_down_is_cleaned_up_from_the_new_list() -> Result<()>
{
    let mut env = Env::start().await?;
    env.create_pool("default", &["192.0.2.0/30"], |_| {})
        .await?;
    let proxy = CuttingProxy::start(apiserver_addr(&env.cp)?).await?;
    let mut ctl = proxied_controller(&env, &proxy)?;
    wait_ready(&ctl).await?;

    let check = async {
        // Named to sort before the fillers, so it comes in the first page.
        env.create_service("a-doomed", |_| {}).await?;
        assert_eq!(env.wait_ingress("a-doomed", 1).await?, ["192.0.2.0"]);
        let api = env.services();
        let headless = |i: usize| -> Result<k8s_openapi::api::core::v1::Service> {
            Ok(serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("filler-{i:04}")},
                "spec": {"clusterIP": "None", "ports": [{"port": 80}]},
            }))?)
        };
        common::scale::for_each_concurrent(FILLERS, 16, |i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &headless(i)?).await?;
                Ok(())
            }
        })
        .await?;

        proxy.block();
        api.delete("a-doomed", &DeleteParams::default()).await?;
        ensure!(
            api.get("a-doomed")
                .await?
                .metadata
                .deletion_timestamp
                .is_some(),
            "a-doomed should wait for our finalizer"
        );
        env.cp.restart_apiserver().await?;
        proxy.reopen();

        wait_for(
            "a-doomed to be cleaned up",
            Duration::from_secs(60),
            || async { Ok(api.get_opt("a-doomed").await?.is_none().then_some(())) },
        )
        .await?;
        serves_the_next(&env, &mut ctl).await
    };
    check.await.with_log(&ctl)
}
