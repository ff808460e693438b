//! Where the network actor reaches other nodes: node ids parsed into peer
//! ids, addresses parsed into multiaddrs. Each is a bounded LRU cache, so
//! a cluster whose members come and go never grows it.
//!
//! Addresses are cached by their text, not by node: a node that comes
//! back at a new address is looked up afresh (State and heartbeats give
//! the text each time).

use lru::LruCache;
use shoal_model::NodeId;
use shoal_net::{Addr, Peer};
use std::num::NonZeroUsize;

/// Entries per cache: far more than the nodes of one LAN cluster.
const CAPACITY: usize = 4096;

#[derive(Debug)]
pub(super) struct AddressBook {
    peers: LruCache<NodeId, Peer>,
    addrs: LruCache<String, Addr>,
}

impl Default for AddressBook {
    fn default() -> Self {
        AddressBook::new(CAPACITY)
    }
}

impl AddressBook {
    pub fn new(capacity: usize) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).expect("at least one");
        AddressBook {
            peers: LruCache::new(cap),
            addrs: LruCache::new(cap),
        }
    }

    /// The libp2p peer id of a node (its node id is the peer id's text).
    pub fn peer(&mut self, node: &NodeId) -> Option<Peer> {
        if let Some(p) = self.peers.get(node) {
            return Some(*p);
        }
        let p: Peer = node.0.parse().ok()?;
        self.peers.put(node.clone(), p);
        Some(p)
    }

    /// An address in its text form, parsed once.
    pub fn addr(&mut self, text: &str) -> Option<Addr> {
        if let Some(a) = self.addrs.get(text) {
            return Some(a.clone());
        }
        let a: Addr = text.parse().ok()?;
        self.addrs.put(text.to_owned(), a.clone());
        Some(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";

    #[test]
    fn ids_and_addresses_parse_once_and_the_caches_stay_bounded() {
        let mut book = AddressBook::new(2);
        let node = NodeId::from(PEER);
        assert_eq!(
            book.peer(&node).map(|p| p.to_base58()),
            Some(PEER.to_owned())
        );
        assert!(book.peer(&NodeId::from("not a peer id")).is_none());
        for port in 0..10 {
            assert!(book.addr(&format!("/ip4/127.0.0.1/tcp/{port}")).is_some());
        }
        assert_eq!(book.addrs.len(), 2, "least recently used entries go");
        assert!(book.addr("nonsense").is_none());
    }
}
