//! Parquet for `candela score` (the client crate's `parquet` feature).
//!
//! Only the model's feature columns are decoded, found by name and read as
//! columns (float32 or float64 as pandas writes them, integers and booleans
//! as their value; a null is a missing value, NaN; a category feature's
//! strings, plain or dictionary-encoded as pandas writes a `category`, as
//! its names, a null as the empty name). Every
//! column of the input is carried into the output *without decoding it*:
//! the output has the input's row groups, each made of the input's column
//! chunks copied byte for byte, followed by the new columns `prediction`
//! (the label; a regressor's value, float32), `p_<label>` (float32) and
//! `error` (null where they do not apply), encoded with SNAPPY. Re-encoding the carried columns was half of
//! the client's time (perf), copying them costs a read and a write.
//! The input's key-value metadata (pandas' included) is kept, with the
//! Arrow schema extended by the new columns. Progress is counted in rows.

use super::{Answers, Batch, Explained, Schema, Sink, Source, Values};
use anyhow::{Context, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, Float32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Fields, Schema as ArrowSchema};
use candela_client::proto;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::arrow_writer::{ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::arrow::{
    ARROW_SCHEMA_META_KEY, ArrowSchemaConverter, ProjectionMask, add_encoded_arrow_schema_to_metadata,
};
use parquet::basic::Compression;
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::{ColumnPath, Type};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

/// Reads the feature columns, one row group after another.
pub struct ParquetSource {
    file: File,
    metadata: ArrowReaderMetadata,
    projection: ProjectionMask,
    /// Where each feature is among the projected columns.
    features: Arc<[usize]>,
    /// Per feature, whether it is a category (read as strings).
    categories: Arc<[bool]>,
    batch_rows: usize,
    /// The row group being read, its reader and the rows it has left.
    group: usize,
    reader: Option<ParquetRecordBatchReader>,
    left_in_group: u64,
    rows: u64,
    read: u64,
}

/// A batch of one row group's feature columns.
pub struct ParquetBatch {
    features: RecordBatch,
    positions: Arc<[usize]>,
    categories: Arc<[bool]>,
    group: usize,
    ends_group: bool,
    done: u64,
}

/// Writes the output, one input row group at a time.
pub struct ParquetSink {
    writer: SerializedFileWriter<File>,
    /// The input, whose column chunks are copied.
    input: File,
    metadata: Arc<ParquetMetaData>,
    factory: ArrowRowGroupWriterFactory,
    added: Fields,
    labels: Vec<String>,
    record_ids: bool,
    explained: Explained,
    /// The new columns' writers for the row group being written.
    columns: Option<Vec<ArrowColumnWriter>>,
}

/// Opens `input` against the model's schema, reading `batch_rows` rows at a
/// time, and creates `output` with the scored schema.
pub fn open(
    input: &Path,
    output: &Path,
    schema: &Schema,
    batch_rows: usize,
) -> anyhow::Result<(ParquetSource, ParquetSink)> {
    let file = File::open(input).with_context(|| format!("cannot read {}", input.display()))?;
    let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
        .with_context(|| format!("{} is not a Parquet file", input.display()))?;
    let input_schema = metadata.schema().clone();
    let features = schema.locate(input, input_schema.fields().iter().map(|f| f.name().as_str()))?;
    for (f, &c) in features.iter().enumerate() {
        let field = input_schema.field(c);
        let category = schema.categories.get(f) == Some(&true);
        if category && !textual(field.data_type()) {
            bail!(
                "{}: column `{}` is {}; the model's feature `{}` is a category: write its names as strings",
                input.display(),
                field.name(),
                field.data_type(),
                schema.features[f]
            );
        }
        if !category && !readable(field.data_type()) {
            bail!(
                "{}: column `{}` is {}; a feature column must be float32, float64, an integer or a boolean",
                input.display(),
                field.name(),
                field.data_type()
            );
        }
    }
    // Feature columns are decoded, so their codec must be one this build
    // has; the other columns are only copied, whatever their codec.
    let descriptor = metadata.parquet_schema();
    for group in metadata.metadata().row_groups() {
        for (leaf, chunk) in group.columns().iter().enumerate() {
            let codec = chunk.compression().to_string();
            let codec = codec.split('(').next().unwrap_or_default();
            if features.contains(&descriptor.get_column_root_idx(leaf)) && !matches!(codec, "UNCOMPRESSED" | "SNAPPY") {
                bail!(
                    "{}: column `{}` is compressed with {codec}; this candela decodes SNAPPY (pandas' and Spark's default) or uncompressed feature columns: write the file with compression=\"snappy\"",
                    input.display(),
                    chunk.column_path().string()
                );
            }
        }
    }
    // Projected columns come in the file's order.
    let mut roots = features.clone();
    roots.sort_unstable();
    roots.dedup();
    let positions: Arc<[usize]> = features.iter().map(|c| roots.binary_search(c).expect("projected")).collect();
    let projection = ProjectionMask::roots(metadata.parquet_schema(), roots);
    let parquet = metadata.metadata().clone();
    let rows = parquet.file_metadata().num_rows().max(0) as u64;

    let added = added_fields(schema);
    let mut fields: Vec<Arc<Field>> = input_schema.fields().iter().cloned().collect();
    fields.extend(added.iter().cloned());
    let output_schema = ArrowSchema::new_with_metadata(fields, input_schema.metadata().clone());
    let added_parquet = ArrowSchemaConverter::new().convert(&ArrowSchema::new(added.clone()))?;
    let root = parquet.file_metadata().schema();
    let mut columns: Vec<Arc<Type>> = root.get_fields().to_vec();
    columns.extend(added_parquet.root_schema().get_fields().iter().cloned());
    let output_parquet = Arc::new(Type::group_type_builder(root.name()).with_fields(columns).build()?);

    let properties = Arc::new(properties(&parquet, &output_schema));
    let out = File::create(output).with_context(|| format!("cannot write {}", output.display()))?;
    let writer = SerializedFileWriter::new(out, output_parquet, properties.clone())?;
    // The new columns' writers are made against a schema of those columns
    // alone, whose column descriptors equal the output's last ones.
    let template = SerializedFileWriter::new(std::io::sink(), added_parquet.root_schema_ptr(), properties)?;
    let factory = ArrowRowGroupWriterFactory::new(&template, Arc::new(ArrowSchema::new(added.clone())));
    // Its own handle: clones of one handle share the read position, and the
    // reader and the writer are different threads.
    let copied_from = File::open(input).with_context(|| format!("cannot read {}", input.display()))?;
    let source = ParquetSource {
        file,
        metadata,
        projection,
        features: positions,
        categories: schema.categories.iter().copied().collect(),
        batch_rows,
        group: 0,
        reader: None,
        left_in_group: 0,
        rows,
        read: 0,
    };
    Ok((
        source,
        ParquetSink {
            writer,
            input: copied_from,
            metadata: parquet,
            factory,
            added,
            labels: schema.labels.clone(),
            record_ids: schema.record_ids,
            explained: schema.explained.clone(),
            columns: None,
        },
    ))
}

/// The new columns' Arrow fields, all nullable.
fn added_fields(schema: &Schema) -> Fields {
    let labels = schema.labels.len();
    schema
        .added_columns()
        .iter()
        .enumerate()
        .map(|(i, name)| {
            // prediction, p_<label>…, error, then request_id and row, the
            // reasons, the contributions.
            let ids = if schema.record_ids { 2 } else { 0 };
            let contributions = labels + 2 + ids + schema.explained.reasons;
            let data_type = match i {
                0 if labels == 0 => DataType::Float32,
                i if (1..=labels).contains(&i) => DataType::Float32,
                i if ids > 0 && i == labels + 3 => DataType::Int64,
                i if i >= contributions => DataType::Float32,
                _ => DataType::Utf8,
            };
            Field::new(name, data_type, true)
        })
        .collect()
}

/// SNAPPY (pandas' default), statistics per chunk, dictionaries only for the
/// few labels and messages; the input's key-value metadata with the Arrow
/// schema replaced by the output's.
fn properties(input: &ParquetMetaData, output_schema: &ArrowSchema) -> WriterProperties {
    let kept: Vec<_> = input
        .file_metadata()
        .key_value_metadata()
        .into_iter()
        .flatten()
        .filter(|kv| kv.key != ARROW_SCHEMA_META_KEY)
        .cloned()
        .collect();
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_dictionary_enabled(false)
        .set_key_value_metadata(Some(kept));
    for name in ["prediction", "error"] {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(name), true);
    }
    let mut properties = builder.build();
    add_encoded_arrow_schema_to_metadata(output_schema, &mut properties);
    properties
}

