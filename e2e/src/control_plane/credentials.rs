//! The files a control plane needs before it starts, and the kubeconfig it hands out.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};

/// Names used in the kubeconfig and the token file.
const CLUSTER: &str = "ferrolb-e2e";
const USER: &str = "admin";

/// A random bearer token, 32 hex digits.
pub(crate) fn random_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `--token-auth-file`: one user in `system:masters`, which RBAC lets do anything.
pub(crate) fn write_token_file(path: &Path, token: &str) -> Result<()> {
    let line = format!("{token},{USER},{USER},\"system:masters\"\n");
    std::fs::write(path, line).with_context(|| format!("writing {}", path.display()))
}

/// The service-account signing key (PKCS#8, ECDSA P-256) and its public key (PKIX).
pub(crate) fn write_service_account_keys(private: &Path, public: &Path) -> Result<()> {
    let key = rcgen::KeyPair::generate().context("generating the service-account key")?;
    std::fs::write(private, key.serialize_pem())
        .with_context(|| format!("writing {}", private.display()))?;
    std::fs::write(public, key.public_key_pem())
        .with_context(|| format!("writing {}", public.display()))
}

/// A kubeconfig with one cluster, one token user and one context, all current.
/// `ca_file` is the apiserver's self-signed bundle (serving cert followed by its CA).
pub(crate) fn kubeconfig_yaml(server: &str, ca_file: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {CLUSTER}
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {USER}
  user:
    token: {token}
contexts:
- name: {CLUSTER}
  context:
    cluster: {CLUSTER}
    user: {USER}
    namespace: default
current-context: {CLUSTER}
",
        ca = serde_json::Value::from(ca_file.to_string_lossy()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (random_token().unwrap(), random_token().unwrap());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn kubeconfig_parses_as_kube_reads_it() {
        let yaml = kubeconfig_yaml(
            "https://127.0.0.1:6443",
            Path::new("/tmp/x y/ca.crt"),
            "t0k",
        );
        let kc = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
        assert_eq!(kc.current_context.as_deref(), Some(CLUSTER));
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(
            cluster.certificate_authority.as_deref(),
            Some("/tmp/x y/ca.crt")
        );
    }

    #[test]
    fn service_account_keys_are_pem() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("sa.key"), dir.path().join("sa.pub"));
        write_service_account_keys(&private, &public).unwrap();
        let private = std::fs::read_to_string(private).unwrap();
        let public = std::fs::read_to_string(public).unwrap();
        assert!(
            private.starts_with("-----BEGIN PRIVATE KEY-----"),
            "{private}"
        );
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "{public}");
    }
}
