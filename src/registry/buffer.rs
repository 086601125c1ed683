//! The file's load, under the slot's: find and open the file, then take a
//! use of the buffer for it: the one already in memory if another slot (or
//! the keep cache) has it, else a new load, run once even if several slots
//! ask at the same time (a second run-once, keyed by file identity and
//! size, under its own `Flight`).
//! The I/O itself is in `io.rs`.

use std::os::raw::c_void;

use super::io;
use super::once::{Flight, Notes};
use super::tables::{BufKey, BufferEntry};
use super::Registry;
use crate::error::Result;
use crate::log::Level;
use crate::request::Request;

impl Registry {
    /// Finds and opens the file, then takes a reference on a buffer for it:
    /// an existing one if another slot (or the keep cache) has it, else a new
    /// load, read once even if several slots ask at the same time. Also
    /// returns the log lines of the load, for the caller to write once the
    /// slot's waiters are woken.
    pub(super) fn buffer_for(
        &self,
        slot_addr: usize,
        req: &Request,
    ) -> Result<(BufKey, *mut c_void, Notes)> {
        let (opened, found_note) = io::open(req, &self.config, slot_addr)?;
        let key = (opened.key(), req.size());
        let pending = loop {
            let mut t = self.lock();
            if let Some(h) = t.buffers.get_mut(&key) {
                h.users += 1;
                let ptr = h.buffer.as_ptr().cast::<c_void>();
                t.uses_in_flight.insert(slot_addr, key);
                drop(t);
                self.counters.shared();
                let mut notes: Notes = found_note.map(|n| (Level::Info, n)).into_iter().collect();
                if Level::Debug <= self.config.log {
                    notes.push((
                        Level::Debug,
                        format!("sharing the buffer of {} already in memory", opened.shown()),
                    ));
                }
                return Ok((key, ptr, notes));
            }
            if let Some(p) = t.loading_files.get(&key) {
                drop(t);
                self.counters.waited();
                self.wait(&p, req)?;
                continue;
            }
            break t.loading_files.start(key);
        };
        // A failure of the file's load is counted once, by the slot's flight.
        let flight = Flight::new(pending, move || self.lock().loading_files.end(&key));
        let loaded = io::load(&opened, req.size(), &self.config);
        // The log line is made now and written after the lock is released.
        let mut loaded = loaded;
        let load_notes = loaded
            .as_mut()
            .map(|l| std::mem::take(&mut l.notes))
            .unwrap_or_default();
        let note = loaded.as_ref().ok().map(|l| {
            self.counters.loaded(l, req.size());
            let threads = match l.read_threads {
                0 | 1 => String::new(),
                n => format!(" ({n} threads)"),
            };
            format!(
                "loaded {} bytes of {} by {}{threads} in {:.3} s",
                req.size(),
                opened.shown(),
                l.buffer.strategy().name(),
                l.elapsed.as_secs_f64()
            )
        });
        let mut t = self.lock();
        t.loading_files.end(&key);
        let out = loaded.map(|l| {
            let ptr = l.buffer.as_ptr().cast::<c_void>();
            t.buffers.insert(
                key,
                BufferEntry {
                    buffer: l.buffer,
                    users: 1,
                    _file: opened,
                },
            );
            t.uses_in_flight.insert(slot_addr, key);
            (key, ptr)
        });
        drop(t);
        flight.settle(out.as_ref().map(|_| ()).map_err(Clone::clone));
        let notes = found_note
            .into_iter()
            .chain(note)
            .map(|n| (Level::Info, n))
            .chain(load_notes)
            .collect();
        out.map(|(key, ptr)| (key, ptr, notes))
    }
}
