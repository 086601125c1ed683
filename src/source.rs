//! Opening the constants file and checking it before any memory is committed.
//!
//! The file is opened with `O_NONBLOCK` so that a FIFO (or a device) given by
//! mistake is refused at once instead of blocking the model forever in
//! `open`; for regular files the flag has no effect on Linux. Its identity
//! (device, inode, length, mtime, ctime) is what lets two slots share one
//! buffer; the registry keeps the file open while its buffer lives, so the
//! inode cannot be reused by a replacement meanwhile.

use std::fs::{File, Metadata};
use std::path::{Path, PathBuf};

use crate::error::{self, Error, ErrorKind, Result};
use crate::sys;

/// What makes two opens "the same file" for sharing a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileKey {
    /// Volume, file number, mtime and ctime. The ctime changes on any
    /// write or metadata change and cannot be set back by tools that
    /// restore mtime (`cp -p`, tar, SOURCE_DATE_EPOCH builds).
    stamp: sys::FileStamp,
    len: u64,
}

impl FileKey {
    /// The key of a file with this stamp and length.
    pub(crate) fn new(stamp: sys::FileStamp, len: u64) -> FileKey {
        FileKey { stamp, len }
    }

    fn of(file: &File, meta: &Metadata) -> std::io::Result<FileKey> {
        Ok(FileKey::new(sys::file_stamp(file, meta)?, meta.len()))
    }

    /// True when `file` is the same file (volume and file number: device
    /// and inode on POSIX).
    pub(crate) fn same_file(&self, file: &File) -> std::io::Result<bool> {
        let other = sys::file_stamp(file, &file.metadata()?)?;
        Ok(self.stamp.volume == other.volume && self.stamp.index == other.index)
    }
}

/// An open, checked constants file.
#[derive(Debug)]
pub(crate) struct Source {
    /// The open file (read-only, close-on-exec).
    pub file: File,
    /// The path it was opened at.
    pub path: PathBuf,
    /// The name the model asked for, for messages.
    pub fname: String,
    /// Its identity for sharing.
    pub key: FileKey,
}

/// In the fault-injection build, a slow `close` (`close_delay_ms`).
#[cfg(feature = "fault-injection")]
impl Drop for Source {
    fn drop(&mut self) {
        let delay = crate::fault::get().close_delay_ms;
        std::thread::sleep(std::time::Duration::from_millis(delay));
    }
}

impl Source {
    /// Its identity, for sharing.
    pub(crate) fn key(&self) -> FileKey {
        self.key
    }

    /// Where it was found, for messages.
    pub(crate) fn shown(&self) -> String {
        self.path.display().to_string()
    }

    /// Opens `path` (found for the model's `fname`) and checks that it is a
    /// regular file of at least `size` bytes.
    pub(crate) fn open(path: &Path, fname: &str, size: u64) -> Result<Source> {
        let opened = sys::open_read_nonblocking(path);
        // Windows refuses to open a folder as a file ("access denied"):
        // say what the path really is, as POSIX systems let us.
        let not_a_file = |meta: &Metadata| {
            Error::new(
                ErrorKind::NotAFile,
                format!(
                    "constants file {} is {}, not a regular file; \
                     point the model (or OM_CONSTANT_PATH) at the real constants file",
                    error::file(fname, path),
                    describe(meta)
                ),
            )
        };
        let file = match opened {
            Ok(file) => file,
            Err(e) => {
                return Err(match std::fs::metadata(path) {
                    Ok(meta) if !meta.is_file() => not_a_file(&meta),
                    _ => Error::io("open", fname, path, &e),
                })
            }
        };
        let meta = file
            .metadata()
            .map_err(|e| Error::io("inspect (fstat)", fname, path, &e))?;
        if !meta.file_type().is_file() {
            return Err(not_a_file(&meta));
        }
        if meta.len() < size {
            return Err(Error::new(
                ErrorKind::TooShort,
                format!(
                    "constants file {} has {} bytes but the model needs {size}; \
                     the file is truncated or belongs to another build of the model: \
                     copy the constants file that was compiled with this model",
                    error::file(fname, path),
                    meta.len()
                ),
            ));
        }
        let key = FileKey::of(&file, &meta)
            .map_err(|e| Error::io("inspect (identity)", fname, path, &e))?;
        Ok(Source {
            file,
            path: path.to_path_buf(),
            fname: fname.to_string(),
            key,
        })
    }
}

/// What a non-regular file is, for messages ("a FIFO (named pipe)").
pub(crate) fn describe(meta: &Metadata) -> &'static str {
    if meta.is_dir() {
        "a directory"
    } else {
        sys::special_kind(meta).unwrap_or("not a regular file")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("om-source-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn regular_file_of_enough_bytes_opens() {
        let dir = tmp("ok");
        let p = dir.join("c.bin");
        std::fs::write(&p, [1u8; 100]).unwrap();
        let s = Source::open(&p, "c.bin", 100).unwrap();
        assert_eq!(s.file.metadata().unwrap().len(), 100);
        let again = Source::open(&p, "c.bin", 10).unwrap();
        assert_eq!(s.key, again.key, "same file, same key");
        drop((s, again)); // Windows removes no folder with open files.
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn short_file_directory_and_fifo_are_refused() {
        let dir = tmp("bad");
        let p = dir.join("c.bin");
        std::fs::write(&p, [1u8; 10]).unwrap();
        let e = Source::open(&p, "c.bin", 11).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TooShort);
        assert!(
            e.message().contains("has 10 bytes but the model needs 11"),
            "{e}"
        );

        let e = Source::open(&dir, "d", 1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotAFile);
        assert!(e.message().contains("a directory"), "{e}");

        #[cfg(unix)]
        {
            let fifo = dir.join("fifo");
            let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
            // SAFETY: `c` is a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            let e = Source::open(&fifo, "fifo", 1).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NotAFile);
            assert!(e.message().contains("FIFO"), "{e}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
