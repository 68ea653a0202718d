//! Writes edgeplane workloads in ordinary Rust.
//!
//! A workload is a type implementing [`Workload`]; [`export_workload!`] turns it into a
//! WebAssembly module following the guest ABI v1 (`docs/abi.md`), with no imports other than
//! `edgeplane.emit`, `edgeplane.log` and `edgeplane.now_ms`:
//!
//! ```
//! use edgeplane_sdk::{export_workload, Batch, Config, Emitter, Workload};
//!
//! #[derive(Default)]
//! pub struct AboveLimit { limit: f64 }
//!
//! impl Workload for AboveLimit {
//!     fn configure(&mut self, config: &Config) -> Result<(), String> {
//!         config.deny_unknown(&["limit"])?;
//!         self.limit = config.f64("limit")?;
//!         Ok(())
//!     }
//!
//!     fn process(&mut self, batch: &Batch, out: &mut Emitter) {
//!         for reading in batch.iter().filter(|r| r.value > self.limit) {
//!             out.emit("alerts", reading);
//!         }
//!     }
//! }
//!
//! export_workload!(AboveLimit);
//! ```
//!
//! The same crate also compiles natively: there the ABI glue is left out and [`NativeHost`]
//! runs the workload through the same code path, which is how workloads are tested and how the
//! edge runtime's benchmarks get a native baseline.
//!
//! # Layout
//!
//! - [`batch`]: the v1 batch format; [`Batch`] reads it without copying, [`BatchWriter`] writes it.
//! - [`config`]: the configuration document (`config` and `model`) with typed accessors.
//! - [`json`]: the strict JSON parser behind it (no crates.io dependencies here).
//! - [`emit`]: [`Emitter`], buffering a batch's output per output name.
//! - [`streams`]: [`StreamMap`], per-(device, metric) state without allocating per reading.
//! - [`log`] and [`now_ms`]: the host's other two imports.
//! - [`math`]: functions that give the same bits natively and on wasm32 (`exp`).
//! - [`nn`]: inference (ABI v1.1): the instance's ONNX Model, run by the host.
//! - `guest`: the shared parse/process/flush path, and [`NativeHost`]. A batch comes checked
//!   ([`Batch::parse`]) or, through `ep_process_validated` (ABI v1.2), as the host validated it.
//! - `bytes`: loads and short-string helpers that stay single instructions on wasm32.
//! - `abi` (wasm32 only): the imports and the bodies of the exports.
//!
//! Builds with Rust 1.63 (Debian's wasm32 toolchain) as well as current Rust.
//!
//! `unsafe` is denied crate-wide and allowed in two places: the `abi` module (calling the host
//! imports) and `batch::validated_str` (not checking UTF-8 a second time).
#![deny(unsafe_code)]
#![warn(missing_debug_implementations)]

#[cfg(target_arch = "wasm32")]
mod abi;
pub mod batch;
mod bytes;
pub mod config;
pub mod emit;
mod guest;
pub mod json;
pub mod log;
pub mod math;
pub mod nn;
pub mod streams;

pub use batch::{encode_batch, Batch, BatchError, BatchWriter, Reading};
pub use config::{Config, Model, Param};
pub use emit::Emitter;
#[cfg(not(target_arch = "wasm32"))]
pub use guest::NativeHost;
pub use streams::{FastHashMap, FastHasher, Stream, StreamMap};

/// What `ep_abi_version` returns.
pub const ABI_VERSION: i32 = 1;

/// What `ep_process` and `ep_configure` return (docs/abi.md). Every error is also logged
/// through `edgeplane.log` at level 0 with the details.
pub mod code {
    pub const OK: i32 = 0;
    /// `ep_process`: the batch is malformed. `ep_configure`: the document is not valid JSON
    /// or not a configuration document, or the workload refused the configuration.
    pub const INVALID: i32 = -1;
    /// `edgeplane.emit` returned a negative code; the rest of the batch's output was discarded.
    pub const EMIT_REFUSED: i32 = -2;
    /// `ep_process` before any successful `ep_configure`, by a workload that cannot run on
    /// an empty configuration.
    pub const NOT_CONFIGURED: i32 = -3;
    /// `ptr..ptr+len` is not within the buffer `ep_alloc` last returned.
    pub const BAD_POINTER: i32 = -4;
    /// An export was called while another was running (from within a host import).
    pub const REENTERED: i32 = -5;
}

/// Wall-clock time, milliseconds since the Unix epoch (`edgeplane.now_ms` on wasm32).
pub fn now_ms() -> i64 {
    #[cfg(target_arch = "wasm32")]
    return abi::now_ms();
    #[cfg(not(target_arch = "wasm32"))]
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(elapsed) => i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// A workload: one instance per replica, fed batch after batch.
///
/// `Default` builds the instance before it is configured.
pub trait Workload: Default {
    /// New configuration and `Model` parameters; called before the first batch and whenever
    /// either changes, between batches, on the same instance (state is kept).
    ///
    /// Return an error naming the field (the [`Config`] accessors do) to refuse it; the
    /// workload must then keep its previous configuration, so check everything before changing
    /// anything. If the host never calls it, the SDK calls it with an empty configuration
    /// before the first batch.
    fn configure(&mut self, config: &Config) -> Result<(), String> {
        config.deny_unknown(&[])
    }

    /// Processes one batch. What is emitted reaches the host when this returns, in one
    /// `edgeplane.emit` call per output.
    fn process(&mut self, batch: &Batch<'_>, out: &mut Emitter);
}

/// Exports a [`Workload`] as the guest ABI v1 (`ep_abi_version`, `ep_alloc`, `ep_process`,
/// `ep_configure`) when building for wasm32; elsewhere it only checks the type.
///
/// Use it once per module, in the crate built as the `cdylib`.
#[macro_export]
macro_rules! export_workload {
    ($workload:ty) => {
        const _: fn() = $crate::__private::assert_workload::<$workload>;

        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                // wasm32 is single-threaded: this is the module's one instance.
                static GUEST: ::std::cell::RefCell<$crate::__private::Guest<$workload>> =
                    ::std::cell::RefCell::new($crate::__private::Guest::new());
            }

            #[no_mangle]
            extern "C" fn ep_abi_version() -> i32 {
                $crate::ABI_VERSION
            }

            #[no_mangle]
            extern "C" fn ep_alloc(len: i32) -> i32 {
                $crate::__private::alloc(len)
            }

            #[no_mangle]
            extern "C" fn ep_process(ptr: i32, len: i32) -> i32 {
                $crate::__private::process(&GUEST, ptr, len)
            }

            #[no_mangle]
            extern "C" fn ep_process_validated(ptr: i32, len: i32) -> i32 {
                $crate::__private::process_validated(&GUEST, ptr, len)
            }

            #[no_mangle]
            extern "C" fn ep_configure(ptr: i32, len: i32) -> i32 {
                $crate::__private::configure(&GUEST, ptr, len)
            }
        };
    };
}

/// For [`export_workload!`] only.
#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use crate::abi::{alloc, configure, process, process_validated};
    pub use crate::guest::Guest;

    pub fn assert_workload<W: crate::Workload>() {}
}
