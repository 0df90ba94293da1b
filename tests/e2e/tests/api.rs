//! The jobs API through `fanfold serve`: every route and status against the
//! checked-in OpenAPI document, cancellation, dropped files, restarts, load.

mod common;
mod serve;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{fanfold, fixture, gen_bmat, read};
use serde_json::{json, Value};
use serve::{request, split_url, Server};

const TOKEN: &str = "test-token-0123";
const LONG: Duration = Duration::from_secs(120);

/// What `fanfold run` writes for `file` (the reference).
fn reference(file: &Path, work: &Path) -> String {
    let out_dir = work.join(format!("ref-{}", file.file_name().unwrap().to_str().unwrap()));
    let out = fanfold(&["run", file.to_str().unwrap(), "--out", out_dir.to_str().unwrap()], work);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    read(out_dir.join("part-00000-00000.csv"))
}

/// Records every (method, documented path, status) the test saw.
#[derive(Default)]
struct Seen(BTreeSet<(String, String, u16)>);

impl Seen {
    fn note(&mut self, method: &str, path: &str, r: &serve::Resp) -> Value {
        self.0.insert((method.to_lowercase(), path.to_string(), r.status));
        if r.status >= 400 {
            // One error shape everywhere.
            let v = r.json();
            let msg = v["message"].as_str().unwrap_or_else(|| panic!("no message in {v}"));
            assert_eq!(v["error"]["message"].as_str(), Some(msg), "{v}");
            assert!(v["error"]["code"].is_string(), "{v}");
            assert!(!r.text().contains("/tmp/") && !r.text().contains("panicked"), "leaks internals: {v}");
            return v;
        }
        if r.header("content-type").is_some_and(|c| c.contains("json")) {
            r.json()
        } else {
            Value::Null
        }
    }
}

fn documented() -> (Value, BTreeSet<(String, String, u16)>) {
    let doc: Value = serde_json::from_str(fanfold_api::OPENAPI).unwrap();
    let mut set = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            for status in op["responses"].as_object().unwrap().keys() {
                set.insert((method.clone(), path.clone(), status.parse().unwrap()));
            }
        }
    }
    (doc, set)
}

