//! vipgate-routing: the BGP speaker that announces vipgate's VIPs to
//! upstream routers.
//!
//! What this crate owns:
//! - [`wire`]: a thin, typed layer over `netgauze-bgp-pkt`. A byte-stream
//!   [`wire::Framer`], small `Repr` types for the messages vipgate sends and
//!   reads ([`wire::Message`], [`wire::OpenRepr`], [`wire::UpdateRepr`],
//!   [`wire::NotificationRepr`]), and the mapping from decoding errors to the
//!   RFC 4271 section 6 NOTIFICATION or the RFC 7606 treat-as-withdraw
//!   verdict. No other part of vipgate touches netgauze types.
//! - [`session`]: one BGP connection's finite state machine (RFC 4271
//!   section 8), sans-IO in the quinn-proto style: the caller passes `now`
//!   and bytes in, and polls bytes to write, transport commands, application
//!   events and the next timeout out. Connection collision resolution
//!   (RFC 4271 section 6.8) is a pure helper, [`session::collision_winner`].
//!
//! - [`rib`]: the Adj-RIB-Out, sans-IO: the application's desired routes
//!   (with RFC 8326 drain) and, per peer, what was sent and the UPDATE diff.
//! - [`rib_in`]: the Adj-RIB-In of each peer and the decision process that
//!   picks the equal-cost best paths of every prefix (for a router that
//!   installs what the gateways announce, such as the lab's), sans-IO.
//! - [`speaker`] and [`transport`]: the I/O shell. A [`speaker::Speaker`]
//!   runs many peers on its own thread's tokio runtime over TCP (MD5, GTSM;
//!   the setsockopt FFI is confined to the private `sockopt` module) and
//!   gives the daemon a blocking-free [`speaker::SpeakerHandle`].
//!
//! What it must not touch: the dataplane or the daemon's configuration
//! types; sockets, clocks and threads only in `speaker`, `transport` and
//! `sockopt`. Announcement policy, daemon wiring and the CLI are separate
//! layers built on top of [`speaker::SpeakerHandle`].
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod rib;
pub mod rib_in;
pub mod session;
mod sockopt;
pub mod speaker;
pub mod transport;
pub mod wire;
