//! `candela score`: batch scoring of a table (CSV, or Parquet with the
//! `parquet` feature) through StreamPredict.
//!
//! Three stages, each on its own thread so none waits on another's work: a
//! reader turns the file into row batches and deals them to N streams in turn
//! (`--streams`); the ordering loop takes batch i's answer as the next one on
//! stream i mod N, so results come out in input order; a writer writes each
//! batch's rows beside their scores. Every hand-over is a bounded channel, so
//! memory stays flat on any file size and a slow writer slows the reader.
//!
//! A row with a cell that is not a number is never sent: it carries its
//! error in the output and the run goes on. A refused batch (a NaN, say)
//! costs only its offending rows: the client
//! isolates them by scoring the batch's halves again (BatchPredict,
//! recursively), so every other row gets its scores and only the offending
//! rows carry the error; scoring carries on.
//!
//! The formats live in their own modules behind three small traits
//! (`Source`, `Batch`, `Sink`); this module knows nothing of either format.

mod csv_file;
mod explained;
#[cfg(feature = "parquet")]
mod parquet_file;

use anyhow::{Context, bail};
use candela_client::{Client, ModelId, proto, stream_batch};
pub use explained::Explained;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

/// Batches read and not yet written, per stream, at most: the server's
/// `--stream-in-flight` (4) being scored, answers in transit, and the next
/// requests ready (12 scored 5-10 % faster than 6, for ~20 MB more; RESULTS.md).
const IN_FLIGHT: usize = 12;

/// Answered batches waiting for the writer, at most.
const TO_WRITE: usize = 4;

/// What a run did.
pub struct ScoreSummary {
    pub rows: u64,
    pub refused_rows: u64,
}

/// One row's answer from a per-row call: its prediction and the request id
/// and row it is kept under for outcomes, or why it was refused.
type Answer = Result<(proto::Prediction, String, u64), String>;

/// A batch's answers, as columns (what StreamPredict sends when asked for
/// `columnar`): each row's class and probabilities (a regressor's, of no
/// labels: class 0 and its one value), and the refused rows.
pub struct Answers {
    labels: usize,
    class_index: Vec<u32>,
    /// Row-major, `labels` per row (a regressor: its value); zeros for refused rows.
    probabilities: Vec<f32>,
    /// The refused rows, in row order, with why.
    refused: Vec<(usize, String)>,
    /// The request id and row each answered row is kept under for outcomes.
    ids: Ids,
    /// Each row's explanation, when asked (`--explain`); empty otherwise.
    explanations: Vec<Option<proto::Explanation>>,
}

/// Where a batch's answers are kept for outcomes (`Feedback`).
enum Ids {
    /// Row i of the message kept under this id (`<stream id>/<message id>`).
    Message(String),
    /// Each row's own (the rows of a refused batch, scored again apart).
    Rows(Vec<Option<(String, u64)>>),
}

impl Answers {
    /// Every one of `rows` rows refused for one reason.
    fn all_refused(rows: usize, labels: usize, message: &str) -> Answers {
        let refused = (0..rows).map(|i| (i, message.to_string())).collect();
        let ids = Ids::Rows(vec![None; rows]);
        let probabilities = vec![0.0; rows * labels.max(1)];
        Answers { labels, class_index: vec![0; rows], probabilities, refused, ids, explanations: vec![None; rows] }
    }

