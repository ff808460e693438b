//! Each peer's small one-to-one frames on one long-lived stream, a lane.
//!
//! Raft's appends, answers and heartbeats, forwarded commands and range
//! requests are small and many: a few per write. Sent as a request each,
//! every frame opened a stream, negotiated its protocol, armed a timeout
//! timer, and waited for an acknowledgement on a stream of its own; the
//! timers and the wake-ups they cost were about 40 % of a member's CPU
//! at a steady 200 writes/s. A lane is opened once and kept: a frame is
//! its length and its bytes, frames queued together go out in one write,
//! and nothing answers them (the protocols above answer what needs it).
//!
//! A lane's reader sends one byte (`TAKEN`) once it has taken the lane,
//! and the writer writes nothing before it: libp2p-stream drops an
//! inbound stream it has no room for (its queue of streams not yet
//! accepted holds one), and frames written into a dropped stream are
//! lost unseen. Peers that open lanes to a node at the same moment (a
//! node that has just connected to many) would otherwise lose some.
//!
//! Frames over `LANE_MAX_FRAME` (snapshot chunks, long ranges) still go on
//! a stream each (`codec::FrameCodec`), so that a megabyte never holds a
//! heartbeat back behind it.
//!
//! Bounded everywhere: a lane's queue holds `QUEUE` frames (a frame that
//! finds it full is dropped and counted, as Raft and the catch-up resend
//! what matters); a writer idle for `IDLE` closes its lane and ends; a
//! peer may hold `INBOUND_PER_PEER` lanes open to this node (a newer one
//! closes its oldest); a lane's frame is read only up to
//! `LANE_MAX_FRAME`; a lane silent for `READ_IDLE` is closed.

use crate::codec::{next_frame, put_frame};
use crate::{NetCounters, NetEvent};
use futures::io::{BufReader, BufWriter};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, IncomingStreams, OpenStreamError};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::debug;

/// The lane protocol; the version is part of its name.
pub const LANE_PROTOCOL: &str = "/shoal/lane/2";
/// What a lane's reader sends once it has taken the lane.
pub const TAKEN: u8 = 1;
/// The largest frame a lane carries; larger ones go on a stream each.
pub const LANE_MAX_FRAME: usize = 256 << 10;
/// Frames waiting for one peer's lane.
const QUEUE: usize = 1024;
/// A writer with nothing to send for this long closes its lane.
const IDLE: Duration = Duration::from_secs(60);
/// How long opening a lane (dialling first, if need be, and until its
/// reader has taken it) may take, tries included.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause before a failed open is tried again.
const OPEN_RETRY: Duration = Duration::from_millis(300);
/// How long one write may wait for a peer that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Lanes one peer may hold open to this node at once: one in use, and
/// room for a writer that ended while its successor opened. A lane past
/// this closes the peer's oldest.
const INBOUND_PER_PEER: usize = 4;
/// A lane silent this long is closed: its writer closes it after `IDLE`
/// without frames, so a lane still open is one whose end went away
/// unseen (or a peer holding it open for nothing).
const READ_IDLE: Duration = Duration::from_secs(2 * IDLE.as_secs());
/// Bytes gathered before a write: frames queued together go out as one.
const WRITE_BUFFER: usize = 64 << 10;

/// The sending side: one writer task per peer, started on its first frame.
pub(crate) struct Lanes {
    control: Control,
    writers: HashMap<PeerId, mpsc::Sender<Vec<u8>>>,
    counters: Arc<NetCounters>,
}

impl Lanes {
    pub fn new(control: Control, counters: Arc<NetCounters>) -> Lanes {
        Lanes {
            control,
            writers: HashMap::new(),
            counters,
        }
    }

