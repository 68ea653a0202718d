//! The outbox's durability, numbering and bookkeeping, including crashes at the worst moments.

use std::path::Path;

use super::writer::Faults;
use super::*;
use crate::storage::StorageKey;

fn record(stream: &str, n: u32) -> OutRecord {
    OutRecord {
        stream: format!("ns/{stream}/out").parse().expect("stream"),
        namespace: "ns".into(),
        workload: "wl".into(),
        output: "out".into(),
        generation: 7,
        // Records with and without a model version, so that both survive the round trip.
        model: (n % 2 == 1).then(|| format!("1.{n}.0")),
        produced_ms: 1000 + u64::from(n),
        readings: n,
        kind: DataKind::Readings,
        data: vec![n as u8; 100],
    }
}

thread_local! {
    /// The storage key the outboxes of the running test are opened with.
    static KEY: std::cell::RefCell<Option<Arc<StorageKey>>> = const { std::cell::RefCell::new(None) };
}

/// Runs a test twice: on a plain outbox, then on one sealed with a storage key. Every
/// guarantee (order, numbering, crash safety, damage counted) holds for both.
fn both(test: impl Fn()) {
    test();
    KEY.with(|k| *k.borrow_mut() = Some(Arc::new(StorageKey::from_bytes(&[42; 32]))));
    test();
    KEY.with(|k| *k.borrow_mut() = None);
}

fn config(dir: &Path, max_bytes: u64, policy: OverflowPolicy) -> OutboxConfig {
    OutboxConfig { dir: dir.to_owned(), max_bytes, policy, segment_bytes: 1000, key: KEY.with(|k| k.borrow().clone()) }
}

fn open(dir: &Path, max_bytes: u64, policy: OverflowPolicy) -> Outbox {
    Outbox::open(config(dir, max_bytes, policy)).expect("open")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().expect("runtime")
}

fn seqs(outbox: &Outbox) -> Vec<(u64, String, u64)> {
    outbox.peek(1000, 1 << 30).expect("peek").records.iter().map(|s| (s.index, s.record.stream.assignment.clone(), s.seq)).collect()
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut all: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    all.sort();
    all
}

#[test]
fn records_survive_reopening_in_order_with_per_stream_numbers() {
    both(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let outbox = open(dir.path(), 1 << 20, OverflowPolicy::RejectNew);
            rt().block_on(async {
                outbox.append(vec![record("a", 1), record("b", 2), record("a", 3)]).await.expect("append");
                outbox.append(vec![record("a", 4)]).await.expect("append");
            });
        }
        let outbox = open(dir.path(), 1 << 20, OverflowPolicy::RejectNew);
        let got = outbox.peek(100, 1 << 20).expect("peek").records;
        let seen: Vec<(u64, &str, u64, u32)> =
            got.iter().map(|s| (s.index, s.record.stream.assignment.as_str(), s.seq, s.record.readings)).collect();
        assert_eq!(seen, vec![(0, "a", 1, 1), (1, "b", 1, 2), (2, "a", 2, 3), (3, "a", 3, 4)]);
        assert_eq!(got[3].record, record("a", 4));
        assert_eq!(outbox.stats().pending_readings, 10);
        // Numbering continues after acknowledged records are gone.
        rt().block_on(outbox.ack(4, Default::default())).expect("ack");
        assert_eq!(outbox.stats().pending_records, 0);
        drop(outbox);
        let outbox = open(dir.path(), 1 << 20, OverflowPolicy::RejectNew);
        rt().block_on(outbox.append(vec![record("a", 5)])).expect("append");
        assert_eq!(seqs(&outbox), vec![(4, "a".to_owned(), 4)]);
    });
}

