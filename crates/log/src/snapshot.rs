//! The State snapshot codec.
//!
//! Layout (format version 6):
//!
//! ```text
//! "SHOALSNP" | version: u16 LE | header_len: u32 LE | header (postcard)
//! zstd stream of frames: [len: u32 LE][postcard Batch] ... [End]
//! ```
//!
//! The header says how many bytes the zstd stream decompresses to; a
//! decoder never decompresses more (a zstd bomb stops at the first byte
//! past it). Version 1, without that length, is still read (snapshots a
//! node saved before), capped at `MAX_BODY`. Versions 1 and 2 carry
//! command outcomes keyed by command id rather than by its digest; they are
//! converted as they are read, and their state hash is checked as their
//! writer computed it. Versions 3 and older carry no request digest with an
//! outcome (`OutcomeRecord::request`); theirs are read as unknown.
//! Versions 4 and older carry no drain mark with a node; theirs are read
//! as not drained (which hashes as before, see `NodeInfo`). Versions 5
//! and older carry no last exit with a replica; theirs are read as none
//! (which hashes as before, see `ReplicaPlacement`). The older layouts are
//! in `snapshot_legacy`.
//!
//! Batches are sorted runs of one collection's entries, so the receiver
//! rebuilds each map from ordered inserts while the bytes are still
//! arriving. The SHA-256 of the whole byte string travels beside it (in the
//! transfer offer, or in the file's trailer on disk) and is checked at the
//! end, together with the state hash the header promises.

use crate::snapshot_legacy::{DeploymentV5, HeaderV1, NodeInfoV4, OutcomeRecordV3};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shoal_model::{
    BuildError, ClusterId, CommandDigest, CommandId, Deployment, EventIdx, Key, KvEntry, Meta,
    NodeId, NodeInfo, OutcomeRecord, State, StateBuilder, StateHash, Task, TaskId, Term,
};
use std::io::Write;
use std::sync::mpsc;

const MAGIC: &[u8; 8] = b"SHOALSNP";
pub const SNAPSHOT_FORMAT_VERSION: u16 = 6;
/// Entries per batch at most: big enough to amortise framing, small enough
/// that a batch is a modest allocation on both sides.
const BATCH_ENTRIES: usize = 4096;
/// A batch is cut once its entries come to about this many bytes.
const BATCH_BYTES: usize = 4 << 20;
/// The largest frame: one batch of a single entry can be a set or list of
/// 4096 values of 64 KiB.
const MAX_FRAME_LEN: usize = 320 << 20;
const MAX_HEADER_LEN: usize = 64 << 10;
/// Batches parsed and not yet built, at most: a builder that falls behind
/// holds back the parser rather than let decoded batches pile up.
const BUILD_QUEUE: usize = 32;
/// The most a snapshot body may decompress to, whatever its header says:
/// far beyond any State that fits a host's memory.
pub const MAX_BODY: u64 = 64 << 30;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub index: EventIdx,
    pub term: Term,
    pub state_hash: StateHash,
    pub cluster_id: Option<ClusterId>,
    /// Entries in all collections, for progress reports.
    pub entries: u64,
    /// Bytes the zstd stream decompresses to.
    pub body_len: u64,
}

#[derive(Serialize, Deserialize)]
enum Batch {
    Meta(Meta),
    /// Members without their drain mark: formats 1 to 4.
    NodesV4(Vec<(NodeId, NodeInfoV4)>),
    Kv(Vec<(Key, KvEntry)>),
    Tasks(Vec<(TaskId, Task)>),
    /// Deployments without their replicas' last exits: formats 1 to 5.
    DeploymentsV5(Vec<(String, DeploymentV5)>),
    /// Outcomes keyed by command id: formats 1 and 2.
    OutcomesById(Vec<(CommandId, OutcomeRecordV3)>),
    End,
    /// Outcomes keyed by their command's digest (format 3).
    OutcomesV3(Vec<(CommandDigest, OutcomeRecordV3)>),
    /// Outcomes keyed by their command's digest, with their request's
    /// digest (format 4).
    Outcomes(Vec<(CommandDigest, OutcomeRecord)>),
    /// Members with their drain mark (format 5).
    Nodes(Vec<(NodeId, NodeInfo)>),
    /// Deployments with their replicas' last exits (format 6).
    Deployments(Vec<(String, Deployment)>),
}

