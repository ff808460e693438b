//! Gossip between real actors on loopback: a message reaches the nodes
//! it is relayed to with its publisher checked, and what a hostile peer
//! forges is refused, counted, and relayed to no one.

mod common;

use common::{eventually, hostile, node, Node, WAIT};
use futures::StreamExt;
use libp2p::gossipsub::IdentTopic;
use libp2p::identity::Keypair;
use libp2p::PeerId;
use shoal_net::sealed::seal;
use shoal_net::{NetCommand, NetEvent, Topic, COMMITTED_TOPIC};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// The next gossip `n` hears, skipping other events.
async fn next_gossip(n: &mut Node) -> (PeerId, Vec<u8>) {
    loop {
        match timeout(WAIT, n.events.recv()).await {
            Ok(Some(NetEvent::Gossip { source, bytes })) => return (source, bytes),
            Ok(Some(_)) => continue,
            _ => panic!("no gossip in {WAIT:?}; {:?}", n.net.stats()),
        }
    }
}

/// What `n` hears until `want` from `source`: everything before it must
/// be a retry of an earlier step (`earlier`), nothing else.
async fn hear_until(n: &mut Node, source: PeerId, want: &[u8], earlier: impl Fn(&[u8]) -> bool) {
    loop {
        let (from, bytes) = next_gossip(n).await;
        if (from, bytes.as_slice()) == (source, want) {
            return;
        }
        assert!(earlier(&bytes), "unexpected gossip from {from}: {bytes:?}");
    }
}

fn subscribe(n: &Node) {
    assert!(n.net.try_send(NetCommand::Subscribe {
        topic: Topic::Committed,
        on: true,
    }));
}

/// Gossip until `to` hears a message from `source`, then gossip nothing
/// more; the mesh takes a heartbeat or two to form. Returns what it heard.
async fn first_heard(publish: impl Fn(u64), to: &mut Node, source: PeerId) -> Vec<u8> {
    for attempt in 0..100u64 {
        publish(attempt);
        if let Ok((from, bytes)) = timeout(Duration::from_millis(300), next_gossip(to)).await {
            assert_eq!(from, source);
            return bytes;
        }
    }
    panic!("never heard gossip from {source}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_reaches_a_relay_checked_and_forgeries_reach_no_one() {
    // c hears only b; the hostile peer h is connected to b only.
    let mut b = node(vec![]).await;
    let mut c = node(vec![b.addr.clone()]).await;
    subscribe(&b);
    subscribe(&c);

    // A node's own message reaches its neighbour, from it.
    let from_b = {
        let net = b.net.clone();
        move |i: u64| {
            assert!(net.try_send(NetCommand::Publish {
                topic: Topic::Committed,
                bytes: format!("b{i}").into_bytes(),
            }));
        }
    };
    let heard = first_heard(from_b, &mut c, b.peer).await;
    assert!(heard.starts_with(b"b"));

    // The hostile peer publishes whatever bytes it is handed.
    let key = Keypair::generate_ed25519();
    let h = key.public().to_peer_id();
    let mut swarm = hostile(key.clone(), &b.addr).await;
    let topic = IdentTopic::new(COMMITTED_TOPIC);
    swarm.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let driver = tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(bytes) = rx.recv() => {
                    let _ = swarm.behaviour_mut().gossipsub.publish(topic.clone(), bytes);
                }
                _ = swarm.select_next_some() => {}
            }
        }
    });
    let sealed_by_h = |seq: u64, payload: &[u8]| seal(&key, COMMITTED_TOPIC, seq, payload);

    // Its own messages, properly sealed, are heard and relayed on to c.
    let honest = {
        let tx = tx.clone();
        move |i: u64| tx.send(sealed_by_h(i, b"honest")).unwrap()
    };
    let retry = |bytes: &[u8]| bytes.starts_with(b"b") || bytes == b"honest";
    assert_eq!(first_heard(honest, &mut b, h).await, b"honest");
    hear_until(&mut c, h, b"honest", retry).await;

    // Forgeries: bytes that are no sealed message; b's name on a payload
    // h sealed; h's message altered after sealing; a seal for another
    // topic. Then a last honest message, which c hears only after all of
    // them have passed through b.
    let mut claims_b = sealed_by_h(1000, b"as b");
    let b_id = b.peer.to_bytes();
    claims_b[2..2 + b_id.len()].copy_from_slice(&b_id);
    let mut altered = sealed_by_h(1001, b"honest");
    *altered.last_mut().unwrap() ^= 1;
    let forged = [
        b"not sealed at all".to_vec(),
        claims_b,
        altered,
        seal(&key, "shoal/2/transient", 1002, b"elsewhere"),
    ];
    for f in &forged {
        tx.send(f.clone()).unwrap();
    }
    tx.send(sealed_by_h(1003, b"last")).unwrap();
    // Neither hears a forgery: b refused them all, and relayed none to c.
    hear_until(&mut b, h, b"last", retry).await;
    hear_until(&mut c, h, b"last", retry).await;
    eventually("b counted each forgery", || {
        b.net.stats().gossip_refused == forged.len() as u64
    })
    .await;
    assert_eq!(c.net.stats().gossip_refused, 0, "none reached c to refuse");
    driver.abort();
}
