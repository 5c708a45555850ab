//! Log output as `logger:` asks: the level filter, `text` or `json` lines, and Dex's `excludeFields` — named
//! fields (`ip`, `user`, ...) left out of every line, for deployments that may not log personal data. What
//! is logged, and at which level, stays with the code that logs it.

use std::io::{self, IsTerminal as _, Write};
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, MakeWriter};

use crate::config::{LogFormat, Logger};

/// Installs the global subscriber for `logger`; `RUST_LOG`, when set, overrides `logger.level`.
///
/// # Errors
/// When a global subscriber is already installed.
pub fn init(logger: &Logger) -> Result<(), tracing_subscriber::util::TryInitError> {
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&logger.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let excluded: Arc<[String]> = logger.exclude_fields.clone().into();
    // Colours only on a terminal: in a file, `kubectl logs` or journald the escape codes are noise.
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(io::stdout().is_terminal());
    match logger.format {
        LogFormat::Json => builder.json().with_writer(JsonExcluding { excluded, out: io::stdout }).finish().try_init(),
        LogFormat::Text => builder.fmt_fields(TextExcluding { excluded }).finish().try_init(),
    }
}

/// Text field formatting (`name=value` separated by spaces, the message bare) without the excluded fields.
pub struct TextExcluding {
    excluded: Arc<[String]>,
}

impl TextExcluding {
    /// A formatter leaving out the fields named in `excluded`.
    pub fn new(excluded: Vec<String>) -> Self {
        Self { excluded: excluded.into() }
    }
}

impl<'w> FormatFields<'w> for TextExcluding {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = TextVisitor { writer, excluded: &self.excluded, first: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct TextVisitor<'a, 'w> {
    writer: Writer<'w>,
    excluded: &'a [String],
    first: bool,
    result: std::fmt::Result,
}

impl Visit for TextVisitor<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.result.is_err() || self.excluded.iter().any(|e| e == field.name()) {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            write!(self.writer, "{sep}{value:?}")
        } else {
            write!(self.writer, "{sep}{}={value:?}", field.name())
        };
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }
}

/// A writer for JSON lines that drops the excluded keys from each line's `fields` object, from its spans
/// and from the top level before writing it to `out`.
#[derive(Clone)]
pub struct JsonExcluding<F> {
    excluded: Arc<[String]>,
    out: F,
}

impl<F> JsonExcluding<F> {
    /// Writes through `out` (a `MakeWriter`, e.g. `std::io::stdout`), leaving out `excluded`.
    pub fn new(excluded: Vec<String>, out: F) -> Self {
        Self { excluded: excluded.into(), out }
    }
}

impl<'a, F: MakeWriter<'a>> MakeWriter<'a> for JsonExcluding<F> {
    type Writer = JsonLine<F::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        JsonLine { excluded: self.excluded.clone(), out: self.out.make_writer(), buf: Vec::new() }
    }
}

/// One event's output, filtered when it is flushed or dropped (the formatter writes a whole line per event).
pub struct JsonLine<W: Write> {
    excluded: Arc<[String]>,
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> JsonLine<W> {
    fn emit(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let line = std::mem::take(&mut self.buf);
        let filtered = match serde_json::from_slice::<serde_json::Value>(&line) {
            Ok(mut v) => {
                strip(&mut v, &self.excluded);
                let mut s = serde_json::to_vec(&v).unwrap_or(line);
                s.push(b'\n');
                s
            }
            Err(_) => line,
        };
        self.out.write_all(&filtered)
    }
}

fn strip(v: &mut serde_json::Value, excluded: &[String]) {
    let serde_json::Value::Object(top) = v else { return };
    for name in excluded {
        top.remove(name);
    }
    if let Some(serde_json::Value::Object(fields)) = top.get_mut("fields") {
        for name in excluded {
            fields.remove(name);
        }
    }
    for key in ["span", "spans"] {
        match top.get_mut(key) {
            Some(serde_json::Value::Object(span)) => excluded.iter().for_each(|n| drop(span.remove(n))),
            Some(serde_json::Value::Array(spans)) => {
                for span in spans.iter_mut().filter_map(|s| s.as_object_mut()) {
                    excluded.iter().for_each(|n| drop(span.remove(n)));
                }
            }
            _ => {}
        }
    }
}

impl<W: Write> Write for JsonLine<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.emit()?;
        self.out.flush()
    }
}

impl<W: Write> Drop for JsonLine<W> {
    fn drop(&mut self) {
        let _ = self.emit();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    fn text(c: &Captured) -> String {
        String::from_utf8(c.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn excluded_fields_are_left_out_of_text_lines() {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(out.clone())
            .fmt_fields(TextExcluding::new(vec!["ip".into(), "user".into()]))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                event = "login",
                user = "jane@example.com",
                ip = "192.0.2.1",
                client = "kubernetes",
                "signed in"
            );
        });
        let line = text(&out);
        assert!(line.contains("signed in event=\"login\" client=\"kubernetes\""), "{line}");
        assert!(!line.contains("jane") && !line.contains("192.0.2.1"), "{line}");
    }

    #[test]
    fn excluded_fields_are_left_out_of_json_lines() {
        let out = Captured::default();
        let subscriber =
            tracing_subscriber::fmt().json().with_writer(JsonExcluding::new(vec!["ip".into()], out.clone())).finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(event = "login", ip = "192.0.2.1", "signed in");
        });
        let line = text(&out);
        let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(v["fields"]["event"], "login");
        assert_eq!(v["fields"]["message"], "signed in");
        assert!(v["fields"].get("ip").is_none(), "{line}");
    }
}
