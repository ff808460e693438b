//! This host as placement sees it: free capacity, its identity, and the
//! replica ports in use on it.

use shoal_model::PortRange;
use shoal_proto::node::HostMeasure;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Ports in use are read at most this often. Reading them walks the
/// host's whole TCP table (`/proc/net/tcp`: tens of milliseconds of
/// kernel time on a host with thousands of sockets); they change seldom,
/// and one taken since the last reading is missed as one taken between a
/// reading and a placement always was.
const PORTS_EVERY: Duration = Duration::from_secs(5);

/// Measures this host (through `sysinfo`): CPU not in use since the last
/// measurement (the node measures every second), memory available, and
/// space free on the disk of the data directory. Zeros for what the
/// platform does not tell.
pub(super) struct Meter {
    system: Option<sysinfo::System>,
    disks: Option<sysinfo::Disks>,
    data_dir: PathBuf,
    /// The ports last read, when, and of which range.
    ports: Option<(Instant, PortRange, Vec<u16>)>,
}

/// The meter on a thread of its own, below the node in CPU priority
/// (`bulk::background`): a measurement reads `/proc` and `statfs`, which
/// the event loop must not wait for. Results come back on the channel
/// given to `spawn`.
pub(super) struct MeterThread {
    ask: SyncSender<PortRange>,
}

impl MeterThread {
    /// Starts the thread. Without one (the host refused it) every `ask`
    /// fails and the node reports zeros, as where nothing can be measured.
    pub(super) fn spawn(data_dir: PathBuf, done: mpsc::Sender<HostMeasure>) -> Self {
        // One request waits at most: asked again before it was taken, the
        // node has a measurement coming already.
        let (ask, asked) = sync_channel::<PortRange>(1);
        // Below the node in CPU priority, as bulk work: on a host with
        // many sockets one reading of the ports is milliseconds of kernel
        // time, which the event loop should not queue behind.
        let started = super::bulk::background("host-meter", move || {
            let mut meter = Meter::new(data_dir);
            while let Ok(range) = asked.recv() {
                if done.blocking_send(meter.measure(range)).is_err() {
                    return;
                }
            }
        });
        if let Err(e) = started {
            tracing::warn!(error = %e, "cannot start the host meter: capacity reported as zeros");
        }
        MeterThread { ask }
    }

    /// Asks for a measurement; false if one is still under way.
    pub(super) fn ask(&self, range: PortRange) -> bool {
        self.ask.try_send(range).is_ok()
    }
}

impl Meter {
    pub(super) fn new(data_dir: PathBuf) -> Self {
        let mut system = sysinfo::System::new().ok();
        if let Some(s) = system.as_mut() {
            s.refresh_cpu_usage();
        }
        Meter {
            system,
            disks: sysinfo::Disks::new_with_refreshed_list().ok(),
            data_dir: data_dir.canonicalize().unwrap_or(data_dir),
            ports: None,
        }
    }

    /// This host now, with the ports of `range` in use.
    pub(super) fn measure(&mut self, range: PortRange) -> HostMeasure {
        let (cpu_free_milli, mem_free_bytes) = match self.system.as_mut() {
            Some(s) => {
                s.refresh_cpu_usage();
                s.refresh_memory();
                let cores = s.cpus().len().max(1) as f64;
                let busy = f64::from(s.global_cpu_usage()).clamp(0.0, 100.0) / 100.0;
                ((cores * (1.0 - busy) * 1000.0) as u32, s.available_memory())
            }
            None => (0, 0),
        };
        HostMeasure {
            cpu_free_milli,
            mem_free_bytes,
            disk_free_bytes: self.disk_free(),
            ports_taken: self.ports_taken(range),
        }
    }

    /// The ports of `range` in use, read again once `PORTS_EVERY` passed.
    fn ports_taken(&mut self, range: PortRange) -> Vec<u16> {
        let now = Instant::now();
        match &self.ports {
            Some((at, r, ports)) if *r == range && now.duration_since(*at) < PORTS_EVERY => {
                ports.clone()
            }
            _ => {
                let ports = ports_taken(range);
                self.ports = Some((now, range, ports.clone()));
                ports
            }
        }
    }

    /// Space free on the disk mounted deepest above the data directory.
    fn disk_free(&mut self) -> u64 {
        let Some(disks) = self.disks.as_mut() else {
            return 0;
        };
        disks.refresh(true);
        disks
            .iter()
            .filter(|d| self.data_dir.starts_with(d.mount_point()))
            .max_by_key(|d| d.mount_point().as_os_str().len())
            .map_or(0, |d| d.available_space())
    }
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
    use super::super::bulk;
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

    #[test]
    fn ports_are_kept_a_while_for_one_range_and_read_again_for_another() {
        let dir = tempfile::tempdir().unwrap();
        let mut meter = Meter::new(dir.path().to_owned());
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let one = PortRange {
            first: port,
            last: port,
        };
        assert_eq!(meter.measure(one).ports_taken, [port]);
        drop(l);
        assert_eq!(
            meter.measure(one).ports_taken,
            [port],
            "kept for PORTS_EVERY"
        );
        let other = PortRange {
            first: port.saturating_sub(1),
            last: port,
        };
        assert!(!meter.measure(other).ports_taken.contains(&port));
    }

    #[test]
    fn the_meter_thread_answers_on_its_channel_and_ends_with_its_handle() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let meter = MeterThread::spawn(dir.path().to_owned(), tx);
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(meter.ask(PortRange {
            first: port,
            last: port
        }));
        let m = rx.blocking_recv().expect("a measurement");
        assert_eq!(m.ports_taken, [port]);
        assert!(m.mem_free_bytes > 0, "{m:?}");
        // It runs below the node, as bulk work does.
        let here = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        let below = (here + bulk::BULK_NICE).min(bulk::NICE_MAX);
        let meters = meter_nices();
        assert!(!meters.is_empty(), "a thread named host-meter");
        assert!(
            meters.iter().all(|n| *n == below),
            "{meters:?}, not {below}"
        );
        drop(meter);
        assert!(rx.blocking_recv().is_none(), "the thread is gone");
    }

    #[test]
    fn the_meter_measures_cpu_memory_and_the_data_directorys_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut meter = Meter::new(dir.path().to_owned());
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        let m = meter.measure(PortRange::DEFAULT);
        let cores = std::thread::available_parallelism().unwrap().get() as u32;
        assert!(m.cpu_free_milli <= cores * 1000, "{m:?}");
        assert!(m.mem_free_bytes > 0, "{m:?}");
        assert!(m.disk_free_bytes > 0, "{m:?}");
    }

    /// The nice value of each of this process's threads named host-meter
    /// (`/proc/self/task/*/stat`: the 19th field, the 17th after the name).
    fn meter_nices() -> Vec<i32> {
        let mut nices = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            let Some((name, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(") "))
            else {
                continue;
            };
            if name == "host-meter" {
                nices.extend(rest.split(' ').nth(16).and_then(|n| n.parse::<i32>().ok()));
            }
        }
        nices
    }
}
