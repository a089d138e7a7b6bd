//! BGP for the speaker: the wire format ([`message`]), one session per peer
//! ([`session`]), and which routes a node advertises to which peer
//! ([`plan`]).

pub mod message;
pub mod plan;
pub mod session;
