//! Compressed inputs (gzip, zstd), told by their magic bytes: every member
//! and frame read, results byte-identical to the same file uncompressed,
//! and a corrupt or truncated stream a clear error with the compressed byte.

#[allow(dead_code)]
mod support;

use std::io::Write;
use std::path::Path;

use fanfold_engine::{Compression, Spec};
use fanfold_local::{run_file, RunOptions};
use fanfold_pipeline::Status;

/// A CSV with what makes chunk edges hard: quoted delimiters, quotes and
/// newlines, a BOM, CRLF rows, many groups.
fn csv() -> Vec<u8> {
    let mut s = String::from("\u{feff}Song,Date,Number of Plays\r\n");
    for i in 0..40_000u64 {
        let song = match i % 5 {
            0 => format!("\"Song, {}\"", i % 997),
            1 => format!("\"Say \"\"{}\"\"\"", i % 991),
            2 => format!("\"two\nlines {}\"", i % 983),
            _ => format!("song{}", (i * 7919) % 5003),
        };
        s += &format!("{song},2026-11-{:02},{}\r\n", 1 + i % 28, i % 113);
    }
    s.into_bytes()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// `data` cut at `cuts` (byte positions, anywhere: inside the header, a
/// quoted field, a CRLF) and each piece compressed on its own: what
/// `cat a.gz b.gz`, `bgzip` and `pzstd` make.
fn members(data: &[u8], cuts: &[usize], one: fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    for &c in cuts.iter().chain(std::iter::once(&data.len())) {
        out.extend(one(&data[at..c]));
        at = c;
    }
    out
}

struct Run {
    status: Status,
    error: String,
    parts: Vec<(String, String)>,
    summary: Option<fanfold_pipeline::Summary>,
}

fn run(dir: &Path, name: &str, bytes: &[u8], spec: &Spec, chunk: u64) -> Run {
    let input = dir.join(name);
    std::fs::write(&input, bytes).unwrap();
    let opts = RunOptions {
        chunk_size: chunk,
        workers: 3,
        even_waves: false,
        out_dir: Some(dir.join(format!("out-{name}-{chunk}"))),
        range_bytes: 64 << 10,
        scan_threads: 2,
        keep_scans: None,
    };
    let o = run_file(&input, spec, &opts, |_| {}).unwrap();
    let parts = if o.job.status == Status::Done { support::parts(&o.out_dir) } else { Vec::new() };
    let error = o.job.error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
    Run { status: o.job.status, error, parts, summary: o.summary }
}

fn plays() -> Spec {
    Spec::default()
}

#[test]
fn gzip_and_zstd_in_one_or_many_members_give_the_bytes_of_the_plain_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = csv();
    let plain = run(dir.path(), "plain.csv", &data, &plays(), 64 << 10);
    assert_eq!(plain.status, Status::Done, "{}", plain.error);
    assert!(plain.parts.len() > 1, "several key ranges, so that the part files say something");
    // Cuts inside the BOM, the header, a quoted newline, a CRLF, and an empty member.
    let header_end = data.iter().position(|&b| b == b'\n').unwrap();
    let quoted_nl = data.windows(5).position(|w| w == b"two\nl").unwrap() + 3;
    let crlf = data[header_end + 1..].iter().position(|&b| b == b'\r').unwrap() + header_end + 1;
    let mut cuts =
        vec![1, 10, header_end, quoted_nl, quoted_nl + 1, crlf + 1, crlf + 1, data.len() / 2, data.len() - 1];
    cuts.sort();
    let bgzf_like: Vec<usize> = (1..data.len() / 65_280).map(|i| i * 65_280).collect();
    let skippable = {
        // A skippable frame (as pzstd writes first), then the data.
        let mut v = vec![0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4];
        v.extend(zstd(&data));
        v
    };
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("one.csv.gz", gzip(&data)),
        ("many.csv.gz", members(&data, &cuts, gzip)),
        ("bgzf.gz", members(&data, &bgzf_like, gzip)),
        ("one.csv.zst", zstd(&data)),
        ("many.zst", members(&data, &cuts, zstd)),
        ("skippable.zst", skippable),
        // Named by its content, not its name.
        ("compressed.csv", gzip(&data)),
    ];
    for (name, bytes) in inputs {
        for chunk in [4096u64, 64 << 10] {
            let r = run(dir.path(), name, &bytes, &plays(), chunk);
            assert_eq!(r.status, Status::Done, "{name}: {}", r.error);
            assert_eq!(r.parts, plain.parts, "{name}, chunk size {chunk}: the same files as the plain file's");
            let s = r.summary.unwrap();
            assert_eq!(s.input_bytes, bytes.len() as u64, "{name}");
            assert_eq!(s.decoded_bytes, Some(data.len() as u64), "{name}");
            let want = if name.ends_with(".zst") { "zstd" } else { "gzip" };
            assert_eq!(s.compression.as_deref(), Some(want), "{name}");
            assert_eq!(s.rows_read, 40_000);
            assert!(s.partial_bytes > 0, "{name}: the partials' bytes are in the summary");
            assert_eq!(s.repairs, 0);
            // Cut in compressed chunks of a quarter of the size.
            assert!(s.chunks >= bytes.len() as u64 / (chunk / 4) / 2, "{name}: {} chunks", s.chunks);
        }
    }
}

