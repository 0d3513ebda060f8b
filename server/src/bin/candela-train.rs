//! `candela-train`: trains the bundled demo fraud models (one per segment) on
//! the synthetic generator and writes them into a model repository. Seeded:
//! running it again reproduces the committed `models/`.

use candela_server::synthetic::Segment;
use candela_server::training::{self, TrainConfig};
use clap::Parser;
use std::path::PathBuf;

/// Train the demo fraud models into a model repository.
#[derive(Parser)]
#[command(name = "candela-train")]
struct Args {
    /// The model repository to write into (<out>/<segment>/<version>/).
    #[arg(long, default_value = "models")]
    out: PathBuf,
    /// The version directory to write.
    #[arg(long, default_value_t = 1)]
    version: u64,
    /// Segments to train (retail, corporate, sme).
    #[arg(long, value_delimiter = ',', default_value = "retail,corporate,sme")]
    segments: Vec<String>,
    /// The `provenance.created` timestamp to record (RFC 3339).
    #[arg(long, default_value = "2026-11-23T00:00:00Z")]
    created: String,
    /// Master seed; every dataset and initialisation derives from it.
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = TrainConfig { seed: args.seed, ..TrainConfig::default() };
    for name in &args.segments {
        let segment = Segment::from_name(name)
            .ok_or_else(|| anyhow::anyhow!("unknown segment `{name}`: use retail, corporate or sme"))?;
        let mut trained = training::train(segment, &config)?;
        trained.manifest.provenance.created = args.created.clone();
        let dir = args.out.join(name).join(args.version.to_string());
        training::write(&trained, &dir)?;
        println!("{name}: held-out AUC {:.4} → {}", trained.held_out_auc, dir.display());
    }
    Ok(())
}
