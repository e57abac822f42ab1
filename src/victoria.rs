//! The metrics queries, and what their answers may and may not look like.
//!
//! The CPU query uses literal `=` matchers only, and its values come from validated
//! DNS-1123 names, so no quoting trick can widen it. Its answer must be a complete
//! (`isPartial` not true) instant vector; `NaN`/`±Inf` are kept as invalid samples
//! for the decision to exclude, any other non-number makes the body malformed. The
//! partition query (`PARTITION_QUERY`, SPEC §12) is sent as configured to the same
//! endpoint; its answer goes through the same envelope and the same rules, its series
//! made into a `partition::Answer` as they stream in.

use crate::error::Error;
use crate::http::{self, Client, Keep};
use crate::partition::{self, Answer, Reading};
use crate::plan::Samples;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::path::PathBuf;
use std::time::Duration;

/// The metrics endpoint and how to reach it (README "Configuration").
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// Base URL without a trailing slash; any path prefix is kept.
    pub url: String,
    pub timeout: Duration,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
}

/// A client for `url` on the metrics side: the query endpoint or the push URL. The
/// push usually goes to the same VictoriaMetrics (or its vmauth): same CA bundle and
/// timeout, and the query's token, but only to the same origin, so a Pushgateway
/// elsewhere never receives that credential. The files are read on every run.
pub fn client(endpoint: &Endpoint, url: &str) -> Result<Client, Error> {
    let token = endpoint.token_file.as_deref().map(http::read_token).transpose()?;
    let roots = endpoint.ca_file.as_deref().map(http::read_ca).transpose()?;
    Ok(match token {
        Some(token) if origin(url) != origin(&endpoint.url) => {
            Client::new(url, endpoint.timeout, roots, None).redacting(token)
        }
        token => Client::new(url, endpoint.timeout, roots, token),
    })
}

/// `scheme://host:port` of a validated URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..]
        .find(['/', '?'])
        .map_or(url.len(), |i| after_scheme + i);
    &url[..end]
}

/// ```text
/// (sum by (pod) (max by (pod, id, name) (rate(S[Ws])))
///   unless on (pod) (count by (pod) (max by (pod, id, name) (rate(S[Ws]))) > 1))
/// or sum by (pod) (max by (pod, id, name) (increase(S[Ws]))) / W
/// ```
/// where `S` is `container_cpu_usage_seconds_total{namespace="NS",container="C"}`.
///
/// Each pod's mean CPU cores over the window, read alike by VictoriaMetrics and
/// Prometheus although their `rate` and `increase` differ where a series starts or
/// stops inside the window:
///
/// - `max by (pod, id, name)` keeps one series per container instance (cAdvisor's
///   cgroup `id` and runtime `name`): one container scraped by two jobs gives two
///   series that differ only in `job`, `instance` and such.
/// - A pod whose container ran as one instance (the usual case) reads its `rate`.
///   Both engines give a series that covers the window its slope: VictoriaMetrics from
///   the sample before the window to the last one, Prometheus extrapolated to the
///   window's edges. VictoriaMetrics' `increase` would not do here: it spans a scrape
///   more or less than the window when the window is no whole number of scrapes.
/// - A pod with more than one instance in the window (a restart: cAdvisor gives the
///   new container a new series and the old one stops) reads what each instance
///   burned inside the window, `increase`, summed, over the window. A sum of `rate`s
///   would count it twice on VictoriaMetrics, which divides each series by the time
///   its own samples span; the largest `rate` (the query before issue 12) keeps one
///   instance, which Prometheus, dividing by the window, reads as the part of the
///   window it ran (about 0.5 cores for 1 core restarted mid-window).
/// - On Prometheus both branches are the same number (its `rate` is `increase` over
///   the window). A pipeline that drops `id` and `name` leaves one series whose
///   counter falls at a restart: both engines count the fall as a reset.
///
/// What no engine saw is missing: a restarted pod reads up to about two scrape
/// intervals below, and one above, what it burned over the window (README, "Choices
/// where the SPEC is silent"). A pod younger than the window reads its cores on
/// VictoriaMetrics and its CPU seconds over the window on Prometheus; the decision
/// excludes it anyway.
///
/// `matchers` (`QUERY_MATCHERS`, validated by `config::query_matchers`) follow the two
/// matchers of our own, as literal `=` matchers too.
///
/// In fleet mode (`container` is `None`, SPEC §13) one query serves every target: it
/// has no `container` matcher and keeps the `container` label beside `pod` in every
/// grouping, so each pod's series of each container is the same number as above, and
/// the program keeps, for each pod, the series of its own target's container.
pub fn cpu_query(namespace: &str, container: Option<&str>, matchers: &[(String, String)], window_secs: u64) -> String {
    let mut labels = format!("namespace=\"{namespace}\"");
    if let Some(container) = container {
        labels.push_str(&format!(",container=\"{container}\""));
    }
    for (name, value) in matchers {
        labels.push_str(&format!(",{name}=\"{value}\""));
    }
    let selector = format!("container_cpu_usage_seconds_total{{{labels}}}");
    let by = if container.is_some() { "pod" } else { "pod, container" };
    format!(
        "(sum by ({by}) (max by ({by}, id, name) (rate({selector}[{window_secs}s]))) unless on ({by}) (count by ({by}) (max by ({by}, id, name) (rate({selector}[{window_secs}s]))) > 1)) or sum by ({by}) (max by ({by}, id, name) (increase({selector}[{window_secs}s]))) / {window_secs}"
    )
}

