//! Modules the orchestrators compiled ahead of time for this node: the edge runtime's one
//! `unsafe` operation, kept here.
//!
//! Loading native code is trusting it: wasmtime checks that an artifact was made by the same
//! wasmtime with the same settings for CPU features this machine has, but it cannot check the
//! code itself. So an [`Artifact`] exists only as bytes whose sha256 was checked, and the
//! agent makes one only of bytes an orchestrator of this cluster served (docs/abi.md,
//! "Ahead-of-time compilation").

#![allow(unsafe_code)]

use wasmtime::{Engine, Module};

/// A precompiled module whose bytes match the sha256 they were served and stored with.
#[derive(Debug)]
pub struct Artifact {
    bytes: Vec<u8>,
}

impl Artifact {
    /// The bytes, if their sha256 is `sha256_hex`.
    pub fn verified(bytes: Vec<u8>, sha256_hex: &str) -> Result<Artifact, String> {
        let actual = edgeplane_api::hex::sha256(&bytes);
        if actual != sha256_hex {
            return Err(format!("its bytes have sha256 {actual}, not the {sha256_hex} they came with"));
        }
        Ok(Artifact { bytes })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Loads the artifact's code into `engine`.
pub(crate) fn deserialize(engine: &Engine, artifact: &Artifact) -> wasmtime::Result<Module> {
    // SAFETY: `Module::deserialize` runs whatever machine code the bytes hold. These bytes are
    // trusted because of where they come from and that they are whole:
    // - an orchestrator of this cluster compiled them from the module with the Assignment's
    //   digest and served them over TLS authenticated by the cluster CA; the same orchestrators
    //   choose which modules this node runs at all, so their compiler is no new authority;
    // - a node with its own trust roots (`--trusted-signers`) trusts only what a publisher
    //   signed, which is the wasm and not this code, and never gets here (the agent compiles
    //   the verified wasm itself);
    // - their sha256 was checked after the transfer and after every read from the disk
    //   cache (`Artifact::verified`), so a torn or corrupted copy is never loaded;
    // - wasmtime refuses an artifact of another wasmtime version, other settings, or CPU
    //   features this machine lacks.
    // Once modules' compiled forms are signed, the signature replaces the first point.
    unsafe { Module::deserialize(engine, &artifact.bytes) }
}
