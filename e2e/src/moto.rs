//! A local AWS endpoint: moto's server on loopback, seeded like the account of a cluster.
//!
//! [`Moto::start`] runs `moto_server` (found through `FERROLB_MOTO_SERVER`, else installed
//! once per machine by `e2e/scripts/moto-venv.sh`) under the same supervision as
//! [`ControlPlane`](crate::ControlPlane): its own process group, a watchdog, and a kill
//! on drop. [`Moto::seed`] builds the VPC, subnets, route tables and node security group
//! a cluster would have; [`Moto::run_instance`] adds nodes. Where moto differs from a
//! real account the harness makes up for it here, never the product.
//!
//! What moto 5.2.5 does differently from AWS, and what to do about it in a test:
//! - RunInstances answers `pending` and the next DescribeInstances `running`;
//!   [`Moto::run_instance`] waits for `running`, as a test against AWS would.
//! - RunInstances takes any AMI id; [`NODE_AMI`] is one of moto's stock images, so that
//!   DescribeImages knows it too.
//! - Nothing checks that things belong to one VPC: RunInstances takes a security group of
//!   another VPC, and RegisterTargets takes instances outside the target group's VPC and
//!   unknown instance ids. An internet-facing NLB is accepted in any subnet, even of a VPC
//!   without an internet gateway. Tests must check the subnets, targets and groups the
//!   product picked against the [`Seed`] rather than rely on moto to refuse.
//! - Targets are `healthy` as soon as they are registered; NLBs have no
//!   `LoadBalancerAddresses` (SubnetMappings' AllocationId and PrivateIPv4Address are
//!   dropped), fake DNS names, and go `provisioning` → `active` on the next Describe.
//! - The default VPC (172.31.0.0/16, one default subnet per zone) has no internet gateway
//!   and its main route table no default route, unlike a real account's. It is untagged,
//!   so tag-based discovery never sees it. [`Moto::reset`] recreates it with a new id.

mod api;
mod seed;
mod server;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::config::Credentials;
use tempfile::TempDir;
use tokio::process::Command;
use tokio::time::Instant;

use crate::child::{Supervised, log_tail};
use crate::control_plane::KEEP_ENV;
use crate::wait::POLL_INTERVAL;

pub use seed::{Instance, NODE_AMI, NODE_INSTANCE_TYPE, Seed, cluster_tag_key};
pub use server::moto_server_path;

/// The region every client of [`Moto`] uses.
pub const REGION: &str = "us-east-1";
/// The access key id and the secret key moto is given (it accepts any).
pub const ACCESS_KEY: &str = "testing";
/// The account moto puts everything in.
pub const ACCOUNT_ID: &str = "123456789012";

/// Importing moto's backends takes a few seconds, more on a loaded machine.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts with a fresh port when another process took ours first.
const PORT_ATTEMPTS: usize = 3;
/// A bound on each SDK call, so that a wedged moto fails a test instead of hanging it.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_TAIL_LINES: usize = 40;

/// `moto_server` on `127.0.0.1:<free port>`, with its log and two empty AWS profile files
/// in a temporary directory.
///
/// Dropping it SIGKILLs the server's process group, reaps it and removes the directory
/// (unless `FERROLB_E2E_KEEP=1`). If the test process dies without unwinding, the
/// watchdog kills the server.
pub struct Moto {
    dir: Option<TempDir>,
    dir_path: PathBuf,
    endpoint: String,
    addr: SocketAddr,
    server: Option<Supervised>,
}

/// Why one attempt to start failed.
enum StartError {
    /// The server lost the race for its port; a new port may help.
    PortClash(anyhow::Error),
    Failed(anyhow::Error),
}

