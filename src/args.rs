//! Command-line flags. Every flag can also be set from a `FERROLB_*` variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "ferrolb",
    version,
    about = "Gives Kubernetes Services of type LoadBalancer a real external address"
)]
pub struct Cli {
    /// Log filter, in `RUST_LOG` syntax (e.g. `info,ferrolb=debug`). Without
    /// it, `RUST_LOG`, then `info`.
    #[arg(long, env = "FERROLB_LOG", global = true)]
    pub log: Option<String>,

    /// Log format.
    #[arg(long, env = "FERROLB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller: allocate and provision load balancers for Services.
    Controller(Box<ControllerArgs>),
    /// Run the speaker on a node: answer ARP/NDP for the addresses this node
    /// is elected to announce.
    Speaker(Box<SpeakerArgs>),
    /// Print the CustomResourceDefinitions as a multi-document YAML stream.
    Crds,
}

#[derive(Clone, Debug, Args)]
pub struct SpeakerArgs {
    /// The name of the Node this speaker runs on (from the downward API in
    /// the chart).
    #[arg(long, env = "FERROLB_NODE_NAME")]
    pub node_name: String,

    /// Path to a kubeconfig. Without it: KUBECONFIG, ~/.kube/config, then the
    /// in-cluster service account.
    #[arg(long, env = "FERROLB_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// The `spec.loadBalancerClass` whose addresses are announced.
    #[arg(
        long,
        env = "FERROLB_LOAD_BALANCER_CLASS",
        default_value = "ferrolb.io/baremetal"
    )]
    pub load_balancer_class: String,

    /// Also announce LoadBalancer Services that set no class (when the
    /// controller is the cluster's default).
    #[arg(long, env = "FERROLB_DEFAULT_CLASS")]
    pub default_class: bool,

    /// Address of the HTTP server for `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "FERROLB_METRICS_ADDR", default_value = "0.0.0.0:7473")]
    pub metrics_addr: SocketAddr,

    /// UDP port the speakers send each other heartbeats on; the same on
    /// every node.
    #[arg(long, env = "FERROLB_HEARTBEAT_PORT", default_value_t = 7946)]
    pub heartbeat_port: u16,

    /// How often a speaker tells the others it is alive.
    #[arg(long, env = "FERROLB_HEARTBEAT_INTERVAL", value_parser = parse_duration, default_value = "100ms")]
    pub heartbeat_interval: Duration,

    /// A speaker not heard from for this long is dead, and its addresses move
    /// to other nodes. Failover takes about this long after a node dies.
    #[arg(long, env = "FERROLB_PEER_TIMEOUT", value_parser = parse_duration, default_value = "500ms")]
    pub peer_timeout: Duration,

    /// The namespace of the BGP password Secrets a `BGPPeer` names without a
    /// namespace (the speaker's own, in the chart).
    #[arg(long, env = "FERROLB_NAMESPACE", default_value = "ferrolb-system")]
    pub namespace: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProviderKind {
    Baremetal,
    Aws,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Baremetal => "baremetal",
            ProviderKind::Aws => "aws",
        }
    }
}

#[derive(Clone, Debug, Args)]
pub struct ControllerArgs {
    /// Path to a kubeconfig. Without it: KUBECONFIG, ~/.kube/config, then the
    /// in-cluster service account.
    #[arg(long, env = "FERROLB_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Which provider builds the load balancers.
    #[arg(long, env = "FERROLB_PROVIDER", value_enum, default_value_t = ProviderKind::Baremetal)]
    pub provider: ProviderKind,

    /// A name for this cluster, used to tag and name what the provider creates.
    #[arg(long, env = "FERROLB_CLUSTER_NAME", default_value = "kubernetes")]
    pub cluster_name: String,

    /// The `spec.loadBalancerClass` this install serves. Default:
    /// `ferrolb.io/<provider>`.
    #[arg(long, env = "FERROLB_LOAD_BALANCER_CLASS")]
    pub load_balancer_class: Option<String>,

    /// Also serve LoadBalancer Services that set no `spec.loadBalancerClass`
    /// (make this install the cluster's default).
    #[arg(long, env = "FERROLB_DEFAULT_CLASS")]
    pub default_class: bool,

    /// Address of the HTTP server for `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "FERROLB_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Elect one active controller through a Lease. Turn off only when exactly
    /// one replica runs.
    #[arg(
        long,
        env = "FERROLB_LEADER_ELECTION",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub leader_election: bool,

