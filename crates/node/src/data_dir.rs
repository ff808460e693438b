//! The data directory: identity key, cluster id, lock, log and snapshots.
//!
//! ```text
//! DIR/lock           held (flock) while a process runs on this directory
//! DIR/identity.key   the node's ed25519 key pair (protobuf), mode 0600
//! DIR/cluster        the cluster id, once joined or founded
//! DIR/api-token      the token API writes must carry, mode 0600
//! DIR/log/           durable log segments
//! DIR/snapshots/     local State snapshots
//! ```

use fs2::FileExt;
use shoal_model::ClusterId;
use shoal_net::identity::Keypair;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("another shoal process is running on {0} (its lock is held); give each node its own --data-dir")]
    Locked(PathBuf),
    #[error("{path} does not hold a valid key pair: {reason}")]
    BadIdentity { path: PathBuf, reason: String },
    #[error("{path} does not hold a valid cluster id")]
    BadCluster { path: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The default data directory: `$XDG_DATA_HOME/shoal` (or the platform's
/// equivalent), falling back to `./shoal-data`.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .map(|d| d.join("shoal"))
        .unwrap_or_else(|| PathBuf::from("shoal-data"))
}

/// An opened, locked data directory.
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
    _lock: File,
}

impl DataDir {
    pub fn open(root: &Path) -> Result<DataDir, DataDirError> {
        fs::create_dir_all(root).map_err(io_err(root))?;
        let lock_path = root.join("lock");
        let mut lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        if lock.try_lock_exclusive().is_err() {
            return Err(DataDirError::Locked(root.to_owned()));
        }
        lock.set_len(0).map_err(io_err(&lock_path))?;
        writeln!(lock, "{}", std::process::id()).map_err(io_err(&lock_path))?;
        Ok(DataDir {
            root: root.to_owned(),
            _lock: lock,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn log_dir(&self) -> PathBuf {
        self.root.join("log")
    }

    pub fn snapshot_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// The node's key pair, created on first start.
    pub fn identity(&self) -> Result<Keypair, DataDirError> {
        let path = self.root.join("identity.key");
        if path.exists() {
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(io_err(&path))?;
            return Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
                DataDirError::BadIdentity {
                    path,
                    reason: e.to_string(),
                }
            });
        }
        let kp = Keypair::generate_ed25519();
        let bytes = kp
            .to_protobuf_encoding()
            .map_err(|e| DataDirError::BadIdentity {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        write_private(&path, &bytes)?;
        Ok(kp)
    }

    pub fn cluster(&self) -> Result<Option<ClusterId>, DataDirError> {
        let path = self.root.join("cluster");
        match fs::read_to_string(&path) {
            Ok(s) => ClusterId::parse(s.trim())
                .map(Some)
                .map_err(|_| DataDirError::BadCluster { path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    pub fn set_cluster(&self, id: &ClusterId) -> Result<(), DataDirError> {
        let path = self.root.join("cluster");
        let tmp = self.root.join("cluster.tmp");
        fs::write(&tmp, format!("{id}\n")).map_err(io_err(&tmp))?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))
    }

    /// Forgets the cluster id (a lone cluster given up for another).
    pub fn forget_cluster(&self) -> Result<(), DataDirError> {
        let path = self.root.join("cluster");
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&path)(e)),
            _ => {}
        }
        File::open(&self.root)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.root))
    }
}

/// The file holding a data directory's API token.
pub fn api_token_path(root: &Path) -> PathBuf {
    root.join("api-token")
}

/// The API token kept in `root`, if there is one.
pub fn read_api_token(root: &Path) -> Option<String> {
    let t = fs::read_to_string(api_token_path(root)).ok()?;
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// The data directory's API token, generated on first use; the flag says
/// whether it was generated now (so it is shown once).
pub fn api_token(root: &Path) -> Result<(String, bool), DataDirError> {
    if let Some(t) = read_api_token(root) {
        return Ok((t, false));
    }
    let bytes: [u8; 24] = rand::random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&api_token_path(root), format!("{token}\n").as_bytes())?;
    Ok((token, true))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_cluster_persist_and_the_lock_refuses_a_second_process() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let d = DataDir::open(dir.path()).unwrap();
            assert!(matches!(
                DataDir::open(dir.path()),
                Err(DataDirError::Locked(_))
            ));
            assert_eq!(d.cluster().unwrap(), None);
            d.set_cluster(&ClusterId::from("abc")).unwrap();
            d.identity().unwrap().public().to_peer_id()
        };
        let d = DataDir::open(dir.path()).unwrap();
        assert_eq!(
            d.identity().unwrap().public().to_peer_id(),
            id,
            "same identity after a restart"
        );
        assert_eq!(d.cluster().unwrap(), Some(ClusterId::from("abc")));
        let (token, new) = api_token(dir.path()).unwrap();
        assert!(new && token.len() == 48);
        assert_eq!(api_token(dir.path()).unwrap(), (token.clone(), false));
        assert_eq!(read_api_token(dir.path()), Some(token));
        d.forget_cluster().unwrap();
        assert_eq!(d.cluster().unwrap(), None);
        d.forget_cluster().unwrap();
    }
}
