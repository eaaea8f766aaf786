//! Dataset files → records. Each record is a JSON object (CSV rows and text lines become objects
//! too, so schema detection sees one shape) plus the place it came from. Problems that affect a
//! single record (a malformed JSON line, a CSV row with the wrong number of fields) come back as
//! [`Issue`]s in place of that record, so the caller decides whether to skip or stop; problems
//! that make the whole file unreadable (invalid UTF-8, a broken JSON array) are errors.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{json, Map, Value};

use super::validate::Issue;
use crate::error::{Code, Error, Result};

/// How a file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON value per line (`.jsonl`, `.ndjson`).
    Jsonl,
    /// One JSON array of objects (`.json`).
    Json,
    /// Comma-separated values with a header row.
    Csv,
    /// Tab-separated values with a header row.
    Tsv,
    /// Plain text (`.txt`): one example per line, or one document cut into chunks.
    Text,
}

impl Format {
    /// The format a file name's extension names, if any.
    pub fn from_name(name: &str) -> Option<Format> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        Some(match ext.as_str() {
            "jsonl" | "ndjson" => Format::Jsonl,
            "json" => Format::Json,
            "csv" => Format::Csv,
            "tsv" | "tab" => Format::Tsv,
            "txt" | "text" | "md" => Format::Text,
            _ => return None,
        })
    }

    /// The extension first, then the content: a `.json` file that holds one object per line is
    /// read as JSONL (a common mislabelling), and an unknown extension is sniffed.
    pub fn detect(name: &str, text: &str) -> Format {
        let first = text.trim_start().chars().next();
        match (Format::from_name(name), first) {
            (Some(Format::Json), Some('{')) => Format::Jsonl,
            (Some(format), _) => format,
            (None, Some('[')) => Format::Json,
            (None, Some('{')) => Format::Jsonl,
            (None, _) => Format::Text,
        }
    }
}

/// How a plain-text file becomes examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum TextMode {
    /// Decided from the text ([`TextMode::resolve`]): continuous text (a play, prose, verse)
    /// is a document in chunks of `chunk_chars`, a file of self-contained lines is read line by
    /// line. `chunk_chars` 0: the caller's default (the dataset reader picks ~3 characters per
    /// token of the sequence length, about one row).
    Auto {
        #[serde(default)]
        chunk_chars: usize,
    },
    /// Each non-blank line is one example.
    Lines,
    /// The file is one document, cut at line breaks into chunks of at most `chunk_chars`
    /// characters (a single longer line is cut at a character boundary) for causal LM; 0: the
    /// caller's default, as for `Auto`.
    Document {
        #[serde(default)]
        chunk_chars: usize,
    },
}

impl Default for TextMode {
    fn default() -> Self {
        TextMode::Auto { chunk_chars: 0 }
    }
}

/// The text mode a file was read with, whether it was detected, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TextChoice {
    /// `Lines` or `Document` (never `Auto`).
    pub mode: TextMode,
    pub detected: bool,
    pub reason: String,
}

/// Fewer non-blank lines than this are read one per line when the mode is detected: too few
/// to judge, and too few to cut into a training and a validation part.
const MIN_DETECT_LINES: usize = 20;

/// Detection reads at most this many non-blank lines.
const DETECT_LINES: usize = 5000;

/// Continuous text: at least this share of lines ends mid-sentence...
const OPEN_LINES: f64 = 0.4;
/// ...or at least this share starts in lower case (a sentence running on from the line before).
const LOWER_STARTS: f64 = 0.25;

