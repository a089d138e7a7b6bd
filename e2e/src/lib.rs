//! ferrolb's end-to-end harness: a real kube-apiserver and etcd on loopback
//! ([`ControlPlane`]), the objects a real cluster would have made ([`fixtures`]), bounded
//! polling ([`wait`]) and the controller under test as a child process ([`process`]).
//!
//! kube-apiserver and etcd are found through `FERROLB_CONTROL_PLANE_BIN`, then
//! `KUBEBUILDER_ASSETS`, then built once per machine by `e2e/scripts/control-plane-bins.sh`.

pub mod binaries;
mod child;
pub mod control_plane;
pub mod fixtures;
pub mod process;
pub mod wait;

pub use control_plane::ControlPlane;
pub use fixtures::EndpointSpec;
pub use process::FerrolbProcess;
pub use wait::wait_for;
