//! The snapshot transfer's part of catching up: offers to a request on
//! gossip, chunks and refusals from the sources, and the choice among
//! offers when the wait is over (see `offers`). A transfer that loses
//! every source keeps what arrived and names that snapshot when it asks
//! again; replicas still holding it offer it over newer ones, and any
//! offer of it is taken (its chunks are checked against the hashes a
//! trusted offer gave), so the transfer goes on from where it stopped
//! (`SnapshotReceiver::resume`) rather than start over.

use super::offers::{self, Offered};
use super::{BadOffer, CatchUp, CatchUpAction, Transfer, MAX_OFFERS};
use crate::snapshot_transfer::{ReceiveEvent, SnapshotReceiver};
use crate::wire::{SnapshotChunk, SnapshotOffer};
use shoal_model::NodeId;
use std::time::Duration;

impl CatchUp {
    /// A replica offers a snapshot; `vouched` when it is one whose word
    /// counts (see `trust`). Offers are chosen among when the wait after
    /// the first vouched one is over, or at once when enough sources of
    /// it are in. An offer of the snapshot being pulled, come late (its
    /// sender had to build it), adds a source.
    pub fn on_offer(
        &mut self,
        from: &NodeId,
        mut offer: SnapshotOffer,
        vouched: bool,
        now: Duration,
    ) -> Result<(), BadOffer> {
        if let Transfer::Receiving(rx) = &mut self.transfer {
            if !answers(rx.session(), offer.session) {
                return Err(BadOffer::Unasked);
            }
            if rx.offer().same_snapshot(&offer) {
                rx.add_source(from.clone(), self.cfg.max_sources);
            }
            return Ok(());
        }
        let Transfer::Asking(a) = &mut self.transfer else {
            return Err(BadOffer::Unasked);
        };
        if !answers(a.session, offer.session) {
            return Err(BadOffer::Unasked);
        }
        offer.check().map_err(BadOffer::Malformed)?;
        offer.session = a.session;
        if offer.index <= a.have {
            return Ok(());
        }
        // The rest of a snapshot part of which is here counts as vouched
        // for (`offers::choose`): the wait for more offers starts.
        let parked = self.parked.as_ref().map(|rx| rx.offer());
        let usable = vouched || parked.is_some_and(|p| p.same_snapshot(&offer));
        a.offers.retain(|o| &o.from != from);
        if a.offers.len() >= MAX_OFFERS {
            return Ok(());
        }
        a.offers.push(Offered {
            from: from.clone(),
            offer,
            vouched,
        });
        let enough = offers::choose(&a.offers, parked, a.master.as_ref(), self.cfg.max_sources)
            .is_some_and(|(_, sources)| sources.len() >= self.cfg.max_sources);
        if enough {
            a.decide_at = Some(now);
        } else if usable && a.decide_at.is_none() {
            a.decide_at = Some(now + self.cfg.offer_wait);
        }
        Ok(())
    }

    /// Bytes of `chunk` that were not taken (it came twice, late, unasked,
    /// or for a transfer no longer under way), and what follows from it.
    pub fn on_chunk(
        &mut self,
        from: &NodeId,
        chunk: SnapshotChunk,
        now: Duration,
    ) -> (u64, Vec<CatchUpAction>) {
        let len = chunk.data.len() as u64;
        let Transfer::Receiving(rx) = &mut self.transfer else {
            return (len, vec![]);
        };
        let before = rx.taken_bytes();
        let evs = rx.on_chunk(from, chunk, now);
        let unused = len - (rx.taken_bytes() - before);
        (unused, self.receive_events(evs, now))
    }

    pub fn on_refused(
        &mut self,
        from: &NodeId,
        session: u64,
        reason: &str,
        now: Duration,
    ) -> Vec<CatchUpAction> {
        let Transfer::Receiving(rx) = &mut self.transfer else {
            return vec![];
        };
        let evs = rx.on_refused(from, session, reason, now);
        self.receive_events(evs, now)
    }

