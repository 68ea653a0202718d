//! Inference (guest ABI v1.1, docs/abi.md "Inference"): runs the instance's ONNX `Model` in the
//! edge host, natively, from a workload.
//!
//! ```no_run
//! use edgeplane_sdk::nn::Session;
//!
//! # fn run(model_name: &str, rows: &[f32], features: u32) -> Result<Vec<f32>, edgeplane_sdk::nn::NnError> {
//! let mut session = Session::bind(model_name)?;
//! session.set_input(0, &[rows.len() as u32 / features, features], rows)?;
//! session.compute()?;
//! let mut probabilities = Vec::new();
//! let shape = session.output(1, &mut probabilities)?;
//! # let _ = shape; Ok(probabilities)
//! # }
//! ```
//!
//! Tensors cross the boundary as `f32` whatever the model declares (the host converts), with
//! `u32` dimensions. A session stays valid across Model updates: the host swaps the model
//! between batches, never within one.
//!
//! Natively (not wasm32) there is no host to run models: every call returns
//! [`NnError::Unavailable`].

use std::fmt;

/// The most dimensions a tensor may have.
pub const MAX_RANK: usize = 8;

/// Why an inference call failed; each is a code the host returned (docs/abi.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NnError {
    /// The instance has no model of that name.
    NoModel,
    /// A bad index or rank, or data whose length does not match the shape.
    Invalid,
    /// The model refused the inputs or failed to run.
    Failed,
    /// An output was read before a successful compute.
    NotComputed,
    /// An input or output larger than the host allows.
    TooLarge,
    /// No inference host (a native build), or a code this SDK does not know.
    Unavailable(i32),
}

impl fmt::Display for NnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NnError::NoModel => f.write_str("no model of that name is bound to this instance"),
            NnError::Invalid => f.write_str("invalid index, rank or tensor length"),
            NnError::Failed => f.write_str("the model refused the inputs or failed"),
            NnError::NotComputed => f.write_str("no outputs: compute first"),
            NnError::TooLarge => f.write_str("a tensor larger than the host allows"),
            NnError::Unavailable(code) => write!(f, "inference is not available here (code {code})"),
        }
    }
}

fn check(code: i32) -> Result<i32, NnError> {
    match code {
        c if c >= 0 => Ok(c),
        -1 => Err(NnError::NoModel),
        -2 => Err(NnError::Invalid),
        -3 => Err(NnError::Failed),
        -4 => Err(NnError::NotComputed),
        -6 => Err(NnError::TooLarge),
        other => Err(NnError::Unavailable(other)),
    }
}

/// The instance's model, bound by name.
#[derive(Debug)]
pub struct Session {
    handle: i32,
}

impl Session {
    /// Binds the model called `name` (the Workload's `modelRef`).
    pub fn bind(name: &str) -> Result<Session, NnError> {
        check(sys::bind(name)).map(|handle| Session { handle })
    }

    /// Sets input `index` (in the model's order) to `data`, row-major, of `shape`.
    pub fn set_input(&mut self, index: u32, shape: &[u32], data: &[f32]) -> Result<(), NnError> {
        if shape.len() > MAX_RANK {
            return Err(NnError::Invalid);
        }
        check(sys::set_input(self.handle, index as i32, shape, data)).map(drop)
    }

    /// Runs the model on the inputs set. Counts against the batch's time.
    pub fn compute(&mut self) -> Result<(), NnError> {
        check(sys::compute(self.handle)).map(drop)
    }

    /// Reads output `index` into `out` (resized to fit) and returns its shape.
    pub fn output(&mut self, index: u32, out: &mut Vec<f32>) -> Result<Vec<u32>, NnError> {
        let mut shape = [0u32; 1 + MAX_RANK];
        if out.capacity() == 0 {
            out.reserve(64);
        }
        loop {
            let capacity = out.capacity();
            out.resize(capacity, 0.0);
            let code = sys::get_output(self.handle, index as i32, &mut shape, out);
            if code == -5 {
                // Too small: the host wrote the shape; make room for all of it.
                let needed = shape[1..=(shape[0] as usize).min(MAX_RANK)].iter().fold(1usize, |n, &d| n.saturating_mul(d as usize));
                if needed <= capacity {
                    return Err(NnError::Invalid);
                }
                out.reserve(needed - out.len());
                continue;
            }
            let written = check(code)? as usize;
            out.truncate(written);
            let rank = (shape[0] as usize).min(MAX_RANK);
            return Ok(shape[1..=rank].to_vec());
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod sys {
    pub fn bind(name: &str) -> i32 {
        crate::abi::nn_bind(name)
    }
    pub fn set_input(handle: i32, index: i32, shape: &[u32], data: &[f32]) -> i32 {
        crate::abi::nn_set_input(handle, index, shape, data)
    }
    pub fn compute(handle: i32) -> i32 {
        crate::abi::nn_compute(handle)
    }
    pub fn get_output(handle: i32, index: i32, shape: &mut [u32], data: &mut [f32]) -> i32 {
        crate::abi::nn_get_output(handle, index, shape, data)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod sys {
    /// What every call answers natively: no inference host.
    const UNAVAILABLE: i32 = -100;

    pub fn bind(_name: &str) -> i32 {
        UNAVAILABLE
    }
    pub fn set_input(_handle: i32, _index: i32, _shape: &[u32], _data: &[f32]) -> i32 {
        UNAVAILABLE
    }
    pub fn compute(_handle: i32) -> i32 {
        UNAVAILABLE
    }
    pub fn get_output(_handle: i32, _index: i32, _shape: &mut [u32], _data: &mut [f32]) -> i32 {
        UNAVAILABLE
    }
}