#[test]
fn a_torn_tail_is_cut_off() {
    both(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let outbox = open(dir.path(), 1 << 20, OverflowPolicy::RejectNew);
            rt().block_on(outbox.append(vec![record("a", 1), record("a", 2)])).expect("append");
        }
        let segment = segments(dir.path()).pop().expect("segment");
        let len = std::fs::metadata(&segment).expect("meta").len();
        OpenOptions::new().write(true).open(&segment).expect("open").set_len(len - 5).expect("truncate");
        let outbox = open(dir.path(), 1 << 20, OverflowPolicy::RejectNew);
        assert_eq!(outbox.peek(100, 1 << 20).expect("peek").records.len(), 1);
        rt().block_on(outbox.append(vec![record("a", 3)])).expect("append");
        let got = outbox.peek(100, 1 << 20).expect("peek").records;
        // The torn record's number is given again: it was never acknowledged to anyone.
        assert_eq!(got.iter().map(|s| (s.index, s.seq, s.record.readings)).collect::<Vec<_>>(), vec![(0, 1, 1), (1, 2, 3)]);
        assert_eq!(outbox.stats().corrupt_records, 0, "a torn write is not data loss");
    });
}

use std::fs::OpenOptions;

#[test]
fn reject_new_reports_full_and_drop_oldest_counts_what_it_drops() {
    both(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = open(dir.path(), 2000, OverflowPolicy::RejectNew);
        for n in 0..30 {
            rt().block_on(outbox.append(vec![record("a", n)])).expect("append");
        }
        assert!(outbox.refuses_new());
        assert_eq!(outbox.stats().dropped_records, 0);
        assert_eq!(outbox.peek(1000, 1 << 20).expect("peek").records.len(), 30);

        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = open(dir.path(), 2000, OverflowPolicy::DropOldest);
        for n in 0..30 {
            rt().block_on(outbox.append(vec![record("a", n)])).expect("append");
        }
        assert!(!outbox.refuses_new());
        let stats = outbox.stats();
        let kept = outbox.peek(1000, 1 << 20).expect("peek").records;
        assert!(stats.dropped_records > 0, "{stats:?}");
        assert_eq!(stats.dropped_records + kept.len() as u64, 30, "{stats:?}");
        assert_eq!(stats.dropped_readings + kept.iter().map(|s| u64::from(s.record.readings)).sum::<u64>(), (0..30).sum::<u64>());
        // What is kept is the newest, still in order.
        assert_eq!(kept.last().expect("kept").seq, 30);
        assert!(kept.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        // The drop counters survive a restart.
        drop(outbox);
        let outbox = open(dir.path(), 2000, OverflowPolicy::DropOldest);
        assert_eq!(outbox.stats().dropped_records, stats.dropped_records);
    });
}

/// Settling writes the state and deletes the segments it makes unnecessary. Had the segments
/// gone first, a crash in between would lose the only record of the streams' last numbers:
/// the node would number from 1 again and the cloud would drop its new records as
/// duplicates of old ones.
#[test]
fn a_crash_while_settling_never_rolls_stream_numbers_back() {
    both(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let faults = Faults { crash_mid_settle: true, ..Faults::default() };
        {
            let outbox = Outbox::open_with(config(dir.path(), 1 << 20, OverflowPolicy::RejectNew), faults).expect("open");
            for n in 0..30 {
                rt().block_on(outbox.append(vec![record("a", n)])).expect("append");
            }
            assert!(segments(dir.path()).len() > 2, "several segments: {:?}", segments(dir.path()));
            assert!(
                matches!(rt().block_on(outbox.ack(30, Default::default())), Err(OutboxError::Stopped)),
                "the writer crashed mid-settle"
            );
        }
        let outbox = open(dir.path(), 1 << 20, OverflowPolicy::RejectNew);
        assert_eq!(outbox.stats().pending_records, 0, "the acknowledgement was durable before anything was deleted");
        rt().block_on(outbox.append(vec![record("a", 30)])).expect("append");
        assert_eq!(seqs(&outbox), vec![(30, "a".to_owned(), 31)], "numbering goes on from 30");
        // Recovery deleted the settled segments but the last, which appending may still use.
        assert!(segments(dir.path()).len() <= 2, "{:?}", segments(dir.path()));
    });
}

