//! The code path shared by the wasm exports and [`NativeHost`]: parse, call the workload,
//! flush its outputs. Only the way output reaches the host differs.

use crate::batch::{Batch, BatchError};
use crate::config::Config;
use crate::emit::{Emitter, Refused};
use crate::{code, log, Workload};

/// A workload instance with its output buffers.
#[derive(Debug)]
pub struct Guest<W> {
    workload: W,
    emitter: Emitter,
    /// Whether `configure` succeeded at least once.
    configured: bool,
}

impl<W: Workload> Default for Guest<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<W: Workload> Guest<W> {
    pub fn new() -> Self {
        #[cfg(target_arch = "wasm32")]
        crate::abi::install_panic_hook();
        Self { workload: W::default(), emitter: Emitter::new(), configured: false }
    }

    /// Parses the configuration document and hands it to the workload. On error the workload
    /// keeps its previous configuration.
    pub fn configure(&mut self, document: &[u8]) -> Result<(), String> {
        let config = Config::parse_bytes(document)?;
        self.workload.configure(&config)?;
        self.configured = true;
        Ok(())
    }

    /// Processes one batch; `emit(output, data)` returns the host's code. Failures are logged
    /// and returned as the ABI's error codes.
    #[inline]
    pub fn process<F>(&mut self, bytes: &[u8], emit: F) -> Result<(), i32>
    where
        F: FnMut(&str, &[u8]) -> i32,
    {
        self.process_bytes(bytes, Batch::parse, emit)
    }

    /// `ep_process_validated`: [`Guest::process`] for bytes the host validated, of which only
    /// the count is read.
    #[cfg(target_arch = "wasm32")]
    #[inline]
    pub fn process_validated<F>(&mut self, bytes: &[u8], emit: F) -> Result<(), i32>
    where
        F: FnMut(&str, &[u8]) -> i32,
    {
        self.process_bytes(bytes, Batch::validated_by_host, emit)
    }

    /// Configures the workload if it never was, reads `bytes` with `read`, and runs it.
    #[inline]
    fn process_bytes<'b, F>(
        &mut self,
        bytes: &'b [u8],
        read: impl FnOnce(&'b [u8]) -> Result<Batch<'b>, BatchError>,
        emit: F,
    ) -> Result<(), i32>
    where
        F: FnMut(&str, &[u8]) -> i32,
    {
        self.ensure_configured()?;
        let batch = match read(bytes) {
            Ok(batch) => batch,
            Err(e) => {
                log::error(&format!("malformed batch: {e}"));
                return Err(code::INVALID);
            }
        };
        self.run(&batch, emit)
    }

