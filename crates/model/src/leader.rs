//! Why the master leads, as it says in its heartbeats.

use crate::NodeId;
use serde::{Deserialize, Serialize};

/// Why the master leads: shown with each leader change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaderReason {
    /// It founded the cluster.
    Founded,
    /// It heard nothing from the master it knew (`previous`, if any) for
    /// an election timeout, and a majority of voters elected it.
    Elected { previous: Option<NodeId> },
    /// The master before it, `from`, handed leadership over as it left.
    HandedOver { from: NodeId },
}

impl LeaderReason {
    /// The reason in words, with node ids written by `name`.
    pub fn describe(&self, name: impl Fn(&NodeId) -> String) -> String {
        match self {
            LeaderReason::Founded => "founded the cluster".to_owned(),
            LeaderReason::Elected { previous: Some(p) } => {
                format!("elected: {} not heard for an election timeout", name(p))
            }
            LeaderReason::Elected { previous: None } => {
                "elected: no earlier master known".to_owned()
            }
            LeaderReason::HandedOver { from } => {
                format!("{} handed over as it left", name(from))
            }
        }
    }
}

impl std::fmt::Display for LeaderReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe(NodeId::to_string))
    }
}
