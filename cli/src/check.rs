//! `om-constants check MODEL`: what a deployer needs to know about a
//! compiled model before running it, read from the model's file alone.
//!
//! - Which loader the model's calls reach: onnx-mlir links its own runtime
//!   (`-lcruntime`) into every model, so a stock model *defines*
//!   `omLoadConstantData` and the rest; om-constants then serves it only when
//!   it is in the process's global scope first. A model linked against
//!   om-constants instead *imports* them.
//! - The constants file the model expects: onnx-mlir's internal symbols
//!   `om_external_constant_filename`, `_filesize` and `_isLE` (each possibly
//!   followed by the module's `_<tag>` postfix), found in the symbol table
//!   unless the model is stripped.
//! - Where the library would find that file, by the library's own search
//!   (`om_constants::locate`), whether it is there with enough bytes and in
//!   this machine's byte order, and the strategy `auto` would pick.
//!
//! The exit status is 1 when the model would fail to load (or the model
//! cannot be read), with the reason and the fix; 0 otherwise.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use object::{Object, ObjectSection, ObjectSymbol};
use om_constants::config::SearchPath;
use om_constants::locate::{self, Candidate, Origin};
use om_constants::Config;
use serde_json::json;

/// `om-constants check`'s arguments.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The compiled model: a shared library (model.so, model.dll) or an
    /// executable the model is linked into.
    pub model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// onnx-mlir's loader functions, every version's, then om-constants' own
/// names for them.
const LOADER_FUNCTIONS: [&str; 7] = [
    "omLoadConstantData",
    "omUnloadConstantData",
    "omGetExternalConstantAddr",
    "omMMapBinaryFile",
    "om_load_constants_from_file",
    "om_free_constant_buffer",
    "om_mmap_binary_file",
];

/// Defined only by om-constants itself: a file that exports it is the
/// library, or has its static archive linked in.
const OM_CONSTANTS_MARK: &str = "om_constants_stats";

/// Which loader a model's calls reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loader {
    /// The model defines (and exports) its own copies.
    OwnCopy,
    /// The model imports them: from om-constants (or whatever the host
    /// provides).
    Imported,
    /// The model neither defines nor imports them: no external constants.
    None,
    /// The file is om-constants, or has its static library linked in.
    OmConstants,
}

impl Loader {
    fn name(self) -> &'static str {
        match self {
            Loader::OwnCopy => "own-copy",
            Loader::Imported => "imported",
            Loader::None => "none",
            Loader::OmConstants => "om-constants",
        }
    }
}

/// What the model's symbols say about its constants file.
#[derive(Debug, Default)]
struct Expected {
    fname: Option<String>,
    size: Option<u64>,
    is_le: Option<bool>,
    /// No symbol table: the values above are unknown.
    stripped: bool,
}

/// One place the library would look, and what is there.
struct Place {
    candidate: Candidate,
    state: Result<std::fs::Metadata, std::io::Error>,
}

/// Everything `check` found, then turned into text or JSON.
struct Findings {
    model: PathBuf,
    format: String,
    model_is_le: bool,
    loader: Loader,
    defined: Vec<&'static str>,
    imported: Vec<&'static str>,
    expected: Expected,
    fname_used: Option<String>,
    search_path: Option<PathBuf>,
    places: Vec<Place>,
    chosen: Option<PathBuf>,
    own_loader_opens: Option<PathBuf>,
    strategy: Option<&'static str>,
    /// Why the model would fail to load, each with its fix.
    problems: Vec<String>,
    /// What a deployer should know though the load would work.
    notes: Vec<String>,
}