    /// A batch answered in columns (kept under request id `id`), checked against its `rows` and `labels`.
    fn columns(columns: proto::PredictionColumns, rows: usize, labels: usize, id: String) -> anyhow::Result<Answers> {
        let explanations = match columns.explanations.len() {
            0 => vec![None; rows],
            n if n == rows => columns.explanations.into_iter().map(Some).collect(),
            n => bail!("the server answered {n} explanations for {rows} rows"),
        };
        if labels == 0 {
            if columns.values.len() != rows {
                bail!("the server answered {} values for {rows} rows of a regressor", columns.values.len());
            }
            let (class_index, probabilities, ids) = (vec![0; rows], columns.values, Ids::Message(id));
            return Ok(Answers { labels, class_index, probabilities, refused: vec![], ids, explanations });
        }
        if columns.label_count as usize != labels
            || columns.class_index.len() != rows
            || columns.probabilities.len() != rows * labels
        {
            bail!(
                "the server answered {} classes and {} probabilities of {} labels for {rows} rows of {labels} labels",
                columns.class_index.len(),
                columns.probabilities.len(),
                columns.label_count
            );
        }
        let (class_index, probabilities, ids) = (columns.class_index, columns.probabilities, Ids::Message(id));
        Ok(Answers { labels, class_index, probabilities, refused: vec![], ids, explanations })
    }

    /// Per-row answers (those of a refused batch's isolation).
    fn rows(answers: Vec<Answer>, labels: usize) -> anyhow::Result<Answers> {
        let (mut class_index, mut probabilities, mut refused) = (vec![], vec![], vec![]);
        let (mut ids, mut explanations) = (Vec::with_capacity(answers.len()), Vec::with_capacity(answers.len()));
        for (i, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok((prediction, id, row)) if prediction.probabilities.len() == labels => {
                    class_index.push(prediction.class_index);
                    match labels {
                        0 => probabilities.push(prediction.value),
                        _ => probabilities.extend(prediction.probabilities),
                    }
                    ids.push(Some((id, row)));
                    explanations.push(prediction.explanation);
                }
                Ok((prediction, ..)) => {
                    bail!("the server answered {} probabilities for {labels} labels", prediction.probabilities.len())
                }
                Err(message) => {
                    class_index.push(0);
                    probabilities.extend(std::iter::repeat_n(0.0, labels.max(1)));
                    refused.push((i, message));
                    ids.push(None);
                    explanations.push(None);
                }
            }
        }
        Ok(Answers { labels, class_index, probabilities, refused, ids: Ids::Rows(ids), explanations })
    }

    /// These answers (to the rows that were sent) with the `unreadable`
    /// rows put back in their places, refused with their reasons.
    fn with_unreadable(self, unreadable: Vec<(usize, String)>) -> Answers {
        if unreadable.is_empty() {
            return self;
        }
        let (labels, width) = (self.labels, self.labels.max(1));
        let total = self.rows_answered() + unreadable.len();
        let ids: Vec<Option<(String, u64)>> = self.ids().map(|id| id.map(|(id, row)| (id.to_string(), row))).collect();
        let mut server_refused = self.refused.into_iter().peekable();
        let mut unreadable = unreadable.into_iter().peekable();
        let mut merged = Answers {
            labels,
            class_index: Vec::with_capacity(total),
            probabilities: Vec::with_capacity(total * width),
            refused: Vec::new(),
            ids: Ids::Rows(Vec::with_capacity(total)),
            explanations: Vec::with_capacity(total),
        };
        let Ids::Rows(merged_ids) = &mut merged.ids else { unreachable!("built as rows") };
        let mut sent = 0;
        for row in 0..total {
            if let Some((_, why)) = unreadable.next_if(|(at, _)| *at == row) {
                merged.class_index.push(0);
                merged.probabilities.extend(std::iter::repeat_n(0.0, width));
                merged.refused.push((row, why));
                merged_ids.push(None);
                merged.explanations.push(None);
                continue;
            }
            merged.class_index.push(self.class_index[sent]);
            merged.probabilities.extend_from_slice(&self.probabilities[sent * width..(sent + 1) * width]);
            if let Some((_, why)) = server_refused.next_if(|(at, _)| *at == sent) {
                merged.refused.push((row, why));
            }
            merged_ids.push(ids[sent].clone());
            merged.explanations.push(self.explanations[sent].clone());
            sent += 1;
        }
        merged
    }

    pub fn rows_answered(&self) -> usize {
        self.class_index.len()
    }

    pub fn refused_rows(&self) -> usize {
        self.refused.len()
    }

    /// Per row: the request id and row its answer is kept under for
    /// outcomes; none for a refused row (a message answered in columns has
    /// none; per-row answers hold `None` for theirs).
    pub fn ids(&self) -> impl Iterator<Item = Option<(&str, u64)>> {
        (0..self.class_index.len()).map(move |i| match &self.ids {
            Ids::Message(id) => Some((id.as_str(), i as u64)),
            Ids::Rows(rows) => rows[i].as_ref().map(|(id, row)| (id.as_str(), *row)),
        })
    }

    /// Row `row`'s explanation, when the run asked for them and the row was answered.
    pub fn explanation(&self, row: usize) -> Option<&proto::Explanation> {
        self.explanations.get(row).and_then(Option::as_ref)
    }

    /// Per row: the index of its predicted label and its probabilities, or
    /// why it was refused.
    pub fn iter(&self) -> impl Iterator<Item = Result<(usize, &[f32]), &str>> {
        let mut refused = self.refused.iter().peekable();
        self.class_index.iter().zip(self.probabilities.chunks_exact(self.labels.max(1))).enumerate().map(
            move |(i, (class, probabilities))| match refused.next_if(|(row, _)| *row == i) {
                Some((_, message)) => Err(message.as_str()),
                None => Ok((*class as usize, probabilities)),
            },
        )
    }
}

