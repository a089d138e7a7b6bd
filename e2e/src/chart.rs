//! What the chart tests need: helm to render and lint `charts/ferrolb`, and
//! kubectl to hand the result to a [`ControlPlane`](crate::ControlPlane).

pub mod helm;
pub mod kubectl;

pub use helm::{Helm, HelmOutput, chart_dir, document_kinds};
pub use kubectl::{KubectlOutput, apply, kubectl, objects};
