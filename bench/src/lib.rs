//! Data sets shared by shoal's benchmarks.

pub mod batch;
pub mod etcd;
pub mod load;
pub mod nodes;
pub mod plot;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use shoal_model::{
    encode_event, Command, CommandId, EntryKind, Envelope, Event, EventIdx, Key, KvEntry, KvValue,
    LogEntry, Meta, Op, State, StateBuilder, Term,
};

/// A 100-byte value that compresses about 2x: 50 random bytes in hex.
pub fn value(rng: &mut SmallRng) -> String {
    let mut s = String::with_capacity(100);
    for _ in 0..50 {
        let b: u8 = rng.gen();
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The `q` quantile of `xs` (None when empty).
pub fn quantile(xs: &mut [f64], q: f64) -> Option<f64> {
    xs.sort_by(f64::total_cmp);
    let i = ((xs.len() as f64 * q).ceil() as usize).clamp(1, xs.len().max(1)) - 1;
    xs.get(i).copied()
}

pub fn key(i: u64) -> String {
    format!("key-{i:010}")
}

/// A State holding `n` distinct keys with 100-byte values, built directly.
pub fn kv_state(n: u64) -> State {
    let mut rng = SmallRng::seed_from_u64(1);
    let mut b = StateBuilder::new(EventIdx(n), Term(1), Meta::default());
    let batch: Vec<(Key, KvEntry)> = (0..n)
        .map(|i| {
            (
                Key::from(key(i)),
                KvEntry {
                    value: KvValue::Str(value(&mut rng)),
                    version: EventIdx(i + 1),
                    ttl_ms: None,
                },
            )
        })
        .collect();
    b.kv(batch).expect("keys in order");
    b.finish().expect("keys in order")
}

/// The State a cluster holds after `n` single `kv set` writes through the
/// API: `n` keys and `n` command outcomes (all within the retry window).
pub fn cluster_state(n: u64) -> State {
    let mut state = State::new();
    for e in &cluster_writes(n) {
        state.apply(e).expect("consecutive entries");
    }
    state
}

/// The decoded events behind `cluster_state(n)`.
pub fn cluster_writes(n: u64) -> Vec<Envelope> {
    set_commands(1, Term(1), 1_700_000_000_000, 0..n)
        .map(|e| e.envelope().expect("valid entries"))
        .collect()
}

/// `n` committed set commands, as log entries from index `from`.
pub fn set_entries(from: u64, n: u64) -> Vec<LogEntry> {
    set_commands(from, Term(1), 0, 0..n).collect()
}

/// Set commands for keys `keys` (one fresh command id each, stamped
/// `at_ms`), as log entries of `term` from index `from`: what that many
/// single writes through the API leave in the log.
pub fn set_commands(
    from: u64,
    term: Term,
    at_ms: u64,
    keys: std::ops::Range<u64>,
) -> impl Iterator<Item = LogEntry> {
    let first = keys.start;
    // Seeded by the first key, so the values of consecutive calls differ.
    let mut rng = SmallRng::seed_from_u64(2 ^ first);
    keys.map(move |i| {
        let idx = from + (i - first);
        let event = Event::Command {
            cmd: Command {
                // Like the API's (128 random bits in hex), and unique per
                // index however the calls are split.
                id: command_id(idx),
                op: Op::KvSet {
                    key: key(i),
                    value: value(&mut rng),
                },
            },
            at_ms,
        };
        LogEntry {
            idx: EventIdx(idx),
            term,
            kind: EntryKind::Normal,
            data: encode_event(&event),
            context: vec![],
        }
    })
}

pub fn envelopes(entries: &[LogEntry]) -> Vec<Envelope> {
    entries
        .iter()
        .map(|e| e.envelope().expect("valid entries"))
        .collect()
}

/// A command id that looks random and is unique for each `idx`:
/// splitmix64's finaliser is a bijection on u64.
fn command_id(idx: u64) -> CommandId {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    CommandId(format!("{:016x}{:016x}", mix(idx), mix(!idx)))
}

/// A figure runner's arguments: `N` (how many keys or events) and a mode.
pub fn args(n: u64, mode: &str) -> Result<(u64, String), std::num::ParseIntError> {
    let mut it = std::env::args().skip(1);
    let n = it.next().map(|s| s.parse()).transpose()?.unwrap_or(n);
    Ok((n, it.next().unwrap_or_else(|| mode.to_owned())))
}

/// A fresh directory for a bench's nodes, removed when the guard it
/// returns is dropped; kept (and said where on stderr) when the
/// environment variable `keep` is set, to read the nodes' logs after.
pub fn scratch(keep: &str) -> std::io::Result<(std::path::PathBuf, Option<tempfile::TempDir>)> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().to_owned();
    if std::env::var_os(keep).is_some() {
        eprintln!("logs kept in {}", tmp.keep().display());
        return Ok((root, None));
    }
    Ok((root, Some(tmp)))
}

/// A figure runner's setting from the environment: `None` when unset, an
/// error naming it when it does not parse.
pub fn env<T: std::str::FromStr>(name: &str) -> anyhow::Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{name}={v}: {e}")),
        Err(_) => Ok(None),
    }
}

/// Processes the figure runners start and watch: each is killed (by its
/// PID) when its guard drops.
pub mod procs {
    use anyhow::Context;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// A child process, killed and reaped on drop.
    #[derive(Debug)]
    pub struct Guard(pub Child);

    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    impl Guard {
        pub fn pid(&self) -> u32 {
            self.0.id()
        }
    }

    /// Starts `cmd` with its output in `log` (and `log` with the
    /// extension `err`), guarded.
    pub fn spawn(cmd: &mut Command, log: &Path) -> anyhow::Result<Guard> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log)?)
            .stderr(Stdio::from(std::fs::File::create(
                log.with_extension("err"),
            )?))
            .spawn()
            .with_context(|| {
                format!("{:?} (bench/peers/setup.sh installs it)", cmd.get_program())
            })?;
        Ok(Guard(child))
    }

    pub use shoal_testkit::ports::free_port;

    /// Polls `f` every 5 ms until it holds or `limit` passes.
    pub fn wait(limit: Duration, f: impl FnMut() -> bool) -> bool {
        wait_every(limit, Duration::from_millis(5), f)
    }

    /// Polls `f` every `every` until it holds or `limit` passes: a poll
    /// of many processes that should not keep the machine busy itself.
    pub fn wait_every(limit: Duration, every: Duration, mut f: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if f() {
                return true;
            }
            std::thread::sleep(every);
        }
        false
    }

    /// How long after `since` `f` first held, polling as `wait` does; None
    /// if it did not within `limit`.
    pub fn time_until(
        since: Instant,
        limit: Duration,
        mut f: impl FnMut() -> bool,
    ) -> Option<Duration> {
        let mut at = None;
        wait(limit, || {
            let held = f();
            if held {
                at = Some(since.elapsed());
            }
            held
        });
        at
    }

    /// A process's peak resident set (VmHWM), in KiB.
    pub fn peak_rss_kib(pid: u32) -> Option<u64> {
        status_kib(pid, "VmHWM:")
    }

    /// A process's resident set now (VmRSS), in KiB.
    pub fn rss_kib(pid: u32) -> Option<u64> {
        status_kib(pid, "VmRSS:")
    }

    fn status_kib(pid: u32, field: &str) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
    }
}
