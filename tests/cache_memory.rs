//! After commit, packed weights are clean file-backed pages, not anonymous
//! memory (from /proc/self/smaps_rollup and /proc/self/smaps). Alone in its
//! process so that the figures are its own.

// Linux only: it reads the kernel's account of each mapping (smaps).
#![cfg(target_os = "linux")]

mod common;

use common::Scratch;
use om_constants::cache::Cache;
use om_constants::Config;

const ENTRIES: usize = 16;
const ENTRY: usize = 4 << 20;

fn anonymous_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap();
    let line = s.lines().find(|l| l.starts_with("Anonymous:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Dirty and resident kB of the mappings that contain `ptrs`.
fn dirty_and_rss_kb(ptrs: &[usize]) -> (u64, u64) {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let (mut dirty, mut rss, mut inside) = (0, 0, false);
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                inside = ptrs.iter().any(|p| (a..b).contains(p));
                continue;
            }
        }
        if !inside {
            continue;
        }
        let kb = || {
            line.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        if line.starts_with("Private_Dirty:") || line.starts_with("Shared_Dirty:") {
            dirty += kb();
        } else if line.starts_with("Rss:") {
            rss += kb();
        }
    }
    (dirty, rss)
}

/// The permissions ("rw-s", "r--s", ...) of the mappings that contain `ptrs`.
fn permissions(ptrs: &[usize]) -> Vec<String> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (a, b) = f.next()?.split_once('-')?;
            let range = usize::from_str_radix(a, 16).ok()?..usize::from_str_radix(b, 16).ok()?;
            let perms = f.next()?.to_string();
            ptrs.iter().any(|p| range.contains(p)).then_some(perms)
        })
        .collect()
}

fn fill(p: *mut u8, i: usize) {
    // SAFETY: each region holds ENTRY writable bytes.
    unsafe { std::ptr::write_bytes(p, (i + 1) as u8, ENTRY) };
}

#[test]
fn committed_entries_are_clean_file_pages_not_anonymous_memory() {
    let total_kb = (ENTRIES * ENTRY / 1024) as u64;

    // Baseline: the same packing into the heap grows anonymous memory by
    // the packed size (so the measurement below can fail).
    let before = anonymous_kb();
    let heap: Vec<Vec<u8>> = (0..ENTRIES).map(|i| vec![(i + 1) as u8; ENTRY]).collect();
    let heap_growth = anonymous_kb().saturating_sub(before);
    assert!(
        heap_growth >= total_kb * 9 / 10,
        "heap packing: +{heap_growth} kB"
    );
    drop(heap);

    let s = Scratch::new("cache-mem");
    let config = Config {
        log: om_constants::log::Level::Off,
        ..Config::default()
    };
    let c = Cache::open(&s.path("w.cache"), b"mem", &config).unwrap();
    let before = anonymous_kb();
    let ptrs: Vec<usize> = (0..ENTRIES)
        .map(|i| {
            let p = c.reserve(&format!("w{i}"), ENTRY as u64, 64).unwrap();
            fill(p, i);
            p as usize
        })
        .collect();
    let (dirty_before_commit, _) = dirty_and_rss_kb(&ptrs);
    assert!(
        permissions(&ptrs).iter().all(|p| p == "rw-s"),
        "{:?}",
        permissions(&ptrs)
    );
    c.commit().unwrap();
    let perms = permissions(&ptrs);
    assert!(
        !perms.is_empty() && perms.iter().all(|p| p == "r--s"),
        "read-only after commit: {perms:?}"
    );
    let growth = anonymous_kb().saturating_sub(before);
    let (dirty, rss) = dirty_and_rss_kb(&ptrs);
    println!(
        "packed {total_kb} kB: anonymous +{growth} kB (heap: +{heap_growth} kB); \
         dirty {dirty_before_commit} kB before commit, {dirty} kB after; resident {rss} kB"
    );
    assert!(
        dirty_before_commit >= total_kb * 9 / 10,
        "packed pages start dirty"
    );
    assert!(
        growth < total_kb / 8,
        "anonymous memory grew by {growth} kB"
    );
    assert_eq!(dirty, 0, "committed pages are clean");
    assert!(rss >= total_kb * 9 / 10, "and still resident, file-backed");
}
