//! Port ranges: the ports a node hands its replicas (`--replica-ports`).

use serde::{Deserialize, Serialize};

/// A range of ports, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// The replica ports of a node that names none.
    pub const DEFAULT: PortRange = PortRange {
        first: 20000,
        last: 29999,
    };

    /// Taken ports a node reports at most.
    pub const MAX_TAKEN: usize = 1024;

    pub fn ports(self) -> std::ops::RangeInclusive<u16> {
        self.first..=self.last
    }

    pub fn contains(self, port: u16) -> bool {
        self.ports().contains(&port)
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl std::str::FromStr for PortRange {
    type Err = String;

    /// `FIRST-LAST`, as `20000-29999`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("{s}: expected FIRST-LAST, as 20000-29999"))?;
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| format!("{p} is not a port (1 to 65535)"))
        };
        let (first, last) = (port(a)?, port(b)?);
        if first > last {
            return Err(format!("{s}: the first port is above the last"));
        }
        Ok(PortRange { first, last })
    }
}