impl TextMode {
    /// The mode to read `text` with. `Auto` looks at its lines: in continuous text many lines
    /// end mid-sentence (a comma, a semicolon, a word) or start in lower case; in a file of one
    /// example per line (sentences, questions, tweets) lines end a sentence.
    pub fn resolve(self, text: &str) -> TextChoice {
        let chunk_chars = match self {
            TextMode::Auto { chunk_chars } => chunk_chars.max(1),
            mode => {
                return TextChoice {
                    mode,
                    detected: false,
                    reason: match mode {
                        TextMode::Document { .. } => "continuous text, as asked".into(),
                        _ => "one example per line, as asked".into(),
                    },
                }
            }
        };
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .take(DETECT_LINES)
            .collect();
        let lines_mode = |reason: String| TextChoice {
            mode: TextMode::Lines,
            detected: true,
            reason,
        };
        if lines.len() < MIN_DETECT_LINES {
            return lines_mode(format!(
                "only {} non-blank line(s): one example per line",
                lines.len()
            ));
        }
        let ends_sentence =
            |l: &&&str| l.chars().last().is_some_and(|c| ".!?…\"'”’»)]".contains(c));
        let open = lines[..lines.len() - 1]
            .iter()
            .filter(|l| !ends_sentence(l))
            .count() as f64
            / (lines.len() - 1) as f64;
        let lower = lines
            .iter()
            .filter(|l| l.chars().next().is_some_and(char::is_lowercase))
            .count() as f64
            / lines.len() as f64;
        let (open_pct, lower_pct) = ((open * 100.0).round(), (lower * 100.0).round());
        if open >= OPEN_LINES || lower >= LOWER_STARTS {
            TextChoice {
                mode: TextMode::Document { chunk_chars },
                detected: true,
                reason: format!(
                    "continuous text ({open_pct}% of lines end mid-sentence, {lower_pct}% start \
                     in lower case): read as one document in chunks of up to {chunk_chars} \
                     characters; choose \"one example per line\" if each line stands alone"
                ),
            }
        } else {
            lines_mode(format!(
                "lines that stand alone ({open_pct}% end mid-sentence, {lower_pct}% start in \
                 lower case): one example per line; choose \"continuous text\" for a play, \
                 prose or verse"
            ))
        }
    }
}

/// Where a record came from: the file, the 1-based line it starts on, and for CSV/TSV the
/// 1-based data row (the header is not a row; a quoted field can span lines, so rows and lines
/// differ).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    #[serde(serialize_with = "serialize_arc_str")]
    pub file: Arc<str>,
    pub line: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<usize>,
}

fn serialize_arc_str<S: Serializer>(s: &Arc<str>, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s)
}

impl Location {
    pub fn line(file: &Arc<str>, line: usize) -> Self {
        Self {
            file: file.clone(),
            line,
            row: None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.row {
            Some(row) => write!(f, "{} row {} (line {})", self.file, row, self.line),
            None => write!(f, "{} line {}", self.file, self.line),
        }
    }
}

/// One record as read: its fields and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub loc: Location,
    pub fields: Map<String, Value>,
}

/// What a reader hands on, record by record: the record (or why it could not be read) and the
/// offset in the decoded text just past it, for progress. It returns whether to go on.
pub type Sink<'s> = dyn FnMut(std::result::Result<Record, Issue>, usize) -> Result<bool> + 's;

/// What [`read_each`] learnt about the file besides its records.
#[derive(Debug, Clone)]
pub struct ReadSummary {
    pub format: Format,
    /// Blank lines (JSONL, text lines mode): not examples, counted so nothing vanishes unseen.
    pub blank_lines: usize,
    /// CSV/TSV header, as read (trimmed).
    pub header: Option<Vec<String>>,
    /// Length of the decoded text (what the sink's offsets count in).
    pub text_len: usize,
    /// How plain text was read (text files only).
    pub text_mode: Option<TextChoice>,
}

/// A whole file read into records.
#[derive(Debug)]
pub struct Parsed {
    pub format: Format,
    /// In file order; a record that could not be read is an [`Issue`] in its place.
    pub records: Vec<std::result::Result<Record, Issue>>,
    /// Blank lines (JSONL, text lines mode): not examples, counted so nothing vanishes unseen.
    pub blank_lines: usize,
    /// CSV/TSV header, as read (trimmed).
    pub header: Option<Vec<String>>,
}

fn data_error(file: &str, reason: &str, message: String, mut details: Value) -> Error {
    details["file"] = json!(file);
    details["reason"] = json!(reason);
    Error::new(Code::DataInvalid, message).with_details(details)
}

/// Checks the bytes are UTF-8 and strips a byte-order mark. The error names the byte offset (in
/// the file as given, BOM included) and the line of the first invalid byte.
pub fn decode_utf8<'a>(file: &str, bytes: &'a [u8]) -> Result<&'a str> {
    let (bom, body) = match bytes.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => (3, rest),
        None => (0, bytes),
    };
    std::str::from_utf8(body).map_err(|e| utf8_error(file, bytes, bom + e.valid_up_to(), 0, 1))
}

