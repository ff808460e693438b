use super::*;
use crate::testing::{cluster_state, command, leased_task, metrics, task_spec};
use shoal_model::Op;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn caps(nodes: &[(&str, u32)], at: Duration) -> Capacities {
    let mut c = Capacities::default();
    for (n, cpu) in nodes {
        c.on_metrics(metrics(n, *cpu), at);
    }
    c
}

const NODE_TIMEOUT: Duration = Duration::from_secs(2);

/// Every node heard lately.
fn heard_all(_: &NodeId) -> bool {
    true
}

#[test]
fn a_lease_expires_at_its_length_plus_the_margin() {
    let mut s = cluster_state(&["m", "a"]);
    let token = leased_task(&mut s, "t", "a", None);
    let cfg = PlacementConfig::default();
    let mut p = Planner::default();
    let none = Capacities::default();
    // First seen at 10 s by a master elected at 0.
    assert!(p
        .plan(&cfg, &s, &none, &heard_all, secs(10), secs(0), NODE_TIMEOUT)
        .is_empty());
    assert!(p
        .plan(
            &cfg,
            &s,
            &none,
            &heard_all,
            ms(15_999),
            secs(0),
            NODE_TIMEOUT
        )
        .is_empty());
    let got = p.plan(&cfg, &s, &none, &heard_all, secs(16), secs(0), NODE_TIMEOUT);
    assert_eq!(
        got,
        vec![Event::TaskLeaseExpired {
            task: TaskId::from("t"),
            token
        }]
    );
    assert!(
        p.plan(&cfg, &s, &none, &heard_all, secs(17), secs(0), NODE_TIMEOUT)
            .is_empty(),
        "proposed once"
    );
}

#[test]
fn a_renewal_from_the_holder_moves_the_deadline_and_one_from_another_node_does_not() {
    let mut s = cluster_state(&["m", "a", "b"]);
    let token = leased_task(&mut s, "t", "a", None);
    let cfg = PlacementConfig::default();
    let mut p = Planner::default();
    let none = Capacities::default();
    p.plan(&cfg, &s, &none, &heard_all, secs(0), secs(0), NODE_TIMEOUT);
    let lease = [(TaskId::from("t"), token)];
    assert!(p.renew(&NodeId::from("b"), &lease, &s, secs(5)).is_empty());
    assert_eq!(
        p.renew(&NodeId::from("a"), &lease, &s, secs(5)),
        vec![token]
    );
    assert!(p
        .plan(&cfg, &s, &none, &heard_all, secs(6), secs(0), NODE_TIMEOUT)
        .is_empty());
    assert_eq!(
        p.plan(&cfg, &s, &none, &heard_all, secs(11), secs(0), NODE_TIMEOUT)
            .len(),
        1
    );
}

#[test]
fn a_queued_task_goes_to_an_alive_node_with_room_for_it() {
    let mut s = cluster_state(&["m", "a", "b"]);
    command(
        &mut s,
        "t",
        Op::TaskSubmit {
            spec: task_spec(1500, None),
        },
    );
    let cfg = PlacementConfig::default();
    let mut p = Planner::default();
    let c = caps(&[("m", 1000), ("a", 500), ("b", 2000)], secs(0));
    let got = p.plan(&cfg, &s, &c, &heard_all, secs(1), secs(0), NODE_TIMEOUT);
    assert!(
        matches!(&got[..], [Event::TaskGranted { node, .. }] if node.as_str() == "b"),
        "{got:?}"
    );
    // Nobody has room, or the figures are stale: it waits.
    let mut p = Planner::default();
    let small = caps(&[("m", 1000), ("a", 500), ("b", 1000)], secs(0));
    assert!(p
        .plan(&cfg, &s, &small, &heard_all, secs(1), secs(0), NODE_TIMEOUT)
        .is_empty());
    let mut p = Planner::default();
    assert!(p
        .plan(&cfg, &s, &c, &heard_all, secs(6), secs(0), NODE_TIMEOUT)
        .is_empty());
}

