use proptest::prelude::*;
use shoal_log::{decode_snapshot, encode_snapshot, SnapshotDecoder, SnapshotError, SnapshotStore};
use shoal_model::*;

fn state_with(keys: usize) -> State {
    let mut s = State::new();
    let mut idx = 0;
    let mut next = |s: &mut State, event: Event| {
        idx += 1;
        s.apply(&Envelope {
            idx: EventIdx(idx),
            term: Term(2),
            event,
        })
        .unwrap();
    };
    next(
        &mut s,
        Event::ClusterFounded {
            cluster_id: ClusterId::from("c"),
            founder: NodeId::from("n1"),
            addr: "a".into(),
            at_ms: 5,
        },
    );
    next(
        &mut s,
        Event::NodeJoined {
            node: NodeId::from("n2"),
            addr: "b".into(),
            at_ms: 6,
        },
    );
    for i in 0..keys {
        let op = match i % 4 {
            0 => Op::KvSet {
                key: format!("key-{i:08}"),
                value: "v".repeat(i % 50),
            },
            1 => Op::KvIncrBy {
                key: format!("ctr-{}", i % 7),
                by: i as i64,
            },
            2 => Op::SetAdd {
                key: format!("set-{}", i % 5),
                member: format!("m{i}"),
            },
            _ => Op::LockAcquire {
                name: format!("lock-{i}"),
                holder: "h".into(),
                ttl_ms: 100,
            },
        };
        next(
            &mut s,
            Event::Command {
                cmd: Command {
                    id: CommandId(format!("c{i}")),
                    op,
                },
                at_ms: i as u64,
            },
        );
    }
    s
}

#[test]
fn a_snapshot_round_trips_state_and_hash() {
    let mut s = state_with(10_000);
    // A drained member too.
    let drain = Command {
        id: CommandId("drain".into()),
        op: Op::NodeDrain {
            node: NodeId::from("n2"),
            drain: true,
        },
    };
    let event = Event::Command {
        cmd: drain,
        at_ms: 1,
    };
    let idx = s.index().next();
    s.apply(&Envelope {
        idx,
        term: Term(2),
        event,
    })
    .unwrap();
    assert!(s.nodes()[&NodeId::from("n2")].drained);
    let (bytes, sha) = encode_snapshot(&s, 1);
    let d = decode_snapshot(&bytes, &sha).unwrap();
    assert_eq!(d.index(), s.index());
    assert_eq!(d.term(), s.term());
    assert_eq!(d.hash(), s.hash());
    assert_eq!(d.recompute_hash(), s.hash());
    assert_eq!(d.kv(), s.kv());
    assert_eq!(d.outcomes(), s.outcomes());
    assert_eq!(d.nodes(), s.nodes());
    assert_eq!(d.meta(), s.meta());
}

#[test]
fn decoded_state_keeps_applying_like_the_original() {
    let mut a = state_with(300);
    let (bytes, sha) = encode_snapshot(&a, 3);
    let mut b = decode_snapshot(&bytes, &sha).unwrap();
    for i in 0..50u64 {
        let env = Envelope {
            idx: a.index().next(),
            term: Term(3),
            event: Event::OutcomesExpired { before_ms: i * 10 },
        };
        a.apply(&env).unwrap();
        b.apply(&env).unwrap();
        assert_eq!(a.hash(), b.hash());
    }
}

