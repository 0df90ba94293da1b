//! Datasets: a folder of files is one job whose result is that of the
//! files' concatenation in name order, whatever the chunking, the order and
//! the duplicates of its tasks; a new version scans only what changed.

mod support;

use std::path::Path;
use std::sync::Arc;

use fanfold_engine::Spec;
use fanfold_local::{run_dataset, run_file, DirStore, MemoryJobStore, RunOptions};
use fanfold_pipeline::{contract, Config, Layout, ObjectStore, Pipeline, Status, Summary, Task};
use proptest::prelude::*;

type Queue = contract::QueueDispatcher;

fn catalogue() -> (Vec<u8>, Spec) {
    let csv = std::fs::read(support::fixture("catalogue.csv")).unwrap();
    let spec = Spec::from_json(&support::read(support::fixture("catalogue.spec.json"))).unwrap();
    (csv, spec)
}

/// `csv` (a header line, then rows) cut into files at the given row
/// numbers, each with the header.
fn cut_files(csv: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let text = std::str::from_utf8(csv).unwrap();
    let (header, body) = text.split_once('\n').unwrap();
    let header = header.trim_start_matches('\u{feff}');
    // Records, not lines: a quoted field may hold a newline.
    let mut rows: Vec<String> = Vec::new();
    let mut open = false;
    for line in body.split_inclusive('\n') {
        if open {
            rows.last_mut().unwrap().push_str(line);
        } else {
            rows.push(line.to_string());
        }
        open ^= line.matches('"').count() % 2 == 1;
    }
    let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(rows.len())).collect();
    bounds.sort_unstable();
    bounds.insert(0, 0);
    bounds.push(rows.len());
    bounds.windows(2).map(|w| format!("{header}\n{}", rows[w[0]..w[1]].concat()).into_bytes()).collect()
}

fn opts(chunk: u64, workers: usize, range_bytes: u64, out: &Path) -> RunOptions {
    RunOptions {
        chunk_size: chunk,
        even_waves: false,
        workers,
        out_dir: Some(out.to_path_buf()),
        range_bytes,
        scan_threads: 1,
        keep_scans: None,
    }
}

/// Random rows over few keys, with quoted fields, for `first` and `last`.
fn rows_strategy() -> impl Strategy<Value = Vec<(u8, i32, u8)>> {
    prop::collection::vec((0u8..12, -50i32..50, 0u8..200), 1..300)
}

fn csv_of(rows: &[(u8, i32, u8)]) -> Vec<u8> {
    let mut s = String::from("k,v,w\n");
    for (i, (k, v, w)) in rows.iter().enumerate() {
        if i % 7 == 0 {
            s.push_str(&format!("\"key {k}, quoted\",{v},\"w\n{w}\"\n"));
        } else {
            s.push_str(&format!("key {k},{v},w{w}-{i}\n"));
        }
    }
    s.into_bytes()
}

