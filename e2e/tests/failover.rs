//! Leader failover against a real apiserver with its audit log on: the
//! leader stalls (SIGSTOP, as a frozen VM or node would), the standby takes
//! the Lease over, and when the old leader wakes up nothing it sends lands.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::{Env, Foreign, WithLog, ingress_ips};
use ferrolb_e2e::wait_for;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};

const LEASE: &str = "4s";
const LEASE_DURATION: Duration = Duration::from_secs(4);
/// The standby's retry period (`elected_controller`'s 500 ms): it may have
/// read the record just before the last renewal; the rest for a busy machine.
const TAKEOVER_SLACK: Duration = Duration::from_secs(3);
const FIRST: usize = 20;
const SECOND: usize = 100;
const DELETED: usize = 10;

/// One line of the apiserver's audit log, the fields this test reads.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditEvent {
    verb: String,
    #[serde(default)]
    user_agent: String,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    #[serde(default)]
    response_status: Option<ResponseStatus>,
    stage_timestamp: String,
}

#[derive(serde::Deserialize)]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    subresource: String,
}

#[derive(serde::Deserialize)]
struct ResponseStatus {
    #[serde(default)]
    code: u16,
}

impl AuditEvent {
    fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }

    fn landed(&self) -> bool {
        self.response_status
            .as_ref()
            .is_some_and(|s| (200..300).contains(&s.code))
    }

    fn what(&self) -> String {
        let Some(o) = &self.object_ref else {
            return self.verb.clone();
        };
        let sub = if o.subresource.is_empty() {
            String::new()
        } else {
            format!("/{}", o.subresource)
        };
        format!("{} {}{sub} {}", self.verb, o.resource, o.name)
    }
}

fn audit_events(path: &std::path::Path) -> Result<Vec<AuditEvent>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("parsing audit line {l}")))
        .collect()
}

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
    let lease = Api::<Lease>::namespaced(env.client.clone(), "kube-system")
        .get("ferrolb-controller")
        .await?;
    Ok(lease
        .spec
        .and_then(field)
        .context("the Lease lacks a time")?
        .0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_leader_lands_nothing_after_the_standby_takes_over() -> Result<()> {
    let env = Env::start_audited().await?;
    env.create_pool("default", &["10.10.0.0/24"], |_| {})
        .await?;
    let foreign = Foreign::create(&env.client).await?;
    let mut one = env.elected_controller("one", LEASE)?;
    wait_for("one to lead", common::WAIT, || async {
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
    wait_for(
        "the first Services to be served",
        common::WAIT,
        served(FIRST),
    )
    .await
    .with_log(&one)?;

    // The second batch goes in while `one` works on it; it freezes midway.
    let creating = {
        let names: Vec<String> = (FIRST..FIRST + SECOND).map(name).collect();
        let env_ref = &env;
        futures::stream::iter(names)
            .map(move |n| async move { env_ref.create_service(&n, |_| {}).await.map(drop) })
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
    };
    let freeze = async {
        wait_for(
            "one to serve part of the second batch",
            common::WAIT,
            served(FIRST + 5),
        )
        .await?;
        one.pause()?;
        anyhow::Ok((Instant::now(), addresses(&env).await?))
    };
    let (created, frozen) = tokio::join!(creating, freeze);
    created?;
    let (paused_at, before) = frozen.with_log(&one)?;
    // A renewal `one` had on the wire has landed by now; this is its last.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let last_renew = lease_time(&env, |s| s.renew_time).await?;

    wait_for("two to take over", Duration::from_secs(30), || async {
        Ok(env.lease_holder().await?.filter(|h| h == "two"))
    })
    .await
    .with_log(&two)?;
    let takeover = paused_at.elapsed();
    let acquired = lease_time(&env, |s| s.acquire_time).await?;
    let gap = Duration::try_from(acquired.duration_since(last_renew))
        .context("two acquired the lease before one's last renewal")?;

    // While `one` is frozen: deletes, which `two` must release.
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
    ensure!(
        !status.success(),
        "a leader that lost its lease exits with an error: {status:?}\n{}",
        one.log()
    );
    let log = one.log();
    ensure!(
        log.contains("another replica holds the lease")
            || log.contains("could not renew the lease in time"),
        "one says why it stopped:\n{log}"
    );
    let refused = log.matches("no longer holds the leader lease").count();
    // Whatever `one` still sends after it woke is refused or fails: the
    // Services stay as `two` left them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = addresses(&env).await?;
    assert_eq!(settled, after, "nothing moved after one woke up");

    // No address moved across the failover, and none is held twice.
    for (svc, ips) in &before {
        if ips.len() == 1 && after.contains_key(svc) {
            assert_eq!(
                &after[svc], ips,
                "{svc} kept its address across the failover"
            );
        }
    }
    let distinct: BTreeSet<&String> = after.values().flatten().collect();
    assert_eq!(
        distinct.len(),
        live,
        "every address is held once: {after:?}"
    );

    foreign.assert_untouched().await?;

    // The audit log: what `one` wrote, and when it landed.
    let events = audit_events(&env.cp.audit_log())?;
    let by_one: Vec<&AuditEvent> = events
        .iter()
        .filter(|e| e.user_agent.contains("(controller; one)") && e.is_write() && e.landed())
        .collect();
    let mut late = Vec::new();
    for e in &by_one {
        let at: Timestamp = e
            .stage_timestamp
            .parse()
            .with_context(|| format!("audit time {}", e.stage_timestamp))?;
        if at > acquired {
            late.push(format!("{} at {at}", e.what()));
        }
    }
    let by_two = events
        .iter()
        .filter(|e| e.user_agent.contains("(controller; two)") && e.is_write() && e.landed())
        .count();
    eprintln!(
        "failover: lease {LEASE}, acquired {gap:?} after one's last renewal, \
         {takeover:?} after the freeze; \
         writes that landed: one {}, two {by_two}; \
         requests one's fence refused after waking: {refused}",
        by_one.len()
    );
    ensure!(
        by_one.iter().any(|e| {
            e.object_ref
                .as_ref()
                .is_some_and(|o| o.resource == "services" && o.subresource == "status")
        }),
        "the audit log shows one's status writes (else the check below proves nothing)"
    );
    ensure!(
        late.is_empty(),
        "writes of the old leader landed after two acquired the lease at {acquired}:\n{}",
        late.join("\n")
    );
    // Safety: two waited out the whole lease. Liveness: not much longer.
    ensure!(
        gap >= LEASE_DURATION,
        "two acquired the lease {gap:?} after one's last renewal; the lease is {LEASE}"
    );
    ensure!(
        gap <= LEASE_DURATION + TAKEOVER_SLACK,
        "two acquired the lease {gap:?} after one's last renewal; the lease is {LEASE}"
    );
    Ok(())
}