/// Which series of a CPU answer are read (SPEC §5): those of matched pods, and in
/// fleet mode only the series of the pod's own target's container. Every other series
/// is skipped unread: its value is not validated and cannot fail the run.
#[derive(Debug, Clone, Default)]
pub struct Wanted<'a> {
    /// `None`: every pod (a saved answer read without a pod list).
    pods: Option<Vec<(&'a str, Option<&'a str>)>>,
}

impl<'a> Wanted<'a> {
    /// Every series that names a pod.
    pub fn every() -> Wanted<'a> {
        Wanted { pods: None }
    }

    /// These pods; each with the container whose series is its (`None`: the answer
    /// has no container label, the query chose the container).
    pub fn pods(pods: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Wanted<'a> {
        let mut pods: Vec<(&str, Option<&str>)> = pods.into_iter().collect();
        pods.sort_unstable();
        Wanted { pods: Some(pods) }
    }

    fn accepts(&self, pod: &str, container: Option<&str>) -> bool {
        let Some(pods) = &self.pods else { return true };
        match pods.binary_search_by(|(p, _)| (*p).cmp(pod)) {
            Ok(i) => pods[i].1.is_none_or(|c| container == Some(c)),
            Err(_) => false,
        }
    }
}

/// A query answer's envelope (the Prometheus HTTP API's, which VictoriaMetrics
/// follows), whatever its vector's series are made into: `R` is what a seed made of
/// the `result` as it streamed in. One envelope and one set of rules (`vector`) for
/// every query, the CPU's and the partitions'.
struct Envelope<R> {
    status: String,
    is_partial: Option<bool>,
    data: Option<Data<R>>,
    error: Option<String>,
    error_type: Option<serde_json::Value>,
}

enum Data<R> {
    Vector(R),
    /// Any other `resultType` (`matrix`, `scalar`, `string`): its result is skipped.
    Other(String),
}

#[derive(Deserialize)]
#[serde(field_identifier)]
enum EnvelopeField {
    #[serde(rename = "status")]
    Status,
    #[serde(rename = "isPartial")]
    IsPartial,
    #[serde(rename = "data")]
    Data,
    #[serde(rename = "error")]
    Error,
    #[serde(rename = "errorType")]
    ErrorType,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(field_identifier)]
enum DataField {
    #[serde(rename = "resultType")]
    ResultType,
    #[serde(rename = "result")]
    Result,
    #[serde(other)]
    Other,
}