#[test]
fn every_route_and_status_of_the_openapi_document() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let srv = Server::start(&data, TOKEN, &["--chunk-size", "256KiB", "--workers", "1"]);
    let mut seen = Seen::default();
    let s = &srv;

    // the page and the document, without a token
    let r = request(&s.addr, "GET", "/", None, None);
    assert!(r.text().contains("fanfold jobs"));
    seen.note("get", "/", &r);
    let r = request(&s.addr, "GET", "/openapi.json", None, None);
    assert_eq!(seen.note("get", "/openapi.json", &r), serde_json::from_str::<Value>(fanfold_api::OPENAPI).unwrap());

    // 401 on every authenticated route, with a missing or a wrong token
    let id0 = "0".repeat(32);
    for (m, path, doc) in [
        ("POST", "/jobs".to_string(), "/jobs"),
        ("GET", "/jobs".to_string(), "/jobs"),
        ("GET", format!("/jobs/{id0}"), "/jobs/{id}"),
        ("DELETE", format!("/jobs/{id0}"), "/jobs/{id}"),
        ("GET", format!("/jobs/{id0}/preview"), "/jobs/{id}/preview"),
        ("POST", format!("/jobs/{id0}/retry"), "/jobs/{id}/retry"),
        ("GET", format!("/jobs/{id0}/events"), "/jobs/{id}/events"),
        ("GET", "/datasets/plays-ds".to_string(), "/datasets/{dir}"),
        ("POST", "/uploads".to_string(), "/uploads"),
    ] {
        let r = request(&s.addr, m, &path, None, Some(b"{}"));
        assert_eq!(r.status, 401, "{m} {path}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        seen.note(m, doc, &r);
        let r = request(&s.addr, m, &path, Some("test-token-0124"), Some(b"{}"));
        assert_eq!(r.status, 401, "a wrong token: {m} {path}");
    }

    // uploads: a signed PUT link under incoming/
    let r = s.call("POST", "/uploads", Some(&json!({"filename": "plays.csv"})));
    assert_eq!(r.status, 201);
    let up = seen.note("post", "/uploads", &r);
    assert_eq!(up["key"], "incoming/plays.csv");
    assert_eq!(up["method"], "PUT");
    for bad in ["../x.csv", "/abs.csv", "a//b.csv", "", "a\u{0}b"] {
        let r = s.call("POST", "/uploads", Some(&json!({ "filename": bad })));
        assert_eq!(r.status, 400, "{bad:?}");
        seen.note("post", "/uploads", &r);
    }
    let (host, path) = split_url(up["url"].as_str().unwrap());
    let r = request(&host, "PUT", &path, None, Some(&std::fs::read(fixture("bmat-example.csv")).unwrap()));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(seen.note("put", "/files/{key}", &r)["bytes"], 199);
    let tampered = path.replace("plays.csv", "other.csv");
    let r = request(&host, "PUT", &tampered, None, Some(b"x"));
    assert_eq!(r.status, 403, "a link signs its key");
    seen.note("put", "/files/{key}", &r);
    assert!(!data.join("incoming/other.csv").exists());

    // POST /jobs: 201, then 409 with the same id; 404 unknown source; 400 bad spec
    let r = s.call("POST", "/jobs", Some(&json!({"source": "incoming/plays.csv"})));
    let id = match r.status {
        201 => seen.note("post", "/jobs", &r)["id"].as_str().unwrap().to_string(),
        // the watcher may have been first
        409 => seen.note("post", "/jobs", &r)["id"].as_str().unwrap().to_string(),
        other => panic!("{other}: {}", r.text()),
    };
    let r = s.call("POST", "/jobs", Some(&json!({"source": "s3://local/incoming/plays.csv"})));
    assert_eq!(r.status, 409);
    assert_eq!(seen.note("post", "/jobs", &r)["id"], id.as_str());
    let done = s.wait(&id, LONG);
    assert_eq!(done.status, 200, "{}", done.text());
    let v = seen.note("get", "/jobs/{id}", &done);
    assert_eq!(v["status"], "DONE");
    assert_eq!(v["stats"]["rows_read"], 7);
    assert_eq!(v["stats"]["source"], "incoming/plays.csv");
    let file = &v["output_files"][0];
    assert_eq!(
        (file["rows"].as_u64(), file["key"].as_str()),
        (Some(4), Some(&*format!("results/{id}/data/part-00000-00000.csv")))
    );
    let (host, path) = split_url(file["url"].as_str().unwrap());
    let r = request(&host, "GET", &path, None, None);
    assert_eq!(r.text(), read(fixture("bmat-example.expected.csv")));
    seen.note("get", "/files/{key}", &r);
    let r = request(&host, "GET", &path.replace("sig=", "sig=0"), None, None);
    assert_eq!(r.status, 403);
    seen.note("get", "/files/{key}", &r);
    let (_, mpath) = split_url(v["manifest"]["url"].as_str().unwrap());
    assert!(request(&host, "GET", &mpath, None, None).text().contains("fileLocations"));
    let r = s.get(&format!("/jobs/{id}/preview"));
    let p = seen.note("get", "/jobs/{id}/preview", &r);
    assert_eq!(p["header"], json!(["Song", "Date", "Total Number of Plays for Date"]));
    assert_eq!(p["rows"][0], json!(["In The End", "2020-01-01", "1500"]));
    assert_eq!(p["top_groups"][0], json!({"key": ["In The End", "2020-01-01"], "value": "1500"}));
    let r = s.call("DELETE", &format!("/jobs/{id}"), None);
    assert_eq!(r.status, 409, "a finished job cannot be cancelled");
    assert_eq!(seen.note("delete", "/jobs/{id}", &r)["status"], "DONE");
    // the event stream of a job that ended: its entry once, as `end`, and the stream ends
    let r = s.get(&format!("/jobs/{id}/events"));
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type").is_some_and(|c| c.starts_with("text/event-stream")),
        "{:?}",
        r.header("content-type")
    );
    seen.note("get", "/jobs/{id}/events", &r);
    let text = r.text();
    let events: Vec<&str> = text.lines().filter(|l| l.starts_with("event:")).collect();
    assert_eq!(events, ["event: end"], "{text}");
    let entry: Value = serde_json::from_str(text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
    assert_eq!((entry["id"].as_str(), entry["status"].as_str()), (Some(id.as_str()), Some("DONE")));
    let r = s.call("POST", &format!("/jobs/{id}/retry"), None);
    assert_eq!(r.status, 409, "a finished job cannot be started again");
    let e = seen.note("post", "/jobs/{id}/retry", &r);
    assert_eq!((e["error"]["code"].as_str(), e["status"].as_str()), (Some("job_not_ended"), Some("DONE")), "{e}");

    // a link to a missing file
    let signer = fanfold_api::files::Signer::from_token(TOKEN);
    let gone = signer.sign(&axum::http::Method::GET, "results/nope.csv", u64::MAX / 2);
    let r = request(&s.addr, "GET", &gone, None, None);
    assert_eq!(r.status, 404);
    seen.note("get", "/files/{key}", &r);

    let r = s.call("POST", "/jobs", Some(&json!({"source": "incoming/nope.csv"})));
    assert_eq!(r.status, 404);
    seen.note("post", "/jobs", &r);
    let r = s.call("POST", "/jobs", Some(&json!({"source": "s3://other-bucket/incoming/plays.csv"})));
    assert_eq!(r.status, 404);
    seen.note("post", "/jobs", &r);
    let r = s.call(
        "POST",
        "/jobs",
        Some(&json!({"source": "incoming/plays.csv", "spec": {"group_by": ["Song"], "aggregates": [{"op": "avg"}]}})),
    );
    assert_eq!(r.status, 400);
    let e = seen.note("post", "/jobs", &r);
    assert_eq!(e["error"]["field"], "aggregates[0].op", "{e}");
    for bad in [json!({"src": "x"}), json!({"source": "results/x/part-00000-00000.csv"}), json!([1])] {
        let r = s.call("POST", "/jobs", Some(&bad));
        assert_eq!(r.status, 400, "{bad}");
        seen.note("post", "/jobs", &r);
    }

    // a rejected input: 406 with line, byte and column, on the job and its preview
    std::fs::copy(fixture("bad-number.csv"), data.join("incoming/bad.csv")).unwrap();
    let r = s.call("POST", "/jobs", Some(&json!({"source": "incoming/bad.csv"})));
    let bad_id = r.json()["id"].as_str().unwrap().to_string();
    let r = s.wait(&bad_id, LONG);
    assert_eq!(r.status, 406, "{}", r.text());
    let e = seen.note("get", "/jobs/{id}", &r);
    assert_eq!(e["error"]["line"], 3, "{e}");
    assert!(e["error"]["byte"].is_u64() && e["error"]["column"] == "Number of Plays", "{e}");
    let r = s.get(&format!("/jobs/{bad_id}/preview"));
    assert_eq!(r.status, 406);
    seen.note("get", "/jobs/{id}/preview", &r);
    let r = s.call("POST", &format!("/jobs/{bad_id}/retry"), None);
    assert_eq!(r.status, 406, "a rejected input stays rejected: {}", r.text());
    seen.note("post", "/jobs/{id}/retry", &r);

    // a long job: 425 with progress, then cancelled: 410, partials and results gone
    let big = gen_bmat(work.path(), "big.csv", "12MB", 42);
    std::fs::copy(&big, data.join("incoming/big.csv")).unwrap();
    let r = s.call("POST", "/jobs", Some(&json!({"source": "incoming/big.csv"})));
    let big_id = r.json()["id"].as_str().unwrap().to_string();
    let r = s.get(&format!("/jobs/{big_id}"));
    assert_eq!(r.status, 425, "{}", r.text());
    let v = seen.note("get", "/jobs/{id}", &r);
    assert!(v["progress"]["chunks_total"].as_u64().unwrap() > 10, "{v}");
    assert_eq!(v["progress"]["bytes_total"], std::fs::metadata(&big).unwrap().len());
    let r = s.get(&format!("/jobs/{big_id}/preview"));
    assert_eq!(r.status, 425);
    seen.note("get", "/jobs/{id}/preview", &r);
    let r = s.call("DELETE", &format!("/jobs/{big_id}"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(seen.note("delete", "/jobs/{id}", &r)["status"], "CANCELLED");
    let r = s.get(&format!("/jobs/{big_id}"));
    assert_eq!(r.status, 410);
    assert_eq!(seen.note("get", "/jobs/{id}", &r)["status"], "CANCELLED");
    let r = s.get(&format!("/jobs/{big_id}/preview"));
    assert_eq!(r.status, 410);
    seen.note("get", "/jobs/{id}/preview", &r);
    std::thread::sleep(Duration::from_millis(1500)); // a worker's next check
    assert!(!data.join(format!("results/{big_id}")).exists(), "no results of a cancelled job");
    assert!(!data.join(format!("_fanfold/partials/{big_id}")).exists(), "no partials of a cancelled job");
    let r = s.get("/jobs?limit=100");
    let listed = r.json();
    let st = listed["jobs"].as_array().unwrap().iter().find(|j| j["id"] == big_id.as_str()).unwrap()["status"].clone();
    assert_eq!(st, "CANCELLED", "workers did not undo the cancel");
    // started again: the same object and spec, run whole from the start
    let r = s.call("POST", &format!("/jobs/{big_id}/retry"), None);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(seen.note("post", "/jobs/{id}/retry", &r)["id"], big_id.as_str());
    // its event stream follows it to the end: progress, then end
    let r = s.get(&format!("/jobs/{big_id}/events"));
    let text = r.text();
    let kinds: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert!(kinds.len() >= 2 && kinds[..kinds.len() - 1].iter().all(|k| *k == "progress"), "{text}");
    assert_eq!(kinds.last(), Some(&"end"), "{text}");
    let last: Value =
        serde_json::from_str(text.lines().filter_map(|l| l.strip_prefix("data: ")).next_back().unwrap()).unwrap();
    assert_eq!(last["status"], "DONE");
    let r = s.wait(&big_id, LONG);
    assert_eq!(r.status, 200, "the retried job finishes: {}", r.text());
    let v = r.json();
    let lines = std::fs::read(&big).unwrap().iter().filter(|&&b| b == b'\n').count() as u64;
    assert_eq!(v["stats"]["rows_read"], lines - 1, "every row once, nothing of the cancelled run");

    // unknown and malformed ids
    for (m, suffix, doc) in [
        ("GET", "", "/jobs/{id}"),
        ("DELETE", "", "/jobs/{id}"),
        ("GET", "/preview", "/jobs/{id}/preview"),
        ("POST", "/retry", "/jobs/{id}/retry"),
        ("GET", "/events", "/jobs/{id}/events"),
    ] {
        for bad in [id0.clone(), "not-an-id".to_string()] {
            let r = s.call(m, &format!("/jobs/{bad}{suffix}"), None);
            assert_eq!(r.status, 404, "{m} {bad}{suffix}");
            seen.note(m, doc, &r);
        }
    }

    // listing: newest first, paginated, bad parameters
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let r = s.get(&format!("/jobs?limit=2{q}"));
        let v = seen.note("get", "/jobs", &r);
        ids.extend(v["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_string()));
        match v["next"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(ids.len(), ids.iter().collect::<BTreeSet<_>>().len(), "no job twice");
    assert_eq!(ids.first(), Some(&big_id), "newest first");
    assert!(ids.contains(&id) && ids.contains(&bad_id));
    for q in ["limit=0", "limit=101", "limit=x", "cursor=zzz", "colour=red"] {
        let r = s.get(&format!("/jobs?{q}"));
        assert_eq!(r.status, 400, "{q}");
        seen.note("get", "/jobs", &r);
    }

    // a cancelled job whose object was replaced since: not retried (the
    // new bytes are a new job)
    std::fs::copy(&big, data.join("incoming/big2.csv")).unwrap();
    let r = s.call("POST", "/jobs", Some(&json!({"source": "incoming/big2.csv"})));
    let big2 = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(s.call("DELETE", &format!("/jobs/{big2}"), None).status, 200);
    std::fs::write(data.join("incoming/big2.csv"), "Song,Date,Number of Plays\na,2020-01-01,1\n").unwrap();
    let r = s.call("POST", &format!("/jobs/{big2}/retry"), None);
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(seen.note("post", "/jobs/{id}/retry", &r)["error"]["code"], "object_changed");

    // GET /datasets/{dir}: 404 until a version is DONE, then 200; 400 for a bad name
    std::fs::create_dir_all(data.join("incoming/plays-ds")).unwrap();
    std::fs::write(data.join("incoming/plays-ds/_spec.json"), r#"{"dataset": true}"#).unwrap();
    let r = s.get("/datasets/plays-ds");
    assert_eq!(r.status, 404, "{}", r.text());
    seen.note("get", "/datasets/{dir}", &r);
    std::fs::copy(fixture("bmat-example.csv"), data.join("incoming/plays-ds/a.csv")).unwrap();
    std::fs::copy(fixture("bmat-example.csv"), data.join("incoming/plays-ds/b.csv")).unwrap();
    let t = Instant::now();
    let r = loop {
        let r = s.get("/datasets/plays-ds");
        if r.status != 404 {
            break r;
        }
        assert!(t.elapsed() < LONG, "no dataset version: {}", r.text());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(r.status, 200, "{}", r.text());
    let v = seen.note("get", "/datasets/{dir}", &r);
    assert_eq!(v["status"], "DONE");
    assert_eq!(v["stats"]["rows_read"], 14, "both files: {v}");
    assert_eq!(v["stats"]["dataset"]["files"], 2);
    assert_eq!(v["dataset"]["manifest"]["key"], "results/plays-ds/manifest.json");
    let (host, path) = split_url(v["dataset"]["latest"]["url"].as_str().unwrap());
    let latest = request(&host, "GET", &path, None, None).json();
    assert_eq!(latest["job"], v["id"]);
    let r = s.get("/datasets/%2E%2E");
    assert_eq!(r.status, 400, "{}", r.text());
    seen.note("get", "/datasets/{dir}", &r);

    // routes: the router's table is the document's, method by method
    let (doc, documented) = documented();
    let router_paths: BTreeSet<String> =
        fanfold_api::routes().into_iter().map(|(p, _)| p.replace("{*key}", "{key}")).collect();
    let doc_paths: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(router_paths, doc_paths, "every route documented, every documented path routed");
    for path in &doc_paths {
        let concrete = path.replace("{id}", &id).replace("{key}", "results/x.csv");
        for m in ["get", "post", "put", "delete"] {
            let r = s.call(&m.to_uppercase(), &concrete, Some(&json!({})));
            let in_doc = doc["paths"][path].get(m).is_some();
            assert_eq!(r.status != 405, in_doc, "{m} {path}: {}", r.status);
            if r.status == 405 {
                assert_eq!(r.json()["error"]["code"], "method_not_allowed");
            }
        }
    }
    let r = s.get("/no/such/route");
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (404, Some("not_found")));

    let missing: Vec<_> = documented.difference(&seen.0).collect();
    assert!(missing.is_empty(), "documented but never produced by this test: {missing:?}");
    let undocumented: Vec<_> = seen.0.difference(&documented).collect();
    assert!(undocumented.is_empty(), "produced but not documented: {undocumented:?}");
}

/// Waits until the watcher has started a job for `key`; its id.
fn listed(srv: &Server, key: &str) -> String {
    let t = Instant::now();
    loop {
        let v = srv.get("/jobs?limit=100").json();
        if let Some(j) = v["jobs"].as_array().unwrap().iter().find(|j| j["source"]["key"] == key) {
            return j["id"].as_str().unwrap().to_string();
        }
        assert!(t.elapsed() < LONG, "the watcher did not pick up {key}: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Kills the server once job `id` has three chunks done (and is still running).
fn kill_after_three_chunks(srv: Server, id: &str) {
    let t = Instant::now();
    loop {
        let r = srv.get(&format!("/jobs/{id}"));
        assert_eq!(r.status, 425, "the job finished before the crash; make it bigger");
        if r.json()["progress"]["chunks_done"].as_u64().unwrap() >= 3 {
            break;
        }
        assert!(t.elapsed() < LONG);
        std::thread::sleep(Duration::from_millis(20));
    }
    srv.kill();
}

#[test]
fn dropped_files_are_picked_up_whole_and_jobs_survive_a_crash() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let big = gen_bmat(work.path(), "big.csv", "24MB", 42);
    let want = reference(&big, work.path());
    let srv = Server::start(&data, TOKEN, &["--chunk-size", "128KiB", "--workers", "1"]);

    // A file written slowly, in pieces with pauses shorter than the settle
    // time, is read only once it is complete.
    let example = std::fs::read(fixture("bmat-example.csv")).unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(data.join("incoming/slow.csv")).unwrap();
        for piece in example.chunks(40) {
            f.write_all(piece).unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(400));
        }
    }
    // The S3 trigger's rule: a _spec.json beside the file is its spec.
    std::fs::create_dir_all(data.join("incoming/songs")).unwrap();
    std::fs::write(
        data.join("incoming/songs/_spec.json"),
        r#"{"group_by":["Song"],"aggregates":[{"op":"count","as":"n"}]}"#,
    )
    .unwrap();
    std::fs::write(data.join("incoming/songs/plays.csv"), &example).unwrap();
    let slow_id = listed(&srv, "incoming/slow.csv");
    let specced = listed(&srv, "incoming/songs/plays.csv");
    let r = srv.wait(&specced, LONG);
    assert_eq!(r.status, 200, "{}", r.text());
    let p = srv.get(&format!("/jobs/{specced}/preview")).json();
    assert_eq!(p["header"], json!(["Song", "n"]), "the _spec.json beside the file was used");
    assert_eq!(p["rows"], json!([["In The End", "3"], ["Umbrella", "4"]]));

    let r = srv.wait(&slow_id, LONG);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["source"]["size"], example.len(), "the job saw the whole file");
    assert_eq!(r.json()["stats"]["rows_read"], 7);

    // Copy the big file in (only now: the other jobs' pauses would give it
    // time to finish) and kill the server while its job runs; a new one
    // resumes it.
    std::fs::copy(&big, data.join("incoming/big.csv")).unwrap();
    let big_id = listed(&srv, "incoming/big.csv");
    kill_after_three_chunks(srv, &big_id);
    let srv = Server::start(&data, TOKEN, &["--chunk-size", "128KiB", "--workers", "2"]);
    let r = srv.wait(&big_id, LONG);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let data_lines = std::fs::read(&big).unwrap().iter().filter(|&&b| b == b'\n').count() - 1;
    assert_eq!(v["stats"]["rows_read"], data_lines as u64, "every row counted once across the crash");
    let part = read(data.join(v["output_files"][0]["key"].as_str().unwrap()));
    assert_eq!(part, want, "a resumed job gives the same bytes as fanfold run");
    // and the finished jobs are still there after another restart
    srv.kill();
    let srv = Server::start(&data, TOKEN, &[]);
    assert_eq!(srv.get(&format!("/jobs/{slow_id}")).status, 200);
    assert_eq!(srv.get(&format!("/jobs/{big_id}")).status, 200);
}

/// A gzip file of many members dropped into `fanfold serve`: cut into
/// compressed chunks at its members, resumed across a crash, the bytes of
/// `fanfold run` on the plain file.
#[test]
fn a_dropped_gzip_file_of_many_members_survives_a_crash_with_the_plain_files_bytes() {
    use std::io::Write;
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let plain = gen_bmat(work.path(), "plays.csv", "24MB", 7);
    let want = reference(&plain, work.path());
    let bytes = std::fs::read(&plain).unwrap();
    let mut gz = Vec::new();
    for piece in bytes.chunks(256 * 1024 + 17) {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(piece).unwrap();
        gz.extend(e.finish().unwrap());
    }
    let srv = Server::start(&data, TOKEN, &["--chunk-size", "128KiB", "--workers", "1"]);
    std::fs::write(data.join("incoming/plays.csv.gz"), &gz).unwrap();
    let id = listed(&srv, "incoming/plays.csv.gz");
    kill_after_three_chunks(srv, &id);
    let srv = Server::start(&data, TOKEN, &["--chunk-size", "128KiB", "--workers", "2"]);
    let r = srv.wait(&id, LONG);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["stats"]["compression"], "gzip");
    assert_eq!(v["stats"]["decoded_bytes"], bytes.len() as u64);
    assert!(v["stats"]["chunks"].as_u64().unwrap() > 100, "{v}");
    let data_lines = bytes.iter().filter(|&&b| b == b'\n').count() - 1;
    assert_eq!(v["stats"]["rows_read"], data_lines as u64, "every row counted once across the crash");
    let part = read(data.join(v["output_files"][0]["key"].as_str().unwrap()));
    assert_eq!(part, want, "the plain file's bytes");
}

#[test]
fn load_ten_thousand_requests_200_at_a_time_while_jobs_run() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let big = gen_bmat(work.path(), "big.csv", "16MB", 42);
    let want = reference(&big, work.path());
    let srv = Server::start(&data, TOKEN, &["--chunk-size", "256KiB", "--workers", "1"]);
    for i in 0..3 {
        std::fs::copy(&big, data.join(format!("incoming/big-{i}.csv"))).unwrap();
    }
    std::fs::copy(fixture("bmat-example.csv"), data.join("incoming/small.csv")).unwrap();
    let small = srv.call("POST", "/jobs", Some(&json!({"source": "incoming/small.csv"})));
    let small_id = small.json()["id"].as_str().unwrap().to_string();
    srv.wait(&small_id, LONG);
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = srv.call("POST", "/jobs", Some(&json!({ "source": format!("incoming/big-{i}.csv") })));
        assert!(r.status == 201 || r.status == 409, "{}", r.text());
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }

    const TOTAL: usize = 10_000;
    const CONCURRENT: usize = 200;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    let results: Vec<(u16, Duration, usize)> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..CONCURRENT)
            .map(|_| {
                sc.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if n >= TOTAL {
                            return out;
                        }
                        let t = Instant::now();
                        let r = match n % 5 {
                            0 => srv.get("/jobs?limit=20"),
                            1 => srv.get(&format!("/jobs/{small_id}")),
                            2 => srv.get(&format!("/jobs/{}", ids[n % 3])),
                            3 => srv.call("POST", "/jobs", Some(&json!({"source": "incoming/small.csv"}))),
                            _ => srv.get(&format!("/jobs/{small_id}/preview")),
                        };
                        out.push((r.status, t.elapsed(), n % 5));
                    }
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let wall = started.elapsed();
    assert_eq!(results.len(), TOTAL);
    let fives: Vec<_> = results.iter().filter(|r| r.0 >= 500).collect();
    assert!(fives.is_empty(), "{} server errors, e.g. {:?}", fives.len(), fives.first());
    for (status, _, kind) in &results {
        let ok = match kind {
            0 | 1 | 4 => *status == 200,
            2 => *status == 425 || *status == 200,
            _ => *status == 409,
        };
        assert!(ok, "kind {kind}: status {status}");
    }
    let mut lat: Vec<Duration> = results.iter().map(|r| r.1).collect();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let report = format!(
        "load: {TOTAL} requests, {CONCURRENT} at a time, {:.1} s, {:.0} req/s; latency p50 {:?}, p99 {:?}, max {:?}",
        wall.as_secs_f64(),
        TOTAL as f64 / wall.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        lat[lat.len() - 1]
    );
    eprintln!("{report}");
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    let _ = std::fs::write(target.join("api-load.txt"), format!("{report}\n"));

    // no corrupted job state: every job finishes with the right bytes
    for id in &ids {
        let r = srv.wait(id, LONG);
        assert_eq!(r.status, 200, "{}", r.text());
        let key = r.json()["output_files"][0]["key"].as_str().unwrap().to_string();
        assert_eq!(read(data.join(key)), want);
    }
    let listed = srv.get("/jobs?limit=100").json();
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 4, "one job per distinct file: {listed}");
}

/// One request a webhook receiver got: its headers (lower-case names) and body.
struct Hook {
    headers: std::collections::HashMap<String, String>,
    body: Vec<u8>,
}

/// A webhook receiver on 127.0.0.1: answers 500 to the first request (so
/// the sender must retry) and 200 to the rest, and records them all.
fn receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Hook>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut headers = std::collections::HashMap::new();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.trim_end().split_once(':') {
                    headers.insert(k.to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let len: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let n = {
                let mut g = seen.lock().unwrap();
                g.push(Hook { headers, body });
                g.len()
            };
            let status = if n == 1 { "500 Internal Server Error" } else { "200 OK" };
            let _ = write!(conn, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, got)
}

/// `fanfold serve --webhook`: every job's end arrives once, signed, after a
/// retry of a refused delivery; DONE, FAILED (rejected input) and CANCELLED.
#[test]
fn the_webhook_gets_each_jobs_end_once_signed_and_retried() {
    use hmac::{Hmac, Mac};
    let (url, got) = receiver();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let secret = "webhook-secret-1";
    let srv = Server::start(&data, TOKEN, &["--workers", "1", "--webhook", &url, "--webhook-secret", secret]);
    std::fs::create_dir_all(data.join("incoming")).unwrap();
    std::fs::copy(fixture("bmat-example.csv"), data.join("incoming/plays.csv")).unwrap();
    let done_id = listed(&srv, "incoming/plays.csv");
    assert_eq!(srv.wait(&done_id, LONG).status, 200);
    std::fs::copy(fixture("bad-number.csv"), data.join("incoming/bad.csv")).unwrap();
    let bad_id = listed(&srv, "incoming/bad.csv");
    assert_eq!(srv.wait(&bad_id, LONG).status, 406);
    let big = gen_bmat(work.path(), "big.csv", "12MB", 3);
    std::fs::copy(&big, data.join("incoming/big.csv")).unwrap();
    let big_id = listed(&srv, "incoming/big.csv");
    let _ = srv.call("DELETE", &format!("/jobs/{big_id}"), None);
    // Every end arrives (the first attempt was refused, and retried 1 s later).
    let deadline = Instant::now() + Duration::from_secs(60);
    let events = loop {
        let events: Vec<Value> = {
            let g = got.lock().unwrap();
            g.iter().skip(1).map(|h| serde_json::from_slice(&h.body).unwrap()).collect()
        };
        if events.len() >= 3 || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(500)); // nothing more comes
    let g = got.lock().unwrap();
    assert_eq!(g.len(), 4, "three events and one retry: {events:?}");
    assert_eq!(g[0].body, g[1].body, "the refused delivery was sent again as it was");
    assert_eq!(g[0].headers["x-fanfold-delivery"], g[1].headers["x-fanfold-delivery"]);
    for h in g.iter() {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&h.body);
        let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(h.headers["x-fanfold-signature-256"], want, "signed with the secret");
        assert_eq!(h.headers["x-fanfold-event"], "Job State Change");
        assert!(h.headers["content-type"].starts_with("application/json"));
    }
    let of = |id: &str| events.iter().filter(|e| e["job_id"] == id).cloned().collect::<Vec<_>>();
    let done = of(&done_id);
    assert_eq!(done.len(), 1, "{events:?}");
    assert_eq!(done[0]["status"], "DONE");
    assert_eq!(done[0]["rows"], 7);
    assert_eq!(done[0]["groups"], 4);
    assert!(
        done[0]["manifest"].as_str().unwrap().ends_with(&format!("results/{done_id}/manifest.json")),
        "{}",
        done[0]
    );
    let bad = of(&bad_id);
    assert_eq!((bad.len(), bad[0]["status"].as_str()), (1, Some("FAILED")), "{events:?}");
    assert_eq!(bad[0]["error"]["rejected"], true);
    assert_eq!(bad[0]["error"]["line"], 3);
    let cancelled = of(&big_id);
    assert_eq!(cancelled.len(), 1, "{events:?}");
    assert!(["CANCELLED", "DONE"].contains(&cancelled[0]["status"].as_str().unwrap()), "{}", cancelled[0]);
}

/// `fanfold run` over a copy of `folder` as it is now: its result rows.
fn reference_rows(folder: &Path, work: &Path, name: &str) -> String {
    let copy = work.join(format!("snapshot-{name}"));
    std::fs::create_dir_all(&copy).unwrap();
    for e in std::fs::read_dir(folder).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, copy.join(p.file_name().unwrap())).unwrap();
        }
    }
    let out_dir = work.join(format!("ref-{name}"));
    let out = fanfold(&["run", copy.to_str().unwrap(), "--out", out_dir.to_str().unwrap()], work);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    rows_in(&out_dir)
}

