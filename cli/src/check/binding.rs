//! Who answers a model's loader calls: read from the ELF file's dynamic
//! section, relocations and symbol visibility, without running it.
//!
//! ELF interposition lets om-constants answer a model's calls to its own
//! copy of onnx-mlir's loader only when the model makes those calls through
//! a dynamic relocation against the exported name and looks the name up in
//! the global scope first. `-Bsymbolic` (`DT_SYMBOLIC`), protected
//! visibility, and copies that are not exported (hidden, or
//! `-Wl,--exclude-libs,ALL`) bind the calls inside the model at link time:
//! nothing can take them over, not even `LD_PRELOAD`. A model that imports
//! the loader gets it from the first library in the global scope, else from
//! its own `DT_NEEDED` libraries, found as the dynamic loader finds them.

use std::path::{Path, PathBuf};

use object::elf;
use object::read::elf::{Dyn, ElfFile, FileHeader};
use object::{Object, ObjectSymbol, ObjectSymbolTable, RelocationTarget, SymbolFlags};

/// What the dynamic section says.
#[derive(Debug, Default)]
pub(crate) struct Dynamic {
    /// `DT_SYMBOLIC`, or `DF_SYMBOLIC` in `DT_FLAGS`.
    pub(crate) symbolic: bool,
    /// `DT_NEEDED`, in order.
    pub(crate) needed: Vec<String>,
    /// `DT_RUNPATH` (or `DT_RPATH` when there is no runpath), split.
    pub(crate) runpath: Vec<String>,
    /// Whether the folders came from `DT_RPATH` (searched before
    /// `LD_LIBRARY_PATH`) rather than `DT_RUNPATH` (after it).
    pub(crate) old_rpath: bool,
}

/// Reads the dynamic section of an ELF file; empty for anything else.
pub(crate) fn dynamic(file: &object::File<'_>) -> Dynamic {
    match file {
        object::File::Elf32(f) => dynamic_of(f),
        object::File::Elf64(f) => dynamic_of(f),
        _ => Dynamic::default(),
    }
}

