//! The cloud sink: records edge nodes upload from their outboxes, stored exactly once and
//! bounded by retention.
//!
//! - Deduplication: the sink keeps the highest sequence number stored per (node, stream), its
//!   high-water mark. A record at or below the mark is a duplicate: counted, not stored. A
//!   node delivers at least once and resends after any doubt, so this is what turns its
//!   retries into exactly-once storage.
//! - Epochs: a node's sequence numbers start again at 1 when it starts over with an empty
//!   data directory; registering that new incarnation gives it a higher epoch (see the
//!   orchestrator's registration). Marks belong to an epoch: the first append of a newer
//!   epoch drops the node's old marks, and appends of an older epoch (a request of the old
//!   incarnation still in flight) are refused as stale. A node keeps at most
//!   [`MAX_STREAMS_PER_NODE`] streams per epoch; records that would open another are refused
//!   and counted, so no node can grow the marks without bound.
//! - Cursors: every stored record gets the next cursor (last + 1), so cursors follow the
//!   order of storage and a reader can page forward from the last one it saw.
//! - Retention: after each append, the oldest records are evicted while the stored weight
//!   ([`UpRecord::weight`]: readings, or 1 for an opaque record) exceeds the limit the
//!   command carries.
//! - Fencing: a record of an older generation of its Assignment than the current one (the
//!   replica has since been placed anew, on another node) that was produced after the new
//!   generation was placed is refused as stale: a node that was cut off and comes back cannot
//!   add outputs of work that had moved away from it. What it produced before the move (the
//!   backlog of a node that died) is kept. The boundary compares the node's clock with the
//!   leader's, so it is as sharp as their synchronisation. High-water marks are never evicted: a node resending a record whose
//!   data is gone must still see it refused, not stored a second time.

use std::ops::Bound;
use std::sync::Arc;

use edgeplane_api::data::{DataPage, DataQuery, StoredRecord, StreamId, UpRecord};
use imbl::OrdMap;
use serde::{Deserialize, Serialize};

/// Records a query returns when it names no limit.
pub const DEFAULT_QUERY_LIMIT: u32 = 100;
/// Most records one query returns.
pub const MAX_QUERY_LIMIT: u32 = 10_000;
/// Streams (replica outputs) whose high-water marks the sink keeps for one node incarnation.
pub const MAX_STREAMS_PER_NODE: usize = 4_096;

/// One node's high-water marks, for its current epoch.
#[derive(Debug, Clone, Default, PartialEq)]
struct NodeMarks {
    epoch: u64,
    streams: OrdMap<StreamId, u64>,
}

/// The sink's part of the replicated state. Cloning is O(1).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sink {
    /// Stored records by cursor. Shared behind `Arc`s: a persistent map clones the values of
    /// the nodes it copies on write, and a record may carry thousands of readings.
    records: OrdMap<u64, Arc<StoredRecord>>,
    /// node -> (epoch, stream -> highest stored seq).
    high_water: OrdMap<String, NodeMarks>,
    /// The cursor of the last record ever stored (0 before the first).
    last_cursor: u64,
    /// Sum of the weights of `records` (derived; not in snapshots).
    weight: u64,
    /// Records evicted by retention so far.
    evicted: u64,
}

/// What one append did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Appended {
    pub accepted: u64,
    pub duplicates: u64,
    /// Records from an older generation of their Assignment: refused, counted.
    pub stale: u64,
    /// Records (of this or earlier appends) evicted to get back within retention.
    pub evicted: u64,
    /// Records of new streams past [`MAX_STREAMS_PER_NODE`]: refused.
    pub refused: u64,
}

