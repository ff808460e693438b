//! Large one-to-one frames (snapshot chunks, long ranges) on connections
//! of their own, driven by a thread of their own.
//!
//! A node runs one runtime worker where it has one core, and that worker
//! did everything: Raft, the API, the event loop, and every connection's
//! encryption and writes. In a join storm a member serving snapshot chunks
//! to twenty joiners held that worker for stretches of 3-4 ms, and a Raft
//! message that arrived meanwhile waited them out, behind the chunks in
//! the worker's queue and behind the worker on a shared core (bench/
//! README.md, "Where the storm's tail forms"). Priorities act per thread,
//! and no thread did only the commit path's work.
//!
//! So large frames go on a second swarm: the same identity, cluster key
//! and upgrades, one protocol (`BULK_PROTOCOL`), run by a runtime of its
//! own on a thread started by `NetConfig::bulk_thread` (the node starts
//! it below its own priority). Its connections' encryption, writes and
//! reads happen on that thread, never on the main runtime's worker.
//!
//! How a pair connects: a node about to send a large frame to a peer it
//! holds no bulk connection with sends that frame on the main swarm, as
//! before, and tells the peer its bulk port (`BULK_PORT_PROTOCOL`: two
//! bytes, at most once per `INVITE_EVERY` and peer). The peer dials that
//! port at the address it reaches this node at (noise checks the
//! identity), and the next large frames go on the bulk connection. Frames
//! received on it reach the node as any other one-to-one frame. The bulk
//! swarm listens on the first listen address's host, on
//! `NetConfig::bulk_port` or one the system picks; a peer that cannot
//! reach it there (another address, a firewall) keeps getting large
//! frames on the main swarm.
//!
//! Bounded: the bytes handed to the bulk thread and not yet acknowledged
//! or failed are at most `NetConfig::bulk_in_flight` (`MAX_IN_FLIGHT`):
//! past it a large frame is dropped, counted as a failed send, and its
//! asker asks again when it is late, as the node's pacer does. The bulk
//! thread's queue holds `QUEUE` frames (a frame that finds it full goes on
//! the main swarm); at most `MAX_DIALS` bulk dials
//! are under way; an invitation is two bytes read within
//! `INVITE_TIMEOUT`, `READERS` at a time; a bulk connection with no frame
//! under way closes after 30 s.

use crate::transport::{build_bulk_swarm, BulkBehaviour, BulkBehaviourEvent};
use crate::{emit, host_of, tcp_port, NetConfig, NetCounters, NetError, NetEvent};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, Message, OutboundRequestId};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm};
use libp2p_stream::{Control, IncomingStreams};
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout, Instant};
use tracing::{debug, warn};

/// The protocol that tells a peer this node's bulk port.
pub const BULK_PORT_PROTOCOL: &str = "/shoal/bulk-port/1";
/// Bytes of large frames under way on the bulk connections, at most, by
/// default (`NetConfig::bulk_in_flight`).
pub const MAX_IN_FLIGHT: u64 = 64 << 20;
/// Frames and dials waiting for the bulk thread.
const QUEUE: usize = 1024;
/// A peer not yet connected for bulk is told the port again after this.
const INVITE_EVERY: Duration = Duration::from_secs(5);
/// How long writing or reading an invitation may take.
const INVITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Invitations read at once.
const READERS: usize = 16;
/// Bulk dials under way at once.
const MAX_DIALS: usize = 64;
/// How long the bulk swarm may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts a thread named `name` that runs `body` (`NetConfig::bulk_thread`).
pub type ThreadStarter = fn(&str, Box<dyn FnOnce() + Send>) -> io::Result<()>;

/// A thread at the caller's priority.
pub fn plain_thread(name: &str, body: Box<dyn FnOnce() + Send>) -> io::Result<()> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
        .map(drop)
}

enum Command {
    Send { to: PeerId, bytes: Vec<u8> },
    Dial { peer: PeerId, addr: Multiaddr },
}

