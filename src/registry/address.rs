//! The offset rules of `om_get_external_constant_addr`: the base slot must
//! hold a buffer of this registry, and the offset must lie within it, both
//! read under the lock.

use std::os::raw::c_void;
use std::sync::atomic::Ordering;

use super::slot::{Slot, SlotState};
use super::Registry;
use crate::error::{Error, ErrorKind, Result};
use crate::sync::AtomicPtr;

impl Registry {
    /// Sets `*out` to `*base + offset` unless `*out` is already set.
    /// `base` must be a slot loaded by this registry and `offset` within its
    /// buffer. The slot, its buffer and the length are read under the lock,
    /// so a release racing this call cannot let an unchecked offset through.
    pub fn constant_address(
        &self,
        out: &AtomicPtr<c_void>,
        base: &AtomicPtr<c_void>,
        offset: i64,
    ) -> Result<()> {
        if !out.load(Ordering::Acquire).is_null() {
            return Ok(());
        }
        let b = Slot::new(base);
        let (p, len) = {
            let t = self.lock();
            let state = b.state();
            let held = match state {
                SlotState::Holds(p) => t
                    .slots
                    .get(&b.addr())
                    .filter(|e| e.ptr == p as usize)
                    .and_then(|e| t.buffers.get(&e.buf))
                    .map(|h| (p, h.buffer.len())),
                _ => None,
            };
            held.ok_or_else(|| {
                let what = match state {
                    SlotState::Empty => "holds no buffer".to_string(),
                    SlotState::Loading => "is still being loaded".to_string(),
                    SlotState::Holds(p) => {
                        format!("holds {p:p}, which this library did not give it")
                    }
                };
                Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "constant address requested from slot {:#x}, which {what}; load the \
                         constants (om_load_constants_from_file) into that slot first",
                        b.addr()
                    ),
                )
            })?
        };
        if offset < 0 || offset as u64 > len as u64 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "constant offset {offset} is outside the loaded buffer ({len} bytes); the \
                     model and its constants file do not match: recompile or copy the \
                     matching file"
                ),
            ));
        }
        let addr = p
            .cast::<u8>()
            .wrapping_add(offset as usize)
            .cast::<c_void>();
        // Several threads may race to set the same constant to the same
        // address; the first wins and the rest agree.
        let _ = out.compare_exchange(
            std::ptr::null_mut(),
            addr,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        Ok(())
    }
}
