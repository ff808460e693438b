//! The members a node keeps connections to, and reconnects when they
//! fall silent.

use super::*;

#[test]
fn a_follower_keeps_the_members_named_once_per_change() {
    let role = |node: &str, role| Event::Membership {
        node: NodeId::from(node),
        role,
    };
    let state = cluster_state(
        &["m", ME, "a", "v"],
        vec![role("v", shoal_model::Role::Voter)],
    );
    let base = state.index().0;
    let mut n = start(Some("c"), Some(state));
    let kept = |out: &[Output]| -> Vec<Vec<String>> {
        (out.iter())
            .filter_map(|o| match o {
                Output::Keep(a) => Some(a.clone()),
                _ => None,
            })
            .collect()
    };
    let out = n.handle(Input::Wake, ms(0), 0);
    assert_eq!(
        kept(&out),
        [["mem://m", "mem://v"]],
        "members, not followers"
    );
    assert!(kept(&n.handle(Input::Wake, ms(300), 0)).is_empty());
    // v leaves the voters: the follower keeps the master alone.
    n.handle(heartbeat("m", Some("c"), base, base), ms(400), 0);
    n.handle(heartbeat("v", Some("c"), base, base), ms(400), 0);
    let mut demoted = noops(base + 1, base + 1);
    demoted[0].data = shoal_model::encode_event(&role("v", shoal_model::Role::Follower));
    let mut out = n.handle(gossiped(demoted), ms(500), 0);
    out.extend(n.handle(Input::Wake, ms(600), 0));
    assert_eq!(kept(&out), [["mem://m"]]);
}

#[test]
fn a_member_silent_for_three_heartbeats_is_reconnected_once_per_silence() {
    let mut n = follower(cluster_state(&["m", ME, "a"], vec![]));
    // "m" (a member) and "a" (a follower, which sends its heartbeats to
    // the members only) are heard at 100 ms, then fall silent.
    let heard = |n: &mut Node<MemLog>, at| {
        n.handle(heartbeat("m", Some("c"), 1, 1), ms(at), 0);
        n.handle(heartbeat("a", Some("c"), 1, 1), ms(at), 0);
    };
    heard(&mut n, 100);
    let reconnects = |n: &mut Node<MemLog>, from: u64, to: u64| -> Vec<(u64, String)> {
        let mut seen = Vec::new();
        for t in (from..=to).step_by(300) {
            for o in n.handle(Input::Wake, ms(t), 0) {
                if let Output::Reconnect(id) = o {
                    seen.push((t, id.to_string()));
                }
            }
        }
        seen
    };
    assert_eq!(
        reconnects(&mut n, 300, 3000),
        [(1200, "m".to_owned())],
        "once, after 900 ms"
    );
    // Heard again, then silent again: reconnected again.
    heard(&mut n, 3100);
    assert_eq!(reconnects(&mut n, 3300, 4500), [(4200, "m".to_owned())]);
}

#[test]
fn silence_while_this_node_was_held_up_is_not_the_members() {
    let mut n = follower(cluster_state(&["m", ME], vec![]));
    n.handle(heartbeat("m", Some("c"), 1, 1), ms(100), 0);
    n.handle(Input::Wake, ms(300), 0);
    // Nothing ran here for two seconds (a starved host): "m"'s heartbeats
    // may wait in this node's own queue. It is given 900 ms from now.
    let mut reconnected = Vec::new();
    for t in (2300..=3500).step_by(300) {
        for o in n.handle(Input::Wake, ms(t), 0) {
            if let Output::Reconnect(id) = o {
                reconnected.push((t, id.to_string()));
            }
        }
    }
    assert_eq!(reconnected, [(3200, "m".to_owned())]);
}

/// The frames `out` sends, to whom, of the reports' relay.
fn relay_sent(out: &[Output]) -> Vec<(String, Direct)> {
    (sent(out).into_iter())
        .filter(|(_, m)| matches!(m, Direct::ReportsWanted | Direct::Reports(_)))
        .collect()
}

fn relayed(node: &str, age_ms: u64) -> crate::wire::RelayedReport {
    let metrics = testing::metrics(node, 500);
    crate::wire::RelayedReport { metrics, age_ms }
}

#[test]
fn a_follower_whose_reports_are_read_asks_a_member_once_a_metrics_interval() {
    let mut n = follower(cluster_state(&["m", ME, "f"], vec![]));
    let ask = vec![("m".to_owned(), Direct::ReportsWanted)];
    assert_eq!(relay_sent(&n.handle(Input::WantReports, ms(10), 0)), ask);
    assert_eq!(relay_sent(&n.handle(Input::WantReports, ms(500), 0)), []);
    assert_eq!(relay_sent(&n.handle(Input::WantReports, ms(1010), 0)), ask);
    // What m relays is kept by age; its own report, never.
    let age_of = |n: &Node<MemLog>, id: &str| {
        let caps = n.capacities().into_iter();
        caps.filter(|(m, _)| m.node.as_str() == id)
            .map(|(m, age)| (m.cpu_free_milli, age))
            .next()
    };
    let mine = age_of(&n, ME).map(|(cpu, _)| cpu);
    let reports = Direct::Reports(vec![relayed("f", 300), relayed(ME, 0)]);
    n.handle(direct("m", reports), ms(1100), 0);
    assert_eq!(age_of(&n, "f"), Some((500, ms(300))));
    assert_eq!(age_of(&n, ME).map(|(cpu, _)| cpu), mine);
    assert_ne!(
        mine,
        Some(500),
        "its own report differs from the relayed one"
    );
    // An older report than the one held is not.
    let mut older = relayed("f", 900);
    older.metrics.cpu_free_milli = 1;
    n.handle(direct("m", Direct::Reports(vec![older])), ms(1100), 0);
    assert_eq!(age_of(&n, "f"), Some((500, ms(300))));
    // A follower's word on another node is not believed, and counted.
    let untrusted = n.metrics().untrusted_messages;
    let mut forged = relayed("m", 0);
    forged.metrics.cpu_free_milli = 1;
    n.handle(direct("f", Direct::Reports(vec![forged])), ms(1200), 0);
    assert_eq!(n.metrics().untrusted_messages, untrusted + 1);
    assert!(age_of(&n, "m").is_none_or(|(cpu, _)| cpu != 1));
    // Nor is a follower asked: it does not answer.
    assert_eq!(
        relay_sent(&n.handle(direct("f", Direct::ReportsWanted), ms(1300), 0)),
        []
    );
}
