//! Links the edge's binaries with packed relative relocations (DT_RELR; it needs glibc 2.36 and
//! GNU ld 2.38 or newer): a position-independent executable's relocations shrink from megabytes
//! of RELA entries, which the loader reads in full at every start, to a bitmap. The edge binary
//! gets smaller and its idle memory with it (`BENCH edge_binary_mb`, `edge_idle_rss_mb`).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
