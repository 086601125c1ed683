//! Locating a file (`locate::candidates`) and reading the kernel's map of
//! the process (`locate::file_mapped_at`): a model names any bytes as its
//! file, and the maps text is parsed field by field. Never a panic; the
//! candidates keep the search order's promises (a deliberate
//! `OM_CONSTANT_PATH` alone; else the model's folder, a hint's folder, then
//! the current directory, each once); a mapped file is always an absolute
//! path taken from a line whose range holds the address.

#![no_main]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use om_constants::config::SearchDir;
use om_constants::locate::{candidates, file_mapped_at, Origin};

fuzz_target!(|input: &[u8]| {
    let mut parts = input.splitn(4, |b| *b == 0);
    let fname = Path::new(OsStr::from_bytes(parts.next().unwrap_or(b"")));
    let search = parts.next().map(|p| Path::new(OsStr::from_bytes(p)));
    let object = parts.next().map(|p| Path::new(OsStr::from_bytes(p)));
    let maps = parts.next().unwrap_or(b"");

    let cwd = Path::new("/cwd").join(fname);
    for deliberate in [true, false] {
        let dir = search.map(|d| {
            if deliberate {
                SearchDir::Deliberate(d.to_path_buf())
            } else {
                SearchDir::Hint(d.to_path_buf())
            }
        });
        let list = candidates(fname, dir.as_ref(), object, Some(Path::new("/cwd")));
        if fname.is_absolute() {
            assert_eq!(list.len(), 1);
            assert_eq!(list[0].path, fname);
        } else if let (Some(d), true) = (search, deliberate) {
            // A deliberate OM_CONSTANT_PATH is the only place searched.
            assert_eq!(list.len(), 1, "{list:?}");
            assert_eq!(list[0].path, d.join(fname));
        } else {
            assert!(!list.is_empty() && list.len() <= 3, "{list:?}");
            assert_eq!(list.last().map(|c| c.path.as_path()), Some(cwd.as_path()));
            // The model's folder, if any, comes first; no place twice
            // before the current directory.
            if let Some(at) = list.iter().position(|c| c.origin == Origin::ModelFolder) {
                assert_eq!(at, 0, "{list:?}");
            }
            let before = &list[..list.len() - 1];
            for (i, c) in before.iter().enumerate() {
                assert!(!before[i + 1..].iter().any(|o| o.path == c.path), "{list:?}");
            }
        }
    }

    for addr in [0usize, 0x1000, 0x7f00_0000_0000, usize::MAX] {
        if let Some(p) = file_mapped_at(maps, addr) {
            assert!(p.is_absolute(), "{p:?}");
        }
    }
});