const SPEC: &str = r#"{"group_by":["k"],"aggregates":[{"op":"sum","column":"v"},{"op":"count"},
    {"op":"first","column":"w"},{"op":"last","column":"w"},{"op":"min","column":"v"},{"op":"max","column":"w"},
    {"op":"mean","column":"v"}]}"#;

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any cut into files, any chunking, workers and ranges: the rows of
    /// the concatenated file, in the same order (`first` and `last` follow
    /// file-name order, then position).
    #[test]
    fn a_folder_gives_the_result_of_its_files_concatenated(
        rows in rows_strategy(),
        cuts in prop::collection::vec(0usize..300, 0..5),
        chunk in 1u64..400,
        workers in 1usize..4,
        range_bytes in prop::sample::select(vec![16u64, 200, 1 << 30]),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let csv = csv_of(&rows);
        let folder = dir.path().join("in");
        std::fs::create_dir(&folder).unwrap();
        for (i, f) in cut_files(&csv, &cuts).iter().enumerate() {
            std::fs::write(folder.join(format!("part{i:02}.csv")), f).unwrap();
        }
        std::fs::write(dir.path().join("all.csv"), &csv).unwrap();
        let spec = Spec::from_json(SPEC).unwrap();
        let o = run_dataset(&folder, None, &spec, &opts(chunk, workers, range_bytes, &dir.path().join("ds")), |_| {})
            .unwrap();
        prop_assert_eq!(o.job.status, Status::Done, "{:?}", o.job.error);
        let whole = run_file(&dir.path().join("all.csv"), &spec, &opts(1 << 30, 1, 1 << 30, &dir.path().join("one")), |_| {})
            .unwrap();
        prop_assert_eq!(whole.job.status, Status::Done);
        let want = support::parts(&whole.out_dir);
        let got = support::parts(&o.out_dir);
        prop_assert_eq!(support::rows_of(&got), support::rows_of(&want));
        prop_assert_eq!(&got[0].1[..got[0].1.find('\n').unwrap()], &want[0].1[..want[0].1.find('\n').unwrap()]);
        let s = o.summary.unwrap();
        let d = s.dataset.unwrap();
        prop_assert_eq!(d.files as usize, cuts.len() + 1);
        prop_assert_eq!(d.files_scanned, d.files);
        prop_assert_eq!(s.rows_read, rows.len() as u64);
        prop_assert!(!o.out_dir.join("_fanfold").exists(), "the run's scans go with it");
    }
}

#[test]
fn a_pattern_picks_files_and_the_rest_of_the_folder_is_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, spec) = catalogue();
    let files = cut_files(&csv, &[3, 6]);
    let folder = dir.path().join("in");
    std::fs::create_dir_all(folder.join("sub")).unwrap();
    std::fs::write(folder.join("a.csv"), &files[0]).unwrap();
    std::fs::write(folder.join("b.csv"), &files[1]).unwrap();
    std::fs::write(folder.join("c.txt.csv"), &files[2]).unwrap();
    // Not part of the dataset: a subfolder, `_` and `.` names, other extensions.
    std::fs::write(folder.join("sub/x.csv"), b"other,header\n1,2\n").unwrap();
    std::fs::write(folder.join("_spec.json"), b"{}").unwrap();
    std::fs::write(folder.join("_old.csv"), b"other,header\n1,2\n").unwrap();
    std::fs::write(folder.join(".hidden.csv"), b"other,header\n1,2\n").unwrap();
    std::fs::write(folder.join("notes.txt"), b"hello").unwrap();
    let all = run_dataset(&folder, None, &spec, &opts(7, 2, 1 << 30, &dir.path().join("all")), |_| {}).unwrap();
    assert_eq!(all.job.status, Status::Done, "{:?}", all.job.error);
    assert_eq!(
        support::read(all.out_dir.join("part-00000-00000.csv")),
        support::read(support::fixture("catalogue.expected.csv"))
    );
    assert_eq!(all.summary.unwrap().dataset.unwrap().files, 3);

    let pattern = glob::Pattern::new("[ab].csv").unwrap();
    let ab = run_dataset(&folder, Some(&pattern), &spec, &opts(7, 2, 1 << 30, &dir.path().join("ab")), |_| {}).unwrap();
    assert_eq!(ab.job.status, Status::Done);
    assert_eq!(ab.summary.unwrap().dataset.unwrap().files, 2);
    assert_ne!(ab.job.id, all.job.id, "another file list is another job");

    let none = glob::Pattern::new("*.tsv").unwrap();
    let e = run_dataset(&folder, Some(&none), &spec, &opts(7, 2, 1 << 30, &dir.path().join("none")), |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds no files matching *.tsv"), "{e}");
    // The output directory may not be the folder: its parts would be the next run's input.
    let e = run_dataset(&folder, None, &spec, &opts(7, 2, 1 << 30, &folder), |_| {}).unwrap_err().to_string();
    assert!(e.contains("is also the output directory"), "{e}");
}

