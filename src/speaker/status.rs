//! Tells users who announces each address: a condition per address family on
//! the Service (`ferrolb.io/L2AnnouncedIPv4`, `...IPv6`), written by the node
//! that announces it, and an Event when the announcing node changes. When
//! nobody can announce an address, one speaker (the first alive one in the
//! address's ranking) writes the condition as False and a Warning Event.
//!
//! For BGP, that same speaker writes `ferrolb.io/BGPAdvertisedIPv4` (`...IPv6`)
//! naming the nodes that advertise the address, or False with a Warning when
//! none can.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::Plans;

pub const CONDITION_V4: &str = "ferrolb.io/L2AnnouncedIPv4";
pub const CONDITION_V6: &str = "ferrolb.io/L2AnnouncedIPv6";
pub const BGP_CONDITION_V4: &str = "ferrolb.io/BGPAdvertisedIPv4";
pub const BGP_CONDITION_V6: &str = "ferrolb.io/BGPAdvertisedIPv6";
const ANNOUNCED: &str = "Announced";
const NOT_ANNOUNCED: &str = "NotAnnounced";
const ADVERTISED: &str = "Advertised";
const NOT_ADVERTISED: &str = "NotAdvertised";
const ANNOUNCED_BY: &str = " is announced by ";

/// The parts of a condition that say something; the transition time does not.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Said {
    status: String,
    reason: String,
    message: String,
}

fn condition_type(ip: &IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => CONDITION_V4,
        IpAddr::V6(_) => CONDITION_V6,
    }
}

/// The announcing node named in a condition we wrote.
fn announcer_in(message: &str) -> Option<&str> {
    let rest = message.split_once(ANNOUNCED_BY)?.1;
    rest.split(' ').next()
}

fn current(svc: &Service, type_: &str) -> Option<Said> {
    let c = svc
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)?;
    Some(Said {
        status: c.status.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
    })
}

/// What this node should say about each family of each Service: only what it
/// is responsible for (as announcer, or as reporter when nobody announces).
fn wanted(me: &str, plans: &Plans) -> BTreeMap<(String, &'static str), (IpAddr, Said)> {
    let mut out = BTreeMap::new();
    for p in plans.l2.values() {
        let said = match (&p.announcer, &p.unannounced) {
            (Some((node, ifaces)), _) if node == me => Said {
                status: "True".into(),
                reason: ANNOUNCED.into(),
                message: format!("{}{ANNOUNCED_BY}{node} on {ifaces}", p.address),
            },
            // An address only BGP announces is not a layer-2 problem.
            (None, Some(_)) if !p.covered && plans.bgp.contains_key(&p.address) => continue,
            (None, Some(why)) if p.reporter.as_deref() == Some(me) => Said {
                status: "False".into(),
                reason: NOT_ANNOUNCED.into(),
                message: why.clone(),
            },
            _ => continue,
        };
        for svc in &p.services {
            out.insert(
                (svc.clone(), condition_type(&p.address)),
                (p.address, said.clone()),
            );
        }
    }
    for (ip, p) in &plans.bgp {
        if p.reporter.as_deref() != Some(me) {
            continue;
        }
        let said = if p.advertisers.is_empty() {
            Said {
                status: "False".into(),
                reason: NOT_ADVERTISED.into(),
                message: format!(
                    "no node with a live speaker is selected by a BGPPeer and a BGPAdvertisement and serves the Service, so no route for {ip} is advertised"
                ),
            }
        } else {
            Said {
                status: "True".into(),
                reason: ADVERTISED.into(),
                message: format!(
                    "{ip} is advertised over BGP by {}",
                    p.advertisers.join(", ")
                ),
            }
        };
        let type_ = match ip {
            IpAddr::V4(_) => BGP_CONDITION_V4,
            IpAddr::V6(_) => BGP_CONDITION_V6,
        };
        for svc in &p.services {
            out.insert((svc.clone(), type_), (*ip, said.clone()));
        }
    }
    out
}

/// Writes conditions and Events as the plans change, until the plans end.
pub async fn run(
    client: Client,
    me: String,
    services: Store<Service>,
    mut plans: watch::Receiver<Arc<Plans>>,
) {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "ferrolb-speaker".into(),
            instance: Some(me.clone()),
        },
    );
    // What we last wrote, and what the Service showed before: while our cache
    // still shows the old value, the write is not repeated.
    let mut written: HashMap<(String, &'static str), (Option<Said>, Said)> = HashMap::new();
    loop {
        if plans.changed().await.is_err() {
            return;
        }
        // Let a burst of changes (a node dying moves many addresses) settle.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let snapshot = plans.borrow_and_update().clone();
        let wanted = wanted(&me, &snapshot);
        written.retain(|k, _| wanted.contains_key(k));
        for ((key, type_), (ip, said)) in wanted {
            let Some((ns, name)) = key.split_once('/') else {
                continue;
            };
            let Some(svc) = services.get(&ObjectRef::new(name).within(ns)) else {
                continue;
            };
            let shown = current(&svc, type_);
            if shown.as_ref() == Some(&said) {
                continue;
            }
            if let Some((before, after)) = written.get(&(key.clone(), type_))
                && *after == said
                && *before == shown
            {
                continue;
            }
            match write(&client, &svc, type_, &said).await {
                Ok(()) => {
                    publish(&recorder, &svc, &ip, &me, shown.as_ref(), &said).await;
                    written.insert((key, type_), (shown, said));
                }
                Err(e) => {
                    warn!(service = %key, error = %e, "writing the announcement condition failed")
                }
            }
        }
    }
}

