//! Option parsing (`Config::from_lookup`, `parse_size`, `parse_seconds`,
//! `parse_bool`): whatever a deployment script puts into the environment,
//! parsing never panics, a refused value is reported once and leaves the
//! default, and the parsers' results keep their promises.

#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use libfuzzer_sys::fuzz_target;
use om_constants::config::{parse_bool, parse_seconds, parse_size, Config};

/// Every option, and the fault-injection build's one (ignored here).
fn vars() -> Vec<&'static str> {
    let mut v = om_constants::config::OPTIONS.to_vec();
    v.push("OM_CONSTANT_FAULTS");
    v
}

fuzz_target!(|input: &[u8]| {
    // Values separated by NUL, one per variable in order; an empty value
    // is an unset variable.
    let values: Vec<&[u8]> = input.split(|b| *b == 0).collect();
    let vars = vars();
    let (config, problems) = Config::from_lookup(|name| {
        let i = vars.iter().position(|v| *v == name)?;
        let v = values.get(i).filter(|v| !v.is_empty())?;
        Some(OsString::from_vec(v.to_vec()))
    });
    let set = vars
        .iter()
        .enumerate()
        .filter(|(i, name)| {
            **name != "OM_CONSTANT_PATH" && values.get(*i).is_some_and(|v| !v.is_empty())
        })
        .count();
    assert!(problems.len() <= set, "{problems:?}");
    assert!((1..=1024).contains(&config.read_threads));
    assert!(!config.wait_timeout.is_zero());
    assert!(config.mmap_limit.is_none_or(|l| l > 0));

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