/// The invalid-UTF-8 error for the byte at `offset` in `chunk`, a piece of the file that starts
/// at byte `base` on line `first_line`.
fn utf8_error(file: &str, chunk: &[u8], offset: usize, base: usize, first_line: usize) -> Error {
    let line = first_line + chunk[..offset].iter().filter(|&&b| b == b'\n').count();
    let column = offset
        - chunk[..offset]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    let offset_in_file = base + offset;
    data_error(
        file,
        "invalid_utf8",
        format!(
            "{file} is not valid UTF-8: byte 0x{:02X} at byte offset {offset_in_file} (line \
             {line}, column {column}) cannot be decoded. Save the file as UTF-8, or choose its \
             encoding (windows-1252 for most spreadsheets saved on Windows, utf-16le).",
            chunk[offset]
        ),
        json!({ "byte_offset": offset_in_file, "line": line, "column": column }),
    )
}

/// A text encoding for files that are not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Encoding {
    /// UTF-8 (a BOM is skipped); a UTF-16 file with a BOM is recognised by it.
    #[default]
    #[serde(rename = "utf-8")]
    Utf8,
    /// Windows-1252, what the Web calls "latin1"/"iso-8859-1" too (WHATWG Encoding), the
    /// usual encoding of spreadsheets exported on Western-European Windows machines.
    #[serde(rename = "windows-1252", alias = "latin1", alias = "iso-8859-1")]
    Windows1252,
    #[serde(rename = "utf-16le")]
    Utf16Le,
    #[serde(rename = "utf-16be")]
    Utf16Be,
}

/// Windows-1252's 0x80–0x9F; the five unassigned bytes map to the C1 controls, as WHATWG's
/// decoder (and so the browser's TextDecoder) does.
const CP1252_HIGH: [u16; 32] = [
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
    0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
];

fn decode_utf16(file: &str, body: &[u8], little_endian: bool, skipped: usize) -> Result<String> {
    if body.len() % 2 != 0 {
        return Err(data_error(
            file,
            "invalid_utf16",
            format!(
                "{file} is not valid UTF-16: it has an odd number of bytes ({}), so its last \
                 character is cut off",
                body.len() + skipped
            ),
            json!({ "byte_offset": body.len() + skipped - 1 }),
        ));
    }
    let units = body.chunks_exact(2).map(|p| {
        if little_endian {
            u16::from_le_bytes([p[0], p[1]])
        } else {
            u16::from_be_bytes([p[0], p[1]])
        }
    });
    let mut out = String::with_capacity(body.len() / 2);
    for (i, c) in char::decode_utf16(units).enumerate() {
        match c {
            Ok(c) => out.push(c),
            Err(e) => {
                let offset = skipped + 2 * i;
                let line = 1 + out.matches('\n').count();
                return Err(data_error(
                    file,
                    "invalid_utf16",
                    format!(
                        "{file} is not valid UTF-16: an unpaired surrogate 0x{:04X} at byte \
                         offset {offset} (line {line})",
                        e.unpaired_surrogate()
                    ),
                    json!({ "byte_offset": offset, "line": line }),
                ));
            }
        }
    }
    Ok(out)
}

/// The encoding [`decode`] reads `bytes` in when asked for `encoding` (a UTF-16 BOM wins).
pub fn effective_encoding(bytes: &[u8], encoding: Encoding) -> Encoding {
    match (encoding, bytes) {
        (Encoding::Utf8 | Encoding::Utf16Le, [0xFF, 0xFE, ..]) => Encoding::Utf16Le,
        (Encoding::Utf8 | Encoding::Utf16Be, [0xFE, 0xFF, ..]) => Encoding::Utf16Be,
        (e, _) => e,
    }
}

/// The file's text in `encoding`. UTF-8 is borrowed; a UTF-16 byte-order mark wins over a
/// UTF-8 choice (such a file cannot be UTF-8), so files saved as "Unicode" by Windows tools load.
pub fn decode<'a>(file: &str, bytes: &'a [u8], encoding: Encoding) -> Result<Cow<'a, str>> {
    match (encoding, bytes) {
        (Encoding::Utf8 | Encoding::Utf16Le, [0xFF, 0xFE, rest @ ..]) => {
            decode_utf16(file, rest, true, 2).map(Cow::Owned)
        }
        (Encoding::Utf8 | Encoding::Utf16Be, [0xFE, 0xFF, rest @ ..]) => {
            decode_utf16(file, rest, false, 2).map(Cow::Owned)
        }
        (Encoding::Utf8, _) => decode_utf8(file, bytes).map(Cow::Borrowed),
        (Encoding::Utf16Le, _) => decode_utf16(file, bytes, true, 0).map(Cow::Owned),
        (Encoding::Utf16Be, _) => decode_utf16(file, bytes, false, 0).map(Cow::Owned),
        (Encoding::Windows1252, _) => Ok(Cow::Owned(
            bytes
                .iter()
                .map(|&b| match b {
                    0x80..=0x9F => char::from_u32(CP1252_HIGH[(b - 0x80) as usize] as u32)
                        .unwrap_or('\u{FFFD}'),
                    _ => b as char,
                })
                .collect(),
        )),
    }
}

