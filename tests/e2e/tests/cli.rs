//! The `fanfold` binary, as a user runs it.

mod common;

use common::*;
use serde_json::{json, Value};

fn run_ok(args: &[&str], cwd: &std::path::Path) -> String {
    let out = fanfold(args, cwd);
    assert!(out.status.success(), "fanfold {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_bmat_example_gives_the_expected_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("bmat-example.csv");
    let stdout = run_ok(&["run", input.to_str().unwrap(), "--out", "out"], dir.path());
    assert_eq!(read(dir.path().join("out/part-00000-00000.csv")), read(fixture("bmat-example.expected.csv")));
    assert!(stdout.contains("DONE"), "{stdout}");
    assert!(stdout.contains("part-00000-00000.csv"), "{stdout}");
    // Nothing but the results is left in the output directory.
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [".fanfold-out", "athena.sql", "manifest.json", "part-00000-00000.csv", "summary.json"]);
    let ddl = read(dir.path().join("out/athena.sql"));
    assert!(ddl.contains("`song` string,\n  `date` string,\n  `total_number_of_plays_for_date` bigint\n)"), "{ddl}");
    assert!(ddl.contains("LOCATION 'file://"), "{ddl}");

    let manifest: Value = serde_json::from_str(&read(dir.path().join("out/manifest.json"))).unwrap();
    let uris = manifest["fileLocations"][0]["URIs"].as_array().unwrap();
    assert_eq!(uris.len(), 1);
    assert!(uris[0].as_str().unwrap().ends_with("/out/part-00000-00000.csv"));
    assert_eq!(manifest["globalUploadSettings"]["format"], "CSV");
    assert_eq!(manifest["globalUploadSettings"]["delimiter"], ",");
    assert_eq!(manifest["globalUploadSettings"]["containsHeader"], "true");

    let summary: Value = serde_json::from_str(&read(dir.path().join("out/summary.json"))).unwrap();
    assert_eq!(summary["rows_read"], 7);
    assert_eq!(summary["groups"], 4);
    assert_eq!(summary["input_bytes"], 199);
    assert_eq!(summary["job_id"].as_str().unwrap().len(), 32);
    for phase in ["split", "chunks", "merge", "total"] {
        assert!(summary["timings_ms"][phase].is_u64(), "{phase}");
    }
}

#[test]
fn default_output_dir_is_named_after_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("bmat-example.csv");
    run_ok(&["run", input.to_str().unwrap()], dir.path());
    let jobs: Vec<_> = std::fs::read_dir(dir.path().join("fanfold-out")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].file_name().unwrap().len(), 32);
    assert_eq!(read(jobs[0].join("part-00000-00000.csv")), read(fixture("bmat-example.expected.csv")));
}

#[test]
fn every_chunk_size_and_worker_count_gives_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("catalogue.csv");
    let spec = fixture("catalogue.spec.json");
    let want = read(fixture("catalogue.expected.csv"));
    for (chunk, workers) in [("1", "1"), ("1", "3"), ("2", "2"), ("7", "2"), ("16", "4"), ("64MiB", "1")] {
        let out = format!("out-{chunk}-{workers}");
        run_ok(
            &[
                "run",
                input.to_str().unwrap(),
                "--spec",
                spec.to_str().unwrap(),
                "--out",
                &out,
                "--chunk-size",
                chunk,
                "--workers",
                workers,
            ],
            dir.path(),
        );
        assert_eq!(read(dir.path().join(&out).join("part-00000-00000.csv")), want, "chunk {chunk} workers {workers}");
    }
}

