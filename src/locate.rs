//! Finding the constants file a model names.
//!
//! Compilers emit a bare file name (`model.constants.bin`) because they cannot
//! know where the model will be deployed. The file normally sits beside the
//! model's shared object, which is not the host's current directory, so we
//! ask the dynamic loader which object holds the slot (`dladdr`) and look
//! there. Order: absolute name as is; `OM_CONSTANT_PATH/name`; the folder of
//! the object holding the slot; the current directory. The first place where
//! something exists wins; if none does, the error lists every place tried.

#[cfg(unix)]
use std::ffi::OsStr;
#[cfg(unix)]
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::sys;

/// One place that was or will be tried, and why it is on the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The full path to try.
    pub path: PathBuf,
    /// Where the folder came from, for the error message.
    pub origin: String,
}

/// The places to look for `fname`, in order.
///
/// `search_path` is `OM_CONSTANT_PATH`; `object` is the shared object that
/// holds the slot, if the loader knows one; `cwd` the current directory.
pub fn candidates(
    fname: &Path,
    search_path: Option<&Path>,
    object: Option<&Path>,
    cwd: Option<&Path>,
) -> Vec<Candidate> {
    if fname.is_absolute() {
        return vec![Candidate {
            path: fname.to_path_buf(),
            origin: "absolute name".into(),
        }];
    }
    let mut out = Vec::new();
    if let Some(dir) = search_path {
        out.push(Candidate {
            path: dir.join(fname),
            origin: "OM_CONSTANT_PATH".into(),
        });
    }
    if let Some(obj) = object {
        if let Some(dir) = obj.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            out.push(Candidate {
                path: dir.join(fname),
                origin: format!("folder of {}, which holds the model", obj.display()),
            });
        }
    }
    if let Some(dir) = cwd {
        out.push(Candidate {
            path: dir.join(fname),
            origin: "current directory".into(),
        });
    }
    out
}

/// Finds `fname` for the slot at `slot_addr`, searching as the module docs say.
pub fn locate(fname: &Path, search_path: Option<&Path>, slot_addr: usize) -> Result<PathBuf> {
    let object = object_containing(slot_addr);
    let cwd = std::env::current_dir().ok();
    let list = candidates(fname, search_path, object.as_deref(), cwd.as_deref());
    first_existing(fname, &list)
}

/// Returns the first candidate that exists; otherwise an error naming them all.
pub fn first_existing(fname: &Path, list: &[Candidate]) -> Result<PathBuf> {
    let mut tried = Vec::new();
    for c in list {
        match std::fs::metadata(&c.path) {
            Ok(_) => return Ok(c.path.clone()),
            Err(e) => tried.push(format!("{} ({}): {}", c.path.display(), c.origin, e)),
        }
    }
    let name = fname.display();
    let fix = if fname.is_absolute() {
        "check the path the model was compiled with".to_string()
    } else {
        format!(
            "put '{name}' beside the model's shared library (.so, .dll), or set OM_CONSTANT_PATH \
             to the folder that contains it"
        )
    };
    Err(Error::new(
        ErrorKind::NotFound,
        format!(
            "constants file '{name}' not found; tried {}; {fix}",
            if tried.is_empty() {
                "nowhere (no folder to search)".to_string()
            } else {
                tried.join("; ")
            }
        ),
    ))
}

/// The absolute path of the loaded object (shared library or executable)
/// whose mapped image contains `addr`, or `None` if no object contains it
/// (a slot on the heap or stack, as in tests and hand-written hosts).
///
/// `dladdr` names the object as it was opened: `./models/model.so` stays
/// relative, and resolving it later against a current directory the host
/// has changed since would find nothing, or a same-named file elsewhere.
/// So the path is taken from the kernel's record of the object's mapping
/// (`/proc/self/maps`, absolute whatever the host did), and `dladdr`'s name
/// is used only where that is unavailable and the name is absolute.
pub fn object_containing(addr: usize) -> Option<PathBuf> {
    let (base, name) = sys::object_at(addr)?;
    if let Some(path) = mapped_file(base) {
        return Some(path);
    }
    name.filter(|p| p.is_absolute())
}

/// The file mapped at `addr` according to the kernel, if it is a file.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn mapped_file(addr: usize) -> Option<PathBuf> {
    let maps = std::fs::read("/proc/self/maps").ok()?;
    file_mapped_at(&maps, addr)
}

