//! `om-constants check MODEL`: what a deployer needs to know about a
//! compiled model before running it, read from the model's file alone.
//!
//! - Which loader answers the model's calls in each host setup: a plain
//!   host, and one that puts om-constants in the global scope first. A
//!   stock onnx-mlir model *defines* the loader itself (`-lcruntime`), and
//!   om-constants takes it over only where ELF interposition reaches it
//!   (binding.rs says when it cannot); a relinked model *imports* it, from
//!   whichever of its `DT_NEEDED` libraries exports it first.
//! - The constants file the model expects: onnx-mlir's internal symbols
//!   `om_external_constant_filename`, `_filesize` and `_isLE` (each possibly
//!   followed by the module's `_<tag>` postfix), found in the symbol table
//!   unless the model is stripped.
//! - The file each loader would open: om-constants' own search
//!   (`om_constants::locate`), onnx-mlir's one path; whether it is there with
//!   enough bytes and in this machine's byte order, and the strategy `auto`
//!   would pick.
//!
//! The exit status is 0 only when the weights load correctly in every host
//! setup named (`--host` names one); 1 otherwise, or when the model cannot
//! be read, with each reason and its fix.

mod binding;
mod code;
mod pages;

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
    /// The host setup to judge: `plain` (nothing of om-constants loaded
    /// before the model), `om-constants-first` (the host links it, preloads
    /// it, or opens it RTLD_GLOBAL, before the model), or `all`.
    #[arg(long, value_enum, default_value = "all")]
    pub host: HostArg,
}

/// `--host`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum HostArg {
    All,
    Plain,
    OmConstantsFirst,
}

/// A way a host can load the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Host {
    /// Nothing of om-constants in the global scope before the model.
    Plain,
    /// om-constants in the global scope before the model.
    OmFirst,
}

impl Host {
    fn name(self) -> &'static str {
        match self {
            Host::Plain => "plain",
            Host::OmFirst => "om-constants-first",
        }
    }

    fn words(self) -> &'static str {
        match self {
            Host::Plain => "a plain host (nothing of om-constants loaded before the model)",
            Host::OmFirst => {
                "om-constants first (the host links it, LD_PRELOAD, or dlopen / ctypes.CDLL \
                 with RTLD_GLOBAL, before the model)"
            }
        }
    }
}

/// Who answers the model's loader calls in one setup, what it opens, and
/// whether the weights load.
struct Setup {
    host: Host,
    /// In words: "om-constants", "the model's own copy of onnx-mlir's
    /// loader", "onnx-mlir's loader in /x/libcruntime.so".
    loader: String,
    /// The file it opens, where that can be known.
    opens: Option<PathBuf>,
    /// Why the weights would not load correctly, each with its fix.
    problems: Vec<String>,
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

/// The loader functions an onnx-mlir model calls, by emitted shape.
const CALLED: [&str; 4] = [
    "omLoadConstantData",
    "omMMapBinaryFile",
    "omUnloadConstantData",
    "omGetExternalConstantAddr",
];

/// Which loader a model's calls reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loader {
    /// The model defines its own copies (exported or not).
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
    /// No symbol table: the name is unknown (the size and byte order may
    /// still be read from the code).
    stripped: bool,
    /// `size` and `is_le` were read from the calls in the code
    /// (code.rs), not from symbols.
    size_from_code: bool,
    is_le_from_code: bool,
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
    /// Defined in the model but not exported (hidden, `--exclude-libs`).
    hidden: Vec<&'static str>,
    imported: Vec<&'static str>,
    /// Why the model's own loader can never be taken over, if it cannot.
    bound_inside: Option<String>,
    /// An imported loader's library when nothing is loaded first, or the
    /// libraries that could not be found.
    provider: Option<binding::Provider>,
    expected: Expected,
    fname_used: Option<String>,
    search_path: Option<PathBuf>,
    places: Vec<Place>,
    chosen: Option<PathBuf>,
    own_loader_opens: Option<PathBuf>,
    strategy: Option<&'static str>,
    /// How the file's page cache backs a mapping now ([`pages::line`]).
    pages: Option<String>,
    /// The host setups judged, each with its loader and outcome.
    setups: Vec<Setup>,
    /// What a deployer should know though the load would work.
    notes: Vec<String>,
    /// What may give wrong weights though the load works.
    warnings: Vec<String>,
}

impl Findings {
    /// Whether the weights load correctly in every setup judged.
    fn loads(&self) -> bool {
        self.setups.iter().all(|s| s.problems.is_empty())
    }