#[test]
fn parts_are_capped_including_their_header() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("in.csv");
    let out = fanfold(
        &["gen", "--profile", "bmat", "--size", "200kB", "-o", csv.to_str().unwrap(), "--seed", "7"],
        dir.path(),
    );
    assert!(out.status.success());
    std::fs::write(dir.path().join("spec.json"), r#"{"output":{"max_file_bytes":4096}}"#).unwrap();
    run_ok(&["run", "in.csv", "--spec", "spec.json", "--out", "capped", "--chunk-size", "10kB"], dir.path());
    run_ok(&["run", "in.csv", "--out", "whole"], dir.path());
    let summary: Value = serde_json::from_str(&read(dir.path().join("capped/summary.json"))).unwrap();
    let files = summary["output_files"].as_array().unwrap();
    assert!(files.len() > 10, "{}", files.len());
    let header = "Song,Date,Total Number of Plays for Date\n";
    let mut joined = String::from(header);
    for (i, f) in files.iter().enumerate() {
        let name = format!("part-00000-{i:05}.csv");
        assert_eq!(f["key"], name.as_str());
        let text = read(dir.path().join("capped").join(&name));
        assert!(text.len() <= 4096, "{name} has {} bytes", text.len());
        assert_eq!(f["bytes"], text.len());
        assert!(text.starts_with(header));
        joined += &text[header.len()..];
    }
    assert_eq!(joined, read(dir.path().join("whole/part-00000-00000.csv")));
    let manifest: Value = serde_json::from_str(&read(dir.path().join("capped/manifest.json"))).unwrap();
    assert_eq!(manifest["fileLocations"][0]["URIs"].as_array().unwrap().len(), files.len());
}

#[test]
fn a_row_bigger_than_the_cap_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("spec.json"), r#"{"output":{"max_file_bytes":50}}"#).unwrap();
    let input = fixture("bmat-example.csv");
    let out = fanfold(&["run", input.to_str().unwrap(), "--spec", "spec.json", "--out", "o"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("more than output.max_file_bytes = 50"), "{err}");
}

/// (file contents, extra spec, expected message)
fn bad_inputs() -> Vec<(&'static [u8], &'static str, &'static str)> {
    vec![
        (
            b"Song,Date,Number of Plays\nUmbrella,2020-01-02,200\nUmbrella,2020-01-01,patata\n",
            "{}",
            "line 3 (byte 70): column \"Number of Plays\": \"patata\" is not a number",
        ),
        (b"Song,Date,Number of Plays\nUmbrella,2020-01-02\n", "{}", "line 2 (byte 26): expected 3 fields, found 2"),
        (b"Song,Date,Number of Plays\nUmbrella,2020-01-02,1,2\n", "{}", "line 2 (byte 26): expected 3 fields, found 4"),
        (
            b"Song,Date,Number of Plays\nUmbr\xe9lla,2020-01-02,1\n",
            "{}",
            "line 2 (byte 26): column \"Song\": \"Umbr\u{fffd}lla\" is not valid UTF-8",
        ),
        (
            b"Song,Date,Number of Plays\nUmbrella,2020-01-02,1\n\"Umbrella,2020-01-02,1\n",
            "{}",
            "line 3 (byte 48): column \"Song\": quoted field is never closed before the end of the file",
        ),
        (
            b"Song,Day,Number of Plays\nUmbrella,2020-01-02,1\n",
            "{}",
            "group_by[1]: column \"Date\" is not in the header",
        ),
        (b"", "{}", "the input is empty"),
        // A quote inside an unquoted field (RFC 4180: malformed) names its line and the quote's byte,
        // instead of swallowing the rows up to the next quote.
        (
            b"Song,Date,Number of Plays\nok,2020-01-01,1\nab\"c,2020-01-01,7\nxyz,2021-01-01,3\nq\"r,2021-01-01,4\n",
            "{}",
            "line 3 (byte 44): column \"Song\": has a quote inside an unquoted field or after a closing quote",
        ),
        (
            b"Song,Date,Number of Plays\n\"ab\"x,2020-01-01,1\n",
            "{}",
            "line 2 (byte 29): column \"Song\": has a quote inside an unquoted field or after a closing quote",
        ),
        (
            b"Song,Date,Number of Plays\n\"a,b\",2020-01-01,1\"2\n",
            "{}",
            "line 2 (byte 44): column \"Number of Plays\": has a quote inside an unquoted field",
        ),
        // Two 38-digit sums overflow i128: in one chunk, or only when partials merge.
        (b"Song,Date,Number of Plays\na,b,99999999999999999999999999999999999999\na,b,99999999999999999999999999999999999999\n", "{}",
         "\"Total Number of Plays for Date\": a sum overflows the 128-bit integer range"),
        (
            b"a,b\n1,2\n",
            r#"{"group_by":["a"],"aggregates":[{"op":"median","column":"b"}]}"#,
            "invalid spec: aggregates[0].op: unknown op",
        ),
    ]
}

