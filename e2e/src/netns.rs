//! A LAN made of network namespaces: a bridge in a namespace of its own, and
//! hosts (namespaces) plugged into it by veth pairs, each with an `eth0`
//! carrying an IPv4 and an IPv6 address. Everything is named with a prefix
//! unique to the test process and LAN, and deleted on drop, failed test or not.
//!
//! Processes inside a host reach the test's kube-apiserver (on the root
//! namespace's loopback) through [`Lan::forward_apiserver`], which listens on
//! the host's own 127.0.0.1 and relays to the root namespace.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};
use tokio::task::AbortHandle;

static LANS: AtomicU32 = AtomicU32::new(0);

pub struct Lan {
    prefix: String,
    /// The bridge's namespace, then the hosts'.
    namespaces: Vec<String>,
    relays: Vec<AbortHandle>,
}

/// Runs a command to completion; a non-zero exit is an error with its stderr.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

fn ip(args: &[&str]) -> Result<Output> {
    run(Command::new("ip").args(args))
}

impl Lan {
    /// A bridge, up, in a fresh namespace.
    pub fn new() -> Result<Lan> {
        let n = LANS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("flb{}-{n}", std::process::id());
        let lan = Lan {
            namespaces: vec![format!("{prefix}-lan")],
            prefix,
            relays: Vec::new(),
        };
        let ns = lan.namespaces[0].clone();
        ip(&["netns", "add", &ns])?;
        ip(&["-n", &ns, "link", "add", "br0", "type", "bridge"])?;
        // Forward at once: a new port would otherwise wait in the learning
        // state, and the first frames of a test would be lost.
        ip(&[
            "-n",
            &ns,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
        ])?;
        ip(&["-n", &ns, "link", "set", "br0", "up"])?;
        Ok(lan)
    }

    /// The namespace of `host`.
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// Adds a host with `eth0` on the bridge, holding `v4` and `v6` (CIDR
    /// notation), loopback up, and IPv6 duplicate address detection off so
    /// the addresses work at once.
    pub fn add_host(&mut self, host: &str, v4: &str, v6: &str) -> Result<()> {
        if host.len() > 12 {
            bail!("host name {host:?} is too long for an interface name");
        }
        let ns = self.ns(host);
        let lan = self.namespaces[0].clone();
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        let port = format!("p-{host}");
        ip(&[
            "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port, "netns",
            &lan,
        ])?;
        ip(&["-n", &lan, "link", "set", &port, "master", "br0", "up"])?;
        for key in ["all", "default", "eth0"] {
            run(Command::new("ip").args([
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{key}.accept_dad=0"),
            ]))?;
        }
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns, "addr", "add", v4, "dev", "eth0"])?;
        ip(&["-n", &ns, "addr", "add", v6, "dev", "eth0", "nodad"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        Ok(())
    }

    /// The MAC address of `host`'s `eth0`, as `ip` prints it.
    pub fn mac(&self, host: &str) -> Result<String> {
        let out = ip(&["-n", &self.ns(host), "-o", "link", "show", "eth0"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .map(str::to_string)
            .with_context(|| format!("no MAC in {text:?}"))
    }

    /// Takes `host`'s `eth0` down or up.
    pub fn set_link(&self, host: &str, up: bool) -> Result<()> {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.ns(host), "link", "set", "eth0", state])?;
        Ok(())
    }

    /// A command that runs `program` inside `host`.
    pub fn command(&self, host: &str, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(host), program]);
        cmd
    }

    /// Makes `addr` (the apiserver, on the root namespace's loopback) reachable
    /// at the same address inside `host`, so a kubeconfig works unchanged
    /// there. Needs a tokio runtime.
    pub fn forward_apiserver(&mut self, host: &str, addr: SocketAddr) -> Result<()> {
        let path = format!("/var/run/netns/{}", self.ns(host));
        let listener = std::thread::scope(|s| {
            s.spawn(|| -> Result<std::net::TcpListener> {
                let ns = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
                // Only this short-lived thread enters the namespace; the
                // socket it makes stays there.
                rustix::thread::move_into_link_name_space(
                    ns.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .context("setns")?;
                let l = std::net::TcpListener::bind(addr)?;
                l.set_nonblocking(true)?;
                Ok(l)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
        })?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let relay = tokio::spawn(async move {
            while let Ok((mut inner, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut outer) = tokio::net::TcpStream::connect(addr).await {
                        let _ = tokio::io::copy_bidirectional(&mut inner, &mut outer).await;
                    }
                });
            }
        });
        self.relays.push(relay.abort_handle());
        Ok(())
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for r in &self.relays {
            r.abort();
        }
        // Deleting a namespace kills nothing; the processes in it are the
        // callers' to stop (their handles kill them on drop). Its veth ends go
        // with it.
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Whether this process may build network namespaces (root, with `ip`).
pub fn available() -> bool {
    rustix::process::geteuid().is_root()
        && Command::new("ip")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
}