impl Batch {
    /// State entries this batch carries, for progress reports.
    fn entries(&self) -> usize {
        match self {
            Batch::Meta(_) | Batch::End => 0,
            Batch::Nodes(v) => v.len(),
            Batch::NodesV4(v) => v.len(),
            Batch::Kv(v) => v.len(),
            Batch::Tasks(v) => v.len(),
            Batch::Deployments(v) => v.len(),
            Batch::DeploymentsV5(v) => v.len(),
            Batch::OutcomesById(v) => v.len(),
            Batch::OutcomesV3(v) => v.len(),
            Batch::Outcomes(v) => v.len(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a shoal snapshot")]
    BadMagic,
    #[error("snapshot format version {found} is not readable by this node (reads {supported})")]
    Version { found: u16, supported: u16 },
    #[error("snapshot is corrupt: {0}")]
    Corrupt(String),
    #[error("snapshot checksum mismatch")]
    Checksum,
    #[error("snapshot ended early")]
    Truncated,
    #[error("snapshot state hash {found} differs from its header's {expected}")]
    StateHash {
        expected: StateHash,
        found: StateHash,
    },
    #[error("snapshot body decompresses past the {0} bytes its header declares")]
    TooLarge(u64),
    #[error("cannot read the snapshot: {0}")]
    Io(#[from] std::io::Error),
}

fn corrupt(e: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Corrupt(e.to_string())
}

struct FrameWriter<W: Write> {
    out: W,
    scratch: Vec<u8>,
    /// Bytes written so far (before compression).
    written: u64,
}

impl<W: Write> FrameWriter<W> {
    fn frame(&mut self, batch: &Batch) -> std::io::Result<()> {
        self.scratch.clear();
        self.scratch.extend_from_slice(&[0; 4]);
        let body = postcard::to_extend(batch, std::mem::take(&mut self.scratch))
            .expect("batches serialize into a Vec");
        self.scratch = body;
        let len = (self.scratch.len() - 4) as u32;
        self.scratch[..4].copy_from_slice(&len.to_le_bytes());
        self.written += self.scratch.len() as u64;
        self.out.write_all(&self.scratch)
    }

    /// Sorted batches of one map, each at most `BATCH_ENTRIES` entries and
    /// about `BATCH_BYTES` (by `size`, an estimate of an entry's bytes).
    fn batches<K: Ord + Clone, V: Clone>(
        &mut self,
        map: &shoal_model::TreeMap<K, V>,
        wrap: fn(Vec<(K, V)>) -> Batch,
        size: fn(&K, &V) -> usize,
    ) -> std::io::Result<()> {
        let mut batch = Vec::with_capacity(BATCH_ENTRIES.min(map.len()));
        let mut bytes = 0;
        for (k, v) in map {
            bytes += size(k, v);
            batch.push((k.clone(), v.clone()));
            if batch.len() == BATCH_ENTRIES || bytes >= BATCH_BYTES {
                self.frame(&wrap(std::mem::take(&mut batch)))?;
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            self.frame(&wrap(batch))?;
        }
        Ok(())
    }
}

/// About how many bytes a key-value entry takes encoded.
fn kv_size(key: &Key, e: &KvEntry) -> usize {
    use shoal_model::KvValue;
    let value = match &e.value {
        KvValue::Str(s) => s.len(),
        KvValue::Int(_) | KvValue::Lock { .. } => 16,
        KvValue::Set(m) => m.iter().map(|x| x.len() + 2).sum(),
        KvValue::List(l) => l.iter().map(|x| x.len() + 2).sum(),
    };
    key.len() + value + 24
}

/// Small entries: nodes, tasks, deployments, outcomes.
fn small<K, V>(_: &K, _: &V) -> usize {
    256
}

/// Encodes State into a snapshot and returns the bytes with their SHA-256.
/// Meant to run on a clone of State (O(1) to take) off the event loop.
pub fn encode_snapshot(state: &State, zstd_level: i32) -> (Vec<u8>, [u8; 32]) {
    let body = Vec::with_capacity(1024 + state.kv().len() * 64);
    let encoder = zstd::stream::write::Encoder::new(body, zstd_level).expect("zstd encoder");
    let mut w = FrameWriter {
        out: encoder,
        scratch: Vec::new(),
        written: 0,
    };
    // Writing into memory cannot fail.
    let write = |w: &mut FrameWriter<_>| -> std::io::Result<()> {
        w.frame(&Batch::Meta(state.meta().clone()))?;
        w.batches(state.nodes(), Batch::Nodes, small)?;
        w.batches(state.kv(), Batch::Kv, kv_size)?;
        w.batches(state.tasks(), Batch::Tasks, small)?;
        w.batches(state.deployments(), Batch::Deployments, small)?;
        w.batches(state.outcomes(), Batch::Outcomes, small)?;
        w.frame(&Batch::End)
    };
    write(&mut w).expect("encoding into memory");
    let body_len = w.written;
    let body = w.out.finish().expect("zstd finish into memory");
    let header = SnapshotHeader {
        index: state.index(),
        term: state.term(),
        state_hash: state.hash(),
        cluster_id: state.cluster_id().cloned(),
        entries: (state.nodes().len()
            + state.kv().len()
            + state.tasks().len()
            + state.deployments().len()
            + state.outcomes().len()) as u64,
        body_len,
    };
    let head = postcard::to_allocvec(&header).expect("headers serialize into a Vec");
    let mut out = Vec::with_capacity(14 + head.len() + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(head.len() as u32).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&body);
    let sha: [u8; 32] = Sha256::digest(&out).into();
    (out, sha)
}

enum Phase {
    Header,
    Body,
    Done,
}

/// Builds State from decoded batches on a thread of its own, so that the
/// maps are built (and hashed) while the next bytes are decompressed and
/// parsed: about half a decode's work, off the caller's thread.
struct BuildThread {
    tx: mpsc::SyncSender<Batch>,
    handle: std::thread::JoinHandle<Result<(State, StateHash), BuildError>>,
}

impl BuildThread {
    fn start(index: EventIdx, term: Term) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Batch>(BUILD_QUEUE);
        let handle = std::thread::Builder::new()
            .name("snapshot-build".into())
            .spawn(move || {
                let mut b = StateBuilder::new(index, term, Meta::default());
                for batch in rx {
                    match batch {
                        Batch::Meta(m) => b.meta(m),
                        Batch::Nodes(v) => b.nodes(v)?,
                        Batch::NodesV4(v) => {
                            b.nodes(v.into_iter().map(NodeInfoV4::upgrade).collect())?
                        }
                        Batch::Kv(v) => b.kv(v)?,
                        Batch::Tasks(v) => b.tasks(v)?,
                        Batch::Deployments(v) => b.deployments(v)?,
                        Batch::DeploymentsV5(v) => {
                            b.deployments(v.into_iter().map(DeploymentV5::upgrade).collect())?
                        }
                        Batch::OutcomesById(v) => {
                            b.outcomes_by_id(v.into_iter().map(OutcomeRecordV3::upgrade).collect())?
                        }
                        Batch::OutcomesV3(v) => {
                            b.outcomes(v.into_iter().map(OutcomeRecordV3::upgrade).collect())?
                        }
                        Batch::Outcomes(v) => b.outcomes(v)?,
                        Batch::End => break,
                    }
                }
                b.finish_with_written_hash()
            })
            .expect("a thread for the snapshot builder");
        BuildThread { tx, handle }
    }

    /// Hands over a batch, waiting while `BUILD_QUEUE` batches are queued
    /// (the builder is behind). A builder that stopped (entries out of
    /// order) drops the rest; `finish` reports why.
    fn send(&self, batch: Batch) {
        let _ = self.tx.send(batch);
    }

    /// State, and its hash as the snapshot's writer computed it.
    fn finish(self) -> Result<(State, StateHash), SnapshotError> {
        drop(self.tx);
        match self.handle.join() {
            Ok(built) => built.map_err(corrupt),
            Err(_) => Err(corrupt("the snapshot builder failed")),
        }
    }
}

/// Decodes a snapshot incrementally: `push` the bytes as they arrive, then
/// `finish` with the expected SHA-256.
pub struct SnapshotDecoder {
    phase: Phase,
    sha: Sha256,
    /// Undecoded input before the body starts.
    head_buf: Vec<u8>,
    header: Option<SnapshotHeader>,
    zstd: zstd::stream::raw::Decoder<'static>,
    /// Decompressed bytes not yet parsed into frames.
    frames: Vec<u8>,
    frames_pos: usize,
    out_buf: Vec<u8>,
    builder: Option<BuildThread>,
    received: u64,
    decoded_entries: u64,
    /// Bytes decompressed so far, and the most there may be.
    decompressed: u64,
    body_limit: u64,
}

impl std::fmt::Debug for SnapshotDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotDecoder")
            .field("header", &self.header)
            .field("received", &self.received)
            .field("decoded_entries", &self.decoded_entries)
            .finish()
    }
}

impl Default for SnapshotDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SnapshotDecoder {
    pub fn new() -> Self {
        SnapshotDecoder {
            phase: Phase::Header,
            sha: Sha256::new(),
            head_buf: Vec::new(),
            header: None,
            zstd: zstd::stream::raw::Decoder::new().expect("zstd decoder"),
            frames: Vec::new(),
            frames_pos: 0,
            out_buf: vec![0; 256 << 10],
            builder: None,
            received: 0,
            decoded_entries: 0,
            decompressed: 0,
            body_limit: MAX_BODY,
        }
    }

    /// The header, once its bytes have arrived.
    pub fn header(&self) -> Option<&SnapshotHeader> {
        self.header.as_ref()
    }

    pub fn bytes_received(&self) -> u64 {
        self.received
    }

    pub fn entries_decoded(&self) -> u64 {
        self.decoded_entries
    }

    /// Feeds the next bytes of the snapshot.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.sha.update(bytes);
        self.received += bytes.len() as u64;
        if let Phase::Header = self.phase {
            self.head_buf.extend_from_slice(bytes);
            let b = &self.head_buf;
            if b.len() < 14 {
                return Ok(());
            }
            if &b[..8] != MAGIC {
                return Err(SnapshotError::BadMagic);
            }
            let version = u16::from_le_bytes([b[8], b[9]]);
            if !(1..=SNAPSHOT_FORMAT_VERSION).contains(&version) {
                return Err(SnapshotError::Version {
                    found: version,
                    supported: SNAPSHOT_FORMAT_VERSION,
                });
            }
            let len = u32::from_le_bytes(b[10..14].try_into().expect("4 bytes")) as usize;
            if len > MAX_HEADER_LEN {
                return Err(corrupt("header too long"));
            }
            if b.len() < 14 + len {
                return Ok(());
            }
            let raw = &b[14..14 + len];
            let header: SnapshotHeader = if version == 1 {
                let h: HeaderV1 = postcard::from_bytes(raw).map_err(corrupt)?;
                SnapshotHeader {
                    index: h.index,
                    term: h.term,
                    state_hash: h.state_hash,
                    cluster_id: h.cluster_id,
                    entries: h.entries,
                    body_len: MAX_BODY,
                }
            } else {
                postcard::from_bytes(raw).map_err(corrupt)?
            };
            if header.body_len > MAX_BODY {
                return Err(SnapshotError::TooLarge(header.body_len));
            }
            self.body_limit = header.body_len;
            self.builder = Some(BuildThread::start(header.index, header.term));
            self.header = Some(header);
            self.phase = Phase::Body;
            let rest = self.head_buf.split_off(14 + len);
            self.head_buf = Vec::new();
            return self.body(&rest);
        }
        self.body(bytes)
    }

    fn body(&mut self, mut input: &[u8]) -> Result<(), SnapshotError> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        if let Phase::Done = self.phase {
            if input.is_empty() {
                return Ok(());
            }
            return Err(corrupt("bytes after the end of the snapshot"));
        }
        while !input.is_empty() {
            let mut inb = InBuffer::around(input);
            let mut outb = OutBuffer::around(&mut self.out_buf[..]);
            self.zstd.run(&mut inb, &mut outb).map_err(corrupt)?;
            let (consumed, produced) = (inb.pos(), outb.pos());
            self.count(produced)?;
            self.frames.extend_from_slice(&self.out_buf[..produced]);
            input = &input[consumed..];
            self.parse_frames()?;
            if consumed == 0 && produced == 0 {
                break;
            }
        }
        // Drain output zstd still holds.
        loop {
            let mut inb = InBuffer::around(&[][..]);
            let mut outb = OutBuffer::around(&mut self.out_buf[..]);
            self.zstd.run(&mut inb, &mut outb).map_err(corrupt)?;
            let produced = outb.pos();
            if produced == 0 {
                break;
            }
            self.count(produced)?;
            self.frames.extend_from_slice(&self.out_buf[..produced]);
            self.parse_frames()?;
        }
        Ok(())
    }

