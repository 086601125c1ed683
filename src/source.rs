//! Opening the constants file and checking it before any memory is committed.
//!
//! The file is opened with `O_NONBLOCK` so that a FIFO (or a device) given by
//! mistake is refused at once instead of blocking the model forever in
//! `open`; for regular files the flag has no effect on Linux. Its identity
//! (device, inode, length, mtime, ctime) is what lets two slots share one
//! buffer; the registry keeps the file open while its buffer lives, so the
//! inode cannot be reused by a replacement meanwhile.

use std::fs::{File, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{self, Error, ErrorKind, Result};
use crate::sys;

/// What makes two opens "the same file" for sharing a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    /// Changes on any write or metadata change and cannot be set back by
    /// tools that restore mtime (`cp -p`, tar, SOURCE_DATE_EPOCH builds).
    ctime_ns: i128,
}

impl FileKey {
    /// A key that is not a file's (the model checker's stand-in files).
    #[cfg(loom)]
    pub fn synthetic(n: u64) -> FileKey {
        FileKey {
            dev: 0,
            ino: n,
            len: 0,
            mtime_ns: 0,
            ctime_ns: 0,
        }
    }

    fn of(meta: &Metadata) -> FileKey {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }

    /// True when `meta` describes the same inode (device and inode number).
    pub fn same_inode(&self, meta: &Metadata) -> bool {
        self.dev == meta.dev() && self.ino == meta.ino()
    }
}

/// An open, checked constants file.
#[derive(Debug)]
pub struct Source {
    /// The open file (read-only, close-on-exec).
    pub file: File,
    /// The path it was opened at.
    pub path: PathBuf,
    /// The name the model asked for, for messages.
    pub fname: String,
    /// Its identity for sharing.
    pub key: FileKey,
}

impl Source {
    /// Its identity, for sharing.
    pub fn key(&self) -> FileKey {
        self.key
    }

    /// Where it was found, for messages.
    pub fn shown(&self) -> String {
        self.path.display().to_string()
    }

    /// Opens `path` (found for the model's `fname`) and checks that it is a
    /// regular file of at least `size` bytes.
    pub fn open(path: &Path, fname: &str, size: u64) -> Result<Source> {
        let file =
            sys::open_read_nonblocking(path).map_err(|e| Error::io("open", fname, path, &e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io("inspect (fstat)", fname, path, &e))?;
        if !meta.file_type().is_file() {
            return Err(Error::new(
                ErrorKind::NotAFile,
                format!(
                    "constants file {} is {}, not a regular file; \
                     point the model (or OM_CONSTANT_PATH) at the real constants file",
                    error::file(fname, path),
                    describe(&meta)
                ),
            ));
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
        Ok(Source {
            file,
            path: path.to_path_buf(),
            fname: fname.to_string(),
            key: FileKey::of(&meta),
        })
    }
}

/// What a non-regular file is, for messages ("a FIFO (named pipe)").
pub fn describe(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
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

        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = Source::open(&fifo, "fifo", 1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotAFile);
        assert!(e.message().contains("FIFO"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
