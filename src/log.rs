//! One-line diagnostics on stderr, filtered by `OM_CONSTANT_LOG`.
//!
//! The library runs inside someone else's process, so it prints nothing the
//! host did not ask for: by default one line per failed call (what onnx-mlir
//! prints today), `info` adds what was loaded and how, `debug` adds waits.

/// How much the library writes to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Nothing.
    Off,
    /// One line per failed call (the default).
    Error,
    /// Also each load: file, strategy, size, time.
    Info,
    /// Also waits, sharing and releases.
    Debug,
}

impl Level {
    /// Parses `off|error|info|debug` (case-insensitive).
    pub fn parse(s: &str) -> Option<Level> {
        match s.to_ascii_lowercase().as_str() {
            "off" | "none" | "0" => Some(Level::Off),
            "error" => Some(Level::Error),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Level::Off => "off",
            Level::Error => "error",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

/// Writes `msg` as one line when `level` is enabled by `configured`.
pub fn emit(configured: Level, level: Level, msg: &str) {
    if level == Level::Off || level > configured {
        return;
    }
    let line = format!("om-constants: {}: {msg}\n", level.label());
    write_stderr(line.as_bytes());
}

/// Writes `bytes` to file descriptor 2 with plain `write` calls: no lock of
/// std's (a thread blocked on a full stderr pipe must not hold one that a
/// forked child or another thread would wait for), one call for a line, so
/// concurrent lines do not interleave. A closed or failing stderr is not
/// ours to report.
fn write_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a live slice; write reads at most its length.
        let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        if n > 0 {
            bytes = &bytes[n as usize..];
        } else if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
        {
            continue;
        } else {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_order() {
        assert_eq!(Level::parse("INFO"), Some(Level::Info));
        assert_eq!(Level::parse("verbose"), None);
        assert!(Level::Off < Level::Error && Level::Error < Level::Info);
        assert!(Level::Info < Level::Debug);
    }
}
