//! `candela-train`: trains the bundled demo fraud models (one per segment) on
//! the synthetic generator and writes them into a model repository. Seeded:
//! running it again reproduces the committed `models/`. Its size options make
//! the larger models benchmarks need (e.g. the GPU check's 256→2048→2048→2)
//! on demand instead of committing them.

use candela_server::model::manifest::DTypeName;
use candela_server::train::synthetic::Segment;
use candela_server::train::training::{self, TrainConfig};
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
    /// Input features: the generator's 30, or up to 465 with pairwise products of them.
    #[arg(long, default_value_t = TrainConfig::default().features)]
    features: usize,
    /// The two hidden layers' widths.
    #[arg(long, value_delimiter = ',', default_values_t = TrainConfig::default().hidden)]
    hidden: Vec<usize>,
    /// Passes over the training rows.
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    epochs: usize,
    /// Training rows generated per segment.
    #[arg(long, default_value_t = TrainConfig::default().train_rows)]
    train_rows: usize,
    /// The dtype model.json asks the server to compute in.
    #[arg(long, value_enum, default_value_t = DTypeName::F32)]
    dtype: DTypeName,
    /// Write the model under this name instead of the segment's (one segment only).
    #[arg(long)]
    name: Option<String>,
    /// Write each segment's training and held-out rows as CSV into this
    /// directory (`<segment>-train.csv`, `<segment>-held-out.csv`) instead of
    /// training: what models/train_trees.py trains the tree demo on.
    #[arg(long)]
    export_data: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.name.is_some() && args.segments.len() != 1 {
        anyhow::bail!("--name names one model: pass exactly one --segments");
    }
    let [first, second] = args.hidden[..] else {
        anyhow::bail!("--hidden takes two widths, e.g. 2048,2048");
    };
    let config = TrainConfig {
        seed: args.seed,
        features: args.features,
        hidden: [first, second],
        epochs: args.epochs,
        train_rows: args.train_rows,
        ..TrainConfig::default()
    };
    for segment_name in &args.segments {
        let segment = Segment::from_name(segment_name)
            .ok_or_else(|| anyhow::anyhow!("unknown segment `{segment_name}`: use retail, corporate or sme"))?;
        if let Some(dir) = &args.export_data {
            std::fs::create_dir_all(dir)?;
            let (train, held_out) = training::datasets(segment, &config);
            for (data, part) in [(&train, "train"), (&held_out, "held-out")] {
                let path = dir.join(format!("{segment_name}-{part}.csv"));
                training::write_csv(data, config.features, &path)?;
                println!("{segment_name}: {} {part} rows → {}", data.rows(), path.display());
            }
            continue;
        }
        let mut trained = training::train(segment, &config)?;
        trained.manifest.provenance.created = args.created.clone();
        trained.manifest.dtype = args.dtype;
        let name = args.name.as_ref().unwrap_or(segment_name);
        let dir = args.out.join(name).join(args.version.to_string());
        training::write(&trained, &dir)?;
        println!("{name}: held-out AUC {:.4} → {}", trained.held_out_auc, dir.display());
    }
    Ok(())
}