    /// What is due by time: late chunks asked again, offers chosen among,
    /// a request with no trusted offer given up.
    pub fn tick(&mut self, now: Duration) -> Vec<CatchUpAction> {
        match &mut self.transfer {
            Transfer::Idle => vec![],
            Transfer::Receiving(rx) => {
                let evs = rx.on_tick(now);
                self.receive_events(evs, now)
            }
            Transfer::Asking(a) => {
                if a.decide_at.is_some_and(|t| t <= now) {
                    return self.decide(now);
                }
                if a.give_up_at <= now {
                    let why = format!(
                        "no trusted replica offered a snapshot within {:?}",
                        self.cfg.offer_timeout
                    );
                    return self.failed(why, now);
                }
                vec![]
            }
        }
    }

    /// Chooses among the offers and starts pulling the chosen snapshot.
    fn decide(&mut self, now: Duration) -> Vec<CatchUpAction> {
        let Transfer::Asking(a) = std::mem::replace(&mut self.transfer, Transfer::Idle) else {
            return vec![];
        };
        let parked = self.parked.as_ref().map(|rx| rx.offer());
        let Some((offer, sources)) =
            offers::choose(&a.offers, parked, a.master.as_ref(), self.cfg.max_sources)
        else {
            return self.failed("no usable snapshot offer".into(), now);
        };
        let index = offer.index;
        let parked = self.parked.take();
        let resumed = parked
            .as_ref()
            .is_some_and(|rx| rx.offer().same_snapshot(&offer));
        let (rx, evs) = match parked {
            Some(mut rx) if resumed => {
                let evs = rx.resume(&offer, sources.clone(), a.master, now);
                (rx, evs)
            }
            _ => {
                let (rx, evs) = SnapshotReceiver::start(
                    self.cfg.receive,
                    offer,
                    sources.clone(),
                    a.master,
                    now,
                );
                (Box::new(rx), evs)
            }
        };
        self.transfer = Transfer::Receiving(rx);
        let behind = self.known_commit.0.saturating_sub(a.have.0);
        let mut out = vec![CatchUpAction::SnapshotStarted {
            sources,
            index,
            behind,
            resumed,
        }];
        out.extend(self.receive_events(evs, now));
        out
    }

    fn failed(&mut self, reason: String, now: Duration) -> Vec<CatchUpAction> {
        self.transfer = Transfer::Idle;
        self.retry_at = now + self.cfg.retry_after;
        self.need_snapshot = true;
        vec![CatchUpAction::Failed(reason)]
    }

    fn receive_events(&mut self, evs: Vec<ReceiveEvent>, now: Duration) -> Vec<CatchUpAction> {
        let mut out = Vec::new();
        for ev in evs {
            match ev {
                ReceiveEvent::Request { to, req, again } => {
                    out.push(CatchUpAction::SnapshotRequest { to, req, again })
                }
                ReceiveEvent::Progress(p) => out.push(CatchUpAction::Progress(p)),
                ReceiveEvent::Dropped {
                    source,
                    reason,
                    bad,
                } => out.push(CatchUpAction::Dropped {
                    source,
                    reason,
                    bad,
                }),
                ReceiveEvent::Done { state, snap } => {
                    self.transfer = Transfer::Idle;
                    out.push(CatchUpAction::Install(state, snap));
                }
                ReceiveEvent::Failed { reason } => {
                    // Kept to go on with only if it moved since it last
                    // (re)started: a snapshot whose one holder stalls
                    // each time is not asked of it for ever.
                    let was = std::mem::replace(&mut self.transfer, Transfer::Idle);
                    if let Transfer::Receiving(rx) = was {
                        let moved = rx.delivered().iter().any(|(_, n)| *n > 0);
                        self.parked = (rx.resumable() && moved).then_some(rx);
                    }
                    out.extend(self.failed(reason, now));
                }
            }
        }
        out
    }
}

/// Requests of this process whose offers still count: a request that had
/// no offer in time is made again under a new session, and the offers to
/// the earlier ones may only be late (members encoding, this node's loop
/// behind under load). What they offer is as good: past what the request
/// had, and checked as any other.
const LATE_SESSIONS: u64 = 8;

/// Whether an offer made under `session` answers a request of this
/// process, the one now being `current`.
fn answers(current: u64, session: u64) -> bool {
    session <= current && current - session < LATE_SESSIONS
}
