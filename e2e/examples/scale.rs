//! The bare-metal scale benchmark against a real kube-apiserver: how long
//! 1,000 Services created at once take to get an address, next to what the
//! apiserver itself takes for the same writes; then the controller's memory
//! with 10,000 Services, 1,000 Nodes and 10,000 EndpointSlices, and what a
//! restart over them costs. Prints the tables in `docs/benchmarks.md`.
//!
//! `cargo build -p ferrolb && cargo run -p ferrolb-e2e --example scale`
//! (`-- --services N --concurrency N --memory-services N --memory-nodes N`
//! for other sizes).

#[path = "../tests/common/mod.rs"]
mod common;

use anyhow::Result;
use common::Env;
use common::bench::count_flag;
use common::scale::{convergence, convergence_table, steady_state, steady_table};

#[tokio::main]
async fn main() -> Result<()> {
    ferrolb_e2e::install_crypto_provider();
    let services = count_flag("services", 1000)?;
    let concurrency = count_flag("concurrency", 16)?;
    let memory_services = count_flag("memory-services", 10_000)?;
    let memory_nodes = count_flag("memory-nodes", 1000)?;
    // Each row: the controller with these flags (the defaults first).
    let runs: &[&[&str]] = &[
        &[],
        &["--concurrency", "4"],
        &["--concurrency", "64"],
        &["--kube-api-qps", "200", "--kube-api-burst", "400"],
    ];

    let env = Env::start().await?;
    if services > 0 {
        let rows = convergence(&env, services, concurrency, runs).await?;
        println!(
            "## Convergence: {services} Services created at once, {concurrency} creates in flight\n"
        );
        println!("{}", convergence_table(&rows));
    }
    drop(env);

    if memory_services > 0 {
        let env = Env::start().await?;
        let s = steady_state(&env, memory_services, memory_nodes, concurrency).await?;
        println!("## Memory and restart\n");
        println!("{}", steady_table(&s));
    }
    Ok(())
}
