//! What the integration tests share: small test modules in WAT.
#![allow(dead_code)] // each test crate uses a different part

/// The common part of every test module: memory, the ABI version, and an allocator that
/// always answers the same buffer at 64 KiB.
pub const PRELUDE: &str = r#"
    (import "edgeplane" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 2)
    (data (i32.const 16) "out")
    (func (export "ep_abi_version") (result i32) i32.const 1)
    (func (export "ep_alloc") (param i32) (result i32) i32.const 65536)
"#;

/// A well-behaved module: emits every batch unchanged on `out`.
pub fn echo() -> String {
    module(
        r#"(func (export "ep_process") (param $ptr i32) (param $len i32) (result i32)
        (call $emit (i32.const 16) (i32.const 3) (local.get $ptr) (local.get $len)))"#,
    )
}

pub fn module(body: &str) -> String {
    format!("(module {PRELUDE} {body})")
}
