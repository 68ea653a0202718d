//! What a workload emits during one batch, collected per output.
//!
//! Emitting only appends to a buffer; after `Workload::process` returns, the SDK hands each
//! output that received something to the host in one `edgeplane.emit` call. A host call per
//! reading would cost more than most workloads' own work.

use crate::batch::{BatchWriter, Reading};
use crate::{bytes, log};

/// Collects a batch's output. Buffers are kept across batches, so steady state does not
/// allocate.
#[derive(Debug, Default)]
pub struct Emitter {
    /// In the order outputs were first used; workloads have a handful.
    outputs: Vec<Output>,
}

#[derive(Debug)]
struct Output {
    name: String,
    readings: BatchWriter,
    bytes: Vec<u8>,
    /// Readings of this batch that could not be encoded (a string over 65,535 bytes).
    dropped: u32,
}

/// The host refused an output (negative code from `edgeplane.emit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub output: String,
    pub code: i32,
}

impl Emitter {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Emits a reading on `output`, in the v1 batch format.
    ///
    /// A reading whose device or metric is longer than the format's 65,535 bytes cannot be
    /// encoded: it is dropped, and the SDK logs a warning with the count after the batch.
    #[inline]
    pub fn emit(&mut self, output: &str, reading: Reading<'_>) {
        let out = self.output(output);
        assert!(out.bytes.is_empty(), "output `{output}` receives both readings and bytes in one batch");
        if out.readings.push(&reading).is_err() {
            out.dropped += 1;
        }
    }

    /// Appends opaque bytes to `output`. Successive calls in one batch concatenate: the host
    /// receives all of them as one piece of data. An output takes either readings or bytes in
    /// a batch, not both (that would be a bug in the workload, hence the panic).
    pub fn emit_bytes(&mut self, output: &str, data: &[u8]) {
        let out = self.output(output);
        assert!(out.readings.is_empty(), "output `{output}` receives both readings and bytes in one batch");
        out.bytes.extend_from_slice(data);
    }

    #[inline]
    fn output(&mut self, name: &str) -> &mut Output {
        let position = match self.outputs.iter().position(|o| bytes::eq(o.name.as_bytes(), name.as_bytes())) {
            Some(position) => position,
            None => {
                self.outputs.push(Output { name: name.to_owned(), readings: BatchWriter::new(), bytes: Vec::new(), dropped: 0 });
                self.outputs.len() - 1
            }
        };
        &mut self.outputs[position]
    }

    /// Hands each non-empty output to `emit` (which returns the host's code) and empties all
    /// buffers. Stops emitting at the first refusal: the rest of the batch's output is
    /// discarded, and the caller reports the failure.
    pub(crate) fn flush<F>(&mut self, mut emit: F) -> Result<(), Refused>
    where
        F: FnMut(&str, &[u8]) -> i32,
    {
        let mut result = Ok(());
        for out in &mut self.outputs {
            if out.dropped > 0 {
                log::warn(&format!(
                    "output `{}`: dropped {} readings whose device or metric is longer than 65535 bytes",
                    out.name, out.dropped
                ));
                out.dropped = 0;
            }
            let data = if !out.readings.is_empty() {
                out.readings.as_bytes()
            } else if !out.bytes.is_empty() {
                &out.bytes
            } else {
                continue;
            };
            if result.is_ok() {
                let code = emit(&out.name, data);
                if code < 0 {
                    result = Err(Refused { output: out.name.clone(), code });
                }
            }
            out.readings.clear();
            out.bytes.clear();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Batch;

    fn reading(metric: &str) -> Reading<'_> {
        Reading { timestamp_ms: 1, value: 2.0, device: "d", metric }
    }

    fn flush(emitter: &mut Emitter) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        emitter
            .flush(|name, data| {
                out.push((name.to_owned(), data.to_vec()));
                0
            })
            .unwrap();
        out
    }

    #[test]
    fn one_piece_per_output_per_batch() {
        let mut e = Emitter::new();
        e.emit("a", reading("x"));
        e.emit_bytes("b", b"12");
        e.emit("a", reading("y"));
        e.emit_bytes("b", b"34");
        let out = flush(&mut e);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, "a");
        let batch = Batch::parse(&out[0].1).unwrap();
        assert_eq!(batch.iter().map(|r| r.metric).collect::<Vec<_>>(), ["x", "y"]);
        assert_eq!(out[1], ("b".to_owned(), b"1234".to_vec()));
        // Buffers are empty afterwards, and empty outputs are not emitted.
        assert!(flush(&mut e).is_empty());
        e.emit_bytes("a", b"now bytes");
        assert_eq!(flush(&mut e), [("a".to_owned(), b"now bytes".to_vec())]);
    }

    #[test]
    fn refusal_stops_and_discards() {
        let mut e = Emitter::new();
        e.emit("a", reading("x"));
        e.emit("b", reading("y"));
        let mut calls = 0;
        let refused = e.flush(|_, _| {
            calls += 1;
            -7
        });
        assert_eq!(refused, Err(Refused { output: "a".to_owned(), code: -7 }));
        assert_eq!(calls, 1);
        assert!(flush(&mut e).is_empty());
    }

    #[test]
    fn drops_unencodable_readings_and_keeps_the_rest() {
        let mut e = Emitter::new();
        let long = "m".repeat(70_000);
        e.emit("a", reading(&long));
        e.emit("a", reading("ok"));
        let out = flush(&mut e);
        assert_eq!(Batch::parse(&out[0].1).unwrap().len(), 1);
    }

    #[test]
    #[should_panic(expected = "both readings and bytes")]
    fn mixing_kinds_is_a_bug() {
        let mut e = Emitter::new();
        e.emit("a", reading("x"));
        e.emit_bytes("a", b"x");
    }
}
