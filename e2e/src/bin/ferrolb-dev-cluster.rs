//! Starts the e2e control plane (etcd + kube-apiserver on loopback) and keeps it running
//! until SIGINT or SIGTERM, for poking at it by hand:
//!
//! ```text
//! cargo run -p ferrolb-e2e --bin ferrolb-dev-cluster -- --kubeconfig-out /tmp/ferrolb.kubeconfig
//! ```

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use ferrolb_e2e::ControlPlane;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Parser)]
#[command(about = "Run a throwaway kube-apiserver + etcd on 127.0.0.1 until interrupted")]
struct Args {
    /// Also copy the kubeconfig here (it stops working at teardown).
    #[arg(long, env = "FERROLB_DEV_KUBECONFIG_OUT")]
    kubeconfig_out: Option<PathBuf>,
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
    let Args { kubeconfig_out } = Args::parse();

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
    drop(cp);
    Ok(())
}
