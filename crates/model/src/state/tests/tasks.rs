//! Tasks: leases, retries, stale reports.

use super::*;
use crate::event::*;
use crate::ids::*;

pub(super) fn synthetic_task() -> TaskSpec {
    TaskSpec {
        runner: Runner::Synthetic {
            chunks: 1,
            interval_ms: 1,
            exit_code: 0,
        },
        timeout_ms: None,
        node: None,
        labels: Default::default(),
        resources: Resources::default(),
        max_attempts: 2,
    }
}

#[test]
fn task_lease_retry_and_stale_report() {
    let mut s = founded();
    let Outcome::Task(id) = run(
        &mut s,
        Op::TaskSubmit {
            spec: synthetic_task(),
        },
    ) else {
        panic!()
    };
    let grant = |s: &mut State| {
        let i = s.index().0 + 1;
        at(
            s,
            Event::TaskGranted {
                task: id.clone(),
                node: NodeId::from("n1"),
                lease_ms: 1000,
            },
        );
        FencingToken(i)
    };
    let t1 = grant(&mut s);
    at(
        &mut s,
        Event::TaskLeaseExpired {
            task: id.clone(),
            token: t1,
        },
    );
    assert_eq!(s.tasks().get(&id).unwrap().status, TaskStatus::Queued);
    let t2 = grant(&mut s);
    let finished = TaskReport::Finished {
        exit_code: 0,
        class: ExitClass::Success,
    };
    assert_eq!(
        run(
            &mut s,
            Op::TaskReport {
                task: id.clone(),
                token: t1,
                report: finished
            }
        ),
        Outcome::Rejected(Rejection::StaleToken)
    );
    assert_eq!(
        run(
            &mut s,
            Op::TaskReport {
                task: id.clone(),
                token: t2,
                report: finished
            }
        ),
        Outcome::Done
    );
    assert!(s.tasks().get(&id).unwrap().status.is_terminal());
    assert_eq!(s.tasks().get(&id).unwrap().attempt, 2);
    at(
        &mut s,
        Event::TasksForgotten {
            tasks: vec![id.clone()],
        },
    );
    assert!(s.tasks().is_empty());
}
