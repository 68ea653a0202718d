//! Log lines for the host (`edgeplane.log`).
//!
//! On wasm32 every line goes to the host, which decides what to keep. In native builds (the
//! edge runtime's tests and benchmarks) errors and warnings go to stderr and info and debug
//! lines are dropped, so that benchmarks measure the workload rather than the terminal.

/// Severity, with the ABI's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

pub fn error(msg: &str) {
    write(Level::Error, msg);
}

pub fn warn(msg: &str) {
    write(Level::Warn, msg);
}

pub fn info(msg: &str) {
    write(Level::Info, msg);
}

pub fn debug(msg: &str) {
    write(Level::Debug, msg);
}

pub fn write(level: Level, msg: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::abi::log(level as i32, msg);
    #[cfg(not(target_arch = "wasm32"))]
    if level <= Level::Warn {
        let level = if level == Level::Error { "error" } else { "warn" };
        eprintln!("edgeplane workload {level}: {msg}");
    }
}
