//! Any bytes a peer can send as a frame: decoding never panics, and what
//! decodes re-encodes; entries inside decode to events or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_proto::wire::{decode, encode, Direct, Frame, Gossip};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = decode::<Direct>(data) {
        let again = encode(&frame).expect("a decoded frame encodes");
        let back: Frame<Direct> = decode(&again).expect("and decodes again");
        assert_eq!(back, frame);
    }
    if let Ok(frame) = decode::<Gossip>(data) {
        if let Gossip::Committed(entries) = &frame.msg {
            for e in entries {
                let _ = e.envelope();
            }
        }
    }
});
