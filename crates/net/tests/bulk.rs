//! Large frames between real actors on loopback: they move to a
//! connection of their own once the peer has dialled it, arrive whole
//! either way, and a hostile peer's invitations are counted and harmless.

mod common;

use common::{eventually, hostile, next_direct, node, node_with, Node, WAIT};
use futures::{AsyncWriteExt, StreamExt};
use libp2p::{identity::Keypair, StreamProtocol};
use shoal_net::bulk::BULK_PORT_PROTOCOL;
use shoal_net::lane::LANE_MAX_FRAME;
use shoal_net::NetCommand;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::timeout;

fn large(i: u8) -> Vec<u8> {
    let mut bytes = vec![i; LANE_MAX_FRAME + 1000];
    bytes[0] = i.wrapping_add(1);
    bytes
}

/// The next frame `n` hears, which must be one of `large`'s, as its
/// sender and number (large frames go on streams of their own: in no
/// set order).
async fn next_large(n: &mut Node) -> (libp2p::PeerId, u8) {
    let (from, bytes) = next_direct(n).await;
    let i = bytes[1];
    assert!(bytes == large(i), "frame {i} arrived whole");
    (from, i)
}

fn send(from: &Node, to: &Node, bytes: Vec<u8>) {
    assert!(from.net.try_send(NetCommand::Send {
        to: to.peer,
        addr: Some(to.addr.clone()),
        bytes,
    }));
}

