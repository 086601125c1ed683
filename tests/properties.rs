//! Property tests, run for a bounded time (`OM_CONSTANTS_PROPERTY_SECONDS`,
//! default 60), over the code that takes untrusted text and numbers:
//! option parsing, file locating, and the size/offset arithmetic.
//!
//! These run on the stable toolchain with every `cargo test`, beside the
//! coverage-guided fuzzers of fuzz/ (cargo-fuzz, nightly, scripts/fuzz.sh),
//! and check properties across whole calls (requests through a registry,
//! read splits) that the fuzz targets do not. They run the committed corpus
//! in tests/property_corpus/ first, then mutations of it and random inputs from
//! a generator seeded from the clock (the seed is printed). A failure
//! prints the input: add it to the corpus.

// Unix only: its names are raw POSIX bytes. Windows names are UTF-8,
// tested by c_tests/windows/host.c (scripts/test-windows.sh).
#![cfg(unix)]

mod common;

use common::{Rng, HOST_IS_LE};

use std::ffi::{OsStr, OsString};
use std::os::raw::c_void;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::{Duration, Instant};

use om_constants::config::SearchDir;
use om_constants::config::{parse_seconds, parse_size, Config};
use om_constants::locate::{candidates, choose};
use om_constants::{ErrorKind, Registry, Request};

/// Every option, and the fault-injection build's one (ignored here).
fn vars() -> Vec<&'static str> {
    let mut v = om_constants::config::OPTIONS.to_vec();
    v.extend(om_constants::config::PER_LOAD_OPTIONS);
    v.push("OM_CONSTANT_FAULTS");
    v
}

/// Random text and numbers for the properties.
trait Gen {
    fn below(&mut self, n: u64) -> u64;
    fn text(&mut self, corpus: &[String]) -> String;
}

impl Gen for Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Text biased towards what the parsers look for.
    fn text(&mut self, corpus: &[String]) -> String {
        const PIECES: [&str; 24] = [
            "0",
            "1",
            "9",
            "64",
            "4096",
            "18446744073709551615",
            "k",
            "M",
            "G",
            "T",
            "i",
            "B",
            " ",
            ".",
            "-",
            "e",
            "s",
            "/",
            "..",
            "=",
            ",",
            "é",
            "\0",
            "read",
        ];
        if !corpus.is_empty() && self.below(2) == 0 {
            let mut s: Vec<char> = corpus[self.below(corpus.len() as u64) as usize]
                .chars()
                .collect();
            for _ in 0..=self.below(3) {
                let at = self.below(s.len() as u64 + 1) as usize;
                match self.below(3) {
                    0 if !s.is_empty() => {
                        s.remove(at.min(s.len() - 1));
                    }
                    1 => s.insert(
                        at,
                        PIECES[self.below(24) as usize]
                            .chars()
                            .next()
                            .unwrap_or('x'),
                    ),
                    _ => s.insert(at, char::from_u32(self.below(0x3000) as u32).unwrap_or('?')),
                }
            }
            return s.into_iter().collect();
        }
        (0..self.below(6))
            .map(|_| PIECES[self.below(24) as usize])
            .collect()
    }
}

fn corpus(name: &str) -> Vec<String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/property_corpus")
        .join(name);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .map(str::to_string)
        .collect()
}

fn check_size(s: &str) {
    match parse_size(s) {
        Some(v) => {
            assert!(v > 0, "parse_size({s:?}) = 0");
            assert_eq!(parse_size(&v.to_string()), Some(v), "round trip of {s:?}");
        }
        None => {
            let t = s.trim();
            if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
                let n: Option<u64> = t.parse().ok();
                assert!(n.is_none() || n == Some(0), "digits {s:?} refused");
            }
        }
    }
    if let Some(d) = parse_seconds(s) {
        assert!(d > Duration::ZERO, "parse_seconds({s:?}) = 0");
    }
}

fn check_config(values: &[(usize, String)]) {
    let lookup = |name: &str| {
        values
            .iter()
            .rev()
            .find(|(i, _)| vars()[*i] == name)
            .map(|(_, v)| OsString::from(v))
    };
    let (c, problems) = Config::from_lookup(lookup);
    let given = values
        .iter()
        .map(|(i, _)| *i)
        .collect::<std::collections::BTreeSet<_>>();
    assert!(problems.len() <= given.len(), "{values:?}: {problems:?}");
    assert!((1..=1024).contains(&c.read_threads), "{values:?}");
    assert!(c.mmap_limit.is_none_or(|l| l > 0), "{values:?}");
    assert!(c.wait_timeout > Duration::ZERO, "{values:?}");
    for p in &problems {
        assert!(p.starts_with("ignoring OM_CONSTANT_"), "{p}");
    }
}

fn check_paths(fname: &str, search: Option<&str>, object: Option<&str>, cwd: Option<&str>) {
    for deliberate in [true, false] {
        check_paths_with(fname, search, deliberate, object, cwd);
    }
}