impl Sink {
    /// Stores `node`'s records (sent by its incarnation `epoch`) in order, skipping
    /// duplicates, then evicts the oldest records while more than `retain_readings` are stored.
    /// `current` gives the current generation of a record's Assignment and when it was placed
    /// (ms), if the Assignment exists.
    pub(crate) fn append(
        &mut self,
        node: String,
        epoch: u64,
        records: Vec<UpRecord>,
        retain_readings: u64,
        current: impl Fn(&UpRecord) -> Option<(u64, u64)>,
    ) -> Appended {
        let mut out = Appended::default();
        // One node's marks, updated in place and put back once (cloning is O(1)).
        let mut marks = self.high_water.get(&node).cloned().unwrap_or_default();
        if epoch < marks.epoch {
            // An earlier incarnation of the node: its numbering is not the current one's.
            out.stale = records.len() as u64;
            return out;
        }
        if epoch > marks.epoch {
            marks = NodeMarks { epoch, streams: OrdMap::new() };
        }
        let mut changed = epoch != self.high_water.get(&node).map_or(0, |m| m.epoch);
        for record in records {
            if current(&record)
                .is_some_and(|(generation, placed_at_ms)| record.generation < generation && record.produced_ms >= placed_at_ms)
            {
                out.stale += 1;
                continue;
            }
            // Checked against marks raised earlier in the same batch too: a batch may carry
            // several records of one stream, or the same record twice.
            match marks.streams.get(&record.stream) {
                Some(&high) if record.seq <= high => {
                    out.duplicates += 1;
                    continue;
                }
                None if marks.streams.len() >= MAX_STREAMS_PER_NODE => {
                    out.refused += 1;
                    continue;
                }
                _ => {}
            }
            marks.streams.insert(record.stream.clone(), record.seq);
            changed = true;
            self.last_cursor += 1;
            self.weight += record.weight();
            let stored = StoredRecord { cursor: self.last_cursor, node: node.clone(), record };
            self.records.insert(self.last_cursor, Arc::new(stored));
            out.accepted += 1;
        }
        if changed {
            self.high_water.insert(node, marks);
        }
        while self.weight > retain_readings {
            let Some((cursor, oldest)) = self.records.get_min() else { break };
            let (cursor, weight) = (*cursor, oldest.record.weight());
            self.weight -= weight;
            self.records.remove(&cursor);
            out.evicted += 1;
        }
        self.evicted += out.evicted;
        out
    }

    /// Stored records matching `query`, oldest first, from its `after` cursor.
    pub fn query(&self, query: &DataQuery) -> DataPage {
        let limit = query.limit.unwrap_or(DEFAULT_QUERY_LIMIT).min(MAX_QUERY_LIMIT) as usize;
        let after = query.after.unwrap_or(0);
        // A stream filter that is not a stream id matches nothing.
        let stream = query.stream.as_deref().map(|s| s.parse::<StreamId>().ok());
        let records: Vec<StoredRecord> = self
            .records
            .range((Bound::Excluded(after), Bound::Unbounded))
            .map(|(_, r)| r)
            .filter(|r| matches(query, stream.as_ref(), r))
            .take(limit)
            .map(|r| StoredRecord::clone(r))
            .collect();
        DataPage { next: records.last().map_or(after, |r| r.cursor), records, first_retained: self.first_retained(), evicted: self.evicted }
    }

    /// The oldest cursor still stored; with nothing stored, the cursor the next record gets
    /// (everything before it is gone).
    pub fn first_retained(&self) -> u64 {
        self.records.get_min().map_or(self.last_cursor + 1, |(cursor, _)| *cursor)
    }

    /// Records stored now.
    pub fn records(&self) -> usize {
        self.records.len()
    }

    /// What the stored records weigh for retention: their readings, 1 per opaque record.
    pub fn weight(&self) -> u64 {
        self.weight
    }

    /// Records evicted by retention so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// The highest sequence number stored for (node, stream) in the node's current epoch,
    /// evicted or not.
    pub fn high_water(&self, node: &str, stream: &StreamId) -> Option<u64> {
        self.high_water.get(node)?.streams.get(stream).copied()
    }

    /// The node's current epoch: that of the newest incarnation that appended (0 before any).
    pub fn epoch(&self, node: &str) -> u64 {
        self.high_water.get(node).map_or(0, |m| m.epoch)
    }

    pub(crate) fn image(&self) -> SinkImage<'_> {
        SinkImage {
            last_cursor: self.last_cursor,
            evicted: self.evicted,
            high_water: self
                .high_water
                .iter()
                .flat_map(|(node, marks)| marks.streams.iter().map(move |(stream, seq)| (node.as_str(), stream, *seq)))
                .collect(),
            epochs: self.high_water.iter().filter(|(_, m)| m.epoch > 0).map(|(node, m)| (node.as_str(), m.epoch)).collect(),
            records: self.records.values().map(|r| &**r).collect(),
        }
    }

    pub(crate) fn from_image(image: SinkImageOwned) -> Sink {
        let mut high_water: OrdMap<String, NodeMarks> = OrdMap::new();
        for (node, epoch) in image.epochs {
            high_water.entry(node).or_default().epoch = epoch;
        }
        for (node, stream, seq) in image.high_water {
            high_water.entry(node).or_default().streams.insert(stream, seq);
        }
        Sink {
            weight: image.records.iter().map(|r| r.record.weight()).sum(),
            records: image.records.into_iter().map(|r| (r.cursor, Arc::new(r))).collect(),
            high_water,
            last_cursor: image.last_cursor,
            evicted: image.evicted,
        }
    }
}

