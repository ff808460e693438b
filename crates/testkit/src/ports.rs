//! Loopback ports for the real processes that tests and benchmarks start.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::{Mutex, OnceLock};

/// Ports are picked from here up...
const LOWEST: u16 = 10_000;
/// ...and below the ports nodes hand their replicas (20000-29999 by
/// default) and the kernel's ephemeral range, whichever starts lower.
const REPLICAS: u16 = 20_000;
/// Where the ephemeral range starts if the kernel does not say.
const EPHEMERAL: u16 = 32_768;

/// A loopback port free at the time of asking and never handed out before
/// in this process. It comes from below the kernel's ephemeral range
/// (`ip_local_port_range`): a port of that range (what binding port 0
/// gives) may be taken by any outgoing connection, one node dialling
/// another, before the process it was picked for binds it. Processes that
/// pick at once start at different places.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    static SPAN: OnceLock<u16> = OnceLock::new();
    let span = *SPAN.get_or_init(|| top() - LOWEST);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let start = std::process::id() as usize * 7_919;
    (0..usize::from(span))
        .map(|i| LOWEST + ((start + i) % usize::from(span)) as u16)
        .find(|p| !given.contains(p) && TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .inspect(|p| {
            given.insert(*p);
        })
        .expect("a free loopback port below the ephemeral range")
}

/// The port above those handed out: where the ephemeral range or the
/// replicas' starts, and at least a thousand ports up (where the kernel's
/// range starts that low, some may meet outgoing connections after all).
fn top() -> u16 {
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(EPHEMERAL);
    ephemeral.clamp(LOWEST + 1_000, REPLICAS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_free_below_the_ephemeral_range_and_once_each() {
        // Each held open as it comes: the next one is free all the same.
        let held: Vec<TcpListener> = (0..50)
            .map(|_| TcpListener::bind(("127.0.0.1", free_port())).expect("free"))
            .collect();
        let ports: BTreeSet<u16> = held
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        assert_eq!(ports.len(), held.len(), "{ports:?}");
        assert!(
            ports.iter().all(|p| (LOWEST..top()).contains(p)),
            "{ports:?}"
        );
    }
}