fn check_paths_with(
    fname: &str,
    search: Option<&str>,
    deliberate: bool,
    object: Option<&str>,
    cwd: Option<&str>,
) {
    let f = Path::new(fname);
    let dir = search.map(|d| {
        if deliberate {
            SearchDir::Deliberate(d.into())
        } else {
            SearchDir::Hint(d.into())
        }
    });
    let c = candidates(f, dir.as_ref(), object.map(Path::new), cwd.map(Path::new));
    if f.is_absolute() {
        assert_eq!(c.len(), 1, "{fname:?}");
        assert_eq!(c[0].path, f);
        return;
    }
    let model_path = object
        .and_then(|o| Path::new(o).parent())
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .map(|p| p.join(f));
    // A deliberate OM_CONSTANT_PATH is the only place searched; a hint is
    // one more, unless it names the model's own folder.
    let hint = search.map_or(0, |d| usize::from(model_path != Some(Path::new(d).join(f))));
    let expect = if search.is_some() && deliberate {
        1
    } else {
        usize::from(model_path.is_some()) + hint + usize::from(cwd.is_some())
    };
    assert_eq!(
        c.len(),
        expect,
        "{fname:?} {search:?} deliberate={deliberate} {object:?} {cwd:?}"
    );
    // Each candidate is a folder with the name appended, as given (no
    // normalisation that could change which file is meant).
    for cand in &c {
        let p = cand.path.as_os_str().as_bytes();
        assert!(
            p.ends_with(fname.as_bytes()),
            "{:?} does not end with {fname:?}",
            cand.path
        );
    }
    // Nothing here exists: the error lists every place tried.
    if !c.is_empty() && c.iter().all(|x| !x.path.exists()) {
        let e = choose(f, &c).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        for cand in &c {
            assert!(
                e.message().contains(&cand.path.display().to_string()),
                "{e}"
            );
        }
    }
}

fn check_request(name: &[u8], size: i64, is_le: i64) {
    let r = Request::new(OsStr::from_bytes(name), size, is_le);
    let ok = size > 0
        && (is_le != 0) == cfg!(target_endian = "little")
        && !name.is_empty()
        && name.len() < libc::PATH_MAX as usize;
    assert_eq!(r.is_ok(), ok, "{name:?} {size} {is_le}: {r:?}");
    if let Err(e) = r {
        assert!(!e.message().is_empty());
    }
}

fn check_offset(reg: &Registry, base: &AtomicPtr<c_void>, len: usize, offset: i64) {
    let out = AtomicPtr::new(std::ptr::null_mut());
    let r = reg.constant_address(&out, base, offset);
    let ok = offset >= 0 && (offset as u64) <= len as u64;
    assert_eq!(r.is_ok(), ok, "offset {offset} of {len}");
    let got = out.load(Ordering::Acquire) as usize;
    if ok {
        assert_eq!(got, base.load(Ordering::Acquire) as usize + offset as usize);
    } else {
        assert_eq!(got, 0, "unchanged on error");
    }
}

#[test]
fn parsers_locating_and_arithmetic_hold_their_properties() {
    let seconds: u64 = std::env::var("OM_CONSTANTS_PROPERTY_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let strings = corpus("strings.txt");
    let paths = corpus("paths.txt");

    // The corpus first, deterministically.
    for s in &strings {
        check_size(s);
        check_config(
            &vars()
                .iter()
                .enumerate()
                .map(|(i, _)| (i, s.clone()))
                .collect::<Vec<_>>(),
        );
    }
    for f in &paths {
        for d in &paths {
            check_paths(f, Some(d), Some(d), Some(d));
        }
        check_paths(f, None, None, None);
    }

    let sc = common::Scratch::new("fuzz");
    let len = 10_000;
    let file = sc.file("c.bin", len);
    let reg = Registry::new(Config {
        log: om_constants::log::Level::Off,
        ..Config::default()
    });
    let base = AtomicPtr::new(std::ptr::null_mut());
    reg.acquire(
        &base,
        &Request::new(file.as_os_str(), len as i64, HOST_IS_LE).unwrap(),
    )
    .unwrap();

    let seed = Instant::now().elapsed().as_nanos() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    println!("fuzz seed {seed:#x}, {seconds} s");
    let mut rng = Rng(seed);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut rounds = 0u64;
    while Instant::now() < deadline {
        for _ in 0..100 {
            let s = rng.text(&strings);
            check_size(&s);
            let values: Vec<(usize, String)> = (0..rng.below(5))
                .map(|_| (rng.below(vars().len() as u64) as usize, rng.text(&strings)))
                .collect();
            check_config(&values);
            let pick = |rng: &mut Rng| -> Option<String> {
                match rng.below(3) {
                    0 => None,
                    1 => Some(paths[rng.below(paths.len() as u64) as usize].clone()),
                    _ => Some(rng.text(&paths)),
                }
            };
            let fname = rng.text(&paths).replace('\0', "");
            let (a, b, c) = (pick(&mut rng), pick(&mut rng), pick(&mut rng));
            check_paths(&fname, a.as_deref(), b.as_deref(), c.as_deref());
            let name: Vec<u8> = rng.text(&paths).into_bytes();
            let size = match rng.below(4) {
                0 => rng.next() as i64,
                1 => i64::MAX - rng.below(3) as i64,
                2 => i64::MIN + rng.below(3) as i64,
                _ => rng.below(10) as i64 - 5,
            };
            check_request(&name, size, rng.below(3) as i64);
            let offset = match rng.below(3) {
                0 => rng.next() as i64,
                1 => rng.below(len as u64 + 3) as i64 - 1,
                _ => i64::MAX - rng.below(2) as i64,
            };
            check_offset(&reg, &base, len, offset);
        }
        rounds += 1;
    }
    reg.release(&base).unwrap();
    println!("fuzz: {} cases per property, no failure", rounds * 100);
    let _: PathBuf = file;
}
