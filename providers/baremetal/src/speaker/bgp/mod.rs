//! BGP for the speaker: the wire format ([`message`]). The session and the
//! announcer that ties it to the plan build on it.

pub mod message;
pub mod plan;
pub mod session;
