//! Any chunking gives the same result as one pass, and one pass agrees with
//! a naive reference parser written independently here.

use std::collections::BTreeMap;

mod common;

use common::{run, run_in_pieces, scan_chunk};
use fanfold_engine::*;
use proptest::prelude::*;

fn spec() -> Spec {
    Spec::from_json(
        r#"{"group_by":["k"],"aggregates":[
            {"op":"count","as":"n"},{"op":"sum","column":"v","as":"s"},
            {"op":"first","column":"t","as":"f"},{"op":"last","column":"t","as":"l"}]}"#,
    )
    .unwrap()
}

/// An independent, byte-at-a-time CSV reader: records of fields.
fn naive_records(csv: &[u8]) -> Vec<Vec<String>> {
    let csv = csv.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(csv);
    let mut out = Vec::new();
    let mut rec: Vec<String> = Vec::new();
    let mut field = Vec::new();
    let mut inq = false;
    let mut i = 0;
    let mut any = false;
    while i < csv.len() {
        let b = csv[i];
        if inq {
            if b == b'"' {
                if csv.get(i + 1) == Some(&b'"') {
                    field.push(b'"');
                    i += 1;
                } else {
                    inq = false;
                }
            } else {
                field.push(b);
            }
        } else if b == b'"' {
            inq = true;
            any = true;
        } else if b == b',' {
            rec.push(String::from_utf8(std::mem::take(&mut field)).unwrap());
            any = true;
        } else if b == b'\n' {
            if field.last() == Some(&b'\r') {
                field.pop();
            }
            if any || !field.is_empty() {
                rec.push(String::from_utf8(std::mem::take(&mut field)).unwrap());
                out.push(std::mem::take(&mut rec));
            }
            field.clear();
            any = false;
        } else {
            field.push(b);
        }
        i += 1;
    }
    if field.last() == Some(&b'\r') {
        field.pop();
    }
    if any || !field.is_empty() {
        rec.push(String::from_utf8(field).unwrap());
        out.push(rec);
    }
    out
}

fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn naive(csv: &[u8]) -> Vec<u8> {
    let recs = naive_records(csv);
    let mut groups: BTreeMap<String, (u64, i128, String, String)> = BTreeMap::new();
    for r in &recs[1..] {
        let e = groups.entry(r[0].clone()).or_insert((0, 0, r[2].clone(), String::new()));
        e.0 += 1;
        e.1 += r[1].parse::<i128>().unwrap();
        e.3 = r[2].clone();
    }
    let mut out = String::from("k,n,s,f,l\n");
    for (k, (n, s, f, l)) in groups {
        out += &format!("{},{n},{s},{},{}\n", quote(&k), quote(&f), quote(&l));
    }
    out.into_bytes()
}

fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ab]{1,2}",
        Just("a,b".to_string()),
        Just("\"q\"".to_string()),
        Just("line\nbreak".to_string()),
        Just("crlf\r\nin".to_string()),
        Just("é€".to_string()),
        Just(String::new()),
        // Records longer than the parser's 64-byte blocks.
        Just("long ".repeat(30)),
    ]
}

