//! The AWS provider with a faulty cloud, at 0 %, 10 % and 50 % of calls failing: how long
//! 20 Services of two ports on three nodes take to converge, then to converge again
//! after 6 change and 5 are deleted; what that cost in AWS requests (attempts, at the
//! fault proxy) and provider operations (ferrolb's own counter, after the SDK's
//! retries); how many faults were injected; and what was left wrong in the account
//! (leaks, duplicates, touched look-alikes), which must be nothing. Prints the table in
//! `docs/reliability.md`. See `tests/common/faults.rs` for the scenario.
//!
//! `cargo build -p ferrolb && cargo run -p ferrolb-e2e --example aws_faults`
//! (`-- --services N --nodes N --seed N` for other runs).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use anyhow::Result;
use common::bench::count_flag;
use common::faults::{Phase, Scenario, run};
use ferrolb_e2e::fault_proxy::{FaultKind, Faults, When};

#[tokio::main]
async fn main() -> Result<()> {
    ferrolb_e2e::install_crypto_provider();
    let services = count_flag("services", 20)?;
    let nodes = count_flag("nodes", 3)?;
    let seed = count_flag("seed", 1)? as u64;
    let mut rows = Vec::new();
    for share in [0.0, 0.1, 0.5] {
        let sc = Scenario {
            services,
            nodes,
            changed: services * 3 / 10,
            deleted: services / 4,
            faults: Faults {
                share,
                seed,
                ..Faults::default()
            },
            wait: Duration::from_secs(1800),
        };
        eprintln!("running at {share}: {sc:?}");
        let report = run(&sc).await?;
        eprintln!("{report:#?}");
        let touched = sc.changed + sc.deleted;
        rows.push(format!(
            "| {:.0} % | {} | {} | {} | {} |",
            share * 100.0,
            cells(&report.create, services),
            cells(&report.change, touched),
            report.create.failed_reconciles() + report.change.failed_reconciles(),
            report.problems.len(),
        ));
        rows.push(format!(
            "|  | faults: {} |  |  |  |",
            fault_mix(&report.create, &report.change)
        ));
    }
    println!(
        "| faults | create: converged · requests per Service · operations per Service · faults | \
         change: converged · requests per Service touched · operations per Service touched · faults | \
         failed reconciles | problems left |"
    );
    println!("|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    Ok(())
}

fn cells(p: &Phase, services: usize) -> String {
    let n = services.max(1) as f64;
    format!(
        "{:.0} s · {:.1} · {:.1} · {}",
        p.converged_after.as_secs_f64(),
        p.proxy.total_requests() as f64 / n,
        p.operations.values().sum::<u64>() as f64 / n,
        p.proxy.total_faults(),
    )
}

/// The faults of both phases by kind, before/after forwarding.
fn fault_mix(a: &Phase, b: &Phase) -> String {
    let mut parts = Vec::new();
    for kind in [
        FaultKind::Throttle,
        FaultKind::Status500,
        FaultKind::Status503,
        FaultKind::Timeout,
        FaultKind::Drop,
    ] {
        let n = |when| {
            a.proxy.faults.get(&(kind, when)).copied().unwrap_or(0)
                + b.proxy.faults.get(&(kind, when)).copied().unwrap_or(0)
        };
        parts.push(format!(
            "{} {}/{}",
            kind.as_str(),
            n(When::Before),
            n(When::After)
        ));
    }
    parts.join(", ")
}