/// A failed write gives back every number it took. The numbers must go back to where they
/// were before the batch, also when the batch held several records of one stream.
#[test]
fn a_failed_write_gives_back_every_number_it_took() {
    both(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let faults = Faults::default();
        let outbox = Outbox::open_with(config(dir.path(), 1 << 20, OverflowPolicy::RejectNew), faults.clone()).expect("open");
        rt().block_on(outbox.append(vec![record("a", 1)])).expect("append");
        faults.fail_next_write.store(true, std::sync::atomic::Ordering::Relaxed);
        let failed = rt().block_on(outbox.append(vec![record("a", 2), record("a", 3), record("b", 4)]));
        assert!(matches!(failed, Err(OutboxError::WriteFailed(_))), "{failed:?}");
        rt().block_on(outbox.append(vec![record("a", 5), record("b", 6)])).expect("append");
        assert_eq!(seqs(&outbox), vec![(0, "a".to_owned(), 1), (1, "a".to_owned(), 2), (2, "b".to_owned(), 1)]);
    });
}

/// Damage in the middle of the last segment (a flipped bit, not a torn write: valid records
/// follow) loses exactly the damaged record, which is counted, and keeps the ones after it.
#[test]
fn damage_in_the_middle_of_the_last_segment_is_counted_and_later_records_are_kept() {
    both(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let outbox = open(dir.path(), 1 << 20, OverflowPolicy::RejectNew);
            rt().block_on(outbox.append((1..=5).map(|n| record("a", n)).collect())).expect("append");
        }
        let segment = segments(dir.path()).pop().expect("segment");
        let mut bytes = std::fs::read(&segment).expect("read");
        // Somewhere in the data of the third record (each frame is about 160 bytes).
        let third = bytes.len() * 2 / 5 + 100;
        bytes[third] ^= 0xff;
        std::fs::write(&segment, &bytes).expect("write");
        let outbox = open(dir.path(), 1 << 20, OverflowPolicy::RejectNew);
        let peeked = outbox.peek(100, 1 << 20).expect("peek");
        assert_eq!(peeked.records.iter().map(|s| s.index).collect::<Vec<_>>(), [0, 1, 3, 4]);
        assert_eq!((peeked.unreadable.iter().copied().collect::<Vec<_>>(), peeked.upto), (vec![2], 5));
        rt().block_on(outbox.ack(peeked.upto, peeked.unreadable)).expect("ack");
        let stats = outbox.stats();
        assert_eq!((stats.delivered_records, stats.corrupt_records, stats.pending_records), (4, 1, 0), "{stats:?}");
        // Appending goes on after the damaged segment's end.
        rt().block_on(outbox.append(vec![record("a", 6)])).expect("append");
        assert_eq!(seqs(&outbox), vec![(5, "a".to_owned(), 6)]);
    });
}

#[test]
fn nothing_pending_means_no_pending_bytes() {
    both(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = open(dir.path(), 1 << 20, OverflowPolicy::RejectNew);
        rt().block_on(outbox.append(vec![record("a", 1), record("a", 2)])).expect("append");
        assert!(outbox.stats().pending_bytes > 0);
        rt().block_on(outbox.ack(2, Default::default())).expect("ack");
        let stats = outbox.stats();
        assert_eq!((stats.pending_records, stats.pending_bytes, stats.oldest_pending_ms), (0, 0, None), "{stats:?}");
    });
}

/// A record damaged after the writer recorded it (a bit flipped on disk while the node ran) is
/// counted as corrupt when settled, and not also as delivered.
#[test]
fn damage_after_the_start_is_counted_once() {
    both(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = open(dir.path(), 1 << 20, OverflowPolicy::RejectNew);
        rt().block_on(outbox.append((1..=3).map(|n| record("a", n)).collect())).expect("append");
        let segment = segments(dir.path()).pop().expect("segment");
        let mut bytes = std::fs::read(&segment).expect("read");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&segment, &bytes).expect("write");
        let peeked = outbox.peek(100, 1 << 20).expect("peek");
        assert_eq!(peeked.records.len(), 2);
        rt().block_on(outbox.ack(peeked.upto, peeked.unreadable)).expect("ack");
        let stats = outbox.stats();
        assert_eq!((stats.delivered_records, stats.corrupt_records, stats.pending_records), (2, 1, 0), "{stats:?}");
    });
}

