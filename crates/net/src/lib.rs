//! shoal's network actor. One task owns the libp2p Swarm (STYLE rule 2);
//! the node talks to it through a bounded channel of `NetCommand`s and
//! hears from it on a bounded channel of `NetEvent`s.
//!
//! | file | what it holds |
//! | --- | --- |
//! | `transport` | TCP, cluster key (pnet), noise, yamux; the behaviours |
//! | `codec` | the byte formats of the one-to-one and greeting protocols |
//! | `lane` | each peer's long-lived stream for small one-to-one frames |
//! | `sealed` | gossip signed inside, checked once per message (pure) |
//! | `handshake` | a failed connection's kind, from its error text |
//! | `redial` | which addresses to dial when (pure) |
//! | `dialer` | the actor's dialling |
//! | `identity_watch` | two live processes with one identity (pure) |
//! | `fault` | test-only delay of outgoing messages (pure) |
//! | `actor` | the task that owns the Swarm |
//! | `bulk` | large frames on a swarm and a thread of their own |
//!
//! Discovery: mDNS (on by default) and explicit peer addresses. mDNS never
//! dials and reports a peer rarely, so every address learnt is remembered.
//! A node keeps connected, and redials with backoff, the peers it was
//! given, the members the node names (`NetCommand::Keep`), and six of the
//! others it found, picked by a hash of the pair; a connection it made
//! that it has no reason to keep (to a peer a frame went to once, or a
//! second one to a peer) it closes once idle, so a follower holds about a
//! dozen peers however large the cluster (`redial`). A pair should hold one
//! connection: a pending dial is waited for, and of two peers that know
//! each other the smaller id dials first; two dials that still cross leave
//! a pair two for a while (`shoal_net_connections` counts connections,
//! `shoal_net_idle_closed` those closed). A peer that dials again while
//! this node holds an older connection to it has lost that one (a
//! partition or a cut link kept its close from arriving): the older is
//! closed at once (`shoal_net_superseded`).
//!
//! Gossipsub carries broadcast only (committed events, transient events,
//! snapshot requests). Each message is signed by its publisher inside its
//! bytes (`sealed`), not by gossipsub: gossipsub checks its own signature
//! on every copy a peer relays, before it drops duplicates, while a sealed
//! message is checked once, after, and relayed only if it holds.
//! One-to-one messages are opaque frames. Small ones (Raft, forwarded
//! commands, requests) follow each other on one long-lived stream per
//! peer (`lane`). Large ones (snapshot chunks, long ranges) go over a
//! request-response protocol whose request is one frame and whose
//! response is an empty acknowledgement, on connections of their own
//! driven by a thread of their own once the peer has dialled them
//! (`bulk`), on the main ones until then. Either way a reply (a range, a
//! snapshot chunk) travels as a frame of its own. We
//! keep it so rather than answer on the response: most frames have no
//! reply (Raft, forwarded commands answered by the sender's own apply),
//! and the replies that exist come from the core at its own time (a
//! snapshot chunk may wait for a build of a second or more), where a held
//! response channel would tie the core to the transport's request timeout
//! and make the shells route outputs back to channels. The acknowledgement
//! tells the sender a frame was delivered (a failure is counted); on a
//! lane, a failed write or a full queue is counted instead.
//! Both protocols are versioned by name and capped at one message size.
//!
//! A third protocol greets the connected peers in turn, at most eight a
//! second, with this process's incarnation, signed with its identity key, so two live
//! processes sharing one identity are told apart and the later one
//! refused, on evidence it can check (see `identity_watch`, `greeting`).

mod actor;
pub mod bulk;
pub mod codec;
mod dialer;
pub mod fault;
pub mod greeting;
mod handshake;
pub mod identity_watch;
pub mod lane;
pub mod redial;
pub mod sealed;
pub mod stuck;
mod transport;

pub use identity_watch::{IdentityWatch, Incarnation, Verdict};
pub use transport::{new_cluster_key_text, parse_cluster_key};

pub use libp2p::identity;
pub use libp2p::multiaddr::Protocol;
pub use libp2p::pnet::PreSharedKey as ClusterKey;
pub use libp2p::{Multiaddr as Addr, PeerId as Peer};

