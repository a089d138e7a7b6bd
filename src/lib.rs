//! ferrolb: gives Kubernetes Services of type LoadBalancer a real external
//! address, from AWS Network Load Balancers or from bare-metal IP pools.

pub mod args;
pub mod cache;
pub mod controller;
pub mod crd_docs;
pub mod crds;
pub mod error;
pub mod events;
pub mod fence;
pub mod intent;
pub mod leader;
pub mod metrics;
pub mod nodes;
pub mod orphans;
pub mod ratelimit;
pub mod recent;
pub mod reconcile;
pub mod speaker;

use std::path::Path;

use anyhow::Context as _;
use args::{Cli, Command, LogFormat};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Locks a mutex, also after a panic in another holder: what it guards is
/// bookkeeping that stays usable.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Entry point of the `ferrolb` binary.
pub fn main() -> anyhow::Result<()> {
    let Cli {
        log,
        log_format,
        command,
    } = Cli::parse();
    let log = log
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    let filter =
        EnvFilter::try_new(&log).with_context(|| format!("invalid --log filter {log:?}"))?;
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match log_format {
        LogFormat::Text => subscriber.init(),
        LogFormat::Json => subscriber.json().init(),
    }
    // kube's TLS uses ring and the AWS SDK's uses aws-lc-rs; with both built
    // in, rustls needs to be told which one serves the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match command {
        Command::Crds => {
            print!("{}", crds::to_yaml()?);
            Ok(())
        }
        Command::Controller(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(controller::run(*args)),
        Command::Speaker(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(speaker::run(*args)),
    }
}

/// A client from the given kubeconfig, or from the usual chain (KUBECONFIG,
/// ~/.kube/config, in-cluster).
pub async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    Ok(kube::Client::try_from(config(kubeconfig).await?)?)
}

/// The controller's client for its work: requests limited to `qps` a second
/// after a burst of `burst` (no limit when `qps` is 0), and every attempt
/// refused once `fence` is closed. `config` comes from [`client_config`].
pub fn controller_client(
    config: kube::Config,
    qps: f64,
    burst: u32,
    fence: ferrolb_provider_api::Fence,
) -> anyhow::Result<kube::Client> {
    use kube::client::ConfigExt as _;
    use kube::client::retry::RetryPolicy;
    // kube's own stack, built here so that its TCP connections can be
    // fenced (kube offers no way to wrap the connector it makes).
    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    tcp.enforce_http(false);
    // As Go's net package does for client-go. Without it, the first request
    // on each new connection waited about 40 ms (Nagle's algorithm against
    // the apiserver's delayed ACK): at start, the Service and IPPool lists
    // each came 40-50 ms late.
    tcp.set_nodelay(true);
    let tls = config.rustls_https_connector_with_connector(fence::connector(tcp, fence.clone()))?;
    let mut connector = hyper_timeout::TimeoutConnector::new(tls);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(http);
    // The retry (kube's policy, on 429, 503 and 504) goes above the fence
    // layer, so that each attempt is checked; it clones the service, which
    // the buffer makes cheap.
    let builder = kube::client::ClientBuilder::new(service, config.default_namespace.clone())
        .with_layer(&tower::buffer::BufferLayer::new(1024))
        .with_layer(&fence::FenceLayer::new(fence))
        .with_layer(&tower::retry::RetryLayer::new(RetryPolicy::server_retry()));
    Ok(if qps > 0.0 {
        builder
            .with_layer(&ratelimit::RateLimitLayer::new(qps, burst))
            .build()
    } else {
        builder.build()
    })
}

/// The configuration from [`client`]'s kubeconfig chain, with a User-Agent
/// that says which replica sends (the apiserver's audit log and metrics
/// record it).
pub async fn client_config(
    kubeconfig: Option<&Path>,
    user_agent: &str,
) -> anyhow::Result<kube::Config> {
    let mut config = config(kubeconfig).await?;
    let value = http::HeaderValue::from_str(user_agent)
        .with_context(|| format!("{user_agent:?} is not a valid User-Agent"))?;
    config.headers.push((http::header::USER_AGENT, value));
    Ok(config)
}

async fn config(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Config> {
    match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Ok(kube::Config::from_custom_kubeconfig(
                kc,
                &kube::config::KubeConfigOptions::default(),
            )
            .await?)
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig found (KUBECONFIG, ~/.kube/config or in-cluster)"),
    }
}

/// Installs the SIGTERM and SIGINT handlers now, so a signal that arrives
/// before anyone awaits is not lost to the default action (which would kill
/// the process without releasing its Lease); the future resolves on either.
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static>
{
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
