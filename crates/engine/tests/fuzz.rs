//! Differential fuzzing: random CSV (well-formed, and with stray quotes,
//! text after a closing quote, unclosed quotes, NUL, invalid UTF-8, ragged
//! rows, long fields) through the engine at several chunk sizes, against an
//! oracle built on the `csv` crate (rust-csv).
//!
//! - Every chunking gives the same bytes or the same error, and nothing
//!   panics.
//! - Well-formed input is never rejected, and gives what the oracle gives;
//!   with lenient quotes, neither is input whose only fault is where its
//!   quotes stand (they are literal characters, as in rust-csv).
//! - Whenever the engine accepts an input, the oracle reads the same rows.
//! - A quoting error points at a quote character.
//!
//! `FANFOLD_FUZZ_CASES` sets the number of cases (CI runs the default; a
//! long run: `FANFOLD_FUZZ_CASES=200000 cargo test --release -p
//! fanfold-engine --test fuzz`).

mod common;

use std::collections::BTreeMap;

use common::{run, run_in_pieces};
use fanfold_engine::Spec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// How a field as written reads: well-formed (RFC 4180), or malformed
/// only in where its quotes stand (fine with lenient quotes), or neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Form {
    Bad,
    LenientOnly,
    Good,
}

/// One field as written, and how it reads. Dirty files mix in malformed ones.
fn field(dirty: bool) -> BoxedStrategy<(Vec<u8>, Form)> {
    let ok = |s: &str| (s.as_bytes().to_vec(), Form::Good);
    let bad = |s: &[u8]| (s.to_vec(), Form::Bad);
    let lenient = |s: &[u8]| (s.to_vec(), Form::LenientOnly);
    let good = prop_oneof![
        4 => "[a-c]{0,3}".prop_map(move |s| ok(&s)),
        1 => Just(ok("é€")),
        1 => Just(ok("\"a,b\"")),
        1 => Just(ok("\"say \"\"hi\"\"\"")),
        1 => Just(ok("\"two\nlines\"")),
        1 => Just(ok("\"crlf\r\ninside\"")),
        1 => Just(ok(&"long".repeat(40))),
    ];
    if !dirty {
        return good.boxed();
    }
    prop_oneof![
        20 => good,
        1 => Just(lenient(b"ab\"c")),
        1 => Just(lenient(b"\"ab\"x")),
        1 => Just(bad(b"\"open")),
        1 => Just(lenient(b"x\"")),
        1 => Just(lenient(b"\"a\"b\"c")),
        1 => Just(bad(b"n\0l")),
        1 => Just(bad(b"\xff\xfe")),
    ]
    .boxed()
}

fn value(dirty: bool) -> BoxedStrategy<(Vec<u8>, Form)> {
    let good = prop_oneof![
        4 => (-50i64..50).prop_map(|v| (v.to_string().into_bytes(), Form::Good)),
        1 => Just((Vec::new(), Form::Good)),
        1 => Just((b"\"7\"".to_vec(), Form::Good)),
    ];
    if !dirty {
        return good.boxed();
    }
    prop_oneof![20 => good, 1 => Just((b"1\"2".to_vec(), Form::Bad)), 1 => Just((b"x".to_vec(), Form::Bad))].boxed()
}

/// A file: header `k,v`, rows of (key, value), in a dirty file some ragged;
/// `\n` or `\r\n`. Returns how the worst row reads.
fn file() -> impl Strategy<Value = (Vec<u8>, Form)> {
    any::<bool>().prop_flat_map(|dirty| {
        let shape =
            if dirty { prop_oneof![30 => Just(0u8), 1 => Just(1), 1 => Just(3)].boxed() } else { Just(0u8).boxed() };
        let row = (field(dirty), value(dirty), shape, any::<bool>());
        proptest::collection::vec(row, 0..40).prop_map(|rows| {
            let mut csv = b"k,v\n".to_vec();
            let mut form = Form::Good;
            for ((k, k_ok), (v, v_ok), shape, crlf) in rows {
                csv.extend_from_slice(&k);
                match shape {
                    0 => {
                        csv.push(b',');
                        csv.extend_from_slice(&v);
                        form = form.min(k_ok).min(v_ok);
                    }
                    1 => form = Form::Bad, // one field
                    _ => {
                        csv.extend_from_slice(b",1,2"); // three fields
                        form = Form::Bad;
                    }
                }
                csv.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            }
            (csv, form)
        })
    })
}

