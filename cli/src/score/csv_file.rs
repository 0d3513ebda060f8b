//! CSV for `candela score`: a header row naming (at least) the model's
//! features, in any order, each once, any other columns carried through as
//! text; a category feature's cell is its name; a row with another feature
//! cell that is not a number is refused alone. The
//! output is the input's records with `prediction`, `p_<label>` and `error`
//! appended (a regressor's: its value as `prediction`, and `error`; empty
//! where they do not apply). Progress is counted in bytes.

use super::{Answers, Batch, Explained, Schema, Sink, Source, Values};
use anyhow::Context;
use candela_client::proto;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

/// Which columns hold the features, which of them are categories (read as
/// text), and the header to name them in errors.
struct Columns {
    features: Vec<usize>,
    categories: Vec<bool>,
    header: csv::StringRecord,
}

pub struct CsvSource {
    records: csv::StringRecordsIntoIter<File>,
    columns: Arc<Columns>,
    size: u64,
    batch_rows: usize,
}

pub struct CsvBatch {
    records: Vec<csv::StringRecord>,
    columns: Arc<Columns>,
}

pub struct CsvSink {
    writer: csv::Writer<File>,
    labels: Vec<String>,
    record_ids: bool,
    explained: Explained,
}

/// Opens `input` against the model's schema, reading `batch_rows` records
/// at a time, and creates `output` with the scored header.
pub fn open(input: &Path, output: &Path, schema: &Schema, batch_rows: usize) -> anyhow::Result<(CsvSource, CsvSink)> {
    let mut reader = csv::Reader::from_path(input).with_context(|| format!("cannot read {}", input.display()))?;
    let header = reader.headers()?.clone();
    let features = schema.locate(input, header.iter())?;
    let size = std::fs::metadata(input).map_or(0, |m| m.len());
    let mut writer = csv::Writer::from_path(output).with_context(|| format!("cannot write {}", output.display()))?;
    let mut out_header = header.clone();
    for name in schema.added_columns() {
        out_header.push_field(&name);
    }
    writer.write_record(&out_header)?;
    let columns = Arc::new(Columns { features, categories: schema.categories.clone(), header });
    Ok((
        CsvSource { records: reader.into_records(), columns, size, batch_rows },
        CsvSink {
            writer,
            labels: schema.labels.clone(),
            record_ids: schema.record_ids,
            explained: schema.explained.clone(),
        },
    ))
}

impl Source for CsvSource {
    type Batch = CsvBatch;

    fn size(&self) -> u64 {
        self.size
    }

    fn next_batch(&mut self) -> anyhow::Result<Option<CsvBatch>> {
        let records = self.records.by_ref().take(self.batch_rows).collect::<Result<Vec<_>, _>>()?;
        Ok((!records.is_empty()).then(|| CsvBatch { records, columns: self.columns.clone() }))
    }
}

impl Batch for CsvBatch {
    fn rows(&self) -> usize {
        self.records.len()
    }

    fn values(&self) -> anyhow::Result<Values> {
        let Columns { features, categories, header } = &*self.columns;
        let mut values = Vec::with_capacity(self.records.len() * features.len());
        let mut text: Vec<proto::TextColumn> = (0..features.len())
            .filter(|&f| categories.get(f) == Some(&true))
            .map(|f| proto::TextColumn { feature: f as u32, ..Default::default() })
            .collect();
        let mut unreadable = Vec::new();
        let mut row = Vec::with_capacity(features.len());
        for (i, record) in self.records.iter().enumerate() {
            row.clear();
            for (f, &c) in features.iter().enumerate() {
                let cell = record.get(c).unwrap_or("").trim();
                if categories.get(f) == Some(&true) {
                    row.push(0.0);
                    continue;
                }
                match cell.parse::<f32>() {
                    Ok(value) => row.push(value),
                    Err(_) => {
                        let line = record.position().map_or(0, |p| p.line());
                        let shown: String = cell.chars().take(40).collect();
                        unreadable
                            .push((i, format!("line {line}: `{shown}` in column `{}` is not a number", &header[c])));
                        break;
                    }
                }
            }
            if row.len() == features.len() {
                values.extend_from_slice(&row);
                for column in &mut text {
                    let cell = record.get(features[column.feature as usize]).unwrap_or("").trim();
                    // An empty category cell is a missing one.
                    if cell.is_empty() {
                        column.missing.push(column.values.len() as u32);
                    }
                    column.values.push(cell.to_string());
                }
            }
        }
        Ok(Values { values, text, unreadable })
    }

    fn done(&self) -> u64 {
        self.records.last().and_then(|r| r.position()).map_or(0, |p| p.byte())
    }
}

impl Sink<CsvBatch> for CsvSink {
    fn write(&mut self, batch: CsvBatch, answers: Answers) -> anyhow::Result<()> {
        let rows = batch.records.into_iter().zip(answers.iter()).zip(answers.ids()).enumerate();
        for (index, ((mut record, answer), id)) in rows {
            let class = answer.as_ref().map_or(0, |(class, _)| *class);
            match answer {
                Ok((_, [value])) if self.labels.is_empty() => {
                    record.push_field(&value.to_string());
                    record.push_field("");
                }
                Ok((class, probabilities)) => {
                    record.push_field(&self.labels[class]);
                    for p in probabilities {
                        record.push_field(&p.to_string());
                    }
                    record.push_field("");
                }
                Err(message) => {
                    for _ in 0..=self.labels.len() {
                        record.push_field("");
                    }
                    record.push_field(message);
                }
            }
            if self.record_ids {
                let (request_id, row) =
                    id.map_or((String::new(), String::new()), |(i, r)| (i.to_string(), r.to_string()));
                record.push_field(&request_id);
                record.push_field(&row);
            }
            let explanation = answers.explanation(index);
            for reason in self.explained.reason_cells(explanation) {
                record.push_field(reason.unwrap_or_default());
            }
            for contribution in self.explained.contribution_cells(explanation, class) {
                record.push_field(&contribution.map_or_else(String::new, |c| c.to_string()));
            }
            self.writer.write_record(&record)?;
        }
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<()> {
        Ok(self.writer.flush()?)
    }
}