    /// Namespace of the leader-election Lease.
    #[arg(
        long,
        env = "FERROLB_LEADER_ELECTION_NAMESPACE",
        default_value = "kube-system"
    )]
    pub leader_election_namespace: String,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "FERROLB_LEADER_ELECTION_NAME",
        default_value = "ferrolb-controller"
    )]
    pub leader_election_name: String,

    /// This replica's identity in the Lease. Default: the host name plus a
    /// random suffix.
    #[arg(long, env = "FERROLB_LEADER_ELECTION_IDENTITY")]
    pub leader_election_identity: Option<String>,

    /// How long a Lease stays valid without renewal.
    #[arg(long, env = "FERROLB_LEASE_DURATION", value_parser = parse_duration, default_value = "15s")]
    pub lease_duration: Duration,

    /// How often the leader renews, and a standby retries.
    #[arg(long, env = "FERROLB_LEASE_RETRY_PERIOD", value_parser = parse_duration, default_value = "2s")]
    pub lease_retry_period: Duration,

    /// Services reconciled at once.
    #[arg(long, env = "FERROLB_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,

    /// Requests a second to the apiserver, sustained; 0 (the default) sets
    /// no limit beyond `--concurrency` (the apiserver's priority and fairness
    /// guards it). A new Service costs three requests: a limit of 200 makes
    /// 10,000 new Services take 150 s (docs/benchmarks.md).
    #[arg(long, env = "FERROLB_KUBE_API_QPS", default_value_t = 0.0)]
    pub kube_api_qps: f64,

    /// Requests allowed in a burst above `--kube-api-qps`, when it is set.
    #[arg(long, env = "FERROLB_KUBE_API_BURST", default_value_t = 400)]
    pub kube_api_burst: u32,

    /// How often a converged Service is checked again.
    #[arg(long, env = "FERROLB_RESYNC_PERIOD", value_parser = parse_duration, default_value = "10m")]
    pub resync_period: Duration,

    /// (AWS) Remember what each Service's load balancer looked like after its
    /// last ensure: a resync of an unchanged Service is then confirmed in one
    /// shared listing of the account, and a change of targets is written
    /// without reads. Off: every ensure observes, plans and applies in full.
    #[arg(
        long,
        env = "FERROLB_AWS_ENSURE_CACHE",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub aws_ensure_cache: bool,

    /// (AWS) How long one attempt of an AWS call may take before the SDK gives
    /// up on it and retries. Without a bound, a connection that never answers
    /// would hold its Service's reconcile forever.
    #[arg(long, env = "FERROLB_AWS_CALL_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub aws_call_timeout: Duration,

    /// (AWS) Attempts at one AWS call that fails with a throttling, server or
    /// network error, with the SDK's exponential backoff between them (1 to
    /// 10; this wins over `AWS_MAX_ATTEMPTS`).
    #[arg(long, env = "FERROLB_AWS_CALL_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub aws_call_attempts: u32,

    /// Consider nodes that are not Ready as load-balancer targets too.
    #[arg(long, env = "FERROLB_INCLUDE_NOT_READY_NODES")]
    pub include_not_ready_nodes: bool,
}

/// Parses `500ms`, `15s`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} has no unit (ms, s or m)"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} does not start with a number"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?} has unknown unit {unit:?} (ms, s or m)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("15").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3h").is_err());
    }

    #[test]
    fn flags_parse_with_defaults() {
        let cli = Cli::try_parse_from(["ferrolb", "controller"]).unwrap();
        let Command::Controller(args) = cli.command else {
            panic!("not controller")
        };
        assert_eq!(args.provider, ProviderKind::Baremetal);
        assert!(args.leader_election);
        assert!(!args.default_class);
        assert_eq!(args.leader_election_namespace, "kube-system");
    }

    #[test]
    fn leader_election_can_be_turned_off() {
        let cli = Cli::try_parse_from([
            "ferrolb",
            "controller",
            "--leader-election=false",
            "--provider",
            "aws",
            "--load-balancer-class",
            "example.com/lb",
        ])
        .unwrap();
        let Command::Controller(args) = cli.command else {
            panic!("not controller")
        };
        assert!(!args.leader_election);
        assert_eq!(args.provider, ProviderKind::Aws);
        assert_eq!(args.load_balancer_class.as_deref(), Some("example.com/lb"));
    }

    #[test]
    fn leader_election_flag_takes_an_optional_value() {
        for (flags, want) in [
            (&["--leader-election"][..], true),
            (&["--leader-election=true"][..], true),
            (&["--leader-election", "false"][..], false),
        ] {
            let cli = Cli::try_parse_from(["ferrolb", "controller"].iter().chain(flags)).unwrap();
            let Command::Controller(args) = cli.command else {
                panic!("not controller")
            };
            assert_eq!(args.leader_election, want, "{flags:?}");
        }
    }

    /// Every flag of every subcommand can be set from the environment, as
    /// `FERROLB_` and the flag's name in upper snake case.
    #[test]
    fn every_flag_has_its_env_var() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let commands = std::iter::once(&cli).chain(cli.get_subcommands());
        for cmd in commands {
            for arg in cmd.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if matches!(long, "help" | "version") {
                    continue;
                }
                let want = format!("FERROLB_{}", long.to_uppercase().replace('-', "_"));
                let got = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                assert_eq!(
                    got.as_deref(),
                    Some(want.as_str()),
                    "--{long} of {}",
                    cmd.get_name()
                );
            }
        }
    }

    #[test]
    fn speaker_flags() {
        let cli = Cli::try_parse_from(["ferrolb", "speaker", "--node-name", "n1"]).unwrap();
        let Command::Speaker(args) = cli.command else {
            panic!("not speaker")
        };
        assert_eq!(args.node_name, "n1");
        assert_eq!(args.load_balancer_class, "ferrolb.io/baremetal");
        assert_eq!(args.peer_timeout, Duration::from_millis(500));
        assert!(
            Cli::try_parse_from(["ferrolb", "speaker"]).is_err(),
            "the node name is required"
        );
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
