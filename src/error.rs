//! Errors, and the thread-local "last error" that the C ABI reports.
//!
//! Every failure becomes an [`Error`]: a kind a program can match on and a
//! message a person can act on. Messages name the file the model asked for,
//! the path that was tried, the OS error and the fix, because the person who
//! reads them is usually deploying someone else's model and cannot read our
//! code. `Error` is `Clone` so that one loader's failure can be handed to
//! every thread that was waiting for it.

use std::cell::{Cell, UnsafeCell};
use std::ffi::CStr;
use std::fmt;
use std::io;
use std::os::raw::c_char;

/// What went wrong, for programs; the message says it for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A NULL pointer, a size that is not positive, or another bad argument.
    InvalidArgument,
    /// The file's byte order (`is_le`) is not the host's.
    ByteOrder,
    /// The file was not found in any place searched.
    NotFound,
    /// The path exists but is not a regular file (directory, FIFO, device).
    NotAFile,
    /// The file is shorter than the size the model expects.
    TooShort,
    /// Opening, mapping or reading failed with an OS error.
    Io,
    /// The buffer could not be allocated.
    OutOfMemory,
    /// Another thread's load did not finish within the wait timeout.
    Timeout,
    /// Release of a slot that holds no reference (being loaded, or holding
    /// a pointer this library did not give it).
    NotHeld,
    /// Release of a slot that is NULL: nothing was loaded into it, or it was
    /// released already.
    NotLoaded,
    /// A cache's entries were committed in memory only: its folder could
    /// not hold the file (the reason was logged when it happened).
    NotPersisted,
    /// A call on a loaded slot asks for another file or size than the slot
    /// holds.
    Mismatch,
    /// The file changed while it was loaded (it shrank under the mapping,
    /// or was rewritten while it was read); nothing was published.
    Changed,
    /// The library itself failed (a caught panic); a bug to report.
    Internal,
}

/// An error with its kind and a full, actionable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// An error of `kind` with the complete `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// An OS error while doing `what` on `path` for the model's file `fname`.
    pub fn io(what: &str, fname: &str, path: &std::path::Path, err: &io::Error) -> Self {
        let fix = match err.kind() {
            io::ErrorKind::PermissionDenied => {
                "give the process read permission on the file or its folders"
            }
            io::ErrorKind::NotFound => {
                "the file disappeared while loading; do not delete or move it while the model starts"
            }
            io::ErrorKind::OutOfMemory => "free memory or raise the process's memory limits",
            _ => "check the file system and the file, then try again",
        };
        Error::new(
            ErrorKind::Io,
            format!(
                "cannot {what} constants file {}: {err}; {fix}",
                file(fname, path)
            ),
        )
    }

    /// The kind, for programs.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, for people.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Names a constants file in a message: `'name' at /path`, or just the
/// path when the model gave it in full.
pub fn file(fname: &str, path: &std::path::Path) -> String {
    if std::path::Path::new(fname) == path {
        format!("'{}'", path.display())
    } else {
        format!("'{fname}' at {}", path.display())
    }
}

/// Shorthand used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// The most bytes of a message kept for `om_constants_last_error`; a longer
/// one is cut at a character boundary and ends in "...".
const LAST_ERROR_CAP: usize = 8192;

/// One thread's last message, NUL-terminated, in place. It has no `Drop`,
/// so touching it registers no thread-local destructor: a copy of the
/// library linked into a model that is `dlclose`d would otherwise leave the
/// C runtime a destructor in unmapped code, called at thread or process
/// exit (docs/ARCHITECTURE.md, "Invariants and where they are enforced").
struct LastError {
    set: Cell<bool>,
    bytes: UnsafeCell<[u8; LAST_ERROR_CAP]>,
}

thread_local! {
    static LAST_ERROR: LastError = const {
        LastError { set: Cell::new(false), bytes: UnsafeCell::new([0; LAST_ERROR_CAP]) }
    };
}

/// Records `err` as this thread's last error.
pub fn set_last_error(err: &Error) {
    // A message never contains NUL unless a path did; replace it so the
    // message is still delivered rather than dropped.
    let text = err.message().replace('\0', "\\0");
    let text = truncated(&text, LAST_ERROR_CAP - 1);
    // `try_with` fails only while the thread is being torn down; there is
    // nobody left to read the message then.
    let _ = LAST_ERROR.try_with(|slot| {
        // SAFETY: the buffer is this thread's own; the only pointer into it
        // given out is `last_error_ptr`'s, which C may read only until this
        // thread's next call into the library, and this is such a call.
        let bytes = unsafe { &mut *slot.bytes.get() };
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        bytes[text.len()] = 0;
        slot.set.set(true);
    });
}

/// `text` cut to at most `cap` bytes at a character boundary, ending in
/// "..." when cut.
fn truncated(text: &str, cap: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= cap {
        return text.into();
    }
    let mut end = cap - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end]).into()
}

/// Forgets this thread's last error (every ABI call starts with this).
pub fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|slot| slot.set.set(false));
}

/// This thread's last error as a C string, or NULL.
///
/// The pointer stays valid until this thread's next call into the library,
/// which replaces or clears the stored message.
pub fn last_error_ptr() -> *const c_char {
    LAST_ERROR
        .try_with(|slot| {
            if slot.set.get() {
                slot.bytes.get().cast::<c_char>().cast_const()
            } else {
                std::ptr::null()
            }
        })
        .unwrap_or(std::ptr::null())
}

/// This thread's last error as Rust text (for tests and the CLI).
pub fn last_error() -> Option<String> {
    let p = last_error_ptr();
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` points at the NUL-terminated message in this thread's
    // LAST_ERROR, which is not modified until this thread calls in again.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_error_round_trip_and_clear() {
        clear_last_error();
        assert!(last_error_ptr().is_null());
        set_last_error(&Error::new(ErrorKind::NotFound, "no such file"));
        assert_eq!(last_error().as_deref(), Some("no such file"));
        clear_last_error();
        assert_eq!(last_error(), None);
    }

    #[test]
    fn a_long_message_is_cut_at_a_character_boundary() {
        let long = "é".repeat(LAST_ERROR_CAP);
        set_last_error(&Error::new(ErrorKind::NotFound, long));
        let got = last_error().unwrap();
        assert!(got.len() < LAST_ERROR_CAP, "{}", got.len());
        assert!(got.ends_with("é..."), "{}", &got[got.len() - 8..]);
        set_last_error(&Error::new(ErrorKind::NotFound, "short"));
        assert_eq!(
            last_error().as_deref(),
            Some("short"),
            "no tail of the long one"
        );
    }

    /// The thread-local has no destructor to register (a dlclosed copy of
    /// the library would leave one in unmapped code).
    #[test]
    fn the_last_error_needs_no_destructor() {
        assert!(!std::mem::needs_drop::<LastError>());
    }

    #[test]
    fn nul_in_message_is_escaped_not_dropped() {
        set_last_error(&Error::new(ErrorKind::InvalidArgument, "a\0b"));
        assert_eq!(last_error().as_deref(), Some("a\\0b"));
    }

    #[cfg(unix)] // errno values and POSIX paths
    #[test]
    fn io_error_names_file_path_cause_and_fix() {
        let e = Error::io(
            "open",
            "m.bin",
            std::path::Path::new("/x/m.bin"),
            &io::Error::from_raw_os_error(libc::EACCES),
        );
        let m = e.message();
        assert!(m.contains("m.bin") && m.contains("/x/m.bin"), "{m}");
        assert!(m.contains("ermission denied"), "{m}");
        assert!(m.contains("read permission"), "{m}");
    }
}
