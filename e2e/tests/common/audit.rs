//! The apiserver's audit log ([`Env::start_audited`](super::Env::start_audited)),
//! read to tell which replica wrote what, and when it landed.

use anyhow::{Context, Result};
use k8s_openapi::jiff::Timestamp;

/// One line of the audit log, the fields read here.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub verb: String,
    #[serde(default)]
    pub user_agent: String,
    #[serde(default)]
    pub object_ref: Option<ObjectRef>,
    #[serde(default)]
    pub response_status: Option<ResponseStatus>,
    pub stage_timestamp: String,
}

#[derive(serde::Deserialize)]
pub struct ObjectRef {
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub subresource: String,
}

#[derive(serde::Deserialize)]
pub struct ResponseStatus {
    #[serde(default)]
    pub code: u16,
}

impl AuditEvent {
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }

    pub fn landed(&self) -> bool {
        self.response_status
            .as_ref()
            .is_some_and(|s| (200..300).contains(&s.code))
    }

    /// Sent by the ferrolb controller that runs as `identity`.
    pub fn by_controller(&self, identity: &str) -> bool {
        self.controller() == Some(identity)
    }

    /// A write by controller `identity` that landed.
    pub fn landed_write_by(&self, identity: &str) -> bool {
        self.by_controller(identity) && self.is_write() && self.landed()
    }

    /// The identity of the ferrolb controller that sent it, if one did (its
    /// User-Agent ends in `(controller; <identity>)`).
    pub fn controller(&self) -> Option<&str> {
        self.user_agent
            .strip_suffix(')')
            .and_then(|ua| ua.rsplit_once("(controller; "))
            .map(|(_, id)| id)
    }

    /// On `resource` (with `subresource`, "" for none).
    pub fn on(&self, resource: &str, subresource: &str) -> bool {
        self.object_ref
            .as_ref()
            .is_some_and(|o| o.resource == resource && o.subresource == subresource)
    }

    /// When the apiserver was done with it (the policy logs only that stage).
    pub fn at(&self) -> Result<Timestamp> {
        self.stage_timestamp
            .parse()
            .with_context(|| format!("audit time {}", self.stage_timestamp))
    }

    pub fn what(&self) -> String {
        let Some(o) = &self.object_ref else {
            return self.verb.clone();
        };
        let sub = if o.subresource.is_empty() {
            String::new()
        } else {
            format!("/{}", o.subresource)
        };
        format!("{} {}{sub} {}", self.verb, o.resource, o.name)
    }
}

/// Every line of the audit log at `path`.
pub fn events(path: &std::path::Path) -> Result<Vec<AuditEvent>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("parsing audit line {l}")))
        .collect()
}

/// The writes of controller `identity` that landed after `after`, each with
/// when it landed.
pub fn writes_after(
    events: &[AuditEvent],
    identity: &str,
    after: Timestamp,
) -> Result<Vec<String>> {
    let mut late = Vec::new();
    for e in events {
        if e.landed_write_by(identity) {
            let at = e.at()?;
            if at > after {
                late.push(format!("{} at {at}", e.what()));
            }
        }
    }
    Ok(late)
}

/// When controller `identity` first took the Lease `name`: its first write
/// to it that landed. None if it never did.
pub fn lease_taken(events: &[AuditEvent], identity: &str, name: &str) -> Result<Option<Timestamp>> {
    earliest(events.iter().filter(|e| {
        e.landed_write_by(identity)
            && e.on("leases", "")
            && e.object_ref.as_ref().is_some_and(|o| o.name == name)
    }))
}

/// When controller `identity` sent its first request (the earliest that
/// completed). None if none did.
pub fn first_request(events: &[AuditEvent], identity: &str) -> Result<Option<Timestamp>> {
    earliest(events.iter().filter(|e| e.by_controller(identity)))
}

fn earliest<'a>(events: impl Iterator<Item = &'a AuditEvent>) -> Result<Option<Timestamp>> {
    let mut first: Option<Timestamp> = None;
    for e in events {
        let at = e.at()?;
        first = Some(first.map_or(at, |f| f.min(at)));
    }
    Ok(first)
}
