use shoal_log::{DurableLog, HardState, LogConfig, MembershipRecord};
use shoal_model::{EntryKind, EventIdx, LogEntry, Term};
use std::fs;
use std::path::{Path, PathBuf};

fn entry(idx: u64, term: u64) -> LogEntry {
    LogEntry {
        idx: EventIdx(idx),
        term: Term(term),
        kind: EntryKind::Normal,
        data: format!("event-{idx}-{term}").into_bytes(),
        context: vec![],
    }
}

fn small() -> LogConfig {
    LogConfig { segment_bytes: 512 }
}

fn read_all(log: &mut DurableLog) -> Vec<LogEntry> {
    if log.last_index() < log.first_index() {
        return vec![];
    }
    log.read(log.first_index(), log.last_index(), usize::MAX)
        .unwrap()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn appends_survive_reopen_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let written: Vec<_> = (1..=100).map(|i| entry(i, 1)).collect();
    {
        let (mut log, rec) = DurableLog::open(dir.path(), small()).unwrap();
        assert_eq!(rec.entries, 0);
        for chunk in written.chunks(7) {
            log.append(chunk).unwrap();
        }
        log.set_hard_state(HardState {
            term: 3,
            vote: 2,
            commit: 90,
        })
        .unwrap();
        log.set_membership(MembershipRecord {
            voters: vec![1, 2, 3],
            learners: vec![4],
        })
        .unwrap();
        log.sync().unwrap();
    }
    assert!(segments(dir.path()).len() > 3, "small segments roll");
    let (mut log, rec) = DurableLog::open(dir.path(), small()).unwrap();
    assert_eq!(rec.cut, None);
    assert_eq!(rec.entries, 100);
    assert_eq!(read_all(&mut log), written);
    assert_eq!(
        log.hard_state(),
        HardState {
            term: 3,
            vote: 2,
            commit: 90
        }
    );
    assert_eq!(log.membership().voters, vec![1, 2, 3]);
    // Range reads are bounded by bytes but return at least one entry.
    let some = log.read(EventIdx(10), EventIdx(60), 100).unwrap();
    assert!(!some.is_empty() && some.len() < 51);
    assert_eq!(some[0], written[9]);
}

#[test]
fn an_overwritten_suffix_stays_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = DurableLog::open(dir.path(), small()).unwrap();
        log.append(&(1..=30).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        log.append(&(21..=25).map(|i| entry(i, 2)).collect::<Vec<_>>())
            .unwrap();
        log.sync().unwrap();
        assert_eq!(log.last_index(), EventIdx(25));
    }
    let (mut log, _) = DurableLog::open(dir.path(), small()).unwrap();
    let all = read_all(&mut log);
    assert_eq!(all.len(), 25);
    assert!(all[..20].iter().all(|e| e.term == Term(1)));
    assert!(all[20..].iter().all(|e| e.term == Term(2)));
    assert!(log.append(&[entry(27, 2)]).is_err(), "a gap is refused");
}

#[test]
fn compaction_and_reset_move_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = DurableLog::open(dir.path(), small()).unwrap();
        log.append(&(1..=100).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        let before = segments(dir.path()).len();
        log.compact(EventIdx(60)).unwrap();
        log.sync().unwrap();
        assert!(
            segments(dir.path()).len() < before,
            "old segments are deleted"
        );
        assert_eq!(log.first_index(), EventIdx(60));
        assert!(log.read(EventIdx(10), EventIdx(20), usize::MAX).is_err());
    }
    let (mut log, _) = DurableLog::open(dir.path(), small()).unwrap();
    assert_eq!(log.first_index(), EventIdx(60));
    assert_eq!(
        read_all(&mut log),
        (60..=100).map(|i| entry(i, 1)).collect::<Vec<_>>()
    );
    log.reset(EventIdx(501)).unwrap();
    log.append(&[entry(501, 4)]).unwrap();
    log.sync().unwrap();
    drop(log);
    let (mut log, _) = DurableLog::open(dir.path(), small()).unwrap();
    assert_eq!(log.first_index(), EventIdx(501));
    assert_eq!(read_all(&mut log), vec![entry(501, 4)]);
}

