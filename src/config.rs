//! Options from `OM_CONSTANT_*` environment variables: every one is read
//! once per process, except `OM_CONSTANT_PATH`, which is read at each load
//! as onnx-mlir's own loader reads it (its `ExecutionSession` sets it to
//! each model's folder around that model's `dlopen`; docs/ONNX-MLIR.md).
//!
//! A bad value is reported once (at the `error` log level) and ignored, so a
//! typo in a deployment script degrades to the defaults instead of failing
//! every model load. Parsing is pure (`Config::from_lookup`) so it can be
//! tested without touching the real environment.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::log::Level;
pub use crate::path_var::SearchDir;

/// The mapping limit built into platforms that have one (z/OS: 1 GiB).
#[cfg(target_os = "zos")]
pub const PLATFORM_MMAP_LIMIT: Option<u64> = Some(1 << 30);
/// The mapping limit built into platforms that have one (none here).
#[cfg(not(target_os = "zos"))]
pub const PLATFORM_MMAP_LIMIT: Option<u64> = None;

/// The name of every option the library reads from the environment once per
/// process (`Config::from_lookup` reads exactly these).
pub const OPTIONS: [&str; 10] = [
    "OM_CONSTANT_LOAD",
    "OM_CONSTANT_MMAP_LIMIT",
    "OM_CONSTANT_WAIT_TIMEOUT",
    "OM_CONSTANT_LOG",
    "OM_CONSTANT_KEEP",
    "OM_CONSTANT_READ_THREADS",
    "OM_CONSTANT_DIRECT_IO",
    "OM_CONSTANT_HUGE_PAGES",
    "OM_CONSTANT_PREFETCH",
    "OM_CONSTANT_MLOCK",
];

/// The options read at each load instead: onnx-mlir's runtime reads
/// `OM_CONSTANT_PATH` at each load, and nothing else.
pub const PER_LOAD_OPTIONS: [&str; 1] = [SEARCH_PATH_VAR];

/// The variable that names the one folder to search for a relative name.
pub const SEARCH_PATH_VAR: &str = "OM_CONSTANT_PATH";

/// Where the folder of `OM_CONSTANT_PATH` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchPath {
    /// The process environment's `OM_CONSTANT_PATH`, read at each load (the
    /// default, and what the C ABI uses): a host may set it to each model's
    /// folder before loading that model, as onnx-mlir's `ExecutionSession` does.
    Environment,
    /// This folder, or none: fixed for the registry's life (Rust users and
    /// tests with a registry of their own).
    Fixed(Option<PathBuf>),
}

impl SearchPath {
    /// The folder to search now, if any, and how far it is trusted
    /// ([`crate::path_var`]: a value set after the process started and
    /// after the library was loaded is only a hint). An empty
    /// `OM_CONSTANT_PATH` counts as unset, as onnx-mlir's Windows runtime
    /// "unsets" it by emptying it.
    pub fn current(&self) -> Option<SearchDir> {
        match self {
            SearchPath::Environment => crate::path_var::current(),
            SearchPath::Fixed(dir) => dir.clone().map(SearchDir::Deliberate),
        }
    }
}

/// Default time a thread waits for another thread's load before giving up.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(600);

/// Default upper bound on the threads of one `read` load.
pub const DEFAULT_READ_THREADS: usize = 8;

/// What the configuration asks for (`OM_CONSTANT_LOAD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// `mmap` up to the mapping limit, `chunked-mmap` above it, `read` if
    /// mapping fails.
    Auto,
    /// Always `mmap`.
    Mmap,
    /// Always `read`.
    Read,
    /// Always `chunked-mmap`.
    ChunkedMmap,
}

impl Choice {
    /// The accepted spellings, for error messages.
    pub const EXPECTED: &'static str = "auto, mmap, read or chunked-mmap";

    /// Parses `auto|mmap|read|chunked-mmap`.
    pub fn parse(s: &str) -> Option<Choice> {
        match s.to_ascii_lowercase().as_str() {
            "auto" | "" => Some(Choice::Auto),
            "mmap" => Some(Choice::Mmap),
            "read" | "malloc" => Some(Choice::Read),
            "chunked-mmap" | "chunked" => Some(Choice::ChunkedMmap),
            _ => None,
        }
    }
}

/// What to do with a mapping's pages right after mapping (`OM_CONSTANT_PREFETCH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefetch {
    /// Nothing: pages fault in when the model first touches them.
    None,
    /// `madvise(MADV_WILLNEED)`: the kernel starts reading ahead.
    WillNeed,
    /// The load returns with every page mapped (`MADV_POPULATE_READ`,
    /// after the mapping is advised; one read per page where it is missing).
    Populate,
    /// A helper thread touches every page while the model starts.
    Background,
}

