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
    crate::sys::write_stderr(line.as_bytes());
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
