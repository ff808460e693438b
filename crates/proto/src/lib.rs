//! shoal's protocol cores: each is a synchronous state machine that takes
//! inputs (including `now`) and returns outputs. Async shells and the
//! simulator drive them unchanged: no sockets, no clock, no global RNG.
//!
//! `node` ties the parts together; each other module is one part, usable
//! and tested on its own. `PROTOCOL.md` beside this crate gives the
//! rationale and numbers the invariants the code cites.
//!
//! One effect happens inside the cores on purpose: durable writes. Raft
//! (`consensus`) and the follower's log (`node::apply`) write and fsync
//! through the `LogStore` the shell hands in, before the messages that
//! depend on those writes leave `handle`. Making writes outputs that the
//! shell performs and acknowledges (as openraft's `AppendInputEntries`)
//! would move that ordering rule into every shell and hold Raft's ready
//! state across the acknowledgement, for no gain while the shell would
//! perform them at once anyway. The store is injected, so determinism and
//! crash testing do not suffer: the simulator's `MemLog` loses unsynced
//! writes on a crash exactly as a disk would.

pub mod consensus;
pub mod gap_fetcher;
pub mod log_store;
pub mod node;
pub mod ordered_buffer;
pub mod pending;
pub mod placement;
pub mod reads;
pub mod replicas;
pub mod sequencer;
pub mod snapshot_transfer;
pub mod task_output;
#[cfg(test)]
mod testing;
pub mod wire;
pub mod worker;
