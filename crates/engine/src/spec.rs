//! The job spec: what to group by, what to aggregate, which rows to keep,
//! the CSV dialect, what to do with bad rows and how big output files may be.
//!
//! [`Spec::from_json`] validates a JSON document and names the offending
//! field (`aggregates[1].op: unknown op "median"; expected one of …`).
//! [`Spec::canonical_json`] is the normalized form that job ids hash, so
//! two specs that mean the same thing give the same job.
//! [`Spec::compile`] resolves column names against the file's header.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::number::Decimal;

/// A column, by header name or by 1-based position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ColumnRef {
    /// A header name.
    Name(String),
    /// 1-based, as a user writes it.
    Index(usize),
}

impl std::fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ColumnRef::Name(n) => write!(f, "{n:?}"),
            ColumnRef::Index(i) => write!(f, "{i}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
/// A transform of a group column's value.
pub enum Transform {
    /// Unicode lower case.
    Lower,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
/// A group-by column.
pub struct GroupColumn {
    /// Which column.
    pub column: ColumnRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// How its values are changed first.
    pub transform: Option<Transform>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
/// An aggregate function.
pub enum AggOp {
    /// Rows, or with a column its non-empty values.
    Count,
    /// The exact decimal sum.
    Sum,
    /// The smallest value (numbers before text).
    Min,
    /// The largest value (numbers before text).
    Max,
    /// The mean, rounded half away from zero to 10 decimals.
    Mean,
    /// The first value in file order.
    First,
    /// The last value in file order.
    Last,
}

impl AggOp {
    /// The spec's names of the functions.
    pub const ALL: [(&'static str, AggOp); 7] = [
        ("count", AggOp::Count),
        ("sum", AggOp::Sum),
        ("min", AggOp::Min),
        ("max", AggOp::Max),
        ("mean", AggOp::Mean),
        ("first", AggOp::First),
        ("last", AggOp::Last),
    ];
    /// The spec's name of `self`.
    pub fn name(self) -> &'static str {
        AggOp::ALL.iter().find(|(_, o)| *o == self).map(|(n, _)| *n).unwrap_or("?")
    }
    pub(crate) fn code(self) -> u8 {
        self as u8
    }
    pub(crate) fn from_code(c: u8) -> Option<AggOp> {
        AggOp::ALL.iter().map(|(_, o)| *o).find(|o| o.code() == c)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
/// One aggregate of the output.
pub struct Aggregate {
    /// The function.
    pub op: AggOp,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Its column (`None` for a row count).
    pub column: Option<ColumnRef>,
    #[serde(rename = "as")]
    /// The output column's name.
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
/// A `where` comparison.
pub enum FilterOp {
    #[serde(rename = "=")]
    /// Equal.
    Eq,
    #[serde(rename = "!=")]
    /// Not equal.
    Ne,
    #[serde(rename = "<")]
    /// Less than.
    Lt,
    #[serde(rename = "<=")]
    /// Less than or equal.
    Le,
    #[serde(rename = ">")]
    /// Greater than.
    Gt,
    #[serde(rename = ">=")]
    /// Greater than or equal.
    Ge,
    #[serde(rename = "in")]
    /// One of a list.
    In,
    #[serde(rename = "empty")]
    /// The field is empty.
    Empty,
    #[serde(rename = "not_empty")]
    /// The field is not empty.
    NotEmpty,
}

const FILTER_OPS: [(&str, FilterOp); 9] = [
    ("=", FilterOp::Eq),
    ("!=", FilterOp::Ne),
    ("<", FilterOp::Lt),
    ("<=", FilterOp::Le),
    (">", FilterOp::Gt),
    (">=", FilterOp::Ge),
    ("in", FilterOp::In),
    ("empty", FilterOp::Empty),
    ("not_empty", FilterOp::NotEmpty),
];

#[derive(Clone, Debug, PartialEq, Eq)]
/// One `where` condition.
pub struct Filter {
    /// The column compared.
    pub column: ColumnRef,
    /// The comparison.
    pub op: FilterOp,
    /// Empty for `empty`/`not_empty`, one value for comparisons, the list for `in`.
    pub values: Vec<String>,
}

impl Serialize for Filter {
    /// The same shape the parser reads: `value` is a list for `in`, one
    /// value for comparisons, absent for `empty`/`not_empty`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("column", &self.column)?;
        m.serialize_entry("op", &self.op)?;
        match self.op {
            FilterOp::Empty | FilterOp::NotEmpty => {}
            FilterOp::In => m.serialize_entry("value", &self.values)?,
            _ => m.serialize_entry("value", &self.values[0])?,
        }
        m.end()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
/// What a bad row does.
pub enum OnBadRow {
    /// The job fails at the first bad row.
    Fail,
    /// Bad rows are counted, sampled and left out.
    Skip,
}

/// The CSV dialect of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Dialect {
    #[serde(serialize_with = "ser_byte")]
    /// The field delimiter.
    pub delimiter: u8,
    /// `None`: quotes are ordinary characters.
    #[serde(serialize_with = "ser_opt_byte")]
    pub quote: Option<u8>,
    /// Whether the first record names the columns.
    pub header: bool,
    /// A quote inside an unquoted field, or a character after a closing
    /// quote, is a literal character (Python's `csv` module, rust-csv)
    /// instead of a bad row (RFC 4180). Defaults to `on_bad_row == skip`.
    pub lenient_quotes: bool,
}

fn ser_byte<S: serde::Serializer>(b: &u8, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&(*b as char).to_string())
}
fn ser_opt_byte<S: serde::Serializer>(b: &Option<u8>, s: S) -> Result<S::Ok, S::Error> {
    match b {
        Some(b) => s.serialize_str(&(*b as char).to_string()),
        None => s.serialize_none(),
    }
}

impl Default for Dialect {
    fn default() -> Self {
        Dialect { delimiter: b',', quote: Some(b'"'), header: true, lenient_quotes: false }
    }
}

/// The default cap of one result file, in bytes.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 500_000_000;

/// A validated job spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Spec {
    /// The input's dialect.
    pub csv: Dialect,
    /// The group key's columns.
    pub group_by: Vec<GroupColumn>,
    /// The aggregates, in output order.
    pub aggregates: Vec<Aggregate>,
    #[serde(rename = "where")]
    /// Conditions every row must meet.
    pub filters: Vec<Filter>,
    /// What a bad row does.
    pub on_bad_row: OnBadRow,
    /// How results are written.
    pub output: OutputSpec,
    /// The spec sits in a folder's `_spec.json` and makes one job over
    /// every file of the folder (a dataset) instead of one job per file.
    /// Left out of the canonical JSON when false, so that file jobs keep
    /// their ids.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dataset: bool,
    /// A named column that a file's header lacks is empty in every row of
    /// that file, instead of an error (a dataset's files with different
    /// headers). Left out of the canonical JSON when false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub union: bool,
}

/// The column index of a named column that the file lacks (`union`): every
/// row's value is empty.
pub const MISSING: usize = usize::MAX;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OutputSpec {
    pub max_file_bytes: u64,
}

/// An invalid spec: `field` is a path such as `aggregates[0].column`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid spec: {field}: {message}")]
pub struct SpecError {
    /// Where in the spec, such as `aggregates[0].column`.
    pub field: String,
    /// What is wrong there.
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    let (field, message) = (field.into(), message.into());
    SpecError { field: crate::clip(&field, 200).into_owned(), message: crate::clip(&message, 1000).into_owned() }
}

impl Default for Spec {
    /// The BMAT job: plays per song and day.
    fn default() -> Self {
        Spec {
            csv: Dialect::default(),
            group_by: vec![
                GroupColumn { column: ColumnRef::Name("Song".into()), transform: None },
                GroupColumn { column: ColumnRef::Name("Date".into()), transform: None },
            ],
            aggregates: vec![Aggregate {
                op: AggOp::Sum,
                column: Some(ColumnRef::Name("Number of Plays".into())),
                name: "Total Number of Plays for Date".into(),
            }],
            filters: vec![],
            on_bad_row: OnBadRow::Fail,
            output: OutputSpec { max_file_bytes: DEFAULT_MAX_FILE_BYTES },
            dataset: false,
            union: false,
        }
    }
}

fn check_keys(obj: &Map<String, Value>, path: &str, allowed: &[&str]) -> Result<(), SpecError> {
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            let at = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            return Err(err(at, format!("unknown field; expected one of: {}", allowed.join(", "))));
        }
    }
    Ok(())
}

fn single_byte(v: &Value, path: &str) -> Result<u8, SpecError> {
    match v {
        Value::String(s) if s.len() == 1 && s.is_ascii() => {
            let b = s.as_bytes()[0];
            if b == b'\n' || b == b'\r' {
                return Err(err(path, "a line break cannot be used here"));
            }
            Ok(b)
        }
        Value::String(s) if s == "\\t" => Ok(b'\t'),
        _ => Err(err(path, format!("expected a single ASCII character, got {v}"))),
    }
}

fn column_ref(v: &Value, path: &str) -> Result<ColumnRef, SpecError> {
    match v {
        Value::String(s) if !s.is_empty() => Ok(ColumnRef::Name(s.clone())),
        Value::Number(n) => match n.as_u64() {
            Some(i) if i >= 1 => Ok(ColumnRef::Index(i as usize)),
            _ => Err(err(path, format!("column index must be a whole number >= 1, got {n}"))),
        },
        _ => Err(err(path, format!("expected a column name or a 1-based index, got {v}"))),
    }
}

fn value_text(v: &Value, path: &str) -> Result<String, SpecError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(err(path, format!("expected a string or a number, got {v}"))),
    }
}