#[test]
fn a_node_not_heard_lately_gets_no_task_nor_replica() {
    let mut s = cluster_state(&["m", "a", "b"]);
    command(
        &mut s,
        "t",
        Op::TaskSubmit {
            spec: task_spec(100, None),
        },
    );
    deploy(&mut s, "web", 1);
    let cfg = PlacementConfig::default();
    // "b" has the most room; the master has not heard it lately.
    let c = caps(&[("m", 1000), ("a", 1000), ("b", 8000)], secs(0));
    let heard_all_but_b = |n: &NodeId| n.as_str() != "b";
    let mut p = Planner::default();
    let got = p.plan(
        &cfg,
        &s,
        &c,
        &heard_all_but_b,
        secs(1),
        secs(0),
        NODE_TIMEOUT,
    );
    assert!(
        matches!(&got[..], [Event::TaskGranted { node, .. }] if node.as_str() != "b"),
        "{got:?}"
    );
    let got = p.plan_replicas(&cfg, &s, &c, &heard_all_but_b, secs(1), true);
    assert!(
        matches!(&got[..], [Event::ReplicaPlaced { node, .. }] if node.as_str() != "b"),
        "{got:?}"
    );
    // Heard by none, not even itself: nothing is placed.
    let mut p = Planner::default();
    assert!(p
        .plan(&cfg, &s, &c, &|_| false, secs(1), secs(0), NODE_TIMEOUT)
        .is_empty());
    assert!(p
        .plan_replicas(&cfg, &s, &c, &|_| false, secs(1), true)
        .is_empty());
}

/// Deploys `name` with `replicas` synthetic replicas.
fn deploy(state: &mut State, name: &str, replicas: u32) {
    let spec = shoal_model::InstanceSpec {
        runner: task_spec(0, None).runner,
        resources: Default::default(),
    };
    let op = Op::Deploy {
        name: name.to_owned(),
        spec,
        replicas,
    };
    command(state, &format!("deploy-{name}"), op);
}

/// Plans `state`'s replicas and applies the placements; returns them as
/// (node, port).
fn place(state: &mut State, caps: &Capacities) -> Vec<(String, u16)> {
    let events = Planner::default().plan_replicas(
        &PlacementConfig::default(),
        state,
        caps,
        &heard_all,
        secs(10),
        true,
    );
    let mut placed = Vec::new();
    for e in events {
        if let Event::ReplicaPlaced { node, port, .. } = &e {
            placed.push((node.to_string(), *port));
        }
        crate::testing::apply(state, e);
    }
    placed
}

#[test]
fn replicas_on_nodes_of_one_host_get_ports_of_their_own() {
    let mut s = cluster_state(&["a", "b", "c"]);
    let mut c = Capacities::default();
    // a and b share a host (two nodes on one machine); c has its own.
    for (node, host) in [("a", 1), ("b", 1), ("c", 2)] {
        c.on_metrics(
            NodeMetrics {
                host,
                ..metrics(node, 4000)
            },
            secs(10),
        );
    }
    deploy(&mut s, "web", 6);
    let placed = place(&mut s, &c);
    assert_eq!(placed.len(), 6, "{placed:?}");
    let on_host = |h: &[&str]| {
        let mut ports: Vec<u16> = placed
            .iter()
            .filter(|(n, _)| h.contains(&n.as_str()))
            .map(|(_, p)| *p)
            .collect();
        ports.sort_unstable();
        ports
    };
    assert_eq!(
        on_host(&["a", "b"]),
        [20000, 20001, 20002, 20003],
        "{placed:?}"
    );
    assert_eq!(on_host(&["c"]), [20000, 20001], "another host reuses them");

    // A later deployment keeps clear of the ports State already holds.
    deploy(&mut s, "api", 2);
    let more = place(&mut s, &c);
    for (node, port) in &more {
        let clash = placed.iter().any(|(n, p)| {
            p == port
                && c.port_space(&NodeId::from(n.as_str()))
                    == c.port_space(&NodeId::from(node.as_str()))
        });
        assert!(
            !clash,
            "{node}:{port} is already held on its host: {placed:?}"
        );
    }
}

#[test]
fn a_replica_gets_a_port_of_its_nodes_range_that_no_program_listens_on() {
    let mut s = cluster_state(&["a"]);
    let mut c = Capacities::default();
    let m = NodeMetrics {
        replica_ports: "31000-31003".parse().unwrap(),
        ports_taken: vec![31000, 31002],
        ..metrics("a", 4000)
    };
    c.on_metrics(m, secs(10));
    deploy(&mut s, "web", 3);
    // Two of the four ports are free: the third replica waits.
    assert_eq!(
        place(&mut s, &c),
        [("a".to_owned(), 31001), ("a".to_owned(), 31003)]
    );
    assert!(place(&mut s, &c).is_empty(), "no port left on a");
    // The program on 31002 is gone: the third replica gets it.
    let m = NodeMetrics {
        replica_ports: "31000-31003".parse().unwrap(),
        ports_taken: vec![31000],
        ..metrics("a", 4000)
    };
    c.on_metrics(m, secs(11));
    assert_eq!(place(&mut s, &c), [("a".to_owned(), 31002)]);
}

