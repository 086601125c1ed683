//! Option parsing (`Config::from_lookup`, `parse_size`, `parse_seconds`,
//! `parse_bool`): whatever a deployment script puts into the environment,
//! parsing never panics, a refused value is reported once and leaves the
//! default, and the parsers' results keep their promises.

#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use libfuzzer_sys::fuzz_target;
use om_constants::config::{parse_bool, parse_seconds, parse_size, Config};

const VARS: [&str; 12] = [
    "OM_CONSTANT_LOAD",
    "OM_CONSTANT_MMAP_LIMIT",
    "OM_CONSTANT_WAIT_TIMEOUT",
    "OM_CONSTANT_LOG",
    "OM_CONSTANT_KEEP",
    "OM_CONSTANT_PATH",
    "OM_CONSTANT_READ_THREADS",
    "OM_CONSTANT_DIRECT_IO",
    "OM_CONSTANT_HUGE_PAGES",
    "OM_CONSTANT_PREFETCH",
    "OM_CONSTANT_MLOCK",
    "OM_CONSTANT_FAULTS",
];

fuzz_target!(|input: &[u8]| {
    // Values separated by NUL, one per variable in order; an empty value
    // is an unset variable.
    let values: Vec<&[u8]> = input.split(|b| *b == 0).collect();
    let (config, problems) = Config::from_lookup(|name| {
        let i = VARS.iter().position(|v| *v == name)?;
        let v = values.get(i).filter(|v| !v.is_empty())?;
        Some(OsString::from_vec(v.to_vec()))
    });
    let set = VARS
        .iter()
        .enumerate()
        .filter(|(i, name)| **name != "OM_CONSTANT_PATH" && values.get(*i).is_some_and(|v| !v.is_empty()))
        .count();
    assert!(problems.len() <= set, "{problems:?}");
    assert!((1..=1024).contains(&config.read_threads));
    assert!(!config.wait_timeout.is_zero());
    assert!(config.mmap_limit.map_or(true, |l| l > 0));

    for v in &values {
        let text = String::from_utf8_lossy(v);
        if let Some(n) = parse_size(&text) {
            assert!(n > 0, "{text:?}");
        }
        if let Some(d) = parse_seconds(&text) {
            assert!(!d.is_zero() && d.as_secs_f64() <= 1e9, "{text:?}");
        }
        let _ = parse_bool(&text);
    }
});
