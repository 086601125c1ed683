//! The calls that are the same on every OS: the system allocator and
//! memmap2's file mappings (which carry their own per-OS code), and the
//! plain types the OS files share. Each OS file (`unix.rs`, `windows.rs`)
//! holds only what differs.

use std::fs::File;
use std::io;

use memmap2::{Mmap, MmapOptions, MmapRaw};

// ---- memory ----------------------------------------------------------

/// The size of a huge (PMD) page where the library asks for them (x86_64,
/// aarch64 with 4 KiB pages, s390x): 2 MiB.
pub(crate) const HUGE_PAGE: usize = 2 << 20;

/// Reads one byte every `stride` bytes of `[ptr, ptr+len)`: each read
/// faults its page (and, in a 2 MiB-advised file mapping, its whole 2 MiB
/// folio) in.
///
/// The range must be readable memory for the whole call.
pub(crate) fn touch_pages(ptr: *mut u8, len: usize, stride: usize) {
    let mut off = 0;
    while off < len {
        // SAFETY: ptr+off lies inside the readable range (caller's contract).
        unsafe { std::ptr::read_volatile(ptr.add(off)) };
        off += stride.max(1);
    }
}

// ---- mappings --------------------------------------------------------

/// Maps all of `file` read-only and private.
///
/// The mapping reflects the file: if someone truncates the file in place
/// while it is mapped, reads past the new end raise SIGBUS.
pub(crate) fn map_whole_file(file: &File) -> io::Result<Mmap> {
    // SAFETY: memmap2 marks mapping unsafe because the file can change
    // under the mapping. It is mapped read-only, and files mapped this way
    // (the packed-weights cache) are only ever replaced by rename.
    unsafe { MmapOptions::new().map(file) }
}

/// Maps `[offset, offset+len)` of `file` shared and writable. A raw
/// mapping: no Rust reference to its bytes exists, since C code writes
/// them (see [`protect_read_only`]).
pub(crate) fn map_shared_writable(file: &File, offset: u64, len: usize) -> io::Result<MmapRaw> {
    MmapOptions::new().offset(offset).len(len).map_raw(file)
}

// ---- files and threads ----------------------------------------------

/// Makes `file` at least `end` bytes long (sparse where the file system
/// allows it).
pub(crate) fn extend(file: &File, end: u64) -> io::Result<()> {
    if file.metadata()?.len() < end {
        file.set_len(end)?;
    }
    Ok(())
}

/// How a file will be read, for [`advise_file`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Access {
    /// From start to end.
    Sequential,
    /// Soon: start reading it ahead.
    WillNeed,
}

/// A job for a raw thread.
pub(crate) type Job<'a> = Box<dyn FnOnce() + Send + 'a>;

/// What identifies an open file and its version: the volume and the file's
/// number on it (device and inode on POSIX, volume serial and file index
/// on Windows), and its modification and change times in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileStamp {
    /// The device (POSIX) or volume serial number (Windows).
    pub volume: u64,
    /// The inode (POSIX) or file index (Windows).
    pub index: u64,
    /// Last modification.
    pub mtime_ns: i128,
    /// Last change of contents or metadata; tools that restore mtime
    /// cannot set it back.
    pub ctime_ns: i128,
}

// ---- volumes -----------------------------------------------------------

/// The kind of file system a file is on, as far as loading it cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// Only Linux tells volumes apart so far (`volume_of`).
#[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
pub(crate) enum Volume {
    /// A local disk's file system (or one the OS does not tell apart).
    Local,
    /// A file system in memory (`tmpfs`, `/dev/shm`): its pages are the
    /// file; 2 MiB pages only by collapsing them in place.
    Memory,
    /// A local file system that never gives 2 MiB page-cache folios
    /// (read-only compressed images): its name.
    SmallFolios(&'static str),
    /// A network or user-space file system (its name): each page fault is a
    /// request over the wire, and a lost server is a `SIGBUS` under a
    /// mapping.
    Remote(&'static str),
}

#[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
impl Volume {
    /// The kind of a Linux `statfs` `f_type` (`<linux/magic.h>` and the
    /// file systems' own sources).
    pub(crate) fn of_magic(magic: u64) -> Volume {
        match magic {
            0x0102_1994 => Volume::Memory,                  // tmpfs, shmem
            0x8584_58f6 => Volume::SmallFolios("ramfs"),    // RAMFS_MAGIC
            0x7371_7368 => Volume::SmallFolios("squashfs"), // SQUASHFS_MAGIC
            0x9660 => Volume::SmallFolios("iso9660"),
            0x28cd_3d45 => Volume::SmallFolios("cramfs"),
            0x6969 => Volume::Remote("NFS"),
            0x517B => Volume::Remote("SMB"),
            0xFF53_4D42 => Volume::Remote("CIFS"),
            0xFE53_4D42 => Volume::Remote("SMB2"),
            0x6573_5546 => Volume::Remote("FUSE"), // and virtiofs
            0x0102_1997 => Volume::Remote("9p"),
            0x0BD0_0BD0 => Volume::Remote("Lustre"),
            0x00C3_6400 => Volume::Remote("CephFS"),
            0x5346_414F | 0x6B41_4653 => Volume::Remote("AFS"),
            0x0116_1970 => Volume::Remote("GFS2"),
            0x7461_636f => Volume::Remote("OCFS2"),
            0x4750_4653 => Volume::Remote("GPFS"),
            0x1983_0326 => Volume::Remote("BeeGFS"),
            0x7375_7245 => Volume::Remote("Coda"),
            _ => Volume::Local,
        }
    }
}