fn csv_file() -> impl Strategy<Value = Vec<u8>> {
    let row =
        (field(), -1_000_000_000_000_000_000i128..1_000_000_000_000_000_000i128, field(), any::<bool>(), any::<u8>());
    (proptest::collection::vec(row, 0..30), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(rows, bom, crlf, final_nl)| {
            let nl = if crlf { "\r\n" } else { "\n" };
            let mut s = String::new();
            if bom {
                s.push('\u{feff}');
            }
            s += "k,v,t";
            for (k, v, t, force_quote, extra) in rows {
                s += nl;
                if extra % 7 == 0 {
                    s += nl; // an empty line
                }
                let q = |x: &str| if force_quote { format!("\"{}\"", x.replace('"', "\"\"")) } else { quote(x) };
                s += &format!("{},{v},{}", q(&k), q(&t));
            }
            if final_nl {
                s += nl;
            }
            s.into_bytes()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn any_chunking_matches_the_naive_reference(csv in csv_file(), chunk in 1u64..64) {
        let want = naive(&csv);
        let whole = run(&csv, &spec(), csv.len() as u64 + 1).unwrap();
        prop_assert_eq!(String::from_utf8_lossy(&whole), String::from_utf8_lossy(&want));
        let chunked = run(&csv, &spec(), chunk).unwrap();
        prop_assert_eq!(String::from_utf8_lossy(&chunked), String::from_utf8_lossy(&want));
    }

    /// A chunk scanned in pieces on several threads (a worker with several
    /// vCPUs) reports exactly what the chunk scanned whole reports, and its
    /// partial is the same bytes, from any start state.
    #[test]
    fn a_chunk_in_pieces_is_the_chunk(csv in csv_file(), chunk in 1u64..64, pieces in 2usize..7) {
        let mut skip = spec();
        skip.on_bad_row = OnBadRow::Skip;
        let mut lenient = skip.clone();
        lenient.csv.lenient_quotes = true;
        for spec in [spec(), skip, lenient] {
            let head = read_head(&csv, csv.len() as u64, &spec.csv).unwrap().unwrap();
            let compiled = head.compile(&spec).unwrap();
            for range in plan_chunks(head.data_start, csv.len() as u64, chunk) {
                // Wrong states too: their bad rows and samples must match as well.
                let known = QuoteState::ALL.map(StartState::Known);
                for state in std::iter::once(StartState::Guess).chain(known) {
                    let whole = scan_slice(&compiled, &head, range, &csv, state);
                    let cut = scan_chunk(&compiled, &head, range, &csv, state, pieces);
                    prop_assert_eq!(&cut.0, &whole.0, "chunk {:?} from {:?}", range, state);
                    prop_assert!(cut.1 == whole.1, "chunk {:?} from {:?}: partials differ", range, state);
                }
            }
        }
        let spec = spec();
        let want = naive(&csv);
        let got = run_in_pieces(&csv, &spec, chunk, pieces).unwrap();
        prop_assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
    }
}

#[test]
fn the_bmat_example() {
    let csv = b"Song,Date,Number of Plays\nUmbrella,2020-01-02,200\nUmbrella,2020-01-01,100\nIn The End,2020-01-01,500\nUmbrella,2020-01-01,50\nIn The End,2020-01-01,1000\nUmbrella,2020-01-02,50\nIn The End,2020-01-02,500\n";
    for chunk in 1..=csv.len() as u64 {
        assert_eq!(
            String::from_utf8(run(csv, &Spec::default(), chunk).unwrap()).unwrap(),
            "Song,Date,Total Number of Plays for Date\nIn The End,2020-01-01,1500\nIn The End,2020-01-02,500\nUmbrella,2020-01-01,150\nUmbrella,2020-01-02,250\n"
        );
    }
}

#[test]
fn strict_errors_name_line_byte_column_and_value() {
    let csv = b"Song,Date,Number of Plays\nUmbrella,2020-01-02,200\nUmbrella,2020-01-01,patata\n";
    for chunk in 1..=csv.len() as u64 {
        for pieces in [1, 2, 3, 5] {
            let e = run_in_pieces(csv, &Spec::default(), chunk, pieces).unwrap_err();
            assert_eq!(e, "line 3 (byte 70): column \"Number of Plays\": \"patata\" is not a number");
        }
    }
}

#[test]
fn other_bad_input_is_named() {
    let cases: [(&[u8], &str); 4] = [
        (b"Song,Date,Number of Plays\na,b\n", "line 2 (byte 26): expected 3 fields, found 2"),
        (b"Song,Date,Number of Plays\n\xff,b,1\n", "line 2 (byte 26): column \"Song\": \"\u{fffd}\" is not valid UTF-8"),
        (b"Song,Date,Number of Plays\na,b,1\n\"x,y,1\n", "line 3 (byte 32): column \"Song\": quoted field is never closed before the end of the file (from its quote to the end: 1 line, 7 bytes)"),
        (b"Song,Date,Number of Plays\na,b,99999999999999999999999999999999999999\na,b,99999999999999999999999999999999999999\n", "\"Total Number of Plays for Date\": a sum overflows the 128-bit integer range (beyond ±1.7e38)"),
    ];
    for (csv, want) in cases {
        for chunk in 1..=csv.len() as u64 {
            for pieces in [1, 2, 3] {
                let got = run_in_pieces(csv, &Spec::default(), chunk, pieces).unwrap_err();
                assert_eq!(got, want, "chunk {chunk}, {pieces} pieces");
            }
        }
    }
}

/// Issue 11's stray quotes: RFC 4180 (fail mode's default) names the
/// quote; lenient quotes (skip mode's default, or `csv.lenient_quotes`)
/// read it as a literal character, as Python's csv module does, at every
/// chunk size and number of pieces. Also the csv-spectrum file that has
/// such quotes unquoted (`37°36'37.8"N`).
#[test]
fn stray_quotes_are_an_error_or_literal_characters() {
    let csv = b"Song,Date,Number of Plays\nab\"c,2020-01-01,7\nxyz,2021-01-01,3\nq\"r,2021-01-01,4\n\"s\"t,2021-01-01,1\n37\xc2\xb036'37.8\"N,2021-01-01,2\n";
    let strict = Spec::default();
    let e = run(csv, &strict, 1 << 20).unwrap_err();
    assert!(e.starts_with("line 2 (byte 28): column \"Song\": has a quote inside an unquoted field"), "{e}");
    let want = "Song,Date,Total Number of Plays for Date\n\"37\u{b0}36'37.8\"\"N\",2021-01-01,2\n\"ab\"\"c\",2020-01-01,7\n\"q\"\"r\",2021-01-01,4\nst,2021-01-01,1\nxyz,2021-01-01,3\n";
    let skip = Spec::from_json(r#"{"on_bad_row":"skip"}"#).unwrap();
    let lenient = Spec::from_json(r#"{"csv":{"lenient_quotes":true}}"#).unwrap();
    assert!(skip.csv.lenient_quotes && lenient.on_bad_row == OnBadRow::Fail);
    for spec in [&skip, &lenient] {
        for chunk in 1..=csv.len() as u64 {
            for pieces in [1, 2, 3] {
                let got = run_in_pieces(csv, spec, chunk, pieces).unwrap();
                assert_eq!(String::from_utf8_lossy(&got), want, "chunk {chunk}, {pieces} pieces");
            }
        }
    }
    // Skip mode can still ask for RFC 4180: the rows are skipped, not misread.
    let skip_strict = Spec::from_json(r#"{"on_bad_row":"skip","csv":{"lenient_quotes":false}}"#).unwrap();
    let got = String::from_utf8(run(csv, &skip_strict, 7).unwrap()).unwrap();
    assert!(!got.contains("ab") && !got.contains("xyz\n\"q"), "{got}");
}

/// Enough rows per chunk to build the partition router, with key shapes
/// that stress it: sorted input, a long shared prefix, one hot key, keys
/// shorter than the prefix, bytes 0 and 1.
#[test]
fn large_chunks_with_awkward_key_distributions() {
    let spec = Spec::from_json(r#"{"group_by":["k"],"aggregates":[{"op":"count","as":"n"},{"op":"sum","column":"v","as":"s"},{"op":"last","column":"v","as":"l"}]}"#).unwrap();
    let mut x = 12345u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let shapes: Vec<Box<dyn Fn(usize, u64) -> String>> = vec![
        Box::new(|_, r| format!("k{}", r % 50_000)),
        Box::new(|i, _| format!("sorted-{i:08}")),
        Box::new(|_, r| format!("song-000000000000{}", r % 3000)),
        Box::new(|_, r| if r % 10 < 9 { "hot".to_string() } else { format!("cold{}", r % 100) }),
        // Some rows larger than a partition's write-combining buffer.
        Box::new(|_, r| if r % 100 == 0 { format!("{}{}", "w".repeat(1500), r % 7) } else { format!("k{}", r % 500) }),
        Box::new(|_, r| match r % 4 {
            0 => "s".into(),
            1 => "".into(),
            2 => "s\u{1}x".into(),
            _ => format!("s{}", r % 7),
        }),
    ];
    for (n, shape) in shapes.iter().enumerate() {
        let mut csv = String::from("k,v\n");
        let mut want: BTreeMap<Vec<u8>, (u64, i128, String)> = BTreeMap::new();
        for i in 0..40_000 {
            let r = next();
            let k = shape(i, r);
            let v = (r % 1000) as i128 - 500;
            csv += &format!("{k},{v}\n");
            let e = want.entry(k.clone().into_bytes()).or_insert((0, 0, String::new()));
            e.0 += 1;
            e.1 += v;
            e.2 = v.to_string();
        }
        let mut expect = String::from("k,n,s,l\n");
        for (k, (c, s, l)) in &want {
            expect += &format!("{},{c},{s},{l}\n", String::from_utf8_lossy(k));
        }
        for chunk in [csv.len() as u64, 200_000, 77_777] {
            let got = run(csv.as_bytes(), &spec, chunk).unwrap();
            assert_eq!(String::from_utf8(got).unwrap(), expect, "shape {n} chunk {chunk}");
        }
        // Pieces big enough that each builds its own partition router.
        let got = run_in_pieces(csv.as_bytes(), &spec, csv.len() as u64, 3).unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), expect, "shape {n} in 3 pieces");
    }
}
