//! Command output that survives a closed pipe: `shroud proxy stats ... | head` must end
//! quietly, not panic as `println!` does when stdout is gone (Rust ignores SIGPIPE).

use std::io::Write;

/// `println!` for command output: a closed stdout ends the process quietly with status 0;
/// any other write error ends it with status 1. Never panics.
#[macro_export]
macro_rules! outln {
    () => { $crate::out::line(::std::format_args!("")) };
    ($($arg:tt)*) => { $crate::out::line(::std::format_args!($($arg)*)) };
}

/// Writes one line to stdout (see [`outln!`](crate::outln)).
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let r = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
    if let Err(e) = r {
        closed(&e);
    }
}

/// Writes raw bytes to stdout, with the same handling of a closed pipe.
pub fn bytes(b: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(b).and_then(|()| out.flush()) {
        closed(&e);
    }
}

fn closed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("Error: writing to stdout: {e}");
    std::process::exit(1);
}