use libp2p::gossipsub::IdentTopic;
use libp2p::identity::Keypair;
use libp2p::pnet::PreSharedKey;
use libp2p::{Multiaddr, PeerId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::warn;

/// One-to-one protocol name; the version is part of it.
pub const DIRECT_PROTOCOL: &str = "/shoal/direct/1";
/// Greetings that carry a process's incarnation.
pub const HELLO_PROTOCOL: &str = "/shoal/hello/2";
/// Topics carry messages sealed by `sealed`; the version is part of the
/// name, so nodes of another version do not hear each other's gossip.
pub const COMMITTED_TOPIC: &str = "shoal/2/committed";
pub const TRANSIENT_TOPIC: &str = "shoal/2/transient";
/// Requests for a snapshot; the offers and bytes go one-to-one.
pub const SNAPSHOT_TOPIC: &str = "shoal/snapshot/2";
/// Large frames, as `DIRECT_PROTOCOL`, on the bulk swarm (`bulk`).
pub const BULK_PROTOCOL: &str = "/shoal/bulk/1";
/// Commands and events waiting between the actor and the node.
const CHANNEL: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    Committed,
    Transient,
    Snapshot,
}

impl Topic {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Topic::Committed => crate::COMMITTED_TOPIC,
            Topic::Transient => crate::TRANSIENT_TOPIC,
            Topic::Snapshot => crate::SNAPSHOT_TOPIC,
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
    /// Receive a topic's gossip (and relay it), or stop.
    Subscribe {
        topic: Topic,
        on: bool,
    },
    /// Keep these addresses connected, all of them: the members this node
    /// talks to. A peer named before and not now is kept no longer, but
    /// as a peer found (`redial::FOUND_PICKS`).
    Keep(Vec<Multiaddr>),
    /// This peer fell silent: close its connections (one may be
    /// black-holed by a cut link, its retransmissions backing off for
    /// minutes) and dial it afresh at once.
    Reconnect(PeerId),
    /// Test-only fault: hold every outgoing message this long first (for
    /// chaos runs on kernels without netem). Zero turns it off.
    SetDelay(Duration),
}

#[derive(Debug)]
pub enum NetEvent {
    /// A one-to-one frame from an authenticated peer.
    Direct {
        from: PeerId,
        bytes: Vec<u8>,
    },
    /// A broadcast frame, signed by `source` (checked: `sealed`).
    Gossip {
        source: PeerId,
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
    /// Admit no peer at all: every connection is closed as it opens (a
    /// node that runs commands without a cluster key, see `shoal up
    /// --allow-exec`).
    pub solitary: bool,
    /// Found peers kept dialled (`redial::FOUND_PICKS`).
    pub found_picks: usize,
    /// How long a connection this node made and has no reason to keep
    /// stays after the last frame to its peer (`redial::IDLE_FOR`).
    pub idle_for: Duration,
    /// Starts the thread that drives the connections for large frames
    /// (`bulk`); `None` sends them on the main connections.
    pub bulk_thread: Option<bulk::ThreadStarter>,
    /// The bulk swarm's port on the first listen address's host; 0: one
    /// the system picks.
    pub bulk_port: u16,
    /// Bytes of large frames under way on bulk connections, at most
    /// (`bulk::MAX_IN_FLIGHT`).
    pub bulk_in_flight: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("network setup: {0}")]
    Setup(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
}

/// What the actor counts; read with `NetHandle::counters`.
#[derive(Debug, Default)]
pub struct NetCounters {
    /// Frames sent one-to-one or published.
    pub sent: AtomicU64,
    /// Frames received one-to-one or by gossip.
    pub received: AtomicU64,
    /// Of those received, by gossip (each message once, however many
    /// peers relayed it).
    pub gossip_received: AtomicU64,
    /// Frames not delivered: a failed send or publish, a frame that found
    /// its lane's queue full, a held message dropped by the delay fault.
    pub send_failures: AtomicU64,
    /// Inbound streams that failed (oversized, cut or timed out), and
    /// lanes refused because their peer held too many open.
    pub inbound_failures: AtomicU64,
    /// Events for the node dropped because its queue was full.
    pub dropped_events: AtomicU64,
    /// Greetings not signed by their sender, and "duplicate" verdicts
    /// without evidence this node could check.
    pub false_verdicts: AtomicU64,
    /// Connections whose handshake failed (most likely another cluster key).
    pub handshake_failures: AtomicU64,
    /// Connections closed because this node admits no peers.
    pub refused_peers: AtomicU64,
    /// Gossip messages to a peer dropped because its send queue was full
    /// (the peer reads too slowly); a committed entry dropped this way
    /// comes again by range.
    pub gossip_send_dropped: AtomicU64,
    /// Peers reconnected because gossip to them stayed blocked
    /// (`stuck::STUCK_FOR`).
    pub gossip_reconnects: AtomicU64,
    /// Gossip messages refused: not sealed, or not signed by the peer
    /// they name (`sealed`). None of them is relayed.
    pub gossip_refused: AtomicU64,
    /// Connections open to peers now (a gauge); a pair may hold several
    /// when their dials crossed.
    pub connections: AtomicU64,
    /// Connections this node made and closed once it had no reason to
    /// keep them (`redial::to_close`).
    pub idle_closed: AtomicU64,
    /// Connections closed because their peer opened a newer one
    /// (`redial::superseded`).
    pub superseded: AtomicU64,
    /// Large frames sent on a bulk connection (`bulk`).
    pub bulk_sent: AtomicU64,
    /// Bulk connections open now (a gauge).
    pub bulk_connections: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    pub sent: u64,
    pub received: u64,
    pub gossip_received: u64,
    pub send_failures: u64,
    pub inbound_failures: u64,
    pub dropped_events: u64,
    pub false_verdicts: u64,
    pub handshake_failures: u64,
    pub refused_peers: u64,
    pub gossip_send_dropped: u64,
    pub gossip_reconnects: u64,
    pub gossip_refused: u64,
    pub connections: u64,
    pub idle_closed: u64,
    pub superseded: u64,
    pub bulk_sent: u64,
    pub bulk_connections: u64,
}

/// Hands an event to the node. The node drains this channel on every turn
/// of its loop; if it falls this far behind, dropping (counted) is better
/// than stalling the network: every message here is retried or
/// superseded.
pub(crate) fn emit(events: &mpsc::Sender<NetEvent>, counters: &NetCounters, ev: NetEvent) {
    if events.try_send(ev).is_err() {
        counters.dropped_events.fetch_add(1, Ordering::Relaxed);
    }
}

/// A cloneable handle to the actor.
#[derive(Clone, Debug)]
pub struct NetHandle {
    tx: mpsc::Sender<NetCommand>,
    counters: Arc<NetCounters>,
}

impl NetHandle {
    /// Queues a command; fails (and the caller counts it) when the actor is
    /// saturated rather than blocking the node's loop.
    pub fn try_send(&self, cmd: NetCommand) -> bool {
        self.tx.try_send(cmd).is_ok()
    }

