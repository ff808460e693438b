//! This host as placement sees it: free capacity, its identity, and the
//! replica ports in use on it.

use shoal_model::PortRange;

/// Free CPU (millicores: cores less the 1-minute load) and available
/// memory of this host, from /proc; zeros where it cannot be read.
pub(super) fn capacity() -> (u32, u64) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    let cpu = ((cores - load).max(0.0) * 1000.0) as u32;
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemAvailable:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024);
    (cpu, mem)
}

/// Which host this process runs on, for replica ports: its machine
/// (`/etc/machine-id`, else the host name) and its network namespace, whose
/// ports it shares. Equal for nodes that share ports, whichever binary.
pub(super) fn identity() -> u64 {
    use sha2::Digest as _;
    let machine = std::fs::read_to_string("/etc/machine-id")
        .or_else(|_| std::fs::read_to_string("/proc/sys/kernel/hostname"))
        .unwrap_or_default();
    let netns = std::fs::read_link("/proc/self/ns/net")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let digest = sha2::Sha256::digest(format!("{}\n{netns}", machine.trim()));
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// Ports of `range` some program of this network namespace listens on
/// (TCP, IPv4 and IPv6), at most `PortRange::MAX_TAKEN`.
pub(super) fn ports_taken(range: PortRange) -> Vec<u16> {
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            ports.extend(listening(&text).filter(|p| range.contains(*p)));
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports.truncate(PortRange::MAX_TAKEN);
    ports
}

/// The local ports of a `/proc/net/tcp` table's sockets in LISTEN (`0A`).
fn listening(table: &str) -> impl Iterator<Item = u16> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1)?;
        let state = fields.nth(1)?;
        let port = local.rsplit_once(':')?.1;
        (state == "0A").then(|| u16::from_str_radix(port, 16).ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_ports_are_read_from_a_proc_table() {
        let table = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:4E20 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0100007F:4E21 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
   3: garbage
";
        assert_eq!(listening(table).collect::<Vec<_>>(), [20000, 8080]);
    }

    #[test]
    fn a_port_this_process_listens_on_is_taken() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let range = PortRange {
            first: port,
            last: port,
        };
        assert_eq!(ports_taken(range), [port]);
        drop(l);
        assert!(ports_taken(range).is_empty());
    }
}
