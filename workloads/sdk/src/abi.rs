//! The wasm32 side of the guest ABI v1 (docs/abi.md): the host imports and what the exports
//! that [`export_workload!`](crate::export_workload) generates do. Every `unsafe` of the SDK
//! but one (`batch::validated_str`) is here.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::thread::LocalKey;

use crate::guest::Guest;
use crate::{code, Workload};

mod host {
    #[link(wasm_import_module = "edgeplane")]
    extern "C" {
        #[link_name = "emit"]
        pub fn emit(output_ptr: i32, output_len: i32, data_ptr: i32, data_len: i32) -> i32;
        #[link_name = "log"]
        pub fn log(level: i32, ptr: i32, len: i32);
        #[link_name = "now_ms"]
        pub fn now_ms() -> i64;
        #[link_name = "nn_bind"]
        pub fn nn_bind(name_ptr: i32, name_len: i32) -> i32;
        #[link_name = "nn_set_input"]
        pub fn nn_set_input(handle: i32, index: i32, dims_ptr: i32, rank: i32, data_ptr: i32, data_len: i32) -> i32;
        #[link_name = "nn_compute"]
        pub fn nn_compute(handle: i32) -> i32;
        #[link_name = "nn_get_output"]
        pub fn nn_get_output(handle: i32, index: i32, shape_ptr: i32, max_rank: i32, data_ptr: i32, data_cap: i32) -> i32;
    }
}

// Pointers and lengths fit in an i32: wasm32 addresses are 32 bits and a slice is at most
// isize::MAX bytes. The host reads pointers back as unsigned.

pub(crate) fn emit(output: &str, data: &[u8]) -> i32 {
    // SAFETY: ABI v1 `emit` reads `output_len` bytes at `output_ptr` and `data_len` bytes at
    // `data_ptr`, both within our memory and live for the duration of the call, and writes
    // nothing of ours.
    unsafe { host::emit(output.as_ptr() as i32, output.len() as i32, data.as_ptr() as i32, data.len() as i32) }
}

pub(crate) fn log(level: i32, msg: &str) {
    // SAFETY: ABI v1 `log` only reads `len` bytes at `ptr`, which `msg` keeps live.
    unsafe { host::log(level, msg.as_ptr() as i32, msg.len() as i32) }
}

pub(crate) fn now_ms() -> i64 {
    // SAFETY: ABI v1 `now_ms` takes no arguments and touches no guest memory.
    unsafe { host::now_ms() }
}

pub(crate) fn nn_bind(name: &str) -> i32 {
    // SAFETY: ABI v1.1 `nn_bind` only reads `name_len` bytes at `name_ptr`, which `name` keeps live.
    unsafe { host::nn_bind(name.as_ptr() as i32, name.len() as i32) }
}

pub(crate) fn nn_set_input(handle: i32, index: i32, dims: &[u32], data: &[f32]) -> i32 {
    // SAFETY: ABI v1.1 `nn_set_input` reads `rank * 4` bytes of dimensions and `data_len`
    // bytes of data, both within slices that live for the call; it writes nothing of ours.
    // u32 and f32 are little-endian on wasm32, as the ABI wants.
    unsafe { host::nn_set_input(handle, index, dims.as_ptr() as i32, dims.len() as i32, data.as_ptr() as i32, (data.len() * 4) as i32) }
}

pub(crate) fn nn_compute(handle: i32) -> i32 {
    // SAFETY: ABI v1.1 `nn_compute` touches no guest memory.
    unsafe { host::nn_compute(handle) }
}

pub(crate) fn nn_get_output(handle: i32, index: i32, shape: &mut [u32], data: &mut [f32]) -> i32 {
    // SAFETY: ABI v1.1 `nn_get_output` writes at most `(1 + max_rank) * 4` bytes at
    // `shape_ptr` and `data_cap` bytes at `data_ptr`, both within the mutable slices we pass,
    // which live for the call. Any bit pattern is a valid u32 or f32.
    let max_rank = shape.len() as i32 - 1;
    unsafe { host::nn_get_output(handle, index, shape.as_mut_ptr() as i32, max_rank, data.as_mut_ptr() as i32, (data.len() * 4) as i32) }
}

