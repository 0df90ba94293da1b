//! `fanfold serve` against slow and abusive clients: half-sent headers,
//! oversized bodies, keys it must not serve, and the headers a page needs.

mod common;
mod serve;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use axum::http::Method;
use fanfold_api::files::Signer;
use serde_json::json;
use serve::{request, request_within, Server};

const TOKEN: &str = "abuse-token-0123";

#[test]
fn half_sent_headers_are_timed_out_and_the_server_stays_under_its_descriptor_limit() {
    let work = tempfile::tempdir().unwrap();
    // Lambda's and a default shell's limit, lower: 256 descriptors.
    let srv = Server::start_limited(
        &work.path().join("data"),
        TOKEN,
        &["--max-connections", "100", "--header-timeout", "2", "--workers", "1"],
        256,
    );
    let half = |n: usize| -> Vec<TcpStream> {
        (0..n)
            .filter_map(|_| {
                // Bounded: a connect the kernel cannot queue retries its SYN for minutes.
                let addr: std::net::SocketAddr = srv.addr.parse().expect("a socket address");
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
                s.write_all(b"GET /jobs HTTP/1.1\r\nHost: x\r\n").ok()?;
                Some(s)
            })
            .collect()
    };
    // Below the cap, real requests go on while slow clients wait.
    let few = half(50);
    assert_eq!(srv.get("/jobs").status, 200);
    // Three times the cap, and more than the descriptor limit.
    let many = half(300);
    let t = Instant::now();
    for mut s in few.into_iter().chain(many) {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut answer = Vec::new();
        match s.read_to_end(&mut answer) {
            Ok(_) => {} // closed, perhaps after an error answer
            Err(e) => assert!(
                !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
                "a half-open connection is still open after {:?}",
                t.elapsed()
            ),
        }
    }
    assert!(t.elapsed() < Duration::from_secs(10), "closed within the header timeout: {:?}", t.elapsed());
    // The server is still there and answers (each try bounded, so that the
    // deadline holds on a loaded machine too).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = std::panic::catch_unwind(|| {
            request_within(&srv.addr, "GET", "/jobs", Some(TOKEN), None, Duration::from_secs(3)).status
        });
        if matches!(r, Ok(200)) {
            break;
        }
        assert!(Instant::now() < deadline, "the server does not answer after the attack");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn every_error_is_json_links_read_only_results_and_the_page_cannot_be_framed() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let srv = Server::start(&data, TOKEN, &["--workers", "1"]);
    std::fs::create_dir_all(data.join("incoming")).unwrap();
    std::fs::copy(common::fixture("bmat-example.csv"), data.join("incoming/ok.csv")).unwrap();

    // A body over the limit: 413 in the one error shape.
    let big = vec![b' '; 3 << 20];
    let r = request(&srv.addr, "POST", "/jobs", Some(TOKEN), Some(&big));
    assert_eq!(r.status, 413);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["error"]["code"], "payload_too_large");
    // A path that is not there, or a "directory" that is a file: 404/400, never "try again".
    for (source, want) in [("incoming/ok.csv/x", 404), ("incoming/ok.csv/", 400), ("incoming/nope.csv", 404)] {
        let r = srv.call("POST", "/jobs", Some(&json!({ "source": source })));
        assert_eq!(r.status, want, "{source}: {}", r.text());
        assert!(r.json()["error"]["code"].is_string());
    }
    // A correctly signed link outside results/ reads nothing.
    let signer = Signer::from_token(TOKEN);
    let far = 4_000_000_000;
    for key in ["_fanfold/jobs.redb", "incoming/ok.csv", "results/../_fanfold/jobs.redb", "results/_x/y"] {
        let r = request(&srv.addr, "GET", &signer.sign(&Method::GET, key, far), None, None);
        assert!(r.status == 403 || r.status == 400 || r.status == 404, "{key}: {}", r.status);
        assert_eq!(r.header("content-type"), Some("application/json"), "{key}");
    }
    // The page (and every answer) carries the framing and sniffing headers.
    for path in ["/", "/openapi.json", "/nope"] {
        let r = request(&srv.addr, "GET", path, None, None);
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(r.header("content-security-policy"), Some("frame-ancestors 'none'"), "{path}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{path}");
    }
}
