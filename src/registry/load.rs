//! Acquire and ensure-loaded: the driver over the slot's states (one
//! match: loaded, empty, loading), and the two loads it may start, the
//! slot's and the file's, each under a `Flight` (`slot.rs`).

use std::os::raw::c_void;

use super::tables::{BufKey, Held, SlotEntry};
use super::{not_our_load, not_ours, Mode, Registry};
use crate::error::{ErrorKind, Result};
use crate::loader;
use crate::log::Level;
use crate::request::Request;
use crate::slot::{Flight, Pending, Slot, State};
use crate::sync::AtomicPtr;

/// Log lines made during a load, written once its waiters are woken.
type Notes = Vec<(Level, String)>;

impl Registry {
    pub(super) fn get(
        &self,
        cell: &AtomicPtr<c_void>,
        req: &Request,
        mode: Mode,
    ) -> Result<*mut c_void> {
        let slot = Slot::new(cell);
        let addr = slot.addr();
        loop {
            slot.spin_while_loading();
            let mut t = self.lock();
            let from = match slot.state() {
                State::Loaded(p) => {
                    if let Some(e) = t.slots.get_mut(&addr).filter(|e| e.ptr == p as usize) {
                        e.check(addr, req)?;
                        if mode == Mode::Acquire {
                            e.refs += 1;
                        }
                        return Ok(p);
                    }
                    if mode == Mode::Ensure {
                        // As the fast path does: a loaded slot is trusted.
                        return Ok(p);
                    }
                    // A value this library did not write: refused, and the
                    // slot left as it was (the caller's, or another
                    // loader's, memory is not ours to replace).
                    return Err(not_ours(addr, p));
                }
                State::Empty => std::ptr::null_mut(),
                State::Loading => {
                    // A load's claim and its pending are made, and its end
                    // is published and the pending removed, under this lock:
                    // LOADING with no pending is no load of ours.
                    let Some(pending) = t.loading_slots.get(&addr) else {
                        return Err(not_our_load(addr));
                    };
                    drop(t);
                    self.counters.waited();
                    self.log(Level::Debug, || {
                        format!(
                            "waiting for another thread to load '{}'",
                            req.fname().display()
                        )
                    });
                    self.wait(&pending, req)?;
                    continue;
                }
            };
            if !slot.claim(from) {
                continue;
            }
            // The slot was empty: whatever the registry had for this
            // address belongs to a model that is gone (README "For compiler
            // authors"), so its references go too.
            let stale = t.slots.remove(&addr);
            let freed = stale.and_then(|e| t.unuse(e.buf, self.config.keep));
            let pending = t.loading_slots.start(addr);
            drop(t);
            // Waiters may already wait on this load: the old buffer is
            // unmapped and its file closed, and the line written, after
            // they are woken (`load_into`).
            return self.load_into(slot, req, pending, freed);
        }
    }

    fn wait(&self, pending: &Pending, req: &Request) -> Result<()> {
        let what = format!("constants file '{}'", req.fname().display());
        let r = pending.wait(self.config.wait_timeout, &what);
        if matches!(&r, Err(e) if e.kind() == ErrorKind::Timeout) {
            self.counters.timed_out();
        }
        r
    }

    /// This thread owns the slot's load: do it, publish, wake the waiters.
    /// `stale` is a buffer a gone model left in this slot, freed at the end.
    fn load_into(
        &self,
        slot: Slot,
        req: &Request,
        pending: crate::sync::Arc<Pending>,
        stale: Option<Held>,
    ) -> Result<*mut c_void> {
        let addr = slot.addr();
        let flight = Flight::new(pending, move || {
            let mut t = self.lock();
            t.loading_slots.end(&addr);
            // A use the load took and never recorded (it panicked between).
            let unused = t
                .uses_in_flight
                .remove(&addr)
                .and_then(|key| t.unuse(key, self.config.keep));
            slot.publish(std::ptr::null_mut());
            drop(t);
            drop(unused);
            self.counters.failed();
        });
        let result = self.load_buffer(addr, req);
        #[cfg(feature = "fault-injection")]
        std::thread::sleep(std::time::Duration::from_millis(
            crate::fault::get().record_delay_ms,
        ));
        let mut notes = Notes::new();
        let mut t = self.lock();
        let out = match result {
            Ok((key, ptr, n)) => {
                notes = n;
                t.uses_in_flight.remove(&addr);
                t.slots.insert(
                    slot.addr(),
                    SlotEntry {
                        buf: key,
                        ptr: ptr as usize,
                        refs: 1,
                        fname: req.fname.to_os_string(),
                        size: req.size,
                    },
                );
                slot.publish(ptr);
                Ok(ptr)
            }
            Err(e) => {
                self.counters.failed();
                slot.publish(std::ptr::null_mut());
                Err(e)
            }
        };
        t.loading_slots.end(&addr);
        drop(t);
        flight.settle(out.as_ref().map(|_| ()).map_err(Clone::clone));
        // Now that nobody waits on this load: free what a gone model left,
        // and write the lines.
        if let Some(old) = stale {
            drop(old);
            self.counters.freed(1);
            notes.push((
                Level::Info,
                format!("slot {addr:#x} was reused without a release; freed its old buffer"),
            ));
        }
        for (level, note) in notes {
            self.log(level, || note);
        }
        out
    }

    /// Finds and opens the file, then takes a reference on a buffer for it:
    /// an existing one if another slot (or the keep cache) has it, else a new
    /// load, read once even if several slots ask at the same time. Also
    /// returns the log lines of the load, for the caller to write once the
    /// slot's waiters are woken.
    fn load_buffer(&self, slot_addr: usize, req: &Request) -> Result<(BufKey, *mut c_void, Notes)> {
        let (opened, found_note) = loader::open(req, &self.config, slot_addr)?;
        let key = (opened.key(), req.size());
        let pending = loop {
            let mut t = self.lock();
            if let Some(h) = t.buffers.get_mut(&key) {
                h.users += 1;
                let ptr = h.buffer.as_ptr().cast::<c_void>();
                t.uses_in_flight.insert(slot_addr, key);
                drop(t);
                self.counters.shared();
                let mut notes: Vec<(Level, String)> =
                    found_note.map(|n| (Level::Info, n)).into_iter().collect();
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
        let loaded = loader::load(&opened, req.size(), &self.config);
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
                Held {
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
