//! How many connections a pair of real actors on loopback holds: one,
//! when both are told of each other at once (members in State), and again
//! after one of them drops the pair's connection. Frames all arrive, in
//! order, though the lanes of several peers reach a node at once. A
//! connection a node made only to send a frame is closed once idle, one
//! to a member it keeps is not.

mod common;

use common::{eventually, next_direct, node, node_with, Node, WAIT};
use shoal_net::redial::ANSWER_WAIT;
use shoal_net::{NetCommand, NetConfig, NetEvent, Topic};
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

/// Keeps no peer it finds, and lets what it made go a second after its
/// last frame.
fn keeps_little(c: &mut NetConfig) {
    c.found_picks = 0;
    c.idle_for = Duration::from_secs(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_made_for_a_frame_is_closed_once_idle_unless_its_peer_is_kept() {
    let a = node_with(vec![], keeps_little).await;
    let mut stranger = node_with(vec![], keeps_little).await;
    let mut member = node_with(vec![], keeps_little).await;
    // In no gossip mesh of a's: a peer there is kept as well.
    for topic in [Topic::Committed, Topic::Transient, Topic::Snapshot] {
        assert!(stranger
            .net
            .try_send(NetCommand::Subscribe { topic, on: false }));
    }
    assert!(a.net.try_send(NetCommand::Keep(vec![member.addr.clone()])));
    eventually("the member connected", || a.net.stats().connections == 1).await;
    for to in [&stranger, &member] {
        assert!(a.net.try_send(NetCommand::Send {
            to: to.peer,
            addr: Some(to.addr.clone()),
            bytes: vec![7],
        }));
    }
    assert_eq!(next_direct(&mut stranger).await, (a.peer, vec![7]));
    assert_eq!(next_direct(&mut member).await, (a.peer, vec![7]));
    eventually("the stranger's connection closed", || {
        a.net.stats().idle_closed == 1 && a.net.stats().connections == 1
    })
    .await;
    // The member's stays, well past its last frame.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        let stats = a.net.stats();
        assert_eq!((stats.connections, stats.idle_closed), (1, 1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
