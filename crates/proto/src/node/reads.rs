//! Consistent reads through the node: a client's read index asked of Raft
//! here as master, or of the master as follower (`crate::reads` decides;
//! this performs what it answers).

use super::io::Output;
use super::Node;
use crate::log_store::LogStore;
use crate::pending::ReplyTo;
use crate::reads::{ReadAction, ReadView, Reader};
use crate::wire::{Direct, Refusal};
use shoal_model::{EventIdx, NodeId, Outcome};

impl<L: LogStore> Node<L> {
    fn read_view(&self) -> ReadView {
        let leading = self.is_master();
        ReadView {
            leading,
            can_read: self.raft.as_ref().is_some_and(|r| r.can_read()),
            master: self
                .master_view
                .id
                .clone()
                .filter(|m| *m != self.cfg.node && self.master_in_sight()),
        }
    }

    /// A client of this node asks for an index to read at.
    pub(super) fn read_index(&mut self, reply: ReplyTo, out: &mut Vec<Output>) {
        let refused = if self.cluster.is_none() {
            Some(Refusal::NotJoined)
        } else {
            // It applies nothing while its disk fails: the read would wait
            // for an index it does not reach.
            self.storage_fault()
                .map(|reason| Refusal::Storage(reason.to_owned()))
        };
        if let Some(refusal) = refused {
            return out.push(Output::Reply {
                to: reply,
                reply: Err(refusal),
            });
        }
        let view = self.read_view();
        let acts = self.reads.read(reply, self.now, &view);
        self.run_reads(acts, out);
    }

    /// A follower asks this node, as master, for an index to read at.
    pub(super) fn on_read_index(&mut self, from: NodeId, id: u64, out: &mut Vec<Output>) {
        let view = self.read_view();
        let acts = self.reads.asked_by(from, id, self.now, &view);
        self.run_reads(acts, out);
    }

    pub(super) fn on_read_index_reply(
        &mut self,
        from: &NodeId,
        id: u64,
        result: Result<EventIdx, Refusal>,
        out: &mut Vec<Output>,
    ) {
        let (trusted, acts) = self.reads.answered(from, id, result, self.now);
        if !trusted {
            self.metrics.untrusted_messages += 1;
        }
        self.run_reads(acts, out);
    }

    /// Raft confirmed a read round.
    pub(super) fn on_read_ready(&mut self, ctx: u64, index: EventIdx, out: &mut Vec<Output>) {
        let view = self.read_view();
        let acts = self.reads.ready(ctx, index, self.now, &view);
        self.run_reads(acts, out);
    }

    /// Rounds to start, readers to hand over, ask again or refuse.
    pub(super) fn tick_reads(&mut self, out: &mut Vec<Output>) {
        if self.reads.is_empty() {
            return;
        }
        let view = self.read_view();
        let acts = self.reads.tick(self.now, &view);
        self.run_reads(acts, out);
    }

    fn run_reads(&mut self, acts: Vec<ReadAction>, out: &mut Vec<Output>) {
        for a in acts {
            match a {
                ReadAction::Round(ctx) => {
                    self.metrics.read_rounds += 1;
                    // A round Raft cannot start is retried by `tick_reads`.
                    if let Some(Err(e)) = self.raft.as_mut().map(|r| r.read_index(ctx)) {
                        tracing::debug!(error = %e, "read round not started");
                    }
                }
                ReadAction::Ask { to, id } => self.send(to, Direct::ReadIndex { id }, out),
                ReadAction::Answer(Reader::Local(to), result) => out.push(Output::Reply {
                    to,
                    reply: result.map(|idx| (idx, Outcome::Done)),
                }),
                ReadAction::Answer(Reader::Remote { node, id }, result) => {
                    self.send(node, Direct::ReadIndexReply { id, result }, out)
                }
            }
        }
    }
}
