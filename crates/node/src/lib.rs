//! shoal's node runtime: the data directory, the durable log and snapshot
//! store, the network actor, and the event loop that drives the node core.
//! The binary starts it with `start`, serves the API from the returned
//! `NodeHandle`, and stops it on a signal.

mod data_dir;
pub mod runner;
mod runtime;

pub use data_dir::{
    api_token, api_token_path, default_data_dir, read_api_token, DataDir, DataDirError,
};
pub use runtime::{
    start, Backup, CatchUpProgress, NodeError, NodeHandle, NodeOptions, Timed, Timings, View,
};