/// Large frames from `a` to `b`, each heard before the next, until one
/// went on a bulk connection (`a` told `b` its port with the first; `b`
/// dialled): at most 50.
async fn until_on_bulk(a: &Node, b: &mut Node) {
    let mut i = 0;
    while a.net.stats().bulk_sent == 0 {
        assert!(i < 50, "never on a bulk connection: {:?}", a.net.stats());
        send(a, b, large(i));
        assert_eq!(next_large(b).await, (a.peer, i));
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `n` large frames from `a` to `b`, each heard, `apart` between them:
/// none of them on a bulk connection, and none lost.
async fn none_on_bulk(a: &Node, b: &mut Node, n: u8, apart: Duration) {
    for i in 0..n {
        send(a, b, large(i));
        assert_eq!(next_large(b).await, (a.peer, i));
        tokio::time::sleep(apart).await;
    }
    assert_eq!(a.net.stats().bulk_sent, 0);
    assert_eq!(a.net.stats().send_failures, 0);
}

static STARTED: AtomicUsize = AtomicUsize::new(0);

/// A thread starter that counts the threads it started.
fn counted_thread(name: &str, body: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
    STARTED.fetch_add(1, Ordering::SeqCst);
    shoal_net::bulk::plain_thread(name, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_frames_move_to_a_connection_of_their_own_and_all_arrive_whole() {
    let before = STARTED.load(Ordering::SeqCst);
    let mut b = node_with(vec![], |c| c.bulk_thread = Some(counted_thread)).await;
    let mut a = node_with(vec![b.addr.clone()], |c| {
        c.bulk_thread = Some(counted_thread)
    })
    .await;
    assert_eq!(
        STARTED.load(Ordering::SeqCst) - before,
        2,
        "one thread each"
    );
    until_on_bulk(&a, &mut b).await;
    // From now on every large frame goes there, and in both directions:
    // b dialled the connection, a's frames go on it, and so do b's.
    let on_bulk = a.net.stats().bulk_sent;
    for i in 0..5 {
        send(&a, &b, large(100 + i));
        send(&b, &a, large(200 + i));
    }
    let (mut at_a, mut at_b) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        at_b.push(next_large(&mut b).await);
        at_a.push(next_large(&mut a).await);
    }
    at_a.sort();
    at_b.sort();
    assert_eq!(at_b, (100..105).map(|i| (a.peer, i)).collect::<Vec<_>>());
    assert_eq!(at_a, (200..205).map(|i| (b.peer, i)).collect::<Vec<_>>());
    assert_eq!(a.net.stats().bulk_sent, on_bulk + 5);
    assert_eq!(
        b.net.stats().bulk_sent,
        5,
        "b's went on the connection b made"
    );
    // Small frames still go on the lane, beside them.
    send(&a, &b, b"small".to_vec());
    assert_eq!(next_direct(&mut b).await, (a.peer, b"small".to_vec()));
    assert_eq!(a.net.stats().bulk_sent, on_bulk + 5);
    for n in [&a, &b] {
        let s = n.net.stats();
        assert!(s.bulk_connections >= 1, "{s:?}");
        assert_eq!(s.send_failures, 0, "{s:?}");
        assert_eq!(s.inbound_failures, 0, "{s:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_bulk_thread_large_frames_go_on_the_main_connection() {
    let mut b = node(vec![]).await;
    let a = node_with(vec![b.addr.clone()], |c| c.bulk_thread = None).await;
    none_on_bulk(&a, &mut b, 3, Duration::from_millis(200)).await;
    assert_eq!(a.net.stats().bulk_connections, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peers_invitations_are_counted_and_the_node_goes_on() {
    let mut b = node(vec![]).await;
    let mut swarm = hostile(Keypair::generate_ed25519(), &b.addr).await;
    let control = swarm.behaviour().lane.new_control();
    let driver = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let to = b.peer;
    let invite = move |bytes: Vec<u8>| {
        let mut c = control.clone();
        async move {
            let protocol = StreamProtocol::new(BULK_PORT_PROTOCOL);
            let mut s = timeout(WAIT, c.open_stream(to, protocol))
                .await
                .unwrap()
                .unwrap();
            s.write_all(&bytes).await.unwrap();
            s.close().await.unwrap();
        }
    };
    // One byte of two, and port zero: counted, nothing dialled.
    invite(vec![1]).await;
    invite(vec![0, 0]).await;
    eventually("both counted", || b.net.stats().inbound_failures == 2).await;
    // A port where nothing listens, and another where something else
    // does (b's own main port): b dials the hostile peer's host there,
    // fails, and goes on.
    invite(1u16.to_be_bytes().to_vec()).await;
    let main_port = shoal_net::tcp_port(&b.addr).unwrap();
    invite(main_port.to_be_bytes().to_vec()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(b.net.stats().bulk_connections, 0, "{:?}", b.net.stats());

    // A well-behaved node still gets its bulk connection with b.
    let a = node(vec![b.addr.clone()]).await;
    until_on_bulk(&a, &mut b).await;
    assert_eq!(b.net.stats().inbound_failures, 2);
    driver.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_port_given_is_used_and_one_taken_leaves_large_frames_on_the_main_connection() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let mut b = node_with(vec![], |c| c.bulk_port = port).await;
    let bound = std::net::TcpListener::bind(("127.0.0.1", port));
    assert_eq!(
        bound.map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::AddrInUse),
        "b's bulk swarm listens on {port}"
    );
    let a = node(vec![b.addr.clone()]).await;
    until_on_bulk(&a, &mut b).await;

    // A port some other program holds: the node starts all the same, and
    // its large frames go on the main connection.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().port();
    let mut c = node_with(vec![], |cfg| cfg.bulk_port = taken).await;
    let d = node(vec![c.addr.clone()]).await;
    none_on_bulk(&d, &mut c, 5, Duration::from_millis(100)).await;
    assert_eq!(c.net.stats().bulk_connections, 0);
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_frames_past_the_bytes_in_flight_are_dropped_and_counted_and_the_rest_arrive() {
    let mut b = node(vec![]).await;
    // One frame under way at a time, at most.
    let a = node_with(vec![b.addr.clone()], |c| c.bulk_in_flight = 1).await;
    until_on_bulk(&a, &mut b).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = a.net.stats();
    for i in 0..10 {
        send(&a, &b, large(100 + i));
    }
    let mut heard = Vec::new();
    eventually("each frame heard or counted as failed", || {
        while let Ok(ev) = b.events.try_recv() {
            if let shoal_net::NetEvent::Direct { from, bytes } = ev {
                assert_eq!(from, a.peer);
                assert!(bytes == large(bytes[1]), "whole");
                heard.push(bytes[1]);
            }
        }
        let failed = a.net.stats().send_failures - before.send_failures;
        heard.len() as u64 + failed == 10
    })
    .await;
    assert!(heard.len() < 10, "some dropped: {:?}", a.net.stats());
    assert!(
        heard.contains(&100),
        "the first went: nothing was under way"
    );
    // Once those are through, a frame goes again.
    send(&a, &b, large(200));
    assert_eq!(next_large(&mut b).await, (a.peer, 200));
    assert_eq!(b.net.stats().inbound_failures, 0);
}