/// Whether `strings` can read a column of this type as a category's names.
fn textual(data_type: &DataType) -> bool {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, values) => textual(values),
        _ => false,
    }
}

/// A category column's names, row by row (a null: the empty name). The
/// column's type was checked by `textual` at open.
fn strings(column: &dyn Array) -> Vec<String> {
    let name = |i: usize, value: &str| if column.is_null(i) { String::new() } else { value.to_string() };
    match column.data_type() {
        DataType::Utf8 => column.as_string::<i32>().iter().enumerate().map(|(i, v)| name(i, v.unwrap_or(""))).collect(),
        DataType::LargeUtf8 => {
            column.as_string::<i64>().iter().enumerate().map(|(i, v)| name(i, v.unwrap_or(""))).collect()
        }
        DataType::Utf8View => {
            column.as_string_view().iter().enumerate().map(|(i, v)| name(i, v.unwrap_or(""))).collect()
        }
        DataType::Dictionary(..) => {
            let dictionary = column.as_any_dictionary();
            let names = strings(dictionary.values().as_ref());
            let keys = dictionary.normalized_keys();
            keys.iter()
                .enumerate()
                .map(|(i, &k)| if column.is_null(i) { String::new() } else { names[k].clone() })
                .collect()
        }
        other => unreachable!("`textual` refused {other} at open"),
    }
}