impl Prefetch {
    fn parse(s: &str) -> Option<Prefetch> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "off" | "0" => Some(Prefetch::None),
            "willneed" => Some(Prefetch::WillNeed),
            "populate" => Some(Prefetch::Populate),
            "background" => Some(Prefetch::Background),
            _ => None,
        }
    }
}

/// Whether and how to put the weights in 2 MiB pages (`OM_CONSTANT_HUGE_PAGES`;
/// docs/WEIGHTS-SPEED.md has what each costs and wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HugePages {
    /// Nothing is asked: mappings and buffers in whatever pages the kernel
    /// gives.
    Off,
    /// The default. Mappings 2 MiB-aligned and advised `MADV_HUGEPAGE`
    /// before their first fault (a cold file faults in as 2 MiB pages),
    /// `read` buffers likewise; what of the file is in the page cache in
    /// small pages is collapsed in place (`MADV_COLLAPSE`, no I/O) by a
    /// helper thread after the load returns, where the kernel can and the
    /// admin allows; else it stays small and the `info` log says why.
    On,
    /// As `On`, and what stays small is re-laid once by the helper: written
    /// back, evicted where no process maps it, and read again in 2 MiB
    /// folios; never in a memory cgroup that cannot hold it, on a file
    /// system without 2 MiB folios or a network volume, or twice.
    Reread,
}

impl HugePages {
    /// Whether 2 MiB pages are asked for at all.
    pub fn wanted(self) -> bool {
        self != HugePages::Off
    }

    fn parse(s: &str) -> Option<HugePages> {
        match s.to_ascii_lowercase().as_str() {
            "reread" => Some(HugePages::Reread),
            other => parse_bool(other).map(|on| if on { HugePages::On } else { HugePages::Off }),
        }
    }
}

/// Whether to lock the buffer in RAM (`OM_CONSTANT_MLOCK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mlock {
    /// No locking.
    Off,
    /// `mlock`; a refusal fails the load.
    On,
    /// `mlock`; a refusal is logged and the load goes on unlocked.
    Try,
}

impl Mlock {
    fn parse(s: &str) -> Option<Mlock> {
        match s.to_ascii_lowercase().as_str() {
            "try" => Some(Mlock::Try),
            other => parse_bool(other).map(|on| if on { Mlock::On } else { Mlock::Off }),
        }
    }
}

/// Every option of the library, with its default in [`Config::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `OM_CONSTANT_LOAD`: how to put the file into memory (default `auto`).
    pub strategy: Choice,
    /// `OM_CONSTANT_MMAP_LIMIT`: largest single mapping `auto` will make
    /// (default: the platform's, none on Linux).
    pub mmap_limit: Option<u64>,
    /// `OM_CONSTANT_WAIT_TIMEOUT`: seconds a waiter waits for a load.
    pub wait_timeout: Duration,
    /// `OM_CONSTANT_LOG`: what goes to stderr (default `error`).
    pub log: Level,
    /// `OM_CONSTANT_KEEP`: keep unreferenced buffers until trim (default 0).
    pub keep: bool,
    /// `OM_CONSTANT_PATH`: read at each load by default; the only folder
    /// searched when deliberate, a hint after the model's folder otherwise
    /// ([`crate::path_var`]).
    pub search_path: SearchPath,
    /// `OM_CONSTANT_READ_THREADS`: most threads one `read` load uses
    /// (also capped by the number of CPUs, but on a network volume, where
    /// the threads wait on requests).
    pub read_threads: usize,
    /// `OM_CONSTANT_DIRECT_IO`: `read` with `O_DIRECT`, bypassing the page
    /// cache (falls back to buffered reads where the file system refuses).
    pub direct_io: bool,
    /// `OM_CONSTANT_HUGE_PAGES`: 2 MiB pages for mappings and `read`
    /// buffers of 2 MiB and more (default `on`).
    pub huge_pages: HugePages,
    /// `OM_CONSTANT_PREFETCH`: what to do with a mapping's pages.
    pub prefetch: Prefetch,
    /// `OM_CONSTANT_MLOCK`: lock the buffer in RAM.
    pub mlock: Mlock,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            strategy: Choice::Auto,
            mmap_limit: PLATFORM_MMAP_LIMIT,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
            log: Level::Error,
            keep: false,
            search_path: SearchPath::Environment,
            read_threads: DEFAULT_READ_THREADS,
            direct_io: false,
            huge_pages: HugePages::On,
            prefetch: Prefetch::None,
            mlock: Mlock::Off,
        }
    }
}

