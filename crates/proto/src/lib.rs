//! shoal's protocol cores, all sans-IO: each is a synchronous state machine
//! that takes inputs (including `now`) and returns outputs. Async shells and
//! the simulator drive them unchanged.

pub mod gap_fetcher;
pub mod ordered_buffer;
pub mod snapshot_transfer;
pub mod wire;