    /// Queues a frame of at most `LANE_MAX_FRAME` bytes for `to`. A full
    /// queue drops it and counts a failed send.
    pub fn send(&mut self, to: PeerId, bytes: Vec<u8>) {
        debug_assert!(bytes.len() <= LANE_MAX_FRAME);
        let bytes = match self.writers.get(&to) {
            None => bytes,
            Some(w) => match w.try_send(bytes) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.counters.send_failures.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                // That writer went idle and ended: start another.
                Err(mpsc::error::TrySendError::Closed(bytes)) => bytes,
            },
        };
        self.writers.retain(|_, w| !w.is_closed());
        let (tx, rx) = mpsc::channel(QUEUE);
        tx.try_send(bytes).expect("a new queue has room");
        self.writers.insert(to, tx);
        tokio::spawn(write_lane(
            self.control.clone(),
            to,
            rx,
            self.counters.clone(),
        ));
    }
}

/// Sends `peer`'s queued frames on one stream, opened on the first and
/// again after a failure, until the queue stays empty for `IDLE`.
async fn write_lane(
    mut control: Control,
    peer: PeerId,
    mut rx: mpsc::Receiver<Vec<u8>>,
    counters: Arc<NetCounters>,
) {
    let mut lane: Option<BufWriter<Stream>> = None;
    let mut batch = Vec::new();
    loop {
        let frame = match tokio::time::timeout(IDLE, rx.recv()).await {
            Ok(frame) => frame,
            // Idle: refuse new frames, and send what slipped in first.
            Err(_) => {
                rx.close();
                rx.recv().await
            }
        };
        let Some(frame) = frame else {
            if let Some(mut io) = lane {
                let _ = tokio::time::timeout(WRITE_TIMEOUT, io.close()).await;
            }
            return;
        };
        batch.push(frame);
        while batch.len() < QUEUE {
            match rx.try_recv() {
                Ok(frame) => batch.push(frame),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        if let Err(e) = send_batch(&mut control, peer, &mut lane, &batch).await {
            lane = None;
            counters.send_failures.fetch_add(n, Ordering::Relaxed);
            debug!(peer = %peer, error = %e, frames = n, "lane send failed");
        }
        batch.clear();
    }
}

async fn send_batch(
    control: &mut Control,
    peer: PeerId,
    lane: &mut Option<BufWriter<Stream>>,
    batch: &[Vec<u8>],
) -> io::Result<()> {
    if lane.is_none() {
        *lane = Some(BufWriter::with_capacity(
            WRITE_BUFFER,
            open(control, peer).await?,
        ));
    }
    let io = lane.as_mut().expect("opened above");
    let write = async {
        for frame in batch {
            put_frame(io, frame).await?;
        }
        io.flush().await
    };
    tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the peer does not read"))?
}

/// Opens a lane to `peer` and waits until its reader has taken it. A
/// peer not connected yet is dialled by its id, from the addresses the
/// swarm knows; the node's own dial of a newly learnt address may still
/// be under way, and a lane the peer dropped unaccepted is opened again,
/// so a failure is tried again a moment later, for up to `OPEN_TIMEOUT`.
async fn open(control: &mut Control, peer: PeerId) -> io::Result<Stream> {
    let protocol = StreamProtocol::new(LANE_PROTOCOL);
    let deadline = Instant::now() + OPEN_TIMEOUT;
    loop {
        let attempt = async {
            let mut stream =
                control
                    .open_stream(peer, protocol.clone())
                    .await
                    .map_err(|e| match e {
                        OpenStreamError::UnsupportedProtocol(_) => {
                            io::Error::new(io::ErrorKind::Unsupported, e)
                        }
                        e => io::Error::other(e),
                    })?;
            let mut taken = [0u8];
            stream.read_exact(&mut taken).await?;
            if taken[0] != TAKEN {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the peer's lane reader answered garbage",
                ));
            }
            Ok(stream)
        };
        let e = match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => e,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "opening the lane")),
        };
        if e.kind() == io::ErrorKind::Unsupported || Instant::now() + OPEN_RETRY >= deadline {
            return Err(e);
        }
        tokio::time::sleep(OPEN_RETRY).await;
    }
}