/// What the entries after an index take in the log (how a server weighs
/// a snapshot's tail): exact across segments, after an overwritten
/// suffix and a reopen, and unknown once compaction took some of them.
#[test]
fn bytes_after_an_index_count_every_record_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = DurableLog::open(dir.path(), small()).unwrap();
    log.reset(EventIdx(200)).unwrap();
    // Indexes 200..=400 and term 1 or 2 encode to records of one size.
    log.append(&(200..=400).map(|i| entry(i, 1)).collect::<Vec<_>>())
        .unwrap();
    assert!(segments(dir.path()).len() > 3, "spans segments");
    let after = |log: &DurableLog, i| log.bytes_after(EventIdx(i));
    let record = after(&log, 200).unwrap() - after(&log, 201).unwrap();
    assert!(record > entry(200, 1).data.len() as u64);
    for i in 199..=400 {
        assert_eq!(after(&log, i), Some((400 - i) * record), "after {i}");
    }
    log.append(&[entry(350, 2)]).unwrap();
    log.sync().unwrap();
    drop(log);
    let (mut log, _) = DurableLog::open(dir.path(), small()).unwrap();
    for i in 199..=350 {
        assert_eq!(after(&log, i), Some((350 - i) * record), "after {i}");
    }
    log.compact(EventIdx(300)).unwrap();
    assert_eq!(after(&log, 299), Some(51 * record));
    assert_eq!(after(&log, 298), None, "entry 299 is compacted");
}

/// Writes `n` entries into a fresh log and returns the bytes of its last
/// segment and where the last records start in it.
fn last_segment(dir: &Path, n: u64) -> (PathBuf, Vec<u8>) {
    let (mut log, _) = DurableLog::open(dir, LogConfig::default()).unwrap();
    for i in 1..=n {
        log.append(&[entry(i, 1)]).unwrap();
    }
    log.sync().unwrap();
    let seg = segments(dir).pop().unwrap();
    (seg.clone(), fs::read(seg).unwrap())
}