/// The network actor's side of the bulk swarm.
pub(crate) struct Link {
    tx: mpsc::Sender<Command>,
    /// Peers the bulk swarm holds a connection to.
    connected: Arc<Mutex<HashSet<PeerId>>>,
    /// Bytes handed to the bulk thread and not yet acknowledged or
    /// failed, and how many may be.
    in_flight: Arc<AtomicU64>,
    max_in_flight: u64,
    /// The bulk swarm's port.
    port: u16,
    /// Opens invitations on the main swarm.
    control: Control,
    /// When each peer was last told the port.
    invited: HashMap<PeerId, Instant>,
    /// The host each connected peer is reached at.
    hosts: HashMap<PeerId, IpAddr>,
    counters: Arc<NetCounters>,
}

impl Link {
    /// Sends `bytes` on the bulk connection to `to`, if there is one;
    /// otherwise hands them back, for the main swarm, and invites `to`.
    pub fn send(&mut self, to: PeerId, bytes: Vec<u8>) -> Option<Vec<u8>> {
        let connected = lock(&self.connected).contains(&to);
        if connected {
            let len = bytes.len() as u64;
            let before = self.in_flight.fetch_add(len, Ordering::Relaxed);
            if before > 0 && before + len > self.max_in_flight {
                self.in_flight.fetch_sub(len, Ordering::Relaxed);
                self.counters.send_failures.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            match self.tx.try_send(Command::Send { to, bytes }) {
                Ok(()) => {
                    self.counters.bulk_sent.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                // The bulk thread is behind (or gone): the main swarm.
                Err(e) => {
                    self.in_flight.fetch_sub(len, Ordering::Relaxed);
                    let Command::Send { bytes, .. } = e.into_inner() else {
                        return None;
                    };
                    return Some(bytes);
                }
            }
        }
        self.invite(to);
        Some(bytes)
    }

    fn invite(&mut self, to: PeerId) {
        let now = Instant::now();
        if self
            .invited
            .get(&to)
            .is_some_and(|at| now.duration_since(*at) < INVITE_EVERY)
        {
            return;
        }
        self.invited
            .retain(|_, at| now.duration_since(*at) < INVITE_EVERY);
        self.invited.insert(to, now);
        tokio::spawn(send_port(self.control.clone(), to, self.port));
    }

    /// A connection to `peer` was set up; `addr` is where it is reached.
    pub fn reached(&mut self, peer: PeerId, addr: &Multiaddr) {
        if let Some(ip) = host_of(addr) {
            self.hosts.insert(peer, ip);
        }
    }

    /// `peer` has no connection left.
    pub fn gone(&mut self, peer: &PeerId) {
        self.hosts.remove(peer);
        self.invited.remove(peer);
    }

    /// `peer` says its bulk swarm listens on `port`: dial it where the
    /// peer is reached.
    pub fn invited_by(&mut self, peer: PeerId, port: u16) {
        let Some(ip) = self.hosts.get(&peer) else {
            debug!(peer = %peer, "a bulk port from a peer with no address known");
            return;
        };
        let addr = Multiaddr::from(*ip).with(Protocol::Tcp(port));
        let _ = self.tx.try_send(Command::Dial { peer, addr });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where the bulk swarm listens: the first listen address's host, on
/// `NetConfig::bulk_port` (0: a port the system picks).
fn bulk_listen(cfg: &NetConfig) -> Option<Multiaddr> {
    let first = cfg.listen.first()?;
    Some(Multiaddr::from(host_of(first)?).with(Protocol::Tcp(cfg.bulk_port)))
}

/// Starts the bulk swarm on a thread of its own. Frames it receives go
/// to `events`; invitations are accepted on the main swarm (`control`)
/// and handed to the actor on the returned receiver.
pub(crate) async fn start(
    keypair: Keypair,
    cfg: &NetConfig,
    starter: ThreadStarter,
    control: Control,
    events: mpsc::Sender<NetEvent>,
    counters: Arc<NetCounters>,
) -> Result<(Link, mpsc::Receiver<(PeerId, u16)>), NetError> {
    let setup = |e: String| NetError::Setup(format!("bulk swarm: {e}"));
    let listen = bulk_listen(cfg).ok_or_else(|| setup("no IP listen address".into()))?;
    let mut swarm = build_bulk_swarm(keypair, cfg)?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let connected = Arc::new(Mutex::new(HashSet::new()));
    let in_flight = Arc::new(AtomicU64::new(0));
    let (port_tx, port_rx) = oneshot::channel();
    let run = Run {
        connected: connected.clone(),
        in_flight: in_flight.clone(),
        sizes: HashMap::new(),
        counters: counters.clone(),
        events,
        dialing: HashSet::new(),
    };
    starter(
        "net-bulk",
        Box::new(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = port_tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                if let Err(e) = swarm.listen_on(listen) {
                    let _ = port_tx.send(Err(crate::error_chain(&e)));
                    return;
                }
                run.run(swarm, rx, port_tx).await
            })
        }),
    )
    .map_err(|e| setup(e.to_string()))?;
    let port = match timeout(START_TIMEOUT, port_rx).await {
        Ok(Ok(Ok(port))) => port,
        Ok(Ok(Err(e))) => return Err(setup(e)),
        Ok(Err(_)) | Err(_) => return Err(setup("it did not start listening".into())),
    };
    let mut invitations = control.clone();
    let incoming = invitations
        .accept(StreamProtocol::new(BULK_PORT_PROTOCOL))
        .map_err(|e| setup(e.to_string()))?;
    let (ports_tx, ports_rx) = mpsc::channel(QUEUE);
    tokio::spawn(read_ports(incoming, ports_tx, counters.clone()));
    let link = Link {
        tx,
        connected,
        in_flight,
        max_in_flight: cfg.bulk_in_flight,
        port,
        control,
        invited: HashMap::new(),
        hosts: HashMap::new(),
        counters,
    };
    Ok((link, ports_rx))
}

/// Tells `to` where this node's bulk swarm listens.
async fn send_port(mut control: Control, to: PeerId, port: u16) {
    let tell = async {
        let mut s = control
            .open_stream(to, StreamProtocol::new(BULK_PORT_PROTOCOL))
            .await
            .map_err(io::Error::other)?;
        s.write_all(&port.to_be_bytes()).await?;
        s.close().await
    };
    match timeout(INVITE_TIMEOUT, tell).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(peer = %to, error = %e, "bulk port not told"),
        Err(_) => debug!(peer = %to, "bulk port not told in time"),
    }
}

