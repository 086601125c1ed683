//! Finding the constants file a model names.
//!
//! Compilers emit a bare file name (`model.constants.bin`) because they cannot
//! know where the model will be deployed. The file normally sits beside the
//! model's shared object, which is not the host's current directory, so we
//! ask the dynamic loader which object holds the slot (`dladdr`) and look
//! there. Order: an absolute name is used as is; a deliberate
//! `OM_CONSTANT_PATH` ([`crate::path_var`]) is the only folder searched, as
//! in onnx-mlir's loader, which opens exactly that path; otherwise the folder
//! of the object holding the slot, then a hint `OM_CONSTANT_PATH` (one a
//! runtime set around `dlopen`), then the current directory, and the first
//! that exists wins. The compiler writes the model and its constants file
//! together, so the model's folder is the best guess; when another place
//! also holds a file of that name, or a hint names another folder,
//! [`Found::note`] names both and the one chosen. If none exists, the error
//! lists every place tried.

#[cfg(unix)]
use std::ffi::OsStr;
#[cfg(unix)]
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::config::SEARCH_PATH_VAR;
use crate::error::{Error, ErrorKind, Result};
use crate::path_var::SearchDir;
use crate::sys;

/// Where a candidate's folder came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The name was absolute.
    Absolute,
    /// A deliberate `OM_CONSTANT_PATH`: the only place searched.
    SearchPath,
    /// An `OM_CONSTANT_PATH` set after the process and the library started
    /// (as onnx-mlir's `ExecutionSession` does around `dlopen`): searched
    /// after the model's folder.
    SearchPathHint,
    /// The folder of the shared object (or executable) that holds the slot.
    ModelFolder,
    /// The current directory.
    CurrentDir,
}

/// One place that was or will be tried, and why it is on the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The full path to try.
    pub path: PathBuf,
    /// Where its folder came from.
    pub origin: Origin,
    /// The same, in words, for messages.
    pub why: String,
}

/// The place chosen, and a note for the `info` log when another place also
/// held a file of that name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The path to open.
    pub path: PathBuf,
    /// Set when a later candidate exists too and was passed over.
    pub note: Option<String>,
}

/// The places to look for `fname`, in order.
///
/// `search_path` is `OM_CONSTANT_PATH` as classified for this load (a
/// deliberate one is the only place); `object` is the shared object that
/// holds the slot, if the loader knows one; `cwd` the current directory.
pub fn candidates(
    fname: &Path,
    search_path: Option<&SearchDir>,
    object: Option<&Path>,
    cwd: Option<&Path>,
) -> Vec<Candidate> {
    if fname.is_absolute() {
        return vec![Candidate {
            path: fname.to_path_buf(),
            origin: Origin::Absolute,
            why: "absolute name".into(),
        }];
    }
    if let Some(SearchDir::Deliberate(dir)) = search_path {
        return vec![Candidate {
            path: dir.join(fname),
            origin: Origin::SearchPath,
            why: SEARCH_PATH_VAR.into(),
        }];
    }
    let mut out = Vec::new();
    if let Some(obj) = object {
        if let Some(dir) = obj.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            out.push(Candidate {
                path: dir.join(fname),
                origin: Origin::ModelFolder,
                why: format!("folder of {}, which holds the model", obj.display()),
            });
        }
    }
    if let Some(SearchDir::Hint(dir)) = search_path {
        let path = dir.join(fname);
        if !out.iter().any(|c| c.path == path) {
            out.push(Candidate {
                path,
                origin: Origin::SearchPathHint,
                why: format!(
                    "{SEARCH_PATH_VAR}, set after the process and om-constants started, as a \
                     runtime sets it around dlopen: a hint, after the model's folder"
                ),
            });
        }
    }
    if let Some(dir) = cwd {
        out.push(Candidate {
            path: dir.join(fname),
            origin: Origin::CurrentDir,
            why: "current directory".into(),
        });
    }
    out
}

/// Finds `fname` for the slot at `slot_addr`, searching as the module docs
/// say; `search_path` is `OM_CONSTANT_PATH` as read for this load.
pub fn locate(fname: &Path, search_path: Option<&SearchDir>, slot_addr: usize) -> Result<Found> {
    let object = object_containing(slot_addr);
    let cwd = std::env::current_dir().ok();
    let list = candidates(fname, search_path, object.as_deref(), cwd.as_deref());
    choose(fname, &list)
}

