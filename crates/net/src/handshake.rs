//! How a connection that reached its peer failed, told from libp2p's
//! error text (it offers no error type that says so).

/// How a connection failed after the peer was reached, as its error says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// Refused mid-way: with a pre-shared key, two nodes whose keys
    /// differ fail here, the dialer with "Handshake failed", the listener
    /// failing to negotiate.
    Failed = 0,
    /// No answer in time: most often a busy peer or a busy host; but two
    /// nodes whose keys differ read each other's bytes as garbage, and a
    /// garbage length prefix can leave one waiting for bytes that never
    /// come, so a wrong key ends here too now and then.
    TimedOut = 1,
}

/// Whether a connection error is a handshake that failed or timed out
/// (rather than no one listening), and which.
pub(crate) fn handshake_failed(error: &str) -> Option<Handshake> {
    if error.contains("Connection refused") {
        None
    } else if error.contains("Timeout has been reached") || error.contains("timed out") {
        Some(Handshake::TimedOut)
    } else if error.contains("Handshake failed") || error.contains("negotiate") {
        Some(Handshake::Failed)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_is_not_a_failed_handshake_and_a_slow_one_is_told_apart() {
        // As libp2p reports a key mismatch, dialing and listening.
        assert_eq!(
            handshake_failed(
                "Failed to negotiate transport protocol(s): [(/ip4/127.0.0.1/tcp/1: : \
                 Handshake failed: Handshake failed: Connection reset by peer (os error 104))]"
            ),
            Some(Handshake::Failed)
        );
        assert_eq!(
            handshake_failed("Listen error: Failed to negotiate transport protocol(s)"),
            Some(Handshake::Failed)
        );
        assert_eq!(
            handshake_failed(
                "Failed to negotiate transport protocol(s): [(/ip4/127.0.0.1/tcp/1: : \
                 Connection refused (os error 111))]"
            ),
            None
        );
        // As libp2p reports a handshake that a loaded host did not finish.
        assert_eq!(
            handshake_failed(
                "Failed to negotiate transport protocol(s): [(/ip4/127.0.0.1/tcp/1/p2p/12D3KooWA: : \
                 Timeout has been reached: Timeout has been reached)]"
            ),
            Some(Handshake::TimedOut)
        );
    }
}