thread_local! {
    /// The one buffer `ep_alloc` hands out, reused for every batch and configuration. wasm32
    /// is single-threaded, so this is simply a global.
    static INPUT: RefCell<Vec<u8>> = RefCell::new(Vec::new());
}

/// `ep_alloc`: a pointer to `len` writable bytes, valid until the next `ep_alloc`; 0 if
/// `len` is negative or memory is exhausted. Grows the buffer only when it is too small, so
/// steady-state batches do not allocate.
pub fn alloc(len: i32) -> i32 {
    let len = match usize::try_from(len) {
        Ok(len) => len.max(1),
        Err(_) => return 0,
    };
    INPUT.with(|input| {
        let mut input = match input.try_borrow_mut() {
            Ok(input) => input,
            Err(_) => return 0,
        };
        if input.len() < len {
            // The old contents are garbage: drop them rather than copy them along.
            input.clear();
            if input.try_reserve_exact(len).is_err() {
                return 0;
            }
            input.resize(len, 0);
        }
        input.as_mut_ptr() as usize as i32
    })
}

/// Runs `f` on `ptr..ptr+len` if that lies within the `ep_alloc` buffer, which the host
/// wrote to through the pointer we returned. Checking this means no `unsafe` is needed to
/// read it.
fn with_input(ptr: i32, len: i32, f: impl FnOnce(&[u8]) -> i32) -> i32 {
    INPUT.with(|input| {
        let input = match input.try_borrow() {
            Ok(input) => input,
            Err(_) => return code::BAD_POINTER,
        };
        let start = (ptr as u32 as usize).wrapping_sub(input.as_ptr() as usize);
        let region = usize::try_from(len).ok().and_then(|len| input.get(start..start.checked_add(len)?));
        match region {
            Some(region) => f(region),
            None => {
                crate::log::error(&format!("ptr {ptr} len {len} is not within the buffer ep_alloc returned (docs/abi.md)"));
                code::BAD_POINTER
            }
        }
    })
}

/// Runs `call` on the module's one guest and turns its result into the export's code; a call
/// made while the guest is busy (from within a host import) is refused.
fn with_guest<W: Workload>(guest: &'static LocalKey<RefCell<Guest<W>>>, call: impl FnOnce(&mut Guest<W>) -> Result<(), i32>) -> i32 {
    guest.with(|guest| match guest.try_borrow_mut() {
        Ok(mut guest) => match call(&mut guest) {
            Ok(()) => code::OK,
            Err(code) => code,
        },
        Err(_) => code::REENTERED,
    })
}

/// `ep_process`.
pub fn process<W: Workload>(guest: &'static LocalKey<RefCell<Guest<W>>>, ptr: i32, len: i32) -> i32 {
    with_input(ptr, len, |batch| with_guest(guest, |guest| guest.process(batch, emit)))
}

/// `ep_process_validated` (ABI 1.2): `ep_process` for a batch the host has validated.
pub fn process_validated<W: Workload>(guest: &'static LocalKey<RefCell<Guest<W>>>, ptr: i32, len: i32) -> i32 {
    with_input(ptr, len, |batch| with_guest(guest, |guest| guest.process_validated(batch, emit)))
}

/// `ep_configure`.
pub fn configure<W: Workload>(guest: &'static LocalKey<RefCell<Guest<W>>>, ptr: i32, len: i32) -> i32 {
    with_input(ptr, len, |document| {
        with_guest(guest, |guest| {
            guest.configure(document).map_err(|message| {
                crate::log::error(&message);
                code::INVALID
            })
        })
    })
}

/// Logs panics before the trap that `panic = "abort"` turns them into, so the host's
/// restart has a reason attached.
pub(crate) fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| crate::log::error(&format!("workload panicked: {info}"))));
}
