//! The one task that owns the Swarm: it performs the node's commands,
//! redials what drops, greets peers, and turns swarm events into the
//! node's `NetEvent`s.

use crate::dialer::Learnt;
use crate::fault::Delay;
use crate::greeting::{believe, Greeting};
use crate::handshake::{handshake_failed, Handshake};
use crate::identity_watch::{greeting_round, IdentityWatch, Incarnation, Verdict, GREET_PER_ROUND};
use crate::lane::{Lanes, LANE_MAX_FRAME};
use crate::redial::Redials;
use crate::stuck::{Stuck, STUCK_FOR};
use crate::transport::{Behaviour, BehaviourEvent};
use crate::{NetCommand, NetCounters, NetEvent};
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{identify, mdns, Multiaddr, PeerId, Swarm};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

const REDIAL_EVERY: Duration = Duration::from_millis(250);
const HELLO_EVERY: Duration = Duration::from_secs(1);
/// A warning about what peers keep doing is given at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// An open connection, as the actor keeps it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Conn {
    pub peer: PeerId,
    /// When it was set up (`redial::superseded`).
    pub at: Instant,
    /// Whether this actor dialled it (its own dial, or a frame's): only
    /// those it closes when idle (`redial::to_close`).
    pub made: bool,
}

pub(crate) struct Actor {
    pub swarm: Swarm<Behaviour>,
    pub events: mpsc::Sender<NetEvent>,
    pub redials: Redials<Multiaddr, Instant>,
    /// The address each peer is dialled at (its newest).
    pub peer_addrs: BTreeMap<PeerId, Multiaddr>,
    pub connected: HashSet<PeerId>,
    /// The dial pending to each peer this actor dialled, until it connects
    /// or fails (within the transport's connect timeout).
    pub dialing: HashMap<PeerId, (ConnectionId, Instant)>,
    /// `NetConfig::found_picks` and `NetConfig::idle_for`.
    pub found_picks: usize,
    pub idle_for: Duration,
    /// The members this node was last told to keep (`NetCommand::Keep`).
    pub members: HashSet<PeerId>,
    /// The peers given by the user (`NetConfig::peers`), kept whatever
    /// the members.
    pub given: HashSet<PeerId>,
    /// When a frame last went to each connected peer.
    pub last_sent: HashMap<PeerId, Instant>,
    /// Every open connection: its peer, when it was set up, and whether
    /// this actor dialled it. One being closed is taken out at once, not
    /// when the swarm reports it closed.
    pub conns: HashMap<ConnectionId, Conn>,
    pub counters: Arc<NetCounters>,
    /// Signs this process's greetings.
    pub key: Keypair,
    /// The sequence number of the last gossip this process sealed.
    pub gossip_seq: u64,
    pub incarnation: Incarnation,
    pub identities: IdentityWatch<PeerId, Instant, Greeting>,
    /// The peer greeted last in the rounds of greetings.
    pub greeted_last: Option<PeerId>,
    pub delay: Delay<NetCommand, Instant>,
    /// When a handshake that failed, and one that timed out, was last
    /// warned about: each kind on its own clock, so that one does not
    /// hide the other.
    pub handshake_warned: [Option<Instant>; 2],
    /// Admit no peers (`NetConfig::solitary`).
    pub solitary: bool,
    /// When a refused peer was last warned about.
    pub refusal_warned: Option<Instant>,
    /// When a peer too slow to take our gossip was last warned about.
    pub slow_peer_warned: Option<Instant>,
    /// When gossip that failed its check was last warned about.
    pub refused_gossip_warned: Option<Instant>,
    /// Peers whose gossip stays blocked, and when one was last warned about.
    pub stuck: Stuck<PeerId, Instant>,
    pub stuck_warned: Option<Instant>,
    /// Each peer's long-lived stream for small one-to-one frames.
    pub lanes: Lanes,
    /// Large frames' own connections (`bulk`), and the ports peers tell.
    pub bulk: Option<crate::bulk::Link>,
    pub bulk_ports: Option<mpsc::Receiver<(PeerId, u16)>>,
}

/// Whether a rate-limited warning last given at `last` is due again
/// (and if so, it is given now).
fn warn_due(last: &mut Option<Instant>) -> bool {
    let now = Instant::now();
    if last.is_some_and(|t| now < t + WARN_EVERY) {
        return false;
    }
    *last = Some(now);
    true
}

pub(crate) fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

