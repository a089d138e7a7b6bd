//! `ferrolb crds`: the CustomResourceDefinitions, generated from the Rust types.

use ferrolb_baremetal::crd::{BGPAdvertisement, BGPPeer, IPPool, L2Advertisement};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every CRD ferrolb defines.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        IPPool::crd(),
        L2Advertisement::crd(),
        BGPPeer::crd(),
        BGPAdvertisement::crd(),
    ]
}

/// The CRDs as one multi-document YAML stream.
pub fn to_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in all() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chart ships the CRDs that `ferrolb crds` prints; regenerate with
    /// `cargo run -- crds > charts/ferrolb/crds/crds.yaml`.
    #[test]
    fn chart_crds_match_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/ferrolb/crds/crds.yaml");
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == to_yaml().unwrap(),
            "{path} is stale: run `cargo run -- crds > charts/ferrolb/crds/crds.yaml`"
        );
    }

    #[test]
    fn ippool_schema_has_metallb_field_names() {
        let yaml = to_yaml().unwrap();
        for field in [
            "addresses",
            "autoAssign",
            "avoidBuggyIPs",
            "serviceAllocation",
            "serviceSelectors",
            "namespaces",
            "priority",
            "assignedIPv4",
            "availableIPv6",
        ] {
            assert!(yaml.contains(field), "schema lacks {field}");
        }
        let crd = &all()[0];
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.group, "ferrolb.io");
    }
}
