//! The operating system, behind safe functions: every system call of the
//! library is in this folder, with its `SAFETY` note; the rest of the crate
//! calls these functions. One file per OS family: `unix.rs` now, a sibling
//! per platform later.
//!
//! In the fault-injection build (feature `fault-injection`, tests only),
//! `faulty.rs` decorates the calls that can fail in interesting ways: each
//! consults the faults in force (`crate::fault`) before it calls through.
//! The library that ships has no such layer.

mod unix;

#[cfg(feature = "fault-injection")]
mod faulty;

pub(crate) use unix::{
    advise_file, advise_huge_pages, advise_will_need, dealloc, join, map_shared_writable,
    map_whole_file, object_at, open_read_nonblocking, page_size, pin_object_at, process_exists,
    protect_read_only, spawn, unlock_memory, write_stderr, Access, Job, Reservation, ThreadId,
    PATH_MAX,
};

#[cfg(not(loom))]
pub(crate) use unix::at_fork;

#[cfg(not(feature = "fault-injection"))]
pub(crate) use unix::{
    alloc, allocate, lock_memory, map_file, map_piece, open_direct, pread, write_all_at,
};

#[cfg(feature = "fault-injection")]
pub(crate) use faulty::{
    alloc, allocate, lock_memory, map_file, map_piece, open_direct, pread, write_all_at,
};