impl Spec {
    /// Parses and validates a spec document.
    pub fn from_json(text: &str) -> Result<Spec, SpecError> {
        let v: Value = serde_json::from_str(text).map_err(|e| err("(document)", format!("not valid JSON: {e}")))?;
        Spec::from_value(&v)
    }

    /// A spec from parsed JSON (see [`Self::from_json`]).
    pub fn from_value(v: &Value) -> Result<Spec, SpecError> {
        let obj = v.as_object().ok_or_else(|| err("(document)", "expected a JSON object"))?;
        check_keys(obj, "", &["csv", "group_by", "aggregates", "where", "on_bad_row", "output", "dataset", "union"])?;
        let mut spec = Spec::default();
        let mut lenient = None;

        if let Some(csv) = obj.get("csv") {
            let csv = csv.as_object().ok_or_else(|| err("csv", "expected an object"))?;
            check_keys(csv, "csv", &["delimiter", "quote", "header", "lenient_quotes"])?;
            if let Some(d) = csv.get("delimiter") {
                spec.csv.delimiter = single_byte(d, "csv.delimiter")?;
            }
            if let Some(q) = csv.get("quote") {
                spec.csv.quote = match q {
                    Value::Null => None,
                    Value::String(s) if s == "none" || s.is_empty() => None,
                    other => Some(single_byte(other, "csv.quote")?),
                };
            }
            if let Some(h) = csv.get("header") {
                spec.csv.header =
                    h.as_bool().ok_or_else(|| err("csv.header", format!("expected true or false, got {h}")))?;
            }
            if let Some(l) = csv.get("lenient_quotes") {
                lenient = Some(
                    l.as_bool().ok_or_else(|| err("csv.lenient_quotes", format!("expected true or false, got {l}")))?,
                );
            }
            if spec.csv.quote == Some(spec.csv.delimiter) {
                return Err(err("csv.quote", "the quote character must differ from the delimiter"));
            }
        }

        if let Some(g) = obj.get("group_by") {
            let arr = g.as_array().ok_or_else(|| err("group_by", "expected an array of columns"))?;
            spec.group_by = arr
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let path = format!("group_by[{i}]");
                    match item {
                        Value::Object(o) => {
                            check_keys(o, &path, &["column", "transform"])?;
                            let col = o.get("column").ok_or_else(|| err(format!("{path}.column"), "missing"))?;
                            let transform = match o.get("transform") {
                                None | Some(Value::Null) => None,
                                Some(Value::String(s)) if s == "lower" => Some(Transform::Lower),
                                Some(t) => {
                                    return Err(err(
                                        format!("{path}.transform"),
                                        format!("unknown transform {t}; expected \"lower\""),
                                    ))
                                }
                            };
                            Ok(GroupColumn { column: column_ref(col, &format!("{path}.column"))?, transform })
                        }
                        other => Ok(GroupColumn { column: column_ref(other, &path)?, transform: None }),
                    }
                })
                .collect::<Result<_, _>>()?;
        }

        if let Some(a) = obj.get("aggregates") {
            let arr = a.as_array().ok_or_else(|| err("aggregates", "expected an array"))?;
            spec.aggregates = arr
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let path = format!("aggregates[{i}]");
                    let o = item.as_object().ok_or_else(|| err(&path, "expected an object"))?;
                    check_keys(o, &path, &["op", "column", "as"])?;
                    let op_v = o.get("op").ok_or_else(|| err(format!("{path}.op"), "missing"))?;
                    let op_s = op_v.as_str().unwrap_or("");
                    let op = AggOp::ALL.iter().find(|(n, _)| *n == op_s).map(|(_, o)| *o).ok_or_else(|| {
                        err(
                            format!("{path}.op"),
                            format!("unknown op {op_v}; expected one of: count, sum, min, max, mean, first, last"),
                        )
                    })?;
                    let column = match o.get("column") {
                        None | Some(Value::Null) => None,
                        Some(c) => Some(column_ref(c, &format!("{path}.column"))?),
                    };
                    if column.is_none() && op != AggOp::Count {
                        return Err(err(format!("{path}.column"), format!("missing: {op_s} needs a column")));
                    }
                    let name = match o.get("as") {
                        None | Some(Value::Null) => match &column {
                            Some(ColumnRef::Name(n)) => format!("{op_s}({n})"),
                            Some(ColumnRef::Index(i)) => format!("{op_s}(column {i})"),
                            None => "count".to_string(),
                        },
                        Some(Value::String(s)) if !s.is_empty() => s.clone(),
                        Some(other) => {
                            return Err(err(format!("{path}.as"), format!("expected a non-empty name, got {other}")))
                        }
                    };
                    Ok(Aggregate { op, column, name })
                })
                .collect::<Result<_, _>>()?;
        }

        if let Some(w) = obj.get("where") {
            let arr = w.as_array().ok_or_else(|| err("where", "expected an array of conditions"))?;
            spec.filters = arr
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let path = format!("where[{i}]");
                    let o = item.as_object().ok_or_else(|| err(&path, "expected an object"))?;
                    check_keys(o, &path, &["column", "op", "value"])?;
                    let col = o.get("column").ok_or_else(|| err(format!("{path}.column"), "missing"))?;
                    let column = column_ref(col, &format!("{path}.column"))?;
                    let op_v = o.get("op").ok_or_else(|| err(format!("{path}.op"), "missing"))?;
                    let op = FILTER_OPS.iter().find(|(n, _)| Some(*n) == op_v.as_str()).map(|(_, o)| *o).ok_or_else(
                        || {
                            err(
                                format!("{path}.op"),
                                format!(
                                    "unknown op {op_v}; expected one of: =, !=, <, <=, >, >=, in, empty, not_empty"
                                ),
                            )
                        },
                    )?;
                    let vpath = format!("{path}.value");
                    let values = match (op, o.get("value")) {
                        (FilterOp::Empty | FilterOp::NotEmpty, None | Some(Value::Null)) => vec![],
                        (FilterOp::Empty | FilterOp::NotEmpty, Some(_)) => return Err(err(vpath, "takes no value")),
                        (FilterOp::In, Some(Value::Array(items))) => items
                            .iter()
                            .enumerate()
                            .map(|(j, x)| value_text(x, &format!("{vpath}[{j}]")))
                            .collect::<Result<_, _>>()?,
                        (FilterOp::In, _) => return Err(err(vpath, "expected an array of values")),
                        (_, None | Some(Value::Null)) => return Err(err(vpath, "missing")),
                        (_, Some(x)) => vec![value_text(x, &vpath)?],
                    };
                    Ok(Filter { column, op, values })
                })
                .collect::<Result<_, _>>()?;
        }

        if let Some(b) = obj.get("on_bad_row") {
            spec.on_bad_row = match b.as_str() {
                Some("fail") => OnBadRow::Fail,
                Some("skip") => OnBadRow::Skip,
                _ => return Err(err("on_bad_row", format!("expected \"fail\" or \"skip\", got {b}"))),
            };
        }
        spec.csv.lenient_quotes = lenient.unwrap_or(spec.on_bad_row == OnBadRow::Skip);

        if let Some(o) = obj.get("output") {
            let o = o.as_object().ok_or_else(|| err("output", "expected an object"))?;
            check_keys(o, "output", &["max_file_bytes"])?;
            if let Some(m) = o.get("max_file_bytes") {
                spec.output.max_file_bytes = m.as_u64().filter(|&m| m >= 1).ok_or_else(|| {
                    err("output.max_file_bytes", format!("expected a whole number of bytes >= 1, got {m}"))
                })?;
            }
        }

        if let Some(d) = obj.get("dataset") {
            spec.dataset = d.as_bool().ok_or_else(|| err("dataset", format!("expected true or false, got {d}")))?;
        }
        if let Some(u) = obj.get("union") {
            spec.union = u.as_bool().ok_or_else(|| err("union", format!("expected true or false, got {u}")))?;
        }

        if spec.group_by.is_empty() && spec.aggregates.is_empty() {
            return Err(err("group_by", "a spec needs at least one group_by column or one aggregate"));
        }
        let mut names: Vec<String> = Vec::new();
        for (i, a) in spec.aggregates.iter().enumerate() {
            if names.contains(&a.name) {
                return Err(err(format!("aggregates[{i}].as"), format!("duplicate output name {:?}", a.name)));
            }
            names.push(a.name.clone());
        }
        Ok(spec)
    }

    /// The normalized JSON that job ids are derived from.
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect("a spec always serializes")
    }

    /// The part of the spec a file's scan depends on: everything but how
    /// the results are written and named. Two specs with the same scan part
    /// can merge the same kept partials (a dataset's files are scanned once
    /// for every version of the dataset).
    pub fn scan_part(&self) -> Spec {
        let mut s = self.clone();
        s.output = OutputSpec { max_file_bytes: DEFAULT_MAX_FILE_BYTES };
        s.dataset = false;
        for (i, a) in s.aggregates.iter_mut().enumerate() {
            a.name = format!("#{i}");
        }
        s
    }
}

