//! The operating system, behind safe functions: every system call of the
//! library is in this folder, with its `SAFETY` note; the rest of the crate
//! calls these functions. One file per OS family (`unix.rs`, `windows.rs`),
//! each with the same functions, `portable.rs` for what is the same
//! everywhere (memmap2's mappings, shared types), and
//! `facts.rs` for what Linux tells in text files (mounts, memory cgroups,
//! huge-page settings), read with `std::fs` alone.
//!
//! In the fault-injection build (feature `fault-injection`, tests only, on
//! Unix), `faulty.rs` decorates the calls that can fail in interesting
//! ways: each consults the faults in force (`crate::fault`) before it calls
//! through. The library that ships has no such layer.

mod facts;
mod portable;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as os;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as os;

#[cfg(feature = "fault-injection")]
mod faulty;

pub(crate) use os::{
    address_space_limit, advise_file, advise_huge_pages, advise_will_need, cached_pages, collapse,
    create_new, detach_thread, evict_range, file_stamp, file_system_size, huge_backed_bytes,
    is_a_link, is_size_limit_error, object_at, open_no_follow, open_read_nonblocking, page_size,
    path_from_c, pin_library, pin_object_at, populate, protect_read_only, refuses_direct_io,
    release_thread, resident_map, spawn, special_kind, thp_mode, thread_self, try_lock_exclusive,
    unlock_memory, untrusted, volume_of, write_back_range, write_stderr, CancelOff, ThreadId,
    PATH_MAX,
};
pub(crate) use portable::{
    map_shared_writable, map_whole_file, touch_pages, Access, FileStamp, Job, Volume, HUGE_PAGE,
};

pub(crate) use facts::{memory_headroom, mount_of, shmem_mode};
pub(crate) use os::dealloc;
pub(crate) use os::{Reservation, ONE_PIECE_ONLY};

#[cfg(not(loom))]
pub(crate) use os::at_fork;

#[cfg(not(feature = "fault-injection"))]
pub(crate) use os::alloc;
#[cfg(not(feature = "fault-injection"))]
pub(crate) use os::map_piece;
#[cfg(not(feature = "fault-injection"))]
pub(crate) use os::{allocate, lock_memory, open_direct, pread, write_all_at};

#[cfg(feature = "fault-injection")]
pub(crate) use faulty::{
    alloc, allocate, lock_memory, map_piece, open_direct, pread, write_all_at,
};