/// What the model needs of a table: its features' names in order, and the
/// columns a scored table gains (which the input must not have already).
pub struct Schema {
    pub features: Vec<String>,
    /// Per feature, whether it is a category, read as text and sent as its
    /// name (GetModel's `feature_types`).
    pub categories: Vec<bool>,
    pub labels: Vec<String>,
    /// Whether the output gains `request_id` and `row` (`--record-ids`).
    pub record_ids: bool,
    /// The reasons and contributions asked for (`--explain`, `--contributions`).
    pub explained: Explained,
}

impl Schema {
    /// The columns added to every output row: the predicted label, one
    /// probability per label (a regressor, of no labels: the value as its
    /// prediction), and the refusal message; with `record_ids`,
    /// the request id and row its answer is kept under for outcomes (the
    /// columns `candela feedback` reads).
    pub fn added_columns(&self) -> Vec<String> {
        let mut names = vec!["prediction".to_string()];
        names.extend(self.labels.iter().map(|label| format!("p_{label}")));
        names.push("error".into());
        if self.record_ids {
            names.extend(["request_id".to_string(), "row".to_string()]);
        }
        let (reasons, contributions) = self.explained.columns();
        names.extend(reasons);
        names.extend(contributions);
        names
    }

    /// Where each feature is among `names` (a file's column names), or which
    /// are missing; refuses an input that already has an output column.
    pub fn locate<'a>(&self, file: &Path, names: impl Iterator<Item = &'a str> + Clone) -> anyhow::Result<Vec<usize>> {
        if let Some(taken) = self.added_columns().into_iter().find(|c| names.clone().any(|n| n == c)) {
            bail!("{} already has a column `{taken}`, which the output adds: rename it", file.display());
        }
        for feature in &self.features {
            if names.clone().filter(|n| n == feature).count() > 1 {
                bail!(
                    "{} has two columns named `{feature}`, a feature of the model: which one is meant is ambiguous; rename or drop one",
                    file.display()
                );
            }
        }
        let found: Vec<Option<usize>> = self.features.iter().map(|f| names.clone().position(|n| n == f)).collect();
        if found.iter().any(Option::is_none) {
            let missing: Vec<&str> =
                self.features.iter().zip(&found).filter(|(_, at)| at.is_none()).map(|(f, _)| f.as_str()).collect();
            bail!("{} lacks columns for the model's features: {}", file.display(), missing.join(", "));
        }
        Ok(found.into_iter().flatten().collect())
    }
}

/// A table read in batches, on the reader thread.
pub trait Source: Send + 'static {
    type Batch: Batch;
    /// The progress bar's length, in the units of `Batch::done`.
    fn size(&self) -> u64;
    /// The next batch (of at most the rows per message it was opened
    /// with); `None` at the end.
    fn next_batch(&mut self) -> anyhow::Result<Option<Self::Batch>>;
}

