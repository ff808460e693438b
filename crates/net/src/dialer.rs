//! How the network actor keeps its peers connected: what it dials when
//! (`redial`), so that a pair of peers holds one connection.

use crate::actor::{peer_of, Actor};
use crate::redial::first_dial_wait;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;
use tracing::debug;

/// A dial of ours still pending after this long is no longer waited for.
/// The transport gives a connection's setup up after 2 s and the swarm
/// then reports the dial ended; this only bounds what a report never
/// made would cost (the peer not redialled).
const PENDING_AT_MOST: Duration = Duration::from_secs(5);

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
        );
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

    /// A dial of ours to `peer` ended, as connection `id` or with an error.
    pub(crate) fn dial_ended(&mut self, peer: Option<PeerId>, id: ConnectionId) {
        if let Some(p) = peer {
            if self.dialing.get(&p).is_some_and(|(d, _)| *d == id) {
                self.dialing.remove(&p);
            }
        }
    }

    /// Keeps `peer` dialled at `addr`. `mutual`: the peer knows this
    /// node's address as well (mDNS, identify, members in State), so of
    /// the two the smaller id dials first.
    pub(crate) fn remember(&mut self, peer: PeerId, addr: Multiaddr, mutual: bool) {
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
        let wait = if mutual {
            self.first_dial_wait(&full)
        } else {
            Duration::ZERO
        };
        self.redials
            .replace(full, Instant::now(), wait, |a| peer_of(a) == Some(peer));
    }
}
