//! `candela score`: batch scoring of a CSV file through StreamPredict.
//! A blocking reader thread turns the file into row batches and deals them
//! to N streams in turn (`--streams`); each stream sends them as the server
//! takes them (bounded channels, so memory stays flat on any file size) and
//! the results are written in input order (batch i is the next answer on
//! stream i mod N), each input
//! record beside its scores. A refused batch (a NaN, say) costs only its
//! offending rows: the client isolates them by scoring the batch's halves
//! again (BatchPredict, recursively), so every other row gets its scores and
//! only the offending rows carry the error; scoring carries on.

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

/// The model's feature values of `records`, row-major: column `columns[j]`
/// of each record is feature `j`.
fn values_of(records: &[csv::StringRecord], columns: &[usize], header: &csv::StringRecord) -> anyhow::Result<Vec<f32>> {
    let mut values = Vec::with_capacity(records.len() * columns.len());
    for record in records {
        for &c in columns {
            let text = record.get(c).unwrap_or("").trim();
            let line = record.position().map(|p| p.line()).unwrap_or(0);
            values.push(
                text.parse::<f32>()
                    .with_context(|| format!("line {line}: `{text}` in column `{}` is not a number", &header[c]))?,
            );
        }
    }
    Ok(values)
}

pub async fn score_csv(
    client: &mut Client,
    model: ModelId,
    input: &Path,
    output: &Path,
    batch_rows: usize,
    streams: usize,
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

    // Hidden automatically when stderr is not a terminal. Its position is the
    // input's bytes written back out, so the bar and the ETA need no row count.
    let size = std::fs::metadata(input).map_or(0, |m| m.len());
    let progress = ProgressBar::new(size).with_style(
        ProgressStyle::with_template("{spinner} {wide_bar} {percent:>3}% · {msg} · ETA {eta}")
            .expect("constant template is valid"),
    );
    let started = std::time::Instant::now();
    let streams = streams.max(1);
    let (requests, request_streams): (Vec<_>, Vec<_>) = (0..streams).map(|_| mpsc::channel(READ_AHEAD)).unzip();
    let (pending_tx, mut pending_rx) = mpsc::channel::<Pending>(READ_AHEAD * 4 * streams);
    let features = info.features.len();
    let reader_model = model.clone();
    let (reader_columns, reader_header) = (columns.clone(), header.clone());
    let reading = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut batch = Vec::with_capacity(batch_rows);
        let mut index = 0u64;
        let send = |batch: Vec<csv::StringRecord>, index: &mut u64| -> anyhow::Result<()> {
            let values = values_of(&batch, &reader_columns, &reader_header)?;
            let id = index.to_string();
            // Batch i goes to stream i mod N; the writer reads the streams in the same turn.
            let stream = &requests[(*index % requests.len() as u64) as usize];
            *index += 1;
            // The writer must know of a batch before its results can arrive.
            let sent = stream_batch(id.clone(), &reader_model, features, values);
            pending_tx.blocking_send(Pending { id, records: batch }).ok();
            stream.blocking_send(sent).ok();
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

    let mut isolating = client.clone();
    let mut responses = Vec::with_capacity(streams);
    for request_stream in request_streams {
        let opened = client.stream_predict(ReceiverStream::new(request_stream)).await;
        responses.push(opened.map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?);
    }
    let mut summary = Summary { rows: 0, refused_rows: 0 };
    // Results in input order: batch i's answer is the next on stream i mod N.
    for turn in (0..streams).cycle() {
        let Some(response) = responses[turn].next().await else { break };
        let response = response.map_err(|s| anyhow::anyhow!("stream broken: {:?}: {}", s.code(), s.message()))?;
        let pending = pending_rx.recv().await.context("a response arrived for a batch never sent")?;
        if pending.id != response.id {
            bail!("response for batch {} arrived where batch {} was expected", response.id, pending.id);
        }
        let outcome = match response.outcome {
            Some(proto::stream_predict_response::Outcome::Error(error))
                if error.code == tonic::Code::InvalidArgument as i32 && pending.records.len() > 1 =>
            {
                // Parsed again only on this rare path, rather than kept for every batch.
                let values = values_of(&pending.records, &columns, &header)?;
                Answered::Rows(isolate(&mut isolating, &model, features, &values).await)
            }
            Some(proto::stream_predict_response::Outcome::Result(result)) => {
                Answered::Rows(result.predictions.into_iter().map(Ok).collect())
            }
            Some(proto::stream_predict_response::Outcome::Error(error)) => Answered::Refused(error_text(error)),
            None => bail!("the server sent a response with neither results nor an error"),
        };
        let end = pending.records.last().and_then(|r| r.position()).map_or(0, |p| p.byte());
        write_batch(&mut writer, pending.records, outcome, info.labels.len(), &mut summary)?;
        progress.set_position(end);
        let rate = summary.rows as f64 / started.elapsed().as_secs_f64().max(1e-9);
        progress.set_message(format!("{} rows, {rate:.0} rows/s, {} refused", summary.rows, summary.refused_rows));
    }
    reading.await.context("the CSV reader failed")??;
    writer.flush()?;
    progress.finish_and_clear();
    Ok(summary)
}

/// A batch's answer: a prediction or an error per row, or one error for all.
enum Answered {
    Rows(Vec<Result<proto::Prediction, String>>),
    Refused(String),
}

/// Scores a refused batch's rows again in halves (BatchPredict), splitting
/// every refused part until the offending rows stand alone: each row gets
/// its prediction, or the error that refused it alone.
async fn isolate(
    client: &mut Client,
    model: &ModelId,
    features: usize,
    values: &[f32],
) -> Vec<Result<proto::Prediction, String>> {
    let rows = values.len() / features;
    let mut answers: Vec<Option<Result<proto::Prediction, String>>> = vec![None; rows];
    let mut parts = vec![(0, rows / 2), (rows / 2, rows)];
    while let Some((start, end)) = parts.pop() {
        if start == end {
            continue;
        }
        let part = values[start * features..end * features].to_vec();
        match client.batch_predict(model.clone(), features, part).await {
            Ok(answer) if answer.predictions.len() == end - start => {
                for (slot, prediction) in answers[start..end].iter_mut().zip(answer.predictions) {
                    *slot = Some(Ok(prediction));
                }
            }
            Err(status) if status.code() == tonic::Code::InvalidArgument && end - start > 1 => {
                let middle = start + (end - start) / 2;
                parts.extend([(start, middle), (middle, end)]);
            }
            other => {
                let message = match other {
                    Err(status) => status_text(&status),
                    Ok(answer) => format!("the server answered {} rows for {}", answer.predictions.len(), end - start),
                };
                for slot in &mut answers[start..end] {
                    *slot = Some(Err(message.clone()));
                }
            }
        }
    }
    answers.into_iter().map(|a| a.unwrap_or_else(|| Err("not scored".into()))).collect()
}

/// A stream's batch error as one line: the message and its first violation.
fn error_text(error: proto::BatchError) -> String {
    match error.field_violations.first() {
        Some(v) => format!("{} (first: {} {})", error.message, v.field, v.description),
        None => error.message,
    }
}

/// A refused call's status as one line, as `error_text` writes a stream's.
fn status_text(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    match status.get_details_bad_request().and_then(|b| b.field_violations.into_iter().next()) {
        Some(v) => format!("{} (first: {} {})", status.message(), v.field, v.description),
        None => status.message().to_string(),
    }
}

fn write_batch(
    writer: &mut csv::Writer<std::fs::File>,
    records: Vec<csv::StringRecord>,
    answered: Answered,
    labels: usize,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let answers = match answered {
        Answered::Rows(rows) if rows.len() != records.len() => {
            bail!("the server answered {} rows for a batch of {}", rows.len(), records.len());
        }
        Answered::Rows(rows) => rows,
        Answered::Refused(message) => vec![Err(message); records.len()],
    };
    for (mut record, answer) in records.into_iter().zip(answers) {
        match answer {
            Ok(prediction) => {
                record.push_field(&prediction.label);
                for p in &prediction.probabilities {
                    record.push_field(&p.to_string());
                }
                record.push_field("");
            }
            Err(message) => {
                for _ in 0..=labels {
                    record.push_field("");
                }
                record.push_field(&message);
                summary.refused_rows += 1;
            }
        }
        writer.write_record(&record)?;
        summary.rows += 1;
    }
    Ok(())
}
