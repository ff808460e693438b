//! How the network actor keeps its peers connected: what it dials when
//! (`redial`), so that a pair of peers holds one connection and a node
//! dials a bounded number of the peers it found.

use crate::actor::{peer_of, Actor, Conn};
use crate::redial::{first_dial_wait, rank, superseded, to_close, SUPERSEDED_AFTER};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;
use tracing::debug;

/// A dial of ours still pending after this long is no longer waited for.
/// The transport gives a connection's setup up after 2 s and the swarm
/// then reports the dial ended; this only bounds what a report never
/// made would cost (the peer not redialled).
const PENDING_AT_MOST: Duration = Duration::from_secs(5);

/// How the actor came to know a peer's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Learnt {
    /// Given by the user: kept dialled, and of two peers the smaller id
    /// dials first (the peer may have been given ours).
    Asked,
    /// From mDNS or identify: the peer knows ours as well. Dialled while
    /// picked (`NetConfig::found_picks`), the smaller id first.
    Found,
    /// A frame is sent to it: it may not know this node, so dialled at
    /// once (by the frame), and kept dialled while picked.
    Addressee,
}

/// Whether a dial of ours to `peer` is pending (`PENDING_AT_MOST`).
fn pending(
    dialing: &HashMap<PeerId, (ConnectionId, Instant)>,
    peer: &PeerId,
    now: Instant,
) -> bool {
    dialing
        .get(peer)
        .is_some_and(|(_, since)| now < *since + PENDING_AT_MOST)
}

impl Actor {
    /// Drops every connection to `peer` and dials it again at once.
    pub(crate) fn reconnect(&mut self, peer: PeerId) {
        let _ = self.swarm.disconnect_peer_id(peer);
        self.redials
            .retry_now(Instant::now(), |a| peer_of(a) == Some(peer));
    }

    /// How long `addr` waits before its first dial (`first_dial_wait`).
    pub(crate) fn first_dial_wait(&self, addr: &Multiaddr) -> Duration {
        first_dial_wait(self.swarm.local_peer_id(), peer_of(addr).as_ref())
    }