#[test]
fn corruption_truncation_and_versions_fail_cleanly() {
    let s = state_with(500);
    let (bytes, sha) = encode_snapshot(&s, 1);
    // Every flipped byte is caught, by the decoder or by the checksum.
    for at in (0..bytes.len()).step_by(7) {
        let mut bad = bytes.clone();
        bad[at] ^= 0x01;
        assert!(
            decode_snapshot(&bad, &sha).is_err(),
            "flip at {at} accepted"
        );
    }
    let cut = &bytes[..bytes.len() / 2];
    let sha_cut: [u8; 32] = {
        use sha2::Digest;
        sha2::Sha256::digest(cut).into()
    };
    assert!(matches!(
        decode_snapshot(cut, &sha_cut),
        Err(SnapshotError::Truncated)
    ));
    let mut newer = bytes.clone();
    newer[8] = 9;
    assert!(matches!(
        decode_snapshot(&newer, &sha),
        Err(SnapshotError::Version { found: 9, .. })
    ));
    assert!(matches!(
        decode_snapshot(b"not a snapshot at all", &sha),
        Err(SnapshotError::BadMagic)
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// However the bytes are split into chunks, decoding gives the same State.
    #[test]
    fn decoding_is_independent_of_chunking(sizes in prop::collection::vec(1usize..5000, 1..50)) {
        let s = state_with(2000);
        let (bytes, sha) = encode_snapshot(&s, 1);
        let mut d = SnapshotDecoder::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < bytes.len() {
            let n = sizes[i % sizes.len()].min(bytes.len() - pos);
            d.push(&bytes[pos..pos + n]).unwrap();
            pos += n;
            i += 1;
        }
        prop_assert_eq!(d.entries_decoded(), d.header().unwrap().entries);
        let got = d.finish(&sha).unwrap();
        prop_assert_eq!(got.hash(), s.hash());
    }
}

#[test]
fn the_store_loads_the_newest_snapshot_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    assert!(store.load_latest().unwrap().is_none());
    let old = state_with(10);
    let new = state_with(20);
    for s in [&old, &new] {
        let (bytes, sha) = encode_snapshot(s, 1);
        store.save(s.index(), &bytes, &sha).unwrap();
    }
    assert_eq!(store.load_latest().unwrap().unwrap().hash(), new.hash());
    // Damage the newest: the older one is used.
    let newest = dir.path().join(format!("{:020}.snap", new.index().0));
    let mut b = std::fs::read(&newest).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    std::fs::write(&newest, b).unwrap();
    assert_eq!(store.load_latest().unwrap().unwrap().hash(), old.hash());
}

#[test]
fn a_saved_snapshot_is_served_from_its_file_even_after_the_store_drops_it() {
    use shoal_log::SnapshotBytes;
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    let first = state_with(300);
    let (bytes, sha) = encode_snapshot(&first, 1);
    store.save(first.index(), &bytes, &sha).unwrap();
    let file = store.open_file(first.index()).unwrap();
    assert_eq!(file.len(), bytes.len() as u64);
    // Chunks as a server cuts them, the last one short.
    let mut read = Vec::new();
    let mut offset = 0;
    while offset < file.len() {
        let chunk = file.read_at(offset, 1000).unwrap();
        assert!(!chunk.is_empty() && chunk.len() <= 1000);
        offset += chunk.len() as u64;
        read.extend(chunk);
    }
    assert_eq!(read, bytes);
    assert!(file.read_at(file.len(), 1000).unwrap().is_empty());
    // Two newer snapshots make the store delete the first file; the open
    // one still reads.
    for n in [310, 320] {
        let s = state_with(n);
        let (b, h) = encode_snapshot(&s, 1);
        store.save(s.index(), &b, &h).unwrap();
    }
    assert!(store.open_file(first.index()).is_err());
    assert_eq!(file.read_all().unwrap(), bytes);

    // A snapshot spilled to serve reads back and leaves no file behind.
    let names = || std::fs::read_dir(dir.path()).unwrap().count();
    let before = names();
    let spilled = store.spill(&bytes).unwrap();
    assert_eq!(spilled.read_all().unwrap(), bytes);
    assert_eq!(names(), before);
}

/// A snapshot's bytes: `header` (postcard) in format `version`, then a
/// zstd stream of `body`.
fn assemble(version: u16, header: &[u8], body: &[u8]) -> (Vec<u8>, [u8; 32]) {
    use sha2::{Digest, Sha256};
    let mut out = b"SHOALSNP".to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(&zstd::encode_all(body, 1).unwrap());
    let sha: [u8; 32] = Sha256::digest(&out).into();
    (out, sha)
}

#[test]
fn a_body_larger_than_its_header_declares_is_refused_as_it_decompresses() {
    let header = shoal_log::SnapshotHeader {
        index: EventIdx(1),
        term: Term(1),
        state_hash: State::new().hash(),
        cluster_id: None,
        entries: 0,
        body_len: 100,
    };
    // 64 MiB of zeros compress to a few KiB: a bomb for its header.
    let bomb = vec![0u8; 64 << 20];
    let (bytes, _) = assemble(2, &postcard::to_allocvec(&header).unwrap(), &bomb);
    assert!(bytes.len() < 1 << 20);
    let mut d = SnapshotDecoder::new();
    let err = d.push(&bytes).unwrap_err();
    assert!(matches!(err, SnapshotError::TooLarge(100)), "{err}");
}

#[test]
fn large_values_are_cut_into_frames_a_decoder_takes() {
    // 1,100 values of 64 KiB: one batch of them would be 70 MB.
    let mut s = State::new();
    for i in 0..1100u64 {
        let cmd = Command {
            id: CommandId(format!("c{i}")),
            op: Op::KvSet {
                key: format!("k{i:05}"),
                value: "x".repeat(64 << 10),
            },
        };
        s.apply(&Envelope {
            idx: EventIdx(i + 1),
            term: Term(1),
            event: Event::Command { cmd, at_ms: 0 },
        })
        .unwrap();
    }
    let (bytes, sha) = encode_snapshot(&s, 1);
    let got = decode_snapshot(&bytes, &sha).unwrap();
    assert_eq!(got.hash(), s.hash());
}

#[test]
fn a_snapshot_saved_in_format_1_still_loads() {
    #[derive(serde::Serialize)]
    struct HeaderV1 {
        index: EventIdx,
        term: Term,
        state_hash: StateHash,
        cluster_id: Option<ClusterId>,
        entries: u64,
    }
    // An empty State: its body is the meta batch and the end marker, the
    // same in every format; take it from a current encoding.
    let s = State::new();
    let (now, _) = encode_snapshot(&s, 1);
    let head_len = u32::from_le_bytes(now[10..14].try_into().unwrap()) as usize;
    let body = zstd::decode_all(&now[14 + head_len..]).unwrap();
    let header = HeaderV1 {
        index: s.index(),
        term: s.term(),
        state_hash: s.hash(),
        cluster_id: None,
        entries: 0,
    };
    let (bytes, sha) = assemble(1, &postcard::to_allocvec(&header).unwrap(), &body);
    assert_eq!(decode_snapshot(&bytes, &sha).unwrap().hash(), s.hash());
}

/// Stored outcomes without the digest of their request, which snapshots
/// of format 3 and older do not carry.
fn outcomes(s: &State) -> Vec<(CommandDigest, Outcome, EventIdx, u64)> {
    s.outcomes()
        .iter()
        .map(|(d, r)| (*d, r.outcome.clone(), r.idx, r.at_ms))
        .collect()
}

/// `fixtures/format3.snap` was written by the format 3 encoder from
/// `state_with(200)`: its outcomes carry no request digest. They load as
/// unknown (any request under their id gets the stored outcome), and the
/// state hash is the same as that of the State applied here.
#[test]
fn a_snapshot_saved_in_format_3_loads_with_requests_unknown() {
    use sha2::{Digest, Sha256};
    let v3 = include_bytes!("fixtures/format3.snap");
    assert_eq!(u16::from_le_bytes([v3[8], v3[9]]), 3);
    let sha: [u8; 32] = Sha256::digest(v3).into();
    let got = decode_snapshot(v3, &sha).unwrap();
    let want = state_with(200);
    assert_eq!(got.hash(), want.hash());
    assert_eq!(got.recompute_hash(), want.hash());
    assert_eq!(outcomes(&got), outcomes(&want));
    assert!(got.outcomes().values().all(|r| r.request.is_none()));
    assert!(want.outcomes().values().all(|r| r.request.is_some()));
    // Its members (written without a drain mark) are not drained.
    assert!(!got.nodes().is_empty());
    assert!(got.nodes().values().all(|n| !n.drained));
    // Written again, it is the current format and keeps what it knows.
    let (bytes, sha) = encode_snapshot(&got, 3);
    assert_eq!(
        u16::from_le_bytes([bytes[8], bytes[9]]),
        shoal_log::SNAPSHOT_FORMAT_VERSION
    );
    assert_eq!(
        decode_snapshot(&bytes, &sha).unwrap().outcomes(),
        got.outcomes()
    );
}

/// `fixtures/format2.snap` was written by the format 2 encoder from
/// `state_with(200)`: its outcomes are keyed by command id, and its header's
/// state hash sums them that way.
#[test]
fn a_snapshot_saved_in_format_2_loads_with_outcomes_by_digest() {
    use sha2::{Digest, Sha256};
    let v2 = include_bytes!("fixtures/format2.snap");
    assert_eq!(u16::from_le_bytes([v2[8], v2[9]]), 2);
    let sha: [u8; 32] = Sha256::digest(v2).into();
    let got = decode_snapshot(v2, &sha).unwrap();
    let want = state_with(200);
    assert_eq!(got.hash(), want.hash());
    assert_eq!(got.recompute_hash(), want.hash());
    assert_eq!(outcomes(&got), outcomes(&want));
    assert_eq!(got.kv(), want.kv());
    assert!(got.outcome(&CommandId::from("c7")).is_some());

    // The writer's hash is checked: the same body under a header that
    // promises another hash is refused.
    let head_len = u32::from_le_bytes(v2[10..14].try_into().unwrap()) as usize;
    let mut header: shoal_log::SnapshotHeader =
        postcard::from_bytes(&v2[14..14 + head_len]).unwrap();
    header.state_hash.0 ^= 1;
    let head = postcard::to_allocvec(&header).unwrap();
    let mut bad = v2[..10].to_vec();
    bad.extend_from_slice(&(head.len() as u32).to_le_bytes());
    bad.extend_from_slice(&head);
    bad.extend_from_slice(&v2[14 + head_len..]);
    let sha: [u8; 32] = Sha256::digest(&bad).into();
    assert!(matches!(
        decode_snapshot(&bad, &sha),
        Err(SnapshotError::StateHash { .. })
    ));
}

/// `state_with(40)` and a deployment of two replicas, one running and one
/// starting (no crash: format 5 kept no last exit).
fn state_with_deployment() -> State {
    let mut s = state_with(40);
    let next = |s: &mut State, event: Event| {
        let idx = s.index().0 + 1;
        s.apply(&Envelope {
            idx: EventIdx(idx),
            term: Term(2),
            event,
        })
        .unwrap();
    };
    let spec = InstanceSpec {
        runner: Runner::Synthetic {
            chunks: 1,
            interval_ms: 1,
            exit_code: 0,
        },
        resources: Resources::default(),
    };
    let deploy = Op::Deploy {
        name: "web".into(),
        spec,
        replicas: 2,
    };
    let cmd = |id: &str, op| Event::Command {
        cmd: Command {
            id: CommandId(id.into()),
            op,
        },
        at_ms: 100,
    };
    next(&mut s, cmd("deploy", deploy));
    for (replica, node) in [(0, "n1"), (1, "n2")] {
        let placed = Event::ReplicaPlaced {
            deployment: "web".into(),
            replica,
            node: NodeId::from(node),
            port: 20_000 + replica as u16,
        };
        next(&mut s, placed);
    }
    let token = s.deployments()["web"].placements[&0].token;
    let running = Op::ReplicaReport {
        deployment: "web".into(),
        replica: 0,
        token,
        status: ReplicaStatus::Running,
    };
    next(&mut s, cmd("report", running));
    s
}

/// `fixtures/format5.snap` was written by the format 5 encoder from
/// `state_with_deployment()`: its replicas carry no last exit. They load
/// with none and the state hash of the State applied here; written again,
/// a crash recorded since keeps its exit code.
#[test]
fn a_snapshot_saved_in_format_5_loads_replicas_without_a_last_exit() {
    use sha2::{Digest, Sha256};
    let v5 = include_bytes!("fixtures/format5.snap");
    assert_eq!(u16::from_le_bytes([v5[8], v5[9]]), 5);
    let sha: [u8; 32] = Sha256::digest(v5).into();
    let mut got = decode_snapshot(v5, &sha).unwrap();
    let want = state_with_deployment();
    assert_eq!(got.hash(), want.hash());
    assert_eq!(got.recompute_hash(), want.hash());
    assert_eq!(got.deployments(), want.deployments());
    let web = &got.deployments()["web"];
    assert_eq!(web.placements.len(), 2);
    assert!(web.placements.values().all(|p| p.last_exit.is_none()));

    let token = web.placements[&0].token;
    let crashed = Op::ReplicaReport {
        deployment: "web".into(),
        replica: 0,
        token,
        status: ReplicaStatus::Crashed { exit_code: 7 },
    };
    let idx = EventIdx(got.index().0 + 1);
    let event = Event::Command {
        cmd: Command {
            id: CommandId("crash".into()),
            op: crashed,
        },
        at_ms: 200,
    };
    got.apply(&Envelope {
        idx,
        term: Term(2),
        event,
    })
    .unwrap();
    let (bytes, sha) = encode_snapshot(&got, 3);
    assert_eq!(
        u16::from_le_bytes([bytes[8], bytes[9]]),
        shoal_log::SNAPSHOT_FORMAT_VERSION
    );
    let again = decode_snapshot(&bytes, &sha).unwrap();
    assert_eq!(again.hash(), got.hash());
    let replica = &again.deployments()["web"].placements[&0];
    assert_eq!((replica.restarts, replica.last_exit), (1, Some(7)));
}