/// A batch's feature values as sent, and the rows left out of them.
pub struct Values {
    /// Row-major, the readable rows only (a category feature's slots 0).
    pub values: Vec<f32>,
    /// The category features' names, one column each, the readable rows only.
    pub text: Vec<proto::TextColumn>,
    /// The unreadable rows (indexes into the batch, ascending), with why.
    pub unreadable: Vec<(usize, String)>,
}

/// One batch of input rows, kept until its answers are written.
pub trait Batch: Send + 'static {
    fn rows(&self) -> usize;
    /// The model's feature values of every readable row, row-major, and the
    /// rows that cannot be read (a cell that is not a number), with why:
    /// those are never sent, and carry their error in the output.
    fn values(&self) -> anyhow::Result<Values>;
    /// How far into the input this batch ends, in the units of `Source::size`.
    fn done(&self) -> u64;
}

/// Where scored batches are written, on the writer thread.
pub trait Sink<B>: Send + 'static {
    /// Writes `batch`'s rows with their answers (one per row, in order).
    fn write(&mut self, batch: B, answers: Answers) -> anyhow::Result<()>;
    /// Completes the file.
    fn finish(self) -> anyhow::Result<()>;
}

/// The file formats `candela score` reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    Parquet,
}

impl Format {
    /// `.parquet` and `.pq` files are Parquet; anything else is CSV.
    fn of(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("parquet" | "pq") => Format::Parquet,
            _ => Format::Csv,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Format::Csv => "CSV",
            Format::Parquet => "Parquet",
        }
    }
}

/// Whether `path` is read as Parquet (`.parquet`, `.pq`) rather than CSV.
pub fn is_parquet(path: &Path) -> bool {
    Format::of(path) == Format::Parquet
}

/// Every readable row of `input` (CSV or Parquet) as `schema`'s features:
/// what `candela model init --sample` computes statistics from. Unreadable
/// rows (a cell that is no number) are left out.
pub fn read_table(input: &Path, schema: &Schema) -> anyhow::Result<Values> {
    fn all<S: Source>(mut source: S) -> anyhow::Result<Values> {
        let mut read = Values { values: Vec::new(), text: Vec::new(), unreadable: Vec::new() };
        while let Some(batch) = source.next_batch()? {
            let values = batch.values()?;
            read.values.extend(values.values);
            for column in values.text {
                match read.text.iter_mut().find(|c| c.feature == column.feature) {
                    Some(all) => {
                        let offset = all.values.len() as u32;
                        all.missing.extend(column.missing.iter().map(|r| r + offset));
                        all.values.extend(column.values);
                    }
                    None => read.text.push(column),
                }
            }
        }
        Ok(read)
    }
    // Opened as for scoring, its output thrown away.
    let nowhere = Path::new("/dev/null");
    match Format::of(input) {
        Format::Csv => all(csv_file::open(input, nowhere, schema, 4096)?.0),
        #[cfg(feature = "parquet")]
        Format::Parquet => all(parquet_file::open(input, nowhere, schema, 4096)?.0),
        #[cfg(not(feature = "parquet"))]
        Format::Parquet => {
            bail!("this candela was built without Parquet support (the client crate's `parquet` feature)")
        }
    }
}

/// How a `candela score` run sends its rows and what it writes.
pub struct Run {
    /// Rows per StreamPredict message.
    pub batch_rows: usize,
    /// StreamPredict streams at once.
    pub streams: usize,
    /// Whether the output gains `request_id` and `row`.
    pub record_ids: bool,
    /// Reasons per row (0: none), and whether every contribution gets a column.
    pub explain: usize,
    pub contributions: bool,
}