fn is_unspecified(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

/// The next port a peer tells, or never.
async fn next_port(ports: &mut Option<mpsc::Receiver<(PeerId, u16)>>) -> Option<(PeerId, u16)> {
    match ports {
        Some(ports) => ports.recv().await,
        None => std::future::pending().await,
    }
}

async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Actor {
    pub async fn run(mut self, mut commands: mpsc::Receiver<NetCommand>) {
        let mut redial_tick = tokio::time::interval(REDIAL_EVERY);
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
                ev = futures::StreamExt::select_next_some(&mut self.swarm) => self.swarm_event(ev),
                _ = redial_tick.tick() => self.redial(),
                _ = hello_tick.tick() => self.greet_round(),
                Some((peer, port)) = next_port(&mut self.bulk_ports) => {
                    if let Some(bulk) = &mut self.bulk {
                        bulk.invited_by(peer, port);
                    }
                }
                _ = until(self.delay.next_due()) => {
                    if let Some(cmd) = self.delay.pop_due(Instant::now()) {
                        self.execute(cmd);
                    }
                }
            }
        }
    }

    fn emit(&mut self, ev: NetEvent) {
        crate::emit(&self.events, &self.counters, ev);
    }

    fn command(&mut self, cmd: NetCommand) {
        let held = matches!(cmd, NetCommand::Send { .. } | NetCommand::Publish { .. });
        if held && self.delay.active() {
            if self.delay.hold(cmd, Instant::now()) {
                self.counters.send_failures.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        self.execute(cmd);
    }

    fn execute(&mut self, cmd: NetCommand) {
        match cmd {
            NetCommand::Send { to, addr, bytes } => {
                if let Some(addr) = addr {
                    if !self.connected.contains(&to) && !self.peer_addrs.contains_key(&to) {
                        // It may not know this node: dialled at once.
                        self.remember(to, addr, Learnt::Addressee);
                    }
                }
                self.send(to, bytes);
                self.counters.sent.fetch_add(1, Ordering::Relaxed);
            }
            NetCommand::Publish { topic, bytes } => {
                self.gossip_seq = self.gossip_seq.wrapping_add(1);
                let sealed = crate::sealed::seal(&self.key, topic.name(), self.gossip_seq, &bytes);
                let t = IdentTopic::new(topic.name());
                match self.swarm.behaviour_mut().gossipsub.publish(t, sealed) {
                    Ok(_) => {
                        self.counters.sent.fetch_add(1, Ordering::Relaxed);
                    }
                    // Alone, or before the mesh formed: nobody to tell.
                    Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
                    Err(e) => {
                        self.counters.send_failures.fetch_add(1, Ordering::Relaxed);
                        debug!(error = %e, "publish failed");
                    }
                }
            }
            NetCommand::Subscribe { topic, on } => {
                let t = IdentTopic::new(topic.name());
                let gossip = &mut self.swarm.behaviour_mut().gossipsub;
                if on {
                    if let Err(e) = gossip.subscribe(&t) {
                        warn!(topic = topic.name(), error = %e, "cannot subscribe");
                    }
                } else {
                    gossip.unsubscribe(&t);
                }
            }
            NetCommand::Keep(addrs) => self.keep(addrs),
            NetCommand::Reconnect(peer) => {
                debug!(peer = %peer, "silent: reconnecting");
                self.reconnect(peer);
            }
            NetCommand::SetDelay(d) => {
                warn!(
                    delay_ms = d.as_millis() as u64,
                    "fault injection: delaying every outgoing message"
                );
                self.delay.set(d);
            }
        }
    }

    /// Sends a one-to-one frame: on the peer's lane, or on a stream of
    /// its own if it is large, on the bulk connection where there is one.
    fn send(&mut self, to: PeerId, bytes: Vec<u8>) {
        self.last_sent.insert(to, Instant::now());
        if bytes.len() <= LANE_MAX_FRAME {
            self.lanes.send(to, bytes);
            return;
        }
        let bytes = match &mut self.bulk {
            Some(bulk) => match bulk.send(to, bytes) {
                Some(bytes) => bytes,
                None => return,
            },
            None => bytes,
        };
        self.swarm.behaviour_mut().direct.send_request(&to, bytes);
    }

    /// Reconnects a peer whose gossip is stuck (`stuck`), counted and
    /// warned about now and then.
    fn stuck_reconnect(&mut self, peer: PeerId, why: &str) {
        self.counters
            .gossip_reconnects
            .fetch_add(1, Ordering::Relaxed);
        if warn_due(&mut self.stuck_warned) {
            warn!(peer = %peer, "{why}");
        }
        self.reconnect(peer);
    }

    /// Publishes how many connections the swarm holds (`shoal_net_connections`).
    fn count_connections(&self) {
        let open = self
            .swarm
            .network_info()
            .connection_counters()
            .num_established();
        self.counters
            .connections
            .store(u64::from(open), Ordering::Relaxed);
    }

    /// Greets this round's peers (`greeting_round`).
    fn greet_round(&mut self) {
        let peers: Vec<PeerId> = self.connected.iter().copied().collect();
        let round = greeting_round(&peers, self.greeted_last.as_ref(), GREET_PER_ROUND);
        if let Some(last) = round.last() {
            self.greeted_last = Some(*last);
        }
        self.greet(&round);
        self.identities.forget_stale(Instant::now());
    }

    /// Greets `peers` with one greeting signed for all of them: it names
    /// no receiver.
    fn greet(&mut self, peers: &[PeerId]) {
        if peers.is_empty() {
            return;
        }
        let greeting = Greeting::sign(&self.key, self.incarnation, wall_ms());
        for p in peers {
            self.swarm
                .behaviour_mut()
                .hello
                .send_request(p, greeting.clone());
        }
    }

    fn swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(addr = %address, "listening");
                self.emit(NetEvent::Listening(address));
            }
            SwarmEvent::ConnectionEstablished {
                connection_id,
                endpoint,
                ..
            } if self.solitary => {
                self.swarm.close_connection(connection_id);
                self.counters.refused_peers.fetch_add(1, Ordering::Relaxed);
                if warn_due(&mut self.refusal_warned) {
                    warn!(
                        addr = %endpoint.get_remote_address(),
                        "refused a peer: this node runs commands without a cluster key, so it \
                         admits no other node (give every node --cluster-key to form a cluster \
                         that runs commands)"
                    );
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                self.connection_made(peer_id, connection_id, endpoint.is_dialer());
                self.count_connections();
                if let Some(bulk) = &mut self.bulk {
                    bulk.reached(peer_id, endpoint.get_remote_address());
                }
                if self.connected.insert(peer_id) {
                    debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                    self.emit(NetEvent::Connected(peer_id));
                    self.greet(&[peer_id]);
                }
                if endpoint.is_dialer() {
                    let addr = endpoint.get_remote_address().clone();
                    // An explicit peer given without its id: now we know it.
                    if peer_of(&addr).is_none() && self.redials.remove(&addr) {
                        self.given.insert(peer_id);
                        self.remember(peer_id, addr, Learnt::Asked);
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.count_connections();
                self.conns.remove(&connection_id);
                if num_established == 0 {
                    self.last_sent.remove(&peer_id);
                    if let Some(bulk) = &mut self.bulk {
                        bulk.gone(&peer_id);
                    }
                }
                if num_established == 0 && self.connected.remove(&peer_id) {
                    debug!(peer = %peer_id, "disconnected");
                    self.stuck.forget(&peer_id);
                    self.emit(NetEvent::Disconnected(peer_id));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(list))) => {
                for (peer, addr) in list {
                    if !self.peer_addrs.contains_key(&peer) {
                        info!(peer = %peer, addr = %addr, "discovered by mdns");
                    }
                    self.remember(peer, addr, Learnt::Found);
                }
            }
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
                    self.remember(peer_id, addr, Learnt::Found);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source: from,
                message_id: id,
                message,
            })) => {
                let verdict = match crate::sealed::open(message.topic.as_str(), message.data) {
                    Ok((source, bytes)) => {
                        self.counters.received.fetch_add(1, Ordering::Relaxed);
                        self.counters
                            .gossip_received
                            .fetch_add(1, Ordering::Relaxed);
                        self.emit(NetEvent::Gossip { source, bytes });
                        gossipsub::MessageAcceptance::Accept
                    }
                    Err(e) => {
                        self.counters.gossip_refused.fetch_add(1, Ordering::Relaxed);
                        if warn_due(&mut self.refused_gossip_warned) {
                            warn!(peer = %from, error = %e, "refused gossip relayed by a peer");
                        }
                        gossipsub::MessageAcceptance::Reject
                    }
                };
                let gossip = &mut self.swarm.behaviour_mut().gossipsub;
                gossip.report_message_validation_result(&id, &from, verdict);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::SlowPeer {
                peer_id,
                failed_messages,
            })) => {
                // gossipsub's own warning (one line per dropped message,
                // with the message's bytes) is filtered out by default.
                let dropped = (failed_messages.priority + failed_messages.non_priority) as u64;
                self.counters
                    .gossip_send_dropped
                    .fetch_add(dropped, Ordering::Relaxed);
                if warn_due(&mut self.slow_peer_warned) {
                    warn!(
                        peer = %peer_id,
                        dropped,
                        "a peer reads gossip too slowly: messages to it were dropped \
                         (it fetches committed entries it missed by range)"
                    );
                }
                if self.stuck.report(peer_id, Instant::now()) {
                    let why = format!(
                        "gossip to a peer stayed blocked for {} s: reconnecting it",
                        STUCK_FOR.as_secs()
                    );
                    self.stuck_reconnect(peer_id, &why);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(
                gossipsub::Event::GossipsubNotSupported { peer_id },
            )) if self.stuck.refused(peer_id, Instant::now()) => {
                self.stuck_reconnect(peer_id, "a peer refused gossip: reconnecting it");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Direct(ev)) => self.direct_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Hello(ev)) => self.hello_event(ev),
            SwarmEvent::OutgoingConnectionError {
                peer_id,
                connection_id,
                error,
            } => {
                self.dial_ended(peer_id, connection_id);
                let error = error.to_string();
                if let Some(how) = handshake_failed(&error) {
                    self.warn_handshake("to", how, &error);
                } else {
                    debug!(peer = ?peer_id, error = %error, "outgoing connection failed");
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                let error = error.to_string();
                if let Some(how) = handshake_failed(&error) {
                    self.warn_handshake("from", how, &format!("{send_back_addr}: {error}"));
                } else {
                    debug!(error = %error, "incoming connection failed");
                }
            }
            _ => {}
        }
    }

    /// A handshake failed: say what most likely went wrong, now and then.
    fn warn_handshake(&mut self, direction: &str, how: Handshake, error: &str) {
        self.counters
            .handshake_failures
            .fetch_add(1, Ordering::Relaxed);
        if !warn_due(&mut self.handshake_warned[how as usize]) {
            return;
        }
        // A listener is told only that negotiation failed: a dialer with
        // another key, or one that gave up waiting on a busy host.
        let or_busy = if direction == "from" {
            "; or the peer gave up waiting on a busy host"
        } else {
            ""
        };
        match how {
            Handshake::Failed => warn!(
                error = %error,
                "a connection {direction} a peer failed its handshake: most likely the two nodes \
                 have different cluster keys (--cluster-key), or one has none{or_busy}"
            ),
            Handshake::TimedOut => warn!(
                error = %error,
                "a connection {direction} a peer timed out in its handshake: the peer, or this \
                 host, is too busy to answer in time (it is dialled again); if this goes on on \
                 idle hosts, the two nodes may have different cluster keys (--cluster-key)"
            ),
        }
    }

    fn direct_event(&mut self, ev: request_response::Event<Vec<u8>, ()>) {
        match ev {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                self.counters.received.fetch_add(1, Ordering::Relaxed);
                let _ = self.swarm.behaviour_mut().direct.send_response(channel, ());
                self.emit(NetEvent::Direct {
                    from: peer,
                    bytes: request,
                });
            }
            request_response::Event::OutboundFailure { error, peer, .. } => {
                self.counters.send_failures.fetch_add(1, Ordering::Relaxed);
                debug!(peer = %peer, error = %error, "send failed");
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                self.counters
                    .inbound_failures
                    .fetch_add(1, Ordering::Relaxed);
                debug!(peer = %peer, error = %error, "inbound failure");
            }
            _ => {}
        }
    }

    fn hello_event(&mut self, ev: request_response::Event<Greeting, Verdict<Greeting>>) {
        let request_response::Event::Message { peer, message, .. } = ev else {
            return;
        };
        match message {
            request_response::Message::Request {
                request, channel, ..
            } => {
                // Judged only when the greeter signed it: it is evidence
                // for others later.
                let verdict = if request.signed_by(&peer) {
                    let inc = request.incarnation;
                    self.identities.greet(&peer, inc, request, Instant::now())
                } else {
                    self.counters.false_verdicts.fetch_add(1, Ordering::Relaxed);
                    Verdict::Ok
                };
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
                response: Verdict::Duplicate { evidence },
                ..
            } => {
                let me = *self.swarm.local_peer_id();
                match believe(&evidence, &me, &self.incarnation, wall_ms()) {
                    Ok(()) => self.emit(NetEvent::IdentityConflict {
                        reporter: peer,
                        other: evidence.incarnation,
                    }),
                    Err(why) => {
                        self.counters.false_verdicts.fetch_add(1, Ordering::Relaxed);
                        warn!(peer = %peer, reason = %why, "a peer says this process is a duplicate; not believed");
                    }
                }
            }
            request_response::Message::Response { .. } => {}
        }
    }
}

/// This host's wall clock, in milliseconds.
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
