//! Crossed dials on loopback: a peer that holds two connections to a node
//! whose id is smaller is left with one, the newest, and the node counts
//! one open connection.

mod common;

use common::{eventually, hostile, node, WAIT};
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::SwarmEvent;
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smaller_id_closes_a_second_connection_leaving_the_newest() {
    let n = node(vec![]).await;
    // A peer whose id is larger than the node's: the node decides.
    let key = loop {
        let k = Keypair::generate_ed25519();
        if k.public().to_peer_id() > n.peer {
            break k;
        }
    };
    let mut swarm = hostile(key, &n.addr).await;
    eventually("the node counts the first connection", || {
        n.net.stats().connections == 1
    })
    .await;
    let dial = DialOpts::peer_id(n.peer)
        .condition(PeerCondition::Always)
        .addresses(vec![n.addr.clone()])
        .build();
    swarm.dial(dial).unwrap();
    let (mut newest, mut closed) = (None, None);
    timeout(WAIT, async {
        while newest.is_none() || closed.is_none() {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { connection_id, .. } => {
                    newest = Some(connection_id)
                }
                SwarmEvent::ConnectionClosed { connection_id, .. } => closed = Some(connection_id),
                _ => {}
            }
        }
    })
    .await
    .expect("the node closed no connection");
    assert_ne!(newest, closed, "the newest connection is kept");
    assert!(swarm.is_connected(&n.peer));
    assert_eq!(
        swarm.network_info().connection_counters().num_established(),
        1
    );
    let driver = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    eventually("the node counts one connection", || {
        n.net.stats().connections == 1
    })
    .await;
    driver.abort();
}