/// Scores `input` into `output` (same format, chosen by the file names) with
/// `model` as `run` says.
pub async fn score_file(
    client: &mut Client,
    model: ModelId,
    input: &Path,
    output: &Path,
    run: Run,
) -> anyhow::Result<ScoreSummary> {
    let Run { batch_rows, streams, record_ids, explain, contributions } = run;
    let info = client.get_model(model.clone()).await.map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?;
    // Pin the version GetModel resolved, so every batch is scored by the same model.
    let model = ModelId::pinned(info.segment.clone(), info.version);
    let categories =
        info.features.iter().map(|f| info.feature_types.iter().any(|t| t.name == *f && t.kind == "category"));
    let categories = categories.collect();
    let explained = Explained { reasons: explain, contributions, features: info.features.clone() };
    let schema = Schema { features: info.features, categories, labels: info.labels, record_ids, explained };
    let job = Job {
        model,
        features: schema.features.len(),
        labels: schema.labels.len(),
        streams: streams.max(1),
        explain: explain as u32,
    };
    // Written beside the output and renamed at the end, so a run that fails
    // leaves no half-written output (nor clobbers an earlier one).
    let name = output.file_name().with_context(|| format!("{} is not a file name", output.display()))?;
    let partial = output.with_file_name(format!(".{}.partial", name.to_string_lossy()));
    let scored = match (Format::of(input), Format::of(output)) {
        (Format::Csv, Format::Csv) => match csv_file::open(input, &partial, &schema, batch_rows) {
            Ok((source, sink)) => job.run(client, source, sink).await,
            Err(error) => Err(error),
        },
        #[cfg(feature = "parquet")]
        (Format::Parquet, Format::Parquet) => match parquet_file::open(input, &partial, &schema, batch_rows) {
            Ok((source, sink)) => job.run(client, source, sink).await,
            Err(error) => Err(error),
        },
        #[cfg(not(feature = "parquet"))]
        (Format::Parquet, Format::Parquet) => {
            bail!("this candela was built without Parquet support (the client crate's `parquet` feature)")
        }
        (from, to) => bail!(
            "{} is {} but {} would be {}: the output is written in the input's format, so give it the same kind of name (.parquet or .pq for Parquet, anything else for CSV)",
            input.display(),
            from.name(),
            output.display(),
            to.name()
        ),
    };
    match scored {
        Ok(summary) => {
            std::fs::rename(&partial, output).with_context(|| format!("cannot write {}", output.display()))?;
            Ok(summary)
        }
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            Err(error)
        }
    }
}

/// One scoring run's settings.
struct Job {
    model: ModelId,
    features: usize,
    labels: usize,
    streams: usize,
    /// Reasons asked per row.
    explain: u32,
}

/// A batch read, waiting for its answer: sent as message `id`, or (none)
/// not sent at all, every row of it `unreadable`.
struct Pending<B> {
    id: Option<String>,
    batch: B,
    unreadable: Vec<(usize, String)>,
}

