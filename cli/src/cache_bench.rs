//! The packed-weights cache in the bench: a packing stand-in (transposing
//! every 1024x1024 f32 matrix of the constants file) at a first start,
//! which packs into the cache and commits, and at a second start, which
//! opens the cache and packs nothing; beside it, packing into the heap as
//! runtimes do without a cache. Each with its anonymous-memory growth
//! (/proc/self/smaps_rollup).

use std::path::Path;
use std::time::{Duration, Instant};

use om_constants::cache::Cache;
use om_constants::Config;

const N: usize = 1024;
const MATRIX: usize = N * N * 4;

/// One start: time, packing calls, anonymous memory growth (bytes).
pub(crate) struct Start {
    pub time: Duration,
    pub packs: usize,
    pub anon: u64,
}

pub(crate) struct Starts {
    pub matrices: usize,
    pub first: Start,
    pub second: Start,
    pub heap: Start,
}

fn anonymous() -> u64 {
    std::fs::read_to_string("/proc/self/smaps_rollup")
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("Anonymous:"))?.to_string();
            l.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// Transposes matrix `src` (row-major N x N f32) into `dst`.
fn transpose(src: &[f32], dst: &mut [f32]) {
    const B: usize = 32;
    for bi in (0..N).step_by(B) {
        for bj in (0..N).step_by(B) {
            for i in bi..bi + B {
                for j in bj..bj + B {
                    dst[j * N + i] = src[i * N + j];
                }
            }
        }
    }
}

fn touch(p: *const u8, len: usize) -> u64 {
    // SAFETY: callers pass `len` readable bytes.
    let b = unsafe { std::slice::from_raw_parts(p, len) };
    b.iter().step_by(4096).map(|x| u64::from(*x)).sum()
}

/// Runs the three starts on the first matrices of `weights`.
pub(crate) fn run(weights: &[u8], dir: &Path) -> Result<Starts, String> {
    let matrices = (weights.len() / MATRIX).clamp(1, 64);
    if weights.len() < MATRIX {
        return Err("the cache bench needs --size of at least 4 MiB".into());
    }
    // The constants file's bytes, seen as f32 matrices (page-aligned).
    let src = |m: usize| {
        let bytes = &weights[m * MATRIX..(m + 1) * MATRIX];
        // SAFETY: MATRIX bytes at a 4-aligned (page-aligned) address are
        // N*N valid f32 values (any bit pattern is an f32).
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), N * N) }
    };
    let path = dir.join(format!("om-constants-bench-{}.cache", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let config = Config {
        log: om_constants::log::Level::Off,
        ..Config::default()
    };
    let mut starts = Vec::new();
    for _ in 0..2 {
        let (a0, t0) = (anonymous(), Instant::now());
        let cache =
            Cache::open(&path, b"bench:transpose-v1", &config).map_err(|e| e.to_string())?;
        let mut packs = 0;
        let mut seen = 0;
        for m in 0..matrices {
            let name = format!("m{m}");
            if cache.lookup(&name).is_none() {
                let p = cache
                    .reserve(&name, MATRIX as u64, 64)
                    .map_err(|e| e.to_string())?;
                // SAFETY: reserve returned MATRIX writable, page-aligned bytes.
                let dst = unsafe { std::slice::from_raw_parts_mut(p.cast::<f32>(), N * N) };
                transpose(src(m), dst);
                packs += 1;
            }
        }
        cache.commit().map_err(|e| e.to_string())?;
        for m in 0..matrices {
            let (p, n) = cache
                .lookup(&format!("m{m}"))
                .ok_or("entry missing after commit")?;
            seen += touch(p, n);
        }
        std::hint::black_box(seen);
        starts.push(Start {
            time: t0.elapsed(),
            packs,
            anon: anonymous().saturating_sub(a0),
        });
        drop(cache);
    }
    let _ = std::fs::remove_file(&path);

    let (a0, t0) = (anonymous(), Instant::now());
    let mut heap: Vec<Vec<f32>> = Vec::with_capacity(matrices);
    for m in 0..matrices {
        let mut dst = vec![0f32; N * N];
        transpose(src(m), &mut dst);
        heap.push(dst);
    }
    let seen: u64 = heap.iter().map(|v| touch(v.as_ptr().cast(), MATRIX)).sum();
    std::hint::black_box(seen);
    let heap_start = Start {
        time: t0.elapsed(),
        packs: matrices,
        anon: anonymous().saturating_sub(a0),
    };
    drop(heap);
    let second = starts.pop().ok_or("no second start")?;
    let first = starts.pop().ok_or("no first start")?;
    Ok(Starts {
        matrices,
        first,
        second,
        heap: heap_start,
    })
}
