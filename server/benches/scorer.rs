//! One model version's forward pass alone, without transport, for
//! bench/trees.sh: loads `<version dir>`, reads rows from a CSV (a header,
//! then the model's features in order; a trailing `label` column is
//! ignored; an empty cell is a missing value), and prints one JSON line per
//! batch size with the rows per second of `Scorer::forward` (the median of
//! `--repeats` timed runs of about `--seconds` each); with
//! `SCORER_EXPLAIN=1`, of `Scorer::contributions` instead (a forest's
//! TreeSHAP, for bench/explain.sh). Threads: as rayon's global pool is sized
//! (`RAYON_NUM_THREADS`).
//! Run: `cargo bench -p candela-server --bench scorer -- <dir> <rows.csv> [batch ...]`.

use candela_server::model::repository;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let [dir, csv, batches @ ..] = &args[..] else {
        eprintln!("usage: scorer <version dir> <rows.csv> [batch ...]");
        std::process::exit(2);
    };
    let batches: Vec<usize> =
        if batches.is_empty() { vec![1, 1000] } else { batches.iter().map(|b| b.parse().unwrap()).collect() };
    let seconds: f64 = std::env::var("SCORER_SECONDS").map_or(1.0, |s| s.parse().unwrap());
    let repeats: usize = std::env::var("SCORER_REPEATS").map_or(5, |s| s.parse().unwrap());
    let explain = std::env::var("SCORER_EXPLAIN").is_ok_and(|s| s == "1");
    let dir = std::path::Path::new(dir);
    let model =
        repository::load_version("bench", 1, dir, &candle_core::Device::Cpu, "cpu", 1 << 30).expect("the model loads");
    let inputs = model.scorer.inputs();
    let text = std::fs::read_to_string(csv).expect("the rows CSV");
    let values: Vec<f32> = text
        .lines()
        .skip(1)
        .flat_map(|line| line.split(',').take(inputs).map(|v| if v.is_empty() { f32::NAN } else { v.parse().unwrap() }))
        .collect();
    let rows = values.len() / inputs;
    for batch in batches {
        let mut rates = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            let (mut scored, mut at) = (0usize, 0usize);
            let start = Instant::now();
            while start.elapsed().as_secs_f64() < seconds {
                if at + batch > rows {
                    at = 0;
                }
                let rows = &values[at * inputs..(at + batch) * inputs];
                if explain {
                    std::hint::black_box(model.scorer.contributions(rows).expect("a forest with covers"));
                } else {
                    std::hint::black_box(model.scorer.forward(rows).expect("forward"));
                }
                scored += batch;
                at += batch;
            }
            rates.push(scored as f64 / start.elapsed().as_secs_f64());
        }
        rates.sort_by(f64::total_cmp);
        println!("{{\"batch\": {batch}, \"rows_per_s\": {:.1}, \"repeats\": {repeats}}}", rates[repeats / 2]);
    }
}
