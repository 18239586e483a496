//! Small OS calls the workers need besides packet I/O (thread pinning).
//!
//! The crate allows `unsafe` only in [`super::afpacket`], so the calls are
//! implemented there; this module is where callers find them. It owns no
//! state and touches nothing but the calling thread's CPU affinity.

pub use super::afpacket::{allowed_cpus, pin_current_thread};
