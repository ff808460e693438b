//! A segment file with any bytes after its header (a torn or corrupt
//! tail, or garbage): opening the log never panics, cuts what does not
//! parse, and what it keeps reads back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_log::{DurableLog, LogConfig};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = b"SHOALLOG".to_vec();
    bytes.extend_from_slice(&1u16.to_le_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(dir.path().join("0000000000000000.seg"), &bytes).unwrap();
    if let Ok((mut log, _)) = DurableLog::open(dir.path(), LogConfig::default()) {
        let (first, last) = (log.first_index(), log.last_index());
        if first <= last {
            let got = log
                .read(first, last, usize::MAX)
                .expect("kept entries read back");
            assert_eq!(got.len() as u64, last.0 - first.0 + 1);
        }
    }
});