#[test]
fn headers_must_match_by_name_and_bad_rows_name_their_file() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::default();
    let folder = dir.path().join("in");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("1.csv"), "Song,Date,Number of Plays\nA,2020-01-01,5\nB,2020-01-01,1\n").unwrap();
    // The same columns in another order: the same job as if they were in order.
    std::fs::write(folder.join("2.csv"), "Date,Number of Plays,Song\n2020-01-01,7,A\n").unwrap();
    let o = run_dataset(&folder, None, &spec, &opts(5, 2, 1 << 30, &dir.path().join("o1")), |_| {}).unwrap();
    assert_eq!(o.job.status, Status::Done, "{:?}", o.job.error);
    assert_eq!(
        support::read(o.out_dir.join("part-00000-00000.csv")),
        "Song,Date,Total Number of Plays for Date\nA,2020-01-01,12\nB,2020-01-01,1\n"
    );

    std::fs::write(folder.join("3.csv"), "Song,Day,Number of Plays\nA,2020-01-01,5\n").unwrap();
    let o = run_dataset(&folder, None, &spec, &opts(5, 2, 1 << 30, &dir.path().join("o2")), |_| {}).unwrap();
    assert_eq!(o.job.status, Status::Failed);
    let e = o.job.error.unwrap();
    assert!(e.rejected);
    assert!(e.message.contains("3.csv: ") && e.message.contains("Day"), "{}", e.message);

    std::fs::write(folder.join("3.csv"), "Song,Date,Number of Plays\nA,2020-01-01,5\nC,2020-01-02,lots\n").unwrap();
    let o = run_dataset(&folder, None, &spec, &opts(5, 2, 1 << 30, &dir.path().join("o3")), |_| {}).unwrap();
    assert_eq!(o.job.status, Status::Failed);
    let e = o.job.error.unwrap();
    assert!(e.message.starts_with("3.csv: ") && e.message.contains("line 3"), "{}", e.message);
    assert_eq!(e.line, Some(3));
}

/// A pipeline over `dir` whose tasks the test runs by hand, from a queue.
fn queued(dir: &Path) -> (Pipeline, Arc<Queue>, Arc<DirStore>) {
    let store = Arc::new(DirStore::new(dir).unwrap());
    let queue = Arc::new(Queue::default());
    let config = Config { chunk_size: 9, inline_limit: 64, bucket: "b".into(), ..Config::default() };
    let p = Pipeline::new(
        store.clone(),
        store.clone(),
        Arc::new(MemoryJobStore::new()),
        queue.clone(),
        Layout::default(),
        config,
    );
    (p, queue, store)
}

/// Runs every queued task, in a shuffled order, each `copies` times; a task
/// that fails fails its job, as in the worker pool.
fn drain_shuffled(p: &Pipeline, queue: &Queue, seed: u64, copies: usize) {
    support::drain_shuffled(p, queue, seed, copies, support::OnTaskError::FailJob);
}

fn result_of(p: &Pipeline, store: &DirStore, id: &str) -> (String, Summary) {
    let job = p.jobs.get_job(id).unwrap().unwrap();
    assert_eq!(job.status, Status::Done, "{:?}", job.error);
    let outputs = job.outputs.unwrap();
    let text: String = outputs
        .parts
        .iter()
        .map(|part| {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut store.get_range(&part.key, 0, None).unwrap(), &mut s).unwrap();
            s
        })
        .collect();
    let mut summary = String::new();
    std::io::Read::read_to_string(&mut store.get_range(&outputs.summary, 0, None).unwrap(), &mut summary).unwrap();
    (text, serde_json::from_str(&summary).unwrap())
}

