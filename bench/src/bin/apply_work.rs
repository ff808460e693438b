//! A fixed amount of apply and State building, for counting instructions
//! under callgrind (`valgrind --tool=callgrind`): the same count every run.

use shoal_bench::{envelopes, kv_state, set_entries};
use shoal_model::State;

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    match mode.as_str() {
        "apply" => {
            let entries = set_entries(1, 20_000);
            let mut s = State::new();
            for e in &entries {
                s.apply(&e.envelope().unwrap()).unwrap();
            }
            assert_eq!(s.kv().len(), 20_000);
        }
        "apply_decoded" => {
            let envs = envelopes(&set_entries(1, 20_000));
            let mut s = State::new();
            for e in &envs {
                s.apply(e).unwrap();
            }
            assert_eq!(s.kv().len(), 20_000);
        }
        "setup" => {
            let envs = envelopes(&set_entries(1, 20_000));
            assert_eq!(envs.len(), 20_000);
        }
        "build" => {
            let s = kv_state(100_000);
            assert_eq!(s.kv().len(), 100_000);
        }
        other => panic!("mode? {other}"),
    }
}
