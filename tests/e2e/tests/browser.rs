//! The jobs page in a real browser: headless Chromium (Debian's `chromium`,
//! installed by scripts/test), driven over the DevTools protocol. A file
//! is dropped into the page's file input; the test watches the job finish
//! and reads the preview, the chart and the download links the page shows.

mod common;
mod serve;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixture, gen_bmat, read};
use serde_json::{json, Value};
use serve::{request, split_url, Server};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

const TOKEN: &str = "browser-token-42";

fn chromium() -> PathBuf {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let p = Path::new(dir).join(c);
            if p.exists() {
                return p;
            }
        }
    }
    panic!("no chromium on PATH: scripts/test installs it (apt-get install chromium)");
}

struct Browser {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next: u64,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn launch() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(chromium())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-extensions",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        // Chromium writes the port it chose into the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let t = Instant::now();
        let port = loop {
            if let Ok(s) = std::fs::read_to_string(&port_file) {
                if let Some(p) = s.lines().next().filter(|l| !l.is_empty()) {
                    break p.to_string();
                }
            }
            assert!(t.elapsed() < Duration::from_secs(60), "chromium did not open its DevTools port");
            std::thread::sleep(Duration::from_millis(50));
        };
        let addr = format!("127.0.0.1:{port}");
        let t = Instant::now();
        let ws_url = loop {
            let targets: Value =
                serde_json::from_slice(&request(&addr, "GET", "/json/list", None, None).body).unwrap_or(Value::Null);
            let page = targets.as_array().and_then(|a| a.iter().find(|t| t["type"] == "page").cloned());
            if let Some(p) = page {
                break p["webSocketDebuggerUrl"].as_str().unwrap().to_string();
            }
            assert!(t.elapsed() < Duration::from_secs(30), "no page target: {targets}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let (ws, _) = tungstenite::connect(ws_url.as_str()).expect("connect to the page");
        Browser { child, ws, next: 0, _profile: profile }
    }

    /// One DevTools command; events in between are skipped.
    fn cmd(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        self.ws.send(Message::text(json!({"id": id, "method": method, "params": params}).to_string())).unwrap();
        loop {
            let msg = self.ws.read().expect("read from chromium");
            let Message::Text(t) = msg else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expr` in the page and returns its (JSON) value.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.cmd("Runtime.evaluate", json!({"expression": expr, "returnByValue": true, "awaitPromise": true}));
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits until `expr` is truthy; returns its value.
    fn wait_for(&mut self, expr: &str, what: &str) -> Value {
        let t = Instant::now();
        loop {
            let v = self.eval(expr);
            if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
                return v;
            }
            assert!(t.elapsed() < Duration::from_secs(120), "the page never showed {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Puts `file` into the page's file input, as a user choosing it would.
    fn choose_file(&mut self, selector: &str, file: &Path) {
        let root = self.cmd("DOM.getDocument", json!({}))["root"]["nodeId"].clone();
        let node = self.cmd("DOM.querySelector", json!({"nodeId": root, "selector": selector}))["nodeId"].clone();
        self.cmd("DOM.setFileInputFiles", json!({"nodeId": node, "files": [file.to_str().unwrap()]}));
    }
}

#[test]
fn drop_a_file_watch_it_finish_see_the_preview() {
    let work = tempfile::tempdir().unwrap();
    let srv = Server::start(&work.path().join("data"), TOKEN, &[]);
    let mut b = Browser::launch();
    b.cmd("Page.enable", json!({}));
    b.cmd("Page.navigate", json!({ "url": format!("http://{}/#token={TOKEN}", srv.addr) }));
    b.wait_for("document.readyState === 'complete' && !!document.querySelector('#file')", "the page");
    assert_eq!(b.eval("document.querySelector('#auth').hidden"), json!(true), "the token from the link was taken");

    // A file with a name of its own, so the job is new.
    let upload = work.path().join("plays.csv");
    std::fs::copy(fixture("bmat-example.csv"), &upload).unwrap();
    b.choose_file("#file", &upload);
    let status = b.wait_for(
        "(() => { const r = document.querySelector('#jobs tr'); return r && r.dataset.status === 'DONE' && r.dataset.id; })()",
        "the job DONE in the jobs table",
    );
    let id = status.as_str().unwrap().to_string();
    assert_eq!(srv.get(&format!("/jobs/{id}")).json()["source"]["key"], "incoming/plays.csv");

    let rows = b.wait_for(
        "(() => { const t = document.querySelector('#preview'); if (!t) return null; \
           return [...t.querySelectorAll('tr')].map(tr => [...tr.children].map(c => c.textContent)); })()",
        "the preview",
    );
    let want: Vec<Vec<String>> = read(fixture("bmat-example.expected.csv"))
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    assert_eq!(rows, json!(want), "the preview shows the header and the rows");

    let chart = b.eval(
        "[...document.querySelectorAll('#chart .row')].map(r => [r.children[0].textContent, r.children[2].textContent, \
          parseFloat(r.children[1].style.width)])",
    );
    let chart = chart.as_array().unwrap();
    assert_eq!(chart.len(), 4);
    assert_eq!((chart[0][0].as_str(), chart[0][1].as_str()), (Some("In The End · 2020-01-01"), Some("1500")));
    assert_eq!((chart[3][0].as_str(), chart[3][1].as_str()), (Some("Umbrella · 2020-01-01"), Some("150")));
    assert!(chart[0][2].as_f64().unwrap() > chart[1][2].as_f64().unwrap(), "bars scale with the value");

    let links = b.eval("[...document.querySelectorAll('#downloads a')].map(a => a.href)");
    let links = links.as_array().unwrap();
    assert_eq!(links.len(), 2, "the part and the manifest: {links:?}");
    let (host, path) = split_url(links[0].as_str().unwrap());
    assert_eq!(request(&host, "GET", &path, None, None).text(), read(fixture("bmat-example.expected.csv")));

    // A rejected file shows the reason with its line.
    let bad = work.path().join("broken.csv");
    std::fs::copy(fixture("bad-number.csv"), &bad).unwrap();
    b.choose_file("#file", &bad);
    let msg = b.wait_for(
        "(() => { const e = document.querySelector('#job-error'); return e && e.textContent; })()",
        "the rejected job's error",
    );
    let msg = msg.as_str().unwrap();
    assert!(msg.contains("line 3") && msg.contains("is not a number"), "{msg}");
    // The error comes from the job's own events; the table row may follow a
    // moment later, so wait for the row before looking at its buttons.
    b.wait_for(
        "!!document.querySelector(\"#jobs tr[data-status='FAILED']\")",
        "the rejected job's row in the jobs table",
    );
    assert_eq!(
        b.eval("[...document.querySelectorAll('#jobs tr')].filter(r => r.dataset.status === 'FAILED').map(r => !!r.querySelector('button.retry'))"),
        json!([false]),
        "a rejected job has no Retry button"
    );

    // A cancelled job has a Retry button, which runs it again to DONE.
    let big = gen_bmat(work.path(), "again.csv", "12MB", 7);
    std::fs::copy(&big, work.path().join("data/incoming/again.csv")).unwrap();
    let r = srv.call("POST", "/jobs", Some(&json!({"source": "incoming/again.csv"})));
    let again = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(srv.call("DELETE", &format!("/jobs/{again}"), None).status, 200, "cancelled while it runs");
    let button = format!("#jobs tr[data-id='{again}'] button.retry");
    b.wait_for(&format!("!!document.querySelector(\"{button}\")"), "the Retry button");
    b.eval(&format!("document.querySelector(\"{button}\").click(), true"));
    let before = b.eval("window.sseEvents").as_u64().unwrap();
    b.wait_for(
        &format!(
            "(() => {{ const r = document.querySelector(\"#jobs tr[data-id='{again}']\"); return r && r.dataset.status === 'DONE'; }})()"
        ),
        "the retried job DONE",
    );
    // It got there by the job's server-sent events (the list is polled only
    // every 5 s; the job takes less).
    assert!(b.eval("window.sseEvents").as_u64().unwrap() > before, "the page followed the job by its events");
}