fn matches(query: &DataQuery, stream: Option<&Option<StreamId>>, stored: &StoredRecord) -> bool {
    let r = &stored.record;
    let is = |filter: &Option<String>, value: &str| filter.as_deref().is_none_or(|f| f == value);
    is(&query.node, &stored.node)
        && stream.is_none_or(|f| f.as_ref() == Some(&r.stream))
        && is(&query.namespace, &r.namespace)
        && is(&query.workload, &r.workload)
        && is(&query.output, &r.output)
}

/// The sink in a snapshot: high-water marks as (node, stream, seq) triples and each node's
/// epoch (nodes without one are at epoch 0), records oldest first.
#[derive(Debug, Serialize)]
pub(crate) struct SinkImage<'a> {
    last_cursor: u64,
    evicted: u64,
    high_water: Vec<(&'a str, &'a StreamId, u64)>,
    epochs: Vec<(&'a str, u64)>,
    records: Vec<&'a StoredRecord>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct SinkImageOwned {
    last_cursor: u64,
    evicted: u64,
    high_water: Vec<(String, StreamId, u64)>,
    /// Absent in snapshots taken before epochs existed.
    #[serde(default)]
    epochs: Vec<(String, u64)>,
    records: Vec<StoredRecord>,
}

#[cfg(test)]
mod tests {
    use edgeplane_api::data::Reading;

    use super::*;

    fn record(stream: &str, seq: u64, readings: usize) -> UpRecord {
        let (namespace, rest) = stream.split_once('/').expect("ns/assignment/output");
        let (workload, output) = rest.rsplit_once('/').expect("ns/assignment/output");
        UpRecord {
            stream: stream.parse().expect("ns/assignment/output"),
            seq,
            namespace: namespace.to_owned(),
            workload: workload.to_owned(),
            output: output.to_owned(),
            generation: 1,
            model: None,
            produced_ms: 1_000 + seq,
            readings: (0..readings)
                .map(|i| Reading { ts: seq * 10 + i as u64, device: "d".into(), metric: "m".into(), value: i as f64 })
                .collect(),
            opaque: None,
        }
    }

    fn stored(sink: &Sink) -> Vec<(u64, String, String, u64)> {
        let page = sink.query(&DataQuery { limit: Some(MAX_QUERY_LIMIT), ..Default::default() });
        page.records.into_iter().map(|r| (r.cursor, r.node, r.record.stream.to_string(), r.record.seq)).collect()
    }

    const A: &str = "ns/a/out";
    const B: &str = "ns/b/out";

    #[test]
    fn records_of_an_older_generation_are_fenced() {
        let mut sink = Sink::default();
        // A's Assignment is at generation 2, placed at t=1003: its generation-1 records
        // produced before that are kept (a dead node's backlog), those produced after it are
        // stale; B has no Assignment any more (deleted Workload): its record is kept.
        let current = |r: &UpRecord| (r.stream.to_string() == A).then_some((2, 1003));
        let (before, after) = (record(A, 2, 1), record(A, 3, 1));
        assert_eq!((before.produced_ms, after.produced_ms), (1002, 1003));
        let mut new = record(A, 4, 1);
        new.generation = 2;
        let out = sink.append("n1".into(), 1, vec![before, after, new, record(B, 1, 1)], 100, current);
        assert_eq!(out, Appended { accepted: 3, duplicates: 0, stale: 1, evicted: 0, refused: 0 });
        assert_eq!(stored(&sink).iter().map(|r| (r.2.as_str(), r.3)).collect::<Vec<_>>(), vec![(A, 2), (A, 4), (B, 1)]);
    }