impl Config {
    /// Builds a configuration from `lookup(name)`; returns it and one message
    /// for every value that was ignored.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> (Config, Vec<String>) {
        let mut c = Config::default();
        let mut problems = Vec::new();
        let mut field = |name: &str, parse: &mut dyn FnMut(&str) -> Result<(), String>| {
            let Some(raw) = lookup(name) else { return };
            let text = raw.to_string_lossy();
            if let Err(expected) = parse(text.trim()) {
                problems.push(format!(
                    "ignoring {name}={text:?}: expected {expected}; using the default"
                ));
            }
        };
        field("OM_CONSTANT_LOG", &mut |s| {
            c.log = Level::parse(s).ok_or("off, error, info or debug")?;
            Ok(())
        });
        field("OM_CONSTANT_LOAD", &mut |s| {
            c.strategy = Choice::parse(s).ok_or(Choice::EXPECTED)?;
            Ok(())
        });
        field("OM_CONSTANT_MMAP_LIMIT", &mut |s| {
            let limit = parse_size(s).ok_or("a positive size such as 1073741824, 256MiB or 1G")?;
            c.mmap_limit = Some(limit);
            Ok(())
        });
        field("OM_CONSTANT_WAIT_TIMEOUT", &mut |s| {
            c.wait_timeout =
                parse_seconds(s).ok_or("a positive number of seconds such as 600 or 0.5")?;
            Ok(())
        });
        field("OM_CONSTANT_KEEP", &mut |s| {
            c.keep = parse_bool(s).ok_or("0 or 1")?;
            Ok(())
        });
        field("OM_CONSTANT_READ_THREADS", &mut |s| {
            c.read_threads = s
                .parse()
                .ok()
                .filter(|n| (1..=1024).contains(n))
                .ok_or("a number of threads from 1 to 1024")?;
            Ok(())
        });
        field("OM_CONSTANT_DIRECT_IO", &mut |s| {
            c.direct_io = parse_bool(s).ok_or("0 or 1")?;
            Ok(())
        });
        field("OM_CONSTANT_HUGE_PAGES", &mut |s| {
            c.huge_pages = HugePages::parse(s).ok_or("off, on or reread")?;
            Ok(())
        });
        field("OM_CONSTANT_PREFETCH", &mut |s| {
            c.prefetch = Prefetch::parse(s).ok_or("none, willneed, populate or background")?;
            Ok(())
        });
        field("OM_CONSTANT_MLOCK", &mut |s| {
            c.mlock = Mlock::parse(s).ok_or("0, 1 or try")?;
            Ok(())
        });
        (c, problems)
    }
}

/// Parses a byte count: digits with an optional binary suffix
/// (`K`, `M`, `G`, `T`, optionally followed by `iB` or `B`). Zero is refused.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, suffix) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    let v = n.checked_mul(1u64 << shift)?;
    (v > 0).then_some(v)
}

/// Parses a positive number of seconds (`600`, `0.5`, optional `s`).
pub fn parse_seconds(s: &str) -> Option<Duration> {
    let s = s.strip_suffix('s').unwrap_or(s).trim();
    let v: f64 = s.parse().ok()?;
    if !(v.is_finite() && v > 0.0 && v <= 1e9) {
        return None;
    }
    // A tiny positive number (1e-300) rounds to zero: no wait at all.
    Some(Duration::from_secs_f64(v)).filter(|d| !d.is_zero())
}