/// Reads invitations: each a port, two bytes, big-endian.
async fn read_ports(
    incoming: IncomingStreams,
    ports: mpsc::Sender<(PeerId, u16)>,
    counters: Arc<NetCounters>,
) {
    incoming
        .for_each_concurrent(Some(READERS), |(peer, mut stream)| {
            let ports = ports.clone();
            let counters = counters.clone();
            async move {
                let mut port = [0u8; 2];
                let read = timeout(INVITE_TIMEOUT, stream.read_exact(&mut port)).await;
                match (read, u16::from_be_bytes(port)) {
                    (Ok(Ok(())), port) if port != 0 => {
                        let _ = ports.try_send((peer, port));
                    }
                    _ => {
                        counters.inbound_failures.fetch_add(1, Ordering::Relaxed);
                        debug!(peer = %peer, "a bulk port that did not arrive whole");
                    }
                }
            }
        })
        .await
}

/// The bulk thread's loop.
struct Run {
    connected: Arc<Mutex<HashSet<PeerId>>>,
    in_flight: Arc<AtomicU64>,
    /// Each frame under way, by its request: its length.
    sizes: HashMap<OutboundRequestId, u64>,
    counters: Arc<NetCounters>,
    events: mpsc::Sender<NetEvent>,
    dialing: HashSet<PeerId>,
}

