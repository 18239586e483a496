//! vipgate: a multi-VIP ECMP gateway. This library is the daemon, its CLI
//! and the lab; `src/main.rs` is a thin binary over it, and the integration
//! tests under `tests/` use it directly. See README.md for the picture.

#[cfg(not(target_os = "linux"))]
compile_error!(
    "vipgate runs on Linux only: it needs AF_PACKET, rtnetlink, nftables and network namespaces"
);

pub mod bgp;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod health;
pub mod lab;
pub mod logging;
pub mod netlink;
pub mod netns;
pub mod privileges;
pub mod sys;
pub mod vrrp;
