//! vipgate: a multi-VIP ECMP gateway. This binary is the daemon, its CLI
//! and the lab. See README.md for the picture and ../shared/DESIGN.md.

#[cfg(not(target_os = "linux"))]
compile_error!(
    "vipgate runs on Linux only: it needs AF_PACKET, rtnetlink, nftables and network namespaces"
);

mod cli;
mod config;
mod control;
mod daemon;
mod lab;
mod logging;
mod netlink;
mod netns;
mod privileges;
mod sys;

fn main() -> std::process::ExitCode {
    cli::main()
}