/// Reads an `Envelope`, the vector's `result` made by `S` as it is parsed.
struct EnvelopeSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for EnvelopeSeed<S> {
    type Value = Envelope<S::Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for EnvelopeSeed<S> {
    type Value = Envelope<S::Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object with a status")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seed = Some(self.0);
        let mut status = None;
        let mut envelope = Envelope {
            status: String::new(),
            is_partial: None,
            data: None,
            error: None,
            error_type: None,
        };
        while let Some(field) = map.next_key()? {
            match field {
                EnvelopeField::Status => status = Some(map.next_value()?),
                EnvelopeField::IsPartial => envelope.is_partial = map.next_value()?,
                EnvelopeField::Data => {
                    let seed = seed.take().ok_or_else(|| de::Error::duplicate_field("data"))?;
                    envelope.data = map.next_value_seed(DataSeed(seed))?;
                }
                EnvelopeField::Error => envelope.error = map.next_value()?,
                EnvelopeField::ErrorType => envelope.error_type = map.next_value()?,
                EnvelopeField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        envelope.status = status.ok_or_else(|| de::Error::missing_field("status"))?;
        Ok(envelope)
    }
}

/// Reads `data` (or its `null`): `resultType` and `result` in either order. Servers
/// write the type first; a `result` that comes before it is held as JSON until the
/// type is known, as serde's own adjacently tagged enums do.
struct DataSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for DataSeed<S> {
    type Value = Option<Data<S::Value>>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for DataSeed<S> {
    type Value = Option<Data<S::Value>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object with a resultType and a result")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seed = Some(self.0);
        let mut kind: Option<String> = None;
        let mut result = None;
        let mut early: Option<serde_json::Value> = None;
        while let Some(field) = map.next_key()? {
            match field {
                DataField::ResultType => kind = Some(map.next_value()?),
                DataField::Result if kind.as_deref() == Some("vector") => {
                    let seed = seed.take().ok_or_else(|| de::Error::duplicate_field("result"))?;
                    result = Some(map.next_value_seed(seed)?);
                }
                DataField::Result if kind.is_none() => early = Some(map.next_value()?),
                DataField::Result | DataField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let kind = kind.ok_or_else(|| de::Error::missing_field("resultType"))?;
        if kind != "vector" {
            return Ok(Some(Data::Other(kind)));
        }
        match (result, early, seed) {
            (Some(result), _, _) => Ok(Some(Data::Vector(result))),
            (None, Some(early), Some(seed)) => seed
                .deserialize(early)
                .map(|r| Some(Data::Vector(r)))
                .map_err(de::Error::custom),
            _ => Err(de::Error::missing_field("result")),
        }
    }
}

/// The rules every answer follows (SPEC §5): an error status, `isPartial: true`, or a
/// result that is not an instant vector refuses the whole answer; `Ok` is the vector.
fn vector<R>(envelope: Envelope<R>) -> Result<R, String> {
    if envelope.status != "success" {
        let kind = envelope.error_type.as_ref().map(http::error_type_text);
        return Err(format!(
            "status {:?}: {} ({})",
            envelope.status,
            envelope.error.unwrap_or_else(|| "no error message".into()),
            kind.unwrap_or_else(|| "no errorType".into())
        ));
    }
    if envelope.is_partial == Some(true) {
        return Err("isPartial is true: some storage nodes did not answer, the numbers would be incomplete".into());
    }
    match envelope.data {
        Some(Data::Vector(result)) => Ok(result),
        Some(Data::Other(kind)) => Err(format!("expected resultType vector, got {kind}")),
        None => Err("expected data with a vector result, got no data".into()),
    }
}

/// Parses a whole answer held in memory with `seed` making its result.
fn parse_with<'de, S: DeserializeSeed<'de>>(json: &'de str, seed: S) -> Result<Envelope<S::Value>, String> {
    let mut de = serde_json::Deserializer::from_str(json);
    EnvelopeSeed(seed)
        .deserialize(&mut de)
        .and_then(|envelope| de.end().map(|()| envelope))
        .map_err(|e| format!("expected a Prometheus query answer: {e}"))
}

#[derive(Deserialize)]
struct VectorSample {
    #[serde(default)]
    metric: Labels,
    /// `[timestamp, "value"]`; absent for native histograms, which are refused.
    value: Option<(IgnoredAny, String)>,
}

/// The `result` of a vector answer, made into samples as it is parsed, so no series is
/// held twice: at 50,000 pods the parsed series would be 4 MB beside 1.2 MB of samples.
/// The first series that is not a pod's number is remembered rather than failed on, so
/// the envelope's own verdict (`status`, `isPartial`) is still the one reported first.
/// Bounded: an answer of countless series fails instead of exhausting memory.
#[derive(Default)]
struct Series {
    by_pod: Vec<(Box<str>, f64)>,
    problem: Option<String>,
}

/// Reads a vector's `result` into `Series`, only the series `Wanted` accepts.
struct CpuSeries<'w, 'a>(&'w Wanted<'a>);

impl<'de> DeserializeSeed<'de> for CpuSeries<'_, '_> {
    type Value = Series;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Series, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for CpuSeries<'_, '_> {
    type Value = Series;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "a sequence of at most {} series", crate::http::MAX_ITEMS)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Series, A::Error> {
        let mut series = Series::default();
        crate::http::each_bounded(seq, |one: VectorSample| {
            let pod = one.metric.pod.as_deref().filter(|p| !p.is_empty());
            let wanted = pod.is_some_and(|p| self.0.accepts(p, one.metric.container.as_deref()));
            if wanted && series.problem.is_none() {
                match pod_sample(one) {
                    Ok(Some(sample)) => series.by_pod.push(sample),
                    Ok(None) => {}
                    Err(why) => series.problem = Some(why),
                }
            }
        })?;
        Ok(series)
    }
}

/// One series as a pod's sample; `None` for a series without a pod label.
fn pod_sample(series: VectorSample) -> Result<Option<(Box<str>, f64)>, String> {
    let Some(pod) = series.metric.pod.filter(|p| !p.is_empty()) else {
        // `sum by (pod)` puts series without a pod label into one `{}` group:
        // they are not any pod's, so they cannot be ours.
        return Ok(None);
    };
    let Some((_, text)) = series.value else {
        return Err(format!("pod {pod}: expected a float sample, got none (a histogram?)"));
    };
    // The three words Prometheus writes for non-finite values; any other spelling
    // Rust would parse ("inf", "Inf", "infinity", "1e999") is not what a server sends.
    let cores = match text.as_str() {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => match text.parse::<f64>() {
            Ok(v) if v.is_finite() => v,
            _ => return Err(format!("pod {pod}: expected a number, got {text:?}")),
        },
    };
    // No pod burns a million cores; such a number is a broken answer, and summed into
    // the statistics it could overflow them into a false "balanced".
    if cores.is_finite() && cores.abs() > MAX_CORES {
        return Err(format!("pod {pod}: expected at most {MAX_CORES} cores, got {text}"));
    }
    Ok(Some((pod.into_boxed_str(), cores)))
}

/// The largest CPU sample, in cores, an answer may hold: far above any machine.
pub const MAX_CORES: f64 = 1e6;

/// The labels we read. Other labels are skipped as they are parsed, not kept: a
/// series with a million labels costs no memory.
#[derive(Deserialize, Default)]
struct Labels {
    pod: Option<String>,
    /// Only in fleet mode's answer (`sum by (pod, container)`).
    container: Option<String>,
}

/// Parses the JSON answer of `/api/v1/query` into samples by pod name, of every pod.
/// `Err` holds why the body is not a complete instant vector of numbers.
pub fn parse_answer(json: &str) -> Result<Samples, String> {
    parse_answer_for(json, &Wanted::every())
}

/// Parses the JSON answer of `/api/v1/query` into samples by pod name, of the `wanted`
/// series only.
pub fn parse_answer_for(json: &str, wanted: &Wanted) -> Result<Samples, String> {
    cpu_samples(parse_with(json, CpuSeries(wanted))?)
}

fn cpu_samples(envelope: Envelope<Series>) -> Result<Samples, String> {
    let series = vector(envelope)?;
    if let Some(why) = series.problem {
        return Err(why);
    }
    Samples::new(series.by_pod).map_err(|pod| format!("pod {pod}: expected one series per pod, got several"))
}

/// POSTs the query to `{endpoint}/api/v1/query` and returns samples by pod, of the
/// `wanted` series. With `keep`, the body read is kept there.
pub fn query_cpu(client: &Client, query: &str, wanted: &Wanted, keep: Keep) -> Result<Samples, Error> {
    let form = format!("query={}", http::encode(query));
    client.post_form_seed(
        "query CPU",
        "/api/v1/query",
        &form,
        keep,
        EnvelopeSeed(CpuSeries(wanted)),
        cpu_samples,
    )
}

/// Parses the JSON answer of a partition query (`labels` name a partition) for these
/// matched pods. `Err` holds why the body is malformed (SPEC §12 "Query").
pub fn parse_partitions<'a>(
    json: &str,
    labels: &'a [String],
    matched: impl IntoIterator<Item = &'a str>,
) -> Result<Answer, String> {
    let reading = Reading::new(labels, matched);
    vector(parse_with(json, PartitionSeries(reading))?)?.finish()
}

/// POSTs `PARTITION_QUERY` (`query`, sent as configured) to the same endpoint as the
/// CPU query, with the same credentials and timeout, and returns the partitions the
/// matched pods own, `labels` (`PARTITION_LABELS`) naming a partition. With `keep`,
/// the body read is kept there (`plan --save` writes it as `partitions.json`).
pub fn query_partitions<'a>(
    client: &Client,
    query: &str,
    labels: &'a [String],
    matched: impl IntoIterator<Item = &'a str>,
    keep: Keep,
) -> Result<Answer, Error> {
    let form = format!("query={}", http::encode(query));
    let reading = Reading::new(labels, matched);
    client.post_form_seed(
        "query partitions",
        "/api/v1/query",
        &form,
        keep,
        EnvelopeSeed(PartitionSeries(reading)),
        |envelope| vector(envelope)?.finish(),
    )
}

/// The `result` of a partition answer: each series handed to the `Reading` as it is
/// parsed, so a series of another consumer group costs nothing once read. Bounded by
/// `http::MAX_ITEMS` series, like the CPU answer.
struct PartitionSeries<'a>(Reading<'a>);

impl<'de, 'a> DeserializeSeed<'de> for PartitionSeries<'a> {
    type Value = Reading<'a>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Reading<'a>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, 'a> Visitor<'de> for PartitionSeries<'a> {
    type Value = Reading<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "a sequence of at most {} series", http::MAX_ITEMS)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, seq: A) -> Result<Reading<'a>, A::Error> {
        let labels = self.0.labels();
        http::each_bounded_seed(seq, OneSeries(labels), |one: RawSeries| {
            self.0.add(partition::Series {
                pod: one.pod.as_deref(),
                labels: &one.labels,
                value: one.value.as_deref(),
            })
        })?;
        Ok(self.0)
    }
}

