//! This host's free capacity, as placement sees it.

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
