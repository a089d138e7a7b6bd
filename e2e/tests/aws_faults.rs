//! The AWS provider with a faulty cloud: ferrolb reaches moto through a proxy that fails
//! a share of the calls (throttling, 500s and 503s, timeouts, dropped connections, each
//! before or after moto carried the call out). 20 Services of two ports on three nodes
//! are created, then some change and some go, at 10 % and at 50 % faults; see
//! `common/faults.rs` for the scenario and what "converged" means.
//!
//! Asserted: everything converges; nothing leaks or is duplicated; the look-alike
//! resources planted without our tags are untouched; and the calls stay bounded, so
//! the retries back off instead of looping. Counts only, never times.

mod common;

use anyhow::{Result, ensure};
use common::faults::{PORTS, Phase, Report, Scenario, run};
use ferrolb_e2e::fault_proxy::Faults;
use std::time::Duration;

const SERVICES: usize = 20;
const CHANGED: usize = 6;
const DELETED: usize = 5;

/// One scenario at a time: each brings its own control plane and moto, and two at once
/// on a small machine would only measure each other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn scenario(share: f64, seed: u64) -> Scenario {
    Scenario {
        services: SERVICES,
        nodes: 3,
        changed: CHANGED,
        deleted: DELETED,
        faults: Faults {
            share,
            seed,
            ..Faults::default()
        },
        wait: Duration::from_secs(900),
    }
}

/// AWS requests (attempts, at the proxy) that one Service may cost in the create phase,
/// at fault share `f`.
///
/// Without faults a Service of two ports costs about 11 requests (10.6 in the bench at
/// 0 %, taken here as 12): DescribeLoadBalancers, CreateLoadBalancer, and per port CreateTargetGroup,
/// RegisterTargets and CreateListener; on every other Service DescribeInstances,
/// DescribeSecurityGroups and AuthorizeSecurityGroupIngress for the source-range rules;
/// and a share of the account's one-off reads (subnets, route tables, the sweep's
/// listings). Under faults each attempt fails with probability `f` and the SDK tries a
/// call up to 5 times, so a call costs `1/(1-f)` attempts on average; a call that fails
/// all five fails its ensure, and the next ensure observes again (4 + 2 per port reads)
/// before it goes on where the last one stopped. Allowing each call one such round on
/// top of its `1/(1-f)` attempts gives `12 * 2 / (1-f)`: 27 at 10 %, 48 at 50 %. A hot
/// loop (an ensure retried without backoff for the minutes a phase takes) costs
/// thousands.
fn create_bound(f: f64) -> f64 {
    12.0 * 2.0 / (1.0 - f)
}

/// The same for the change phase, per Service changed or deleted: a port move is a
/// full ensure (8 reads) and 4 writes, a flipped source range 3 more; a delete is one
/// listing of the account, its tags, 3 deletes and a rule read. About 16 calls, with
/// the same allowance: 36 at 10 %, 64 at 50 %.
fn change_bound(f: f64) -> f64 {
    16.0 * 2.0 / (1.0 - f)
}

/// Failed reconciles one Service may have in a phase. With 5 attempts a call fails
/// for good with probability `f^5`: 1/32 at 50 %, so an ensure of about ten calls fails
/// about one time in four, and a Service needs one or two retries; at 10 % almost none.
/// Backoff starts at 0.5 s and doubles, so 8 failures in a row already mean a
/// 2-minute wait: 8 per Service is far above what the fault share makes likely and far
/// below a hot loop (one retry every few hundred milliseconds for minutes).
const FAILED_RECONCILES_PER_SERVICE: u64 = 8;

fn check(report: &Report, f: f64) -> Result<()> {
    print(report, f);
    ensure!(
        report.problems.is_empty(),
        "problems: {:#?}",
        report.problems
    );
    for (what, phase, services, bound) in [
        ("create", &report.create, SERVICES, create_bound(f)),
        ("change", &report.change, CHANGED + DELETED, change_bound(f)),
    ] {
        let requests = phase.proxy.total_requests() as f64;
        let faults = phase.proxy.total_faults() as f64;
        // The faults really happened, at about the share asked for.
        ensure!(
            faults >= requests * f * 0.5,
            "{what}: only {faults} faults in {requests} requests at {f}"
        );
        let per_service = requests / services as f64;
        ensure!(
            per_service <= bound,
            "{what}: {per_service:.1} requests per Service, over {bound:.1}: {:?}",
            phase.proxy.requests
        );
        let failed = phase.failed_reconciles();
        ensure!(
            failed <= FAILED_RECONCILES_PER_SERVICE * services as u64,
            "{what}: {failed} failed reconciles for {services} Services: {:?}",
            phase.reconciles
        );
    }
    Ok(())
}

fn print(report: &Report, f: f64) {
    let line = |what: &str, p: &Phase| {
        eprintln!(
            "{f}: {what}: converged after {:?}, {} requests ({} faults: {:?}), operations {:?}, reconciles {:?}",
            p.converged_after,
            p.proxy.total_requests(),
            p.proxy.total_faults(),
            p.proxy.faults,
            p.operations,
            p.reconciles
        );
    };
    line("create", &report.create);
    line("change", &report.change);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converges_without_leaks_at_10_percent_faults() -> Result<()> {
    let _one_at_a_time = SERIAL.lock().await;
    let f = 0.1;
    check(&run(&scenario(f, 10)).await?, f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converges_without_leaks_at_50_percent_faults() -> Result<()> {
    let _one_at_a_time = SERIAL.lock().await;
    let f = 0.5;
    check(&run(&scenario(f, 50)).await?, f)
}

#[test]
fn the_bounds_grow_with_the_fault_share() {
    assert_eq!(PORTS.len(), 2, "the bounds count two ports");
    assert!(create_bound(0.1) < create_bound(0.5));
    assert!(change_bound(0.5) < 100.0);
}