async fn write(client: &Client, svc: &Service, type_: &str, said: &Said) -> kube::Result<()> {
    let ns = svc.namespace().unwrap_or_default();
    let api: Api<Service> = Api::namespaced(client.clone(), &ns);
    let patch = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": svc.name_any(), "namespace": ns },
        "status": { "conditions": [{
            "type": type_,
            "status": said.status,
            "reason": said.reason,
            "message": said.message,
            "lastTransitionTime": Time(k8s_openapi::jiff::Timestamp::now()),
            "observedGeneration": svc.metadata.generation,
        }]},
    });
    // One field manager per family: the two families' conditions can be
    // written by different nodes, and each apply would otherwise drop the
    // other's.
    let manager = match type_ {
        CONDITION_V4 => "ferrolb-speaker-ipv4",
        CONDITION_V6 => "ferrolb-speaker-ipv6",
        BGP_CONDITION_V4 => "ferrolb-speaker-bgp-ipv4",
        _ => "ferrolb-speaker-bgp-ipv6",
    };
    api.patch_status(
        &svc.name_any(),
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    debug!(service = %svc.name_any(), %type_, status = %said.status, "announcement condition written");
    Ok(())
}

async fn publish(
    recorder: &Recorder,
    svc: &Service,
    ip: &IpAddr,
    me: &str,
    before: Option<&Said>,
    said: &Said,
) {
    if said.reason == ADVERTISED {
        // Which nodes advertise changes with every endpoint under Local: the
        // condition says it, without an Event each time.
        return;
    }
    let (type_, reason, note) = if said.reason == ANNOUNCED {
        let was = before
            .filter(|b| b.reason == ANNOUNCED)
            .and_then(|b| announcer_in(&b.message))
            .filter(|n| *n != me);
        let note = match was {
            Some(was) => format!("{}; it was {was}", said.message),
            None => said.message.clone(),
        };
        (EventType::Normal, "AnnouncerChanged", note)
    } else {
        (
            EventType::Warning,
            said.reason.as_str(),
            said.message.clone(),
        )
    };
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Announce".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &svc.object_ref(&())).await {
        warn!(address = %ip, error = %e, reason, "publishing an event failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_baremetal::speaker::plan::{AddressPlan, Interfaces};

    fn plan(ip: &str, announcer: Option<&str>, reporter: &str) -> (IpAddr, AddressPlan) {
        let address: IpAddr = ip.parse().unwrap();
        (
            address,
            AddressPlan {
                address,
                pool: "lan".into(),
                services: vec!["default/web".into()],
                covered: true,
                announcer: announcer.map(|n| (n.to_string(), Interfaces::All)),
                unannounced: announcer.is_none().then(|| "no node".to_string()),
                reporter: Some(reporter.into()),
            },
        )
    }

    #[test]
    fn each_family_is_said_by_its_announcer_or_reporter() {
        let plans = Plans {
            l2: [
                plan("192.0.2.1", Some("a"), "b"),
                plan("fd00::1", None, "a"),
            ]
            .into_iter()
            .collect(),
            bgp: BTreeMap::new(),
        };
        let a = wanted("a", &plans);
        assert_eq!(a.len(), 2);
        let v4 = &a[&("default/web".to_string(), CONDITION_V4)].1;
        assert_eq!(v4.status, "True");
        assert_eq!(announcer_in(&v4.message), Some("a"));
        assert_eq!(v4.message, "192.0.2.1 is announced by a on all interfaces");
        let v6 = &a[&("default/web".to_string(), CONDITION_V6)].1;
        assert_eq!(
            (v6.status.as_str(), v6.reason.as_str()),
            ("False", NOT_ANNOUNCED)
        );
        // b announces nothing and reports nothing.
        assert!(wanted("b", &plans).is_empty());
    }

    #[test]
    fn bgp_only_addresses_get_no_layer_2_warning() {
        let (ip, mut l2) = plan("192.0.2.1", None, "a");
        l2.covered = false;
        let mut plans = Plans {
            l2: [(ip, l2)].into_iter().collect(),
            bgp: [(
                ip,
                super::super::BgpAddressPlan {
                    services: vec!["default/web".into()],
                    advertisers: vec!["a".into(), "b".into()],
                    reporter: Some("a".into()),
                },
            )]
            .into_iter()
            .collect(),
        };
        let a = wanted("a", &plans);
        assert_eq!(a.len(), 1, "{a:?}");
        let said = &a[&("default/web".to_string(), BGP_CONDITION_V4)].1;
        assert_eq!(said.message, "192.0.2.1 is advertised over BGP by a, b");
        plans.bgp.get_mut(&ip).unwrap().advertisers.clear();
        let said = &wanted("a", &plans)[&("default/web".to_string(), BGP_CONDITION_V4)].1;
        assert_eq!(
            (said.status.as_str(), said.reason.as_str()),
            ("False", NOT_ADVERTISED)
        );
    }
}