#[test]
fn versions_scan_only_new_and_changed_files_under_shuffled_duplicate_tasks() {
    let (csv, spec) = catalogue();
    let files = cut_files(&csv, &[2, 4, 7]);
    let want = support::read(support::fixture("catalogue.expected.csv"));
    for seed in 1..8u64 {
        let dir = tempfile::tempdir().unwrap();
        let (p, queue, store) = queued(dir.path());
        let put = |name: &str, bytes: &[u8]| store.put(&format!("incoming/ds/{name}"), bytes).unwrap();
        put("a.csv", &files[0]);
        put("b.csv", &files[1]);
        put("c.csv", &files[2]);
        let copies = 1 + seed as usize % 3;

        // Version 1: three files, every one scanned.
        let v1 = p.submit_dataset("incoming/ds", &spec, |_| true).unwrap();
        assert!(!p.submit_dataset("incoming/ds", &spec, |_| true).unwrap().new, "the same files: the same job");
        drain_shuffled(&p, &queue, seed, copies);
        let (_, s1) = result_of(&p, &store, &v1.id);
        let d = s1.dataset.unwrap();
        assert_eq!((d.files, d.files_scanned, d.files_reused), (3, 3, 0));

        // Version 2: a fourth file. Only it is scanned; the result is the whole file's.
        put("d.csv", &files[3]);
        let v2 = p.submit_dataset("incoming/ds", &spec, |_| true).unwrap();
        assert!(v2.new && v2.id != v1.id);
        drain_shuffled(&p, &queue, seed + 100, copies);
        let (text, s2) = result_of(&p, &store, &v2.id);
        assert_eq!(text, want, "seed {seed}");
        let d = s2.dataset.unwrap();
        assert_eq!((d.files, d.files_scanned, d.files_reused), (4, 1, 3), "seed {seed}");
        assert_eq!(d.bytes_scanned, files[3].len() as u64);

        // Version 3: b.csv replaced by its rows twice, c.csv deleted.
        let scan_of = |name: &str| {
            let key = format!("incoming/ds/{name}");
            p.scan_id(&key, &store.head(&key).unwrap().etag, &spec)
        };
        let (old_b, old_c) = (scan_of("b.csv"), scan_of("c.csv"));
        assert!(!store.list(&format!("_fanfold/scans/{old_c}/")).unwrap().is_empty(), "kept while used");
        let mut twice = files[1].clone();
        let rows = std::str::from_utf8(&files[1]).unwrap().split_once('\n').unwrap().1.to_string();
        twice.extend_from_slice(rows.as_bytes());
        put("b.csv", &twice);
        store.delete("incoming/ds/c.csv").unwrap();
        let v3 = p.submit_dataset("incoming/ds", &spec, |_| true).unwrap();
        drain_shuffled(&p, &queue, seed + 200, copies);
        let (text, s3) = result_of(&p, &store, &v3.id);
        let d = s3.dataset.unwrap();
        assert_eq!((d.files, d.files_scanned, d.files_reused), (3, 1, 2), "seed {seed}");
        // The same as one job over the concatenation of what is there now.
        let mut concat = files[0].clone();
        for f in [&twice, &files[3]] {
            concat.extend_from_slice(std::str::from_utf8(f).unwrap().split_once('\n').unwrap().1.as_bytes());
        }
        store.put("other/all.csv", &concat).unwrap();
        let one = p.submit("other/all.csv", &spec).unwrap();
        drain_shuffled(&p, &queue, seed, 1);
        assert_eq!(text, result_of(&p, &store, &one.id).0, "seed {seed}");

        // Retention: the scans of the replaced and the removed file are gone.
        for gone in [&old_b, &old_c] {
            assert!(store.list(&format!("_fanfold/scans/{gone}/")).unwrap().is_empty(), "seed {seed}: {gone} kept");
        }
        let kept_a = p.scan_id("incoming/ds/a.csv", &store.head("incoming/ds/a.csv").unwrap().etag, &spec);
        assert!(!store.list(&format!("_fanfold/scans/{kept_a}/")).unwrap().is_empty());

        // c.csv back as it was: its old scan is gone, so it is scanned
        // again (under the id's next generation), and the result is right.
        put("c.csv", &files[2]);
        let v4 = p.submit_dataset("incoming/ds", &spec, |_| true).unwrap();
        drain_shuffled(&p, &queue, seed + 300, copies);
        let (text, s4) = result_of(&p, &store, &v4.id);
        let d = s4.dataset.unwrap();
        assert_eq!((d.files, d.files_scanned, d.files_reused), (4, 1, 3), "seed {seed}");
        let mut concat = files[0].clone();
        for f in [&twice, &files[2], &files[3]] {
            concat.extend_from_slice(std::str::from_utf8(f).unwrap().split_once('\n').unwrap().1.as_bytes());
        }
        store.put("other/all4.csv", &concat).unwrap();
        let one = p.submit("other/all4.csv", &spec).unwrap();
        drain_shuffled(&p, &queue, seed, 1);
        assert_eq!(text, result_of(&p, &store, &one.id).0, "seed {seed}");
    }
}

