//! shoal's network actor. One task owns the libp2p Swarm (STYLE rule 2);
//! the node talks to it through a bounded channel of `NetCommand`s and
//! hears from it on a bounded channel of `NetEvent`s.
//!
//! Transport: TCP, noise, yamux, and optionally a pre-shared-key private
//! network in front of noise (`--cluster-key`). Discovery: mDNS (on by
//! default) and explicit peer addresses. mDNS never dials and reports a
//! peer rarely, so every address learnt is remembered and redialled with
//! backoff. Dials use a fresh port: two nodes dialling each other at the
//! same instant could otherwise merge their attempts and fail the noise
//! handshake.
//!
//! Gossipsub carries broadcast only (committed events, transient events);
//! one-to-one messages go over a request-response protocol whose request is
//! one opaque frame and whose response is an empty acknowledgement. Both
//! protocols are versioned by name and capped at one message size.
//!
//! A third protocol greets every connected peer once a second with this
//! process's incarnation, so two live processes sharing one identity are
//! told apart and the later one refused (see `identity_watch`).

pub mod identity_watch;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::core::transport::upgrade::Version;
use libp2p::core::Transport as _;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity};
use libp2p::identity::Keypair;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, mdns, noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

pub use identity_watch::{IdentityWatch, Incarnation, Verdict};

pub use libp2p::identity;
pub use libp2p::multiaddr::Protocol;
pub use libp2p::pnet::PreSharedKey as ClusterKey;
pub use libp2p::{Multiaddr as Addr, PeerId as Peer};

/// One-to-one protocol name; the version is part of it.
pub const DIRECT_PROTOCOL: &str = "/shoal/direct/1";
/// Greetings that carry a process's incarnation.
pub const HELLO_PROTOCOL: &str = "/shoal/hello/1";
const HELLO_EVERY: Duration = Duration::from_secs(1);
pub const COMMITTED_TOPIC: &str = "shoal/1/committed";
pub const TRANSIENT_TOPIC: &str = "shoal/1/transient";
/// Commands and events waiting between the actor and the node.
const CHANNEL: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    Committed,
    Transient,
}

impl Topic {
    fn name(self) -> &'static str {
        match self {
            Topic::Committed => COMMITTED_TOPIC,
            Topic::Transient => TRANSIENT_TOPIC,
        }
    }
}

#[derive(Debug)]
pub enum NetCommand {
    /// A one-to-one frame; `addr` is where the peer listens, if known, so a
    /// peer heard of only through gossip can be dialled for it.
    Send {
        to: PeerId,
        addr: Option<Multiaddr>,
        bytes: Vec<u8>,
    },
    Publish {
        topic: Topic,
        bytes: Vec<u8>,
    },
    Dial(Multiaddr),
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    /// Test-only fault: hold every outgoing message this long first (for
    /// chaos runs on kernels without netem). Zero turns it off.
    SetDelay(Duration),
}

/// Messages held back by the delay fault at most; past it they are dropped.
const MAX_DELAYED: usize = 16_384;

#[derive(Debug)]
pub enum NetEvent {
    /// A one-to-one frame from an authenticated peer.
    Direct {
        from: PeerId,
        bytes: Vec<u8>,
    },
    /// A broadcast frame, signed by `source`.
    Gossip {
        source: Option<PeerId>,
        bytes: Vec<u8>,
    },
    Listening(Multiaddr),
    /// `reporter` hears another live process with this node's identity,
    /// started before this one: this process must stop.
    IdentityConflict {
        reporter: PeerId,
        other: Incarnation,
    },
    Connected(PeerId),
    Disconnected(PeerId),
}

#[derive(Clone, Debug)]
pub struct NetConfig {
    pub listen: Vec<Multiaddr>,
    pub peers: Vec<Multiaddr>,
    pub mdns: bool,
    pub cluster_key: Option<PreSharedKey>,
    pub max_message_bytes: usize,
    /// This process, as declared to peers in greetings.
    pub incarnation: Incarnation,
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("network setup: {0}")]
    Setup(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
}

/// Counters the actor keeps; read with `NetHandle::stats`.
#[derive(Clone, Debug, Default)]
pub struct NetStats {
    pub sent: u64,
    pub send_failures: u64,
    pub received: u64,
    pub oversized: u64,
    pub dropped_events: u64,
}

