//! etcd and kube-apiserver on loopback, in a temporary directory.

mod credentials;
mod ports;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tempfile::TempDir;
use tokio::process::Command;
use tokio::time::Instant;

use crate::binaries::{self, ETCD, KUBE_APISERVER};
use crate::child::{Supervised, log_tail};
use crate::wait::{POLL_INTERVAL, wait_for};

/// Service CIDRs, IPv4 first: single-stack Services get an IPv4 clusterIP.
pub const SERVICE_CIDRS: &str = "10.96.0.0/16,fd00:10:96::/112";
/// Set to `1` to keep the temporary directory (logs, etcd data, kubeconfig) after drop.
pub const KEEP_ENV: &str = "FERROLB_E2E_KEEP";

const ETCD_TIMEOUT: Duration = Duration::from_secs(20);
const APISERVER_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts with fresh ports when another process took one of ours first.
const PORT_ATTEMPTS: usize = 3;
const LOG_TAIL_LINES: usize = 40;

/// A real kube-apiserver backed by a real etcd, both on 127.0.0.1 with random ports.
///
/// Authentication is a bearer token for a user in `system:masters`; the apiserver serves
/// a self-signed certificate that the kubeconfig trusts. No controller-manager, scheduler
/// or kubelet runs: tests create Nodes and EndpointSlices themselves, while clusterIPs and
/// nodePorts are allocated by the apiserver as in a real cluster.
///
/// Dropping it SIGKILLs both processes, reaps them, and removes the directory (unless
/// `FERROLB_E2E_KEEP=1`). If the test process dies without unwinding, a watchdog per
/// process kills them.
pub struct ControlPlane {
    dir: Option<TempDir>,
    dir_path: PathBuf,
    kubeconfig: PathBuf,
    token: String,
    apiserver_port: u16,
    apiserver_bin: PathBuf,
    apiserver_args: Vec<OsString>,
    apiserver: Option<Supervised>,
    etcd: Option<Supervised>,
}

/// Why one attempt to start failed.
enum StartError {
    /// A process lost the race for its port; new ports may help.
    PortClash(anyhow::Error),
    Failed(anyhow::Error),
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver and waits until the apiserver is ready and the
    /// namespaces `default` and `kube-system` exist.
    pub async fn start() -> Result<ControlPlane> {
        Self::start_with(false).await
    }

    /// [`start`](Self::start), with the apiserver writing an audit log
    /// ([`audit_log`](Self::audit_log)): one JSON line per request, with its
    /// verb, object, User-Agent, status and when it completed.
    pub async fn start_audited() -> Result<ControlPlane> {
        Self::start_with(true).await
    }