#[test]
fn scans_older_than_the_keep_time_are_not_used_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, queue, store) = queued(dir.path());
    p.config.scan_keep_ms = Some(0);
    let csv = std::fs::read(support::fixture("bmat-example.csv")).unwrap();
    store.put("incoming/ds/1.csv", &csv).unwrap();
    let v1 = p.submit_dataset("incoming/ds", &Spec::default(), |_| true).unwrap();
    drain_shuffled(&p, &queue, 1, 1);
    result_of(&p, &store, &v1.id);
    std::thread::sleep(std::time::Duration::from_millis(5));
    store.put("incoming/ds/2.csv", &csv).unwrap();
    let v2 = p.submit_dataset("incoming/ds", &Spec::default(), |_| true).unwrap();
    drain_shuffled(&p, &queue, 1, 1);
    let d = result_of(&p, &store, &v2.id).1.dataset.unwrap();
    assert_eq!((d.files, d.files_scanned), (2, 2), "the expired scan of 1.csv is not reused");

    // A kept scan whose objects are gone (the lifecycle rule, or by hand)
    // is not used either: the same file (same ETag) is scanned under the
    // next generation of its id, and the result is whole.
    p.config.scan_keep_ms = None;
    let v2_scans: Vec<String> = store
        .list("_fanfold/scans/")
        .unwrap()
        .iter()
        .filter_map(|m| m.key.split('/').nth(2).map(str::to_string))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(v2_scans.len(), 2, "{v2_scans:?}");
    store.delete_prefix(&format!("_fanfold/scans/{}/", v2_scans[0])).unwrap();
    store.put("incoming/ds/3.csv", &csv).unwrap();
    let v3 = p.submit_dataset("incoming/ds", &Spec::default(), |_| true).unwrap();
    drain_shuffled(&p, &queue, 2, 2);
    let (text, s3) = result_of(&p, &store, &v3.id);
    let d = s3.dataset.unwrap();
    assert_eq!((d.files, d.files_scanned, d.files_reused), (3, 2, 1));
    assert_eq!(s3.rows_read, 21, "three files of 7 rows: {text}");
}

#[test]
fn a_dataset_with_no_files_is_rejected_and_a_scan_lost_mid_way_is_swept() {
    let dir = tempfile::tempdir().unwrap();
    let (p, queue, store) = queued(dir.path());
    let none = p.submit_dataset("incoming/empty", &Spec::default(), |_| true).unwrap();
    let job = p.jobs.get_job(&none.id).unwrap().unwrap();
    assert_eq!(job.status, Status::Failed);
    assert!(job.error.unwrap().message.contains("no CSV files"));

    let csv = std::fs::read(support::fixture("bmat-example.csv")).unwrap();
    store.put("incoming/ds/1.csv", &csv).unwrap();
    store.put("incoming/ds/2.csv", &csv).unwrap();
    let v = p.submit_dataset("incoming/ds", &Spec::default(), |_| true).unwrap();
    // Every task of the second file's scan is lost.
    let scan2 = p.scan_id("incoming/ds/2.csv", &store.head("incoming/ds/2.csv").unwrap().etag, &Spec::default());
    while let Some(t) = queue.pop() {
        if !matches!(&t, Task::Chunk { job, .. } if *job == scan2) {
            p.run_task(&t, "w").unwrap();
        }
    }
    assert_eq!(p.jobs.get_job(&v.id).unwrap().unwrap().status, Status::Running);
    let policy = fanfold_pipeline::SweepPolicy { stale_ms: 1000, max_sweeps: 2, ..Default::default() };
    // The version waits for its scan for as long as the scan is repaired
    // (it is not failed for want of progress of its own).
    let mut now = fanfold_pipeline::now_ms();
    for _ in 0..4 {
        now += 5000;
        let did = p.sweep(now, &policy).unwrap();
        assert!(!did.iter().any(|l| l.contains("failed")), "{did:?}");
        drain_shuffled(&p, &queue, 3, 1);
    }
    let (text, _) = result_of(&p, &store, &v.id);
    let doubled: String = support::read(support::fixture("bmat-example.expected.csv"))
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                format!("{l}\n")
            } else {
                let (k, n) = l.rsplit_once(',').unwrap();
                format!("{k},{}\n", n.parse::<u64>().unwrap() * 2)
            }
        })
        .collect();
    assert_eq!(text, doubled);
}