/// A cloneable handle to the actor.
#[derive(Clone, Debug)]
pub struct NetHandle {
    tx: mpsc::Sender<NetCommand>,
    pub local_peer: PeerId,
}

impl NetHandle {
    /// Queues a command; fails (and the caller counts it) when the actor is
    /// saturated rather than blocking the node's loop.
    pub fn try_send(&self, cmd: NetCommand) -> bool {
        self.tx.try_send(cmd).is_ok()
    }

    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(NetCommand::ListenAddrs(tx)).await.is_err() {
            return vec![];
        }
        rx.await.unwrap_or_default()
    }
}

/// Frames as length-prefixed bytes, capped.
#[derive(Clone, Debug)]
pub struct FrameCodec {
    max: usize,
}

async fn read_frame<T: futures::AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {max}"),
        ));
    }
    let mut buf = vec![0; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: futures::AsyncWrite + Unpin + Send>(
    io: &mut T,
    bytes: &[u8],
) -> io::Result<()> {
    io.write_all(&(bytes.len() as u32).to_le_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = ();

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<()>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        let mut ack = [0u8; 1];
        io.read_exact(&mut ack).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, _: ()) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        io.write_all(&[0]).await?;
        io.close().await
    }
}

/// Greetings: a fixed 16-byte request, a tagged 17-byte reply.
#[derive(Clone, Debug, Default)]
pub struct HelloCodec;

fn encode_incarnation(i: &Incarnation) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&i.nonce.to_le_bytes());
    b[8..].copy_from_slice(&i.started_ms.to_le_bytes());
    b
}

fn decode_incarnation(b: &[u8; 16]) -> Incarnation {
    let word = |r: std::ops::Range<usize>| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[r]);
        u64::from_le_bytes(w)
    };
    Incarnation {
        nonce: word(0..8),
        started_ms: word(8..16),
    }
}

impl request_response::Codec for HelloCodec {
    type Protocol = StreamProtocol;
    type Request = Incarnation;
    type Response = Verdict;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Incarnation>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        let mut b = [0u8; 16];
        io.read_exact(&mut b).await?;
        Ok(decode_incarnation(&b))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Verdict>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        let mut b = [0u8; 17];
        io.read_exact(&mut b).await?;
        match b[0] {
            0 => Ok(Verdict::Ok),
            1 => Ok(Verdict::Duplicate {
                other: decode_incarnation(b[1..].try_into().expect("16 bytes")),
            }),
            t => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown greeting verdict {t}"),
            )),
        }
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Incarnation,
    ) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        io.write_all(&encode_incarnation(&req)).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        v: Verdict,
    ) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        let mut b = [0u8; 17];
        if let Verdict::Duplicate { other } = v {
            b[0] = 1;
            b[1..].copy_from_slice(&encode_incarnation(&other));
        }
        io.write_all(&b).await?;
        io.close().await
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    gossipsub: gossipsub::Behaviour,
    direct: request_response::Behaviour<FrameCodec>,
    hello: request_response::Behaviour<HelloCodec>,
    identify: identify::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
}

/// An address we redial until it answers, with backoff.
#[derive(Debug)]
struct Redial {
    next: Instant,
    backoff: Duration,
}

const REDIAL_MIN: Duration = Duration::from_millis(500);
/// Kept short: a LAN has few hosts, and a host back from a cut link or a
/// partition should be redialled within seconds (chaos runs measured 5 s
/// median convergence after an 8 s partition with a 15 s cap).
const REDIAL_MAX: Duration = Duration::from_secs(3);

/// Reads a cluster key file in the common `swarm.key` format.
pub fn parse_cluster_key(text: &str) -> Result<PreSharedKey, String> {
    text.parse::<PreSharedKey>().map_err(|e| e.to_string())
}

/// A fresh cluster key file's text.
pub fn new_cluster_key_text() -> String {
    let key: [u8; 32] = rand::random();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex}\n")
}