impl Job {
    async fn run<S: Source, K: Sink<S::Batch>>(
        self,
        client: &mut Client,
        source: S,
        sink: K,
    ) -> anyhow::Result<ScoreSummary> {
        // Hidden automatically when stderr is not a terminal.
        let progress = ProgressBar::new(source.size()).with_style(
            ProgressStyle::with_template("{spinner} {wide_bar} {percent:>3}% · {msg} · ETA {eta}")
                .expect("constant template is valid"),
        );
        let started = std::time::Instant::now();
        let (requests, request_streams): (Vec<_>, Vec<_>) = (0..self.streams).map(|_| mpsc::channel(IN_FLIGHT)).unzip();
        // Every batch is announced here before it is sent, so this bounds
        // the batches held between the reader and the writer.
        let (pending_tx, mut pending_rx) = mpsc::channel::<Pending<S::Batch>>(IN_FLIGHT * self.streams);
        let reading = tokio::task::spawn_blocking({
            let (model, features, explain) = (self.model.clone(), self.features, self.explain);
            move || read(source, (model, features, explain), requests, pending_tx)
        });
        let (written_tx, written_rx) = std::sync::mpsc::sync_channel::<(S::Batch, Answers)>(TO_WRITE);
        let writing = tokio::task::spawn_blocking(move || write(sink, written_rx));

        let mut isolating = client.clone();
        let mut responses = Vec::with_capacity(self.streams);
        // Each stream's own request id: the server keeps a message's answers
        // for outcomes under `<stream id>/<message id>`.
        let stream_ids: Vec<String> = (0..self.streams).map(|_| uuid::Uuid::new_v4().to_string()).collect();
        for (request_stream, id) in request_streams.into_iter().zip(&stream_ids) {
            let opened = client.stream_predict_as(id, ReceiverStream::new(request_stream)).await;
            responses.push(opened.map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?);
        }
        let mut summary = ScoreSummary { rows: 0, refused_rows: 0 };
        // Results in input order: the i-th batch sent is answered next on stream i mod N.
        let mut turn = 0;
        while let Some(pending) = pending_rx.recv().await {
            let rows = pending.batch.rows();
            let answers = match &pending.id {
                None => Answers::all_refused(0, self.labels, ""),
                Some(id) => {
                    let Some(response) = responses[turn].next().await else { break };
                    let kept_as = format!("{}/{id}", stream_ids[turn]);
                    turn = (turn + 1) % self.streams;
                    let response =
                        response.map_err(|s| anyhow::anyhow!("stream broken: {:?}: {}", s.code(), s.message()))?;
                    if *id != response.id {
                        bail!("response for batch {} arrived where batch {id} was expected", response.id);
                    }
                    let sent_rows = rows - pending.unreadable.len();
                    self.answers(response.outcome, &pending.batch, sent_rows, kept_as, &mut isolating).await?
                }
            }
            .with_unreadable(pending.unreadable);
            if answers.rows_answered() != rows {
                bail!("the server answered {} rows for a batch of {rows}", answers.rows_answered());
            }
            summary.rows += rows as u64;
            summary.refused_rows += answers.refused_rows() as u64;
            progress.set_position(pending.batch.done());
            let rate = summary.rows as f64 / started.elapsed().as_secs_f64().max(1e-9);
            progress.set_message(format!("{} rows, {rate:.0} rows/s, {} refused", summary.rows, summary.refused_rows));
            if written_tx.send((pending.batch, answers)).is_err() {
                break; // The writer failed; its error is reported below.
            }
        }
        // Whatever stopped the loop, the other stages must not wait on it.
        drop((written_tx, responses, pending_rx));
        let written = writing.await.context("the writer panicked")?;
        reading.await.context("the reader panicked")?.context("reading the input")?;
        written.context("writing the output")?;
        progress.finish_and_clear();
        Ok(summary)
    }

    /// A sent batch's answers (to its `sent_rows` rows, kept for outcomes
    /// under `kept_as`) from its stream response's `outcome`; a batch refused
    /// as invalid is scored again in parts (see `isolate`).
    async fn answers<B: Batch>(
        &self,
        outcome: Option<proto::stream_predict_response::Outcome>,
        batch: &B,
        sent_rows: usize,
        kept_as: String,
        isolating: &mut Client,
    ) -> anyhow::Result<Answers> {
        Ok(match outcome {
            Some(proto::stream_predict_response::Outcome::Error(error))
                if error.code == tonic::Code::InvalidArgument as i32 && sent_rows > 1 =>
            {
                // Read again only on this rare path, rather than kept for every batch.
                let values = batch.values()?;
                let isolated = isolate(isolating, (&self.model, self.features, self.explain), &values).await;
                Answers::rows(isolated, self.labels)?
            }
            Some(proto::stream_predict_response::Outcome::Result(result)) => match result.columns {
                Some(columns) => Answers::columns(columns, sent_rows, self.labels, kept_as)?,
                // A server older than `columnar` answers per row.
                None => {
                    let answers = result.predictions.into_iter().enumerate();
                    Answers::rows(answers.map(|(i, p)| Ok((p, kept_as.clone(), i as u64))).collect(), self.labels)?
                }
            },
            Some(proto::stream_predict_response::Outcome::Error(error)) => {
                Answers::all_refused(sent_rows, self.labels, &error_text(error))
            }
            None => bail!("the server sent a response with neither results nor an error"),
        })
    }
}