/// Reads every lane peers open to this node, each on a task of its own,
/// and hands its frames to the node in order.
pub(crate) async fn serve(
    mut incoming: IncomingStreams,
    events: mpsc::Sender<NetEvent>,
    counters: Arc<NetCounters>,
) {
    let mut open: HashMap<PeerId, VecDeque<Open>> = HashMap::new();
    while let Some((peer, stream)) = incoming.next().await {
        open.retain(|_, lanes| {
            lanes.retain(|l| l.alive.strong_count() > 0);
            !lanes.is_empty()
        });
        let lanes = open.entry(peer).or_default();
        if lanes.len() >= INBOUND_PER_PEER {
            // A writer opens a lane only once it holds no other, so the
            // oldest is the one most likely dead without this end
            // knowing: yamux wakes no reader of a connection this node
            // closed gracefully (a reconnect), and its lanes would hold
            // their places for good.
            let oldest = lanes.pop_front().expect("full");
            oldest.reader.abort();
            counters.inbound_failures.fetch_add(1, Ordering::Relaxed);
            debug!(peer = %peer, "a peer opened more lanes than it may hold: closed its oldest");
        }
        let token = Arc::new(());
        let alive = Arc::downgrade(&token);
        let reader = Reader {
            peer,
            events: events.clone(),
            counters: counters.clone(),
        };
        let reader = tokio::spawn(reader.read(stream, token)).abort_handle();
        lanes.push_back(Open { alive, reader });
    }
}

/// A lane a peer opened to this node: whether its reader still runs.
struct Open {
    alive: Weak<()>,
    reader: AbortHandle,
}

struct Reader {
    peer: PeerId,
    events: mpsc::Sender<NetEvent>,
    counters: Arc<NetCounters>,
}

impl Reader {
    /// Hands the lane's frames to the node until it ends, fails, or stays
    /// silent for `READ_IDLE`; `token` is given back before a failure is
    /// counted, so whoever sees the count also sees the lane closed.
    async fn read(self, mut stream: Stream, token: Arc<()>) {
        let taken = async {
            stream.write_all(&[TAKEN]).await?;
            stream.flush().await
        };
        let taken = match tokio::time::timeout(WRITE_TIMEOUT, taken).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the writer does not read",
            )),
        };
        if let Err(e) = taken {
            debug!(peer = %self.peer, error = %e, "could not take a lane");
            return;
        }
        let mut io = BufReader::with_capacity(WRITE_BUFFER, stream);
        // One timer for the lane, moved on only when it fires, rather
        // than one per frame.
        let mut last = Instant::now();
        let idle = tokio::time::sleep(READ_IDLE);
        tokio::pin!(idle);
        loop {
            let next = next_frame(&mut io, LANE_MAX_FRAME);
            tokio::pin!(next);
            let got = loop {
                tokio::select! {
                    got = &mut next => break got,
                    () = &mut idle => {
                        if last.elapsed() >= READ_IDLE {
                            debug!(peer = %self.peer, "a lane stayed silent: closed it");
                            return;
                        }
                        idle.as_mut().reset(last + READ_IDLE);
                    }
                }
            };
            last = Instant::now();
            match got {
                Ok(Some(bytes)) => {
                    self.counters.received.fetch_add(1, Ordering::Relaxed);
                    let ev = NetEvent::Direct {
                        from: self.peer,
                        bytes,
                    };
                    crate::emit(&self.events, &self.counters, ev);
                }
                // The writer closed its lane between frames.
                Ok(None) => return,
                Err(e) => {
                    drop(token);
                    self.counters
                        .inbound_failures
                        .fetch_add(1, Ordering::Relaxed);
                    debug!(peer = %self.peer, error = %e, "lane read failed");
                    return;
                }
            }
        }
    }
}
