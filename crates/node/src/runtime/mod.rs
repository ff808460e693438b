//! The node's runtime around the sans-IO core: `start` wires the data
//! directory, the network actor and the core together and spawns the
//! `event_loop`; clients hold a `NodeHandle`.
//!
//! | file | what it does |
//! | --- | --- |
//! | `start` | opening the data directory, recovery, wiring |
//! | `handle` | the handle clients call, and the view they read |
//! | `events` | applied events read from the log's files for subscribers, off the loop |
//! | `event_loop` | the one task that owns the core: inputs in, outputs performed |
//! | `inbound` | network events into the core's inputs, sender checks |
//! | `address_book` | peer ids and addresses, parsed once, bounded |
//! | `ranges` | range replies and snapshot chunks read and encoded off the loop, bounded |
//! | `pacer` | bulk bytes served at most `--bulk-rate` a second |
//! | `snapshot_builder` | encoding snapshots off the loop |
//! | `bulk` | threads for bulk work, below the rest of the node in CPU priority |
//! | `host` | this host's free capacity |

mod address_book;
mod bulk;
mod event_loop;
mod events;
mod handle;
mod host;
mod inbound;
mod pacer;
mod ranges;
mod restore;
mod snapshot_builder;
mod start;
mod timings;

pub use handle::{Backup, CatchUpProgress, NodeHandle, View};
pub use start::{start, NodeError, NodeOptions};
pub use timings::{Timed, Timings};