fn spec(lenient: bool) -> Spec {
    let aggs = r#""aggregates":[{"op":"count","as":"n"},{"op":"sum","column":"v","as":"s"}]"#;
    Spec::from_json(&format!(r#"{{"csv":{{"lenient_quotes":{lenient}}},"group_by":["k"],{aggs}}}"#)).unwrap()
}

/// Key → (rows, sum of `v` if any).
type Groups = BTreeMap<Vec<u8>, (u64, Option<i64>)>;

/// The oracle: rust-csv reads the records (lines end at `\n`; a `\r` before
/// it belongs to the line end), then a map sums them. `Err` for a record
/// of another width.
fn oracle(csv: &[u8]) -> Result<Groups, String> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(csv);
    let mut groups = BTreeMap::new();
    for rec in r.byte_records() {
        let rec = rec.map_err(|e| e.to_string())?;
        if rec.len() == 1 && (rec[0].is_empty() || &rec[0] == b"\r") {
            continue; // an empty line (`\r\n`)
        }
        if rec.len() != 2 {
            return Err(format!("a record of {} fields", rec.len()));
        }
        let field = |i: usize| {
            let f = &rec[i];
            f.strip_suffix(b"\r").unwrap_or(f).to_vec()
        };
        let (k, v) = (field(0), field(1));
        let e: &mut (u64, Option<i64>) = groups.entry(k).or_default();
        e.0 += 1;
        if !v.is_empty() {
            let v: i64 = std::str::from_utf8(&v).unwrap().parse().map_err(|e| format!("{e}"))?;
            e.1 = Some(e.1.unwrap_or(0) + v);
        }
    }
    Ok(groups)
}

/// The engine's result file read back into the oracle's shape.
fn read_result(out: &[u8]) -> Groups {
    let mut r = csv::ReaderBuilder::new().has_headers(true).from_reader(out);
    r.byte_records()
        .map(|rec| {
            let rec = rec.unwrap();
            let n = std::str::from_utf8(&rec[1]).unwrap().parse().unwrap();
            let s = std::str::from_utf8(&rec[2]).unwrap();
            (rec[0].to_vec(), (n, (!s.is_empty()).then(|| s.parse().unwrap())))
        })
        .collect()
}

fn cases() -> u32 {
    std::env::var("FANFOLD_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(400)
}

/// The engine at every chunking against the oracle. RFC 4180 quoting
/// accepts only what is well-formed; lenient quoting also reads misplaced
/// quotes as literal characters, as rust-csv (and Python) do.
fn agrees_with_rust_csv(lenient: bool) {
    let spec = spec(lenient);
    let must_accept = if lenient { Form::LenientOnly } else { Form::Good };
    let mut runner = TestRunner::new(Config { cases: cases(), ..Config::default() });
    let strategy = (file(), 1u64..64);
    runner
        .run(&strategy, |((csv, form), chunk)| {
            let whole = run(&csv, &spec, 1 << 30);
            for c in [1, 2, 3, chunk] {
                prop_assert_eq!(&run(&csv, &spec, c), &whole, "chunk size {}", c);
            }
            for (c, pieces) in [(1 << 30, 2), (1 << 30, 5), (chunk, 3)] {
                prop_assert_eq!(
                    &run_in_pieces(&csv, &spec, c, pieces),
                    &whole,
                    "chunk size {} in {} pieces",
                    c,
                    pieces
                );
            }
            match &whole {
                Ok(out) => {
                    let want = oracle(&csv);
                    prop_assert!(want.is_ok(), "accepted, but rust-csv rejects it: {:?}", want);
                    prop_assert_eq!(read_result(out), want.unwrap());
                }
                Err(e) => {
                    prop_assert!(form < must_accept, "a file that reads as {:?} was rejected: {}", form, e);
                    prop_assert!(e.starts_with("line "), "the error names the line: {}", e);
                    if e.contains("quote") {
                        let byte: usize = e.split("(byte ").nth(1).unwrap().split(')').next().unwrap().parse().unwrap();
                        prop_assert_eq!(csv.get(byte), Some(&b'"'), "a quoting error points at a quote: {}", e);
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn random_csv_agrees_with_rust_csv_at_every_chunk_size() {
    agrees_with_rust_csv(false);
}

#[test]
fn with_lenient_quotes_random_csv_reads_as_rust_csv_reads_it() {
    agrees_with_rust_csv(true);
}

#[test]
fn random_bytes_never_panic_and_do_not_depend_on_the_chunking() {
    let spec = Spec::from_json(r#"{"csv":{"header":false},"group_by":[1],"aggregates":[{"op":"count"}]}"#).unwrap();
    let skip =
        Spec::from_json(r#"{"csv":{"header":false},"group_by":[1],"aggregates":[{"op":"count"}],"on_bad_row":"skip"}"#)
            .unwrap();
    let strict_skip = Spec::from_json(
        r#"{"csv":{"header":false,"lenient_quotes":false},"group_by":[1],"aggregates":[{"op":"count"}],"on_bad_row":"skip"}"#,
    )
    .unwrap();
    let bytes = proptest::collection::vec(
        prop_oneof![Just(b'"'), Just(b','), Just(b'\n'), Just(b'\r'), Just(0u8), Just(0xff), Just(b'a'), any::<u8>()],
        1..200,
    );
    let mut runner = TestRunner::new(Config { cases: cases(), ..Config::default() });
    runner
        .run(&(bytes, 1u64..40), |(csv, chunk)| {
            let whole = run(&csv, &spec, 1 << 30);
            prop_assert_eq!(&run(&csv, &spec, chunk), &whole);
            prop_assert_eq!(&run(&csv, &spec, 1), &whole);
            prop_assert_eq!(&run_in_pieces(&csv, &spec, 1 << 30, 4), &whole);
            // Skip mode: bad rows are counted and sampled, never a different result.
            let whole = run(&csv, &skip, 1 << 30);
            prop_assert_eq!(&run(&csv, &skip, chunk), &whole);
            prop_assert_eq!(&run_in_pieces(&csv, &skip, 1 << 30, 3), &whole);
            prop_assert_eq!(&run_in_pieces(&csv, &skip, chunk, 2), &whole);
            prop_assert_eq!(&run(&csv, &skip, 1), &whole);
            let whole = run(&csv, &strict_skip, 1 << 30);
            prop_assert_eq!(&run(&csv, &strict_skip, chunk), &whole);
            prop_assert_eq!(&run_in_pieces(&csv, &strict_skip, chunk, 2), &whole);
            Ok(())
        })
        .unwrap();
}
