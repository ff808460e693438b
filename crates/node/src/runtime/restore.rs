//! `shoal up --restore FILE`: a new cluster founded from a backup (`shoal
//! snapshot save`), for when every voter of the old one is lost. The file
//! is checked against its checksum; its State keeps its keys, locks,
//! tasks, deployments and command outcomes at their index, with this node
//! as the one voter of a new cluster id (`State::refounded`). The data
//! directory must be empty: a restore never overwrites a node's State.

use super::start::NodeError;
use crate::data_dir::DataDir;
use shoal_log::{encode_snapshot, DurableLog, SnapshotStore};
use shoal_model::{ClusterId, NodeId, State};
use std::path::Path;
use tracing::info;

/// What the data directory held when the node started.
pub(super) struct Found<'a> {
    pub cluster: Option<&'a ClusterId>,
    pub snapshot: bool,
    pub log_entries: u64,
}

/// Writes the refounded State into the data directory (a local snapshot,
/// the log set to continue after it, the cluster id) and returns it.
pub(super) fn restore(
    file: &Path,
    dir: &DataDir,
    store: &SnapshotStore,
    log: &mut DurableLog,
    found: Found<'_>,
    (node, addr, at_ms): (&NodeId, &str, u64),
) -> Result<(State, ClusterId), NodeError> {
    let refuse = |why: String| NodeError::Restore(format!("--restore {}: {why}", file.display()));
    if let Some(c) = found.cluster {
        return Err(refuse(format!(
            "{} already holds cluster {c}; a restore founds a new cluster in an empty data \
             directory (start without --restore to run this one as it is)",
            dir.root().display()
        )));
    }
    if found.snapshot || found.log_entries > 0 {
        return Err(refuse(format!(
            "{} already holds a log or snapshots; restore into an empty data directory",
            dir.root().display()
        )));
    }
    let old = shoal_log::read_snapshot_file(file).map_err(|e| refuse(e.to_string()))?;
    let index = old.index();
    let was = old.cluster_id().cloned();
    let cluster = ClusterId(format!("{:032x}", rand::random::<u128>()));
    let state = old.refounded(cluster.clone(), node, addr, at_ms);
    let (bytes, sha) = encode_snapshot(&state, super::snapshot_builder::LEVEL);
    let io = |what: &str, e: &dyn std::fmt::Display| refuse(format!("{what}: {e}"));
    store
        .save(index, &bytes, &sha)
        .map_err(|e| io("saving the snapshot", &e))?;
    log.reset(index.next())
        .map_err(|e| io("setting the log after it", &e))?;
    dir.set_cluster(&cluster)
        .map_err(|e| io("recording the cluster", &e))?;
    info!(from = %file.display(), index = %index, was = ?was.map(|c| c.to_string()),
        cluster = %cluster, keys = state.kv().len(), tasks = state.tasks().len(),
        deployments = state.deployments().len(), "restored: a new cluster from a backup");
    Ok((state, cluster))
}
