//! The I/O behind a load: find and open the file (its identity decides
//! sharing), then put it into memory with the configured strategy.
//!
//! Under `--cfg loom` this is an in-memory stand-in (a name starting with
//! "fail" fails), so that the model checker explores the registry's real
//! locking and publication code without touching the file system.

#[cfg(not(loom))]
pub(super) use real::*;

#[cfg(not(loom))]
mod real {
    use crate::config::Config;
    use crate::error::Result;
    use crate::locate;
    use crate::request::Request;
    pub(crate) use crate::source::Source;
    pub(crate) use crate::strategy::load;

    /// Finds `req`'s file for the slot at `slot_addr` and opens it; also
    /// returns the search's note for the `info` log, if it has one, for the
    /// caller to write once nobody waits on it.
    pub(crate) fn open(
        req: &Request,
        config: &Config,
        slot_addr: usize,
    ) -> Result<(Source, Option<String>)> {
        // OM_CONSTANT_PATH is read now, at each load, and classified
        // (path_var.rs).
        let dir = config.search_path.current();
        let found = locate::locate(req.fname(), dir.as_ref(), slot_addr)?;
        let fname = req.fname().display().to_string();
        Ok((Source::open(&found.path, &fname, req.size())?, found.note))
    }
}

#[cfg(loom)]
pub(super) use stand_in::*;

/// The model checker's stand-in for the file system.
#[cfg(loom)]
mod stand_in {
    use crate::config::Config;
    use crate::error::{Error, ErrorKind, Result};
    use crate::request::Request;
    use crate::source::FileKey;
    use crate::strategy::{Buffer, HeapBuf, Outcome};

    /// A "file": its name.
    pub(crate) struct Source(String);

    impl Source {
        /// The same name is the same file.
        pub(crate) fn key(&self) -> FileKey {
            let h = self.0.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
            FileKey::synthetic(h)
        }

        /// Its name.
        pub(crate) fn shown(&self) -> String {
            self.0.clone()
        }
    }

    /// Always succeeds, with no note.
    pub(crate) fn open(
        req: &Request,
        _config: &Config,
        _slot_addr: usize,
    ) -> Result<(Source, Option<String>)> {
        Ok((Source(req.fname().display().to_string()), None))
    }

    /// A heap buffer, or an I/O error for names starting with "fail".
    pub(crate) fn load(opened: &Source, size: u64, config: &Config) -> Result<Outcome> {
        if opened.0.starts_with("fail") {
            return Err(Error::new(
                ErrorKind::Io,
                format!("{}: injected failure", opened.0),
            ));
        }
        let heap = HeapBuf::alloc(size as usize, config.huge_pages.wanted())
            .ok_or_else(|| Error::new(ErrorKind::OutOfMemory, "no memory"))?;
        Ok(Outcome {
            buffer: Buffer::from_heap(heap),
            bytes_read: size,
            direct_bytes: 0,
            direct_refused: false,
            read_threads: 1,
            elapsed: std::time::Duration::ZERO,
            read_after_map_failed: false,
            notes: Vec::new(),
        })
    }
}
