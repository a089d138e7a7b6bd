//! ferrolb's end-to-end harness: a real kube-apiserver and etcd on loopback
//! ([`ControlPlane`]), the objects a real cluster would have made ([`fixtures`]), bounded
//! polling ([`wait`]) and the controller under test as a child process ([`process`]).
//!
//! kube-apiserver and etcd are found through `FERROLB_CONTROL_PLANE_BIN`, then
//! `KUBEBUILDER_ASSETS`, then built once per machine by `e2e/scripts/control-plane-bins.sh`.

pub mod binaries;
pub mod chart;
mod child;
pub mod control_plane;
pub mod fault_proxy;
pub mod fixtures;
pub mod moto;
pub mod netns;
pub mod plain_http;
pub mod process;
pub mod wait;

pub use control_plane::ControlPlane;
pub use fixtures::EndpointSpec;
pub use moto::Moto;
pub use process::FerrolbProcess;
pub use wait::wait_for;

/// Picks rustls's crypto provider for the test process. kube's TLS brings ring
/// and the AWS SDK's brings aws-lc-rs; with both built in, rustls refuses to
/// guess. Called before any client is built; later calls do nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