#[test]
fn a_port_range_is_first_dash_last() {
    let r: PortRange = "20000-20009".parse().unwrap();
    assert_eq!((r.first, r.last, r.ports().count()), (20000, 20009, 10));
    assert_eq!(r.to_string(), "20000-20009");
    for bad in ["20000", "2-1", "0-10", "1-70000", "a-b", ""] {
        assert!(bad.parse::<PortRange>().is_err(), "{bad} accepted");
    }
}

#[test]
fn a_peers_report_is_cut_to_bounds() {
    let mut c = Capacities::default();
    let m = NodeMetrics {
        ports_taken: (0..5000).collect(),
        version: "é".repeat(200),
        api: "x".repeat(300),
        unheard: (0..1000).map(|i| NodeId(format!("n{i}"))).collect(),
        ..metrics("a", 1000)
    };
    c.on_metrics(m, secs(1));
    let kept = &c.get(&NodeId::from("a")).unwrap().metrics;
    assert_eq!(kept.ports_taken.len(), PortRange::MAX_TAKEN);
    assert_eq!(kept.version.len(), 128, "cut on a character boundary");
    assert_eq!(kept.api.len(), 128);
    assert_eq!(kept.unheard.len(), Capacities::MAX_UNHEARD);
}

#[test]
fn a_drained_node_gets_no_new_work_and_its_replicas_move_off_it() {
    let mut s = cluster_state(&["a", "b"]);
    let c = caps(&[("a", 4000), ("b", 4000)], secs(10));
    deploy(&mut s, "web", 2);
    let mut on: Vec<String> = place(&mut s, &c).into_iter().map(|(n, _)| n).collect();
    on.sort();
    assert_eq!(on, ["a", "b"], "spread over both");
    let drain = Op::NodeDrain {
        node: NodeId::from("b"),
        drain: true,
    };
    command(&mut s, "drain-b", drain);
    // The replica on b is taken off, then placed again, on a.
    let cfg = PlacementConfig::default();
    let off = Planner::default().plan_replicas(&cfg, &s, &c, &heard_all, secs(10), true);
    assert!(
        matches!(&off[..], [Event::ReplicaUnplaced { replica, .. }]
            if s.deployments()["web"].placements[replica].node.as_str() == "b"),
        "{off:?}"
    );
    for e in off {
        crate::testing::apply(&mut s, e);
    }
    let again: Vec<String> = place(&mut s, &c).into_iter().map(|(n, _)| n).collect();
    assert_eq!(again, ["a"]);
    // A task goes to a, however much room b has.
    command(
        &mut s,
        "t",
        Op::TaskSubmit {
            spec: task_spec(100, None),
        },
    );
    let c = caps(&[("a", 200), ("b", 4000)], secs(10));
    let got = Planner::default().plan(&cfg, &s, &c, &heard_all, secs(11), secs(0), NODE_TIMEOUT);
    assert!(
        matches!(&got[..], [Event::TaskGranted { node, .. }] if node.as_str() == "a"),
        "{got:?}"
    );
}

#[test]
fn a_node_that_takes_no_work_gets_no_task_and_its_replicas_move_off_it() {
    let mut s = cluster_state(&["a", "b"]);
    let c = caps(&[("a", 4000), ("b", 4000)], secs(10));
    deploy(&mut s, "web", 2);
    assert_eq!(place(&mut s, &c).len(), 2);
    // b restarts with --no-worker, and says so.
    let mut c = caps(&[("a", 4000)], secs(10));
    let no_work = NodeMetrics {
        worker: false,
        ..metrics("b", 8000)
    };
    c.on_metrics(no_work, secs(10));
    let cfg = PlacementConfig::default();
    let off = Planner::default().plan_replicas(&cfg, &s, &c, &heard_all, secs(10), true);
    assert!(
        matches!(&off[..], [Event::ReplicaUnplaced { .. }]),
        "{off:?}"
    );
    for e in off {
        crate::testing::apply(&mut s, e);
    }
    assert_eq!(place(&mut s, &c), [("a".to_owned(), 20001)]);
    command(
        &mut s,
        "t",
        Op::TaskSubmit {
            spec: task_spec(100, None),
        },
    );
    let got = Planner::default().plan(&cfg, &s, &c, &heard_all, secs(11), secs(0), NODE_TIMEOUT);
    assert!(
        matches!(&got[..], [Event::TaskGranted { node, .. }] if node.as_str() == "a"),
        "{got:?}"
    );
}