/// The rows of the `part-*` files under `dir`, in name order, without headers.
fn rows_in(dir: &Path) -> String {
    let mut parts: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("part-"))
        .collect();
    parts.sort();
    parts.iter().map(|p| read(p).split_once('\n').unwrap().1.to_string()).collect()
}

/// Polls `GET /datasets/{dir}` until its latest version has `files` files.
fn latest_with(srv: &Server, dir: &str, files: u64) -> Value {
    let t = Instant::now();
    loop {
        let r = srv.get(&format!("/datasets/{dir}"));
        if r.status == 200 && r.json()["stats"]["dataset"]["files"] == files {
            return r.json();
        }
        assert!(t.elapsed() < LONG, "no version of {dir} with {files} files: {}", r.text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The dataset versions (jobs over the folder) the server knows.
fn versions(srv: &Server, dir: &str) -> Vec<Value> {
    let v = srv.get("/jobs?limit=100").json();
    let key = format!("incoming/{dir}/");
    v["jobs"].as_array().unwrap().iter().filter(|j| j["source"]["key"] == key.as_str()).cloned().collect()
}

/// A dataset folder in `fanfold serve`: files dropped together make one
/// version; a file added and one replaced while a version runs make the
/// next one, which shares the running scans and reuses the finished ones; a
/// replaced and a removed file make a third; `latest` follows the newest;
/// every result is `fanfold run` over the folder as it was.
#[test]
fn a_dataset_folder_gets_one_version_per_quiet_spell_and_scans_each_file_once() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let srv = Server::start(&data, TOKEN, &["--chunk-size", "256KiB", "--workers", "2", "--dataset-quiet", "1.5"]);
    let ds = data.join("incoming/plays");
    std::fs::create_dir_all(&ds).unwrap();
    std::fs::write(ds.join("_spec.json"), r#"{"dataset": true}"#).unwrap();
    let files: Vec<PathBuf> = (0..3).map(|i| gen_bmat(work.path(), &format!("f{i}.csv"), "1MB", 10 + i)).collect();
    for (i, f) in files.iter().enumerate() {
        std::fs::copy(f, ds.join(format!("{i}.csv"))).unwrap();
    }
    let v1 = latest_with(&srv, "plays", 3);
    assert_eq!(v1["stats"]["dataset"]["files_scanned"], 3);
    assert_eq!(versions(&srv, "plays").len(), 1, "three files dropped together: one version");
    assert_eq!(versions(&srv, "plays")[0]["source"]["kind"], "dataset");
    let all = srv.get("/jobs?limit=100").json();
    let scans = all["jobs"].as_array().unwrap().iter().filter(|j| j["source"]["kind"] == "scan").count();
    assert_eq!(scans, 3, "one kept scan per file: {all}");
    assert_eq!(rows_in_job(&data, &v1), reference_rows(&ds, work.path(), "v1"));

    // A big file, and another while its version runs: two versions; the
    // second shares the first's scan of the big file.
    let big = gen_bmat(work.path(), "big.csv", "16MB", 7);
    std::fs::copy(&big, ds.join("3-big.csv")).unwrap();
    let t = Instant::now();
    while !versions(&srv, "plays").iter().any(|j| j["status"] != "DONE") {
        assert!(t.elapsed() < LONG, "the second version never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    // While it runs: a new file, and one it has already merged from its
    // kept scan replaced.
    std::fs::copy(&files[0], ds.join("4.csv")).unwrap();
    std::fs::copy(&files[0], ds.join("2.csv")).unwrap();
    let v3 = latest_with(&srv, "plays", 5);
    let d = &v3["stats"]["dataset"];
    assert_eq!(d["files_reused"].as_u64().unwrap() + d["files_scanned"].as_u64().unwrap(), 5);
    assert!(d["files_reused"].as_u64().unwrap() >= 3, "only the new and the replaced file are scanned for it: {d}");
    assert_eq!(rows_in_job(&data, &v3), reference_rows(&ds, work.path(), "v3"));
    let all = versions(&srv, "plays");
    assert_eq!(all.len(), 3, "one version per quiet spell: {all:?}");

    // A replaced file and a removed one: a version scanning only the new bytes.
    std::fs::copy(&files[2], ds.join("0.csv")).unwrap();
    std::fs::remove_file(ds.join("1.csv")).unwrap();
    let v4 = latest_with(&srv, "plays", 4);
    assert_eq!(v4["stats"]["dataset"]["files_scanned"], 1, "{v4}");
    assert_eq!(rows_in_job(&data, &v4), reference_rows(&ds, work.path(), "v4"));
    // The stable manifest points at the newest version's parts.
    let manifest: Value = serde_json::from_str(&read(data.join("results/plays/manifest.json"))).unwrap();
    let uris = manifest["fileLocations"][0]["URIs"].as_array().unwrap();
    assert!(uris.iter().all(|u| u.as_str().unwrap().contains(v4["id"].as_str().unwrap())), "{manifest}");
}

/// The rows of a DONE job's parts, as `GET /jobs/{id}` lists them.
fn rows_in_job(data: &Path, v: &Value) -> String {
    v["output_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| read(data.join(f["key"].as_str().unwrap())).split_once('\n').unwrap().1.to_string())
        .collect()
}