#[test]
fn a_file_replaced_while_its_version_runs_ends_in_a_right_newest_version() {
    let (csv, spec) = catalogue();
    let files = cut_files(&csv, &[4]);
    let want = support::read(support::fixture("catalogue.expected.csv"));
    for cut_after in [1usize, 3, 6, 12] {
        let dir = tempfile::tempdir().unwrap();
        let (p, queue, store) = queued(dir.path());
        store.put("incoming/ds/a.csv", &files[0]).unwrap();
        store.put("incoming/ds/b.csv", b"sku,name,price,qty\nzz-9,Old,1.00,1\n").unwrap();
        let v1 = p.submit_dataset("incoming/ds", &spec, |_| true).unwrap();
        for _ in 0..cut_after {
            if let Some(t) = queue.pop() {
                if let Err(e) = p.run_task(&t, "w") {
                    p.fail_task(t.job(), &e, 1).unwrap();
                }
            }
        }
        // b.csv replaced mid-version; the folder's next version follows.
        std::thread::sleep(std::time::Duration::from_millis(5));
        store.put("incoming/ds/b.csv", &files[1]).unwrap();
        let v2 = p.submit_dataset("incoming/ds", &spec, |_| true).unwrap();
        assert_ne!(v1.id, v2.id);
        drain_shuffled(&p, &queue, cut_after as u64, 2);
        let (text, _) = result_of(&p, &store, &v2.id);
        assert_eq!(text, want, "after {cut_after} tasks");
        // The first version ended one way or the other (the bytes it read
        // changed under it, or it had read them all), never as the latest.
        let first = p.jobs.get_job(&v1.id).unwrap().unwrap();
        assert!(first.status.is_final(), "{:?}", first.status);
        let mut latest = String::new();
        std::io::Read::read_to_string(&mut store.get_range("results/ds/latest.json", 0, None).unwrap(), &mut latest)
            .unwrap();
        assert!(latest.contains(&v2.id), "after {cut_after} tasks: {latest}");
    }
}

#[test]
fn with_union_a_column_a_file_lacks_is_empty_in_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("in");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("1.csv"), "Song,Date,Number of Plays\nA,2020-01-01,5\nB,2020-01-02,1\n").unwrap();
    // No Date, and an extra column.
    std::fs::write(folder.join("2.csv"), "Number of Plays,Song,Label\n7,A,x\n2,C,y\n").unwrap();
    let spec = Spec::from_json(
        r#"{"union": true, "group_by": ["Song", "Date"], "aggregates": [{"op": "sum", "column": "Number of Plays"},
            {"op": "count", "column": "Date", "as": "dated"}, {"op": "first", "column": "Date", "as": "first_date"}]}"#,
    )
    .unwrap();
    let o = run_dataset(&folder, None, &spec, &opts(7, 2, 1 << 30, &dir.path().join("o")), |_| {}).unwrap();
    assert_eq!(o.job.status, Status::Done, "{:?}", o.job.error);
    assert_eq!(
        support::read(o.out_dir.join("part-00000-00000.csv")),
        "Song,Date,sum(Number of Plays),dated,first_date\nA,,7,0,\nA,2020-01-01,5,1,2020-01-01\nB,2020-01-02,1,1,2020-01-02\nC,,2,0,\n"
    );
    // The first file may be the one that lacks it: the header is the spec's name.
    std::fs::rename(folder.join("1.csv"), folder.join("3.csv")).unwrap();
    let o = run_dataset(&folder, None, &spec, &opts(7, 2, 1 << 30, &dir.path().join("o2")), |_| {}).unwrap();
    assert_eq!(o.job.status, Status::Done, "{:?}", o.job.error);
    let text = support::read(o.out_dir.join("part-00000-00000.csv"));
    assert!(text.starts_with("Song,Date,sum(Number of Plays),dated,first_date\n"), "{text}");
    // Without union, the same folder is an error naming the file.
    let strict = Spec::from_json(r#"{"group_by": ["Song", "Date"]}"#).unwrap();
    let o = run_dataset(&folder, None, &strict, &opts(7, 2, 1 << 30, &dir.path().join("o3")), |_| {}).unwrap();
    assert_eq!(o.job.status, Status::Failed);
    assert!(o.job.error.unwrap().message.contains("2.csv"));
}