    /// Every setup's problems, once each.
    fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in self.setups.iter().flat_map(|s| &s.problems) {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        out
    }
}

pub(crate) fn run(args: Args) -> ExitCode {
    let hosts: &[Host] = match args.host {
        HostArg::All => &[Host::Plain, Host::OmFirst],
        HostArg::Plain => &[Host::Plain],
        HostArg::OmConstantsFirst => &[Host::OmFirst],
    };
    match inspect(&args.model, hosts) {
        Ok(report) => {
            if args.json {
                println!("{}", to_json(&report));
            } else {
                print!("{}", to_text(&report));
            }
            if report.loads() {
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
fn inspect(model: &Path, hosts: &[Host]) -> Result<Findings, String> {
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
    let exported = |f: &str| exports.iter().any(|x| x.name() == f.as_bytes());
    let defined: Vec<&'static str> = LOADER_FUNCTIONS
        .into_iter()
        .filter(|f| exported(f))
        .collect();
    let imported_here = |f: &str| imports.iter().any(|x| x.name() == f.as_bytes());
    // Defined in an ELF symbol table but neither exported nor imported: a
    // hidden copy. (A PE file's import thunks are definitions of the
    // imported names, so only ELF is read this way.)
    let elf = file.format() == object::BinaryFormat::Elf;
    let hidden: Vec<&'static str> = LOADER_FUNCTIONS
        .into_iter()
        .filter(|f| elf && !exported(f) && !imported_here(f))
        .filter(|f| {
            file.symbols()
                .any(|s| s.is_definition() && s.name_bytes().is_ok_and(|n| n == f.as_bytes()))
        })
        .collect();
    let imported: Vec<&'static str> = LOADER_FUNCTIONS
        .into_iter()
        .filter(|f| imported_here(f))
        .collect();
    let loader = if exported(OM_CONSTANTS_MARK) {
        Loader::OmConstants
    } else if !defined.is_empty() || !hidden.is_empty() {
        Loader::OwnCopy
    } else if !imported.is_empty() {
        Loader::Imported
    } else {
        Loader::None
    };
    let dynamic = binding::dynamic(&file);
    let bound_inside = match loader {
        Loader::OwnCopy if !elf => Some(
            "Windows binds a DLL's calls to its own functions when it is linked, and each \
             import to the DLL it names: nothing in the process can take them over"
                .to_string(),
        ),
        Loader::OwnCopy => {
            binding::bound_inside(&file, &dynamic, &called(&defined), &called(&hidden))
        }
        _ => None,
    };
    let provider = match loader {
        Loader::Imported if !elf => binding::pe_provider(&file, imported[0], "om_constants"),
        Loader::Imported => Some(binding::provider(
            &model_abs,
            &dynamic,
            imported[0],
            OM_CONSTANTS_MARK,
        )),
        _ => None,
    };

    let mut expected = expected_file(&file, model)?;
    if expected.size.is_none() || expected.is_le.is_none() {
        if let Some(args) = code::loader_arguments(&file, &CALLED[..2]) {
            if expected.size.is_none() && args.size.is_some() {
                expected.size = args.size;
                expected.size_from_code = true;
            }
            if expected.is_le.is_none() && args.is_le.is_some() {
                expected.is_le = args.is_le;
                expected.is_le_from_code = true;
            }
        }
    }
    // Whether the model calls a loader (a model linked with om-constants'
    // static library counts only if its symbols name a constants file).
    let calls_loader = matches!(loader, Loader::OwnCopy | Loader::Imported);
    let mut notes = Vec::new();
    let mut warnings = Vec::new();
    if loader == Loader::None {
        notes.push(
            "the model neither defines nor imports onnx-mlir's constants loader: it has no \
             external constants file, or was compiled without --store-constants-to-file"
                .into(),
        );
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
            (
                "om_external_constant_filesize",
                expected.size.is_none() || expected.size_from_code,
            ),
            (
                "om_external_constant_isLE",
                expected.is_le.is_none() || expected.is_le_from_code,
            ),
        ]
        .into_iter()
        .filter_map(|(n, gone)| gone.then_some(n))
        .collect();
        if !missing.is_empty() {
            let from_code: Vec<&str> = [
                ("the size", expected.size_from_code),
                ("the byte order", expected.is_le_from_code),
            ]
            .into_iter()
            .filter_map(|(n, yes)| yes.then_some(n))
            .collect();
            let unknown: Vec<&str> = [
                ("the size", expected.size.is_none()),
                ("the byte order", expected.is_le.is_none()),
            ]
            .into_iter()
            .filter_map(|(n, yes)| yes.then_some(n))
            .collect();
            notes.push(format!(
                "the symbol table lacks {}: an optimising build folds these internal constants \
                 into the code that uses them, or the model predates them{}{}",
                missing.join(", "),
                if from_code.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; {} read from the arguments of the model's calls to its loader",
                        from_code.join(" and ")
                    )
                },
                if unknown.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; {} not checked (read from the code on x86-64 only){}",
                        unknown.join(" and "),
                        if expected.is_le.is_none() {
                            "; the byte order is taken from the object file's, which onnx-mlir \
                             writes the constants in"
                        } else {
                            ""
                        }
                    )
                }
            ));
        }
    }
    if expected.stripped && calls_loader {
        notes.push(format!(
            "the model is stripped: onnx-mlir's symbols om_external_constant_filename, \
             _filesize and _isLE are internal and were removed with the symbol table, so the \
             file's name is guessed ({}){}; keep an unstripped copy of the model to check it \
             fully",
            fname_used.as_deref().unwrap_or("?"),
            if expected.size.is_some() {
                ", and its size and byte order read from the code's calls to the loader"
            } else {
                " and its size and byte order are not checked"
            }
        ));
    }

    // The check runs in the deployer's environment: an OM_CONSTANT_PATH
    // here is one the host would start with, so deliberate.
    let search_path = SearchPath::Environment.current();
    let cwd = std::env::current_dir().ok();
    let mut places = Vec::new();
    let mut chosen = None;
    let mut own_loader_opens = None;
    let mut strategy = None;
    let mut pages = None;
    // The problems of om-constants' load, and of onnx-mlir's.
    let mut om_problems = Vec::new();
    let mut own_problems = Vec::new();
    if let Some(fname) = &fname_used {
        let name = Path::new(fname);
        // The library's own search, from the model's folder.
        let list = locate::candidates(name, search_path.as_ref(), Some(&model_abs), cwd.as_deref());
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
                check_file(&found.path, &expected, &mut om_problems);
                chosen = Some(found.path);
            }
            Err(e) => om_problems.push(e.to_string()),
        }
        if let (Some(dir), Some(model_dir)) = (&search_path, model_abs.parent()) {
            let theirs = dir.dir().join(name);
            let beside = model_dir.join(name);
            if theirs != beside && theirs.is_file() && beside.is_file() && differ(&theirs, &beside)
            {
                warnings.push(format!(
                    "OM_CONSTANT_PATH={} holds {} and the model's folder holds {}, and the two \
                     differ: a host started with this OM_CONSTANT_PATH loads the first for \
                     every model; if the model was compiled with the second, it runs on the \
                     wrong weights. Unset OM_CONSTANT_PATH to load the file beside each model",
                    dir.dir().display(),
                    theirs.display(),
                    beside.display()
                ));
            }
        }
        if let (Some(size), Some(path)) = (expected.size, &chosen) {
            let (config, _) = Config::from_lookup(|n| std::env::var_os(n));
            let st = match std::fs::File::open(path) {
                Ok(f) => om_constants::resolve_for(config.strategy, size, config.mmap_limit, &f),
                Err(_) => om_constants::resolve(config.strategy, size, config.mmap_limit),
            };
            strategy = Some(st.name());
            if om_problems.is_empty() {
                pages = Some(pages::line(path, size, st));
            }
        }
        // onnx-mlir's loader opens exactly one path.
        let path = match &search_path {
            Some(dir) => dir.dir().join(name),
            None => name.to_path_buf(),
        };
        match std::fs::metadata(&path) {
            Ok(_) => check_file(&path, &expected, &mut own_problems),
            Err(e) => own_problems.push(format!(
                "onnx-mlir's loader opens exactly {} ({}, else the file name in the current \
                 directory), and it cannot: {e}; put om-constants in the global scope before \
                 the model (docs/ONNX-MLIR.md), or run the host where that path exists",
                path.display(),
                if search_path.is_some() {
                    "OM_CONSTANT_PATH is set"
                } else {
                    "OM_CONSTANT_PATH is unset"
                }
            )),
        }
        own_loader_opens = Some(path);
    }
    if let Some(le) = expected
        .is_le
        .or((calls_loader).then(|| file.is_little_endian()))
    {
        let host_le = cfg!(target_endian = "little");
        if le != host_le {
            om_problems.push(format!(
                "the model's constants are {} and this machine is {}: the library refuses the \
                 load (a wrong byte order would give wrong weights); compile the model for this \
                 machine",
                endian(le),
                endian(host_le)
            ));
            own_problems.push(format!(
                "the model's constants are {}, this machine is {}: onnx-mlir's loader refuses \
                 them (releases from late 2024 to early 2026 load them, giving wrong weights)",
                endian(le),
                endian(host_le)
            ));
        }
    }

    let om = |host| Setup {
        host,
        loader: "om-constants".into(),
        opens: chosen.clone(),
        problems: om_problems.clone(),
    };
    let onnx_mlir = |host, loader: String| Setup {
        host,
        loader,
        opens: own_loader_opens.clone(),
        problems: own_problems.clone(),
    };
    let setups: Vec<Setup> = match loader {
        _ if fname_used.is_none() => Vec::new(),
        Loader::None => Vec::new(),
        Loader::OmConstants => hosts.iter().map(|h| om(*h)).collect(),
        Loader::OwnCopy => hosts
            .iter()
            .map(|&h| match (h, &bound_inside) {
                (Host::Plain, _) => {
                    onnx_mlir(h, "the model's own copy of onnx-mlir's loader".into())
                }
                (Host::OmFirst, None) => om(h),
                (Host::OmFirst, Some(why)) => {
                    let mut s = onnx_mlir(h, "the model's own copy of onnx-mlir's loader".into());
                    s.problems.insert(
                        0,
                        format!(
                            "om-constants can never take this model's loader over: {why}; \
                             not even LD_PRELOAD reaches it. Relink the model with \
                             om-constants ahead of the runtime library (docs/ONNX-MLIR.md, \
                             \"Relinking from `--EmitObj`\"), or without that option"
                        ),
                    );
                    s
                }
            })
            .collect(),
        Loader::Imported => hosts
            .iter()
            .map(|&h| match (h, &provider) {
                (_, Some(binding::Provider::Missing { not_found })) if !not_found.is_empty() => {
                    let mut s = om(h);
                    s.loader = "none: the model cannot be opened".into();
                    s.problems.insert(0, missing_libraries(not_found));
                    s
                }
                (Host::OmFirst, _) if elf => om(h),
                (
                    _,
                    Some(binding::Provider::Found {
                        lib,
                        is_om_constants: true,
                    }),
                ) => {
                    let mut s = om(h);
                    s.loader = format!("om-constants ({})", lib.display());
                    s
                }
                (_, Some(binding::Provider::Found { lib, .. })) => {
                    onnx_mlir(h, format!("onnx-mlir's loader in {}", lib.display()))
                }
                _ => {
                    let mut s = om(h);
                    s.loader = "none: nothing the model needs defines it".into();
                    s.opens = None;
                    s.problems = vec![format!(
                        "the model imports {} but none of the libraries it needs defines \
                         them: a plain host fails with \"undefined symbol\"; put \
                         om-constants in the global scope before the model, or link the model \
                         with -lom_constants",
                        imported.join(", ")
                    )];
                    s
                }
            })
            .collect(),
    };
    if loader == Loader::OwnCopy && bound_inside.is_none() {
        notes.push(format!(
            "the model carries its own constants loader ({}, as onnx-mlir's runtime library \
             puts it there): om-constants serves it only when om-constants is in the \
             process's global scope before the model is loaded: link the host with \
             -lom_constants, start it with LD_PRELOAD=/path/to/libom_constants.so, or in Python \
             call ctypes.CDLL('/path/to/libom_constants.so', mode=ctypes.RTLD_GLOBAL), \
             before loading the model (docs/ONNX-MLIR.md)",
            defined.join(", ")
        ));
    }

    Ok(Findings {
        model: model_abs,
        format: format!("{:?}", file.format()),
        model_is_le: file.is_little_endian(),
        loader,
        defined,
        hidden,
        imported,
        bound_inside,
        provider,
        expected,
        fname_used,
        search_path: search_path.map(|d| d.dir().to_path_buf()),
        places,
        chosen,
        own_loader_opens,
        strategy,
        pages,
        setups,
        notes,
        warnings,
    })
}

