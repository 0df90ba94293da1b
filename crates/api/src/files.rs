//! Signed file links for `fanfold serve`: what presigned S3 URLs are on
//! AWS. A link names the method, the key and an expiry, signed with
//! HMAC-SHA256 under a secret derived from the server's token (so links
//! survive a restart with the same token, and die with a new one).
//!
//! `GET /files/{key}` streams a result; `PUT /files/{key}` takes an upload
//! under `incoming/` and makes it visible in one rename when the body is
//! complete (so the watcher never sees half a file).

use std::io::{Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use futures::StreamExt;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::json_ok;
use crate::{blocking, ApiError, Links, Shared, LINK_SECONDS};
use fanfold_pipeline::StoreError;

/// Signs and checks links.
#[derive(Clone)]
pub struct Signer {
    secret: [u8; 32],
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A key as it goes in a URL path: each segment percent-encoded.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Signer {
    pub fn from_token(token: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"fanfold file links\0");
        h.update(token.as_bytes());
        Signer { secret: h.finalize().into() }
    }

    fn mac(&self, method: &Method, key: &str, expires: u64) -> Vec<u8> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("any key length");
        m.update(format!("{method}\n{key}\n{expires}").as_bytes());
        m.finalize().into_bytes().to_vec()
    }

    /// The path and query of a link (join it to the server's base URL).
    pub fn sign(&self, method: &Method, key: &str, expires: u64) -> String {
        format!("/files/{}?expires={expires}&sig={}", encode_key(key), hex::encode(self.mac(method, key, expires)))
    }

    fn check(&self, method: &Method, key: &str, q: &LinkQuery) -> Result<(), ApiError> {
        let forbidden = |m: &str| ApiError::new(StatusCode::FORBIDDEN, "forbidden", m.to_string());
        let want = hex::encode(self.mac(method, key, q.expires));
        if !bool::from(want.as_bytes().ct_eq(q.sig.as_bytes())) {
            return Err(forbidden("the link's signature does not match"));
        }
        if q.expires < unix_now() {
            return Err(forbidden("the link has expired"));
        }
        Ok(())
    }
}

/// [`Links`] to this server.
pub struct LocalLinks {
    /// e.g. `http://127.0.0.1:8080`
    pub base_url: String,
    pub signer: Signer,
}

/// Whether a key lies under the results prefix (`results/` of
/// `results/{job}/`): a link, even one signed with the right secret, never
/// reads the job database, partials or uploads.
fn downloadable(results: Option<&str>, key: &str) -> bool {
    results.is_some_and(|root| key.starts_with(root))
        && key_is_clean(key)
        && !key.split('/').any(|s| s.starts_with('_'))
}

/// No `.`/`..` or empty segments (the store refuses them too; this keeps a
/// link from naming the same object two ways).
fn key_is_clean(key: &str) -> bool {
    key.split('/').all(|s| !s.is_empty() && s != "." && s != "..")
}

impl Links for LocalLinks {
    fn download(&self, key: &str) -> Result<String, StoreError> {
        Ok(format!("{}{}", self.base_url, self.signer.sign(&Method::GET, key, unix_now() + LINK_SECONDS)))
    }
    fn upload(&self, key: &str) -> Result<String, StoreError> {
        if !key.starts_with("incoming/") || !key_is_clean(key) {
            return Err(StoreError::InvalidKey { key: key.to_string(), reason: "uploads go under incoming/" });
        }
        Ok(format!("{}{}", self.base_url, self.signer.sign(&Method::PUT, key, unix_now() + LINK_SECONDS)))
    }
}

#[derive(Deserialize)]
pub(crate) struct LinkQuery {
    expires: u64,
    sig: String,
}

pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<Shared>)> {
    vec![("/files/{*key}", get(download).put(upload))]
}

fn link_parts(
    api: &crate::Api,
    q: Result<Query<LinkQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<(Signer, LinkQuery), ApiError> {
    let signer = api.files.clone().ok_or_else(|| ApiError::not_found("no such route"))?;
    let Ok(Query(q)) = q else {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "not a signed link (expires, sig)"));
    };
    Ok((signer, q))
}

async fn download(
    State(api): State<Shared>,
    Path(key): Path<String>,
    q: Result<Query<LinkQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let (signer, q) = link_parts(&api, q)?;
    signer.check(&Method::GET, &key, &q)?;
    if !downloadable(api.pipeline.layout.results_root(), &key) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "only results can be downloaded"));
    }
    let store = api.pipeline.output.clone();
    let (size, reader) = blocking(move || {
        let meta = store.head(&key)?;
        Ok((meta.size, store.get_range(&key, 0, None)?))
    })
    .await?;
    // A blocking thread reads; the body streams what it sends.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    tokio::task::spawn_blocking(move || {
        let mut reader = reader;
        loop {
            let mut buf = vec![0u8; 256 * 1024];
            match reader.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(buf)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|x| (x, rx)) });
    Ok((
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()), (header::CONTENT_LENGTH, size.to_string())],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn upload(
    State(api): State<Shared>,
    Path(key): Path<String>,
    q: Result<Query<LinkQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let (signer, q) = link_parts(&api, q)?;
    signer.check(&Method::PUT, &key, &q)?;
    if !key.starts_with("incoming/") {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "uploads go under incoming/"));
    }
    let store = api.pipeline.input.clone();
    let k = key.clone();
    let writer = blocking(move || Ok(store.put_stream(&k)?)).await?;
    // The body arrives here; a blocking thread writes it.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<axum::body::Bytes>(4);
    let writing = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let mut writer = writer;
        let mut n = 0u64;
        while let Some(b) = rx.blocking_recv() {
            writer.write_all(&b).map_err(|e| ApiError::internal(e, true))?;
            n += b.len() as u64;
        }
        Ok((writer, n))
    });
    let mut stream = body.into_data_stream();
    let mut cut = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => {
                if tx.send(b).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                cut = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let (writer, bytes) = writing.await.map_err(|e| ApiError::internal(e, false))??;
    if let Some(e) = cut {
        // The writer is dropped unfinished: nothing appears under the key.
        tracing::warn!(key, error = %e, "upload cut off");
        return Err(ApiError::bad_request("the upload was cut off; nothing was stored"));
    }
    blocking(move || Ok(writer.finish()?)).await?;
    Ok(json_ok(json!({"key": key, "bytes": bytes})))
}