/// The reader thread: batches dealt to the streams in turn, each announced
/// to the ordering loop before it is sent.
fn read<S: Source>(
    mut source: S,
    (model, features, explain): (ModelId, usize, u32),
    streams: Vec<mpsc::Sender<proto::StreamPredictRequest>>,
    pending: mpsc::Sender<Pending<S::Batch>>,
) -> anyhow::Result<()> {
    let mut index = 0u64;
    while let Some(batch) = source.next_batch()? {
        let Values { values, text, unreadable } = batch.values()?;
        if values.is_empty() {
            // No row of it can be read: nothing to send, its rows carry why.
            if pending.blocking_send(Pending { id: None, batch, unreadable }).is_err() {
                break;
            }
            continue;
        }
        let id = index.to_string();
        let stream = &streams[(index % streams.len() as u64) as usize];
        index += 1;
        let mut request = stream_batch(id.clone(), &model, features, values);
        (request.columnar, request.explain) = (true, explain);
        if let Some(rows) = request.rows.as_mut() {
            rows.text = text;
        }
        // The ordering loop must know of a batch before its answer can arrive;
        // a closed channel means it stopped, and says why itself.
        let announced = Pending { id: Some(id), batch, unreadable };
        if pending.blocking_send(announced).is_err() || stream.blocking_send(request).is_err() {
            break;
        }
    }
    Ok(())
}

/// The writer thread: every answered batch, in order, then the file's end.
fn write<B, K: Sink<B>>(mut sink: K, answered: std::sync::mpsc::Receiver<(B, Answers)>) -> anyhow::Result<()> {
    for (batch, answers) in answered {
        sink.write(batch, answers)?;
    }
    sink.finish()
}

/// Scores a refused batch's rows again in halves (BatchPredict), splitting
/// every refused part until the offending rows stand alone: each row gets
/// its prediction, or the error that refused it alone.
async fn isolate(
    client: &mut Client,
    (model, features, explain): (&ModelId, usize, u32),
    values: &Values,
) -> Vec<Answer> {
    let rows = values.values.len() / features;
    let mut answers: Vec<Option<Answer>> = vec![None; rows];
    let mut parts = vec![(0, rows / 2), (rows / 2, rows)];
    while let Some((start, end)) = parts.pop() {
        if start == end {
            continue;
        }
        let part = proto::Rows {
            feature_count: features as u32,
            values: values.values[start * features..end * features].to_vec(),
            text: (values.text.iter())
                .map(|c| proto::TextColumn {
                    feature: c.feature,
                    values: c.values[start..end].to_vec(),
                    missing: c
                        .missing
                        .iter()
                        .filter(|&&r| (start..end).contains(&(r as usize)))
                        .map(|r| r - start as u32)
                        .collect(),
                })
                .collect(),
        };
        match client.batch_predict_explained(model.clone(), part, explain).await {
            Ok(answer) if answer.predictions.len() == end - start => {
                for (row, (slot, prediction)) in answers[start..end].iter_mut().zip(answer.predictions).enumerate() {
                    *slot = Some(Ok((prediction, answer.request_id.clone(), row as u64)));
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
    let first = error.field_violations.first().map(|v| (v.field.as_str(), v.description.as_str()));
    one_line(&error.message, first)
}

/// A refused call's status as one line, as `error_text` writes a stream's.
fn status_text(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    let details = status.get_details_bad_request();
    let first =
        details.as_ref().and_then(|b| b.field_violations.first()).map(|v| (v.field.as_str(), v.description.as_str()));
    one_line(status.message(), first)
}

/// `message`, with the first violation unless the message already says it.
fn one_line(message: &str, first: Option<(&str, &str)>) -> String {
    match first {
        Some((field, description)) if !message.contains(description) => {
            format!("{message} (first: {field} {description})")
        }
        _ => message.to_string(),
    }
}