/// Reads a dataset file. `format` overrides detection from the name and content.
pub fn read(
    name: &str,
    bytes: &[u8],
    format: Option<Format>,
    text_mode: TextMode,
) -> Result<Parsed> {
    read_encoded(name, bytes, format, text_mode, Encoding::Utf8)
}

/// [`read`] for a file in `encoding`.
pub fn read_encoded(
    name: &str,
    bytes: &[u8],
    format: Option<Format>,
    text_mode: TextMode,
    encoding: Encoding,
) -> Result<Parsed> {
    let mut records = Vec::new();
    let summary = read_each(name, bytes, format, text_mode, encoding, &mut |r, _| {
        records.push(r);
        Ok(true)
    })?;
    Ok(Parsed {
        format: summary.format,
        records,
        blank_lines: summary.blank_lines,
        header: summary.header,
    })
}

/// Reads a dataset file record by record into `sink`, which may stop early. No record outlives
/// the sink's handling of it, so a large file is never held as records (several times its
/// size): only its text, once. A JSON array is the exception: its elements are parsed one at a
/// time too, but the array must be complete and well-formed before anything counts.
pub fn read_each(
    name: &str,
    bytes: &[u8],
    format: Option<Format>,
    text_mode: TextMode,
    encoding: Encoding,
    sink: &mut Sink<'_>,
) -> Result<ReadSummary> {
    let text = decode(name, bytes, encoding)?;
    let text = text.as_ref();
    let format = format.unwrap_or_else(|| Format::detect(name, text));
    let file: Arc<str> = Arc::from(name);
    let choice = (format == Format::Text).then(|| text_mode.resolve(text));
    let (blank_lines, header) = match (format, &choice) {
        (Format::Jsonl, _) => (read_jsonl(&file, text, 1, 0, sink)?.0, None),
        (Format::Json, _) => (read_json_array(&file, text, sink)?, None),
        (Format::Csv, _) => (0, Some(read_delimited(&file, text, b',', sink)?)),
        (Format::Tsv, _) => (0, Some(read_delimited(&file, text, b'\t', sink)?)),
        (Format::Text, Some(c)) => (read_text(&file, text, c.mode, sink)?, None),
        (Format::Text, None) => (read_text(&file, text, TextMode::Lines, sink)?, None),
    };
    Ok(ReadSummary {
        format,
        blank_lines,
        header,
        text_len: text.len(),
        text_mode: choice,
    })
}

/// How much of a file is read at a time when it is streamed from disk.
#[cfg(not(target_arch = "wasm32"))]
const CHUNK: usize = 8 << 20;

