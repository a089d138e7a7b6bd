//! Starts the e2e control plane (etcd + kube-apiserver on loopback) and keeps it running
//! until SIGINT or SIGTERM, for poking at it by hand:
//!
//! ```text
//! cargo run -p ferrolb-e2e --bin ferrolb-dev-cluster -- --kubeconfig-out /tmp/ferrolb.kubeconfig
//! ```
//!
//! With `--aws` it also starts moto (the local AWS endpoint), seeds it with the
//! cluster's VPC and subnets, backs two Nodes with running instances, and prints the
//! `AWS_*` variables that point a `ferrolb controller --provider aws` at it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use ferrolb_e2e::ControlPlane;
use ferrolb_e2e::moto::Moto;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Parser)]
#[command(about = "Run a throwaway kube-apiserver + etcd on 127.0.0.1 until interrupted")]
struct Args {
    /// Also copy the kubeconfig here (it stops working at teardown).
    #[arg(long, env = "FERROLB_DEV_KUBECONFIG_OUT")]
    kubeconfig_out: Option<PathBuf>,

    /// Also run a local AWS endpoint (moto), seeded for cluster `--cluster-name`,
    /// with one Node per zone backed by an instance.
    #[arg(long, env = "FERROLB_DEV_AWS")]
    aws: bool,

    /// The cluster name the AWS account is seeded for (its subnet tags).
    #[arg(long, env = "FERROLB_DEV_CLUSTER_NAME", default_value = "kubernetes")]
    cluster_name: String,
}

/// Zones the seeded account has, one Node in each.
const ZONES: [&str; 2] = ["us-east-1a", "us-east-1b"];

/// Moto, seeded, with Nodes backed by its instances.
async fn start_aws(cp: &ControlPlane, cluster: &str) -> Result<Moto> {
    let moto = Moto::start().await?;
    let seed = moto.seed(cluster, &ZONES).await?;
    let client = cp.client().await?;
    for (i, zone) in ZONES.iter().enumerate() {
        moto.run_node(&client, &seed, &format!("node-{}", i + 1), zone)
            .await?;
    }
    Ok(moto)
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env() // kube_client logs every 500 from /readyz while the apiserver starts.
                .unwrap_or_else(|_| "info,kube_client=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let Args {
        kubeconfig_out,
        aws,
        cluster_name,
    } = Args::parse();

    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let cp = ControlPlane::start().await?;
    let kubeconfig = match kubeconfig_out {
        Some(out) => {
            std::fs::copy(cp.kubeconfig_path(), &out)
                .with_context(|| format!("copying the kubeconfig to {}", out.display()))?;
            std::path::absolute(&out).unwrap_or(out)
        }
        None => cp.kubeconfig_path().to_owned(),
    };
    let moto = match aws {
        true => Some(start_aws(&cp, &cluster_name).await?),
        false => None,
    };
    for (key, value) in moto.iter().flat_map(Moto::env) {
        println!("export {key}={value}");
    }
    // Last, so that a script waiting for it has all the lines above.
    println!("export KUBECONFIG={}", kubeconfig.display());
    println!(
        "# then: kubectl get namespaces   (logs in {})",
        cp.dir().display()
    );
    println!("# Ctrl-C or SIGTERM tears it down");

    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for SIGINT")?,
        _ = terminate.recv() => {}
    }
    eprintln!("tearing down");
    drop(moto);
    drop(cp);
    Ok(())
}