    #[test]
    fn duplicates_are_refused_across_appends_and_within_one() {
        let mut sink = Sink::default();
        let first = sink.append("n1".into(), 1, vec![record(A, 1, 1), record(A, 2, 1), record(A, 2, 1)], 100, |_| None);
        assert_eq!(first, Appended { accepted: 2, duplicates: 1, stale: 0, evicted: 0, refused: 0 });
        // A resend overlapping what is stored: only the new tail is kept.
        let resend = sink.append("n1".into(), 1, vec![record(A, 1, 1), record(A, 2, 1), record(A, 3, 1)], 100, |_| None);
        assert_eq!(resend, Appended { accepted: 1, duplicates: 2, stale: 0, evicted: 0, refused: 0 });
        // The same stream from another node is another stream.
        assert_eq!(sink.append("n2".into(), 1, vec![record(A, 1, 1)], 100, |_| None).accepted, 1);
        assert_eq!(
            stored(&sink),
            [(1, "n1".into(), A.into(), 1), (2, "n1".into(), A.into(), 2), (3, "n1".into(), A.into(), 3), (4, "n2".into(), A.into(), 1)]
        );
    }

    #[test]
    fn a_seq_below_the_high_water_mark_is_a_duplicate_even_if_never_stored() {
        let mut sink = Sink::default();
        // 5 arrives before 4 (or 4 was dropped by the node's outbox): 4 can no longer be stored,
        // or the stream's order would break and a later resend of 5 could not be told apart.
        let out = sink.append("n1".into(), 1, vec![record(A, 5, 1), record(A, 4, 1), record(B, 2, 1)], 100, |_| None);
        assert_eq!((out.accepted, out.duplicates), (2, 1));
        assert_eq!(sink.append("n1".into(), 1, vec![record(A, 4, 1)], 100, |_| None).duplicates, 1);
        assert_eq!(sink.high_water("n1", &A.parse().expect("stream")), Some(5));
        assert_eq!(stored(&sink).iter().map(|r| r.3).collect::<Vec<_>>(), [5, 2]);
    }

    #[test]
    fn retention_evicts_the_oldest_and_keeps_the_high_water_marks() {
        let mut sink = Sink::default();
        sink.append("n1".into(), 1, vec![record(A, 1, 3), record(B, 1, 3)], 10, |_| None);
        assert_eq!((sink.weight(), sink.evicted()), (6, 0));
        // 6 + 4 + 1 (opaque) = 11 > 10: the oldest record (3 readings) goes, one is enough.
        let mut opaque = record(B, 3, 0);
        opaque.opaque = Some("AAEC".into());
        let out = sink.append("n1".into(), 1, vec![record(A, 2, 4), opaque], 10, |_| None);
        assert_eq!(out, Appended { accepted: 2, duplicates: 0, stale: 0, evicted: 1, refused: 0 });
        assert_eq!((sink.weight(), sink.evicted(), sink.first_retained()), (8, 1, 2));
        assert_eq!(stored(&sink).iter().map(|r| r.0).collect::<Vec<_>>(), [2, 3, 4]);
        // A record heavier than the whole retention is stored and evicted at once, with
        // everything before it.
        let out = sink.append("n1".into(), 1, vec![record(A, 3, 11)], 10, |_| None);
        assert_eq!(out, Appended { accepted: 1, duplicates: 0, stale: 0, evicted: 4, refused: 0 });
        assert_eq!((sink.records(), sink.weight(), sink.first_retained()), (0, 0, 6));
        // The data is gone; its marks are not: a resend is still a duplicate.
        let resend = sink.append("n1".into(), 1, vec![record(A, 1, 3), record(A, 3, 1), record(B, 3, 0)], 10, |_| None);
        assert_eq!(resend, Appended { accepted: 0, duplicates: 3, stale: 0, evicted: 0, refused: 0 });
        // The next cursor continues after the evicted ones.
        sink.append("n1".into(), 1, vec![record(A, 4, 1)], 10, |_| None);
        assert_eq!(stored(&sink).iter().map(|r| r.0).collect::<Vec<_>>(), [6]);
        assert_eq!(sink.query(&DataQuery::default()).evicted, 5);
    }