    pub fn stats(&self) -> NetStats {
        let c = &self.counters;
        NetStats {
            sent: c.sent.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            gossip_received: c.gossip_received.load(Ordering::Relaxed),
            send_failures: c.send_failures.load(Ordering::Relaxed),
            inbound_failures: c.inbound_failures.load(Ordering::Relaxed),
            dropped_events: c.dropped_events.load(Ordering::Relaxed),
            false_verdicts: c.false_verdicts.load(Ordering::Relaxed),
            handshake_failures: c.handshake_failures.load(Ordering::Relaxed),
            refused_peers: c.refused_peers.load(Ordering::Relaxed),
            gossip_send_dropped: c.gossip_send_dropped.load(Ordering::Relaxed),
            gossip_reconnects: c.gossip_reconnects.load(Ordering::Relaxed),
            gossip_refused: c.gossip_refused.load(Ordering::Relaxed),
            connections: c.connections.load(Ordering::Relaxed),
            idle_closed: c.idle_closed.load(Ordering::Relaxed),
            superseded: c.superseded.load(Ordering::Relaxed),
            bulk_sent: c.bulk_sent.load(Ordering::Relaxed),
            bulk_connections: c.bulk_connections.load(Ordering::Relaxed),
        }
    }
}

/// An error and its causes, as one line. libp2p's transport errors say
/// nothing themselves and keep the cause as their source.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut next = Some(e);
    while let Some(e) = next {
        let s = e.to_string();
        if !s.is_empty() && !parts.contains(&s) {
            parts.push(s);
        }
        next = e.source();
    }
    if parts.is_empty() {
        return format!("{e:?}");
    }
    parts.join(": ")
}

/// The IP address in `addr`, if it has one.
pub fn host_of(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(a) => Some(std::net::IpAddr::V4(a)),
        Protocol::Ip6(a) => Some(std::net::IpAddr::V6(a)),
        _ => None,
    })
}

/// The TCP port in `addr`, if it has one.
pub fn tcp_port(addr: &Multiaddr) -> Option<u16> {
    addr.iter().find_map(|p| match p {
        Protocol::Tcp(p) => Some(p),
        _ => None,
    })
}