    pub(crate) fn redial(&mut self) {
        let now = Instant::now();
        let (connected, dialing) = (&self.connected, &self.dialing);
        let due = self.redials.due(
            now,
            |a| peer_of(a).is_some_and(|p| connected.contains(&p)),
            |a| peer_of(a).is_some_and(|p| pending(dialing, &p, now)),
            self.found_picks,
        );
        self.close_idle(now);
        for addr in due {
            // A fresh port: two nodes dialling each other at the same
            // instant could otherwise merge their attempts and fail the
            // noise handshake.
            // A dial pending to the peer (ours or a behaviour's) is
            // waited for: it ends within the transport's connect timeout,
            // and a second one would leave the pair two connections.
            let peer = peer_of(&addr);
            let opts = match peer {
                Some(p) => DialOpts::peer_id(p)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .addresses(vec![addr.clone()])
                    .allocate_new_port()
                    .build(),
                None => DialOpts::unknown_peer_id()
                    .address(addr.clone())
                    .allocate_new_port()
                    .build(),
            };
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    if let Some(p) = peer {
                        self.dialing.insert(p, (id, now));
                    }
                }
                Err(e) => debug!(addr = %addr, error = %e, "dial failed"),
            }
        }
    }

    /// Connection `id` to `peer` is set up (`dialer`: by this actor).
    pub(crate) fn connection_made(&mut self, peer: PeerId, id: ConnectionId, dialer: bool) {
        self.dial_ended(Some(peer), id);
        let now = Instant::now();
        let older: Vec<(ConnectionId, Instant)> = (self.conns.iter())
            .filter(|(_, c)| c.peer == peer)
            .map(|(id, c)| (*id, c.at))
            .collect();
        let conn = Conn {
            peer,
            at: now,
            made: dialer,
        };
        self.conns.insert(id, conn);
        for c in superseded(&older, now, SUPERSEDED_AFTER) {
            if self.close(c) {
                self.counters.superseded.fetch_add(1, Ordering::Relaxed);
                debug!(peer = %peer, "closed a connection the peer superseded");
            }
        }
    }

    /// Closes connection `c` and counts it out at once: until the swarm
    /// reports it closed, the peer's other connection must not look like
    /// a second one. Whether the swarm had it open.
    fn close(&mut self, c: ConnectionId) -> bool {
        self.conns.remove(&c);
        self.swarm.close_connection(c)
    }

    /// Closes the connections this node made and no longer needs
    /// (`to_close`): it keeps those to peers asked for, picked, or in its
    /// gossip mesh; a peer's other connections, and connections to peers
    /// it sent no frame to for a while, it closes.
    fn close_idle(&mut self, now: Instant) {
        // A stamp that old says no more than none (and peers never
        // reached would otherwise stay).
        let idle_for = self.idle_for;
        self.last_sent.retain(|_, t| now < *t + idle_for);
        let made: Vec<_> = (self.conns.iter())
            .filter(|(_, c)| c.made)
            .map(|(id, c)| (*id, c.peer))
            .collect();
        if made.is_empty() {
            return;
        }
        let mut open: HashMap<PeerId, usize> = HashMap::new();
        for c in self.conns.values() {
            *open.entry(c.peer).or_default() += 1;
        }
        let picked: HashSet<PeerId> = (self.redials.picked(self.found_picks).into_iter())
            .filter_map(peer_of)
            .collect();
        let gossip = &self.swarm.behaviour().gossipsub;
        let mesh: HashSet<&PeerId> = gossip.all_mesh_peers().collect();
        let (members, given, last_sent) = (&self.members, &self.given, &self.last_sent);
        let close = to_close(
            &made,
            |p| picked.contains(p) || mesh.contains(p) || members.contains(p) || given.contains(p),
            |p| last_sent.get(p).copied(),
            |p| open.get(p).copied().unwrap_or(0),
            now,
            self.idle_for,
        );
        for c in close {
            if self.close(c) {
                self.counters.idle_closed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A dial of ours to `peer` ended, as connection `id` or with an error.
    pub(crate) fn dial_ended(&mut self, peer: Option<PeerId>, id: ConnectionId) {
        if let Some(p) = peer {
            if self.dialing.get(&p).is_some_and(|(d, _)| *d == id) {
                self.dialing.remove(&p);
            }
        }
    }

    /// Keeps the members in `addrs` connected; those kept before and not
    /// named now become found peers, kept while picked.
    pub(crate) fn keep(&mut self, addrs: Vec<Multiaddr>) {
        let now = Instant::now();
        let before = std::mem::take(&mut self.members);
        for addr in addrs {
            // A member in State: it is told of this node as well.
            let wait = self.first_dial_wait(&addr);
            self.members.extend(peer_of(&addr));
            self.redials.add(addr, now, wait, None);
        }
        let local = self.swarm.local_peer_id().to_bytes();
        for p in before.difference(&self.members) {
            if !self.given.contains(p) {
                let rank = rank(&local, &p.to_bytes());
                self.redials.demote(|a| peer_of(a) == Some(*p), rank);
            }
        }
    }

    /// Keeps `peer` dialled at `addr`, as `learnt` says.
    pub(crate) fn remember(&mut self, peer: PeerId, addr: Multiaddr, learnt: Learnt) {
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
        let wait = match learnt {
            Learnt::Asked | Learnt::Found => self.first_dial_wait(&full),
            Learnt::Addressee => Duration::ZERO,
        };
        let found = (learnt != Learnt::Asked)
            .then(|| rank(&self.swarm.local_peer_id().to_bytes(), &peer.to_bytes()));
        self.redials
            .replace(full, Instant::now(), wait, found, |a| {
                peer_of(a) == Some(peer)
            });
    }
}
