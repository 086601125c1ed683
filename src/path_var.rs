//! Whose `OM_CONSTANT_PATH` is it: the deployer's, or a runtime's?
//!
//! onnx-mlir's `ExecutionSession` writes the process-wide variable around
//! each model's `dlopen`, and how changed across releases: set after
//! `dlopen`, set only if unset and never cleared, set and cleared
//! (docs/ONNX-MLIR.md, "onnx-mlir's ExecutionSession and
//! `OM_CONSTANT_PATH`"). Taken as authoritative, a value left behind by one
//! model's session sends the next model to the wrong weights, and two
//! sessions opened on two threads race for it. So the rule is:
//!
//! **A non-empty `OM_CONSTANT_PATH` that was already there when the process
//! started, or when the shared library `libom_constants` was loaded, is
//! deliberate: the only folder searched. Any other value is a hint, searched
//! after the folder of the model that calls.**
//!
//! "When the process started" is `/proc/self/environ` on Linux (the
//! environment `execve` passed, which `setenv` never rewrites); "when the
//! library was loaded" is read by a constructor the loader runs as it maps
//! the library. A copy of the library linked statically into a model is
//! loaded with the model, after the runtime set the variable, so only the
//! process's start counts there; where there is no `/proc`, the value at
//! load is all there is.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::config::SEARCH_PATH_VAR;

/// A folder named by `OM_CONSTANT_PATH`, and how far it is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchDir {
    /// Set before the process started or the library was loaded (or fixed
    /// by a Rust caller): the only folder searched for a relative name.
    Deliberate(PathBuf),
    /// Set later, as a runtime does around `dlopen`: searched after the
    /// folder of the model that calls.
    Hint(PathBuf),
}

impl SearchDir {
    /// The folder, whichever kind.
    pub fn dir(&self) -> &std::path::Path {
        match self {
            SearchDir::Deliberate(d) | SearchDir::Hint(d) => d,
        }
    }
}

/// The variable's value as the loader mapped this copy of the library
/// (`None` inside: unset or empty); unset itself when no constructor ran
/// (Miri, or an archive member the linker left out).
static AT_LOAD: OnceLock<Option<OsString>> = OnceLock::new();

/// The constructor the loader runs as it maps the library: it only copies
/// one variable. It takes no lock of ours and makes no system call but the
/// environment read.
extern "C" fn capture_at_load() {
    let _ = AT_LOAD.set(non_empty(std::env::var_os(SEARCH_PATH_VAR)));
}

// The loader runs every function listed in these sections when it maps the
// object, before `dlopen` returns (or `main` starts, for a linked library).
#[used]
#[cfg_attr(all(unix, not(target_vendor = "apple")), link_section = ".init_array")]
#[cfg_attr(target_vendor = "apple", link_section = "__DATA,__mod_init_func")]
#[cfg_attr(windows, link_section = ".CRT$XCU")]
static CAPTURE_AT_LOAD: extern "C" fn() = capture_at_load;

/// An empty value counts as unset, as onnx-mlir's Windows runtime "unsets"
/// the variable by emptying it.
fn non_empty(v: Option<OsString>) -> Option<OsString> {
    v.filter(|v| !v.is_empty())
}

/// `OM_CONSTANT_PATH` now, classified by the rule of the module docs.
pub(crate) fn current() -> Option<SearchDir> {
    let now = non_empty(std::env::var_os(SEARCH_PATH_VAR))?;
    Some(classify(now, &Baseline::get()))
}

/// What counted as deliberate for this process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Baseline {
    /// The value when the process started, if that can be known.
    pub(crate) at_start: Option<Option<OsString>>,
    /// The value when the shared library was loaded, if this copy is the
    /// shared library and its constructor ran.
    pub(crate) at_load: Option<Option<OsString>>,
}

impl Baseline {
    /// This process's, worked out once. Reading `/proc` happens before the
    /// once-cell is touched, so no thread waits on that I/O.
    fn get() -> Baseline {
        static BASELINE: OnceLock<Baseline> = OnceLock::new();
        if let Some(b) = BASELINE.get() {
            return b.clone();
        }
        let at_start = at_process_start();
        let at_load = if library_is_its_own_object() {
            AT_LOAD.get().cloned()
        } else {
            None
        };
        let _ = BASELINE.set(Baseline { at_start, at_load });
        BASELINE.get().cloned().unwrap_or_default()
    }
}