/// Whether `values_into` can read a column of this type as features.
fn readable(data_type: &DataType) -> bool {
    data_type.is_floating() && *data_type != DataType::Float16
        || data_type.is_integer()
        || *data_type == DataType::Boolean
}

impl Source for ParquetSource {
    type Batch = ParquetBatch;

    fn size(&self) -> u64 {
        self.rows
    }

    fn next_batch(&mut self) -> anyhow::Result<Option<ParquetBatch>> {
        let groups = self.metadata.metadata().row_groups();
        while self.left_in_group == 0 {
            if self.reader.is_some() {
                self.group += 1;
            }
            let Some(group) = groups.get(self.group) else { return Ok(None) };
            self.left_in_group = group.num_rows().max(0) as u64;
            let builder =
                ParquetRecordBatchReaderBuilder::new_with_metadata(self.file.try_clone()?, self.metadata.clone());
            self.reader = Some(
                builder
                    .with_projection(self.projection.clone())
                    .with_row_groups(vec![self.group])
                    .with_batch_size(self.batch_rows)
                    .build()?,
            );
        }
        let reader = self.reader.as_mut().expect("opened above");
        let features = reader
            .next()
            .transpose()
            .with_context(|| format!("cannot decode row group {}", self.group))?
            .with_context(|| format!("row group {} ended {} rows early", self.group, self.left_in_group))?;
        let rows = features.num_rows() as u64;
        self.left_in_group = self.left_in_group.saturating_sub(rows);
        self.read += rows;
        Ok(Some(ParquetBatch {
            features,
            positions: self.features.clone(),
            categories: self.categories.clone(),
            group: self.group,
            ends_group: self.left_in_group == 0,
            done: self.read,
        }))
    }
}

impl Batch for ParquetBatch {
    fn rows(&self) -> usize {
        self.features.num_rows()
    }

    fn values(&self) -> anyhow::Result<Values> {
        let (rows, width) = (self.features.num_rows(), self.positions.len());
        let mut values = vec![0f32; rows * width];
        let mut text = Vec::new();
        for (j, &c) in self.positions.iter().enumerate() {
            let column = self.features.column(c).as_ref();
            match self.categories.get(j) {
                Some(true) => {
                    // A null category is a missing one.
                    let missing = (0..rows).filter(|&r| column.is_null(r)).map(|r| r as u32).collect();
                    text.push(proto::TextColumn { feature: j as u32, values: strings(column), missing })
                }
                _ => values_into(column, &mut values[j..], width),
            }
        }
        // Typed columns: every row reads (a null is a missing value).
        Ok(Values { values, text, unreadable: Vec::new() })
    }

    fn done(&self) -> u64 {
        self.done
    }
}

