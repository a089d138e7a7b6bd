//! The speaker: makes the LAN deliver each allocated address to one node.
//!
//! - [`plan`] decides, purely, which node answers for which address.
//! - [`membership`] tells which speakers are alive (UDP heartbeats).
//! - [`responder`] answers ARP and NDP for this node's addresses on raw
//!   sockets, and sends gratuitous announcements on taking one over.
//! - [`packet`] parses and builds the frames; [`sys`] holds the system calls.
//! - [`bgp`] is the BGP side: the wire format, the session, and which routes
//!   a node advertises to which peer.

pub mod bgp;
pub mod interfaces;
pub mod membership;
pub mod metrics;
pub mod packet;
pub mod plan;
pub mod responder;
pub(crate) mod sys;
