//! Writing to stdout without panicking when the reader has gone.

use std::io::Write as _;

/// Writes to stdout. When stdout is a pipe whose reader has closed it (`edgectl get | head
/// -1`), there is no one left to tell anything: the program ends quietly.
pub fn write(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_fmt(args).and_then(|()| stdout.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("edgectl: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}
