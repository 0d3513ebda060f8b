//! `candela score`: batch scoring of a CSV file through StreamPredict.
//! A blocking reader thread turns the file into row batches; the stream sends
//! them as the server takes them (a bounded channel, so memory stays flat on
//! any file size) and the results are written in input order, each input
//! record beside its scores. A refused batch (a NaN, say) is written with its
//! error instead of scores, and scoring carries on.

use anyhow::{Context, bail};
use candela_client::{Client, ModelId, proto, stream_batch};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

/// Batches read ahead of the server, at most.
const READ_AHEAD: usize = 8;

pub struct Summary {
    pub rows: u64,
    pub refused_rows: u64,
}

/// One batch's input records, kept until its results arrive.
struct Pending {
    id: String,
    records: Vec<csv::StringRecord>,
}

pub async fn score_csv(
    client: &mut Client,
    model: ModelId,
    input: &Path,
    output: &Path,
    batch_rows: usize,
) -> anyhow::Result<Summary> {
    let info = client.get_model(model.clone()).await.map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?;
    // Pin the version GetModel resolved, so every batch is scored by the same model.
    let model = ModelId::pinned(info.segment.clone(), info.version);
    let mut reader = csv::Reader::from_path(input).with_context(|| format!("cannot read {}", input.display()))?;
    let header = reader.headers()?.clone();
    let columns: Vec<usize> =
        info.features.iter().map(|f| header.iter().position(|h| h == f)).collect::<Option<_>>().with_context(|| {
            let missing: Vec<&str> =
                info.features.iter().filter(|f| !header.iter().any(|h| h == *f)).map(String::as_str).collect();
            format!("{} lacks columns for the model's features: {}", input.display(), missing.join(", "))
        })?;
    let mut writer = csv::Writer::from_path(output).with_context(|| format!("cannot write {}", output.display()))?;
    let mut out_header = header.clone();
    out_header.push_field("prediction");
    for label in &info.labels {
        out_header.push_field(&format!("p_{label}"));
    }
    out_header.push_field("error");
    writer.write_record(&out_header)?;

    // Hidden automatically when stderr is not a terminal.
    let progress = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {human_pos} rows scored ({per_sec}, {elapsed})")
            .expect("constant template is valid"),
    );
    let (requests, request_stream) = mpsc::channel(READ_AHEAD);
    let (pending_tx, mut pending_rx) = mpsc::channel::<Pending>(READ_AHEAD * 4);
    let features = info.features.len();
    let reader_model = model.clone();
    let reading = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut batch = Vec::with_capacity(batch_rows);
        let mut index = 0u64;
        let send = |batch: Vec<csv::StringRecord>, index: &mut u64| -> anyhow::Result<()> {
            let mut values = Vec::with_capacity(batch.len() * features);
            for record in &batch {
                for &c in &columns {
                    let text = record.get(c).unwrap_or("").trim();
                    let line = record.position().map(|p| p.line()).unwrap_or(0);
                    values.push(text.parse::<f32>().with_context(|| {
                        format!("line {line}: `{text}` in column `{}` is not a number", &header[c])
                    })?);
                }
            }
            let id = index.to_string();
            *index += 1;
            // The writer must know of a batch before its results can arrive.
            pending_tx.blocking_send(Pending { id: id.clone(), records: batch }).ok();
            requests.blocking_send(stream_batch(id, &reader_model, features, values)).ok();
            Ok(())
        };
        for record in reader.records() {
            batch.push(record?);
            if batch.len() == batch_rows {
                send(std::mem::replace(&mut batch, Vec::with_capacity(batch_rows)), &mut index)?;
            }
        }
        if !batch.is_empty() {
            send(batch, &mut index)?;
        }
        Ok(())
    });

    let mut responses = client
        .stream_predict(ReceiverStream::new(request_stream))
        .await
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?;
    let mut summary = Summary { rows: 0, refused_rows: 0 };
    while let Some(response) = responses.next().await {
        let response = response.map_err(|s| anyhow::anyhow!("stream broken: {:?}: {}", s.code(), s.message()))?;
        let pending = pending_rx.recv().await.context("a response arrived for a batch never sent")?;
        if pending.id != response.id {
            bail!("response for batch {} arrived where batch {} was expected", response.id, pending.id);
        }
        write_batch(&mut writer, pending.records, response.outcome, info.labels.len(), &mut summary)?;
        progress.set_position(summary.rows);
    }
    reading.await.context("the CSV reader failed")??;
    writer.flush()?;
    progress.finish_and_clear();
    Ok(summary)
}

fn write_batch(
    writer: &mut csv::Writer<std::fs::File>,
    records: Vec<csv::StringRecord>,
    outcome: Option<proto::stream_predict_response::Outcome>,
    labels: usize,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    use proto::stream_predict_response::Outcome;
    let rows = records.len() as u64;
    match outcome {
        Some(Outcome::Result(result)) => {
            if result.predictions.len() != records.len() {
                bail!("the server answered {} rows for a batch of {}", result.predictions.len(), records.len());
            }
            for (mut record, prediction) in records.into_iter().zip(result.predictions) {
                record.push_field(&prediction.label);
                for p in &prediction.probabilities {
                    record.push_field(&p.to_string());
                }
                record.push_field("");
                writer.write_record(&record)?;
            }
        }
        Some(Outcome::Error(error)) => {
            let message = match error.field_violations.first() {
                Some(v) => format!("{} (first: {} {})", error.message, v.field, v.description),
                None => error.message,
            };
            for mut record in records {
                record.push_field("");
                for _ in 0..labels {
                    record.push_field("");
                }
                record.push_field(&message);
                writer.write_record(&record)?;
            }
            summary.refused_rows += rows;
        }
        None => bail!("the server sent a response with neither results nor an error"),
    }
    summary.rows += rows;
    Ok(())
}