/// How one compiled filter compares.
#[derive(Clone, Debug)]
pub struct CompiledFilter {
    pub col: usize,
    pub op: FilterOp,
    /// (text, number if the text is a number)
    pub values: Vec<(Vec<u8>, Option<Decimal>)>,
}

#[derive(Clone, Debug)]
pub struct CompiledAgg {
    pub op: AggOp,
    pub col: Option<usize>,
    pub name: String,
}

/// A spec resolved against a file's header: every column is a 0-based index.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The input's dialect.
    pub dialect: Dialect,
    /// Number of fields every record must have.
    pub width: usize,
    /// The group key's columns, with their transforms.
    pub keys: Vec<(usize, Option<Transform>)>,
    /// The aggregates, in output order.
    pub aggs: Vec<CompiledAgg>,
    /// The `where` conditions.
    pub filters: Vec<CompiledFilter>,
    /// What a bad row does.
    pub on_bad_row: OnBadRow,
    /// The cap of one result file.
    pub max_file_bytes: u64,
    /// Column names for messages: the header's, or `column N`.
    pub column_names: Vec<String>,
    /// The output header: group columns, then aggregate names.
    pub output_header: Vec<String>,
}

impl Spec {
    /// Resolves columns. `header` holds the header's names when the dialect
    /// has a header; `width` is the field count of the first record.
    pub fn compile(&self, header: Option<&[String]>, width: usize) -> Result<Compiled, SpecError> {
        let column_names: Vec<String> = match header {
            Some(h) => h.to_vec(),
            None => (1..=width).map(|i| format!("column {i}")).collect(),
        };
        let resolve = |c: &ColumnRef, path: String| -> Result<usize, SpecError> {
            match c {
                ColumnRef::Index(i) if *i <= width => Ok(i - 1),
                ColumnRef::Index(i) => {
                    Err(err(path, format!("column {i} does not exist: the file has {width} columns")))
                }
                ColumnRef::Name(n) => match header {
                    Some(h) => {
                        let mut at = h.iter().enumerate().filter(|(_, x)| *x == n).map(|(i, _)| i + 1);
                        match (at.next(), at.next()) {
                            (Some(i), None) => Ok(i - 1),
                            (Some(i), Some(j)) => Err(err(
                                path,
                                format!(
                                    "column {:?} is ambiguous: the header has it at positions {i} and {j}: use a \
                                     1-based index",
                                    crate::clip(n, 200)
                                ),
                            )),
                            (None, _) if self.union => Ok(MISSING),
                            (None, _) => Err(err(
                                path,
                                format!(
                                    "column {:?} is not in the header (columns: {})",
                                    crate::clip(n, 200),
                                    crate::clip(&h.join(", "), 300)
                                ),
                            )),
                        }
                    }
                    None => Err(err(path, format!("column {n:?} named, but csv.header is false: use a 1-based index"))),
                },
            }
        };
        let keys = self
            .group_by
            .iter()
            .enumerate()
            .map(|(i, g)| Ok((resolve(&g.column, format!("group_by[{i}]"))?, g.transform)))
            .collect::<Result<Vec<_>, SpecError>>()?;
        let aggs = self
            .aggregates
            .iter()
            .enumerate()
            .map(|(i, a)| {
                Ok(CompiledAgg {
                    op: a.op,
                    col: match &a.column {
                        Some(c) => Some(resolve(c, format!("aggregates[{i}].column"))?),
                        None => None,
                    },
                    name: a.name.clone(),
                })
            })
            .collect::<Result<Vec<_>, SpecError>>()?;
        let filters = self
            .filters
            .iter()
            .enumerate()
            .map(|(i, f)| {
                Ok(CompiledFilter {
                    col: resolve(&f.column, format!("where[{i}].column"))?,
                    op: f.op,
                    values: f
                        .values
                        .iter()
                        .map(|v| (v.as_bytes().to_vec(), Decimal::parse(v.as_bytes()).ok()))
                        .collect(),
                })
            })
            .collect::<Result<Vec<_>, SpecError>>()?;
        let mut output_header: Vec<String> = keys
            .iter()
            .zip(&self.group_by)
            .map(|((c, _), g)| match (&g.column, column_names.get(*c)) {
                (_, Some(name)) => name.clone(),
                // A column this file lacks (`union`): the name the spec gives it.
                (ColumnRef::Name(n), None) => n.clone(),
                (ColumnRef::Index(i), None) => format!("column {i}"),
            })
            .collect();
        output_header.extend(aggs.iter().map(|a| a.name.clone()));
        // Two output columns of one name: a reader (QuickSight, Athena) cannot tell them apart.
        let place = |i: usize| {
            if i < keys.len() {
                format!("group_by[{i}]")
            } else {
                format!("aggregates[{}]", i - keys.len())
            }
        };
        for (j, name) in output_header.iter().enumerate() {
            if let Some(i) = output_header[..j].iter().position(|x| x == name) {
                return Err(err(
                    place(j),
                    format!(
                        "output column {name:?} is also {}: every output column needs its own name (rename an \
                         aggregate with \"as\", or drop the repeated group column)",
                        place(i)
                    ),
                ));
            }
        }
        Ok(Compiled {
            dialect: self.csv,
            width,
            keys,
            aggs,
            filters,
            on_bad_row: self.on_bad_row,
            max_file_bytes: self.output.max_file_bytes,
            column_names,
            output_header,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_bmat_and_canonical_is_stable() {
        let s = Spec::from_json("{}").unwrap();
        assert_eq!(s, Spec::default());
        let a = Spec::from_json(r#"{"on_bad_row":"fail","csv":{"header":true}}"#).unwrap();
        assert_eq!(a.canonical_json(), s.canonical_json());
    }

    #[test]
    fn canonical_json_parses_back_to_the_same_spec() {
        let s = Spec::from_json(
            r#"{"csv":{"delimiter":";","quote":null,"header":false},
                "group_by":[{"column":1,"transform":"lower"},2],
                "aggregates":[{"op":"count"},{"op":"sum","column":3,"as":"t"},{"op":"first","column":2}],
                "where":[{"column":3,"op":">=","value":5},{"column":2,"op":"in","value":["a","b"]},
                         {"column":1,"op":"not_empty"}],
                "on_bad_row":"skip","output":{"max_file_bytes":1000}}"#,
        )
        .unwrap();
        let back = Spec::from_json(&s.canonical_json()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.canonical_json(), s.canonical_json());
        let d = Spec::default();
        assert_eq!(Spec::from_json(&d.canonical_json()).unwrap(), d);
    }

    #[test]
    fn a_dataset_spec_keeps_file_ids_and_shares_its_scan_part() {
        let d = Spec::from_json(r#"{"dataset":true,"output":{"max_file_bytes":99}}"#).unwrap();
        assert!(d.dataset);
        assert!(!Spec::default().canonical_json().contains("dataset"), "file jobs keep their ids");
        assert_eq!(Spec::from_json(&d.canonical_json()).unwrap(), d);
        // Output and names are not part of the scan; columns and filters are.
        let renamed = Spec::from_json(r#"{"aggregates":[{"op":"sum","column":"Number of Plays","as":"n"}]}"#).unwrap();
        let plain = Spec::from_json(r#"{"aggregates":[{"op":"sum","column":"Number of Plays"}]}"#).unwrap();
        assert_eq!(renamed.scan_part().canonical_json(), plain.scan_part().canonical_json());
        assert_eq!(d.scan_part().canonical_json(), Spec::default().scan_part().canonical_json());
        let other = Spec::from_json(r#"{"group_by":["Song"]}"#).unwrap();
        assert_ne!(other.scan_part().canonical_json(), Spec::default().scan_part().canonical_json());
        assert_eq!(Spec::from_json(&d.scan_part().canonical_json()).unwrap(), d.scan_part());
        assert!(Spec::from_json(r#"{"dataset":"yes"}"#).unwrap_err().to_string().contains("dataset"));
        // union: a named column the header lacks is MISSING (empty), not an error.
        let u = Spec::from_json(r#"{"union":true,"group_by":["Song","Day"]}"#).unwrap();
        assert!(!Spec::default().canonical_json().contains("union"));
        assert_ne!(
            u.scan_part().canonical_json(),
            Spec::from_json(r#"{"group_by":["Song","Day"]}"#).unwrap().scan_part().canonical_json()
        );
        let header: Vec<String> = ["Song", "Date"].iter().map(|s| s.to_string()).collect();
        let c = u.compile(Some(&header), 2).unwrap();
        assert_eq!(c.keys.iter().map(|k| k.0).collect::<Vec<_>>(), vec![0, MISSING]);
        assert_eq!(c.output_header[..2], ["Song".to_string(), "Day".to_string()]);
        let strict = Spec::from_json(r#"{"group_by":["Song","Day"]}"#).unwrap();
        assert!(strict.compile(Some(&header), 2).unwrap_err().to_string().contains("not in the header"));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{"aggregates":[{"op":"median","column":"x"}]}"#, "aggregates[0].op"),
            (r#"{"aggregates":[{"op":"sum"}]}"#, "aggregates[0].column"),
            (r#"{"group_by":[{"column":"a","transform":"upper"}]}"#, "group_by[0].transform"),
            (r#"{"group_by":[0]}"#, "group_by[0]"),
            (r#"{"where":[{"column":"a","op":"in","value":"x"}]}"#, "where[0].value"),
            (r#"{"where":[{"column":"a","op":"~"}]}"#, "where[0].op"),
            (r#"{"csv":{"delimiter":";;"}}"#, "csv.delimiter"),
            (r#"{"csv":{"quote":","}}"#, "csv.quote"),
            (r#"{"output":{"max_file_bytes":0}}"#, "output.max_file_bytes"),
            (r#"{"on_bad_row":"ignore"}"#, "on_bad_row"),
            (r#"{"colour":1}"#, "colour"),
            (r#"{"group_by":[],"aggregates":[]}"#, "group_by"),
            ("[", "(document)"),
        ];
        for (json, field) in cases {
            let e = Spec::from_json(json).unwrap_err();
            assert_eq!(e.field, field, "{json}: {e}");
        }
    }

    #[test]
    fn ambiguous_columns_and_repeated_output_names_are_rejected() {
        let header: Vec<String> = ["Song", "Date", "Plays", "Plays"].iter().map(|s| s.to_string()).collect();
        let compile = |json: &str| Spec::from_json(json).unwrap().compile(Some(&header), 4);
        let e = compile(r#"{"group_by":["Song"],"aggregates":[{"op":"sum","column":"Plays"}]}"#).unwrap_err();
        assert_eq!(e.field, "aggregates[0].column");
        assert!(e.message.contains("\"Plays\" is ambiguous: the header has it at positions 3 and 4"), "{e}");
        // By position it is fine, and an unused repeated name does not matter.
        compile(r#"{"group_by":["Song"],"aggregates":[{"op":"sum","column":4}]}"#).unwrap();
        let e = compile(r#"{"group_by":["Song","Song"],"aggregates":[{"op":"count"}]}"#).unwrap_err();
        assert_eq!(e.field, "group_by[1]");
        assert!(e.message.contains("\"Song\" is also group_by[0]"), "{e}");
        let e = compile(r#"{"group_by":["Song","Date"],"aggregates":[{"op":"count","as":"Song"}]}"#).unwrap_err();
        assert_eq!(e.field, "aggregates[0]");
        assert!(e.message.contains("\"Song\" is also group_by[0]"), "{e}");
        // (Two aggregates of one name are refused when the spec is read.)
        assert!(Spec::from_json(r#"{"aggregates":[{"op":"count"},{"op":"count"}]}"#).is_err());
    }

    #[test]
    fn compile_resolves_names_and_indices() {
        let s = Spec::from_json(
            r#"{"group_by":[{"column":"sku","transform":"lower"}, 3],
                "aggregates":[{"op":"count"},{"op":"last","column":2,"as":"name"}],
                "where":[{"column":"qty","op":">=","value":10}]}"#,
        )
        .unwrap();
        let header: Vec<String> = ["sku", "name", "qty"].iter().map(|s| s.to_string()).collect();
        let c = s.compile(Some(&header), 3).unwrap();
        assert_eq!(c.keys, vec![(0, Some(Transform::Lower)), (2, None)]);
        assert_eq!(c.output_header, vec!["sku", "qty", "count", "name"]);
        assert_eq!(c.filters[0].values[0].1, Some(Decimal::from_int(10)));
        let e = Spec::default().compile(Some(&header), 3).unwrap_err();
        assert_eq!(e.field, "group_by[0]");
        assert!(e.message.contains("\"Song\" is not in the header"), "{e}");
    }
}