/// [`read_each`] for a file on disk. JSON Lines and one-example-per-line text in UTF-8 are
/// streamed in pieces of about 8 MiB cut at line breaks, so memory stays bounded whatever the
/// file's size (a single line longer than a piece is read whole); other formats and encodings
/// are read whole, once. Offsets given to the sink are file offsets.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_each_path(
    name: &str,
    path: &std::path::Path,
    format: Option<Format>,
    text_mode: TextMode,
    encoding: Encoding,
    sink: &mut Sink<'_>,
) -> Result<ReadSummary> {
    use std::io::Read;
    let io_error = |e: std::io::Error| {
        data_error(
            name,
            "unreadable",
            format!("cannot read {}: {e}", path.display()),
            json!({ "path": path.display().to_string() }),
        )
    };
    let mut file = std::fs::File::open(path).map_err(io_error)?;
    let len = file.metadata().map_err(io_error)?.len() as usize;
    let mut buf = Vec::new();
    (&mut file)
        .take(CHUNK as u64)
        .read_to_end(&mut buf)
        .map_err(io_error)?;
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    let utf8 = effective_encoding(&buf, encoding) == Encoding::Utf8;
    let format = format.unwrap_or_else(|| {
        let start = buf.strip_prefix(BOM).unwrap_or(&buf);
        Format::detect(
            name,
            &String::from_utf8_lossy(&start[..start.len().min(4096)]),
        )
    });
    // A detected text mode is decided on the first piece (up to 8 MiB: thousands of lines).
    let choice = (format == Format::Text && utf8).then(|| {
        let start = buf.strip_prefix(BOM).unwrap_or(&buf);
        text_mode.resolve(&String::from_utf8_lossy(start))
    });
    let line_based = match &choice {
        Some(c) => c.mode == TextMode::Lines,
        None => format == Format::Jsonl,
    };
    if !utf8 || !line_based || buf.len() >= len {
        file.read_to_end(&mut buf).map_err(io_error)?;
        let mode = choice.as_ref().map_or(text_mode, |c| c.mode);
        let mut summary = read_each(name, &buf, Some(format), mode, encoding, sink)?;
        // The choice made on the first piece, with its reason (the whole read was told it).
        if let (Some(c), Some(s)) = (choice, summary.text_mode.as_mut()) {
            *s = c;
        }
        return Ok(summary);
    }
    let file_name: Arc<str> = Arc::from(name);
    let (mut base, mut line, mut blank_lines, mut eof) = (0usize, 1usize, 0usize, false);
    loop {
        // A piece ends at the last line break read (or at the end of the file).
        let cut = match buf.iter().rposition(|&b| b == b'\n') {
            Some(p) if !eof => p + 1,
            _ if eof => buf.len(),
            _ => {
                let more = (&mut file)
                    .take(CHUNK as u64)
                    .read_to_end(&mut buf)
                    .map_err(io_error)?;
                eof = more == 0;
                continue;
            }
        };
        let skip = if base == 0 && buf.starts_with(BOM) {
            3
        } else {
            0
        };
        let piece = &buf[..cut];
        let text = std::str::from_utf8(&piece[skip..])
            .map_err(|e| utf8_error(name, piece, skip + e.valid_up_to(), base, line))?;
        let (blank, more) = match format {
            Format::Jsonl => read_jsonl(&file_name, text, line, base + skip, sink)?,
            _ => read_text_lines(&file_name, text, line, base + skip, sink)?,
        };
        blank_lines += blank;
        if !more || (eof && cut == buf.len()) {
            break;
        }
        line += text.bytes().filter(|&b| b == b'\n').count();
        base += cut;
        buf.drain(..cut);
        let more = (&mut file)
            .take(CHUNK as u64)
            .read_to_end(&mut buf)
            .map_err(io_error)?;
        eof = more == 0;
    }
    Ok(ReadSummary {
        format,
        blank_lines,
        header: None,
        text_len: len,
        text_mode: choice,
    })
}

/// serde_json's message without its trailing " at line L column C" (we give our own position).
fn json_message(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// A JSON value as a record: objects as they are, a bare string as `{"text": …}`.
fn value_to_record(loc: Location, value: Value) -> std::result::Result<Record, Issue> {
    match value {
        Value::Object(fields) => Ok(Record { loc, fields }),
        Value::String(s) => {
            let mut fields = Map::new();
            fields.insert("text".into(), Value::String(s));
            Ok(Record { loc, fields })
        }
        other => {
            let kind = match other {
                Value::Array(_) => "an array",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            };
            Err(Issue::new(
                "not_an_object",
                loc,
                None,
                format!("expected a JSON object, found {kind}"),
            ))
        }
    }
}

/// Walks the non-blank lines of `text`, a piece of the file that starts at byte `base` on line
/// `first_line`, handing each (line number, line without its `\r`) to `record` and the result to
/// `sink`. Returns the blank lines and whether the sink wants more.
fn read_lines(
    text: &str,
    first_line: usize,
    base: usize,
    sink: &mut Sink<'_>,
    mut record: impl FnMut(usize, &str) -> std::result::Result<Record, Issue>,
) -> Result<(usize, bool)> {
    let mut blank_lines = 0;
    let mut lines = text.split('\n').peekable();
    let mut n = first_line - 1;
    let mut end = 0;
    while let Some(raw) = lines.next() {
        n += 1;
        end = (end + raw.len() + 1).min(text.len());
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            // The empty string after a final newline is not a line.
            if lines.peek().is_some() || !line.is_empty() {
                blank_lines += 1;
            }
            continue;
        }
        if !sink(record(n, line), base + end)? {
            return Ok((blank_lines, false));
        }
    }
    Ok((blank_lines, true))
}

