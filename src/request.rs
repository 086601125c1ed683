//! A load call's arguments, checked: a file name, a positive size, and a
//! byte order that matches this machine. Built by the C boundary from raw
//! arguments (`ffi/args.rs`) and by Rust callers directly.

use std::ffi::OsStr;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

/// A checked request to load a constants file.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub(crate) fname: &'a OsStr,
    pub(crate) size: u64,
}

impl<'a> Request<'a> {
    /// Checks the arguments of a load call: `size > 0`, the byte order
    /// (any non-zero `is_le` means little-endian, as in onnx-mlir) matches
    /// the host, a non-empty name.
    pub fn new(fname: &'a OsStr, size: i64, is_le: i64) -> Result<Request<'a>> {
        let name = fname.to_string_lossy();
        if fname.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "the constants file name is empty; the model must name its constants file",
            ));
        }
        // No path can be longer; refusing here also keeps messages short.
        if fname.len() >= crate::sys::PATH_MAX {
            let head: String = name.chars().take(64).collect();
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "the constants file name '{head}...' is {} bytes long, longer than any path \
                     can be (PATH_MAX is {}); the model names its file wrongly",
                    fname.len(),
                    crate::sys::PATH_MAX
                ),
            ));
        }
        if size <= 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "invalid size {size} for constants file '{name}': the size must be the \
                     positive number of bytes the model expects"
                ),
            ));
        }
        // onnx-mlir's convention: any non-zero is_le means little-endian.
        let file_le = is_le != 0;
        if file_le != cfg!(target_endian = "little") {
            let order = |le: bool| if le { "little-endian" } else { "big-endian" };
            return Err(Error::new(
                ErrorKind::ByteOrder,
                format!(
                    "the model passed is_le={is_le} for constants file '{name}', which says \
                     its data is {}, but this machine is {}: the model was compiled for \
                     another byte order; recompile it for this machine (is_le is non-zero \
                     for little-endian data, 0 for big-endian)",
                    order(file_le),
                    order(!file_le)
                ),
            ));
        }
        Ok(Request {
            fname,
            size: size as u64,
        })
    }

    /// The file name as the model gave it.
    pub fn fname(&self) -> &Path {
        Path::new(self.fname)
    }

    /// The number of bytes the model expects.
    pub fn size(&self) -> u64 {
        self.size
    }
}