    async fn start_with(audit: bool) -> Result<ControlPlane> {
        crate::install_crypto_provider();
        let bin_dir = binaries::control_plane_bin_dir().await?;
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            match Self::start_once(&bin_dir, audit).await {
                Ok(cp) => {
                    tracing::info!(
                        elapsed = ?started.elapsed(),
                        dir = %cp.dir().display(),
                        url = %cp.apiserver_url(),
                        "control plane ready"
                    );
                    return Ok(cp);
                }
                Err(StartError::PortClash(err)) if attempt < PORT_ATTEMPTS => {
                    tracing::warn!(
                        attempt,
                        "port taken while starting; retrying with new ports: {err:#}"
                    );
                    attempt += 1;
                }
                Err(StartError::PortClash(err) | StartError::Failed(err)) => return Err(err),
            }
        }
    }

    async fn start_once(bin_dir: &Path, audit: bool) -> Result<ControlPlane, StartError> {
        let mut cp = Self::prepare(bin_dir).map_err(StartError::Failed)?;
        let [etcd_client_port, etcd_peer_port, apiserver_port] =
            ports::free_ports().map_err(StartError::Failed)?;
        cp.apiserver_port = apiserver_port;

        let etcd_log = cp.dir_path.join("etcd.log");
        let etcd_url = format!("http://127.0.0.1:{etcd_client_port}");
        let etcd = etcd_command(bin_dir, &cp.dir_path, &etcd_url, etcd_peer_port);
        cp.etcd = Some(Supervised::spawn(ETCD, etcd, &etcd_log).map_err(StartError::Failed)?);
        if let Err(err) = cp.wait_etcd_healthy(&etcd_url).await {
            return Err(start_error(ETCD, err, &etcd_log, 0));
        }

        cp.apiserver_args = apiserver_args(&cp.dir_path, &etcd_url, apiserver_port);
        if audit {
            let policy = cp.dir_path.join("audit-policy.yaml");
            std::fs::write(&policy, AUDIT_POLICY)
                .context("writing the audit policy")
                .map_err(StartError::Failed)?;
            cp.apiserver_args.extend([
                flag("--audit-policy-file", &policy),
                flag("--audit-log-path", cp.audit_log()),
                "--audit-log-format=json".into(),
            ]);
        }
        cp.spawn_apiserver().map_err(StartError::Failed)?;
        if let Err(err) = cp.wait_apiserver_ready(APISERVER_TIMEOUT).await {
            return Err(start_error(KUBE_APISERVER, err, &cp.apiserver_log(), 0));
        }
        Ok(cp)
    }

    /// The directory, the credentials and the key files, before any process starts.
    fn prepare(bin_dir: &Path) -> Result<ControlPlane> {
        let dir = tempfile::Builder::new()
            .prefix("ferrolb-e2e-")
            .tempdir()
            .context("creating a temporary directory")?;
        let dir_path = dir.path().to_owned();
        let certs = dir_path.join("certs");
        std::fs::create_dir(&certs).context("creating the cert directory")?;
        let token = credentials::random_token()?;
        credentials::write_token_file(&dir_path.join("tokens.csv"), &token)?;
        credentials::write_service_account_keys(&certs.join("sa.key"), &certs.join("sa.pub"))?;
        Ok(ControlPlane {
            dir: Some(dir),
            kubeconfig: dir_path.join("kubeconfig"),
            dir_path,
            token,
            apiserver_port: 0,
            apiserver_bin: bin_dir.join(KUBE_APISERVER),
            apiserver_args: Vec::new(),
            apiserver: None,
            etcd: None,
        })
    }

    /// The kubeconfig: one context, current, with the token user.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The temporary directory; logs are `etcd.log` and `kube-apiserver.log` in it.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// `https://127.0.0.1:<port>`.
    pub fn apiserver_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.apiserver_port)
    }

    /// The pid of kube-apiserver, while one is running.
    pub fn apiserver_pid(&self) -> Option<u32> {
        self.apiserver.as_ref().map(Supervised::pid)
    }

    /// The pid of etcd.
    pub fn etcd_pid(&self) -> Option<u32> {
        self.etcd.as_ref().map(Supervised::pid)
    }

    /// A new client from the kubeconfig.
    pub async fn client(&self) -> Result<kube::Client> {
        crate::install_crypto_provider();
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)
            .with_context(|| format!("reading {}", self.kubeconfig.display()))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .context("loading the kubeconfig")?;
        kube::Client::try_from(config).context("building a client")
    }

    /// Kills kube-apiserver and starts it again on the same port, with the same etcd and
    /// certificates, so clients and the kubeconfig stay valid. Waits until it is ready.
    pub async fn restart_apiserver(&mut self) -> Result<()> {
        if let Some(mut old) = self.apiserver.take() {
            old.kill().await.context("killing kube-apiserver")?;
        }
        let mut attempt = 1;
        loop {
            let log_offset = std::fs::metadata(self.apiserver_log()).map_or(0, |m| m.len());
            let started = Instant::now();
            self.spawn_apiserver()?;
            match self.wait_apiserver_ready(APISERVER_TIMEOUT).await {
                Ok(()) => {
                    tracing::info!(elapsed = ?started.elapsed(), "kube-apiserver restarted");
                    return Ok(());
                }
                Err(err) => {
                    if let Some(mut failed) = self.apiserver.take() {
                        let _ = failed.kill().await;
                    }
                    match start_error(KUBE_APISERVER, err, &self.apiserver_log(), log_offset) {
                        // Our port was free a moment ago; someone grabbed it in between.
                        StartError::PortClash(err) if attempt < PORT_ATTEMPTS => {
                            tracing::warn!(attempt, "port taken while restarting: {err:#}");
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        StartError::PortClash(err) | StartError::Failed(err) => return Err(err),
                    }
                }
            }
        }
    }

    /// Where [`start_audited`](Self::start_audited)'s apiserver writes its
    /// audit log.
    pub fn audit_log(&self) -> PathBuf {
        self.dir_path.join("audit.log")
    }

    fn apiserver_log(&self) -> PathBuf {
        self.dir_path.join("kube-apiserver.log")
    }

    fn spawn_apiserver(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.apiserver_bin);
        cmd.args(&self.apiserver_args);
        self.apiserver = Some(Supervised::spawn(
            KUBE_APISERVER,
            cmd,
            &self.apiserver_log(),
        )?);
        Ok(())
    }

    fn check_alive(&mut self) -> Result<()> {
        for (name, child) in [
            (ETCD, &mut self.etcd),
            (KUBE_APISERVER, &mut self.apiserver),
        ] {
            if let Some(child) = child
                && let Some(status) = child.try_wait()?
            {
                bail!("{name} exited: {status}");
            }
        }
        Ok(())
    }

    async fn wait_etcd_healthy(&mut self, url: &str) -> Result<()> {
        let client = kube::Client::try_from(kube::Config::new(url.parse()?))
            .context("building an etcd health client")?;
        let deadline = Instant::now() + ETCD_TIMEOUT;
        let mut last_error = anyhow!("none");
        loop {
            self.check_alive()?;
            let request = http::Request::get("/health").body(Vec::new())?;
            match tokio::time::timeout_at(deadline, client.request_text(request)).await {
                Ok(Ok(body)) if body.contains(r#""health":"true""#) => return Ok(()),
                Ok(Ok(body)) => last_error = anyhow!("/health said {body}"),
                Ok(Err(err)) => last_error = err.into(),
                Err(_elapsed) => {}
            }
            if Instant::now() + POLL_INTERVAL > deadline {
                bail!("etcd not healthy after {ETCD_TIMEOUT:?}; last error: {last_error:#}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits for `/readyz`, writing the kubeconfig as soon as the apiserver has written
    /// its self-signed certificate and listens, then for the system namespaces.
    async fn wait_apiserver_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let ca = self.dir_path.join("certs/apiserver.crt");
        let mut client = None;
        let mut last_error = anyhow!("none");
        let client = loop {
            self.check_alive()?;
            if client.is_none() {
                if !self.kubeconfig.exists() && ca.exists() && self.apiserver_listens().await {
                    let yaml =
                        credentials::kubeconfig_yaml(&self.apiserver_url(), &ca, &self.token);
                    std::fs::write(&self.kubeconfig, yaml).context("writing the kubeconfig")?;
                }
                if self.kubeconfig.exists() {
                    client = Some(self.client().await?);
                }
            }
            if let Some(client) = &client {
                let request = http::Request::get("/readyz").body(Vec::new())?;
                match tokio::time::timeout_at(deadline, client.request_text(request)).await {
                    Ok(Ok(body)) if body.trim() == "ok" => break client.clone(),
                    Ok(Ok(body)) => last_error = anyhow!("/readyz said {body}"),
                    Ok(Err(err)) => last_error = err.into(),
                    Err(_elapsed) => {}
                }
            }
            if Instant::now() + POLL_INTERVAL > deadline {
                bail!("kube-apiserver not ready after {timeout:?}; last error: {last_error:#}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        };
        let namespaces: Api<Namespace> = Api::all(client);
        let remaining = deadline.saturating_duration_since(Instant::now());
        wait_for("namespaces default and kube-system", remaining, || {
            let namespaces = namespaces.clone();
            async move {
                for name in ["default", "kube-system"] {
                    if namespaces.get_opt(name).await?.is_none() {
                        return Ok(None);
                    }
                }
                Ok(Some(()))
            }
        })
        .await
    }

    async fn apiserver_listens(&self) -> bool {
        tokio::net::TcpStream::connect(("127.0.0.1", self.apiserver_port))
            .await
            .is_ok()
    }
}

/// Adds the log tail to a start failure and tells a port clash from anything else.
/// Only the log written after `log_offset` counts for the clash.
fn start_error(name: &str, err: anyhow::Error, log: &Path, log_offset: u64) -> StartError {
    let recent = std::fs::read(log)
        .map(|bytes| {
            let start = usize::try_from(log_offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        })
        .unwrap_or_default();
    let err = err.context(format!(
        "{name} failed to start; last lines of {}:\n{}",
        log.display(),
        log_tail(log, LOG_TAIL_LINES)
    ));
    if ports::shows_port_clash(&recent) {
        StartError::PortClash(err)
    } else {
        StartError::Failed(err)
    }
}

fn etcd_command(bin_dir: &Path, dir: &Path, client_url: &str, peer_port: u16) -> Command {
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let mut cmd = Command::new(bin_dir.join(ETCD));
    cmd.arg("--name=default")
        .arg(flag("--data-dir", dir.join("etcd")))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=default={peer_url}"))
        .arg("--unsafe-no-fsync=true")
        .arg("--log-level=warn");
    cmd
}

/// Every request at the Metadata level, logged once it completed.
const AUDIT_POLICY: &str = "\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
";

fn apiserver_args(dir: &Path, etcd_url: &str, port: u16) -> Vec<OsString> {
    let certs = dir.join("certs");
    vec![
        format!("--etcd-servers={etcd_url}").into(),
        flag("--cert-dir", &certs),
        format!("--secure-port={port}").into(),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--service-cluster-ip-range={SERVICE_CIDRS}").into(),
        "--authorization-mode=RBAC".into(),
        flag("--token-auth-file", dir.join("tokens.csv")),
        format!("--service-account-issuer=https://127.0.0.1:{port}").into(),
        flag("--service-account-key-file", certs.join("sa.pub")),
        flag("--service-account-signing-key-file", certs.join("sa.key")),
        // No controller creates the `default` ServiceAccount in each namespace.
        "--disable-admission-plugins=ServiceAccount".into(),
        "--allow-privileged=true".into(),
    ]
}

/// `--name=<path>` without assuming the path is UTF-8.
fn flag(name: &str, path: impl AsRef<Path>) -> OsString {
    let mut arg = OsString::from(format!("{name}="));
    arg.push(path.as_ref());
    arg
}

impl fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlane")
            .field("dir", &self.dir_path)
            .field("apiserver_url", &self.apiserver_url())
            .field("apiserver_pid", &self.apiserver_pid())
            .field("etcd_pid", &self.etcd_pid())
            .finish()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Each `Supervised` kills its process group and reaps it on drop.
        drop(self.apiserver.take());
        drop(self.etcd.take());
        let Some(dir) = self.dir.take() else { return };
        if keep_requested() {
            let path = dir.keep();
            eprintln!("{KEEP_ENV}=1: kept {}", path.display());
        } else if let Err(err) = dir.close() {
            eprintln!("removing {}: {err}", self.dir_path.display());
        }
    }
}

fn keep_requested() -> bool {
    std::env::var(KEEP_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_clash_counts_only_after_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("kube-apiserver.log");
        let old = "failed to listen: bind: address already in use\n";
        std::fs::write(&log, format!("{old}E1122 something else\n")).unwrap();

        let clash = start_error(KUBE_APISERVER, anyhow!("exited"), &log, 0);
        assert!(matches!(clash, StartError::PortClash(_)));
        let other = start_error(KUBE_APISERVER, anyhow!("exited"), &log, old.len() as u64);
        let StartError::Failed(err) = other else {
            panic!("an old clash was counted")
        };
        let message = format!("{err:#}");
        assert!(message.contains("E1122 something else"), "{message}");
        assert!(message.ends_with("exited"), "{message}");
    }
}
