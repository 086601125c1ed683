//! One bench run's figures, and the two ways they are printed: the table
//! and the JSON.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};

use super::deploy::Deploy;
use super::methods::{Method, MethodId, Race};
use super::per_call::{FastPath, Figures};
use super::steady::Steady;
use super::targets::{verdict, Target};
use crate::cache_bench;

/// Everything one bench run measured.
pub(super) struct Report {
    pub methods: Vec<Method>,
    pub races: Vec<Race>,
    pub targets: Vec<Target>,
    pub size: usize,
    pub runs: usize,
    pub cpus: usize,
    pub cold: bool,
    pub threads: usize,
    /// ns/call of the fast path and of onnx-mlir's check, best and median.
    pub fast: FastPath,
    /// Peak RSS of the read race, bytes.
    pub peak: u64,
    /// The packed-weights cache's starts.
    pub cache: cache_bench::Starts,
    /// The weights' speed after load.
    pub steady: Steady,
    pub deploy: Deploy,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Report {
    /// The fastest total (s) of a method, NaN if it did not run.
    pub(super) fn min_of(&self, id: MethodId) -> f64 {
        self.methods
            .iter()
            .find(|m| m.id == id)
            .map_or(f64::NAN, |m| m.min().as_secs_f64())
    }

    /// The fastest of the `pread` baselines.
    pub(super) fn best_pread(&self) -> Option<&Method> {
        self.methods
            .iter()
            .filter(|m| matches!(m.id, MethodId::Pread(_)))
            .min_by_key(|m| m.min())
    }

    /// Min totals (s) of the baselines the ratios divide by: 1-thread read,
    /// best pread, plain mmap.
    pub(super) fn baselines(&self) -> (f64, f64, f64) {
        (
            self.min_of(MethodId::OneThreadRead),
            self.best_pread()
                .map_or(f64::NAN, |m| m.min().as_secs_f64()),
            self.min_of(MethodId::PlainMmap),
        )
    }

    /// The table, as printed to stdout.
    pub(super) fn table(&self) -> String {
        let r = self;
        let mut out = String::new();
        let Report {
            methods,
            races,
            targets,
            size,
            runs,
            cpus,
            cold,
            threads,
            fast,
            ..
        } = r;
        let (base_read1, base_pread, base_mmap) = r.baselines();
        let (size, runs, cpus, cold, threads) = (*size, *runs, *cpus, *cold, *threads);
        let _ = writeln!(
            out,
            "om-constants bench: {:.2} GiB file, {cpus} CPUs, {} page cache, {runs} run(s); times in ms",
            size as f64 / (1u64 << 30) as f64,
            if cold { "cold" } else { "warm" }
        );
        let _ = writeln!(
            out,
            "  load + pass + free = median: the run with the median total (its parts add up); \
             min: the fastest run's total; the ratios divide min totals"
        );
        let _ = writeln!(
            out,
            "{:<46} {:>9} {:>9} {:>8} {:>10} {:>10} {:>9} {:>9} {:>9}",
            "method", "load", "pass", "free", "= median", "min", "/read 1t", "/pread", "/mmap"
        );
        for m in methods {
            let r = m.median_run();
            let t = m.min().as_secs_f64();
            let _ = writeln!(
                out,
                "{:<46} {:>9.2} {:>9.2} {:>8.2} {:>10.2} {:>10.2} {:>9.3} {:>9.3} {:>9.3}",
                m.name,
                ms(r.load),
                ms(r.pass),
                ms(r.free),
                ms(m.median()),
                ms(m.min()),
                t / base_read1,
                t / base_pread,
                t / base_mmap
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,"{threads} threads racing on one slot (acquire all, one pass, release all; best of {runs}):");
        for r in races {
            let _ = writeln!(
            out,
                "  {:<13} wall {:>9.2} ms (all acquired after {:>8.3} ms)  loads={} waits={} bytes_read={} bytes_mapped={}",
                r.strategy.name(),
                ms(r.total),
                ms(r.acquired),
                r.stats.loads,
                r.stats.waits,
                r.stats.bytes_read,
                r.stats.bytes_mapped
            );
        }
        let (best, median) = (fast.best, fast.median);
        let _ = writeln!(
            out,
            "loaded fast path (om_mmap_binary_file), best of {} samples: {:.2} ns/call with 1 thread, \
             {:.2} with 2 (onnx-mlir's NULL check, same loops: {:.2} / {:.2}); median sample: \
             {:.2} / {:.2} (onnx-mlir's: {:.2} / {:.2})",
            fast.samples,
            best.ours.0,
            best.ours.1,
            best.onnx_mlir.0,
            best.onnx_mlir.1,
            median.ours.0,
            median.ours.1,
            median.onnx_mlir.0,
            median.onnx_mlir.1
        );
        let c = &r.cache;
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        let _ = writeln!(
            out,
            "packed-weights cache ({} matrices 1024x1024 f32, {} MiB; transpose as the packing stand-in):",
            c.matrices,
            c.matrices * 4
        );
        for (what, s) in [
            (
                "first start: pack into the cache, commit, first pass",
                &c.first,
            ),
            ("second start: open, verify, first pass", &c.second),
            ("no cache: pack into the heap, first pass", &c.heap),
        ] {
            let _ = writeln!(
                out,
                "  {what:<52} {:>9.2} ms  packing calls {:>3}  anonymous +{:.1} MiB",
                ms(s.time),
                s.packs,
                mib(s.anon)
            );
        }
        let _ = writeln!(out);
        out.push_str(&self.steady.table());
        out.push_str(&self.deploy.table());
        let _ = writeln!(out);
        let _ = writeln!(out, "targets:");
        let width = targets.iter().map(|t| t.label.len()).max().unwrap_or(0);
        for t in targets {
            let _ = writeln!(
                out,
                "  [{:<6}] {:<width$} {:>9.3}  (target <= {})",
                if t.met() { "met" } else { "MISSED" },
                t.label,
                t.value,
                t.goal.limit()
            );
        }
        let _ = writeln!(out, "{}", verdict(targets));
        out
    }

    /// The JSON document of `--json`.
    pub(super) fn json(&self) -> Value {
        let s = |d: Duration| d.as_secs_f64();
        let figures = |f: &Figures| {
            json!({
                "threads_1": f.ours.0,
                "threads_2": f.ours.1,
                "onnx_mlir_check_threads_1": f.onnx_mlir.0,
                "onnx_mlir_check_threads_2": f.onnx_mlir.1,
            })
        };
        let mut fast = figures(&self.fast.best);
        fast["samples"] = json!(self.fast.samples);
        fast["median"] = figures(&self.fast.median);
        let start = |st: &cache_bench::Start| json!({"seconds": s(st.time), "packs": st.packs, "anonymous_bytes": st.anon});
        json!({
            "size": self.size,
            "runs": self.runs,
            "cpus": self.cpus,
            "cold": self.cold,
            "methods": self.methods.iter().map(|m| {
                let r = m.median_run();
                json!({
                    "name": m.name,
                    "load_s": s(r.load),
                    "pass_s": s(r.pass),
                    "free_s": s(r.free),
                    "total_min_s": s(m.min()),
                    "total_median_s": s(m.median()),
                })
            }).collect::<Vec<_>>(),
            "races": self.races.iter().map(|r| json!({
                "strategy": r.strategy.name(),
                "wall_s": s(r.total),
                "acquired_s": s(r.acquired),
                "loads": r.stats.loads,
                "bytes_read": r.stats.bytes_read,
                "bytes_mapped": r.stats.bytes_mapped,
            })).collect::<Vec<_>>(),
            "fast_path_ns": fast,
            "read_race_peak_rss": self.peak,
            "cache": {
                "matrices": self.cache.matrices,
                "first": start(&self.cache.first),
                "second": start(&self.cache.second),
                "heap": start(&self.cache.heap),
            },
            "after_load": self.steady.json(),
            "where_deployments_run": self.deploy.json(),
            "targets_met": self.targets.iter().filter(|t| t.met()).count(),
            "targets_total": self.targets.len(),
            "targets": self.targets.iter().map(|t| json!({
                "what": t.label,
                "value": t.value,
                "limit": t.goal.limit(),
                "count": t.goal.is_count(),
                "met": t.met(),
            })).collect::<Vec<_>>(),
        })
    }
}