fn copy_log(from: &Path, to: &Path) {
    for p in segments(from) {
        fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

#[test]
fn a_torn_tail_is_cut_at_every_offset() {
    let src = tempfile::tempdir().unwrap();
    let n = 20;
    let (seg, bytes) = last_segment(src.path(), n);
    let written: Vec<_> = (1..=n).map(|i| entry(i, 1)).collect();
    // The last three records: about 3 * 30 bytes.
    let start = bytes.len() - 100;
    for cut in start..bytes.len() {
        let dir = tempfile::tempdir().unwrap();
        copy_log(src.path(), dir.path());
        let target = dir.path().join(seg.file_name().unwrap());
        fs::write(&target, &bytes[..cut]).unwrap();
        let (mut log, _) = DurableLog::open(dir.path(), LogConfig::default()).unwrap();
        let got = read_all(&mut log);
        // A cut on a record boundary leaves nothing torn to report.
        assert!(
            got.len() < n as usize && got.len() >= n as usize - 6,
            "cut {cut} of {}: {} entries",
            bytes.len(),
            got.len()
        );
        assert_eq!(
            got[..],
            written[..got.len()],
            "a prefix survives (cut {cut})"
        );
        // The log keeps working after the cut.
        let next = log.last_index().next();
        log.append(&[entry(next.0, 2)]).unwrap();
        log.sync().unwrap();
        drop(log);
        let (mut log, rec) = DurableLog::open(dir.path(), LogConfig::default()).unwrap();
        assert_eq!(rec.cut, None);
        assert_eq!(read_all(&mut log).last().unwrap(), &entry(next.0, 2));
    }
}

#[test]
fn a_flipped_byte_in_the_tail_is_detected_at_every_offset() {
    let src = tempfile::tempdir().unwrap();
    let n = 20;
    let (seg, bytes) = last_segment(src.path(), n);
    let written: Vec<_> = (1..=n).map(|i| entry(i, 1)).collect();
    let start = bytes.len() - 100;
    for at in start..bytes.len() {
        let dir = tempfile::tempdir().unwrap();
        copy_log(src.path(), dir.path());
        let mut bad = bytes.clone();
        bad[at] ^= 0x5a;
        fs::write(dir.path().join(seg.file_name().unwrap()), &bad).unwrap();
        let (mut log, rec) = DurableLog::open(dir.path(), LogConfig::default()).unwrap();
        let got = read_all(&mut log);
        assert!(rec.cut.is_some(), "flip at {at} detected");
        assert_eq!(
            got[..],
            written[..got.len()],
            "only whole, valid records survive (flip {at})"
        );
    }
}

#[test]
fn range_reads_skip_records_between_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = DurableLog::open(dir.path(), LogConfig::default()).unwrap();
    let mut written = Vec::new();
    for i in 1..=50 {
        let e = entry(i, 1);
        log.append(std::slice::from_ref(&e)).unwrap();
        log.set_hard_state(HardState {
            term: 1,
            vote: 1,
            commit: i,
        })
        .unwrap();
        written.push(e);
    }
    assert_eq!(
        log.read(EventIdx(1), EventIdx(50), usize::MAX).unwrap(),
        written
    );
    assert_eq!(
        log.read(EventIdx(7), EventIdx(9), usize::MAX).unwrap(),
        written[6..9].to_vec()
    );
    log.sync().unwrap();
    drop(log);
    let (mut log, _) = DurableLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(
        log.read(EventIdx(20), EventIdx(50), usize::MAX).unwrap(),
        written[19..].to_vec()
    );
}

#[test]
fn a_reader_sees_written_entries_only_and_compaction_under_it() {
    use shoal_log::LogError;
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = DurableLog::open(dir.path(), small()).unwrap();
    let reader = log.reader();
    log.append(&(1..=40).map(|i| entry(i, 1)).collect::<Vec<_>>())
        .unwrap();
    // Entries still in the writer's buffer are not visible yet...
    let seen = reader.read(EventIdx(1), EventIdx(40), usize::MAX).unwrap();
    assert!(seen.len() < 40, "buffered entries are not read");
    assert_eq!(
        seen,
        (1..=seen.len() as u64)
            .map(|i| entry(i, 1))
            .collect::<Vec<_>>()
    );
    // ...once written, all of them are, from another thread.
    log.sync().unwrap();
    let got = std::thread::spawn({
        let reader = reader.clone();
        move || reader.read(EventIdx(1), EventIdx(40), usize::MAX).unwrap()
    })
    .join()
    .unwrap();
    assert_eq!(got, (1..=40).map(|i| entry(i, 1)).collect::<Vec<_>>());
    // A byte budget stops a read early, but never before one entry.
    let few = reader.read(EventIdx(5), EventIdx(40), 1).unwrap();
    assert_eq!(few, vec![entry(5, 1)]);
    // Compaction: below the floor reads as compacted.
    log.compact(EventIdx(30)).unwrap();
    log.sync().unwrap();
    assert_eq!(reader.first_index(), EventIdx(30));
    assert!(matches!(
        reader.read(EventIdx(3), EventIdx(40), usize::MAX),
        Err(LogError::Compacted(_))
    ));
    assert_eq!(
        reader.read(EventIdx(30), EventIdx(40), usize::MAX).unwrap(),
        (30..=40).map(|i| entry(i, 1)).collect::<Vec<_>>()
    );
    // A reset drops everything the reader could see.
    log.reset(EventIdx(100)).unwrap();
    assert!(matches!(
        reader.read(EventIdx(35), EventIdx(40), usize::MAX),
        Err(LogError::Compacted(_))
    ));
}

#[test]
fn a_reader_never_sees_an_overwritten_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = DurableLog::open(dir.path(), small()).unwrap();
    let reader = log.reader();
    log.append(&(1..=10).map(|i| entry(i, 1)).collect::<Vec<_>>())
        .unwrap();
    log.sync().unwrap();
    log.append(&[entry(8, 2)]).unwrap();
    // 8 was replaced and is not written yet; 9 and 10 are gone.
    let got = reader.read(EventIdx(1), EventIdx(10), usize::MAX).unwrap();
    assert_eq!(got, (1..=7).map(|i| entry(i, 1)).collect::<Vec<_>>());
    log.sync().unwrap();
    let got = reader.read(EventIdx(6), EventIdx(10), usize::MAX).unwrap();
    assert_eq!(got, vec![entry(6, 1), entry(7, 1), entry(8, 2)]);
}

