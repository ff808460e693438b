//! Task output on a node, without IO: a bounded ring per task, and the
//! nodes subscribed to it.
//!
//! The node running a task records each chunk here and forwards it to the
//! subscribers, nodes whose clients follow the task; a subscription lasts
//! a few seconds unless renewed. A subscriber records what it receives in
//! its own ring too, so `shoal logs` answers from either. Chunks carry a
//! sequence number per attempt; one already recorded is dropped, so a
//! replay after a resubscribe does not repeat output.

use shoal_model::{NodeId, OutputChunk, TaskId};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct OutputConfig {
    /// Tasks whose output is kept; the oldest is dropped past it.
    pub max_tasks: usize,
    /// Bytes kept per task; the oldest chunks go first.
    pub max_bytes_per_task: usize,
    /// A subscription lapses this long after its last renewal.
    pub subscription: Duration,
    /// Subscribers per task at most.
    pub max_subscribers: usize,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            max_tasks: 256,
            max_bytes_per_task: 1 << 20,
            subscription: Duration::from_secs(5),
            max_subscribers: 64,
        }
    }
}

#[derive(Debug, Default)]
struct TaskOutput {
    chunks: VecDeque<OutputChunk>,
    bytes: usize,
    /// Highest sequence number recorded per attempt.
    last: BTreeMap<u32, u64>,
    subscribers: BTreeMap<NodeId, Duration>,
    /// Chunks dropped to stay within the byte cap.
    dropped: u64,
}

#[derive(Debug, Default)]
pub struct OutputHub {
    cfg: OutputConfig,
    tasks: BTreeMap<TaskId, TaskOutput>,
    /// Tasks in the order they were first seen, for eviction.
    order: VecDeque<TaskId>,
}

impl OutputHub {
    pub fn new(cfg: OutputConfig) -> Self {
        OutputHub {
            cfg,
            tasks: BTreeMap::new(),
            order: VecDeque::new(),
        }
    }

    fn entry(&mut self, task: &TaskId) -> &mut TaskOutput {
        if !self.tasks.contains_key(task) {
            while self.order.len() >= self.cfg.max_tasks.max(1) {
                if let Some(old) = self.order.pop_front() {
                    self.tasks.remove(&old);
                }
            }
            self.order.push_back(task.clone());
        }
        self.tasks.entry(task.clone()).or_default()
    }

    /// Records a chunk; returns the subscribers to forward it to, or None
    /// if it was already recorded.
    pub fn record(&mut self, chunk: OutputChunk, now: Duration) -> Option<Vec<NodeId>> {
        let max = self.cfg.max_bytes_per_task;
        let t = self.entry(&chunk.task);
        let last = t.last.get(&chunk.attempt).copied();
        if last.is_some_and(|l| chunk.seq <= l) {
            return None;
        }
        t.last.insert(chunk.attempt, chunk.seq);
        t.bytes += chunk.data.len();
        t.chunks.push_back(chunk);
        while t.bytes > max {
            match t.chunks.pop_front() {
                Some(c) => {
                    t.bytes -= c.data.len();
                    t.dropped += 1;
                }
                None => break,
            }
        }
        t.subscribers.retain(|_, until| now < *until);
        Some(t.subscribers.keys().cloned().collect())
    }

    /// Subscribes `node` for a while; returns the chunks it has not seen:
    /// those of `attempt` from `from_seq` on, and of later attempts.
    pub fn subscribe(
        &mut self,
        task: &TaskId,
        node: NodeId,
        attempt: u32,
        from_seq: u64,
        now: Duration,
    ) -> Vec<OutputChunk> {
        let (ttl, max_subs) = (self.cfg.subscription, self.cfg.max_subscribers);
        let t = self.entry(task);
        if t.subscribers.len() < max_subs || t.subscribers.contains_key(&node) {
            t.subscribers.insert(node, now + ttl);
        }
        t.chunks
            .iter()
            .filter(|c| (c.attempt, c.seq) >= (attempt, from_seq))
            .cloned()
            .collect()
    }

    /// Everything kept of a task's output, oldest first.
    pub fn chunks(&self, task: &TaskId) -> Vec<OutputChunk> {
        self.tasks
            .get(task)
            .map(|t| t.chunks.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Chunks of a task dropped to stay within the cap.
    pub fn dropped(&self, task: &TaskId) -> u64 {
        self.tasks.get(task).map_or(0, |t| t.dropped)
    }

    /// The next sequence number expected of an attempt.
    pub fn next_seq(&self, task: &TaskId, attempt: u32) -> u64 {
        self.tasks
            .get(task)
            .and_then(|t| t.last.get(&attempt))
            .map_or(0, |l| l + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_model::Stream;

    fn chunk(task: &str, attempt: u32, seq: u64, data: &str) -> OutputChunk {
        OutputChunk {
            task: TaskId(task.into()),
            attempt,
            stream: Stream::Stdout,
            seq,
            data: data.as_bytes().to_vec(),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn subscribers_get_the_backlog_then_live_chunks_until_they_lapse() {
        let mut hub = OutputHub::default();
        let t = TaskId("t".into());
        assert_eq!(hub.record(chunk("t", 1, 0, "a"), ms(0)), Some(vec![]));
        assert_eq!(hub.record(chunk("t", 1, 1, "b"), ms(1)), Some(vec![]));
        let backlog = hub.subscribe(&t, NodeId::from("x"), 1, 1, ms(2));
        assert_eq!(backlog, vec![chunk("t", 1, 1, "b")]);
        assert_eq!(
            hub.record(chunk("t", 1, 2, "c"), ms(3)),
            Some(vec![NodeId::from("x")])
        );
        // A repeat is dropped; a lapsed subscription gets nothing.
        assert_eq!(hub.record(chunk("t", 1, 2, "c"), ms(4)), None);
        assert_eq!(hub.record(chunk("t", 2, 0, "d"), ms(6000)), Some(vec![]));
        assert_eq!(hub.next_seq(&t, 1), 3);
        assert_eq!(hub.next_seq(&t, 2), 1);
        assert_eq!(hub.next_seq(&t, 3), 0);
        assert_eq!(hub.chunks(&t).len(), 4);
    }

    #[test]
    fn bytes_per_task_and_tasks_are_capped() {
        let mut hub = OutputHub::new(OutputConfig {
            max_tasks: 2,
            max_bytes_per_task: 10,
            ..OutputConfig::default()
        });
        for i in 0..5 {
            hub.record(chunk("t", 1, i, "xxxx"), ms(i));
        }
        let t = TaskId("t".into());
        let kept: Vec<u64> = hub.chunks(&t).iter().map(|c| c.seq).collect();
        assert_eq!(kept, vec![3, 4]);
        assert_eq!(hub.dropped(&t), 3);
        hub.record(chunk("u", 1, 0, "x"), ms(10));
        hub.record(chunk("v", 1, 0, "x"), ms(11));
        assert!(hub.chunks(&t).is_empty(), "the oldest task was dropped");
        assert_eq!(hub.chunks(&TaskId("v".into())).len(), 1);
    }
}