#[test]
fn bad_input_fails_with_line_byte_column_and_value() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (csv, spec, want)) in bad_inputs().into_iter().enumerate() {
        let input = dir.path().join(format!("bad{i}.csv"));
        std::fs::write(&input, csv).unwrap();
        std::fs::write(dir.path().join("spec.json"), spec).unwrap();
        for chunk in ["1", "5", "64MiB"] {
            let out = fanfold(
                &["run", input.to_str().unwrap(), "--spec", "spec.json", "--out", "o", "--chunk-size", chunk],
                dir.path(),
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "case {i} succeeded");
            assert_eq!(
                out.status.code(),
                Some(1),
                "case {i}: rejected input exits 1: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(err.contains(want), "case {i} chunk {chunk}: {err}");
            assert_eq!(err.lines().count(), 1, "one message, no log noise: {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
}

#[test]
fn skip_mode_counts_and_samples_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("Song,Date,Number of Plays\n");
    for i in 0..30 {
        csv += &format!("s{},2020-01-01,{}\n", i % 3, if i % 2 == 0 { "1".to_string() } else { format!("x{i}") });
    }
    std::fs::write(dir.path().join("in.csv"), &csv).unwrap();
    std::fs::write(dir.path().join("spec.json"), r#"{"on_bad_row":"skip"}"#).unwrap();
    for chunk in ["3", "1MB"] {
        let stdout = run_ok(&["run", "in.csv", "--spec", "spec.json", "--out", "o", "--chunk-size", chunk], dir.path());
        assert!(stdout.contains("15 skipped"), "{stdout}");
        let summary: Value = serde_json::from_str(&read(dir.path().join("o/summary.json"))).unwrap();
        assert_eq!(summary["rows_skipped"], 15);
        assert_eq!(summary["rows_read"], 30);
        let samples = summary["bad_row_samples"].as_array().unwrap();
        assert_eq!(samples.len(), 10);
        assert_eq!(samples[0]["line"], 3);
        assert_eq!(samples[0]["column"], "Number of Plays");
        assert_eq!(samples[0]["value"], "x1");
        assert_eq!(samples[0]["reason"], "is not a number");
        assert_eq!(samples[9]["line"], 21);
        assert_eq!(
            read(dir.path().join("o/part-00000-00000.csv")),
            "Song,Date,Total Number of Plays for Date\ns0,2020-01-01,5\ns1,2020-01-01,5\ns2,2020-01-01,5\n"
        );
    }
}

#[test]
fn missing_file_and_directory_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = fanfold(&["run", "nope.csv"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.csv: No such file or directory"));
    // A folder is a dataset: one without CSV files is a clear error.
    let out = fanfold(&["run", "."], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(".: holds no CSV files"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = fanfold(&["run", "./*.csv"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no files matching *.csv"));
    let out = fanfold(&["run", "x.csv", "--chunk-size", "0"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    // A FIFO is refused before it is opened (opening one without a writer blocks forever).
    assert!(std::process::Command::new("mkfifo").arg(dir.path().join("f")).status().unwrap().success());
    let out = fanfold(&["run", "f"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a regular file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A spec that is a device (or huge) is refused, not read until memory runs out.
    let input = fixture("bmat-example.csv");
    let out = fanfold(&["run", input.to_str().unwrap(), "--spec", "/dev/zero"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a regular file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.path().join("big.json"), vec![b' '; (1 << 20) + 10]).unwrap();
    let out = fanfold(&["run", input.to_str().unwrap(), "--spec", "big.json"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("larger than 1 MiB"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn no_progress_output_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("bmat-example.csv");
    let out = fanfold(&["run", input.to_str().unwrap(), "--out", "o"], dir.path());
    assert!(out.status.success());
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `fanfold run … 2>&1 | head`: the reader goes away while the run still
/// logs and reports. The run must finish its job and exit, not panic (a
/// logging write that failed used to panic the worker threads, and the run
/// waited for ever).
#[test]
fn a_closed_stdout_and_stderr_neither_hang_nor_fail_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = gen_bmat(dir.path(), "in.csv", "2MB", 3);
    let args = ["run", input.to_str().unwrap(), "--chunk-size", "16KB", "--workers", "2"];
    run_ok(&[&args[..], &["--out", "ref"]].concat(), dir.path());
    let mut child = std::process::Command::new(fanfold_bin())
        .args(args)
        .args(["--out", "closed"])
        .env("RUST_LOG", "info")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > std::time::Duration::from_secs(300) {
            let _ = child.kill();
            panic!("fanfold run hung with its output closed");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert_eq!(rows_of(&parts(&dir.path().join("closed"))), rows_of(&parts(&dir.path().join("ref"))));
}

#[test]
fn gen_is_reproducible_and_matches_the_bmat_shape() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a.csv", "b.csv"] {
        assert!(fanfold(&["gen", "--profile", "zipf", "--size", "50kB", "-o", name, "--seed", "3"], dir.path())
            .status
            .success());
    }
    assert_eq!(read(dir.path().join("a.csv")), read(dir.path().join("b.csv")));
    assert!(fanfold(&["gen", "--profile", "bmat", "--size", "20kB", "-o", "c.csv"], dir.path()).status.success());
    let text = read(dir.path().join("c.csv"));
    assert!(text.starts_with("Song,Date,Number of Plays\n"));
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        assert!(f[0].len() == 4 && f[0].bytes().all(|b| b.is_ascii_lowercase()), "{line}");
        assert!(f[1] >= "1994-08-08", "{line}");
        let plays: u32 = f[2].parse().unwrap();
        assert!((1..=100_000).contains(&plays));
    }
}

#[test]
fn a_progress_bar_on_a_terminal() {
    // `script` (util-linux) runs the command on a pseudo-terminal.
    let dir = tempfile::tempdir().unwrap();
    assert!(fanfold(&["gen", "--profile", "zipf", "--size", "3MB", "-o", "in.csv"], dir.path()).status.success());
    let cmd = format!("{} run in.csv --out o --chunk-size 100kB --workers 1", fanfold_bin().display());
    let out = std::process::Command::new("script").args(["-qec", &cmd, "/dev/null"]).current_dir(dir.path()).output();
    let out = out.expect("`script` (util-linux) runs the binary on a terminal");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("chunks ") && text.contains("rows/s"), "no progress bar on a terminal: {text}");
    assert!(text.contains("DONE"), "{text}");
}

/// Runs `fanfold args` under `ulimit -n 1024` (Lambda's descriptor limit),
/// sampling its peak resident set (VmHWM) until it exits. Returns (ok, stderr, peak bytes).
fn run_limited(args: &[&str], cwd: &std::path::Path) -> (bool, String, u64) {
    let mut script = String::from("ulimit -n 1024 && exec \"$0\"");
    for i in 1..=args.len() {
        script += &format!(" \"${i}\"");
    }
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .arg(fanfold_bin())
        .args(args)
        .current_dir(cwd)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let started = std::time::Instant::now();
    let status = loop {
        if started.elapsed() > std::time::Duration::from_secs(300) {
            let _ = child.kill();
            panic!("fanfold {args:?} still running after 300 s: a hang");
        }
        if let Ok(s) = std::fs::read_to_string(&status_file) {
            if let Some(kb) = s.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
                let kb: u64 = kb.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                peak = peak.max(kb * 1024);
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    (status.success(), err, peak)
}

#[test]
fn twenty_thousand_chunks_under_lambdas_descriptor_limit_give_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let csv = gen_bmat(dir.path(), "in.csv", "2MB", 11);
    let csv = csv.to_str().unwrap();
    // Small ranges: several reducers, each merging slices of 20,000 partials in levels of K.
    let (ok, err, base_peak) = run_limited(&["run", csv, "--out", "default", "--range-bytes", "256kB"], dir.path());
    assert!(ok, "{err}");
    let (ok, err, peak) =
        run_limited(&["run", csv, "--out", "tiny", "--range-bytes", "256kB", "--chunk-size", "100"], dir.path());
    assert!(ok, "{err}");
    let summary: Value = serde_json::from_str(&read(dir.path().join("tiny/summary.json"))).unwrap();
    assert!(summary["chunks"].as_u64().unwrap() >= 20_000, "{}", summary["chunks"]);
    assert!(summary["ranges"].as_u64().unwrap() >= 4, "{}", summary["ranges"]);
    let want = parts(&dir.path().join("default"));
    assert!(want.len() >= 4);
    assert_eq!(parts(&dir.path().join("tiny")), want, "20,000 chunks give the same files as the default chunking");
    // The bound: the engine's and the merge's memory do not grow with the
    // chunk count; the in-memory job store keeps a small record per chunk
    // (well under 2 KiB each).
    let bound = base_peak + 20_000 * 2048 + (64 << 20);
    eprintln!("peak RSS: default chunking {base_peak} B, 20,000 chunks {peak} B (bound {bound} B)");
    assert!(peak > 0 && peak < bound, "peak RSS {peak} B, bound {bound} B");
}

#[test]
fn the_output_directory_never_loses_the_input_or_a_users_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    std::fs::create_dir(&d).unwrap();
    let csv = read(fixture("bmat-example.csv"));
    // The input named like a result, in the output directory: refused, kept.
    std::fs::write(d.join("part-00000.csv"), &csv).unwrap();
    let out = fanfold(&["run", "part-00000.csv", "--out", "."], &d);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("would be replaced by the results"), "{err}");
    assert_eq!(read(d.join("part-00000.csv")), csv, "the input is untouched");
    // Files fanfold did not write are named, not removed.
    std::fs::write(dir.path().join("in.csv"), &csv).unwrap();
    let out = fanfold(&["run", "in.csv", "--out", "d"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds part-00000.csv, which fanfold did not write"), "{err}");
    assert_eq!(read(d.join("part-00000.csv")), csv);
    // An input elsewhere, an output directory of its own: results replace the earlier run's only.
    run_ok(&["run", "in.csv", "--out", "o"], dir.path());
    std::fs::write(dir.path().join("o/notes.txt"), "mine").unwrap();
    std::fs::write(dir.path().join("o/part-00000-00009.csv"), "stale").unwrap();
    run_ok(&["run", "in.csv", "--out", "o"], dir.path());
    assert_eq!(read(dir.path().join("o/notes.txt")), "mine");
    assert!(!dir.path().join("o/part-00000-00009.csv").exists(), "an earlier run's part is replaced");
    assert_eq!(read(dir.path().join("o/part-00000-00000.csv")), read(fixture("bmat-example.expected.csv")));
    // The input in the output directory under another name is fine.
    std::fs::copy(fixture("bmat-example.csv"), dir.path().join("o/plays.csv")).unwrap();
    run_ok(&["run", "plays.csv", "--out", "."], &dir.path().join("o"));
    assert_eq!(read(dir.path().join("o/plays.csv")), csv);
}

/// Issue 11: in skip mode (or with `csv.lenient_quotes`) a stray quote is a
/// literal character, as Python's csv module reads it; skip mode with RFC
/// 4180 quoting skips the record and says how far its quotes ran.
#[test]
fn a_stray_quote_in_skip_mode_is_a_literal_or_skips_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let csv = "Song,Date,Number of Plays\nok,2020-01-01,1\nab\"c,2020-01-01,7\nxyz,2021-01-01,3\nq\"r,2021-01-01,4\nok,2020-01-01,2\n";
    std::fs::write(dir.path().join("in.csv"), csv).unwrap();
    std::fs::write(dir.path().join("skip.json"), r#"{"on_bad_row":"skip"}"#).unwrap();
    std::fs::write(dir.path().join("lenient.json"), r#"{"csv":{"lenient_quotes":true}}"#).unwrap();
    std::fs::write(dir.path().join("strict.json"), r#"{"on_bad_row":"skip","csv":{"lenient_quotes":false}}"#).unwrap();
    for chunk in ["1", "3", "7", "64MiB"] {
        for spec in ["skip.json", "lenient.json"] {
            run_ok(&["run", "in.csv", "--spec", spec, "--out", "o", "--chunk-size", chunk], dir.path());
            let summary: Value = serde_json::from_str(&read(dir.path().join("o/summary.json"))).unwrap();
            assert_eq!((summary["rows_read"].as_u64(), summary["rows_skipped"].as_u64()), (Some(5), Some(0)));
            assert_eq!(
                read(dir.path().join("o/part-00000-00000.csv")),
                "Song,Date,Total Number of Plays for Date\n\"ab\"\"c\",2020-01-01,7\nok,2020-01-01,3\n\"q\"\"r\",2021-01-01,4\nxyz,2021-01-01,3\n",
                "{spec}, chunk {chunk}: the quotes are literal characters"
            );
        }
        run_ok(&["run", "in.csv", "--spec", "strict.json", "--out", "o", "--chunk-size", chunk], dir.path());
        let summary: Value = serde_json::from_str(&read(dir.path().join("o/summary.json"))).unwrap();
        assert_eq!(summary["rows_skipped"], 1, "chunk {chunk}");
        let sample = &summary["bad_row_samples"][0];
        assert_eq!(sample["line"], 3);
        assert_eq!(sample["byte"], 44);
        assert_eq!(sample["record"], 2, "chunk {chunk}: the second data record");
        assert_eq!(sample["kind"], json!({"misplaced_quote": {"lines": 2}}));
        assert_eq!(sample["column"], "Song");
        let reason = sample["reason"].as_str().unwrap();
        assert!(reason.contains("the record runs over the next 2 lines too"), "{reason}");
        assert_eq!(
            read(dir.path().join("o/part-00000-00000.csv")),
            "Song,Date,Total Number of Plays for Date\nok,2020-01-01,3\n",
            "chunk {chunk}: no key with a quote or a newline in it"
        );
    }
}

#[test]
fn a_header_longer_than_128_kib_is_refused_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    // Lone-CR line endings: the whole file is one line.
    let mut csv = String::from("Song,Date,Number of Plays\r");
    while csv.len() < 400_000 {
        csv += "Umbrella,2020-01-01,1\r";
    }
    std::fs::write(dir.path().join("cr.csv"), &csv).unwrap();
    let out = fanfold(&["run", "cr.csv", "--out", "o"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("longer than 128 KiB") && err.contains("lone CRs"), "{err}");
    assert!(err.len() < 1000, "{} bytes of message", err.len());
    // A short one whose names do not match: the message lists them, cut short.
    std::fs::write(dir.path().join("cr2.csv"), &csv[..60_000]).unwrap();
    let out = fanfold(&["run", "cr2.csv", "--out", "o"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not in the header") && err.contains('…'), "{err}");
    assert!(err.len() < 1200, "{} bytes of message", err.len());
}

#[test]
fn the_input_replaced_during_a_run_is_never_mixed_into_one_result() {
    let dir = tempfile::tempdir().unwrap();
    // Few groups: the run's time is the scan's, so the swap lands in it.
    let a = dir.path().join("a.csv");
    let out = fanfold(&["gen", "--profile", "zipf", "--size", "16MB", "-o", "a.csv", "--seed", "3"], dir.path());
    assert!(out.status.success());
    let original = std::fs::read(&a).unwrap();
    let other: Vec<u8> =
        original.iter().map(|&b| if b.is_ascii_digit() { b'0' + (b - b'0' + 1) % 10 } else { b }).collect();
    std::fs::write(dir.path().join("b.csv"), &other).unwrap();
    let t = std::time::Instant::now();
    run_ok(&["run", "a.csv", "--out", "ref-a", "--chunk-size", "64KB", "--workers", "1"], dir.path());
    let whole = t.elapsed();
    run_ok(&["run", "b.csv", "--out", "ref-b", "--chunk-size", "64KB", "--workers", "1"], dir.path());
    let child = std::process::Command::new(fanfold_bin())
        .args(["run", "a.csv", "--out", "mixed", "--chunk-size", "64KB", "--workers", "1"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(whole / 3);
    std::fs::rename(dir.path().join("b.csv"), &a).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        // Only if the run finished before the swap (a very busy machine).
        let got = parts(&dir.path().join("mixed"));
        assert_eq!(rows_of(&got), rows_of(&parts(&dir.path().join("ref-a"))), "one version, never a mix");
    } else {
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("a.csv changed after the job started"), "{err}");
        assert!(!dir.path().join("mixed/summary.json").exists());
    }
}

/// Seconds and peak bytes of `fanfold run FILE --chunk-size C`.
fn timed_run(file: &std::path::Path, chunk: &str, cwd: &std::path::Path) -> (f64, u64) {
    let t = std::time::Instant::now();
    let (ok, err, peak) = run_limited(&["run", file.to_str().unwrap(), "--out", "timed", "--chunk-size", chunk], cwd);
    assert!(ok, "{err}");
    (t.elapsed().as_secs_f64(), peak)
}

/// README promises chunk sizes down to 1 byte with work O(file + longest
/// record). Benchmark-style: four times the input at the same tiny chunk
/// size costs about four times the time and at most four times the memory,
/// never sixteen (measured as ratios in the same run). Before: every 1-byte
/// chunk read 256 KiB, and a long quoted field at 64-byte chunks hung (its
/// rescans were dropped while the plan held its lease).
#[test]
fn tiny_chunks_cost_linear_time_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    let big = gen_bmat(dir.path(), "big.csv", "300kB", 5);
    let text = std::fs::read(&big).unwrap();
    let cut = text[..text.len() / 4].iter().rposition(|&b| b == b'\n').unwrap() + 1;
    let small = dir.path().join("small.csv");
    std::fs::write(&small, &text[..cut]).unwrap();
    // One quoted field of 2 MB and of 8 MB, at 64-byte chunks.
    let field = |name: &str, n: usize| {
        let p = dir.path().join(name);
        let mut v = b"Song,Date,Number of Plays\n\"".to_vec();
        v.resize(v.len() + n, b'x');
        v.extend_from_slice(b"\",2020-01-01,1\nb,2020-01-02,2\n");
        std::fs::write(&p, v).unwrap();
        p
    };
    let (f_small, f_big) = (field("f2.csv", 2_000_000), field("f8.csv", 8_000_000));
    for (what, a, b, chunk) in [("rows", &small, &big, "1"), ("one field", &f_small, &f_big, "64")] {
        let (t1, m1) = timed_run(a, chunk, dir.path());
        let (t4, m4) = timed_run(b, chunk, dir.path());
        eprintln!("{what} at chunk size {chunk}: x1 {t1:.2} s {m1} B, x4 {t4:.2} s {m4} B");
        assert!(t4 / t1 < 8.0, "{what}: 4x the input took {:.1}x the time", t4 / t1);
        assert!((m4 as f64) / (m1 as f64) < 8.0, "{what}: 4x the input took {:.1}x the memory", m4 as f64 / m1 as f64);
    }
}

#[test]
fn a_folder_or_a_pattern_is_one_job_over_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("exports");
    std::fs::create_dir(&folder).unwrap();
    std::fs::copy(fixture("bmat-example.csv"), folder.join("2024.csv")).unwrap();
    std::fs::copy(fixture("bmat-example.csv"), folder.join("2025.csv")).unwrap();
    std::fs::write(folder.join("notes.txt"), "not data").unwrap();
    let out = fanfold(&["run", "exports", "--out", "o"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("files   2 (2 scanned"), "{stdout}");
    assert!(stdout.contains("14 rows read"), "{stdout}");
    let out = fanfold(&["run", "exports/2025*", "--out", "p"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("files   1 (1 scanned"));
    assert_eq!(read(dir.path().join("p/part-00000-00000.csv")), read(fixture("bmat-example.expected.csv")));
}

/// A dataset at scale: 200 files cut into 20,000 chunks, under Lambda's
/// descriptor limit, merged by several reducers: the rows of the same data
/// as one file.
#[test]
fn a_folder_of_two_hundred_files_in_twenty_thousand_chunks_gives_the_rows_of_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let csv = std::fs::read_to_string(gen_bmat(dir.path(), "all.csv", "4MB", 12)).unwrap();
    let (header, body) = csv.split_once('\n').unwrap();
    let rows: Vec<&str> = body.lines().collect();
    let folder = dir.path().join("files");
    std::fs::create_dir(&folder).unwrap();
    for (i, part) in rows.chunks(rows.len().div_ceil(200)).enumerate() {
        std::fs::write(folder.join(format!("f{i:03}.csv")), format!("{header}\n{}\n", part.join("\n"))).unwrap();
    }
    let (ok, err, peak) =
        run_limited(&["run", "files", "--out", "tiny", "--range-bytes", "256kB", "--chunk-size", "200"], dir.path());
    assert!(ok, "{err}");
    let summary: Value = serde_json::from_str(&read(dir.path().join("tiny/summary.json"))).unwrap();
    assert!(summary["chunks"].as_u64().unwrap() >= 20_000, "{}", summary["chunks"]);
    assert!(summary["ranges"].as_u64().unwrap() >= 4, "{}", summary["ranges"]);
    assert_eq!(summary["dataset"]["files"], 200);
    let (ok, err, _) = run_limited(&["run", "all.csv", "--out", "one"], dir.path());
    assert!(ok, "{err}");
    assert_eq!(rows_of(&parts(&dir.path().join("tiny"))), rows_of(&parts(&dir.path().join("one"))));
    eprintln!("peak RSS, 200 files in 20,000 chunks: {peak} B");
    assert!(peak < 512 << 20, "peak RSS {peak} B");
}