/// A tmpfs of `size` the test mounts and unmounts itself (None where the
/// machine does not allow mounting).
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then_some(SmallDisk(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

/// Fills the disk under `dir` with a file; returns it.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = fs::File::create(&path).unwrap();
    while f.write_all(&[7u8; 4096]).is_ok() {}
    let _ = f.sync_all();
    path
}

#[test]
fn a_replacing_append_the_disk_refuses_leaves_the_log_as_it_was() {
    let Some(disk) = SmallDisk::mount("1m") else {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    };
    let dir = disk.0.path().join("log");
    let (mut log, _) = DurableLog::open(&dir, LogConfig::default()).unwrap();
    let first: Vec<LogEntry> = (1..=20).map(|i| entry(i, 1)).collect();
    log.append(&first).unwrap();
    log.sync().unwrap();
    let filler = fill(disk.0.path());
    // Raft replaces 15.. with entries of a later term: the disk is full.
    assert!(log.append(&[entry(15, 2), entry(16, 2)]).is_err());
    assert_eq!(log.last_index(), EventIdx(20), "nothing dropped");
    assert_eq!(read_all(&mut log), first);
    // Room again: the replacement goes through, and is what a restart reads.
    fs::remove_file(&filler).unwrap();
    log.append(&[entry(15, 2), entry(16, 2)]).unwrap();
    log.sync().unwrap();
    drop(log);
    let (mut log, recovery) = DurableLog::open(&dir, LogConfig::default()).unwrap();
    assert!(recovery.cut.is_none(), "{:?}", recovery.cut);
    let mut want: Vec<LogEntry> = (1..=14).map(|i| entry(i, 1)).collect();
    want.extend([entry(15, 2), entry(16, 2)]);
    assert_eq!(read_all(&mut log), want);
}

/// Opens the log as a restart after `log` was lost without a sync (its
/// buffer gone) would, and returns its entries and whether a tail was cut.
fn reopen_lost(log: DurableLog, dir: &Path) -> (Vec<LogEntry>, bool) {
    std::mem::forget(log);
    let (mut log, rec) = DurableLog::open(dir, LogConfig::default()).unwrap();
    (read_all(&mut log), rec.cut.is_some())
}

#[test]
fn a_sync_off_the_loop_covers_what_came_before_it_and_the_next_sync_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = DurableLog::open(dir.path(), LogConfig::default()).unwrap();
    let written: Vec<_> = (1..=20).map(|i| entry(i, 1)).collect();
    log.append(&written[..10]).unwrap();
    let job = log.start_sync().unwrap();
    log.append(&written[10..15]).unwrap();
    job.wait().unwrap();
    log.synced(job.id(), Ok(())).unwrap();
    // What the job covered is on the file; what came after it is not yet.
    let copy = tempfile::tempdir().unwrap();
    copy_log(dir.path(), copy.path());
    let (mut seen, rec) = DurableLog::open(copy.path(), LogConfig::default()).unwrap();
    assert_eq!(read_all(&mut seen), written[..10].to_vec());
    assert_eq!(rec.cut, None);
    log.append(&written[15..]).unwrap();
    let job = log.start_sync().unwrap();
    job.wait().unwrap();
    log.synced(job.id(), Ok(())).unwrap();
    let (seen, cut) = reopen_lost(log, dir.path());
    assert_eq!(seen, written);
    assert!(!cut, "every record written once, at its place");
}

#[test]
fn a_failed_sync_off_the_loop_is_an_error_and_its_bytes_are_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = DurableLog::open(dir.path(), LogConfig::default()).unwrap();
    let written: Vec<_> = (1..=12).map(|i| entry(i, 1)).collect();
    log.append(&written[..8]).unwrap();
    let job = log.start_sync().unwrap();
    log.append(&written[8..]).unwrap();
    let failed = log.synced(job.id(), Err(std::io::Error::other("EIO")));
    assert!(failed.unwrap_err().to_string().contains("EIO"));
    log.sync().unwrap();
    let (seen, cut) = reopen_lost(log, dir.path());
    assert_eq!(seen, written);
    assert!(!cut);
}

#[test]
fn a_sync_off_the_loop_overtaken_by_new_segments_has_nothing_left_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = DurableLog::open(dir.path(), small()).unwrap();
    let written: Vec<_> = (1..=60).map(|i| entry(i, 1)).collect();
    log.append(&written[..3]).unwrap();
    let job = log.start_sync().unwrap();
    // Small segments: these roll over several times, each roll a sync.
    log.append(&written[3..]).unwrap();
    assert!(segments(dir.path()).len() > 2);
    log.synced(job.id(), Ok(())).unwrap();
    log.sync().unwrap();
    let (seen, cut) = reopen_lost(log, dir.path());
    assert_eq!(seen, written);
    assert!(!cut);
}