#[test]
fn many_members_are_scanned_as_parallel_chunks_with_the_plain_files_rows_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = csv();
    let plain = run(dir.path(), "plain.csv", &data, &plays(), 64 << 10);
    // Members of about 3 KB decoded, cut anywhere (inside quotes, CRLFs).
    let cuts: Vec<usize> = (1..data.len() / 3001).map(|i| i * 3001).collect();
    for (name, bytes) in [("m.gz", members(&data, &cuts, gzip)), ("m.zst", members(&data, &cuts, zstd))] {
        for chunk in [1000u64, 4096, 10_000, 50_000] {
            let r = run(dir.path(), name, &bytes, &plays(), chunk);
            assert_eq!(r.status, Status::Done, "{name}, chunk size {chunk}: {}", r.error);
            assert_eq!(r.parts, plain.parts, "{name}, chunk size {chunk}");
            let s = r.summary.unwrap();
            assert!(s.chunks >= bytes.len() as u64 / (chunk / 4).max(1) / 2, "{name}: {} chunks", s.chunks);
            assert_eq!(s.decoded_bytes, Some(data.len() as u64));
        }
    }
    // Lenient quoting (skip mode follows every start state).
    let mut lenient = plays();
    lenient.csv.lenient_quotes = true;
    let plain = run(dir.path(), "plain-lenient.csv", &data, &lenient, 64 << 10);
    assert_eq!(plain.status, Status::Done, "{}", plain.error);
    let r = run(dir.path(), "lenient.gz", &members(&data, &cuts, gzip), &lenient, 4096);
    assert_eq!(r.status, Status::Done, "{}", r.error);
    assert_eq!(r.parts, plain.parts);
}

#[test]
fn a_bad_row_deep_in_many_members_names_the_plain_files_line_and_byte() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = b"Song,Date,Number of Plays\n".to_vec();
    for i in 0..20_000 {
        data.extend(format!("s{i},2026-01-01,{i}\n").as_bytes());
    }
    data.extend(b"bad,2026-01-01,many\n");
    data.extend(b"s,2026-01-01,1\n");
    let plain = run(dir.path(), "deep.csv", &data, &plays(), 64 << 10);
    assert_eq!(plain.status, Status::Failed);
    let cuts: Vec<usize> = (1..data.len() / 2000).map(|i| i * 2000 + 7).collect();
    for chunk in [1000u64, 8192] {
        let gz = run(dir.path(), "deep.gz", &members(&data, &cuts, gzip), &plays(), chunk);
        assert_eq!(gz.status, Status::Failed);
        assert_eq!(gz.error, plain.error.replace("deep.csv", "deep.gz"), "chunk size {chunk}");
    }
}

#[test]
fn a_gz_name_on_a_plain_file_is_read_as_plain_csv() {
    let dir = tempfile::tempdir().unwrap();
    let data = csv();
    let plain = run(dir.path(), "plain.csv", &data, &plays(), 64 << 10);
    let named = run(dir.path(), "plain.csv.gz", &data, &plays(), 64 << 10);
    assert_eq!(named.status, Status::Done, "{}", named.error);
    assert_eq!(named.parts, plain.parts);
    assert_eq!(named.summary.unwrap().compression, None);
}

