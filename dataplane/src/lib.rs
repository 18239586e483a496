//! vipgate's userspace NAT dataplane.
//!
//! Owns everything a packet touches between the RX ring and the TX batch:
//! typed packet views ([`wire`]), checksums ([`checksum`]), per-worker
//! connection tables ([`conntrack`]), backend schedulers ([`sched`]), the
//! sans-IO NAT pipeline ([`pipeline`]), workers ([`worker`]) and packet I/O
//! backends ([`io`]).
//!
//! It must not touch the kernel's configuration (links, addresses, sysctls,
//! filters): that is the daemon's job in the `vipgate` crate. Only the I/O
//! backends contain `unsafe`; every other module is `#![deny(unsafe_code)]`
//! through the crate attribute below.
#![deny(unsafe_code)]

pub mod checksum;
pub mod conntrack;
pub mod counters;
pub mod flow;
pub mod io;
pub mod pipeline;
pub mod sched;
pub mod snapshot;
pub mod wire;
pub mod worker;
