//! The speaker's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    /// `arp` or `ndp`.
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandoverLabels {
    /// `acquired` when this node took an address over, `released` when it
    /// gave one up.
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    /// The `BGPPeer`'s name.
    pub peer: String,
}

pub struct SpeakerMetrics {
    pub bgp_session_up: Family<PeerLabels, Gauge>,
    pub bgp_updates: Family<PeerLabels, Counter>,
    pub bgp_prefixes_advertised: Family<PeerLabels, Gauge>,
    pub announced: Gauge,
    pub handovers: Family<HandoverLabels, Counter>,
    pub replies: Family<ProtocolLabels, Counter>,
    pub gratuitous: Family<ProtocolLabels, Counter>,
    pub send_errors: Counter,
    pub peers_alive: Gauge,
    registry: Registry,
}

impl Default for SpeakerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SpeakerMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ferrolb_speaker");
        let announced = Gauge::default();
        registry.register(
            "announced_addresses",
            "Addresses this node answers ARP or NDP for",
            announced.clone(),
        );
        let handovers = Family::<HandoverLabels, Counter>::default();
        registry.register(
            "handovers",
            "Addresses this node took over or gave up",
            handovers.clone(),
        );
        let replies = Family::<ProtocolLabels, Counter>::default();
        registry.register(
            "replies",
            "ARP replies and neighbour advertisements sent in answer to a request",
            replies.clone(),
        );
        let gratuitous = Family::<ProtocolLabels, Counter>::default();
        registry.register(
            "gratuitous",
            "Gratuitous ARPs and unsolicited neighbour advertisements sent",
            gratuitous.clone(),
        );
        let send_errors = Counter::default();
        registry.register(
            "send_errors",
            "Frames the kernel refused to send",
            send_errors.clone(),
        );
        let peers_alive = Gauge::default();
        registry.register(
            "peers_alive",
            "Speakers this node hears from, itself included",
            peers_alive.clone(),
        );
        let bgp_session_up = Family::<PeerLabels, Gauge>::default();
        registry.register(
            "bgp_session_up",
            "1 while the BGP session with the peer is established",
            bgp_session_up.clone(),
        );
        let bgp_updates = Family::<PeerLabels, Counter>::default();
        registry.register(
            "bgp_updates",
            "BGP UPDATE messages sent to the peer",
            bgp_updates.clone(),
        );
        let bgp_prefixes_advertised = Family::<PeerLabels, Gauge>::default();
        registry.register(
            "bgp_prefixes_advertised",
            "Prefixes the peer has from this node now",
            bgp_prefixes_advertised.clone(),
        );
        Self {
            bgp_session_up,
            bgp_updates,
            bgp_prefixes_advertised,
            announced,
            handovers,
            replies,
            gratuitous,
            send_errors,
            peers_alive,
            registry,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