fn dynamic_of<Elf: FileHeader>(f: &ElfFile<'_, Elf>) -> Dynamic {
    let endian = f.endian();
    let table = f.elf_section_table();
    let mut out = Dynamic::default();
    let Ok(Some((entries, link))) = table.dynamic(endian, f.data()) else {
        return out;
    };
    let Ok(strings) = table.strings(endian, f.data(), link) else {
        return out;
    };
    let text = |d: &Elf::Dyn| {
        d.string(endian, strings)
            .ok()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    let (mut runpath, mut rpath) = (None, None);
    for d in entries {
        let tag: u64 = d.d_tag(endian).into();
        let val: u64 = d.d_val(endian).into();
        match tag as u32 {
            elf::DT_SYMBOLIC => out.symbolic = true,
            elf::DT_FLAGS if val & u64::from(elf::DF_SYMBOLIC) != 0 => out.symbolic = true,
            elf::DT_NEEDED => out.needed.extend(text(d)),
            elf::DT_RUNPATH => runpath = text(d),
            elf::DT_RPATH => rpath = text(d),
            _ => {}
        }
    }
    out.old_rpath = runpath.is_none() && rpath.is_some();
    out.runpath = runpath
        .or(rpath)
        .map(|p| p.split(':').map(str::to_string).collect())
        .unwrap_or_default();
    out
}

/// Why the model's own loader can never be taken over, if it cannot.
///
/// `exported` are the loader functions it defines and exports, `hidden`
/// those it defines without exporting them.
pub(crate) fn bound_inside(
    file: &object::File<'_>,
    dynamic: &Dynamic,
    exported: &[&str],
    hidden: &[&str],
) -> Option<String> {
    if !hidden.is_empty() && exported.is_empty() {
        return Some(format!(
            "it defines {} without exporting them (hidden visibility, or linked with \
             -Wl,--exclude-libs): its calls are bound inside the model",
            hidden.join(", ")
        ));
    }
    if dynamic.symbolic {
        return Some(
            "it was linked with -Bsymbolic (DT_SYMBOLIC): the model's calls find its own \
             definitions first"
                .into(),
        );
    }
    let protected: Vec<&str> = exported
        .iter()
        .copied()
        .filter(|name| is_protected(file, name))
        .collect();
    if !protected.is_empty() {
        return Some(format!(
            "{} {} protected visibility: the model's calls are bound to its own copy at \
             link time",
            protected.join(", "),
            if protected.len() == 1 { "has" } else { "have" }
        ));
    }
    let relocated: Vec<&str> = exported
        .iter()
        .copied()
        .filter(|name| has_dynamic_relocation(file, name))
        .collect();
    if relocated.is_empty() && !exported.is_empty() {
        return Some(format!(
            "no dynamic relocation names {}: the model's calls were bound to its own copy at \
             link time (-Bsymbolic-functions, or a direct call)",
            exported.join(", ")
        ));
    }
    None
}

fn is_protected(file: &object::File<'_>, name: &str) -> bool {
    file.dynamic_symbol_table().is_some_and(|t| {
        t.symbols().any(|s| {
            s.name_bytes().is_ok_and(|n| n == name.as_bytes())
                && matches!(s.flags(), SymbolFlags::Elf { st_other, .. }
                    if st_other & 0x3 == elf::STV_PROTECTED)
        })
    })
}

fn has_dynamic_relocation(file: &object::File<'_>, name: &str) -> bool {
    let (Some(relocs), Some(table)) = (file.dynamic_relocations(), file.dynamic_symbol_table())
    else {
        return false;
    };
    relocs.into_iter().any(|(_, r)| match r.target() {
        RelocationTarget::Symbol(i) => table
            .symbol_by_index(i)
            .and_then(|s| s.name_bytes())
            .is_ok_and(|n| n == name.as_bytes()),
        _ => false,
    })
}

/// Where a model's imported loader comes from when nothing in the global
/// scope defines it first.
#[derive(Debug)]
pub(crate) enum Provider {
    /// This library, the first of the model's dependencies to export it.
    Found { lib: PathBuf, is_om_constants: bool },
    /// No dependency that could be found exports it.
    Missing {
        /// Libraries the model needs that were not found, by name.
        not_found: Vec<String>,
    },
}

/// The DLL a PE model names for `function`: Windows binds each import to
/// the DLL the model names, with no global scope to come first.
pub(crate) fn pe_provider(
    file: &object::File<'_>,
    function: &str,
    mark_dll: &str,
) -> Option<Provider> {
    let imports = file.imports().ok()?;
    let import = imports.iter().find(|i| i.name() == function.as_bytes())?;
    let lib = String::from_utf8_lossy(import.library()).into_owned();
    let stem = lib.to_ascii_lowercase();
    Some(Provider::Found {
        is_om_constants: stem.trim_start_matches("lib").starts_with(mark_dll),
        lib: PathBuf::from(lib),
    })
}

/// The library that answers `function` for a model at `model` with
/// dependencies `dynamic`, searched breadth-first as the dynamic loader
/// does, and whether it is om-constants (it exports `mark`).
pub(crate) fn provider(model: &Path, dynamic: &Dynamic, function: &str, mark: &str) -> Provider {
    let mut queue: Vec<(String, PathBuf, Dynamic)> = dynamic
        .needed
        .iter()
        .map(|n| (n.clone(), model.to_path_buf(), clone_paths(dynamic)))
        .collect();
    let mut seen = Vec::new();
    let mut not_found = Vec::new();
    let mut i = 0;
    while i < queue.len() && i < 256 {
        let (name, parent, paths) = (
            queue[i].0.clone(),
            queue[i].1.clone(),
            clone_paths(&queue[i].2),
        );
        i += 1;
        if seen.contains(&name) {
            continue;
        }
        seen.push(name.clone());
        let Some(path) = find_library(&name, &parent, &paths) else {
            not_found.push(name);
            continue;
        };
        let Ok(data) = std::fs::read(&path) else {
            continue;
        };
        let Ok(file) = object::File::parse(&*data) else {
            continue;
        };
        let exports = file.exports().unwrap_or_default();
        let exports_it = |n: &str| exports.iter().any(|x| x.name() == n.as_bytes());
        if exports_it(function) {
            return Provider::Found {
                is_om_constants: exports_it(mark),
                lib: path,
            };
        }
        let dep = self::dynamic(&file);
        for n in &dep.needed {
            queue.push((n.clone(), path.clone(), clone_paths(&dep)));
        }
    }
    Provider::Missing { not_found }
}

fn clone_paths(d: &Dynamic) -> Dynamic {
    Dynamic {
        symbolic: d.symbolic,
        needed: Vec::new(),
        runpath: d.runpath.clone(),
        old_rpath: d.old_rpath,
    }
}

/// Finds a `DT_NEEDED` name as glibc's loader does: a name with a slash as
/// is; otherwise `DT_RPATH`, `LD_LIBRARY_PATH`, `DT_RUNPATH` (with
/// `$ORIGIN` the folder of the object that needs it), the folders of
/// `/etc/ld.so.conf`, then the default folders.
pub(crate) fn find_library(name: &str, needed_by: &Path, paths: &Dynamic) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let origin = needed_by
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let expand = |dir: &String| {
        PathBuf::from(
            dir.replace("${ORIGIN}", &origin)
                .replace("$ORIGIN", &origin),
        )
    };
    let env: Vec<PathBuf> = std::env::var("LD_LIBRARY_PATH")
        .unwrap_or_default()
        .split([':', ';'])
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect();
    let own: Vec<PathBuf> = paths.runpath.iter().map(expand).collect();
    let mut dirs = Vec::new();
    if paths.old_rpath {
        dirs.extend(own.iter().cloned());
        dirs.extend(env);
    } else {
        dirs.extend(env);
        dirs.extend(own.iter().cloned());
    }
    dirs.extend(ld_so_conf(Path::new("/etc/ld.so.conf"), 0));
    if let Some(triple) = MULTIARCH {
        dirs.push(Path::new("/lib").join(triple));
        dirs.push(Path::new("/usr/lib").join(triple));
    }
    for d in ["/lib", "/usr/lib", "/lib64", "/usr/lib64"] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// Debian's multiarch folder name for this machine's libraries.
const MULTIARCH: Option<&str> = if cfg!(target_arch = "x86_64") {
    Some("x86_64-linux-gnu")
} else if cfg!(target_arch = "aarch64") {
    Some("aarch64-linux-gnu")
} else if cfg!(target_arch = "s390x") {
    Some("s390x-linux-gnu")
} else {
    None
};

/// The folders `/etc/ld.so.conf` lists, following `include` lines.
fn ld_so_conf(path: &Path, depth: u32) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
    {
        if let Some(pattern) = line.strip_prefix("include") {
            if depth > 4 {
                continue;
            }
            let pattern = pattern.trim();
            let (dir, file_glob) = match pattern.rsplit_once('/') {
                Some((d, f)) => (PathBuf::from(d), f.to_string()),
                None => (PathBuf::from("/etc"), pattern.to_string()),
            };
            let (prefix, suffix) = file_glob.split_once('*').unwrap_or((&file_glob, ""));
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.path())
                        .filter(|p| {
                            p.file_name()
                                .and_then(|n| n.to_str())
                                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
                        })
                        .collect()
                })
                .unwrap_or_default();
            files.sort();
            for f in files {
                out.extend(ld_so_conf(&f, depth + 1));
            }
        } else if line.starts_with('/') {
            out.push(PathBuf::from(line));
        }
    }
    out
}
