//! Real actors on loopback, for the net crate's tests.
#![allow(dead_code)] // each test file uses its own part

use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{gossipsub, identity::Keypair, noise, tcp, yamux, Multiaddr, PeerId, Swarm};
use shoal_net::{Incarnation, NetConfig, NetEvent, NetHandle};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::timeout;

pub const WAIT: Duration = Duration::from_secs(30);

pub struct Node {
    pub peer: PeerId,
    pub addr: Multiaddr,
    pub net: NetHandle,
    pub events: mpsc::Receiver<NetEvent>,
}

pub async fn node(peers: Vec<Multiaddr>) -> Node {
    node_with(peers, |_| {}).await
}

/// A node whose settings `set` changes first.
pub async fn node_with(peers: Vec<Multiaddr>, set: impl FnOnce(&mut NetConfig)) -> Node {
    let key = Keypair::generate_ed25519();
    let peer = key.public().to_peer_id();
    let mut cfg = NetConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        peers,
        mdns: false,
        cluster_key: None,
        max_message_bytes: 8 << 20,
        incarnation: Incarnation {
            nonce: rand::random(),
            started_ms: 1,
        },
        solitary: false,
        found_picks: shoal_net::redial::FOUND_PICKS,
        idle_for: shoal_net::redial::IDLE_FOR,
        bulk_thread: Some(shoal_net::bulk::plain_thread),
        bulk_port: 0,
        bulk_in_flight: shoal_net::bulk::MAX_IN_FLIGHT,
    };
    set(&mut cfg);
    let (net, mut events) = shoal_net::spawn(key, cfg).await.unwrap();
    let addr = loop {
        match timeout(WAIT, events.recv()).await.unwrap().unwrap() {
            NetEvent::Listening(a) => break a,
            _ => continue,
        }
    };
    Node {
        peer,
        addr: addr.with(shoal_net::Protocol::P2p(peer)),
        net,
        events,
    }
}

/// The next one-to-one frame `n` hears, skipping other events.
pub async fn next_direct(n: &mut Node) -> (PeerId, Vec<u8>) {
    loop {
        match timeout(WAIT, n.events.recv()).await {
            Ok(Some(NetEvent::Direct { from, bytes })) => return (from, bytes),
            Ok(Some(_)) => continue,
            _ => panic!("no frame in {WAIT:?}; {:?}", n.net.stats()),
        }
    }
}

/// Polls `f` until it holds, at most `WAIT`.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..300 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never: {what}");
}

#[derive(NetworkBehaviour)]
pub struct Hostile {
    pub gossipsub: gossipsub::Behaviour,
    pub lane: libp2p_stream::Behaviour,
}

/// A bare libp2p peer holding `key`, connected to `to`, that speaks
/// shoal's gossip and lanes by hand: whatever its caller makes it send.
pub async fn hostile(key: Keypair, to: &Multiaddr) -> Swarm<Hostile> {
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| {
            let cfg = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(Duration::from_millis(200))
                .validation_mode(gossipsub::ValidationMode::Anonymous)
                .message_id_fn(shoal_net::sealed::message_id)
                .build()
                .unwrap();
            Hostile {
                gossipsub: gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Anonymous,
                    cfg,
                )
                .unwrap(),
                lane: libp2p_stream::Behaviour::new(),
            }
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(WAIT))
        .build();
    swarm.dial(to.clone()).unwrap();
    timeout(WAIT, async {
        loop {
            if let SwarmEvent::ConnectionEstablished { .. } = swarm.select_next_some().await {
                return;
            }
        }
    })
    .await
    .unwrap();
    swarm
}
