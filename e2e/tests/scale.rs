//! The scale suite in its short form, so that it cannot rot: the same
//! scenarios as `cargo run -p ferrolb-e2e --example scale`, small, checking
//! what does not depend on timing (every Service converges; what the
//! controller writes per Service; a restart with nothing changed writes
//! nothing). The timings are printed, never asserted.

mod common;

use std::collections::BTreeSet;

use anyhow::Result;
use common::scale::{convergence, convergence_table, steady_state, steady_table};
use common::{Env, ingress_ips};
use k8s_openapi::api::core::v1::{Event, Service};
use kube::ResourceExt;
use kube::api::{Api, ListParams};

#[tokio::test]
async fn services_created_at_once_converge_with_one_status_write_each() -> Result<()> {
    let env = Env::start().await?;
    let n = 100;
    let rows = convergence(&env, n, 8, &[&[]]).await?;
    println!("{}", convergence_table(&rows));
    // Both ferrolb rows: started over Services already there, and running
    // while they are created.
    let ferrolb: Vec<_> = rows
        .iter()
        .filter(|r| r.what.starts_with("ferrolb"))
        .collect();
    assert_eq!(ferrolb.len(), 2);
    for row in ferrolb {
        let per = |k: &str| row.writes.get(k).copied().unwrap_or(0);
        // One write per Service (finalizer, annotations and address
        // together, through the status subresource), one Event.
        assert_eq!(
            per("services/status"),
            n as u64,
            "{}: {:?}",
            row.what,
            row.writes
        );
        assert_eq!(per("services"), 0, "{}: {:?}", row.what, row.writes);
        // The apiserver writes Events of its own now and then (its
        // ClusterIP repair loop racing the creates), and the count cannot
        // tell whose they are: ferrolb's are counted below.
        assert!(per("events") >= n as u64, "{}: {:?}", row.what, row.writes);
    }
    // One Event from ferrolb per Service, in each ferrolb row's namespace.
    for ns in ["ferrolb-start", "ferrolb-0"] {
        let events: Api<Event> = Api::namespaced(env.client.clone(), ns);
        let ours: Vec<Event> = events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| e.reporting_component.as_deref() == Some("ferrolb-controller"))
            .collect();
        let about: BTreeSet<_> = ours
            .iter()
            .filter_map(|e| e.involved_object.name.clone())
            .collect();
        assert_eq!((ours.len(), about.len()), (n, n), "{ns}: {ours:#?}");
    }
    // The row of ferrolb-shaped patches wrote what ferrolb writes: the
    // apiserver keeps metadata from a Service's status patch.
    let shaped: Api<Service> = Api::namespaced(env.client.clone(), "base-patch-shaped");
    for svc in shaped.list(&ListParams::default()).await?.items {
        let name = svc.metadata.name.clone().unwrap_or_default();
        assert!(
            svc.finalizers()
                .iter()
                .any(|f| f == "ferrolb.io/load-balancer-cleanup")
                && svc.annotations().contains_key("ferrolb.io/allocated-ips")
                && !ingress_ips(&svc).is_empty(),
            "{name}: {:?} {:?} {:?}",
            svc.metadata.finalizers,
            svc.metadata.annotations,
            svc.status
        );
    }
    Ok(())
}

#[tokio::test]
async fn restart_over_converged_services_writes_nothing() -> Result<()> {
    let env = Env::start().await?;
    let s = steady_state(&env, 300, 30, 8).await?;
    println!("{}", steady_table(&s));
    assert!(
        s.restart_writes.is_empty(),
        "a restart with nothing changed wrote {:?}",
        s.restart_writes
    );
    Ok(())
}