fn build_swarm(keypair: Keypair, cfg: &NetConfig) -> Result<Swarm<Behaviour>, NetError> {
    let setup = |e: &dyn std::fmt::Display| NetError::Setup(e.to_string());
    let psk = cfg.cluster_key;
    let max = cfg.max_message_bytes;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(
            |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                let noise = noise::Config::new(key)?;
                let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
                let yamux = yamux::Config::default();
                Ok(match psk {
                    Some(psk) => tcp
                        .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
                        .upgrade(Version::V1Lazy)
                        .authenticate(noise)
                        .multiplex(yamux)
                        .boxed(),
                    None => tcp
                        .upgrade(Version::V1Lazy)
                        .authenticate(noise)
                        .multiplex(yamux)
                        .boxed(),
                })
            },
        )
        .map_err(|e| setup(&e))?
        .with_behaviour(|key| {
            let gossip_cfg = gossipsub::ConfigBuilder::default()
                .max_transmit_size(max)
                .heartbeat_interval(Duration::from_millis(200))
                .validation_mode(gossipsub::ValidationMode::Strict)
                .build()
                .map_err(|e| e.to_string())?;
            let gossipsub =
                gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), gossip_cfg)?;
            let direct = request_response::Behaviour::with_codec(
                FrameCodec { max },
                [(StreamProtocol::new(DIRECT_PROTOCOL), ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(Duration::from_secs(30))
                    .with_max_concurrent_streams(256),
            );
            let hello = request_response::Behaviour::with_codec(
                HelloCodec,
                [(StreamProtocol::new(HELLO_PROTOCOL), ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(5)),
            );
            let identify =
                identify::Behaviour::new(identify::Config::new("/shoal/id/1".into(), key.public()));
            let mdns = if cfg.mdns {
                Some(mdns::tokio::Behaviour::new(
                    mdns::Config::default(),
                    key.public().to_peer_id(),
                )?)
            } else {
                None
            };
            Ok(Behaviour {
                gossipsub,
                direct,
                hello,
                identify,
                mdns: mdns.into(),
            })
        })
        .map_err(|e| setup(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build();
    Ok(swarm)
}

/// Starts the actor: listens, subscribes, dials the given peers.
pub async fn spawn(
    keypair: Keypair,
    cfg: NetConfig,
) -> Result<(NetHandle, mpsc::Receiver<NetEvent>), NetError> {
    let local_peer = keypair.public().to_peer_id();
    let mut swarm = build_swarm(keypair, &cfg)?;
    for t in [Topic::Committed, Topic::Transient] {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&IdentTopic::new(t.name()))
            .map_err(|e| NetError::Setup(e.to_string()))?;
    }
    for addr in &cfg.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
    }
    let (cmd_tx, cmd_rx) = mpsc::channel(CHANNEL);
    let (ev_tx, ev_rx) = mpsc::channel(CHANNEL);
    let mut actor = Actor {
        swarm,
        events: ev_tx,
        redial: HashMap::new(),
        peer_addrs: BTreeMap::new(),
        connected: HashSet::new(),
        listen: Vec::new(),
        pending: HashMap::new(),
        stats: NetStats::default(),
        incarnation: cfg.incarnation,
        identities: IdentityWatch::default(),
        delay: Duration::ZERO,
        delayed: std::collections::VecDeque::new(),
    };
    for addr in cfg.peers {
        actor.redial.insert(
            addr,
            Redial {
                next: Instant::now(),
                backoff: REDIAL_MIN,
            },
        );
    }
    tokio::spawn(actor.run(cmd_rx));
    Ok((
        NetHandle {
            tx: cmd_tx,
            local_peer,
        },
        ev_rx,
    ))
}

