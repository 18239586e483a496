//! VRRP (RFC 5798 version 3, RFC 3768 version 2), keepalived-compatible.
//!
//! - [`wire`]: the advert format, parse and emit (sans-IO).
//! - [`instance`]: one virtual router's state machine (sans-IO: takes
//!   `now` and adverts, returns actions).
//! - [`node`]: every instance of this node, sync groups and tracking.
//! - [`socket`]: the raw IP protocol 112 sockets (the I/O shell).
//!
//! The daemon owns the glue (`src/vrrp/run.rs`): it feeds received adverts
//! and timeouts into [`node::Node`] and carries out its actions.

pub mod announce;
pub mod instance;
pub mod node;
pub mod run;
pub mod socket;
pub mod wire;
