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

/// Log lines made while others wait on the caller (under a lock, or during
/// a load), written by [`Notes::write`] once they are woken: the one way
/// deferred lines travel.
#[derive(Debug, Default)]
pub(crate) struct Notes(Vec<(Level, String)>);

impl Notes {
    /// Adds a line.
    pub(crate) fn push(&mut self, level: Level, msg: String) {
        self.0.push((level, msg));
    }

    /// Adds a line, if there is one.
    pub(crate) fn push_some(&mut self, level: Level, msg: Option<String>) {
        self.0.extend(msg.map(|m| (level, m)));
    }

    /// Adds another's lines after these.
    pub(crate) fn append(&mut self, mut other: Notes) {
        self.0.append(&mut other.0);
    }

    /// Writes the lines `configured` enables, in order.
    pub(crate) fn write(self, configured: Level) {
        for (level, msg) in self.0 {
            emit(configured, level, &msg);
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
