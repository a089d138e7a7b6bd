//! BGP announce and withdraw latency, measured at the peer: three node
//! namespaces with real speakers peer with gobgpd in a router namespace.
//!
//! For each of N Services (50 by default) one after the other: the clock
//! starts when the Service's address is seen in its status (polled every
//! 2 ms) and stops when gobgpd's RIB holds the /32 from all three nodes;
//! then the Service is deleted and the clock runs from the delete call until
//! the route is gone from the RIB. The baseline, in the same run, is one read
//! of the RIB with `gobgp`: the probe's own cost, included in both figures.
//!
//! Run as root: `cargo run -p ferrolb-e2e --example bgp_latency [-- --services N]`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use common::bench::{count_flag, ms, summary};
use common::bgp::{configure_bgp, next_hops, node_ips, start_router};
use common::ingress_ips;
use common::l2::{L2Cluster, check_tools};
use kube::api::DeleteParams;

async fn until(what: &str, mut f: impl FnMut() -> Result<bool>) -> Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if f()? {
            return Ok(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    bail!("timed out waiting for {what}")
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    ferrolb_e2e::install_crypto_provider();
    let n = count_flag("services", 50)?;
    check_tools()?;
    let mut c = L2Cluster::start(3).await?;
    let _router = start_router(&mut c).await?;
    configure_bgp(&c, &[]).await?;
    let all = node_ips(&c, &["node-0", "node-1", "node-2"]);

    let mut baseline = Vec::new();
    let mut announce = Vec::new();
    let mut withdraw = Vec::new();
    for i in 0..n {
        let name = format!("svc-{i}");
        c.env.create_service(&name, |_| {}).await?;
        c.set_endpoints(&name, &["node-0", "node-1", "node-2"])
            .await?;
        let api = c.env.services();
        let vip = loop {
            let ips = ingress_ips(&api.get(&name).await?);
            if let Some(ip) = ips.first() {
                break ip.clone();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let written = Instant::now();
        let prefix = format!("{vip}/32");
        let seen = until("the route at gobgpd", || Ok(next_hops(&c, &prefix)? == all)).await?;
        announce.push(seen - written);

        let probe = Instant::now();
        next_hops(&c, &prefix)?;
        baseline.push(probe.elapsed());

        let deleted = Instant::now();
        api.delete(&name, &DeleteParams::default()).await?;
        let gone = until("the withdrawal at gobgpd", || {
            Ok(next_hops(&c, &prefix)?.is_empty())
        })
        .await?;
        withdraw.push(gone - deleted);
        eprintln!(
            "{name}: announced in {}, withdrawn in {}",
            ms(seen - written),
            ms(gone - deleted)
        );
    }
    println!("| what | Services | median | p90 | worst |");
    println!("|---|---|---|---|---|");
    for (label, v) in [
        ("baseline: one read of gobgpd's RIB", baseline),
        (
            "announce: status written → route at the peer from all 3 nodes",
            announce,
        ),
        (
            "withdraw: Service deleted → route gone at the peer",
            withdraw,
        ),
    ] {
        let (median, p90, worst) = summary(v);
        println!(
            "| {label} | {n} | {} | {} | {} |",
            ms(median),
            ms(p90),
            ms(worst)
        );
    }
    Ok(())
}