/// Elsewhere the loader's own name is used: on Windows it is the module's
/// full path (`GetModuleFileNameW`); macOS and the BSDs have no
/// `/proc/self/maps`, so a relative `dladdr` name is not used.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn mapped_file(_addr: usize) -> Option<PathBuf> {
    None
}

/// Finds the mapping containing `addr` in the text of `/proc/self/maps`
/// (`start-end perms offset dev inode   path`) and returns its path, if it
/// is an absolute one (not `[heap]`, not anonymous). The kernel appends
/// " (deleted)" to a file removed since; the folder is what matters.
#[cfg(unix)]
pub fn file_mapped_at(maps: &[u8], addr: usize) -> Option<PathBuf> {
    for line in maps.split(|b| *b == b'\n') {
        let mut fields = line.splitn(6, |b| *b == b' ');
        let range = fields.next()?;
        let path = fields.nth(4).unwrap_or(b"");
        let path = &path[path.iter().take_while(|b| **b == b' ').count()..];
        let text = std::str::from_utf8(range).ok()?;
        let (start, end) = text.split_once('-')?;
        let (start, end) = (
            usize::from_str_radix(start, 16).ok()?,
            usize::from_str_radix(end, 16).ok()?,
        );
        if !(start..end).contains(&addr) {
            continue;
        }
        if path.first() != Some(&b'/') {
            return None;
        }
        let path = path.strip_suffix(b" (deleted)").unwrap_or(path);
        return Some(PathBuf::from(OsStr::from_bytes(path)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)] // POSIX paths; Windows: c_tests/windows/host.c
    #[test]
    fn absolute_name_is_used_as_is() {
        let c = candidates(
            Path::new("/m/x.bin"),
            Some(Path::new("/env")),
            Some(Path::new("/lib/m.so")),
            Some(Path::new("/cwd")),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].path, Path::new("/m/x.bin"));
    }

    #[test]
    fn relative_name_searches_env_then_object_then_cwd() {
        let c = candidates(
            Path::new("x.bin"),
            Some(Path::new("/env")),
            Some(Path::new("/lib/m.so")),
            Some(Path::new("/cwd")),
        );
        let paths: Vec<_> = c.iter().map(|c| c.path.clone()).collect();
        assert_eq!(
            paths,
            [
                PathBuf::from("/env/x.bin"),
                "/lib/x.bin".into(),
                "/cwd/x.bin".into()
            ]
        );
    }

    #[cfg(unix)] // POSIX paths
    #[test]
    fn missing_places_are_skipped_and_absent_ones_listed() {
        let dir = std::env::temp_dir().join(format!("om-locate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("x.bin"), b"1234").unwrap();
        let list = candidates(
            Path::new("x.bin"),
            Some(Path::new("/nonexistent-om")),
            None,
            Some(&dir),
        );
        assert_eq!(
            first_existing(Path::new("x.bin"), &list).unwrap(),
            dir.join("x.bin")
        );
        let err = first_existing(Path::new("y.bin"), &list[..1]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.message().contains("/nonexistent-om/x.bin"), "{err}");
        assert!(err.message().contains("OM_CONSTANT_PATH"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn maps_lines_give_the_file_of_the_mapping_that_contains_the_address() {
        let maps = b"00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/my prog\n\
                     00651000-00652000 rw-p 00051000 08:02 173521      /usr/bin/my prog\n\
                     00e03000-00e24000 rw-p 00000000 00:00 0           [heap]\n\
                     7f0000000000-7f0000001000 r--p 00000000 08:02 1 /m/old.so (deleted)\n\
                     7f0000001000-7f0000002000 rw-p 00000000 00:00 0\n";
        let at = |a| file_mapped_at(maps, a);
        assert_eq!(at(0x400000), Some(PathBuf::from("/usr/bin/my prog")));
        assert_eq!(at(0x651fff), Some(PathBuf::from("/usr/bin/my prog")));
        assert_eq!(at(0x452000), None, "between mappings");
        assert_eq!(at(0xe03000), None, "[heap] is not a file");
        assert_eq!(at(0x7f0000000010), Some(PathBuf::from("/m/old.so")));
        assert_eq!(at(0x7f0000001000), None, "anonymous");
    }

    #[test]
    fn heap_address_is_in_no_object_but_a_static_is() {
        let heap = Box::new(0u64);
        assert_eq!(object_containing(&*heap as *const u64 as usize), None);
        static IN_IMAGE: u64 = 7;
        let obj = object_containing(&IN_IMAGE as *const u64 as usize).expect("static in image");
        assert!(obj.is_absolute(), "{}", obj.display());
    }
}