/// Writes `column`'s values as f32 into every `stride`-th slot of `out`
/// (one feature of a row-major batch); nulls become NaN, the server's
/// missing value. The column's type was checked by `readable` at open.
fn values_into(column: &dyn Array, out: &mut [f32], stride: usize) {
    macro_rules! copy {
        ($values:expr) => {
            for (slot, v) in out.iter_mut().step_by(stride).zip($values) {
                *slot = v as f32;
            }
        };
    }
    match column.data_type() {
        DataType::Float32 => copy!(column.as_primitive::<Float32Type>().values().iter().copied()),
        DataType::Float64 => copy!(column.as_primitive::<Float64Type>().values().iter().copied()),
        DataType::Int8 => copy!(column.as_primitive::<Int8Type>().values().iter().copied()),
        DataType::Int16 => copy!(column.as_primitive::<Int16Type>().values().iter().copied()),
        DataType::Int32 => copy!(column.as_primitive::<Int32Type>().values().iter().copied()),
        DataType::Int64 => copy!(column.as_primitive::<Int64Type>().values().iter().copied()),
        DataType::UInt8 => copy!(column.as_primitive::<UInt8Type>().values().iter().copied()),
        DataType::UInt16 => copy!(column.as_primitive::<UInt16Type>().values().iter().copied()),
        DataType::UInt32 => copy!(column.as_primitive::<UInt32Type>().values().iter().copied()),
        DataType::UInt64 => copy!(column.as_primitive::<UInt64Type>().values().iter().copied()),
        DataType::Boolean => copy!(column.as_boolean().values().iter().map(u8::from)),
        other => unreachable!("`readable` refused {other} at open"),
    }
    if column.null_count() > 0 {
        for (i, slot) in out.iter_mut().step_by(stride).enumerate().take(column.len()) {
            if column.is_null(i) {
                *slot = f32::NAN;
            }
        }
    }
}

impl ParquetSink {
    /// Ends the output's row group for input row group `group`: its column
    /// chunks copied, then the new columns.
    fn end_group(&mut self, group: usize) -> anyhow::Result<()> {
        let columns = self.columns.take().context("a row group ended before it began")?;
        let input = self.metadata.row_group(group);
        let mut out = self.writer.next_row_group()?;
        for chunk in input.columns() {
            let copied = ColumnCloseResult {
                bytes_written: chunk.compressed_size() as u64,
                rows_written: input.num_rows() as u64,
                metadata: chunk.clone(),
                bloom_filter: None,
                column_index: None,
                offset_index: None,
            };
            out.append_column(&self.input, copied).with_context(|| format!("copying row group {group}"))?;
        }
        for column in columns {
            column.close()?.append_to_row_group(&mut out)?;
        }
        out.close()?;
        Ok(())
    }
}

impl Sink<ParquetBatch> for ParquetSink {
    fn write(&mut self, batch: ParquetBatch, answers: Answers) -> anyhow::Result<()> {
        let prediction: ArrayRef = match self.labels.is_empty() {
            true => Arc::new(answers.iter().map(|a| a.ok().map(|(_, value)| value[0])).collect::<Float32Array>()),
            false => Arc::new(
                answers.iter().map(|a| a.ok().map(|(class, _)| self.labels[class].as_str())).collect::<StringArray>(),
            ),
        };
        let mut arrays = vec![prediction];
        for k in 0..self.labels.len() {
            let probability = |a: Result<(usize, &[f32]), &str>| a.ok().map(|(_, p)| p[k]);
            arrays.push(Arc::new(answers.iter().map(probability).collect::<Float32Array>()));
        }
        arrays.push(Arc::new(answers.iter().map(Result::err).collect::<StringArray>()));
        if self.record_ids {
            arrays.push(Arc::new(answers.ids().map(|id| id.map(|(id, _)| id)).collect::<StringArray>()));
            arrays.push(Arc::new(answers.ids().map(|id| id.map(|(_, row)| row as i64)).collect::<Int64Array>()));
        }
        let rows = answers.rows_answered();
        let classes: Vec<usize> = answers.iter().map(|a| a.map_or(0, |(class, _)| class)).collect();
        let reasons: Vec<Vec<Option<&str>>> =
            (0..rows).map(|r| self.explained.reason_cells(answers.explanation(r))).collect();
        for k in 0..self.explained.reasons {
            arrays.push(Arc::new(reasons.iter().map(|cells| cells[k]).collect::<StringArray>()));
        }
        let contributions: Vec<Vec<Option<f32>>> =
            (0..rows).map(|r| self.explained.contribution_cells(answers.explanation(r), classes[r])).collect();
        for c in 0..contributions.first().map_or(0, Vec::len) {
            arrays.push(Arc::new(contributions.iter().map(|cells| cells[c]).collect::<Float32Array>()));
        }
        if self.columns.is_none() {
            self.columns = Some(self.factory.create_column_writers(batch.group)?);
        }
        let columns = self.columns.as_mut().expect("made above");
        for ((column, field), array) in columns.iter_mut().zip(self.added.iter()).zip(&arrays) {
            for leaf in compute_leaves(field, array)? {
                column.write(&leaf)?;
            }
        }
        if batch.ends_group {
            self.end_group(batch.group)?;
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        if self.columns.is_some() {
            bail!("the input ended inside a row group");
        }
        self.writer.close()?;
        Ok(())
    }
}