/// Every write to a new segment fails (a full disk), then one succeeds: the segment is
/// started over in place, not listed twice, so acknowledging what came before cannot delete
/// the file the new records are in.
#[test]
fn failed_writes_to_a_new_segment_do_not_list_it_twice() {
    both(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let faults = Faults::default();
        let outbox = Outbox::open_with(config(dir.path(), 1 << 20, OverflowPolicy::RejectNew), faults.clone()).expect("open");
        // Fill the last segment to its size, so that the next append opens a new one.
        let mut appended: u64 = 0;
        let last_is_full = |dir: &Path| segments(dir).last().is_some_and(|last| std::fs::metadata(last).expect("segment").len() >= 1000);
        while !last_is_full(dir.path()) {
            rt().block_on(outbox.append(vec![record("a", u32::try_from(appended).expect("few"))])).expect("append");
            appended += 1;
        }
        let before = segments(dir.path()).len();
        for _ in 0..3 {
            faults.fail_next_write.store(true, std::sync::atomic::Ordering::Relaxed);
            assert!(rt().block_on(outbox.append(vec![record("a", 99)])).is_err());
        }
        rt().block_on(outbox.append(vec![record("a", 100)])).expect("append");
        assert_eq!(segments(dir.path()).len(), before + 1, "one new segment: {:?}", segments(dir.path()));
        // Settle everything before the new record: its segment must survive.
        rt().block_on(outbox.ack(appended, Default::default())).expect("ack");
        let left = outbox.peek(100, 1 << 20).expect("peek").records;
        assert_eq!(left.iter().map(|s| (s.index, s.seq, s.record.readings)).collect::<Vec<_>>(), vec![(appended, appended + 1, 100)]);
        drop(outbox);
        // And after a restart: no half-written failed batch comes back as records.
        let outbox = open(dir.path(), 1 << 20, OverflowPolicy::RejectNew);
        let left = outbox.peek(100, 1 << 20).expect("peek").records;
        assert_eq!(left.iter().map(|s| (s.index, s.seq, s.record.readings)).collect::<Vec<_>>(), vec![(appended, appended + 1, 100)]);
    });
}

/// Sealed at rest: nothing of a record is readable in its segment, a record whose bytes were
/// changed and whose checksum was fixed up to match (a forgery, not an accident) is refused by
/// its tag and counted, a plain record slipped in past the point where sealing began is
/// refused, and an outbox that was sealed does not open without its key.
#[test]
fn sealed_records_are_unreadable_on_disk_and_forgeries_are_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = Arc::new(StorageKey::from_bytes(&[9; 32]));
    let sealed = |dir: &Path| OutboxConfig { key: Some(Arc::clone(&key)), ..config(dir, 1 << 20, OverflowPolicy::RejectNew) };
    {
        let outbox = Outbox::open(sealed(dir.path())).expect("open");
        let mut secret = record("a", 1);
        secret.data = b"the-secret-reading".to_vec();
        rt().block_on(outbox.append(vec![secret, record("a", 2), record("a", 3)])).expect("append");
    }
    let segment = segments(dir.path()).pop().expect("segment");
    let mut bytes = std::fs::read(&segment).expect("read");
    assert!(!bytes.windows(18).any(|w| w == b"the-secret-reading"), "the data is sealed");
    assert!(!bytes.windows(8).any(|w| w == b"ns/a/out"), "so are the names");

    // Forge the second frame: change a byte of its sealed payload and fix its checksum.
    let frame_len = |at: usize| (u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4")) & !(1 << 31)) as usize + 8;
    let second = frame_len(0);
    let end = second + frame_len(second);
    bytes[second + 40] ^= 1;
    let crc = crc32fast::hash(&bytes[second + 8..end]);
    bytes[second + 4..second + 8].copy_from_slice(&crc.to_le_bytes());
    // And append a plain frame for index 3: well-formed, checksummed, but not sealed.
    segment::encode(&mut bytes, 3, 3, &record("a", 4), &segment::Sealing::default());
    std::fs::write(&segment, &bytes).expect("write");

    let outbox = Outbox::open(sealed(dir.path())).expect("open");
    let peeked = outbox.peek(100, 1 << 20).expect("peek");
    assert_eq!(peeked.records.iter().map(|s| s.index).collect::<Vec<_>>(), [0, 2], "the forgery and the plain record are not read");
    assert_eq!(peeked.records[0].record.data, b"the-secret-reading");
    rt().block_on(outbox.ack(peeked.upto, peeked.unreadable)).expect("ack");
    assert_eq!(outbox.stats().corrupt_records, 1, "{:?}", outbox.stats());
    drop(outbox);

    let without_key = Outbox::open(config(dir.path(), 1 << 20, OverflowPolicy::RejectNew)).expect_err("no key");
    assert!(matches!(without_key, OutboxError::Sealed(_)), "{without_key}");
}