/// JSON lines from a piece of the file (see [`read_lines`]).
fn read_jsonl(
    file: &Arc<str>,
    text: &str,
    first_line: usize,
    base: usize,
    sink: &mut Sink<'_>,
) -> Result<(usize, bool)> {
    read_lines(text, first_line, base, sink, |n, line| {
        let loc = Location::line(file, n);
        match serde_json::from_str::<Value>(line) {
            Ok(value) => value_to_record(loc, value),
            Err(e) => {
                let column = e.column();
                Err(Issue::new(
                    "malformed_json",
                    loc,
                    None,
                    format!("malformed JSON at column {column}: {}", json_message(&e)),
                ))
            }
        }
    })
}

/// A JSON array, element by element, so each element keeps the line it starts on.
/// Returns the blank lines (none: a JSON array has no lines of its own).
fn read_json_array(file: &Arc<str>, text: &str, sink: &mut Sink<'_>) -> Result<usize> {
    let bytes = text.as_bytes();
    // Line of a byte offset, counted incrementally: elements come in file order, so the whole
    // file is scanned once (counting from the start each time was quadratic in the element
    // count, minutes on a few MB of small elements).
    let counted = std::cell::Cell::new((0usize, 1usize));
    let line_at = |pos: usize| {
        let pos = pos.min(bytes.len());
        let (mut at, mut line) = counted.get();
        if pos < at {
            (at, line) = (0, 1);
        }
        line += bytes[at..pos].iter().filter(|&&b| b == b'\n').count();
        counted.set((pos, line));
        line
    };
    let skip_ws = |mut pos: usize| {
        while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        pos
    };
    let broken = |pos: usize, what: String| {
        let line = line_at(pos.min(bytes.len()));
        data_error(
            file,
            "malformed_json",
            format!("{file} line {line}: malformed JSON: {what}"),
            json!({ "line": line, "byte_offset": pos }),
        )
    };
    let mut pos = skip_ws(0);
    if bytes.get(pos) != Some(&b'[') {
        return Err(broken(
            pos,
            "expected a JSON array of objects (`[ {…}, {…} ]`)".into(),
        ));
    }
    pos = skip_ws(pos + 1);
    if bytes.get(pos) == Some(&b']') {
        pos += 1;
    } else {
        loop {
            let start = pos;
            let mut stream =
                serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
            let value = match stream.next() {
                Some(Ok(v)) => v,
                Some(Err(e)) => {
                    // serde_json's line is relative to `start`.
                    let line = line_at(start) + e.line().saturating_sub(1);
                    return Err(data_error(
                        file,
                        "malformed_json",
                        format!("{file} line {line}: malformed JSON: {}", json_message(&e)),
                        json!({ "line": line }),
                    ));
                }
                None => return Err(broken(start, "the array is not closed with `]`".into())),
            };
            pos = skip_ws(start + stream.byte_offset());
            let record = value_to_record(Location::line(file, line_at(start)), value);
            if !sink(record, pos)? {
                return Ok(0);
            }
            match bytes.get(pos) {
                Some(b',') => pos = skip_ws(pos + 1),
                Some(b']') => {
                    pos += 1;
                    break;
                }
                _ => {
                    return Err(broken(
                        pos,
                        "expected `,` or `]` after an array element".into(),
                    ))
                }
            }
        }
    }
    if skip_ws(pos) != bytes.len() {
        return Err(broken(pos, "unexpected text after the closing `]`".into()));
    }
    Ok(0)
}

