//! `candela feedback`: outcomes (the true label of rows scored earlier)
//! from a CSV or Parquet table with columns `request_id`, `row` and `label`
//! (any order; other columns ignored), sent through one FeedbackStream in
//! messages of `MESSAGE_OUTCOMES`, and the server's count of what joined.
//! A row with no request id (one `candela score --record-ids` could not
//! score) is skipped and counted, so a scored file with a label column
//! added goes back as is.

use anyhow::{Context, bail};
use candela_client::{Client, proto};
use std::path::Path;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Outcomes per FeedbackStream message (the server takes at most 10,000).
const MESSAGE_OUTCOMES: usize = 5_000;

/// Sends `input`'s outcomes; the server's totals and the rows skipped for having no request id.
pub async fn send(client: &mut Client, input: &Path) -> anyhow::Result<(proto::FeedbackResponse, u64)> {
    let (messages, stream) = mpsc::channel(4);
    let input = input.to_path_buf();
    // Read on a thread of its own: the file is read while the stream sends.
    let reading = tokio::task::spawn_blocking(move || read(&input, &messages));
    let sent = client.feedback_stream(ReceiverStream::new(stream)).await;
    let skipped = reading.await.context("the reader panicked")??;
    Ok((sent.map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?, skipped))
}

/// Reads `input` (by its extension) into messages; the rows skipped for having no request id.
fn read(input: &Path, messages: &mpsc::Sender<proto::FeedbackRequest>) -> anyhow::Result<u64> {
    let mut batch = Vec::with_capacity(MESSAGE_OUTCOMES);
    let mut skipped = 0;
    let mut send = |outcome: Option<proto::Outcome>| -> anyhow::Result<()> {
        let Some(outcome) = outcome else {
            skipped += 1;
            return Ok(());
        };
        batch.push(outcome);
        if batch.len() == MESSAGE_OUTCOMES {
            let outcomes = std::mem::replace(&mut batch, Vec::with_capacity(MESSAGE_OUTCOMES));
            messages.blocking_send(proto::FeedbackRequest { outcomes }).context("the stream ended early")?;
        }
        Ok(())
    };
    if super::score::is_parquet(input) {
        read_parquet(input, &mut send)?;
    } else {
        read_csv(input, &mut send)?;
    }
    if !batch.is_empty() {
        messages.blocking_send(proto::FeedbackRequest { outcomes: batch }).context("the stream ended early")?;
    }
    Ok(skipped)
}

/// The three columns' positions among `names`, or which is missing.
fn locate<'a>(input: &Path, names: impl Iterator<Item = &'a str>) -> anyhow::Result<[usize; 3]> {
    let names: Vec<&str> = names.collect();
    let mut found = [0; 3];
    for (slot, wanted) in found.iter_mut().zip(["request_id", "row", "label"]) {
        *slot = names.iter().position(|n| *n == wanted).with_context(|| {
            format!(
                "{}: no column `{wanted}`; an outcomes table has `request_id`, `row` and `label` (it has: {})",
                input.display(),
                names.join(", ")
            )
        })?;
    }
    Ok(found)
}

/// Where `read_csv` and `read_parquet` hand each row: an outcome, or none for a row without a request id.
type Send<'a> = &'a mut dyn FnMut(Option<proto::Outcome>) -> anyhow::Result<()>;

fn read_csv(input: &Path, send: Send) -> anyhow::Result<()> {
    let mut reader = csv::Reader::from_path(input).with_context(|| format!("cannot read {}", input.display()))?;
    let [id, row, label] = locate(input, reader.headers()?.iter())?;
    for (line, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("{}: line {}", input.display(), line + 2))?;
        let request_id = record.get(id).unwrap_or_default();
        if request_id.is_empty() {
            send(None)?;
            continue;
        }
        let row_text = record.get(row).unwrap_or_default();
        let row_number = row_text.trim().parse().with_context(|| {
            format!("{}: line {}: `row` is `{row_text}`, not a row number", input.display(), line + 2)
        })?;
        send(Some(proto::Outcome {
            request_id: request_id.to_string(),
            row: row_number,
            label: record.get(label).unwrap_or_default().to_string(),
        }))?;
    }
    Ok(())
}

