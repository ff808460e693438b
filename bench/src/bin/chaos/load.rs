//! The checker's load: clients that send increments and tasks through
//! random nodes, each retried under its key, and what became of them.

use super::cluster::Api;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Load {
    pub sent: AtomicU64,
    pub refused: Mutex<BTreeMap<String, u64>>,
    /// Per client: the values its acknowledged increments returned, and
    /// the ids whose fate is unknown (no answer before giving up).
    pub acked: Mutex<Vec<Vec<i64>>>,
    pub unknown: Mutex<Vec<u64>>,
    pub tasks: Mutex<Vec<String>>,
}

pub fn client(api: Api, hosts: usize, t: usize, load: Arc<Load>, stop: Arc<AtomicBool>, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed ^ t as u64);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let task = n.is_multiple_of(10);
        let key = format!("chaos-{t}-{n}");
        load.sent.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let mut done = false;
        // One command, retried under its key through random nodes.
        while started.elapsed() < Duration::from_secs(15) && !done {
            let host = rng.gen_range(1..=hosts);
            let (code, body) = if task {
                let spec = json!({"synthetic": {"chunks": 3, "interval_ms": 100, "exit_code": 0}});
                api.post(host, "/v1/tasks", &key, Some(spec))
            } else {
                api.post(host, &format!("/v1/kv/chaos-c{t}/incr"), &key, None)
            };
            match code {
                200 if task => {
                    load.tasks
                        .lock()
                        .unwrap()
                        .push(body["task"].as_str().unwrap_or_default().to_owned());
                    done = true;
                }
                200 => {
                    load.acked.lock().unwrap()[t].push(body["value"].as_i64().unwrap_or(-1));
                    done = true;
                }
                _ => {
                    let why = body["error"]["code"]
                        .as_str()
                        .unwrap_or("unreachable")
                        .to_owned();
                    *load.refused.lock().unwrap().entry(why).or_default() += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        if !done && !task {
            load.unknown.lock().unwrap()[t] += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