/// Returns the header.
fn read_delimited(
    file: &Arc<str>,
    text: &str,
    delimiter: u8,
    sink: &mut Sink<'_>,
) -> Result<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(true)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| {
            data_error(
                file,
                "malformed_csv",
                format!("{file} line 1: the header row cannot be read: {e}"),
                json!({ "line": 1 }),
            )
        })?
        .iter()
        .enumerate()
        .map(|(i, h)| match h.trim() {
            "" => format!("column{}", i + 1),
            h => h.to_string(),
        })
        .collect();
    if header.is_empty() || text.trim().is_empty() {
        return Err(data_error(
            file,
            "empty_file",
            format!("{file} is empty: expected a header row and at least one data row"),
            json!({}),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for h in &header {
        if !seen.insert(h) {
            return Err(data_error(
                file,
                "duplicate_column",
                format!("{file} line 1: the header names column \"{h}\" twice"),
                json!({ "line": 1, "field": h }),
            ));
        }
    }
    // csv's own line numbers drift with CRLF endings (the '\n' of a "\r\n" is read as the start
    // of the next record), so lines are counted from the byte offset where a record starts.
    let raw = text.as_bytes();
    let (mut counted_to, mut line_at_counted) = (0usize, 1usize);
    let mut line_of = |byte: usize| {
        let mut b = byte.min(raw.len());
        while b < raw.len() && (raw[b] == b'\r' || raw[b] == b'\n') {
            b += 1;
        }
        if b >= counted_to {
            line_at_counted += raw[counted_to..b].iter().filter(|&&c| c == b'\n').count();
            counted_to = b;
        }
        line_at_counted
    };
    for (i, row) in reader.records().enumerate() {
        let row_no = i + 1;
        // Where the row starts: progress runs one row behind, which does not matter.
        let at = match &row {
            Ok(r) => r.position().map(|p| p.byte()),
            Err(e) => e.position().map(|p| p.byte()),
        }
        .unwrap_or(0) as usize;
        let record = match row {
            Ok(row) => {
                let line = row.position().map_or(0, |p| line_of(p.byte() as usize));
                let loc = Location {
                    file: file.clone(),
                    line,
                    row: Some(row_no),
                };
                if row.len() != header.len() {
                    Err(Issue::new(
                        "wrong_field_count",
                        loc,
                        None,
                        format!(
                            "this row has {} fields but the header has {} ({})",
                            row.len(),
                            header.len(),
                            header.join(", ")
                        ),
                    ))
                } else {
                    let fields = header
                        .iter()
                        .zip(row.iter())
                        .map(|(h, v)| (h.clone(), Value::String(v.to_string())))
                        .collect();
                    Ok(Record { loc, fields })
                }
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| line_of(p.byte() as usize));
                let loc = Location {
                    file: file.clone(),
                    line,
                    row: Some(row_no),
                };
                Err(Issue::new(
                    "malformed_csv",
                    loc,
                    None,
                    format!("this row cannot be read: {e}"),
                ))
            }
        };
        if !sink(record, at)? {
            break;
        }
    }
    Ok(header)
}

fn text_record(file: &Arc<str>, line: usize, text: String) -> std::result::Result<Record, Issue> {
    let mut fields = Map::new();
    fields.insert("text".into(), Value::String(text));
    Ok(Record {
        loc: Location::line(file, line),
        fields,
    })
}

/// One example per line from a piece of the file (see [`read_lines`]).
fn read_text_lines(
    file: &Arc<str>,
    text: &str,
    first_line: usize,
    base: usize,
    sink: &mut Sink<'_>,
) -> Result<(usize, bool)> {
    read_lines(text, first_line, base, sink, |n, line| {
        text_record(file, n, line.to_string())
    })
}

/// Returns the blank lines (lines mode).
fn read_text(file: &Arc<str>, text: &str, mode: TextMode, sink: &mut Sink<'_>) -> Result<usize> {
    let mut blank_lines = 0;
    let mut end = 0;
    match mode {
        // Resolved before reading; undecided, a line is an example.
        TextMode::Lines | TextMode::Auto { .. } => {
            blank_lines = read_text_lines(file, text, 1, 0, sink)?.0;
        }
        TextMode::Document { chunk_chars } => {
            let body = text.strip_suffix('\n').unwrap_or(text);
            let lines = body.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
            let limit = chunk_chars.max(1);
            let mut chunk = String::new();
            let (mut chunk_chars_now, mut chunk_line) = (0usize, 1usize);
            // Offsets are approximate here (a '\r' stripped from a line is not counted):
            // they only drive progress.
            for (i, line) in lines.enumerate() {
                let n = line.chars().count() + 1; // the newline joins lines inside a chunk
                if chunk_chars_now > 0 && chunk_chars_now + n > limit {
                    if !sink(
                        text_record(file, chunk_line, std::mem::take(&mut chunk)),
                        end,
                    )? {
                        return Ok(blank_lines);
                    }
                    chunk_chars_now = 0;
                }
                end = (end + line.len() + 1).min(text.len());
                if chunk_chars_now == 0 {
                    chunk_line = i + 1;
                }
                if n > limit {
                    // One line longer than a chunk: cut it at character boundaries.
                    let chars: Vec<char> = line.chars().collect();
                    for piece in chars.chunks(limit) {
                        if !sink(text_record(file, i + 1, piece.iter().collect()), end)? {
                            return Ok(blank_lines);
                        }
                    }
                    continue;
                }
                chunk.push_str(line);
                chunk.push('\n');
                chunk_chars_now += n;
            }
            if !chunk.trim().is_empty() {
                sink(text_record(file, chunk_line, chunk), text.len())?;
            }
        }
    }
    Ok(blank_lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_encodings_decode_like_the_browser() {
        // "café – ok" in windows-1252: é is 0xE9, the en dash 0x96.
        let cp = b"caf\xE9 \x96 ok";
        assert_eq!(
            decode("a.csv", cp, Encoding::Windows1252).unwrap(),
            "café – ok"
        );
        assert!(decode("a.csv", cp, Encoding::Utf8).is_err());
        let utf16: Vec<u8> = "hé\nℓ😀"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let with_bom = [&[0xFF, 0xFE][..], &utf16].concat();
        // A UTF-16 BOM is recognised even when UTF-8 was assumed.
        assert_eq!(
            decode("a.txt", &with_bom, Encoding::Utf8).unwrap(),
            "hé\nℓ😀"
        );
        assert_eq!(
            decode("a.txt", &utf16, Encoding::Utf16Le).unwrap(),
            "hé\nℓ😀"
        );
        let be: Vec<u8> = "hi".encode_utf16().flat_map(u16::to_be_bytes).collect();
        assert_eq!(decode("a.txt", &be, Encoding::Utf16Be).unwrap(), "hi");
        let odd = decode("a.txt", &utf16[..3], Encoding::Utf16Le).unwrap_err();
        assert_eq!(odd.details["reason"], "invalid_utf16");
        // A lone high surrogate (0xD800) on line 2.
        let lone = [b'a', 0, b'\n', 0, 0x00, 0xD8, b'b', 0];
        let err = decode("a.txt", &lone, Encoding::Utf16Le).unwrap_err();
        assert_eq!(
            (
                err.details["line"].as_u64(),
                err.details["byte_offset"].as_u64()
            ),
            (Some(2), Some(4))
        );
        let e: Encoding = serde_json::from_str("\"latin1\"").unwrap();
        assert_eq!(e, Encoding::Windows1252);
    }

    #[test]
    fn bom_is_stripped_and_invalid_utf8_is_located() {
        assert_eq!(decode_utf8("a.txt", b"\xEF\xBB\xBFhi").unwrap(), "hi");
        let err = decode_utf8("a.txt", b"ok\nfine\nbad \xFF here").unwrap_err();
        assert_eq!(err.code, Code::DataInvalid);
        assert_eq!(err.details["byte_offset"], 12);
        assert_eq!(err.details["line"], 3);
        assert_eq!(err.details["column"], 5);
        assert!(
            err.message.contains("byte offset 12 (line 3"),
            "{}",
            err.message
        );
    }

    #[test]
    fn format_detection_uses_extension_then_content() {
        assert_eq!(Format::detect("x.csv", "a,b"), Format::Csv);
        assert_eq!(
            Format::detect("x.json", "{\"a\":1}\n{\"a\":2}"),
            Format::Jsonl
        );
        assert_eq!(Format::detect("x.json", "[{}]"), Format::Json);
        assert_eq!(Format::detect("x", "  [1]"), Format::Json);
        assert_eq!(Format::detect("x.dat", "hello"), Format::Text);
    }

    #[test]
    fn json_array_elements_keep_their_lines() {
        let p = read(
            "a.json",
            b"[\n {\"text\": \"a\"},\n\n {\"text\": \"b\"}\n]\n",
            None,
            TextMode::Lines,
        )
        .unwrap();
        let lines: Vec<usize> = p
            .records
            .iter()
            .map(|r| r.as_ref().unwrap().loc.line)
            .collect();
        assert_eq!(lines, vec![2, 4]);
        let err = read(
            "a.json",
            b"[\n {\"text\": \"a\"},\n {\"text\" \"b\"}\n]",
            None,
            TextMode::Lines,
        )
        .unwrap_err();
        assert_eq!(err.details["line"], 3, "{err}");
    }

    #[test]
    fn document_mode_cuts_at_line_breaks() {
        let p = read(
            "a.txt",
            b"aaaa\nbbbb\ncccc\n",
            None,
            TextMode::Document { chunk_chars: 10 },
        )
        .unwrap();
        let chunks: Vec<(usize, String)> = p
            .records
            .iter()
            .map(|r| {
                let r = r.as_ref().unwrap();
                (r.loc.line, r.fields["text"].as_str().unwrap().to_string())
            })
            .collect();
        assert_eq!(
            chunks,
            vec![(1, "aaaa\nbbbb\n".into()), (3, "cccc\n".into())]
        );
    }
}