#[cfg(feature = "parquet")]
fn read_parquet(input: &Path, send: Send) -> anyhow::Result<()> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, Int64Type, UInt32Type, UInt64Type};
    use arrow_array::{Array, ArrayRef};
    use arrow_schema::DataType;
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let file = std::fs::File::open(input).with_context(|| format!("cannot read {}", input.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{} is not a Parquet file", input.display()))?;
    let schema = builder.schema().clone();
    let columns = locate(input, schema.fields().iter().map(|f| f.name().as_str()))?;
    let mut roots = columns.to_vec();
    roots.sort_unstable();
    let projection = ProjectionMask::roots(builder.parquet_schema(), roots.clone());
    let position = |column: usize| roots.binary_search(&column).expect("projected");
    let text = |array: &ArrayRef, i: usize| -> Option<String> {
        if array.is_null(i) {
            return None;
        }
        match array.data_type() {
            DataType::Utf8 => Some(array.as_string::<i32>().value(i).to_string()),
            DataType::LargeUtf8 => Some(array.as_string::<i64>().value(i).to_string()),
            DataType::Utf8View => Some(array.as_string_view().value(i).to_string()),
            _ => None,
        }
    };
    let number = |array: &ArrayRef, i: usize| -> Option<u64> {
        if array.is_null(i) {
            return None;
        }
        match array.data_type() {
            DataType::Int64 => u64::try_from(array.as_primitive::<Int64Type>().value(i)).ok(),
            DataType::Int32 => u64::try_from(array.as_primitive::<Int32Type>().value(i)).ok(),
            DataType::UInt64 => Some(array.as_primitive::<UInt64Type>().value(i)),
            DataType::UInt32 => Some(u64::from(array.as_primitive::<UInt32Type>().value(i))),
            _ => None,
        }
    };
    let mut seen = 0usize;
    for batch in builder.with_projection(projection).build()? {
        let batch = batch.with_context(|| format!("cannot decode {}", input.display()))?;
        let [id, row, label] = columns.map(|c| batch.column(position(c)).clone());
        for i in 0..batch.num_rows() {
            let at = || format!("{}: table row {}", input.display(), seen + i);
            if id.is_null(i) {
                send(None)?;
                continue;
            }
            let request_id = text(&id, i).with_context(|| format!("{}: `request_id` must be a string", at()))?;
            let label = text(&label, i).with_context(|| format!("{}: `label` must be a string", at()))?;
            let row = number(&row, i)
                .with_context(|| format!("{}: `row` must be a non-negative integer ({})", at(), row.data_type()))?;
            send(Some(proto::Outcome { request_id, row, label }))?;
        }
        seen += batch.num_rows();
    }
    Ok(())
}

#[cfg(not(feature = "parquet"))]
fn read_parquet(input: &Path, _send: Send) -> anyhow::Result<()> {
    bail!("{}: this candela was built without Parquet (the `parquet` feature); use CSV", input.display())
}

/// The summary line of a run.
pub fn summary(totals: &proto::FeedbackResponse, skipped: u64) -> anyhow::Result<String> {
    let all =
        totals.matched + totals.unknown_request + totals.row_out_of_range + totals.unknown_label + totals.duplicate;
    if all == 0 {
        bail!("the input holds no outcomes with a request id");
    }
    let mut line = format!(
        "fed back {all} outcomes: {} matched; not matched: {} unknown or expired request id, {} row out of range, {} unknown label, {} duplicate",
        totals.matched, totals.unknown_request, totals.row_out_of_range, totals.unknown_label, totals.duplicate
    );
    if skipped > 0 {
        line += &format!("; {skipped} rows without a request id skipped");
    }
    Ok(line)
}