pub(crate) fn run(args: Args) -> ExitCode {
    match inspect(&args.model) {
        Ok(report) => {
            if args.json {
                println!("{}", to_json(&report));
            } else {
                print!("{}", to_text(&report));
            }
            if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(msg) => {
            if args.json {
                println!(
                    "{}",
                    json!({ "model": args.model.display().to_string(), "error": msg })
                );
            }
            eprintln!("om-constants: check: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Reads the model and works out the report; an error for a model that
/// cannot be read at all.
fn inspect(model: &Path) -> Result<Findings, String> {
    let meta = std::fs::metadata(model).map_err(|e| {
        format!(
            "cannot read the model {}: {e}; pass the path of the compiled model \
             (model.so, model.dll)",
            model.display()
        )
    })?;
    if meta.is_dir() {
        return Err(format!(
            "{} is a directory; pass the compiled model inside it (model.so, model.dll)",
            model.display()
        ));
    }
    let data = std::fs::read(model).map_err(|e| {
        format!(
            "cannot read the model {}: {e}; check its permissions",
            model.display()
        )
    })?;
    let file = object::File::parse(&*data).map_err(|e| {
        format!(
            "{} is not an object file this tool can read ({e}); pass a compiled model: \
             an ELF or PE shared library or executable",
            model.display()
        )
    })?;
    let model_abs = std::path::absolute(model).unwrap_or_else(|_| model.to_path_buf());

    let exports = file.exports().map_err(|e| bad_part(model, "exports", e))?;
    let imports = file.imports().map_err(|e| bad_part(model, "imports", e))?;
    let defined: Vec<&'static str> = LOADER_FUNCTIONS
        .into_iter()
        .filter(|f| exports.iter().any(|x| x.name() == f.as_bytes()))
        .collect();
    let imported: Vec<&'static str> = LOADER_FUNCTIONS
        .into_iter()
        .filter(|f| imports.iter().any(|x| x.name() == f.as_bytes()))
        .collect();
    let is_om = exports
        .iter()
        .any(|x| x.name() == OM_CONSTANTS_MARK.as_bytes());
    let loader = if is_om {
        Loader::OmConstants
    } else if !defined.is_empty() {
        Loader::OwnCopy
    } else if !imported.is_empty() {
        Loader::Imported
    } else {
        Loader::None
    };

    let expected = expected_file(&file, model)?;
    // Whether the model calls a loader (a model linked with om-constants'
    // static library counts only if its symbols name a constants file).
    let calls_loader = matches!(loader, Loader::OwnCopy | Loader::Imported);
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    match loader {
        Loader::OwnCopy => notes.push(format!(
            "the model carries its own constants loader ({} defined in the model, as onnx-mlir's \
             runtime library puts them there): om-constants serves it only when om-constants is \
             in the process's global scope before the model is loaded: link the host with \
             -lom_constants, start it with LD_PRELOAD=/path/to/libom_constants.so, or in Python \
             call ctypes.CDLL('/path/to/libom_constants.so', mode=ctypes.RTLD_GLOBAL) before \
             loading the model (docs/ONNX-MLIR.md). Otherwise its own loader runs",
            defined.join(", ")
        )),
        Loader::Imported | Loader::OmConstants => {}
        Loader::None => notes.push(
            "the model neither defines nor imports onnx-mlir's constants loader: it has no \
             external constants file, or was compiled without --store-constants-to-file"
                .into(),
        ),
    }

    // The name the model passes; a stripped model's is guessed from its own
    // name, as onnx-mlir derives both from the output name.
    let fname_used = expected
        .fname
        .clone()
        .or_else(|| (calls_loader).then(|| guess_fname(model)));
    if !expected.stripped && calls_loader {
        let missing: Vec<&str> = [
            ("om_external_constant_filename", expected.fname.is_none()),
            ("om_external_constant_filesize", expected.size.is_none()),
            ("om_external_constant_isLE", expected.is_le.is_none()),
        ]
        .into_iter()
        .filter_map(|(n, gone)| gone.then_some(n))
        .collect();
        if !missing.is_empty() {
            notes.push(format!(
                "the symbol table lacks {}: an optimising build folds these internal constants \
                 into the code that uses them, or the model predates them; what they hold is \
                 not checked{}",
                missing.join(", "),
                if expected.is_le.is_none() {
                    " (the byte order is taken from the object file's, which onnx-mlir \
                     writes the constants in)"
                } else {
                    ""
                }
            ));
        }
    }
    if expected.stripped && calls_loader {
        notes.push(format!(
            "the model is stripped: onnx-mlir's symbols om_external_constant_filename, \
             _filesize and _isLE are internal and were removed with the symbol table, so the \
             file's name is guessed ({}) and its size and byte order are not checked; keep an \
             unstripped copy of the model to check it fully",
            fname_used.as_deref().unwrap_or("?")
        ));
    }

    let search_path = SearchPath::Environment.current();
    let cwd = std::env::current_dir().ok();
    let mut places = Vec::new();
    let mut chosen = None;
    let mut own_loader_opens = None;
    let mut strategy = None;
    if let Some(fname) = &fname_used {
        let name = Path::new(fname);
        // The library's own search, from the model's folder.
        let list = locate::candidates(
            name,
            search_path.as_deref(),
            Some(&model_abs),
            cwd.as_deref(),
        );
        places = list
            .iter()
            .map(|c| Place {
                candidate: c.clone(),
                state: std::fs::metadata(&c.path),
            })
            .collect();
        match locate::choose(name, &list) {
            Ok(found) => {
                if let Some(note) = found.note {
                    notes.push(note);
                }
                check_file(&found.path, &expected, &mut problems);
                chosen = Some(found.path);
            }
            Err(e) => problems.push(e.to_string()),
        }
        if let Some(size) = expected.size {
            let (config, _) = Config::from_lookup(|n| std::env::var_os(n));
            strategy = Some(om_constants::resolve(config.strategy, size, config.mmap_limit).name());
        }
        if loader == Loader::OwnCopy {
            // onnx-mlir's loader opens exactly one path.
            let path = match &search_path {
                Some(dir) => dir.join(name),
                None => name.to_path_buf(),
            };
            if !path.exists() {
                notes.push(format!(
                    "without om-constants in the global scope, the model's own loader opens \
                     {} (OM_CONSTANT_PATH, else the current directory), which does not exist \
                     here: the model would fail to load its constants",
                    path.display()
                ));
            }
            own_loader_opens = Some(path);
        }
    }
    if let Some(le) = expected
        .is_le
        .or((calls_loader).then(|| file.is_little_endian()))
    {
        let host_le = cfg!(target_endian = "little");
        if le != host_le {
            problems.push(format!(
                "the model's constants are {} and this machine is {}: the library refuses the \
                 load (a wrong byte order would give wrong weights); compile the model for this \
                 machine",
                endian(le),
                endian(host_le)
            ));
        }
    }

    Ok(Findings {
        model: model_abs,
        format: format!("{:?}", file.format()),
        model_is_le: file.is_little_endian(),
        loader,
        defined,
        imported,
        expected,
        fname_used,
        search_path,
        places,
        chosen,
        own_loader_opens,
        strategy,
        problems,
        notes,
    })
}

fn bad_part(model: &Path, part: &str, e: object::Error) -> String {
    format!(
        "cannot read the {part} of {} ({e}): the file is damaged or truncated; copy the \
         compiled model again",
        model.display()
    )
}

fn endian(le: bool) -> &'static str {
    if le {
        "little-endian"
    } else {
        "big-endian"
    }
}

/// onnx-mlir names the constants file after the model: `model.so` →
/// `model.constants.bin`.
fn guess_fname(model: &Path) -> String {
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    format!("{stem}.constants.bin")
}

/// The symbol named `base`, or `base_<tag>` (onnx-mlir's symbol postfix).
fn find_symbol<'a>(file: &'a object::File<'a>, base: &str) -> Option<object::Symbol<'a, 'a>> {
    file.symbols().find(|s| {
        s.name().is_ok_and(|n| {
            n == base
                || n.strip_prefix(base)
                    .is_some_and(|rest| rest.starts_with('_') && rest.len() > 1)
        })
    })
}

/// The bytes of `sym`'s value, from the section that holds it.
fn symbol_bytes<'a>(file: &'a object::File<'a>, sym: &object::Symbol<'a, 'a>) -> Option<&'a [u8]> {
    let index = sym.section_index()?;
    let section = file.section_by_index(index).ok()?;
    let data = section.data().ok()?;
    let at = usize::try_from(sym.address().checked_sub(section.address())?).ok()?;
    let len = usize::try_from(sym.size()).ok()?;
    data.get(at..at.checked_add(len)?)
}

/// The constants file the model's symbols name.
fn expected_file(file: &object::File<'_>, model: &Path) -> Result<Expected, String> {
    if file.symbol_table().is_none() {
        return Ok(Expected {
            stripped: true,
            ..Expected::default()
        });
    }
    let mut e = Expected::default();
    if let Some(sym) = find_symbol(file, "om_external_constant_filename") {
        let bytes = symbol_bytes(file, &sym).ok_or_else(|| unreadable(model, "filename"))?;
        let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        e.fname = Some(String::from_utf8_lossy(&bytes[..end]).into_owned());
    }
    if let Some(sym) = find_symbol(file, "om_external_constant_filesize") {
        let bytes = symbol_bytes(file, &sym).ok_or_else(|| unreadable(model, "filesize"))?;
        let raw: [u8; 8] = bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| unreadable(model, "filesize"))?;
        let v = if file.is_little_endian() {
            i64::from_le_bytes(raw)
        } else {
            i64::from_be_bytes(raw)
        };
        e.size = u64::try_from(v).ok();
    }
    if let Some(sym) = find_symbol(file, "om_external_constant_isLE") {
        let bytes = symbol_bytes(file, &sym).ok_or_else(|| unreadable(model, "isLE"))?;
        e.is_le = bytes.first().map(|b| *b != 0);
    }
    Ok(e)
}

fn unreadable(model: &Path, what: &str) -> String {
    format!(
        "{}: the symbol om_external_constant_{what} has no readable value; the model is \
         damaged, or was not written by onnx-mlir",
        model.display()
    )
}

/// The checks the library makes when it opens the file.
fn check_file(path: &Path, expected: &Expected, problems: &mut Vec<String>) {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            problems.push(format!("cannot inspect {}: {e}", path.display()));
            return;
        }
    };
    if !meta.is_file() {
        problems.push(format!(
            "{} is not a regular file (a directory, FIFO or device): the library refuses it; \
             put the constants file there",
            path.display()
        ));
        return;
    }
    if let Some(size) = expected.size {
        if meta.len() < size {
            problems.push(format!(
                "{} has {} bytes but the model needs {size}: the library refuses a short file \
                 (onnx-mlir's loader would map it and fault past its end); copy the whole \
                 constants file the model was compiled with",
                path.display(),
                meta.len()
            ));
        }
    }
}

