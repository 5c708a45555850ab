//! The YAML text of a configuration file: the line each key is written on, and deserialization that reports
//! every type error and unknown key of a document rather than stopping at the first. Validation of values is
//! the caller's; this module only turns YAML into typed values and remembers where things were.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use serde_yaml::Value;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use super::Problem;

/// How many errors one document may report before deserialization gives up (each retry re-reads it).
const MAX_ERRORS: usize = 200;

/// Line numbers (1-based) of the keys of a YAML document, by key path (`staticClients[1].redirectURIs[0]`).
#[derive(Debug, Default)]
pub(crate) struct Lines(HashMap<String, usize>);

impl Lines {
    /// Indexes `text`; a document that does not scan yields what was indexed up to the error.
    pub(crate) fn index(text: &str) -> Self {
        let mut walker = Walker::default();
        // A scan error is reported by serde_yaml with its own position; the index keeps what it saw.
        let _ = Parser::new_from_str(text).load(&mut walker, false);
        Lines(walker.lines)
    }

    /// The line of `key`, or of its nearest ancestor that has one (`web.headers.X-A` → `web.headers`).
    pub(crate) fn line(&self, key: &str) -> Option<usize> {
        let mut key = key;
        loop {
            if let Some(line) = self.0.get(key) {
                return Some(*line);
            }
            let cut = key.rfind(['.', '['])?;
            key = &key[..cut];
        }
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
}

impl Walker {
    /// The path of the value that comes next in the innermost container.
    fn next_path(&self) -> Option<String> {
        match self.stack.last()? {
            Frame::Map { path, key: Some(k) } => Some(join(path, k)),
            Frame::Map { key: None, .. } => None,
            Frame::Seq { path, index } => Some(format!("{path}[{index}]")),
        }
    }

    /// A value was read in the innermost container: a map waits for its next key, a list moves on.
    fn advance(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::Seq { index, .. }) => *index += 1,
            None => {}
        }
    }

    /// Whether the next scalar is a mapping key.
    fn expects_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::Scalar(text, ..) if self.expects_key() => {
                if let Some(Frame::Map { path, key }) = self.stack.last_mut() {
                    self.lines.entry(join(path, &text)).or_insert(line);
                    *key = Some(text);
                }
            }
            Event::Scalar(..) | Event::Alias(_) => {
                if let Some(path) = self.next_path() {
                    self.lines.entry(path).or_insert(line);
                }
                self.advance();
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let path = self.next_path().unwrap_or_default();
                if !path.is_empty() {
                    self.lines.entry(path.clone()).or_insert(line);
                }
                self.stack.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map { path, key: None }
                } else {
                    Frame::Seq { path, index: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.advance();
            }
            _ => {}
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Deserializes `value` into `T`, pushing one problem (under `key`) per type error or unknown key. After each
/// error the offending key is taken out and the rest is read again, so one run reports every mistake. The
/// value comes back when it could be read once its bad keys were dropped (the caller still fails on the
/// problems); `None` when something required is missing or the whole value has the wrong shape.
pub(crate) fn typed<T: DeserializeOwned>(key: &str, mut value: Value, problems: &mut Vec<Problem>) -> Option<T> {
    for _ in 0..MAX_ERRORS {
        let error = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(t) => return Some(t),
            Err(e) => e,
        };
        let segments: Vec<Segment> = error.path().iter().cloned().collect();
        let message = error.into_inner().to_string();
        problems.push(Problem::new(path_of(key, &segments), describe(&message)));
        if message.starts_with("missing field") || !remove(&mut value, &segments) {
            return None;
        }
    }
    None
}

/// `key` followed by serde's path, in the notation of [`Problem::key`].
fn path_of(key: &str, segments: &[Segment]) -> String {
    let mut out = key.to_owned();
    for s in segments {
        match s {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

/// Takes the mapping entry that holds the error out of `value` (for an error inside a list, the whole list's
/// entry, so later indexes keep their meaning). `false` when there is no such entry (the error is the root's).
fn remove(value: &mut Value, segments: &[Segment]) -> bool {
    let Some(last_key) = segments.iter().rposition(|s| matches!(s, Segment::Map { .. })) else { return false };
    let mut at = value;
    for s in &segments[..last_key] {
        at = match (s, at) {
            (Segment::Map { key }, Value::Mapping(m)) => match m.get_mut(key.as_str()) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Seq { index }, Value::Sequence(items)) => match items.get_mut(*index) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Enum { .. } | Segment::Unknown, v) => v,
            _ => return false,
        };
        if let Value::Tagged(t) = at {
            at = &mut t.value;
        }
    }
    match (&segments[last_key], at) {
        (Segment::Map { key }, Value::Mapping(m)) => m.remove(key.as_str()).is_some(),
        _ => false,
    }
}

/// Turns serde's messages into "what was expected" phrases.
pub(crate) fn describe(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return match rest.split_once(", expected ") {
            Some((key, known)) => format!("{known} ({key} is not a key here)"),
            None => format!("no key named {}", rest.split(',').next().unwrap_or(rest)),
        };
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        return format!("the required key {rest}");
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some((got, expected)) = message.strip_prefix(prefix).and_then(|r| r.split_once(", expected ")) {
            return format!("{expected}, got {got}");
        }
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_found_for_keys_list_items_and_their_ancestors() {
        let text = "issuer: x\nweb:\n  http: a\n  headers:\n    X-A: b\nstaticClients:\n- id: one\n  redirectURIs:\n  - u1\n  - u2\n- id: two\n";
        let lines = Lines::index(text);
        assert_eq!(lines.line("issuer"), Some(1));
        assert_eq!(lines.line("web.http"), Some(3));
        assert_eq!(lines.line("web.headers.X-A"), Some(5));
        assert_eq!(lines.line("staticClients[0].id"), Some(7));
        assert_eq!(lines.line("staticClients[0].redirectURIs[1]"), Some(10));
        assert_eq!(lines.line("staticClients[1].id"), Some(11));
        assert_eq!(lines.line("staticClients[1].secret"), Some(11), "falls back to the item");
        assert_eq!(lines.line("nothing"), None);
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        #[serde(default)]
        a: Option<u32>,
        #[serde(default)]
        b: Option<bool>,
        #[serde(default)]
        list: Vec<String>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        #[serde(default)]
        inner: Option<Inner>,
        #[serde(default)]
        items: Vec<Inner>,
        #[serde(default)]
        n: Option<u16>,
    }

    #[test]
    fn every_type_error_and_unknown_key_is_reported_in_one_pass() {
        let value: Value = serde_yaml::from_str(
            "inner: {a: x, b: 3, c: 1}\nitems:\n- {a: 1}\n- {list: [1, {}], zz: 2}\nn: 70000\nother: 1\n",
        )
        .unwrap();
        let mut problems = Vec::new();
        let parsed: Option<Outer> = typed("", value, &mut problems);
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert!(parsed.is_some(), "read again without the bad keys");
        for k in ["inner.a", "inner.b", "inner.c", "items[1].list[0]", "items[1].zz", "n", "other"] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
        assert_eq!(problems.len(), 7, "{problems:?}");
    }
}
