//! Lanes between real actors on loopback: small frames in order on one
//! long-lived stream, large ones beside it, and a hostile peer's lanes
//! bounded and counted without harm to the others.

mod common;

use common::{eventually, hostile, next_direct, node, WAIT};
use futures::{AsyncWriteExt, StreamExt};
use libp2p::{identity::Keypair, StreamProtocol};
use shoal_net::lane::{LANE_MAX_FRAME, LANE_PROTOCOL};
use shoal_net::NetCommand;
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_frames_arrive_in_order_and_a_large_one_beside_them() {
    let mut b = node(vec![]).await;
    let a = node(vec![b.addr.clone()]).await;
    let send = |bytes: Vec<u8>| {
        assert!(a.net.try_send(NetCommand::Send {
            to: b.peer,
            addr: Some(b.addr.clone()),
            bytes,
        }));
    };
    let large = vec![7u8; LANE_MAX_FRAME + 1];
    for i in 0u32..500 {
        send(i.to_le_bytes().to_vec());
        if i == 100 {
            send(large.clone());
        }
    }
    let mut small = Vec::new();
    let mut big = 0;
    while small.len() < 500 || big == 0 {
        let (from, bytes) = next_direct(&mut b).await;
        assert_eq!(from, a.peer);
        if bytes.len() == 4 {
            small.push(u32::from_le_bytes(bytes.try_into().unwrap()));
        } else {
            assert_eq!(bytes, large);
            big += 1;
        }
    }
    assert_eq!(small, (0..500).collect::<Vec<_>>(), "one lane keeps order");
    assert_eq!(big, 1);
    assert!(
        b.net.stats().connections >= 1,
        "b counts its connection to a"
    );
    assert_eq!(a.net.stats().send_failures, 0);
    assert_eq!(b.net.stats().inbound_failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peers_lanes_are_bounded_and_counted_and_the_node_goes_on() {
    let mut b = node(vec![]).await;
    // A bare libp2p peer that speaks the lane protocol by hand.
    let mut swarm = hostile(Keypair::generate_ed25519(), &b.addr).await;
    let hostile = *swarm.local_peer_id();
    let control = swarm.behaviour().lane.new_control();
    let driver = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let protocol = StreamProtocol::new(LANE_PROTOCOL);
    let to = b.peer;
    let open = move || {
        let (mut c, p) = (control.clone(), protocol.clone());
        async move { timeout(WAIT, c.open_stream(to, p)).await.unwrap().unwrap() }
    };

    // A well-formed frame is heard, from the peer that sent it.
    let mut good = open().await;
    good.write_all(&3u32.to_le_bytes()).await.unwrap();
    good.write_all(b"hey").await.unwrap();
    good.flush().await.unwrap();
    assert_eq!(next_direct(&mut b).await, (hostile, b"hey".to_vec()));

    // A length over the lane's cap ends that lane, counted.
    let mut over = open().await;
    over.write_all(&(LANE_MAX_FRAME as u32 + 1).to_le_bytes())
        .await
        .unwrap();
    over.flush().await.unwrap();
    eventually("the oversized frame is counted", || {
        b.net.stats().inbound_failures == 1
    })
    .await;

    // More lanes than a peer may hold: each new one is read, and closes
    // the peer's oldest (a lane whose end went away unseen would
    // otherwise hold its place for good).
    let mut held = vec![good];
    for i in 1..6u8 {
        let mut lane = open().await;
        lane.write_all(&[1, 0, 0, 0, i]).await.unwrap();
        lane.flush().await.unwrap();
        assert_eq!(next_direct(&mut b).await, (hostile, vec![i]));
        held.push(lane);
    }
    assert_eq!(b.net.stats().inbound_failures, 3, "two lanes closed");
    for (i, lane) in held.iter_mut().enumerate().take(3) {
        // The two closed ones may already be reset: their writes may fail.
        let _ = lane.write_all(&[1, 0, 0, 0, 100 + i as u8]).await;
        let _ = lane.flush().await;
    }
    assert_eq!(
        next_direct(&mut b).await,
        (hostile, vec![102]),
        "only the third of the oldest lanes is still read"
    );

    // A well-behaved node is still heard.
    let a = node(vec![b.addr.clone()]).await;
    assert!(a.net.try_send(NetCommand::Send {
        to: b.peer,
        addr: Some(b.addr.clone()),
        bytes: b"still here".to_vec(),
    }));
    let (from, bytes) = next_direct(&mut b).await;
    assert_eq!(from, a.peer, "nothing more came from the closed lanes");
    assert_eq!(bytes, b"still here");
    drop(held);
    driver.abort();
}