fn origin_name(o: Origin) -> &'static str {
    match o {
        Origin::Absolute => "absolute",
        Origin::SearchPath => "OM_CONSTANT_PATH",
        Origin::ModelFolder => "model folder",
        Origin::CurrentDir => "current directory",
    }
}

fn state_text(p: &Place) -> String {
    match &p.state {
        Ok(m) if m.is_file() => format!("{} bytes", m.len()),
        Ok(_) => "not a regular file".into(),
        Err(e) => format!("missing ({e})"),
    }
}

fn to_text(r: &Findings) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "model: {} ({}, {})",
        r.model.display(),
        r.format,
        endian(r.model_is_le)
    );
    let _ = writeln!(
        s,
        "loader: {}",
        match r.loader {
            Loader::OwnCopy => format!("its own copy ({})", r.defined.join(", ")),
            Loader::Imported => format!("imported ({}): om-constants", r.imported.join(", ")),
            Loader::None => "none".into(),
            Loader::OmConstants => "om-constants itself (linked in)".into(),
        }
    );
    let unknown = || "unknown".to_string();
    let _ = writeln!(
        s,
        "constants file: {}",
        r.fname_used.clone().unwrap_or_else(unknown)
    );
    let _ = writeln!(
        s,
        "expected size: {}",
        r.expected
            .size
            .map_or_else(unknown, |n| format!("{n} bytes"))
    );
    let _ = writeln!(
        s,
        "byte order: {}",
        r.expected.is_le.map_or_else(unknown, |le| format!(
            "{} (this machine: {})",
            endian(le),
            endian(cfg!(target_endian = "little"))
        ))
    );
    if let Some(dir) = &r.search_path {
        let _ = writeln!(
            s,
            "OM_CONSTANT_PATH: {} (the only folder searched)",
            dir.display()
        );
    }
    for p in &r.places {
        let mark = if r.chosen.as_ref() == Some(&p.candidate.path) {
            "*"
        } else {
            " "
        };
        let _ = writeln!(
            s,
            "  {mark} {} [{}]: {}",
            p.candidate.path.display(),
            origin_name(p.candidate.origin),
            state_text(p)
        );
    }
    if let Some(c) = &r.chosen {
        let _ = writeln!(s, "om-constants loads: {}", c.display());
    }
    if let Some(st) = r.strategy {
        let _ = writeln!(s, "strategy (auto): {st}");
    }
    if let Some(p) = &r.own_loader_opens {
        let _ = writeln!(s, "the model's own loader opens: {}", p.display());
    }
    for n in &r.notes {
        let _ = writeln!(s, "note: {n}");
    }
    for p in &r.problems {
        let _ = writeln!(s, "problem: {p}");
    }
    let verdict = if !r.problems.is_empty() {
        "would fail to load"
    } else if r.fname_used.is_none() {
        "nothing to load (no external constants file)"
    } else {
        "loads"
    };
    let _ = writeln!(s, "verdict: {verdict}");
    s
}