/// Deliberate when it equals a value the process or the library started
/// with; a hint otherwise. With neither known (no `/proc`, no constructor)
/// it is deliberate, as in onnx-mlir's own loader.
pub(crate) fn classify(now: OsString, baseline: &Baseline) -> SearchDir {
    let known = [&baseline.at_start, &baseline.at_load];
    let deliberate = known.iter().all(|b| b.is_none())
        || known
            .iter()
            .any(|b| b.as_ref().is_some_and(|v| v.as_deref() == Some(&now)));
    if deliberate {
        SearchDir::Deliberate(PathBuf::from(now))
    } else {
        SearchDir::Hint(PathBuf::from(now))
    }
}

/// `OM_CONSTANT_PATH` in the environment `execve` gave the process.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn at_process_start() -> Option<Option<OsString>> {
    let environ = std::fs::read("/proc/self/environ").ok()?;
    Some(find_in_environ(&environ, SEARCH_PATH_VAR))
}

/// No record of the start elsewhere: the value at load is used.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn at_process_start() -> Option<Option<OsString>> {
    None
}

/// `name`'s non-empty value in a NUL-separated `NAME=value` block.
#[cfg(unix)]
pub(crate) fn find_in_environ(block: &[u8], name: &str) -> Option<OsString> {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let prefix = [name.as_bytes(), b"="].concat();
    let value = block
        .split(|b| *b == 0)
        .find_map(|entry| entry.strip_prefix(prefix.as_slice()))?;
    non_empty(Some(OsStr::from_bytes(value).to_os_string()))
}

/// Whether this copy of the code is the shared library itself
/// (`libom_constants.so`, `om_constants.dll`, its SONAME variants), rather
/// than an archive linked into a model or a program.
fn library_is_its_own_object() -> bool {
    let here = capture_at_load as extern "C" fn() as usize;
    crate::sys::object_at(here)
        .and_then(|(_, name)| name)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .is_some_and(|n| is_library_file_name(&n))
}

/// `libom_constants.so`, `libom_constants.so.0`, `libom_constants.dylib`,
/// `om_constants.dll`.
fn is_library_file_name(name: &str) -> bool {
    let stem = name.strip_prefix("lib").unwrap_or(name);
    stem.strip_prefix("om_constants")
        .is_some_and(|rest| rest.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> OsString {
        OsString::from(s)
    }

    #[test]
    fn a_value_the_process_started_with_is_deliberate() {
        let b = Baseline {
            at_start: Some(Some(os("/weights"))),
            at_load: None,
        };
        assert_eq!(
            classify(os("/weights"), &b),
            SearchDir::Deliberate("/weights".into())
        );
        // Another value, set while the process ran, is only a hint.
        assert_eq!(classify(os("/m/v1"), &b), SearchDir::Hint("/m/v1".into()));
    }

    #[test]
    fn a_value_set_before_the_shared_library_loaded_is_deliberate() {
        let b = Baseline {
            at_start: Some(None),
            at_load: Some(Some(os("/weights"))),
        };
        assert_eq!(
            classify(os("/weights"), &b),
            SearchDir::Deliberate("/weights".into())
        );
        assert_eq!(classify(os("/other"), &b), SearchDir::Hint("/other".into()));
    }

    #[test]
    fn a_value_set_by_a_runtime_after_both_is_a_hint() {
        let b = Baseline {
            at_start: Some(None),
            at_load: Some(None),
        };
        assert_eq!(classify(os("/m/v1"), &b), SearchDir::Hint("/m/v1".into()));
    }

    #[test]
    fn with_nothing_known_the_value_is_deliberate_as_in_onnx_mlir() {
        assert_eq!(
            classify(os("/m"), &Baseline::default()),
            SearchDir::Deliberate("/m".into())
        );
    }

    #[cfg(unix)]
    #[test]
    fn environ_blocks_are_searched_by_whole_name_and_empty_counts_as_unset() {
        let block = b"OM_CONSTANT_PATHX=/no\0HOME=/root\0OM_CONSTANT_PATH=/w\0\0";
        assert_eq!(find_in_environ(block, "OM_CONSTANT_PATH"), Some(os("/w")));
        assert_eq!(find_in_environ(b"A=1\0", "OM_CONSTANT_PATH"), None);
        assert_eq!(
            find_in_environ(b"OM_CONSTANT_PATH=\0", "OM_CONSTANT_PATH"),
            None
        );
    }

    #[test]
    fn library_file_names() {
        for yes in [
            "libom_constants.so",
            "libom_constants.so.0",
            "libom_constants.dylib",
            "om_constants.dll",
        ] {
            assert!(is_library_file_name(yes), "{yes}");
        }
        for no in [
            "model.so",
            "libom_constantsx.so",
            "om-constants",
            "libcruntime.so",
        ] {
            assert!(!is_library_file_name(no), "{no}");
        }
    }
}
