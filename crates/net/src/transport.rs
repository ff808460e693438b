//! The libp2p stack: TCP, an optional pre-shared-key private network (the
//! cluster key), noise, yamux; and the behaviours on top: gossipsub for
//! broadcast, two request-response protocols, long-lived one-to-one
//! streams (`lane`), identify, and mDNS; and a second swarm's, for large
//! frames only (`bulk`).

use crate::codec::{FrameCodec, HelloCodec};
use crate::{NetConfig, NetError, BULK_PROTOCOL, DIRECT_PROTOCOL, HELLO_PROTOCOL};
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::upgrade::Version;
use libp2p::core::transport::Boxed;
use libp2p::core::Transport as _;
use libp2p::gossipsub::{self, MessageAuthenticity};
use libp2p::identity::Keypair;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{identify, mdns, noise, tcp, yamux, PeerId, StreamProtocol, Swarm};
use std::time::Duration;

/// How long a one-to-one frame may take to be acknowledged.
const DIRECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Inbound and outbound one-to-one streams open at once, per connection.
const DIRECT_STREAMS: usize = 256;
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
const GOSSIP_HEARTBEAT: Duration = Duration::from_millis(200);
/// A connection not set up (TCP, handshake, multiplexer) within this is
/// given up. On a LAN it takes milliseconds; without a bound, a dial to a
/// host behind a cut link waits for the kernel's SYN retries (minutes),
/// and no new dial to that peer is made meanwhile.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection with no stream open is closed after this long.
const IDLE_CONNECTION: Duration = Duration::from_secs(300);
/// A bulk connection with no frame under way is closed after this long:
/// the next large frame to its peer asks it to dial again (`bulk`).
const BULK_IDLE_CONNECTION: Duration = Duration::from_secs(30);

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub gossipsub: gossipsub::Behaviour,
    pub direct: request_response::Behaviour<FrameCodec>,
    pub hello: request_response::Behaviour<HelloCodec>,
    pub lane: libp2p_stream::Behaviour,
    pub identify: identify::Behaviour,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
}

/// Reads a cluster key file in the common `swarm.key` format.
pub fn parse_cluster_key(text: &str) -> Result<PreSharedKey, String> {
    text.parse::<PreSharedKey>().map_err(|e| e.to_string())
}

/// A fresh cluster key file's text.
pub fn new_cluster_key_text() -> String {
    let key: [u8; 32] = rand::random();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex}\n")
}

/// TCP, the cluster key (if any), noise, yamux: how every connection of
/// this node is made, the main swarm's and the bulk swarm's alike.
fn upgraded(
    key: &Keypair,
    psk: Option<PreSharedKey>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, Box<dyn std::error::Error + Send + Sync>> {
    let noise = noise::Config::new(key)?;
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    let yamux = yamux::Config::default();
    Ok(match psk {
        Some(psk) => tcp
            .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
            .upgrade(Version::V1Lazy)
            .authenticate(noise)
            .multiplex(yamux)
            .timeout(CONNECT_TIMEOUT)
            .boxed(),
        None => tcp
            .upgrade(Version::V1Lazy)
            .authenticate(noise)
            .multiplex(yamux)
            .timeout(CONNECT_TIMEOUT)
            .boxed(),
    })
}

type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// A swarm of this node's identity and upgrades, with `behaviour`.
fn build<B: NetworkBehaviour>(
    keypair: Keypair,
    cfg: &NetConfig,
    idle: Duration,
    behaviour: impl FnOnce(&Keypair) -> Result<B, BuildError>,
) -> Result<Swarm<B>, NetError> {
    let setup = |e: &dyn std::fmt::Display| NetError::Setup(e.to_string());
    let psk = cfg.cluster_key;
    Ok(libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(|key| upgraded(key, psk))
        .map_err(|e| setup(&e))?
        .with_behaviour(behaviour)
        .map_err(|e| setup(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build())
}

/// Large frames, one request each, acknowledged, on `protocol`.
fn frames(max: usize, protocol: &'static str) -> request_response::Behaviour<FrameCodec> {
    request_response::Behaviour::with_codec(
        FrameCodec { max },
        [(StreamProtocol::new(protocol), ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(DIRECT_TIMEOUT)
            .with_max_concurrent_streams(DIRECT_STREAMS),
    )
}

pub(crate) fn build_swarm(keypair: Keypair, cfg: &NetConfig) -> Result<Swarm<Behaviour>, NetError> {
    let max = cfg.max_message_bytes;
    build(keypair, cfg, IDLE_CONNECTION, |key| {
        let gossip_cfg = gossipsub::ConfigBuilder::default()
            .max_transmit_size(max)
            .heartbeat_interval(GOSSIP_HEARTBEAT)
            // A node publishes to its mesh peers (about six), not to
            // every peer on the topic: the master sends each committed
            // batch a fixed number of times however large the cluster,
            // and the mesh relays it on. In a 1M-key join storm of
            // twenty hosts this dropped a fifth fewer messages at full
            // send queues than flood publishing (bench/README.md).
            .flood_publish(false)
            // Each heartbeat a node announces what it holds (IHAVE) to
            // `gossip_lazy` peers outside its mesh (six), not to a
            // quarter of them (gossipsub's default): with every node
            // connected to every other, the quarter grows with the
            // cluster, and so would each follower's traffic.
            .gossip_factor(0.0)
            // Messages are signed inside (`sealed`) and checked once
            // each, after duplicates are dropped by id; a new message
            // is relayed only once the actor has found it signed.
            .validation_mode(gossipsub::ValidationMode::Anonymous)
            .message_id_fn(crate::sealed::message_id)
            .validate_messages()
            .build()
            .map_err(|e| e.to_string())?;
        let gossipsub = gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, gossip_cfg)?;
        let direct = frames(max, DIRECT_PROTOCOL);
        let hello = request_response::Behaviour::with_codec(
            HelloCodec,
            [(StreamProtocol::new(HELLO_PROTOCOL), ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(HELLO_TIMEOUT),
        );
        let identify =
            identify::Behaviour::new(identify::Config::new("/shoal/id/1".into(), key.public()));
        let mdns = if cfg.mdns {
            Some(mdns::tokio::Behaviour::new(
                mdns::Config::default(),
                key.public().to_peer_id(),
            )?)
        } else {
            None
        };
        Ok(Behaviour {
            gossipsub,
            direct,
            hello,
            lane: libp2p_stream::Behaviour::new(),
            identify,
            mdns: mdns.into(),
        })
    })
}

/// The bulk swarm's one protocol: large frames, as `DIRECT_PROTOCOL`.
#[derive(NetworkBehaviour)]
pub(crate) struct BulkBehaviour {
    pub frames: request_response::Behaviour<FrameCodec>,
}

/// A swarm for large one-to-one frames only (`bulk`): the same identity,
/// cluster key and upgrades as the main one, and one protocol.
pub(crate) fn build_bulk_swarm(
    keypair: Keypair,
    cfg: &NetConfig,
) -> Result<Swarm<BulkBehaviour>, NetError> {
    let max = cfg.max_message_bytes;
    build(keypair, cfg, BULK_IDLE_CONNECTION, |_| {
        Ok(BulkBehaviour {
            frames: frames(max, BULK_PROTOCOL),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_cluster_key_parses_and_garbage_does_not() {
        let text = new_cluster_key_text();
        assert!(parse_cluster_key(&text).is_ok());
        assert_ne!(text, new_cluster_key_text(), "fresh every time");
        assert!(parse_cluster_key("/key/swarm/psk/1.0.0/\n/base16/\nzz\n").is_err());
        assert!(parse_cluster_key("").is_err());
    }
}
