//! Subcommands that run services.

pub mod agent;
pub mod harden;
pub mod kv;
pub mod mail;
pub mod proxy;
pub mod signals;
pub mod storage;
pub mod tls;

/// Prints `listening on ADDR` on stdout, which tests and scripts wait for. A service never
/// dies of a closed stdout.
pub fn announce(addr: std::net::SocketAddr) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on {addr}").and_then(|()| out.flush());
}
