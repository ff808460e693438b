//! Bulk work (encoding and saving snapshots, reading ranges for peers)
//! runs on threads of its own, below the rest of the node in CPU priority:
//! their nice value is raised by `BULK_NICE`. Where cores are spare this
//! changes nothing; where they are not, the threads a commit waits on
//! (the event loop, the network, the log's fsyncs) run first, and the bulk
//! work takes what they leave.
//!
//! Measured in a join storm with the three members on one core: each
//! member encoding the same 1M-key snapshot at once (to serve the joiners,
//! and again at the periodic local snapshot) held that core for seconds,
//! and the writes of those seconds set the storm's p99.

use std::sync::{Arc, Mutex};
use tracing::{debug, error, warn};

/// How much lower bulk work runs than the node (nice values; a thread at
/// +10 gets about a tenth of a core that a thread at 0 also wants).
pub(super) const BULK_NICE: i32 = 10;

/// The highest nice value Linux has.
pub(super) const NICE_MAX: i32 = 19;

/// Runs `work` on a new thread named `name`, at `BULK_NICE` below the
/// thread that calls this. Where no thread can be made, on the runtime's
/// blocking pool at the node's priority, so that the work is never lost.
pub(super) fn spawn<F: FnOnce() + Send + 'static>(name: &str, work: F) {
    let work = Arc::new(Mutex::new(Some(work)));
    let ours = work.clone();
    let spawned = thread_below(name, caller_nice(), move || {
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

/// A long-lived thread named `name`, at `BULK_NICE` below the thread
/// that calls this: for work that nothing on a commit's path waits for
/// (the host meter, which reads `/proc`).
pub(super) fn background<F: FnOnce() + Send + 'static>(name: &str, body: F) -> std::io::Result<()> {
    thread_below(name, caller_nice(), body)
}

/// The calling thread's nice value.
fn caller_nice() -> i32 {
    rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(0)
}

/// A thread named `name` that runs `body` at `BULK_NICE` above `nice`.
fn thread_below<F: FnOnce() + Send + 'static>(
    name: &str,
    nice: i32,
    body: F,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            lower(nice + BULK_NICE);
            body()
        })
        .map(drop)
}

type Job = Box<dyn FnOnce() + Send>;

/// A few long-lived bulk threads, for work that comes often (range
/// reads): a thread made for each would cost more than some of the work.
/// Jobs wait in order for a free thread; the caller bounds how many.
#[derive(Clone, Debug)]
pub(super) struct Pool {
    queue: Option<std::sync::mpsc::Sender<Job>>,
}

impl Pool {
    /// `threads` threads named `name`, at `BULK_NICE` below the caller.
    /// Where no thread can be made, each job runs on the runtime's
    /// blocking pool at the node's priority.
    pub fn new(name: &str, threads: usize) -> Pool {
        let nice = caller_nice();
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut made = 0;
        for _ in 0..threads {
            let rx = rx.clone();
            // Ends once every sender is gone: the node stopped. A job that
            // panics is logged and does not take its thread with it.
            let spawned = thread_below(name, nice, move || {
                while let Ok(job) = next_job(&rx) {
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                        error!("a bulk job panicked");
                    }
                }
            });
            match spawned {
                Ok(()) => made += 1,
                Err(e) => warn!(error = %e, "a bulk thread could not be made"),
            }
        }
        Pool {
            queue: (made > 0).then_some(tx),
        }
    }

    /// Runs `work` on the first free thread. Must be called on the
    /// runtime (for a pool without threads).
    pub fn run<F: FnOnce() + Send + 'static>(&self, work: F) {
        let left = match &self.queue {
            Some(queue) => queue.send(Box::new(work)).err().map(|e| e.0),
            None => Some(Box::new(work) as Job),
        };
        // No thread (or every one gone): never lost.
        if let Some(work) = left {
            tokio::task::spawn_blocking(work);
        }
    }
}

fn next_job(rx: &Mutex<std::sync::mpsc::Receiver<Job>>) -> Result<Job, std::sync::mpsc::RecvError> {
    rx.lock().unwrap_or_else(|e| e.into_inner()).recv()
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

    #[test]
    fn a_pool_runs_its_jobs_below_the_caller_and_outlives_a_job_that_panics() {
        let before = nice_here();
        let pool = Pool::new("bulk-pool-test", 1);
        pool.run(|| panic!("a job that fails"));
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..3 {
            let tx = tx.clone();
            pool.run(move || {
                let _ = tx.send((i, nice_here()));
            });
        }
        let wait = std::time::Duration::from_secs(10);
        for i in 0..3 {
            let (job, nice) = rx
                .recv_timeout(wait)
                .expect("the one thread still runs jobs");
            assert_eq!(job, i, "in the order queued");
            assert_eq!(nice, (before + BULK_NICE).min(NICE_MAX));
        }
    }
}
