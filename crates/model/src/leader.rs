//! Why the master leads, as it says in its heartbeats.

use crate::NodeId;
use serde::{Deserialize, Serialize};

/// Why the master leads: shown with each leader change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaderReason {
    /// It founded the cluster.
    Founded,
    /// It heard nothing from the master it knew (`previous`, if any) for
    /// an election timeout, and a majority of voters elected it. `previous`
    /// is the master itself when it led before and lost its majority.
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

    /// The reason `master` leads, in words: as `describe`, and a master
    /// elected after itself (it led, lost its majority of voters, and won
    /// again) says so.
    pub fn describe_for(
        &self,
        master: Option<&NodeId>,
        name: impl Fn(&NodeId) -> String,
    ) -> String {
        match self {
            LeaderReason::Elected { previous: Some(p) } if Some(p) == master => {
                "elected again: it had lost its majority of voters".to_owned()
            }
            _ => self.describe(name),
        }
    }
}

impl std::fmt::Display for LeaderReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe(NodeId::to_string))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_master_elected_after_itself_says_so() {
        let (a, b) = (NodeId::from("node-a"), NodeId::from("node-b"));
        let name = |n: &NodeId| n.to_string();
        let after = |p: &NodeId| LeaderReason::Elected {
            previous: Some(p.clone()),
        };
        assert_eq!(
            after(&a).describe_for(Some(&a), name),
            "elected again: it had lost its majority of voters"
        );
        assert_eq!(
            after(&b).describe_for(Some(&a), name),
            "elected: node-b not heard for an election timeout"
        );
        let none = LeaderReason::Elected { previous: None };
        assert_eq!(
            none.describe_for(Some(&a), name),
            "elected: no earlier master known"
        );
    }
}
