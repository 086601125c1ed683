//! The [`Registry`] and its tables, only ever touched under its lock: which
//! slot holds which buffer, the buffers in memory, and the loads in flight.
//! Each count has one owner: a slot's references are in its [`SlotEntry`];
//! a buffer's users (the slot entries holding it) in its [`BufferEntry`].
//! Its operations are in the files above this one.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;

use std::sync::PoisonError;

use super::flight::files::Source;
use super::flight::{Flights, Pending};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::log::{self, Level};
use crate::request::Request;
use crate::source::FileKey;
use crate::stats::Counters;
use crate::strategy::Buffer;
use crate::sync::{Mutex, MutexGuard};

/// The slots, buffers and counters of one process (see
/// [`crate::global()`]), or of one test.
pub struct Registry {
    pub(super) config: Config,
    tables: Mutex<Tables>,
    pub(super) counters: Counters,
}

impl Registry {
    /// An empty registry with these options.
    pub fn new(config: Config) -> Registry {
        Registry {
            config,
            tables: Mutex::new(Tables::default()),
            counters: Counters::default(),
        }
    }

    /// Its options.
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Tables> {
        // A panic while locked is caught at the ABI; the tables are updated
        // in single statements, so they are consistent and still usable.
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn log(&self, level: Level, msg: impl FnOnce() -> String) {
        if level <= self.config.log {
            log::emit(self.config.log, level, &msg());
        }
    }

    /// Waits, unlocked, for another thread's load of `what` (a slot's or a
    /// file's), counting the wait and a timeout.
    pub(super) fn wait_for(&self, pending: &Pending, what: &str) -> Result<()> {
        self.counters.waited();
        let r = pending.wait(self.config.wait_timeout, what);
        if matches!(&r, Err(e) if e.kind() == ErrorKind::Timeout) {
            self.counters.timed_out();
        }
        r
    }
}

/// A buffer is shared by slots that load the same file with the same size.
pub(super) type BufKey = (FileKey, u64);

/// A slot that holds a buffer: the one owner of the slot's reference count.
pub(super) struct SlotEntry {
    pub(super) buf: BufKey,
    pub(super) ptr: usize,
    /// References held on this slot (acquires, plus ensure-loaded's one).
    pub(super) refs: u64,
    /// The file name and size the slot was loaded with: a later call on the
    /// loaded slot must ask for the same.
    pub(super) fname: OsString,
    pub(super) size: u64,
}

impl SlotEntry {
    /// An error unless `req` asks for what this slot holds.
    pub(super) fn check(&self, addr: usize, req: &Request) -> Result<()> {
        if self.fname.as_os_str() == req.fname && self.size == req.size {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Mismatch,
            format!(
                "slot {addr:#x} already holds constants file '{}' ({} bytes), but this call \
                 asks for '{}' ({} bytes); a slot holds one file of one size: the model and \
                 its constants do not match, or two models share one slot. Nothing was \
                 changed",
                Path::new(&self.fname).display(),
                self.size,
                req.fname().display(),
                req.size
            ),
        ))
    }
}

/// A buffer in memory: the one owner of the count of slots using it.
pub(super) struct BufferEntry {
    pub(super) buffer: Buffer,
    /// Slots that hold this buffer, or are about to (a load that found it
    /// shared); 0 for a buffer kept by `OM_CONSTANT_KEEP`.
    pub(super) users: u64,
    /// The open file the buffer came from, kept open while the buffer
    /// lives (see the module docs).
    pub(super) _file: std::sync::Arc<Source>,
}

/// Everything the registry's lock guards.
#[derive(Default)]
pub(super) struct Tables {
    pub(super) slots: HashMap<usize, SlotEntry>,
    pub(super) buffers: HashMap<BufKey, BufferEntry>,
    pub(super) loading_slots: Flights<usize>,
    pub(super) loading_files: Flights<BufKey>,
    /// Uses of a buffer taken by a slot's load (counted in its `BufferEntry`) that
    /// the slot is not yet recorded as holding: the lock is let go between
    /// the two, so a child forked there must give them back (`fork.rs`).
    pub(super) uses_in_flight: HashMap<usize, BufKey>,
}

impl Tables {
    /// One user less for the buffer `key` (a slot stopped using it); returns the buffer and its
    /// open file if they must be freed. The caller drops them after
    /// unlocking: unmapping and closing are I/O (a `close` on NFS can take
    /// seconds), and nothing may wait on them under the lock.
    pub(super) fn remove_user(&mut self, key: BufKey, keep: bool) -> Option<BufferEntry> {
        let entry = self.buffers.get_mut(&key)?;
        // Each use belongs to one slot entry (or one load adopting the
        // buffer), so this never goes below zero.
        debug_assert!(entry.users > 0, "a buffer lost more users than it had");
        entry.users -= 1;
        if entry.users == 0 && !keep {
            return self.buffers.remove(&key);
        }
        None
    }
}
