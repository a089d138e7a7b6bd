//! Leader failover against a real apiserver with its audit log on: the
//! leader stops in the middle of its work (frozen by SIGSTOP, as a paused VM
//! or node would be, killed, or terminated), the standby takes the Lease
//! over, and the apiserver's audit log tells whether anything the old leader
//! sent landed after that. Used by `tests/failover.rs` and by the
//! `leader_failover` example.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::audit::{self, AuditEvent};
use super::{Env, Foreign, WAIT, WithLog, ingress_ips};
use anyhow::{Context, Result, ensure};
use ferrolb_e2e::wait_for;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams};

pub const LEASE: &str = "4s";
pub const LEASE_DURATION: Duration = Duration::from_secs(4);
const FIRST: usize = 20;
const SECOND: usize = 100;
const DELETED: usize = 10;

fn name(i: usize) -> String {
    format!("svc-{i:03}")
}

/// Every Service in the namespace with its ingress addresses.
async fn addresses(env: &Env) -> Result<BTreeMap<String, Vec<String>>> {
    Ok(env
        .services()
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|s| (s.name_any(), ingress_ips(s)))
        .collect())
}

/// A time from the controller's Lease record.
async fn lease_time(
    env: &Env,
    field: impl FnOnce(LeaseSpec) -> Option<MicroTime>,
) -> Result<Timestamp> {
    Ok(env
        .lease_spec()
        .await?
        .and_then(field)
        .context("the Lease lacks a time")?
        .0)
}

/// How the leader stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGSTOP; woken with SIGCONT once the standby has taken over.
    Freeze,
    /// SIGKILL.
    Kill,
    /// SIGTERM: the leader releases the Lease on its way out.
    Terminate,
}

impl Stop {
    pub fn label(self) -> &'static str {
        match self {
            Stop::Freeze => "frozen (SIGSTOP), woken after the takeover",
            Stop::Kill => "killed (SIGKILL)",
            Stop::Terminate => "terminated (SIGTERM)",
        }
    }
}

/// What one failover showed.
pub struct Trial {
    /// From the old leader's last renewal to the new one's acquireTime, as
    /// the Lease records them.
    pub gap: Duration,
    /// From the stop to the test seeing the new holder.
    pub takeover: Duration,
    /// Writes of the old leader that landed, in all and after the takeover.
    pub by_one: usize,
    pub late: Vec<String>,
    pub by_two: usize,
    /// Requests the old leader's fence refused after it woke.
    pub refused: usize,
}

