//! `candela bench --p95-ms T`: capacity planning from a measurement. A
//! closed-loop probe finds the server's throughput ceiling for the load
//! described (call, rows, model); then open-loop runs at chosen rates, each
//! latency counted from when its request was due (no coordinated
//! omission), bisect for the highest rate one replica sustains with p95 ≤ T,
//! no errors and no backlog. With `--target-qps Q` it prints the replicas
//! that rate implies, ⌈Q / rate⌉, next to the rule of thumb
//! R = ⌈Q · t_p95 / u⌉ from the measured p95 and a target utilisation u,
//! which counts each replica as serving one request at a time.

use crate::bench::{self, BenchArgs, BenchSummary};
use candela_client::Client;
use serde::Serialize;

/// Open-loop runs after the ceiling probe: the bisection ends within
/// 2^-STEPS of the ceiling.
const STEPS: usize = 6;

/// The smallest share of the offered rate a run must complete to pass: less
/// means requests were left waiting (a backlog the p95 may not yet show).
const COMPLETED_SHARE: f64 = 0.97;

/// Callers the ceiling probe keeps busy, at least.
const PROBE_CONCURRENCY: usize = 32;

/// What the search found.
#[derive(Debug, Serialize)]
pub struct Capacity {
    p95_target_us: u64,
    ceiling_requests_per_second: f64,
    probe_concurrency: usize,
    runs: Vec<Run>,
    /// The highest rate that passed, with its run; none when even the lowest failed.
    sustained: Option<Run>,
    plan: Option<Plan>,
}

/// One open-loop run of the search.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    offered: f64,
    completed: f64,
    p95_us: u64,
    p99_us: u64,
    errors: u64,
    passed: bool,
}

/// Replicas for a target load: measured, and by the rule of thumb.
#[derive(Debug, Serialize)]
pub struct Plan {
    target_qps: f64,
    utilization: f64,
    replicas_measured: u64,
    replicas_rule_of_thumb: u64,
}

/// Runs the search for `args` (its `p95_ms` set).
pub async fn search(clients: &[Client], args: &BenchArgs, p95_ms: f64) -> anyhow::Result<Capacity> {
    if !(p95_ms > 0.0 && p95_ms.is_finite()) {
        anyhow::bail!("--p95-ms must be a positive number of milliseconds");
    }
    if args.call == bench::BenchCall::StreamPredict {
        anyhow::bail!("--p95-ms searches request rates of unary calls, not stream-predict");
    }
    let target_us = (p95_ms * 1000.0).round() as u64;
    let probe_concurrency = args.concurrency.max(PROBE_CONCURRENCY);
    let mut probe = args.clone();
    (probe.concurrency, probe.rate) = (probe_concurrency, None);
    let ceiling = bench::run(clients, &probe).await?.requests_per_second;
    if ceiling <= 0.0 {
        anyhow::bail!("the ceiling probe completed no requests: see `candela bench` without --p95-ms for the errors");
    }
    let (mut low, mut high) = (0.0f64, ceiling);
    let mut runs = Vec::with_capacity(STEPS);
    let mut sustained: Option<Run> = None;
    for step in 0..STEPS {
        // Start near the ceiling (where operators run), then bisect.
        let offered = if step == 0 { 0.9 * ceiling } else { (low + high) / 2.0 };
        let mut at_rate = args.clone();
        at_rate.rate = Some(offered);
        let summary = bench::run(clients, &at_rate).await?;
        let run = judge(offered, &summary, target_us);
        if run.passed {
            low = offered;
            sustained = Some(run.clone());
        } else {
            high = offered;
        }
        runs.push(run);
    }
    let plan = args.target_qps.zip(sustained.as_ref()).map(|(target, run)| Plan {
        target_qps: target,
        utilization: args.utilization,
        replicas_measured: (target / run.offered).ceil() as u64,
        replicas_rule_of_thumb: (target * run.p95_us as f64 / 1e6 / args.utilization).ceil() as u64,
    });
    Ok(Capacity {
        p95_target_us: target_us,
        ceiling_requests_per_second: ceiling,
        probe_concurrency,
        runs,
        sustained,
        plan,
    })
}

/// Whether an open-loop run at `offered` requests/s held the target.
fn judge(offered: f64, summary: &BenchSummary, target_us: u64) -> Run {
    let completed = summary.requests_per_second;
    let (p95_us, p99_us) = (summary.p95_us(), summary.p99_us());
    Run {
        offered,
        completed,
        p95_us,
        p99_us,
        errors: summary.errors,
        passed: summary.errors == 0 && p95_us <= target_us && completed >= COMPLETED_SHARE * offered,
    }
}

impl Capacity {
    /// The search and its answer, for people.
    pub fn print(&self, args: &BenchArgs) {
        println!(
            "{:?} on `{}`, {} row(s) per request: ceiling {:.0} requests/s (closed loop, concurrency {})",
            args.call, args.model, args.rows, self.ceiling_requests_per_second, self.probe_concurrency
        );
        println!("  {:>10}  {:>10}  {:>8}  {:>8}  {:>6}", "offered/s", "done/s", "p95 µs", "p99 µs", "within");
        for run in &self.runs {
            let within = if run.passed {
                "yes"
            } else if run.errors > 0 {
                "errors"
            } else {
                "no"
            };
            println!(
                "  {:>10.0}  {:>10.0}  {:>8}  {:>8}  {:>6}",
                run.offered, run.completed, run.p95_us, run.p99_us, within
            );
        }
        let target_ms = self.p95_target_us as f64 / 1000.0;
        let Some(run) = &self.sustained else {
            println!("no rate tried kept p95 within {target_ms} ms: one replica cannot meet that target for this load");
            return;
        };
        println!("highest rate within p95 ≤ {target_ms} ms: {:.0} requests/s (p95 {} µs)", run.offered, run.p95_us);
        if let Some(plan) = &self.plan {
            println!(
                "for {:.0} requests/s: {} replicas measured (⌈{:.0} / {:.0}⌉); rule of thumb ⌈QPS · t_p95 / u⌉ = ⌈{:.0} × {:.6} s / {}⌉ = {} (it counts one request at a time per replica)",
                plan.target_qps,
                plan.replicas_measured,
                plan.target_qps,
                run.offered,
                plan.target_qps,
                run.p95_us as f64 / 1e6,
                plan.utilization,
                plan.replicas_rule_of_thumb
            );
        }
    }
}