/// An outbox written in plain text before the node had a key stays readable when the key
/// comes; what is appended from then on is sealed.
#[test]
fn a_plain_outbox_keeps_its_records_when_sealing_begins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = config(dir.path(), 1 << 20, OverflowPolicy::RejectNew);
    rt().block_on(Outbox::open(plain.clone()).expect("open").append(vec![record("a", 1), record("a", 2)])).expect("append");
    let sealed = OutboxConfig { key: Some(Arc::new(StorageKey::from_bytes(&[5; 32]))), ..plain };
    let outbox = Outbox::open(sealed.clone()).expect("open");
    rt().block_on(outbox.append(vec![record("a", 3)])).expect("append");
    drop(outbox);
    let outbox = Outbox::open(sealed).expect("reopen");
    assert_eq!(seqs(&outbox), vec![(0, "a".to_owned(), 1), (1, "a".to_owned(), 2), (2, "a".to_owned(), 3)]);
}

/// The uplink peeks a batch, delivers it, acknowledges it and peeks again. Each peek resumes
/// where the last one's records ended instead of reading (and opening, when sealed) every
/// frame from the segment's start: draining a segment reads each frame about once.
#[test]
fn draining_a_segment_in_batches_reads_each_frame_about_once() {
    both(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox =
            Outbox::open(OutboxConfig { segment_bytes: 1 << 20, ..config(dir.path(), 1 << 24, OverflowPolicy::RejectNew) }).expect("open");
        let total = 400u32;
        rt().block_on(outbox.append((0..total).map(|n| record("a", n)).collect())).expect("append");
        assert_eq!(segments(dir.path()).len(), 1, "one segment");
        let mut delivered = Vec::new();
        // Every fourth batch is not acknowledged (a failed delivery) and is peeked again.
        for round in 0.. {
            let peeked = outbox.peek(10, 1 << 20).expect("peek");
            if peeked.records.is_empty() {
                break;
            }
            assert!(peeked.unreadable.is_empty(), "nothing is damaged");
            if round % 4 == 3 {
                continue;
            }
            delivered.extend(peeked.records.iter().map(|r| r.index));
            rt().block_on(outbox.ack(peeked.upto, peeked.unreadable)).expect("ack");
        }
        assert_eq!(delivered, (0..u64::from(total)).collect::<Vec<_>>(), "every record once, in order");
        // 40 batches delivered and 13 peeked again: 530 frames, and a look past the last.
        let read = outbox.frames_read.load(Ordering::Relaxed);
        assert!(read <= 2 * u64::from(total), "draining {total} records in batches of 10 read {read} frames");
    });
}

/// A peek that resumes past the records it read still finds damage after them.
#[test]
fn damage_after_a_resumed_peek_is_still_counted() {
    both(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox =
            Outbox::open(OutboxConfig { segment_bytes: 1 << 20, ..config(dir.path(), 1 << 24, OverflowPolicy::RejectNew) }).expect("open");
        rt().block_on(outbox.append((0..20).map(|n| record("a", n)).collect())).expect("append");
        let first = outbox.peek(5, 1 << 20).expect("peek");
        rt().block_on(outbox.ack(first.upto, first.unreadable)).expect("ack");
        // Damage a byte in the last record's frame.
        let segment = segments(dir.path()).pop().expect("a segment");
        let mut bytes = std::fs::read(&segment).expect("read");
        let at = bytes.len() - 20;
        bytes[at] ^= 0xff;
        std::fs::write(&segment, bytes).expect("write");
        let rest = outbox.peek(100, 1 << 20).expect("peek");
        assert_eq!(rest.records.iter().map(|r| r.index).collect::<Vec<_>>(), (5..19).collect::<Vec<_>>());
        assert_eq!(rest.unreadable.into_iter().collect::<Vec<_>>(), [19], "the damaged last record is counted");
    });
}