/// Returns the first candidate that exists, with a note when another place
/// holds a file of that name too, or when a hint named another folder;
/// otherwise an error naming them all and the fix.
pub fn choose(fname: &Path, list: &[Candidate]) -> Result<Found> {
    let mut tried = Vec::new();
    for (i, c) in list.iter().enumerate() {
        match std::fs::metadata(&c.path) {
            Ok(_) => {
                return Ok(Found {
                    path: c.path.clone(),
                    note: note(c, &list[..i], &list[i + 1..]),
                })
            }
            Err(e) => tried.push(format!("{} ({}): {}", c.path.display(), c.why, e)),
        }
    }
    let name = fname.display();
    let fix = if fname.is_absolute() {
        "check the path the model was compiled with".to_string()
    } else if list.iter().any(|c| c.origin == Origin::SearchPath) {
        format!(
            "{SEARCH_PATH_VAR} is set, so no other folder is searched: put '{name}' in that \
             folder, point {SEARCH_PATH_VAR} at the folder that holds it, or unset it to search \
             beside the model's shared library and in the current directory"
        )
    } else if list.iter().any(|c| c.origin == Origin::SearchPathHint) {
        format!(
            "{SEARCH_PATH_VAR} was set after the process started (as a runtime sets it around \
             dlopen), so it is searched after the model's folder: put '{name}' beside the \
             model's shared library (.so, .dll) or in that folder, or set {SEARCH_PATH_VAR} \
             before the process starts to make it the only folder searched"
        )
    } else {
        format!(
            "put '{name}' beside the model's shared library (.so, .dll), or set \
             {SEARCH_PATH_VAR} to the folder that contains it"
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

/// The `info` note for choosing `chosen` after the missing places `before`:
/// what else exists among `after`, or what a hint named. `None` when there
/// was no choice to speak of.
fn note(chosen: &Candidate, before: &[Candidate], after: &[Candidate]) -> Option<String> {
    let shown = |c: &Candidate| format!("{} ({})", c.path.display(), c.why);
    let passed_over = after.iter().find(|o| o.path.exists());
    let hint_missed = before
        .iter()
        .find(|o| o.origin == Origin::SearchPathHint)
        .or_else(|| after.iter().find(|o| o.origin == Origin::SearchPathHint));
    if let Some(other) = passed_over {
        let why = if other.origin == Origin::SearchPathHint {
            "the file beside the calling model wins over an OM_CONSTANT_PATH set after the \
             process and om-constants started (a runtime's, which may name another model's \
             folder); set it before starting the process to make it the only folder searched"
        } else {
            "the model's folder comes first because the compiler writes the model and its \
             constants file together"
        };
        return Some(format!(
            "using {}; {} exists too and is not used: {why}",
            shown(chosen),
            shown(other)
        ));
    }
    if chosen.origin == Origin::SearchPathHint {
        let model = before.iter().find(|o| o.origin == Origin::ModelFolder)?;
        return Some(format!(
            "using {}: {} does not exist",
            shown(chosen),
            shown(model)
        ));
    }
    hint_missed.map(|h| {
        format!(
            "using {}; {} names another folder, where the file does not exist",
            shown(chosen),
            shown(h)
        )
    })
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
            Some(&SearchDir::Deliberate("/env".into())),
            Some(Path::new("/lib/m.so")),
            Some(Path::new("/cwd")),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].path, Path::new("/m/x.bin"));
    }

    #[test]
    fn a_set_search_path_is_the_only_place() {
        let c = candidates(
            Path::new("x.bin"),
            Some(&SearchDir::Deliberate("/env".into())),
            Some(Path::new("/lib/m.so")),
            Some(Path::new("/cwd")),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].path, PathBuf::from("/env/x.bin"));
        assert_eq!(c[0].origin, Origin::SearchPath);
    }

    #[test]
    fn relative_name_searches_object_then_cwd() {
        let c = candidates(
            Path::new("x.bin"),
            None,
            Some(Path::new("/lib/m.so")),
            Some(Path::new("/cwd")),
        );
        let paths: Vec<_> = c.iter().map(|c| c.path.clone()).collect();
        assert_eq!(paths, [PathBuf::from("/lib/x.bin"), "/cwd/x.bin".into()]);
    }

    #[cfg(unix)] // POSIX paths
    #[test]
    fn missing_places_are_skipped_and_absent_ones_listed() {
        let dir = std::env::temp_dir().join(format!("om-locate-{}", std::process::id()));
        let model = dir.join("model");
        std::fs::create_dir_all(&model).unwrap();
        std::fs::write(dir.join("x.bin"), b"1234").unwrap();
        let so = model.join("m.so");
        let list = candidates(Path::new("x.bin"), None, Some(&so), Some(&dir));
        let found = choose(Path::new("x.bin"), &list).unwrap();
        assert_eq!(found.path, dir.join("x.bin"), "the model folder lacks it");
        assert_eq!(found.note, None, "nothing passed over");

        // Both hold one: the model's folder wins, and the note says so.
        std::fs::write(model.join("x.bin"), b"5678").unwrap();
        let found = choose(Path::new("x.bin"), &list).unwrap();
        assert_eq!(found.path, model.join("x.bin"));
        let note = found.note.expect("a note naming the other file");
        assert!(
            note.contains(&dir.join("x.bin").display().to_string()),
            "{note}"
        );
        assert!(note.contains("current directory"), "{note}");

        // A set OM_CONSTANT_PATH that lacks the file fails, and says why.
        let only = candidates(
            Path::new("x.bin"),
            Some(&SearchDir::Deliberate("/nonexistent-om".into())),
            Some(&so),
            Some(&dir),
        );
        let err = choose(Path::new("x.bin"), &only).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.message().contains("/nonexistent-om/x.bin"), "{err}");
        assert!(err.message().contains("OM_CONSTANT_PATH is set"), "{err}");
        assert!(!err.message().contains("(current directory)"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_hint_comes_after_the_model_folder_and_once() {
        let hint = SearchDir::Hint("/m/v1".into());
        let c = candidates(
            Path::new("x.bin"),
            Some(&hint),
            Some(Path::new("/m/v2/model.so")),
            Some(Path::new("/cwd")),
        );
        let paths: Vec<_> = c.iter().map(|c| c.path.clone()).collect();
        assert_eq!(
            paths,
            [
                PathBuf::from("/m/v2/x.bin"),
                "/m/v1/x.bin".into(),
                "/cwd/x.bin".into()
            ]
        );
        assert_eq!(c[1].origin, Origin::SearchPathHint);
        // A hint naming the model's own folder (a runtime that sets it per
        // model) is the same place, listed once.
        let same = SearchDir::Hint("/m/v2".into());
        let c = candidates(
            Path::new("x.bin"),
            Some(&same),
            Some(Path::new("/m/v2/model.so")),
            None,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].origin, Origin::ModelFolder);
    }

    #[cfg(unix)] // POSIX paths
    #[test]
    fn the_file_beside_the_model_wins_over_a_hint_and_the_note_names_both() {
        let dir = std::env::temp_dir().join(format!("om-locate-hint-{}", std::process::id()));
        let (v1, v2) = (dir.join("v1"), dir.join("v2"));
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v1.join("x.bin"), b"1").unwrap();
        let hint = SearchDir::Hint(v1.clone());
        let list = candidates(
            Path::new("x.bin"),
            Some(&hint),
            Some(&v2.join("m.so")),
            None,
        );

        // v2 lacks it: the hint is used, and the note says why.
        let found = choose(Path::new("x.bin"), &list).unwrap();
        assert_eq!(found.path, v1.join("x.bin"));
        let note = found.note.expect("a note");
        assert!(
            note.contains(&v2.join("x.bin").display().to_string()),
            "{note}"
        );
        assert!(note.contains("does not exist"), "{note}");

        // v2 has its own: it wins, and the note names the hint's file.
        std::fs::write(v2.join("x.bin"), b"2").unwrap();
        let found = choose(Path::new("x.bin"), &list).unwrap();
        assert_eq!(found.path, v2.join("x.bin"));
        let note = found.note.expect("a note");
        assert!(
            note.contains(&v1.join("x.bin").display().to_string()),
            "{note}"
        );
        assert!(note.contains("beside the calling model wins"), "{note}");
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