impl Moto {
    /// Starts moto_server on 127.0.0.1 and a free port and waits (bounded) until
    /// `GET /moto-api/` answers. The first call on a machine installs moto, which takes
    /// about a minute.
    pub async fn start() -> Result<Moto> {
        crate::install_crypto_provider();
        let program = server::moto_server_path().await?;
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            match Self::start_once(&program).await {
                Ok(moto) => {
                    tracing::info!(
                        elapsed = ?started.elapsed(),
                        dir = %moto.dir().display(),
                        endpoint = %moto.endpoint(),
                        "moto ready"
                    );
                    return Ok(moto);
                }
                Err(StartError::PortClash(err)) if attempt < PORT_ATTEMPTS => {
                    tracing::warn!(attempt, "moto lost its port; retrying: {err:#}");
                    attempt += 1;
                }
                Err(StartError::PortClash(err) | StartError::Failed(err)) => return Err(err),
            }
        }
    }

    async fn start_once(program: &Path) -> Result<Moto, StartError> {
        let mut moto = Self::prepare().map_err(StartError::Failed)?;
        let log = moto.log_path();
        let mut cmd = Command::new(program);
        cmd.arg("-H")
            .arg(moto.addr.ip().to_string())
            .arg("-p")
            .arg(moto.addr.port().to_string())
            // The log is for people reading a failure: unbuffered, so nothing is missing.
            .env("PYTHONUNBUFFERED", "1")
            // Harness-side fixes for moto's gaps (see the file there).
            .env(
                "PYTHONPATH",
                concat!(env!("CARGO_MANIFEST_DIR"), "/moto-patches"),
            );
        let server = Supervised::spawn("moto_server", cmd, &log).map_err(StartError::Failed)?;
        moto.server = Some(server);
        if let Err(err) = moto.wait_ready().await {
            let recent = std::fs::read_to_string(&log).unwrap_or_default();
            let err = err.context(format!(
                "moto_server failed to start; last lines of {}:\n{}",
                log.display(),
                log_tail(&log, LOG_TAIL_LINES)
            ));
            // Werkzeug prints "Address already in use" (errno 98) and exits.
            return Err(
                if recent
                    .to_ascii_lowercase()
                    .contains("address already in use")
                {
                    StartError::PortClash(err)
                } else {
                    StartError::Failed(err)
                },
            );
        }
        Ok(moto)
    }

    /// The directory, the empty profile files and a port, before the server starts.
    fn prepare() -> Result<Moto> {
        let dir = tempfile::Builder::new()
            .prefix("ferrolb-moto-")
            .tempdir()
            .context("creating a temporary directory")?;
        let dir_path = dir.path().to_owned();
        for file in [CONFIG_FILE, CREDENTIALS_FILE] {
            std::fs::write(dir_path.join(file), "")
                .with_context(|| format!("writing an empty {file}"))?;
        }
        let addr = free_port()?;
        Ok(Moto {
            dir: Some(dir),
            dir_path,
            endpoint: format!("http://{addr}"),
            addr,
            server: None,
        })
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last_error = anyhow::anyhow!("none");
        loop {
            if let Some(server) = &mut self.server
                && let Some(status) = server.try_wait()?
            {
                bail!("moto_server exited: {status}");
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            match api::request(self.addr, "GET", "/moto-api/", remaining).await {
                Ok((200, _)) => return Ok(()),
                Ok((status, body)) => {
                    last_error = anyhow::anyhow!("GET /moto-api/ gave {status}: {body:.200}");
                }
                Err(err) => last_error = err,
            }
            if Instant::now() + POLL_INTERVAL > deadline {
                bail!("moto not ready after {READY_TIMEOUT:?}; last error: {last_error:#}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The temporary directory: `moto.log` and the empty profile files are in it.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// moto_server's stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir_path.join("moto.log")
    }

    /// The pid of moto_server, which leads its own process group.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Supervised::pid)
    }

    /// The environment for a process that should talk to this moto and nothing else:
    /// endpoint, region (`AWS_REGION` and `AWS_DEFAULT_REGION`), static credentials, no IMDS,
    /// and empty config and credentials
    /// files so that no profile on the machine is read.
    ///
    /// Add it over the inherited environment. Per-service overrides such as
    /// `AWS_ENDPOINT_URL_EC2` are not cleared; the harness is not run with them set.
    pub fn env(&self) -> Vec<(String, String)> {
        let file = |name: &str| self.dir_path.join(name).to_string_lossy().into_owned();
        [
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", REGION.to_owned()),
            // What the Python and older SDKs and the CLI read instead.
            ("AWS_DEFAULT_REGION", REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", ACCESS_KEY.to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("AWS_CONFIG_FILE", file(CONFIG_FILE)),
            ("AWS_SHARED_CREDENTIALS_FILE", file(CREDENTIALS_FILE)),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
    }

    /// The settings of [`Moto::env`] as an `SdkConfig`, for the test's own clients. Nothing
    /// comes from the test process's environment, and each call is bounded in time.
    pub async fn sdk_config(&self) -> SdkConfig {
        crate::install_crypto_provider();
        // aws-config names these through deprecated aliases; the types live in aws-runtime,
        // which is not worth a dependency of its own.
        #[allow(deprecated)]
        let profile_files = {
            use aws_config::profile::profile_file::{ProfileFileKind, ProfileFiles};
            ProfileFiles::builder()
                .with_file(ProfileFileKind::Config, self.dir_path.join(CONFIG_FILE))
                .with_file(
                    ProfileFileKind::Credentials,
                    self.dir_path.join(CREDENTIALS_FILE),
                )
                .build()
        };
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new(ACCESS_KEY, ACCESS_KEY, None, None, "moto"))
            .profile_files(profile_files)
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(OPERATION_TIMEOUT)
                    .build(),
            )
            .load()
            .await
    }

    /// Wipes every resource (`POST /moto-api/reset`). Ids from an earlier [`Moto::seed`]
    /// are gone afterwards; the default VPC and the stock AMIs come back.
    pub async fn reset(&self) -> Result<()> {
        let (status, body) = api::request(self.addr, "POST", "/moto-api/reset", OPERATION_TIMEOUT)
            .await
            .context("POST /moto-api/reset")?;
        if status != 200 {
            bail!("POST /moto-api/reset gave {status}: {body:.200}");
        }
        Ok(())
    }

    async fn ec2(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.sdk_config().await)
    }
}

const CONFIG_FILE: &str = "aws-config";
const CREDENTIALS_FILE: &str = "aws-credentials";

/// A loopback port that was free a moment ago; start failures from a lost race are
/// retried with a new one.
fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    listener.local_addr().context("local address of a listener")
}

impl fmt::Debug for Moto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Moto")
            .field("dir", &self.dir_path)
            .field("endpoint", &self.endpoint)
            .field("pid", &self.pid())
            .finish()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // `Supervised` kills the process group and reaps it on drop.
        drop(self.server.take());
        let Some(dir) = self.dir.take() else { return };
        if std::env::var(KEEP_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
            let path = dir.keep();
            eprintln!("{KEEP_ENV}=1: kept {}", path.display());
        } else if let Err(err) = dir.close() {
            eprintln!("removing {}: {err}", self.dir_path.display());
        }
    }
}
