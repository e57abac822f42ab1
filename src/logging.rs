//! Logs on stderr, one line per event, in UTC: `key=value` text through
//! `simple_logger`, or one JSON object per line through our own `log::Log`.
//!
//! Call sites use `log`'s structured fields (`log::info!(pod = name; "pod removed")`).
//! In text the fields are appended to the message in logfmt form, so a logfmt parser
//! reads them; in JSON each field is its own key, numbers stay numbers.

use log::kv::{Key, Value, VisitSource, VisitValue};
use log::{LevelFilter, Log, Metadata, Record};
use std::io::Write;

/// How log lines are written (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `simple_logger`'s lines with logfmt fields.
    Text,
    /// One JSON object per line.
    Json,
}

struct Logger {
    format: Format,
    level: LevelFilter,
    text: simple_logger::SimpleLogger,
}

/// Installs the logger; a second call (tests) is ignored.
pub fn init(level: LevelFilter, format: Format) {
    let text = simple_logger::SimpleLogger::new()
        .with_level(level)
        .with_utc_timestamps();
    let logger = Logger { format, level, text };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}

/// Tells a `None` field apart from every other value.
struct IsNull(bool);

impl<'v> VisitValue<'v> for IsNull {
    fn visit_any(&mut self, _: Value) -> Result<(), log::kv::Error> {
        Ok(())
    }

    fn visit_null(&mut self) -> Result<(), log::kv::Error> {
        self.0 = true;
        Ok(())
    }
}

fn is_null(value: &Value) -> bool {
    let mut v = IsNull(false);
    let _ = value.visit(&mut v);
    v.0
}

/// Appends `key=value` pairs (a `None` field is left out), quoting values that a logfmt parser would split.
struct Logfmt(String);

impl<'kvs> VisitSource<'kvs> for Logfmt {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        if is_null(&value) {
            return Ok(());
        }
        let v = value.to_string();
        self.0.push(' ');
        self.0.push_str(key.as_str());
        self.0.push('=');
        if v.is_empty() || v.contains([' ', '"', '=', '\\']) || v.contains(char::is_control) {
            self.0.push_str(&serde_json::Value::String(v).to_string());
        } else {
            self.0.push_str(&v);
        }
        Ok(())
    }
}

/// Collects fields as JSON values, numbers and booleans kept as such.
struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl<'kvs> VisitSource<'kvs> for JsonFields {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let json = if is_null(&value) {
            serde_json::Value::Null
        } else if let Some(b) = value.to_bool() {
            serde_json::Value::Bool(b)
        } else if let Some(i) = value.to_i64() {
            serde_json::Value::from(i)
        } else if let Some(u) = value.to_u64() {
            serde_json::Value::from(u)
        } else if let Some(f) = value.to_f64().filter(|f| f.is_finite()) {
            serde_json::Value::from(f)
        } else {
            serde_json::Value::String(value.to_string())
        };
        self.0.insert(key.as_str().to_string(), json);
        Ok(())
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        // Our own records at the configured level; the libraries' (ureq, rustls) at
        // warn at most: their debug records describe requests down to the headers,
        // where the bearer token is.
        let ours = metadata.target().starts_with("pod_rebalancer");
        metadata.level() <= self.level && (ours || metadata.level() <= log::Level::Warn)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        match self.format {
            Format::Text => {
                let mut fields = Logfmt(String::new());
                let _ = record.key_values().visit(&mut fields);
                let message = format!("{}{}", record.args(), fields.0);
                self.text.log(
                    &Record::builder()
                        .args(format_args!("{message}"))
                        .level(record.level())
                        .target(record.target())
                        .module_path(record.module_path())
                        .build(),
                );
            }
            Format::Json => {
                let mut fields = JsonFields(serde_json::Map::new());
                fields.0.insert(
                    "ts".into(),
                    crate::clock::format_rfc3339_millis(crate::clock::now_unix_f64()).into(),
                );
                fields
                    .0
                    .insert("level".into(), record.level().as_str().to_ascii_lowercase().into());
                fields.0.insert("msg".into(), record.args().to_string().into());
                fields.0.insert("target".into(), record.target().into());
                let _ = record.key_values().visit(&mut fields);
                let line = serde_json::Value::Object(fields.0).to_string();
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_never_log_below_warn() {
        let logger = Logger {
            format: Format::Json,
            level: LevelFilter::Trace,
            text: simple_logger::SimpleLogger::new(),
        };
        let meta = |target, level| Metadata::builder().target(target).level(level).build();
        assert!(logger.enabled(&meta("pod_rebalancer::cycle", log::Level::Trace)));
        assert!(!logger.enabled(&meta("ureq_proto::client", log::Level::Debug)));
        assert!(!logger.enabled(&meta("rustls::client", log::Level::Info)));
        assert!(logger.enabled(&meta("rustls::client", log::Level::Warn)));
    }
}
