//! shoal's protocol cores, all sans-IO: each is a synchronous state machine
//! that takes inputs (including `now`) and returns outputs. Async shells and
//! the simulator drive them unchanged.

pub mod consensus;
pub mod gap_fetcher;
pub mod log_store;
pub mod node;
pub mod ordered_buffer;
pub mod output;
pub mod placement;
pub mod replicas;
pub mod requests;
pub mod sequencer;
pub mod snapshot_transfer;
pub mod wire;
pub mod worker;