/// The loader functions among `names` that emitted code calls.
fn called(names: &[&'static str]) -> Vec<&'static str> {
    names
        .iter()
        .copied()
        .filter(|n| CALLED.contains(n))
        .collect()
}

/// The problem of a model whose libraries cannot all be found.
fn missing_libraries(not_found: &[String]) -> String {
    format!(
        "the model needs {} and the dynamic loader will not find {}: dlopen fails with \
         \"cannot open shared object file\". Link the model with -Wl,-rpath,<folder of the \
         library>, install the library where the loader looks (ldconfig), or set \
         LD_LIBRARY_PATH",
        not_found.join(", "),
        if not_found.len() == 1 { "it" } else { "them" }
    )
}

/// Whether two files' bytes differ (same file: no).
fn differ(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) else {
        return true;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if (ma.dev(), ma.ino()) == (mb.dev(), mb.ino()) {
            return false;
        }
    }
    if ma.len() != mb.len() {
        return true;
    }
    let (Ok(mut fa), Ok(mut fb)) = (std::fs::File::open(a), std::fs::File::open(b)) else {
        return true;
    };
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let (Ok(na), Ok(nb)) = (read_full(&mut fa, &mut ba), read_full(&mut fb, &mut bb)) else {
            return true;
        };
        if na != nb || ba[..na] != bb[..nb] {
            return true;
        }
        if na == 0 {
            return false;
        }
    }

    fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        Ok(n)
    }
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
        Origin::SearchPathHint => "OM_CONSTANT_PATH (hint)",
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
            Loader::OwnCopy if r.defined.is_empty() => {
                format!("its own copy, not exported ({})", r.hidden.join(", "))
            }
            Loader::OwnCopy => format!("its own copy ({})", r.defined.join(", ")),
            Loader::Imported => format!(
                "imported ({}), from {}",
                r.imported.join(", "),
                match &r.provider {
                    Some(binding::Provider::Found { lib, .. }) => lib.display().to_string(),
                    _ => "no library it needs".into(),
                }
            ),
            Loader::None => "none".into(),
            Loader::OmConstants => "om-constants itself (linked in)".into(),
        }
    );
    if let Some(why) = &r.bound_inside {
        let _ = writeln!(s, "taken over by om-constants: never: {why}");
    }
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
    if let Some(p) = &r.pages {
        let _ = writeln!(s, "2 MiB pages: {p}");
    }
    if let Some(p) = &r.own_loader_opens {
        let _ = writeln!(s, "the model's own loader opens: {}", p.display());
    }
    for setup in &r.setups {
        let _ = writeln!(
            s,
            "in {}: {}{}: {}",
            setup.host.words(),
            setup.loader,
            setup
                .opens
                .as_ref()
                .map(|p| format!(" opens {}", p.display()))
                .unwrap_or_default(),
            if setup.problems.is_empty() {
                "loads"
            } else {
                "fails"
            }
        );
    }
    for n in &r.notes {
        let _ = writeln!(s, "note: {n}");
    }
    for w in &r.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    for p in r.problems() {
        let _ = writeln!(s, "problem: {p}");
    }
    let hosts = |ok: bool| {
        r.setups
            .iter()
            .filter(|x| x.problems.is_empty() == ok)
            .map(|x| x.host.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let verdict = if r.setups.is_empty() {
        "nothing to load (no external constants file)".to_string()
    } else if r.loads() {
        format!("loads ({})", hosts(true))
    } else if r.setups.iter().any(|x| x.problems.is_empty()) {
        format!("loads ({}); fails ({})", hosts(true), hosts(false))
    } else {
        format!("would fail to load ({})", hosts(false))
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
        "defined_not_exported": r.hidden,
        "imported": r.imported,
        "never_taken_over": r.bound_inside,
        "provider": match &r.provider {
            Some(binding::Provider::Found { lib, is_om_constants }) => json!({
                "library": lib.display().to_string(),
                "om_constants": is_om_constants,
            }),
            Some(binding::Provider::Missing { not_found }) => json!({ "not_found": not_found }),
            None => serde_json::Value::Null,
        },
        "stripped": r.expected.stripped,
        "file_name": r.fname_used,
        "file_name_from_symbols": r.expected.fname.is_some(),
        "expected_size": r.expected.size,
        "expected_size_from_code": r.expected.size_from_code,
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
        "huge_pages": r.pages,
        "setups": r.setups.iter().map(|x| json!({
            "host": x.host.name(),
            "loader": x.loader,
            "opens": x.opens.as_ref().map(|p| p.display().to_string()),
            "loads": x.problems.is_empty(),
            "problems": x.problems,
        })).collect::<Vec<_>>(),
        "notes": r.notes,
        "warnings": r.warnings,
        "problems": r.problems(),
        "loads": r.loads(),
    })
}