/// Refuses a TCP listen address whose port some process already listens
/// on. libp2p binds with SO_REUSEPORT, so two nodes on one port would both
/// bind and share its connections between them; a plain bind (no
/// SO_REUSEPORT) finds the port taken.
fn port_free(addr: &Multiaddr) -> Result<(), NetError> {
    let (Some(ip), Some(port)) = (host_of(addr), tcp_port(addr)) else {
        return Ok(());
    };
    if port == 0 {
        return Ok(());
    }
    match std::net::TcpListener::bind((ip, port)) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(NetError::Listen {
            addr: addr.clone(),
            reason: format!(
                "port {port} is in use (another shoal?); give this node its own --listen port"
            ),
        }),
        // Anything else (no such address here, ...) libp2p reports itself.
        _ => Ok(()),
    }
}

/// Starts the actor: listens, subscribes, dials the given peers.
pub async fn spawn(
    keypair: Keypair,
    cfg: NetConfig,
) -> Result<(NetHandle, mpsc::Receiver<NetEvent>), NetError> {
    let mut swarm = transport::build_swarm(keypair.clone(), &cfg)?;
    for t in [Topic::Committed, Topic::Transient, Topic::Snapshot] {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&IdentTopic::new(t.name()))
            .map_err(|e| NetError::Setup(e.to_string()))?;
    }
    for addr in &cfg.listen {
        port_free(addr)?;
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen {
                addr: addr.clone(),
                reason: error_chain(&e),
            })?;
    }
    let (cmd_tx, cmd_rx) = mpsc::channel(CHANNEL);
    let (ev_tx, ev_rx) = mpsc::channel(CHANNEL);
    let counters = Arc::new(NetCounters::default());
    let mut control = swarm.behaviour().lane.new_control();
    let incoming = control
        .accept(libp2p::StreamProtocol::new(lane::LANE_PROTOCOL))
        .map_err(|e| NetError::Setup(e.to_string()))?;
    tokio::spawn(lane::serve(incoming, ev_tx.clone(), counters.clone()));
    let bulk = match cfg.bulk_thread.filter(|_| !cfg.solitary) {
        None => None,
        Some(starter) => {
            let started = bulk::start(
                keypair.clone(),
                &cfg,
                starter,
                control.clone(),
                ev_tx.clone(),
                counters.clone(),
            )
            .await;
            match started {
                Ok(started) => Some(started),
                Err(e) => {
                    warn!(error = %e, "large frames go on the main connections");
                    None
                }
            }
        }
    };
    let (bulk, bulk_ports) = bulk.unzip();
    let mut actor = actor::Actor {
        swarm,
        events: ev_tx,
        redials: Default::default(),
        peer_addrs: BTreeMap::new(),
        connected: HashSet::new(),
        dialing: HashMap::new(),
        last_sent: HashMap::new(),
        members: HashSet::new(),
        found_picks: cfg.found_picks,
        idle_for: cfg.idle_for,
        given: HashSet::new(),
        conns: HashMap::new(),
        counters: counters.clone(),
        gossip_seq: sealed::first_seq(),
        key: keypair,
        incarnation: cfg.incarnation,
        identities: IdentityWatch::default(),
        greeted_last: None,
        delay: Default::default(),
        handshake_warned: [None; 2],
        solitary: cfg.solitary,
        refusal_warned: None,
        slow_peer_warned: None,
        refused_gossip_warned: None,
        stuck: Default::default(),
        stuck_warned: None,
        lanes: lane::Lanes::new(control, counters.clone()),
        bulk,
        bulk_ports,
    };
    if !cfg.solitary {
        for addr in cfg.peers {
            // Given by the user: dialled at once, whatever the ids.
            actor.given.extend(actor::peer_of(&addr));
            actor
                .redials
                .add(addr, Instant::now(), Duration::ZERO, None);
        }
    }
    tokio::spawn(actor.run(cmd_rx));
    Ok((
        NetHandle {
            tx: cmd_tx,
            counters,
        },
        ev_rx,
    ))
}

#[cfg(test)]
mod tests {
    use super::error_chain;
    use libp2p::TransportError;

    #[test]
    fn a_transport_error_that_says_nothing_is_described_by_its_cause() {
        let cause = std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, "no such address");
        let e: TransportError<std::io::Error> = TransportError::Other(cause);
        assert_eq!(e.to_string(), "", "libp2p's own text");
        assert_eq!(error_chain(&e), "no such address");
    }
}
