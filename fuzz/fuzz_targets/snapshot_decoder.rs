//! Any bytes as a snapshot stream, in any chunking: the decoder never
//! panics and never allocates past what the header declares.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_log::SnapshotDecoder;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let mut d = SnapshotDecoder::new();
    let chunk = (split as usize).max(1);
    for part in rest.chunks(chunk) {
        if d.push(part).is_err() {
            return;
        }
    }
    let _ = d.finish(&[0u8; 32]);
});