    /// [`Guest::process`] for a batch that is already parsed ([`NativeHost::process_parsed`]).
    #[inline]
    pub fn process_batch<F>(&mut self, batch: &Batch<'_>, emit: F) -> Result<(), i32>
    where
        F: FnMut(&str, &[u8]) -> i32,
    {
        self.ensure_configured()?;
        self.run(batch, emit)
    }

    fn ensure_configured(&mut self) -> Result<(), i32> {
        if !self.configured {
            // The host skipped ep_configure (ABI v1 makes it optional): a workload whose
            // configuration is all defaults runs; one that needs configuration says why not.
            if let Err(message) = self.workload.configure(&Config::default()) {
                log::error(&format!("not configured: {message}"));
                return Err(code::NOT_CONFIGURED);
            }
            self.configured = true;
        }
        Ok(())
    }

    #[inline]
    fn run<F>(&mut self, batch: &Batch<'_>, emit: F) -> Result<(), i32>
    where
        F: FnMut(&str, &[u8]) -> i32,
    {
        self.workload.process(batch, &mut self.emitter);
        match self.emitter.flush(emit) {
            Ok(()) => Ok(()),
            Err(Refused { output, code }) => {
                log::error(&format!("the host refused output `{output}` (code {code}); the rest of this batch's output is discarded"));
                Err(code::EMIT_REFUSED)
            }
        }
    }

    pub fn workload(&self) -> &W {
        &self.workload
    }

    pub fn workload_mut(&mut self) -> &mut W {
        &mut self.workload
    }
}

/// Runs a workload natively through the same code path as the wasm exports (parse, process,
/// flush once per output), collecting what it emits instead of calling `edgeplane.emit`. It is
/// the native baseline the edge runtime's benchmarks compare the wasm modules against, and
/// what workload tests drive.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug)]
pub struct NativeHost<W> {
    guest: Guest<W>,
}

#[cfg(not(target_arch = "wasm32"))]
impl<W: Workload> Default for NativeHost<W> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl<W: Workload> NativeHost<W> {
    pub fn new() -> Self {
        Self { guest: Guest::new() }
    }

    /// `ep_configure`: a configuration document (see [`Config`]).
    pub fn configure(&mut self, document: &str) -> Result<(), String> {
        self.guest.configure(document.as_bytes())
    }

    /// `ep_process`: the (output, data) pairs emitted, one per output that received anything,
    /// or the code `ep_process` would return.
    pub fn process(&mut self, batch: &[u8]) -> Result<Vec<(String, Vec<u8>)>, i32> {
        let mut emitted = Vec::new();
        self.guest.process(batch, |output, data| {
            emitted.push((output.to_owned(), data.to_vec()));
            0
        })?;
        Ok(emitted)
    }

    /// Like [`NativeHost::process`], handing each output to `emit`, which returns what
    /// `edgeplane.emit` would (0, or negative to refuse). Copies nothing.
    pub fn process_with<F>(&mut self, batch: &[u8], emit: F) -> Result<(), i32>
    where
        F: FnMut(&str, &[u8]) -> i32,
    {
        self.guest.process(batch, emit)
    }

    /// `ep_process_validated`: [`NativeHost::process_with`] for a batch parsed beforehand, as
    /// the edge runtime validates batches before it hands them to modules that export it.
    pub fn process_parsed<F>(&mut self, batch: &Batch<'_>, emit: F) -> Result<(), i32>
    where
        F: FnMut(&str, &[u8]) -> i32,
    {
        self.guest.process_batch(batch, emit)
    }

    pub fn workload(&self) -> &W {
        self.guest.workload()
    }

    pub fn workload_mut(&mut self) -> &mut W {
        self.guest.workload_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode_batch, Reading};

    /// Counts readings above a limit; needs its configuration.
    #[derive(Debug, Default)]
    struct Above {
        limit: Option<f64>,
    }

    impl Workload for Above {
        fn configure(&mut self, config: &Config) -> Result<(), String> {
            self.limit = config.f64_opt("limit")?;
            self.limit.map(|_| ()).ok_or_else(|| "config.limit: required".to_owned())
        }

        fn process(&mut self, batch: &Batch<'_>, out: &mut Emitter) {
            let limit = self.limit.unwrap_or(f64::INFINITY);
            for reading in batch.iter().filter(|r| r.value > limit) {
                out.emit("above", reading);
            }
        }
    }

    fn batch(values: &[f64]) -> Vec<u8> {
        encode_batch(values.iter().map(|&value| Reading { timestamp_ms: 1, value, device: "d", metric: "m" })).unwrap()
    }

    #[test]
    fn a_parsed_batch_takes_the_same_path_as_its_bytes() {
        let bytes = batch(&[1.0, 5.0, 2.0, 7.0]);
        let parsed = Batch::parse(&bytes).unwrap();
        let mut host = NativeHost::<Above>::new();
        host.configure(r#"{"config":{"limit":3}}"#).unwrap();
        let from_bytes = host.process(&bytes).unwrap();
        let mut from_parsed = Vec::new();
        host.process_parsed(&parsed, |output, data| {
            from_parsed.push((output.to_owned(), data.to_vec()));
            0
        })
        .unwrap();
        assert_eq!(from_bytes, from_parsed);
        assert_eq!(from_bytes, vec![("above".to_owned(), batch(&[5.0, 7.0]))]);
        // The host's refusal of an output is the same error either way.
        assert_eq!(host.process_parsed(&parsed, |_, _| -1), Err(code::EMIT_REFUSED));
    }

    #[test]
    fn an_unconfigured_workload_that_needs_configuration_refuses_a_parsed_batch_too() {
        let bytes = batch(&[1.0]);
        let mut host = NativeHost::<Above>::new();
        assert_eq!(host.process(&bytes), Err(code::NOT_CONFIGURED));
        assert_eq!(host.process_parsed(&Batch::parse(&bytes).unwrap(), |_, _| 0), Err(code::NOT_CONFIGURED));
    }
}