/// One failover on a fresh control plane. Checks on the way that the old
/// leader exits, that no address moved and none is held twice, and that a
/// Service of another class stays unwritten; returns what it measured.
pub async fn trial(stop: Stop) -> Result<Trial> {
    let env = Env::start_audited().await?;
    env.create_pool("default", &["10.10.0.0/24"], |_| {})
        .await?;
    let foreign = Foreign::create(&env.client).await?;
    let mut one = env.elected_controller("one", LEASE)?;
    wait_for("one to lead", WAIT, || async {
        Ok(env.lease_holder().await?.filter(|h| h == "one"))
    })
    .await
    .with_log(&one)?;
    let two = env.elected_controller("two", LEASE)?;

    for i in 0..FIRST {
        env.create_service(&name(i), |_| {}).await?;
    }
    let served = |n: usize| {
        let env = &env;
        move || async move {
            let all = addresses(env).await?;
            let with = all.values().filter(|ips| ips.len() == 1).count();
            Ok((with >= n).then_some(all))
        }
    };
    wait_for("the first Services to be served", WAIT, served(FIRST))
        .await
        .with_log(&one)?;

    // The second batch goes in while `one` works on it; it stops midway.
    let creating = {
        let names: Vec<String> = (FIRST..FIRST + SECOND).map(name).collect();
        let env_ref = &env;
        futures::stream::iter(names)
            .map(move |n| async move { env_ref.create_service(&n, |_| {}).await.map(drop) })
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
    };
    let halt = async {
        wait_for(
            "one to serve part of the second batch",
            WAIT,
            served(FIRST + 5),
        )
        .await?;
        // The Lease as `one` last wrote it (a renewal on the wire may land
        // just after a freeze or kill; SIGTERM releases it).
        let renewed = lease_time(&env, |s| s.renew_time).await?;
        let at = Instant::now();
        match stop {
            Stop::Freeze => one.pause()?,
            Stop::Kill => drop(one.kill().await?),
            Stop::Terminate => {
                let status = one.terminate().await?;
                ensure!(status.success(), "a graceful stop exits 0: {status:?}");
            }
        }
        anyhow::Ok((at, renewed, addresses(&env).await?))
    };
    let (created, halted) = tokio::join!(creating, halt);
    created?;
    let (stopped_at, renewed_before, before) = halted.with_log(&one)?;
    let last_renew = if stop == Stop::Terminate {
        renewed_before
    } else {
        tokio::time::sleep(Duration::from_millis(300)).await;
        lease_time(&env, |s| s.renew_time).await?
    };

    wait_for("two to take over", Duration::from_secs(30), || async {
        Ok(env.lease_holder().await?.filter(|h| h == "two"))
    })
    .await
    .with_log(&two)?;
    let takeover = stopped_at.elapsed();
    let acquired = lease_time(&env, |s| s.acquire_time).await?;
    let gap = Duration::try_from(acquired.duration_since(last_renew))
        .context("two acquired the lease before one's last renewal")?;

    // While `one` is stopped: deletes, which `two` must release.
    for i in 0..DELETED {
        env.services()
            .delete(&name(i), &DeleteParams::default())
            .await?;
    }
    let live = FIRST + SECOND - DELETED;
    let after = wait_for(
        "two to serve every Service and release the deleted ones",
        Duration::from_secs(60),
        || async {
            let all = addresses(&env).await?;
            let done = all.len() == live && all.values().all(|ips| ips.len() == 1);
            Ok(done.then_some(all))
        },
    )
    .await
    .with_log(&two)?;

    let mut refused = 0;
    if stop == Stop::Freeze {
        // `one` wakes up with its work half done and its lease long gone.
        one.resume()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = one.try_wait()? {
                break status;
            }
            ensure!(
                Instant::now() < deadline,
                "one still runs 30 s after waking up:\n{}",
                one.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let log = one.log();
        ensure!(
            !status.success(),
            "a leader that lost its lease exits with an error: {status:?}\n{log}"
        );
        ensure!(
            log.contains("another replica holds the lease")
                || log.contains("could not renew the lease in time"),
            "one says why it stopped:\n{log}"
        );
        refused = log.matches("no longer holds the leader lease").count();
        // Whatever `one` still sent after it woke was refused or failed.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let settled = addresses(&env).await?;
        let moved: Vec<String> = settled
            .iter()
            .filter(|(svc, ips)| after.get(*svc) != Some(ips))
            .map(|(svc, ips)| format!("{svc}: {:?} -> {ips:?}", after.get(svc)))
            .chain(
                after
                    .keys()
                    .filter(|svc| !settled.contains_key(*svc))
                    .map(|svc| format!("{svc}: gone")),
            )
            .collect();
        ensure!(
            moved.is_empty(),
            "addresses changed after one woke up:\n{}\none:\n{}\ntwo:\n{}",
            moved.join("\n"),
            one.log(),
            two.log()
        );
    }

    // No address moved across the failover, and none is held twice.
    for (svc, ips) in &before {
        if ips.len() == 1 && after.contains_key(svc) {
            ensure!(
                &after[svc] == ips,
                "{svc} kept its address across the failover"
            );
        }
    }
    let distinct: BTreeSet<&String> = after.values().flatten().collect();
    ensure!(
        distinct.len() == live,
        "every address is held once: {after:?}"
    );
    foreign.assert_untouched().await?;

    // The audit log: what `one` wrote, and when it landed.
    let events = audit::events(&env.cp.audit_log())?;
    let by_one: Vec<&AuditEvent> = events.iter().filter(|e| e.landed_write_by("one")).collect();
    ensure!(
        by_one.iter().any(|e| e.on("services", "status")),
        "the audit log shows one's status writes (else the late-write check proves nothing)"
    );
    let late: Vec<String> = audit::writes_after(&events, "one", acquired)?
        .into_iter()
        .map(|w| format!("{w} (two acquired at {acquired})"))
        .collect();
    let by_two = events.iter().filter(|e| e.landed_write_by("two")).count();
    Ok(Trial {
        gap,
        takeover,
        by_one: by_one.len(),
        late,
        by_two,
        refused,
    })
}

/// A leader killed and started again under the same identity (a fixed
/// `--leader-election-identity`): returns how long after the dead one's
/// last renewal the new process took the Lease, once the record shows it
/// took it over (a new transition) rather than renewing it.
pub async fn restart_under_the_same_identity() -> Result<Duration> {
    let env = Env::start().await?;
    let transitions =
        || async { anyhow::Ok(env.lease_spec().await?.and_then(|s| s.lease_transitions)) };
    let mut first = env.elected_controller("same", LEASE)?;
    wait_for("the first process to lead", WAIT, || async {
        Ok(env.lease_holder().await?.filter(|h| h == "same"))
    })
    .await
    .with_log(&first)?;
    let before = transitions().await?.unwrap_or(0);
    first.kill().await?;
    // A renewal on the wire may land just after the kill.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let last_renew = lease_time(&env, |s| s.renew_time).await?;
    let second = env.elected_controller("same", LEASE)?;
    wait_for(
        "the restarted process to take the Lease over",
        WAIT,
        || async { Ok(transitions().await?.filter(|t| *t > before)) },
    )
    .await
    .with_log(&second)?;
    let acquired = lease_time(&env, |s| s.acquire_time).await?;
    Duration::try_from(acquired.duration_since(last_renew))
        .context("the restarted process acquired the Lease before its predecessor's last renewal")
}