#[test]
fn a_version_that_failed_for_a_reason_of_its_own_runs_again_when_submitted_again() {
    let dir = tempfile::tempdir().unwrap();
    let (p, queue, store) = queued(dir.path());
    let csv = std::fs::read(support::fixture("bmat-example.csv")).unwrap();
    store.put("incoming/ds/1.csv", &csv).unwrap();
    store.put("incoming/ds/2.csv", &csv).unwrap();
    let v = p.submit_dataset("incoming/ds", &Spec::default(), |_| true).unwrap();
    // An outage fails it half way.
    if let Some(t) = queue.pop() {
        p.run_task(&t, "w").unwrap();
    }
    p.fail_task(&v.id, &fanfold_pipeline::PipelineError::Invalid("an outage".into()), 3).unwrap();
    drain_shuffled(&p, &queue, 1, 1);
    assert_eq!(p.jobs.get_job(&v.id).unwrap().unwrap().status, Status::Failed);
    // The same folder again (a repeated event, or POST /jobs): the same
    // version, started again, to the whole result.
    let again = p.submit_dataset("incoming/ds", &Spec::default(), |_| true).unwrap();
    assert_eq!(again.id, v.id);
    drain_shuffled(&p, &queue, 2, 2);
    let (_, s) = result_of(&p, &store, &v.id);
    assert_eq!(s.rows_read, 14);
    // A version whose folder changed since is not retried.
    store.put("incoming/ds/3.csv", &csv).unwrap();
    let v3 = p.submit_dataset("incoming/ds", &Spec::default(), |_| true).unwrap();
    assert!(p.cancel(&v3.id).unwrap());
    store.delete("incoming/ds/3.csv").unwrap();
    assert!(matches!(p.retry(&v3.id).unwrap(), fanfold_pipeline::Retried::ObjectChanged));
}

#[test]
fn kept_scans_make_the_next_run_over_a_folder_scan_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, spec) = catalogue();
    let files = cut_files(&csv, &[3, 6]);
    let folder = dir.path().join("in");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("a.csv"), &files[0]).unwrap();
    std::fs::write(folder.join("b.csv"), &files[1]).unwrap();
    let keep = dir.path().join("kept");
    let run = |out: &str| {
        let mut o = opts(7, 2, 1 << 30, &dir.path().join(out));
        o.keep_scans = Some(keep.clone());
        let r = run_dataset(&folder, None, &spec, &o, |_| {}).unwrap();
        assert_eq!(r.job.status, Status::Done, "{:?}", r.job.error);
        let d = r.summary.unwrap().dataset.unwrap();
        (support::read(r.out_dir.join("part-00000-00000.csv")), (d.files, d.files_scanned, d.files_reused))
    };
    let (_, first) = run("o1");
    assert_eq!(first, (2, 2, 0));
    std::fs::write(folder.join("c.csv"), &files[2]).unwrap();
    let (text, second) = run("o2");
    assert_eq!(second, (3, 1, 2), "only the new file is scanned");
    assert_eq!(text, support::read(support::fixture("catalogue.expected.csv")));
    // The same folder again, into the same directory: nothing scanned, the same bytes.
    let (again, third) = run("o2");
    assert_eq!(third, (3, 0, 3));
    assert_eq!(again, text);
}