struct Actor {
    swarm: Swarm<Behaviour>,
    events: mpsc::Sender<NetEvent>,
    /// Addresses to keep dialling until connected (explicit peers, and
    /// every address discovery reported).
    redial: HashMap<Multiaddr, Redial>,
    peer_addrs: BTreeMap<PeerId, Multiaddr>,
    connected: HashSet<PeerId>,
    listen: Vec<Multiaddr>,
    pending: HashMap<OutboundRequestId, PeerId>,
    stats: NetStats,
    incarnation: Incarnation,
    identities: IdentityWatch<PeerId, Instant>,
    delay: Duration,
    delayed: std::collections::VecDeque<(Instant, NetCommand)>,
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

impl Actor {
    async fn run(mut self, mut commands: mpsc::Receiver<NetCommand>) {
        let mut redial_tick = tokio::time::interval(Duration::from_millis(250));
        let mut hello_tick = tokio::time::interval(HELLO_EVERY);
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => {
                        debug!("network actor stopping: the node went away");
                        return;
                    }
                },
                ev = self.swarm.select_next_some() => self.swarm_event(ev),
                _ = redial_tick.tick() => self.redial(),
                _ = hello_tick.tick() => self.greet_all(),
                _ = Self::due(self.delayed.front().map(|(at, _)| *at)) => {
                    if let Some((_, cmd)) = self.delayed.pop_front() {
                        self.execute(cmd);
                    }
                }
            }
        }
    }

    fn emit(&mut self, ev: NetEvent) {
        // The node drains this channel on every turn of its loop; if it
        // falls this far behind, dropping is better than stalling the
        // Swarm: every message here is retried or superseded.
        if self.events.try_send(ev).is_err() {
            self.stats.dropped_events += 1;
        }
    }

    async fn due(at: Option<Instant>) {
        match at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    fn command(&mut self, cmd: NetCommand) {
        let held = matches!(cmd, NetCommand::Send { .. } | NetCommand::Publish { .. });
        if held && (!self.delay.is_zero() || !self.delayed.is_empty()) {
            if self.delayed.len() >= MAX_DELAYED {
                self.delayed.pop_front();
                self.stats.send_failures += 1;
            }
            self.delayed.push_back((Instant::now() + self.delay, cmd));
            return;
        }
        self.execute(cmd);
    }

    fn execute(&mut self, cmd: NetCommand) {
        match cmd {
            NetCommand::Send { to, addr, bytes } => {
                if let Some(addr) = addr {
                    if !self.connected.contains(&to) && !self.peer_addrs.contains_key(&to) {
                        self.remember(to, addr);
                    }
                }
                let id = self.swarm.behaviour_mut().direct.send_request(&to, bytes);
                self.pending.insert(id, to);
                self.stats.sent += 1;
            }
            NetCommand::Publish { topic, bytes } => {
                let t = IdentTopic::new(topic.name());
                match self.swarm.behaviour_mut().gossipsub.publish(t, bytes) {
                    Ok(_) => self.stats.sent += 1,
                    // Alone, or before the mesh formed: nobody to tell.
                    Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
                    Err(e) => {
                        self.stats.send_failures += 1;
                        debug!(error = %e, "publish failed");
                    }
                }
            }
            NetCommand::Dial(addr) => {
                self.redial.entry(addr).or_insert(Redial {
                    next: Instant::now(),
                    backoff: REDIAL_MIN,
                });
            }
            NetCommand::ListenAddrs(reply) => {
                let _ = reply.send(self.listen.clone());
            }
            NetCommand::SetDelay(d) => {
                warn!(
                    delay_ms = d.as_millis() as u64,
                    "fault injection: delaying every outgoing message"
                );
                self.delay = d;
            }
        }
    }

    fn greet_all(&mut self) {
        let peers: Vec<PeerId> = self.connected.iter().copied().collect();
        for p in peers {
            self.greet(p);
        }
        self.identities.forget_stale(Instant::now());
    }

    fn greet(&mut self, peer: PeerId) {
        let inc = self.incarnation;
        self.swarm.behaviour_mut().hello.send_request(&peer, inc);
    }

    fn redial(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        for (addr, r) in self.redial.iter_mut() {
            if peer_of(addr).is_some_and(|p| self.connected.contains(&p)) {
                r.backoff = REDIAL_MIN;
                continue;
            }
            if r.next <= now {
                r.next = now + r.backoff;
                r.backoff = (r.backoff * 2).min(REDIAL_MAX);
                due.push(addr.clone());
            }
        }
        for addr in due {
            let opts = match peer_of(&addr) {
                Some(p) if self.connected.contains(&p) => continue,
                Some(p) => DialOpts::peer_id(p)
                    .addresses(vec![addr.clone()])
                    .allocate_new_port()
                    .build(),
                None => DialOpts::unknown_peer_id()
                    .address(addr.clone())
                    .allocate_new_port()
                    .build(),
            };
            if let Err(e) = self.swarm.dial(opts) {
                debug!(addr = %addr, error = %e, "dial failed");
            }
        }
    }

    fn remember(&mut self, peer: PeerId, addr: Multiaddr) {
        if peer == *self.swarm.local_peer_id() {
            return;
        }
        let full = if peer_of(&addr).is_some() {
            addr.clone()
        } else {
            addr.clone().with(Protocol::P2p(peer))
        };
        self.swarm.add_peer_address(peer, addr);
        self.peer_addrs.insert(peer, full.clone());
        // Bounded by the LAN's size; a peer's newest address replaces others.
        self.redial.retain(|a, _| peer_of(a) != Some(peer));
        self.redial.insert(
            full,
            Redial {
                next: Instant::now(),
                backoff: REDIAL_MIN,
            },
        );
    }

    fn swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(addr = %address, "listening");
                self.listen.push(address.clone());
                self.emit(NetEvent::Listening(address));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                if self.connected.insert(peer_id) {
                    debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                    self.emit(NetEvent::Connected(peer_id));
                    self.greet(peer_id);
                }
                if endpoint.is_dialer() {
                    let addr = endpoint.get_remote_address().clone();
                    // An explicit peer given without its id: now we know it.
                    if peer_of(&addr).is_none() {
                        self.redial.remove(&addr);
                        self.remember(peer_id, addr);
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } if self.connected.remove(&peer_id) => {
                debug!(peer = %peer_id, "disconnected");
                self.emit(NetEvent::Disconnected(peer_id));
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(list))) => {
                for (peer, addr) in list {
                    if !self.peer_addrs.contains_key(&peer) {
                        info!(peer = %peer, addr = %addr, "discovered by mdns");
                    }
                    self.remember(peer, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Expired(_))) => {}
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                // Keep one reachable listen address of each peer that
                // connected to us, so we can dial it back after a drop.
                if let Some(addr) = info
                    .listen_addrs
                    .iter()
                    .find(|a| !is_unspecified(a))
                    .cloned()
                {
                    self.remember(peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(_)) => {}
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                message,
                ..
            })) => {
                self.stats.received += 1;
                self.emit(NetEvent::Gossip {
                    source: message.source,
                    bytes: message.data,
                });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(_)) => {}
            SwarmEvent::Behaviour(BehaviourEvent::Direct(request_response::Event::Message {
                peer,
                message,
                ..
            })) => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    self.stats.received += 1;
                    let _ = self.swarm.behaviour_mut().direct.send_response(channel, ());
                    self.emit(NetEvent::Direct {
                        from: peer,
                        bytes: request,
                    });
                }
                request_response::Message::Response { request_id, .. } => {
                    self.pending.remove(&request_id);
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Direct(
                request_response::Event::OutboundFailure {
                    request_id,
                    error,
                    peer,
                    ..
                },
            )) => {
                self.pending.remove(&request_id);
                self.stats.send_failures += 1;
                debug!(peer = %peer, error = %error, "send failed");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Direct(
                request_response::Event::InboundFailure { peer, error, .. },
            )) => {
                if matches!(error, request_response::InboundFailure::Io(_)) {
                    self.stats.oversized += 1;
                }
                debug!(peer = %peer, error = %error, "inbound failure");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Direct(_)) => {}
            SwarmEvent::Behaviour(BehaviourEvent::Hello(request_response::Event::Message {
                peer,
                message,
                ..
            })) => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let verdict = self.identities.greet(&peer, request, Instant::now());
                    if verdict != Verdict::Ok {
                        warn!(peer = %peer, "two live processes share this peer's identity; refusing the later one");
                    }
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .hello
                        .send_response(channel, verdict);
                }
                request_response::Message::Response {
                    response: Verdict::Duplicate { other },
                    ..
                } => self.emit(NetEvent::IdentityConflict {
                    reporter: peer,
                    other,
                }),
                request_response::Message::Response { .. } => {}
            },
            SwarmEvent::Behaviour(BehaviourEvent::Hello(_)) => {}
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, error = %error, "outgoing connection failed");
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                // A wrong cluster key lands here: the handshake fails.
                warn!(error = %error, "incoming connection failed");
            }
            _ => {}
        }
    }
}

fn is_unspecified(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}
