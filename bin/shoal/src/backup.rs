//! `shoal snapshot save FILE`: a verified backup of State from a live node;
//! `shoal snapshot info FILE`: what a backup holds. `shoal up --restore
//! FILE` founds a new cluster from one.

use crate::client::Client;
use anyhow::{anyhow, Context, Result};
use clap::Subcommand;
use std::io::Write as _;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Save State from the node into FILE (written whole or not at all,
    /// checked before it is kept). Every write acknowledged before the
    /// command is in it.
    ///
    /// Example: shoal snapshot save /backup/shoal.snap
    Save {
        /// Where to write the snapshot.
        file: PathBuf,
    },
    /// Check FILE against its checksum and say what it holds.
    Info {
        /// A snapshot written by shoal snapshot save.
        file: PathBuf,
    },
}

pub fn run(c: &Client, op: SnapshotCmd) -> Result<i32> {
    match op {
        SnapshotCmd::Save { file } => save(c, &file),
        SnapshotCmd::Info { file } => {
            println!("{}", summary(&file)?);
            Ok(0)
        }
    }
}

fn save(c: &Client, file: &Path) -> Result<i32> {
    let mut resp = c.stream("/v1/snapshot")?;
    let name = file
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a file name", file.display()))?;
    let tmp = file.with_file_name(format!(".{}.partial", name.to_string_lossy()));
    let written = (|| -> Result<()> {
        let mut out = std::fs::File::create(&tmp)?;
        resp.copy_to(&mut out)
            .map_err(|e| anyhow!("receiving the snapshot: {e}"))?;
        out.flush()?;
        out.sync_all()?;
        Ok(())
    })();
    let checked = written.and_then(|()| summary(&tmp));
    match checked {
        Ok(said) => {
            std::fs::rename(&tmp, file).with_context(|| format!("writing {}", file.display()))?;
            println!("saved {}: {said}", file.display());
            Ok(0)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e.context(format!("nothing written to {}", file.display())))
        }
    }
}

/// What a snapshot file holds, once its checksum is checked.
fn summary(file: &Path) -> Result<String> {
    let state = shoal_log::read_snapshot_file(file)
        .map_err(|e| anyhow!("{}: not a valid snapshot: {e}", file.display()))?;
    let bytes = std::fs::metadata(file)?.len();
    Ok(format!(
        "index {}, state hash {}, cluster {}, {} keys, {} tasks, {} deployments, {} members, {bytes} bytes",
        state.index(),
        state.hash(),
        state
            .cluster_id()
            .map_or("(none)".to_owned(), |c| c.to_string()),
        state.kv().len(),
        state.tasks().len(),
        state.deployments().len(),
        state.nodes().len(),
    ))
}