impl Run {
    async fn run(
        mut self,
        mut swarm: Swarm<BulkBehaviour>,
        mut commands: mpsc::Receiver<Command>,
        port: oneshot::Sender<Result<u16, String>>,
    ) {
        let mut port = Some(port);
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(&mut swarm, cmd),
                    // The network actor ended: so does this thread.
                    None => return,
                },
                ev = swarm.select_next_some() => {
                    match &ev {
                        SwarmEvent::NewListenAddr { address, .. } => {
                            if let (Some(tell), Some(p)) = (port.take(), tcp_port(address)) {
                                debug!(addr = %address, "bulk frames listening");
                                let _ = tell.send(Ok(p));
                            }
                        }
                        // The port is taken, say: the actor goes on
                        // without, and so does this thread, with nothing
                        // to do.
                        SwarmEvent::ListenerError { error, .. } => {
                            if let Some(tell) = port.take() {
                                let _ = tell.send(Err(crate::error_chain(error)));
                                return;
                            }
                        }
                        _ => {}
                    }
                    self.event(&mut swarm, ev);
                }
            }
        }
    }

    fn command(&mut self, swarm: &mut Swarm<BulkBehaviour>, cmd: Command) {
        match cmd {
            Command::Send { to, bytes } => {
                let len = bytes.len() as u64;
                let id = swarm.behaviour_mut().frames.send_request(&to, bytes);
                self.sizes.insert(id, len);
            }
            Command::Dial { peer, addr } => {
                if swarm.is_connected(&peer)
                    || self.dialing.len() >= MAX_DIALS
                    || !self.dialing.insert(peer)
                {
                    return;
                }
                let opts = DialOpts::peer_id(peer)
                    .addresses(vec![addr])
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build();
                if let Err(e) = swarm.dial(opts) {
                    self.dialing.remove(&peer);
                    debug!(peer = %peer, error = %e, "bulk dial refused");
                }
            }
        }
    }

    fn event(&mut self, swarm: &mut Swarm<BulkBehaviour>, ev: SwarmEvent<BulkBehaviourEvent>) {
        match ev {
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                self.dialing.remove(&peer_id);
                lock(&self.connected).insert(peer_id);
                self.count(swarm);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                if num_established == 0 {
                    lock(&self.connected).remove(&peer_id);
                }
                self.count(swarm);
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                if let Some(peer) = peer_id {
                    self.dialing.remove(&peer);
                }
                debug!(peer = ?peer_id, error = %crate::error_chain(&error), "bulk dial failed");
            }
            SwarmEvent::Behaviour(BulkBehaviourEvent::Frames(ev)) => match ev {
                request_response::Event::Message {
                    peer,
                    message:
                        Message::Request {
                            request, channel, ..
                        },
                    ..
                } => {
                    self.counters.received.fetch_add(1, Ordering::Relaxed);
                    let _ = swarm.behaviour_mut().frames.send_response(channel, ());
                    emit(
                        &self.events,
                        &self.counters,
                        NetEvent::Direct {
                            from: peer,
                            bytes: request,
                        },
                    );
                }
                request_response::Event::Message {
                    message: Message::Response { request_id, .. },
                    ..
                } => self.done(request_id),
                request_response::Event::OutboundFailure {
                    peer,
                    request_id,
                    error,
                    ..
                } => {
                    self.done(request_id);
                    self.counters.send_failures.fetch_add(1, Ordering::Relaxed);
                    debug!(peer = %peer, error = %error, "bulk send failed");
                }
                request_response::Event::InboundFailure { peer, error, .. } => {
                    self.counters
                        .inbound_failures
                        .fetch_add(1, Ordering::Relaxed);
                    debug!(peer = %peer, error = %error, "bulk inbound failure");
                }
                _ => {}
            },
            SwarmEvent::ListenerClosed { reason, .. } => {
                warn!(reason = ?reason, "the bulk listener closed: large frames go on the main connections");
            }
            _ => {}
        }
    }

    /// A frame was acknowledged or failed: its bytes are under way no more.
    fn done(&mut self, request: OutboundRequestId) {
        if let Some(len) = self.sizes.remove(&request) {
            self.in_flight.fetch_sub(len, Ordering::Relaxed);
        }
    }

    fn count(&self, swarm: &Swarm<BulkBehaviour>) {
        let n = swarm.network_info().connection_counters().num_connections() as u64;
        self.counters.bulk_connections.store(n, Ordering::Relaxed);
    }
}