    /// A node that lost its data directory registers as a new incarnation and numbers its
    /// streams from 1 again: under the old incarnation's marks every record would be a
    /// duplicate until the numbers passed them.
    #[test]
    fn a_new_epoch_starts_the_marks_over_and_an_old_one_is_refused() {
        let mut sink = Sink::default();
        let first = sink.append("n1".into(), 1, (1..=5).map(|seq| record(A, seq, 1)).collect(), 100, |_| None);
        assert_eq!(first.accepted, 5);
        let reborn = sink.append("n1".into(), 2, (1..=3).map(|seq| record(A, seq, 1)).collect(), 100, |_| None);
        assert_eq!(reborn, Appended { accepted: 3, duplicates: 0, stale: 0, evicted: 0, refused: 0 });
        assert_eq!((sink.epoch("n1"), sink.high_water("n1", &A.parse().expect("stream"))), (2, Some(3)));
        // A late request of the old incarnation cannot add to the new one's streams.
        let late = sink.append("n1".into(), 1, vec![record(A, 6, 1)], 100, |_| None);
        assert_eq!(late, Appended { accepted: 0, duplicates: 0, stale: 1, evicted: 0, refused: 0 });
        // Epochs survive a snapshot image.
        let restored = Sink::from_image(serde_json::from_value(serde_json::to_value(sink.image()).expect("image")).expect("owned image"));
        assert_eq!(restored, sink);
    }

    #[test]
    fn a_node_keeps_a_bounded_number_of_streams() {
        let mut sink = Sink::default();
        let records: Vec<UpRecord> = (0..MAX_STREAMS_PER_NODE + 2).map(|i| record(&format!("ns/a{i}/out"), 1, 1)).collect();
        let out = sink.append("n1".into(), 1, records, u64::MAX, |_| None);
        assert_eq!((out.accepted, out.refused), (MAX_STREAMS_PER_NODE as u64, 2));
        // Known streams go on; another node has its own budget.
        assert_eq!(sink.append("n1".into(), 1, vec![record("ns/a0/out", 2, 1)], u64::MAX, |_| None).accepted, 1);
        assert_eq!(sink.append("n2".into(), 1, vec![record("ns/new/out", 1, 1)], u64::MAX, |_| None).accepted, 1);
    }

    #[test]
    fn queries_filter_and_page_by_cursor() {
        let mut sink = Sink::default();
        for seq in 1..=5 {
            sink.append("n1".into(), 1, vec![record(A, seq, 1), record("other/c/alerts", seq, 1)], 1_000, |_| None);
            sink.append("n2".into(), 1, vec![record(B, seq, 1)], 1_000, |_| None);
        }
        let q = |f: fn(&mut DataQuery)| {
            let mut query = DataQuery::default();
            f(&mut query);
            sink.query(&query)
        };
        assert_eq!(q(|_| {}).records.len(), 15);
        let by_node = q(|q| q.node = Some("n2".into()));
        assert!(by_node.records.iter().all(|r| r.node == "n2" && r.record.stream.to_string() == B) && by_node.records.len() == 5);
        assert_eq!(q(|q| q.namespace = Some("other".into())).records.len(), 5);
        assert_eq!(q(|q| q.workload = Some("a".into())).records.len(), 5);
        assert_eq!(q(|q| q.output = Some("alerts".into())).records.len(), 5);
        assert_eq!(q(|q| q.stream = Some(A.into())).records.len(), 5);
        assert_eq!(q(|q| (q.node, q.stream) = (Some("n2".into()), Some(A.into()))).records.len(), 0);

        // Paging: every record once, in cursor order, then an empty page that stays put.
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = sink.query(&DataQuery { stream: Some(A.into()), after, limit: Some(2), ..Default::default() });
            if page.records.is_empty() {
                assert_eq!(Some(page.next), after, "an empty page leaves the cursor where it was");
                break;
            }
            assert!(page.records.len() <= 2);
            seen.extend(page.records.iter().map(|r| (r.cursor, r.record.seq)));
            after = Some(page.next);
        }
        assert_eq!(seen.iter().map(|s| s.1).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "{seen:?}");
        assert_eq!(q(|q| q.after = Some(u64::MAX)).records.len(), 0);
    }

    #[test]
    fn the_limit_defaults_to_100_and_is_capped() {
        let mut sink = Sink::default();
        let records = (1..=u64::from(MAX_QUERY_LIMIT) + 1).map(|seq| record(A, seq, 1)).collect();
        sink.append("n1".into(), 1, records, u64::MAX, |_| None);
        assert_eq!(sink.query(&DataQuery::default()).records.len(), DEFAULT_QUERY_LIMIT as usize);
        let all = sink.query(&DataQuery { limit: Some(u32::MAX), ..Default::default() });
        assert_eq!((all.records.len(), all.next), (MAX_QUERY_LIMIT as usize, u64::from(MAX_QUERY_LIMIT)));
    }
}
