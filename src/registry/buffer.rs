//! The file's load, under the slot's: find and open the file, then take a
//! use of the buffer for it: the one already in memory if another slot (or
//! the keep cache) has it, else a new load, run once even if several slots
//! ask at the same time: the run-once protocol (`flight.rs`) keyed by the
//! file's identity and size.

use std::os::raw::c_void;
// std's, not `crate::sync`'s: a shared handle, never a point of
// synchronisation.
use std::sync::Arc;

use super::flight::files::{self, Source};
use super::flight::{run_once, Flights, Look, Once, Pending};
use super::tables::{BufKey, BufferEntry, Registry, Tables};
use crate::error::Result;
use crate::log::{Level, Notes};
use crate::request::Request;
use crate::strategy::Outcome;
use crate::sync::MutexGuard;

impl Registry {
    /// Finds and opens the file, then takes a use of a buffer for it for
    /// the slot at `slot_addr`. Also returns the log lines of the load, for
    /// the caller to write once the slot's waiters are woken.
    pub(super) fn buffer_for(
        &self,
        slot_addr: usize,
        req: &Request,
    ) -> Result<(BufKey, *mut c_void, Notes)> {
        let mut notes = Notes::default();
        let opened = files::open(req, &self.config, slot_addr, &mut notes)?;
        let job = FileLoad {
            reg: self,
            key: (opened.key(), req.size()),
            opened: Arc::new(opened),
            slot_addr,
            req,
        };
        let (key, ptr, more) = run_once(&job)?;
        notes.append(more);
        // `job` goes here, unlocked: a file a shared buffer made unneeded
        // is closed now.
        Ok((key, ptr, notes))
    }
}

/// One file's load, keyed by its identity and size.
struct FileLoad<'a> {
    reg: &'a Registry,
    key: BufKey,
    /// The open file, kept by the buffer's entry if this load makes one.
    opened: Arc<Source>,
    slot_addr: usize,
    req: &'a Request<'a>,
}

impl Once for FileLoad<'_> {
    type Tables = Tables;
    type Key = BufKey;
    type Value = (BufKey, *mut c_void, Notes);
    type Start = ();
    type Loaded = Result<Outcome>;
    type Later = ();
    type Unused = ();

    fn key(&self) -> BufKey {
        self.key
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.reg.lock()
    }

    fn flights(t: &mut Tables) -> &mut Flights<BufKey> {
        &mut t.loading_files
    }

    fn look(&self, t: &mut Tables) -> Result<Look<Self::Value, ()>> {
        let reg = self.reg;
        if let Some(h) = t.buffers.get_mut(&self.key) {
            h.users += 1;
            let ptr = h.buffer.as_ptr().cast::<c_void>();
            t.uses_in_flight.insert(self.slot_addr, self.key);
            reg.counters.shared();
            let mut notes = Notes::default();
            if Level::Debug <= reg.config.log {
                notes.push(
                    Level::Debug,
                    format!(
                        "sharing the buffer of {} already in memory",
                        self.opened.shown()
                    ),
                );
            }
            return Ok(Look::Found((self.key, ptr, notes)));
        }
        Ok(match t.loading_files.get(&self.key) {
            Some(p) => Look::Wait(p),
            None => Look::Start(()),
        })
    }

    fn wait(&self, pending: &Pending) -> Result<()> {
        let what = format!("constants file '{}'", self.req.fname().display());
        self.reg.wait_for(pending, &what)
    }

    fn load(&self, (): ()) -> Result<Outcome> {
        let reg = self.reg;
        let mut l = files::load(&self.opened, self.req.size(), &reg.config)?;
        // A failure is counted once, by the slot's load.
        reg.counters.loaded(&l, self.req.size());
        let threads = match l.read_threads {
            0 | 1 => String::new(),
            n => format!(" ({n} threads)"),
        };
        let mut notes = Notes::default();
        notes.push(
            Level::Info,
            format!(
                "loaded {} bytes of {} by {}{threads} in {:.3} s",
                self.req.size(),
                self.opened.shown(),
                l.buffer.strategy().name(),
                l.elapsed.as_secs_f64()
            ),
        );
        notes.append(std::mem::take(&mut l.notes));
        l.notes = notes;
        Ok(l)
    }

    fn record(&self, t: &mut Tables, loaded: Result<Outcome>) -> (Result<Self::Value>, ()) {
        let out = loaded.map(|l| {
            let ptr = l.buffer.as_ptr().cast::<c_void>();
            t.buffers.insert(
                self.key,
                BufferEntry {
                    buffer: l.buffer,
                    users: 1,
                    _file: Arc::clone(&self.opened),
                },
            );
            t.uses_in_flight.insert(self.slot_addr, self.key);
            (self.key, ptr, l.notes)
        });
        (out, ())
    }

    fn after(&self, (): (), _: &mut Result<Self::Value>) {}

    fn abandon(&self, _: &mut Tables) {}
}
