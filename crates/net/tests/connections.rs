//! How many connections a pair of real actors on loopback holds: one,
//! when both are told of each other at once (members in State), and again
//! after one of them drops the pair's connection. Frames all arrive, in
//! order, though the lanes of several peers reach a node at once.

mod common;

use common::{eventually, next_direct, node, Node, WAIT};
use shoal_net::redial::ANSWER_WAIT;
use shoal_net::{NetCommand, NetEvent};
use std::time::Duration;
use tokio::time::timeout;

/// Asserts, for a while past the larger ids' wait, that every node holds
/// exactly one connection per other node.
async fn one_connection_per_pair(nodes: &[Node], when: &str) {
    let per_node = nodes.len() as u64 - 1;
    eventually(&format!("{when}: one connection a pair"), || {
        nodes.iter().all(|n| n.net.stats().connections == per_node)
    })
    .await;
    let until = tokio::time::Instant::now() + ANSWER_WAIT + Duration::from_secs(1);
    while tokio::time::Instant::now() < until {
        for n in nodes {
            assert_eq!(
                n.net.stats().connections,
                per_node,
                "{when}: {} holds a second connection to a peer",
                n.peer
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_dial_each_other_keep_one_connection_a_pair() {
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(node(vec![]).await);
    }
    // Every node is told of every other at once, as members in State are.
    for n in &nodes {
        let others = nodes.iter().filter(|m| m.peer != n.peer);
        let addrs = others.map(|m| m.addr.clone()).collect();
        assert!(n.net.try_send(NetCommand::Keep(addrs)));
    }
    one_connection_per_pair(&nodes, "formed").await;
    // Every node opens a lane to every other at once.
    for n in &nodes {
        for m in nodes.iter().filter(|m| m.peer != n.peer) {
            for i in 0u8..3 {
                assert!(n.net.try_send(NetCommand::Send {
                    to: m.peer,
                    addr: Some(m.addr.clone()),
                    bytes: vec![i],
                }));
            }
        }
    }
    for k in 0..nodes.len() {
        let mut heard = Vec::new();
        for _ in 0..3 * (nodes.len() - 1) {
            heard.push(next_direct(&mut nodes[k]).await);
        }
        for m in nodes.iter().filter(|m| m.peer != nodes[k].peer) {
            let from_m: Vec<u8> = heard
                .iter()
                .filter(|(p, _)| *p == m.peer)
                .flat_map(|(_, b)| b.clone())
                .collect();
            assert_eq!(from_m, [0, 1, 2], "every frame, in order");
        }
    }
    // The smaller of the first pair drops it; both sides redial.
    nodes[..2].sort_by_key(|n| n.peer);
    let b = nodes[1].peer;
    let a = &mut nodes[0];
    assert!(a.net.try_send(NetCommand::Reconnect(b)));
    loop {
        match timeout(WAIT, a.events.recv()).await.unwrap().unwrap() {
            NetEvent::Disconnected(p) if p == b => break,
            _ => continue,
        }
    }
    one_connection_per_pair(&nodes, "redialled").await;
}