#[test]
fn corrupt_and_truncated_streams_fail_the_job_naming_the_compressed_byte() {
    let dir = tempfile::tempdir().unwrap();
    let data = csv();
    let cuts: Vec<usize> = (1..data.len() / 5000).map(|i| i * 5000).collect();
    let many = [("m.gz", members(&data, &cuts, gzip)), ("m.zst", members(&data, &cuts, zstd))];
    for (name, good) in [("c.gz", gzip(&data)), ("c.zst", zstd(&data))].into_iter().chain(many) {
        let what = if name.ends_with(".gz") { "gzip" } else { "zstd" };
        // A byte in the middle of the compressed data changed.
        let mut corrupt = good.clone();
        let mid = corrupt.len() / 2;
        corrupt[mid] ^= 0x55;
        corrupt[mid + 1] ^= 0xaa;
        let r = run(dir.path(), &format!("corrupt-{name}"), &corrupt, &plays(), 4096);
        assert_eq!(r.status, Status::Failed, "{name}: a corrupt stream finished");
        assert!(r.error.contains(&format!("the {what} stream is")), "{name}: {}", r.error);
        let at: u64 = r.error.split("compressed byte ").nth(1).unwrap().split(':').next().unwrap().parse().unwrap();
        assert!(at <= good.len() as u64, "{name}: {}", r.error);
        // The end cut off.
        for cut in [10usize, good.len() / 3] {
            let truncated = &good[..good.len() - cut];
            let r = run(dir.path(), &format!("truncated-{cut}-{name}"), truncated, &plays(), 4096);
            assert_eq!(r.status, Status::Failed, "{name} cut by {cut}: a truncated stream finished");
            assert!(r.error.contains(&format!("the {what} stream is truncated")), "{name}: {}", r.error);
        }
    }
    // Only a header, compressed, truncated before its end.
    let r = run(dir.path(), "head.gz", &gzip(b"Song,Date,Number of Plays\n")[..12], &plays(), 64 << 10);
    assert_eq!(r.status, Status::Failed);
    assert!(r.error.contains("gzip stream is"), "{}", r.error);
}

#[test]
fn a_bad_row_in_a_compressed_file_names_its_line_and_decoded_byte() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = b"Song,Date,Number of Plays\n".to_vec();
    for i in 0..5000 {
        data.extend(format!("s{i},2026-01-01,{i}\n").as_bytes());
    }
    let at = data.len();
    data.extend(b"bad,2026-01-01,many\n");
    let plain = run(dir.path(), "bad.csv", &data, &plays(), 64 << 10);
    let gz = run(dir.path(), "bad.csv.gz", &members(&data, &[at - 3], gzip), &plays(), 64 << 10);
    assert_eq!(gz.status, Status::Failed);
    assert_eq!(gz.error, plain.error.replace("bad.csv", "bad.csv.gz"));
    assert!(gz.error.contains("line 5002"), "{}", gz.error);
}

#[test]
fn an_empty_compressed_file_and_a_header_only_one() {
    let dir = tempfile::tempdir().unwrap();
    let empty = run(dir.path(), "empty.gz", &gzip(b""), &plays(), 1024);
    assert_eq!(empty.status, Status::Failed);
    assert!(empty.error.contains("empty"), "{}", empty.error);
    let head_only = run(dir.path(), "head.zst", &zstd(b"Song,Date,Number of Plays\n"), &plays(), 1024);
    assert_eq!(head_only.status, Status::Done, "{}", head_only.error);
    assert_eq!(head_only.summary.unwrap().rows_read, 0);
}

/// Stored (uncompressed) deflate blocks carry the data's own bytes, so a
/// field that holds a whole gzip member puts a real member's magic inside
/// the outer stream: a chunk may take it for its first member. The plan's
/// member chain catches it and the chunk is scanned again from the true
/// member: the plain file's rows.
#[test]
fn a_gzip_member_inside_the_data_never_changes_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    // A member whose bytes hold no comma, quote, CR or newline.
    let inner = (0u32..)
        .map(|i| gzip(format!("x{i}").as_bytes()))
        .find(|m| !m.iter().any(|b| b",\"\r\n".contains(b)) && std::str::from_utf8(m).is_err())
        .unwrap();
    let mut data = b"Song,Date,Number of Plays,Blob\n".to_vec();
    for i in 0..20_000u32 {
        data.extend(format!("s{},2026-01-01,{i},", i % 97).as_bytes());
        data.extend(&inner);
        data.push(b'\n');
    }
    let plain = run(dir.path(), "blob.csv", &data, &plays(), 64 << 10);
    assert_eq!(plain.status, Status::Done, "{}", plain.error);
    let stored = |d: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
        e.write_all(d).unwrap();
        e.finish().unwrap()
    };
    let cuts: Vec<usize> = (1..data.len() / 40_000).map(|i| i * 40_000).collect();
    let bytes = members(&data, &cuts, stored);
    assert!(Compression::Gzip.member_starts(&bytes).count() > 1000, "the inner members are visible");
    for chunk in [4096u64, 64 << 10] {
        let r = run(dir.path(), "blob.gz", &bytes, &plays(), chunk);
        assert_eq!(r.status, Status::Done, "chunk size {chunk}: {}", r.error);
        assert_eq!(r.parts, plain.parts, "chunk size {chunk}");
        assert!(r.summary.unwrap().chunks_rerun > 0, "chunk size {chunk}: no false start was taken");
    }
}