    /// Counts decompressed bytes against what the header declared.
    fn count(&mut self, produced: usize) -> Result<(), SnapshotError> {
        self.decompressed += produced as u64;
        if self.decompressed > self.body_limit {
            return Err(SnapshotError::TooLarge(self.body_limit));
        }
        Ok(())
    }

    fn parse_frames(&mut self) -> Result<(), SnapshotError> {
        loop {
            let avail = &self.frames[self.frames_pos..];
            if avail.len() < 4 {
                break;
            }
            let len = u32::from_le_bytes(avail[..4].try_into().expect("4 bytes")) as usize;
            if len > MAX_FRAME_LEN {
                return Err(corrupt("frame too long"));
            }
            if avail.len() < 4 + len {
                break;
            }
            let batch: Batch = postcard::from_bytes(&avail[4..4 + len]).map_err(corrupt)?;
            self.frames_pos += 4 + len;
            if let Phase::Done = self.phase {
                return Err(corrupt("frames after the end marker"));
            }
            self.decoded_entries += batch.entries() as u64;
            if let Batch::End = batch {
                self.phase = Phase::Done;
                continue;
            }
            self.builder
                .as_ref()
                .expect("builder exists in the body phase")
                .send(batch);
        }
        // Keep the unparsed remainder small and at the front.
        if self.frames_pos > 0 && self.frames_pos * 2 >= self.frames.len() {
            self.frames.drain(..self.frames_pos);
            self.frames_pos = 0;
        }
        Ok(())
    }

    /// Checks the checksum and the state hash and returns State.
    pub fn finish(self, expected_sha: &[u8; 32]) -> Result<State, SnapshotError> {
        let sha: [u8; 32] = self.sha.finalize().into();
        if &sha != expected_sha {
            return Err(SnapshotError::Checksum);
        }
        if !matches!(self.phase, Phase::Done) {
            return Err(SnapshotError::Truncated);
        }
        if self.body_limit != MAX_BODY && self.decompressed != self.body_limit {
            return Err(corrupt(format!(
                "body of {} bytes where the header declares {}",
                self.decompressed, self.body_limit
            )));
        }
        let header = self.header.expect("a finished snapshot has a header");
        let (state, written) = self
            .builder
            .expect("a finished snapshot has a builder")
            .finish()?;
        if written != header.state_hash {
            return Err(SnapshotError::StateHash {
                expected: header.state_hash,
                found: written,
            });
        }
        Ok(state)
    }
}

/// Decodes a whole snapshot held in memory.
pub fn decode_snapshot(bytes: &[u8], sha: &[u8; 32]) -> Result<State, SnapshotError> {
    let mut d = SnapshotDecoder::new();
    d.push(bytes)?;
    d.finish(sha)
}
