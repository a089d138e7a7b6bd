//! What the chart tests need: helm to render and lint `charts/ferrolb`, and
//! kubectl to hand the result to a [`ControlPlane`](crate::ControlPlane).

pub mod helm;
pub mod install;
pub mod kubectl;

pub use helm::{Helm, HelmOutput, chart_dir, document_kinds};
pub use install::{
    NAMESPACE, NAMESPACE_YAML, RELEASE, args_of, by_kind, ci_values, client_from, container,
    kind_and_name, prepare, render_and_apply, service_account_kubeconfig,
};
pub use kubectl::{KubectlOutput, apply, kubectl, objects};