fn to_json(r: &Findings) -> serde_json::Value {
    json!({
        "model": r.model.display().to_string(),
        "format": r.format,
        "model_little_endian": r.model_is_le,
        "loader": r.loader.name(),
        "defined": r.defined,
        "imported": r.imported,
        "stripped": r.expected.stripped,
        "file_name": r.fname_used,
        "file_name_from_symbols": r.expected.fname.is_some(),
        "expected_size": r.expected.size,
        "little_endian": r.expected.is_le,
        "host_little_endian": cfg!(target_endian = "little"),
        "search_path": r.search_path.as_ref().map(|p| p.display().to_string()),
        "candidates": r.places.iter().map(|p| json!({
            "path": p.candidate.path.display().to_string(),
            "origin": origin_name(p.candidate.origin),
            "exists": p.state.is_ok(),
            "regular_file": p.state.as_ref().is_ok_and(|m| m.is_file()),
            "bytes": p.state.as_ref().ok().map(|m| m.len()),
        })).collect::<Vec<_>>(),
        "chosen": r.chosen.as_ref().map(|p| p.display().to_string()),
        "own_loader_opens": r.own_loader_opens.as_ref().map(|p| p.display().to_string()),
        "strategy": r.strategy,
        "notes": r.notes,
        "problems": r.problems,
        "loads": r.problems.is_empty(),
    })
}
