//! A TCP proxy in front of kube-apiserver that can cut every connection
//! through it at once: the controller's watches and requests break the way
//! they do when a load balancer in front of the apiserver drops them.
//! TLS goes through untouched (the apiserver's certificate is for
//! 127.0.0.1, whichever port the client dials).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use ferrolb_e2e::ControlPlane;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

pub struct CuttingProxy {
    port: u16,
    /// While set, connections are closed as soon as they are accepted.
    refusing: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<AbortHandle>>>,
    accept: JoinHandle<()>,
}

impl CuttingProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<CuttingProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let open: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let conns = open.clone();
        let refusing = Arc::new(AtomicBool::new(false));
        let refuse = refusing.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                if refuse.load(Ordering::Relaxed) {
                    drop(down);
                    continue;
                }
                let conn = tokio::spawn(async move {
                    // A refused upstream (the apiserver is restarting)
                    // closes the client's connection, as it would directly.
                    if let Ok(mut up) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                let mut conns = conns.lock().unwrap_or_else(|e| e.into_inner());
                conns.retain(|c| !c.is_finished());
                conns.push(conn.abort_handle());
            }
        });
        Ok(CuttingProxy {
            port,
            refusing,
            open,
            accept,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes every connection open now; returns how many there were.
    pub fn cut_all(&self) -> usize {
        let mut conns = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = conns.iter().filter(|c| !c.is_finished()).count();
        for c in conns.drain(..) {
            c.abort();
        }
        n
    }

    /// Cuts every connection and lets none through until [`Self::reopen`]:
    /// to the client, the apiserver is unreachable.
    pub fn block(&self) {
        self.refusing.store(true, Ordering::Relaxed);
        self.cut_all();
    }

    pub fn reopen(&self) {
        self.refusing.store(false, Ordering::Relaxed);
    }

    /// A copy of the control plane's kubeconfig that points at the proxy.
    pub fn kubeconfig(&self, cp: &ControlPlane) -> Result<PathBuf> {
        let original = std::fs::read_to_string(cp.kubeconfig_path())
            .with_context(|| format!("reading {}", cp.kubeconfig_path().display()))?;
        let url = cp.apiserver_url();
        anyhow::ensure!(
            original.contains(&url),
            "the kubeconfig does not name {url}"
        );
        let proxied = original.replace(&url, &format!("https://127.0.0.1:{}", self.port));
        let path = Path::new(cp.dir()).join("kubeconfig-proxied");
        std::fs::write(&path, proxied)?;
        Ok(path)
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all();
    }
}

/// The apiserver's address, from its URL.
pub fn apiserver_addr(cp: &ControlPlane) -> Result<SocketAddr> {
    let url = cp.apiserver_url();
    url.trim_start_matches("https://")
        .parse()
        .with_context(|| format!("parsing {url}"))
}
