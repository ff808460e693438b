//! `shoal lock NAME -- CMD`: run a command while holding a cluster lock.
//!
//! The lock is taken with a lease (`--ttl`) and renewed at a third of it.
//! The command sees `SHOAL_LOCK` and `SHOAL_FENCING_TOKEN`; it should pass
//! the token along (`shoal kv set --fence NAME:TOKEN …`) so that a write
//! made after the lock was lost is refused. If a renewal is refused, or
//! none succeeds before the lease would have run out, the command is
//! stopped (SIGTERM to its process group) and `shoal lock` exits non-zero.

use crate::client::{encode, ApiError, Body, Client};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use reqwest::Method;
use serde_json::json;
use shoal_api::ErrorCode;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct LockArgs {
    /// The lock's name (a key in the cluster's key-value space).
    pub name: String,
    /// The lease: the lock frees itself this long after the last renewal.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Give up if the lock is not free within this long (default: wait).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub wait: Option<Duration>,
    /// Who holds it, as shown to others (default: host and process id).
    #[arg(long)]
    pub holder: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub cmd: Vec<String>,
}

fn default_holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!("{host}:{}", std::process::id())
}

fn api_code(e: &anyhow::Error) -> Option<ErrorCode> {
    e.downcast_ref::<ApiError>().map(|a| a.code)
}

fn acquire(c: &Client, a: &LockArgs, holder: &str) -> Result<u64> {
    let path = format!("/v1/kv/{}/lock", encode(&a.name));
    let body = Body::Json(json!({"holder": holder, "ttl_ms": a.ttl.as_millis() as u64}));
    let start = Instant::now();
    let mut backoff = Duration::from_millis(100);
    let mut told = false;
    loop {
        match c.write(Method::POST, &path, body.clone(), None) {
            Ok(v) => {
                return v["token"]
                    .as_u64()
                    .ok_or_else(|| anyhow!("the node answered without a token: {v}"))
            }
            Err(e) if api_code(&e) == Some(ErrorCode::LockHeld) => {
                if a.wait.is_some_and(|w| start.elapsed() >= w) {
                    bail!("gave up waiting for lock {:?}: {e}", a.name);
                }
                if !told {
                    eprintln!("waiting for lock {:?} ({e})", a.name);
                    told = true;
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs the command under the lock; returns its exit status.
pub fn run(c: &Client, a: LockArgs) -> Result<i32> {
    let holder = a.holder.clone().unwrap_or_else(default_holder);
    let token = acquire(c, &a, &holder)?;
    let mut child = Command::new(&a.cmd[0])
        .args(&a.cmd[1..])
        .env("SHOAL_LOCK", &a.name)
        .env("SHOAL_FENCING_TOKEN", token.to_string())
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {:?}", a.cmd[0]))?;
    let group = Pid::from_raw(child.id() as i32);
    let done = Arc::new(AtomicBool::new(false));
    let lost = Arc::new(AtomicBool::new(false));
    let keeper = {
        let (done, lost) = (done.clone(), lost.clone());
        let path = format!("/v1/kv/{}/keepalive", encode(&a.name));
        let ttl = a.ttl;
        let name = a.name.clone();
        let c = c.clone();
        std::thread::spawn(move || {
            let mut renewed = Instant::now();
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(
                    (ttl / 3)
                        .min(Duration::from_millis(200))
                        .max(Duration::from_millis(10)),
                );
                if renewed.elapsed() < ttl / 3 {
                    continue;
                }
                let body = Body::Json(json!({ "token": token }));
                match c.write(Method::POST, &path, body, None) {
                    Ok(_) => renewed = Instant::now(),
                    Err(e) if api_code(&e) == Some(ErrorCode::StaleToken) => {
                        eprintln!("lost lock {name:?}: {e}; stopping the command");
                        lost.store(true, Ordering::Relaxed);
                    }
                    Err(e) if renewed.elapsed() >= ttl => {
                        eprintln!("could not renew lock {name:?} within its lease ({e}); stopping the command");
                        lost.store(true, Ordering::Relaxed);
                    }
                    Err(_) => {}
                }
                if lost.load(Ordering::Relaxed) {
                    let _ = killpg(group, Signal::SIGTERM);
                    return;
                }
            }
        })
    };
    let status = child.wait().context("waiting for the command")?;
    done.store(true, Ordering::Relaxed);
    let _ = keeper.join();
    if lost.load(Ordering::Relaxed) {
        bail!("the lock {:?} was lost while the command ran", a.name);
    }
    let unlock = format!("/v1/kv/{}/unlock", encode(&a.name));
    if let Err(e) = c.write(
        Method::POST,
        &unlock,
        Body::Json(json!({ "token": token })),
        None,
    ) {
        eprintln!(
            "could not release lock {:?} ({e}); it frees itself after its lease",
            a.name
        );
    }
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}
