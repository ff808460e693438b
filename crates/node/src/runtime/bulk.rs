//! Bulk work (encoding and saving snapshots) runs on a thread of its own,
//! below the rest of the node in CPU priority: its nice value is raised by
//! `BULK_NICE`. Where cores are spare this changes nothing; where they are
//! not, the threads a commit waits on (the event loop, the network, the
//! log's fsyncs) run first, and the bulk work takes what they leave.
//!
//! Measured in a join storm with the three members on one core: each
//! member encoding the same 1M-key snapshot at once (to serve the joiners,
//! and again at the periodic local snapshot) held that core for seconds,
//! and the writes of those seconds set the storm's p99.

use std::sync::{Arc, Mutex};
use tracing::{debug, warn};

/// How much lower bulk work runs than the node (nice values; a thread at
/// +10 gets about a tenth of a core that a thread at 0 also wants).
pub(super) const BULK_NICE: i32 = 10;

/// The highest nice value Linux has.
const NICE_MAX: i32 = 19;

/// Runs `work` on a new thread named `name`, at `BULK_NICE` below the
/// thread that calls this. Where no thread can be made, on the runtime's
/// blocking pool at the node's priority, so that the work is never lost.
pub(super) fn spawn<F: FnOnce() + Send + 'static>(name: &str, work: F) {
    let nice = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(0);
    let work = Arc::new(Mutex::new(Some(work)));
    let ours = work.clone();
    let spawned = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            lower(nice + BULK_NICE);
            if let Some(work) = take(&ours) {
                work()
            }
        });
    if let Err(e) = spawned {
        warn!(error = %e, "no thread of its own for bulk work: it runs at the node's priority");
        if let Some(work) = take(&work) {
            tokio::task::spawn_blocking(work);
        }
    }
}

fn take<F>(work: &Mutex<Option<F>>) -> Option<F> {
    work.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Sets this thread's nice value. Raising it needs no privilege; a
/// failure leaves the thread as it was and costs only the priority.
fn lower(nice: i32) {
    // On Linux a thread id names the thread alone, not its process.
    let me = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(me), nice.min(NICE_MAX)) {
        debug!(error = %e, "bulk work runs at the node's priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice_here() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
    }

    #[test]
    fn bulk_work_runs_below_the_thread_that_started_it_and_leaves_it_as_it_was() {
        let before = nice_here();
        let (tx, rx) = std::sync::mpsc::channel();
        spawn("bulk-test", move || {
            let _ = tx.send(nice_here());
        });
        let bulk = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(bulk, (before + BULK_NICE).min(NICE_MAX));
        assert!(bulk > before || before == NICE_MAX);
        assert_eq!(nice_here(), before, "the caller's priority is unchanged");
    }
}