/// Parses `0/1`, `true/false`, `yes/no`, `on/off`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Looks up `name` in a fixed list.
    fn lookup_in<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn choice_spellings() {
        assert_eq!(Choice::parse("MMAP"), Some(Choice::Mmap));
        assert_eq!(Choice::parse("read"), Some(Choice::Read));
        assert_eq!(Choice::parse("auto"), Some(Choice::Auto));
        assert_eq!(Choice::parse("chunked-mmap"), Some(Choice::ChunkedMmap));
        assert_eq!(Choice::parse("zero-copy"), None);
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let (c, problems) = Config::from_lookup(lookup_in(&[]));
        assert_eq!(c, Config::default());
        assert!(problems.is_empty());
    }

    #[test]
    fn every_option_is_read() {
        let (c, problems) = Config::from_lookup(lookup_in(&[
            ("OM_CONSTANT_LOAD", "read"),
            ("OM_CONSTANT_MMAP_LIMIT", "256MiB"),
            ("OM_CONSTANT_WAIT_TIMEOUT", "2.5"),
            ("OM_CONSTANT_LOG", "debug"),
            ("OM_CONSTANT_KEEP", "1"),
            ("OM_CONSTANT_READ_THREADS", "3"),
            ("OM_CONSTANT_DIRECT_IO", "1"),
            ("OM_CONSTANT_HUGE_PAGES", "0"),
            ("OM_CONSTANT_PREFETCH", "background"),
            ("OM_CONSTANT_MLOCK", "try"),
        ]));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(c.read_threads, 3);
        assert!(c.direct_io);
        assert_eq!(c.huge_pages, HugePages::Off);
        assert_eq!(c.prefetch, Prefetch::Background);
        assert_eq!(c.mlock, Mlock::Try);
        assert_eq!(c.strategy, Choice::Read);
        assert_eq!(c.mmap_limit, Some(256 << 20));
        assert_eq!(c.wait_timeout, Duration::from_millis(2500));
        assert_eq!(c.log, Level::Debug);
        assert!(c.keep);
        assert_eq!(c.search_path, SearchPath::Environment, "read at each load");
    }

    #[test]
    fn garbage_is_reported_and_ignored() {
        let (c, problems) = Config::from_lookup(lookup_in(&[
            ("OM_CONSTANT_LOAD", "fast"),
            ("OM_CONSTANT_MMAP_LIMIT", "-3"),
            ("OM_CONSTANT_WAIT_TIMEOUT", "0"),
            ("OM_CONSTANT_LOG", "loud"),
            ("OM_CONSTANT_KEEP", "maybe"),
            ("OM_CONSTANT_READ_THREADS", "0"),
            ("OM_CONSTANT_DIRECT_IO", "sometimes"),
            ("OM_CONSTANT_HUGE_PAGES", "big"),
            ("OM_CONSTANT_PREFETCH", "eager"),
            ("OM_CONSTANT_MLOCK", "2"),
        ]));
        assert_eq!(c, Config::default());
        assert_eq!(problems.len(), 10, "{problems:?}");
        assert!(problems[0].contains("OM_CONSTANT_LOG") && problems[0].contains("loud"));
        assert!(problems
            .iter()
            .any(|p| p.contains("OM_CONSTANT_LOAD=\"fast\"")));
    }

    /// OPTIONS lists exactly what from_lookup reads: every name is looked
    /// up, and nothing else is (OM_CONSTANT_PATH is not: it is read at
    /// each load).
    #[test]
    fn options_lists_every_name_read() {
        let asked = std::cell::RefCell::new(Vec::new());
        Config::from_lookup(|name| {
            asked.borrow_mut().push(name.to_string());
            None
        });
        let mut asked = asked.into_inner();
        asked.sort();
        let mut listed: Vec<String> = OPTIONS.iter().map(|s| s.to_string()).collect();
        listed.sort();
        assert_eq!(asked, listed);
        assert!(!asked.iter().any(|a| PER_LOAD_OPTIONS.contains(&a.as_str())));
    }

    #[test]
    fn a_fixed_search_path_ignores_the_environment() {
        let dir = PathBuf::from("/fixed");
        assert_eq!(
            SearchPath::Fixed(Some(dir.clone())).current(),
            Some(SearchDir::Deliberate(dir))
        );
        assert_eq!(SearchPath::Fixed(None).current(), None);
    }

    #[test]
    fn huge_page_spellings() {
        assert_eq!(HugePages::parse("reread"), Some(HugePages::Reread));
        assert_eq!(HugePages::parse("on"), Some(HugePages::On));
        assert_eq!(HugePages::parse("1"), Some(HugePages::On));
        assert_eq!(HugePages::parse("OFF"), Some(HugePages::Off));
        assert_eq!(HugePages::parse("0"), Some(HugePages::Off));
        assert_eq!(HugePages::parse("big"), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1k"), Some(1024));
        assert_eq!(parse_size("3 MiB"), Some(3 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("2tb"), Some(2 << 40));
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("12x"), None);
        assert_eq!(parse_size("99999999999T"), None, "overflow is refused");
    }

    #[test]
    fn seconds_and_bools() {
        assert_eq!(parse_seconds("600"), Some(Duration::from_secs(600)));
        assert_eq!(parse_seconds("0.25s"), Some(Duration::from_millis(250)));
        assert_eq!(parse_seconds("nan"), None);
        assert_eq!(
            parse_seconds("1e-300"),
            None,
            "rounds to zero (found by tests/properties.rs)"
        );
        assert_eq!(parse_seconds("-1"), None);
        assert_eq!(parse_bool("YES"), Some(true));
        assert_eq!(parse_bool("off"), Some(false));
        assert_eq!(parse_bool("2"), None);
    }
}
