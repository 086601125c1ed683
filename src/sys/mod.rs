//! The operating system, behind safe functions: every system call of the
//! library is in this folder, with its `SAFETY` note; the rest of the crate
//! calls these functions. One file per OS family (`unix.rs`, `windows.rs`),
//! each with the same functions in the same sections; the calls only Linux
//! has in `linux.rs`, with their one fallback for every other OS in
//! `elsewhere.rs`; `portable.rs` for what is the same everywhere (memmap2's
//! mappings, shared types), and `facts.rs` for what Linux tells in text
//! files (mounts, memory cgroups, huge-page settings), read with `std::fs`
//! alone.
//!
//! What each of those files must supply is the list below: every function
//! with the signature the compiler holds it to, on whichever OS it builds.
//!
//! In the fault-injection build (feature `fault-injection`, tests only, on
//! Unix), `faulty.rs` decorates the calls that can fail in interesting
//! ways: each consults the faults in force (`crate::fault`) before it calls
//! through. The library that ships has no such layer.

use std::alloc::Layout;
use std::fs::{File, Metadata};
use std::io;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use memmap2::MmapRaw;

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

#[cfg(any(target_os = "linux", target_os = "android"))]
mod linux;
#[cfg(any(target_os = "linux", target_os = "android"))]
use linux as kernel;

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod elsewhere;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
use elsewhere as kernel;

#[cfg(feature = "fault-injection")]
mod faulty;

/// Re-exports each function of `$from` after checking it has the signature
/// given; an attribute applies to the re-export (a decorated call is
/// re-exported from `faulty.rs` instead).
macro_rules! supplies {
    ($from:ident { $($(#[$attr:meta])* $name:ident: $ty:ty;)* }) => {
        $(
            const _: $ty = $from::$name;
            $(#[$attr])*
            pub(crate) use $from::$name;
        )*
    };
}

pub(crate) use os::{CancelOff, MapRange, ThreadId};
const _: fn() -> CancelOff = CancelOff::new;
const _: fn(usize, usize) -> io::Result<MapRange> = MapRange::new;
const _: fn(&MapRange) -> *mut u8 = MapRange::as_ptr;
/// The longest path the system accepts.
pub(crate) const PATH_MAX: usize = os::PATH_MAX;
/// True where a file is mapped as one piece only (`strategy/mapping.rs`).
pub(crate) const ONE_PIECE_ONLY: bool = os::ONE_PIECE_ONLY;

// What `unix.rs` and `windows.rs` supply, section by section.
supplies!(os {
    // memory
    #[cfg(not(feature = "fault-injection"))]
    alloc: fn(Layout) -> Option<NonNull<u8>>;
    dealloc: unsafe fn(NonNull<u8>, Layout);
    page_size: fn() -> usize;
    advise_will_need: fn(*mut u8, usize);
    #[cfg(not(feature = "fault-injection"))]
    lock_memory: fn(*mut u8, usize) -> io::Result<()>;
    unlock_memory: fn(*mut u8, usize);
    address_space_limit: fn() -> Option<u64>;
    // files
    open_read_nonblocking: fn(&Path) -> io::Result<File>;
    open_no_follow: fn(&Path) -> io::Result<File>;
    is_a_link: fn(&io::Error) -> bool;
    untrusted: fn(&Metadata) -> Option<String>;
    create_new: fn(&Path) -> io::Result<File>;
    file_stamp: fn(&File, &Metadata) -> io::Result<FileStamp>;
    special_kind: fn(&Metadata) -> Option<&'static str>;
    path_from_c: fn(&[u8]) -> Option<&Path>;
    #[cfg(not(feature = "fault-injection"))]
    pread: fn(&File, &mut [u8], u64) -> io::Result<usize>;
    #[cfg(not(feature = "fault-injection"))]
    write_all_at: fn(&File, &[u8], u64) -> io::Result<()>;
    is_size_limit_error: fn(i32) -> bool;
    file_system_size: fn(&Path) -> io::Result<u64>;
    try_lock_exclusive: fn(&File) -> io::Result<bool>;
    // mappings
    protect_read_only: fn(&MmapRaw) -> io::Result<()>;
    #[cfg(not(feature = "fault-injection"))]
    map_piece: fn(&MapRange, &File, usize, usize) -> io::Result<()>;
    // threads
    thread_self: fn() -> u64;
    spawn: unsafe fn(Job<'static>) -> Result<ThreadId, Job<'static>>;
    release_thread: fn(ThreadId);
    detach_thread: fn(ThreadId);
    at_fork: fn(extern "C" fn(), extern "C" fn(), extern "C" fn());
    // the loader
    object_at: fn(usize) -> Option<(usize, Option<PathBuf>)>;
    pin_object_at: fn(usize);
    pin_library: fn();
    // stderr
    write_stderr: fn(&[u8]);
});

// What `linux.rs` and `elsewhere.rs` supply.
supplies!(kernel {
    advise_huge_pages: fn(*mut u8, usize);
    populate: fn(*mut u8, usize) -> io::Result<()>;
    #[cfg(not(feature = "fault-injection"))]
    open_direct: fn(&Path) -> io::Result<File>;
    refuses_direct_io: fn(&io::Error) -> bool;
    advise_file: fn(&File, usize, usize, Access);
    #[cfg(not(feature = "fault-injection"))]
    allocate: fn(&File, u64, u64) -> io::Result<()>;
    thp_mode: fn() -> Option<String>;
    huge_backed_bytes: fn(*const u8, usize) -> io::Result<u64>;
    resident_map: fn(*const u8, usize) -> io::Result<Vec<u8>>;
    cached_pages: fn(&File, u64) -> Option<u64>;
    collapse: fn(*mut u8, usize) -> io::Result<()>;
    write_back_range: fn(&File, u64, usize) -> io::Result<()>;
    evict_range: fn(&File, *mut u8, u64, usize) -> io::Result<()>;
    volume_of: fn(&File) -> Volume;
});

pub(crate) use facts::{memory_headroom, mount_of, shmem_mode};
pub(crate) use portable::{
    extend, map_shared_writable, map_whole_file, touch_pages, Access, FileStamp, Job, Volume,
    HUGE_PAGE,
};

#[cfg(feature = "fault-injection")]
pub(crate) use faulty::{
    alloc, allocate, lock_memory, map_piece, open_direct, pread, write_all_at,
};