/// One series as read: `pod`, the partition labels' values (in `labels`' order), the
/// value's text. Other labels are skipped as they are parsed.
struct RawSeries {
    pod: Option<String>,
    labels: Vec<Option<String>>,
    value: Option<String>,
}

#[derive(Clone, Copy)]
struct OneSeries<'a>(&'a [String]);

impl<'de> DeserializeSeed<'de> for OneSeries<'_> {
    type Value = RawSeries;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<RawSeries, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for OneSeries<'_> {
    type Value = RawSeries;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a series with a metric and a value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawSeries, A::Error> {
        let mut series = RawSeries {
            pod: None,
            labels: vec![None; self.0.len()],
            value: None,
        };
        while let Some(key) = map.next_key::<SeriesField>()? {
            match key {
                SeriesField::Metric => map.next_value_seed(Metric(self.0, &mut series))?,
                SeriesField::Value => {
                    let value: Option<(IgnoredAny, String)> = map.next_value()?;
                    series.value = value.map(|(_, text)| text);
                }
                SeriesField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(series)
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum SeriesField {
    Metric,
    Value,
    #[serde(other)]
    Other,
}

/// A series' `metric`: `pod` and the partition labels are kept, the rest skipped.
struct Metric<'a, 'b>(&'a [String], &'b mut RawSeries);

impl<'de> DeserializeSeed<'de> for Metric<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Metric<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object of label names and values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(label) = map.next_key_seed(LabelName(self.0))? {
            match label {
                Label::Pod => self.1.pod = Some(map.next_value()?),
                Label::Partition(i) => self.1.labels[i] = Some(map.next_value()?),
                Label::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

enum Label {
    Pod,
    /// The i-th of the partition labels.
    Partition(usize),
    Other,
}

/// A label's name, compared with ours as it is read, never kept.
struct LabelName<'a>(&'a [String]);

impl<'de> DeserializeSeed<'de> for LabelName<'_> {
    type Value = Label;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Label, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for LabelName<'_> {
    type Value = Label;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a label name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Label, E> {
        Ok(if name == "pod" {
            Label::Pod
        } else {
            match self.0.iter().position(|l| l == name) {
                Some(i) => Label::Partition(i),
                None => Label::Other,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_is_scheme_host_and_port() {
        assert_eq!(
            origin("http://vm:8428/api/v1/import/prometheus?extra_label=a"),
            "http://vm:8428"
        );
        assert_eq!(
            origin("https://vmauth.example/select/0/prometheus"),
            "https://vmauth.example"
        );
        assert_eq!(origin("http://vm:8428?x=1"), "http://vm:8428");
        assert_ne!(origin("http://vm:8428/x"), origin("http://pushgateway:9091/x"));
        assert_ne!(origin("http://vm:8428"), origin("https://vm:8428"));
    }

    #[test]
    fn the_query_is_literal() {
        assert_eq!(
            cpu_query("posthog", Some("ingestion-consumer"), &[], 300),
            concat!(
                r#"(sum by (pod) (max by (pod, id, name) (rate(container_cpu_usage_seconds_total{namespace="posthog",container="ingestion-consumer"}[300s])))"#,
                r#" unless on (pod) (count by (pod) (max by (pod, id, name) (rate(container_cpu_usage_seconds_total{namespace="posthog",container="ingestion-consumer"}[300s]))) > 1))"#,
                r#" or sum by (pod) (max by (pod, id, name) (increase(container_cpu_usage_seconds_total{namespace="posthog",container="ingestion-consumer"}[300s]))) / 300"#
            )
        );
    }

    #[test]
    fn a_recorded_answer_becomes_samples() {
        let s = parse_answer(include_str!("../fixtures/vm/query_cpu_by_pod.json")).unwrap();
        assert_eq!(s.len(), 5);
        assert_eq!(s.get("ingestion-consumer-5f7c9d8b4d-7qwzt"), Some(1.9022079799999998));
    }

    #[test]
    fn infinities_are_invalid_samples_not_errors() {
        let s = parse_answer(include_str!("../fixtures/vm/query_nan_inf.json")).unwrap();
        assert_eq!(s.get("b"), Some(f64::INFINITY));
        assert_eq!(s.get("c"), Some(f64::NEG_INFINITY));
        assert_eq!(s.get("d"), Some(0.5));
        let nan = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"a"},"value":[1,"NaN"]}]}}"#;
        assert!(parse_answer(nan).unwrap().get("a").is_some_and(f64::is_nan));
    }

    #[test]
    fn other_answers_are_refused_with_a_reason() {
        let cases = [
            (
                include_str!("../fixtures/vm/error_422_parse.json"),
                "labelFilters: unexpected token",
            ),
            (include_str!("../fixtures/vm/query_matrix.json"), "got matrix"),
            (include_str!("../fixtures/prom/query_scalar_openapi.json"), "got scalar"),
            (
                include_str!("../fixtures/prom/error_internal_tsdb_not_ready.json"),
                "TSDB not ready (internal)",
            ),
            (
                r#"{"status":"success","isPartial":true,"data":{"resultType":"vector","result":[]}}"#,
                "isPartial",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"a"},"value":[1,"1,5"]}]}}"#,
                "expected a number, got \"1,5\"",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"a"},"value":[1,"1"]},{"metric":{"pod":"a"},"value":[1,"2"]}]}}"#,
                "several",
            ),
            ("<html>", "expected a Prometheus query answer"),
        ];
        for (body, words) in cases {
            let err = parse_answer(body).unwrap_err();
            assert!(err.contains(words), "{words}: {err}");
        }
    }

    #[test]
    fn only_the_three_words_and_numbers_up_to_a_million_cores_are_samples() {
        let answer = |value: &str| {
            format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{"pod":"a"}},"value":[1,"{value}"]}}]}}}}"#
            )
        };
        for bad in [
            "inf",
            "Inf",
            "infinity",
            "1e999",
            "-1e999",
            "nan",
            "1e200",
            "1e308",
            "1000000.5",
            "-2e6",
        ] {
            assert!(parse_answer(&answer(bad)).is_err(), "{bad}");
        }
        assert!(
            parse_answer(&answer("1e200"))
                .unwrap_err()
                .contains("expected at most 1000000 cores, got 1e200")
        );
        for (good, cores) in [("1000000", 1e6), ("0", 0.0), ("-0.5", -0.5), ("2.5e-3", 0.0025)] {
            assert_eq!(parse_answer(&answer(good)).unwrap().get("a"), Some(cores), "{good}");
        }
    }

    #[test]
    fn query_matchers_follow_ours() {
        let matchers = [("cluster".to_string(), "prod-eu-1".to_string())];
        assert!(
            cpu_query("posthog", Some("consumer"), &matchers, 120)
                .contains(r#"{namespace="posthog",container="consumer",cluster="prod-eu-1"}[120s]"#)
        );
    }

    #[test]
    fn a_native_histogram_is_not_a_cpu_number() {
        let mut answer: serde_json::Value = serde_json::from_str(include_str!(
            "../fixtures/prom/query_vector_native_histogram_openapi.json"
        ))
        .unwrap();
        assert!(
            parse_answer(&answer.to_string()).unwrap().is_empty(),
            "no pod label: no pod's"
        );
        answer["data"]["result"][0]["metric"]["pod"] = "p".into();
        assert!(
            parse_answer(&answer.to_string())
                .unwrap_err()
                .contains("pod p: expected a float sample")
        );
    }

    #[test]
    fn an_answer_of_countless_series_is_refused() {
        let series = |n: usize| {
            let result: Vec<String> = (0..n)
                .map(|i| format!(r#"{{"metric":{{"pod":"p{i}","container":"c","x":"y"}},"value":[1,"0.5"]}}"#))
                .collect();
            format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
                result.join(",")
            )
        };
        let s = parse_answer(&series(crate::http::MAX_ITEMS)).unwrap();
        assert_eq!((s.len(), s.get("p7")), (crate::http::MAX_ITEMS, Some(0.5)));
        let e = parse_answer(&series(crate::http::MAX_ITEMS + 1)).unwrap_err();
        let expected = format!("expected at most {} elements", crate::http::MAX_ITEMS);
        assert!(e.contains(&expected), "{e}");
    }

    #[test]
    fn empty_and_complete_answers_are_fine_here() {
        assert!(
            parse_answer(include_str!("../fixtures/vm/query_empty.json"))
                .unwrap()
                .is_empty()
        );
        let s = parse_answer(include_str!("../fixtures/vm/cluster_query_vector_isPartial_false.json")).unwrap();
        assert!(s.is_empty(), "series without a pod label are no pod's");
    }
}
