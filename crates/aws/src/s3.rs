//! `ObjectStore` on S3.

use std::io::{self, Read, Write};

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::{ByteStream, SdkBody};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use fanfold_pipeline::{ObjectMeta, ObjectStore, ObjectWriter, StoreError};
use tokio::runtime::Handle;

use crate::sdk_error;

/// Multipart part size: above S3's 5 MiB minimum for every part but the
/// last. Each part is a PUT request ($0.005 per 1,000): a terabyte of
/// partials and a terabyte of results are 30,000 PUTs at 64 MiB and 119,000
/// at 16 MiB (`fanfold plan`). The buffer never holds more than one part.
pub const PART_SIZE: usize = 64 << 20;

/// S3's smallest part (every part but the last).
pub const MIN_PART_SIZE: usize = 5 << 20;

/// One bucket.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    rt: Handle,
    part_size: usize,
}

impl S3Store {
    pub fn new(config: &aws_config::SdkConfig, bucket: impl Into<String>, rt: Handle) -> Self {
        let conf = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(config.endpoint_url().is_some())
            .interceptor(crate::requests::CountRequests)
            .build();
        S3Store { client: Client::from_conf(conf), bucket: bucket.into(), rt, part_size: PART_SIZE }
    }

    /// The same store with multipart parts of `bytes` (at least S3's 5 MiB).
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes.max(MIN_PART_SIZE);
        self
    }

    /// A presigned GET URL for `key`, valid for `secs`.
    pub fn presign_get(&self, key: &str, secs: u64) -> Result<String, StoreError> {
        let req = self.client.get_object().bucket(&self.bucket).key(key).presigned(presigning(secs)?);
        Ok(self.rt.block_on(req).map_err(|e| sdk_error("presign GET", e))?.uri().to_string())
    }

    /// A presigned PUT URL for `key`, valid for `secs`.
    pub fn presign_put(&self, key: &str, secs: u64) -> Result<String, StoreError> {
        let req = self.client.put_object().bucket(&self.bucket).key(key).presigned(presigning(secs)?);
        Ok(self.rt.block_on(req).map_err(|e| sdk_error("presign PUT", e))?.uri().to_string())
    }

    /// A ranged GET, of the version `etag` only when given (`If-Match`; S3
    /// answers 412 Precondition Failed for another version).
    fn get(
        &self,
        key: &str,
        etag: Option<&str>,
        start: u64,
        end: Option<u64>,
    ) -> Result<Box<dyn Read + Send>, StoreError> {
        let changed = || StoreError::Changed { key: key.to_string(), etag: etag.unwrap_or_default().to_string() };
        if end.is_some_and(|e| start >= e) {
            // Still say "not found" for a missing object, and "changed" for another version.
            let meta = self.head(key)?;
            if etag.is_some_and(|t| t != meta.etag) {
                return Err(changed());
            }
            return Ok(Box::new(io::empty()));
        }
        let range = match end {
            Some(e) => format!("bytes={start}-{}", e - 1),
            None => format!("bytes={start}-"),
        };
        let mut req = self.client.get_object().bucket(&self.bucket).key(key).range(range);
        if let Some(t) = etag {
            req = req.if_match(format!("\"{t}\""));
        }
        match self.rt.block_on(req.send()) {
            Ok(out) => Ok(Box::new(Body { stream: out.body, chunk: Default::default(), rt: self.rt.clone() })),
            Err(e) => {
                if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) {
                    return Err(changed());
                }
                if let Some(s) = e.as_service_error() {
                    if s.is_no_such_key() {
                        return Err(StoreError::NotFound(key.to_string()));
                    }
                    if s.code() == Some("PreconditionFailed") {
                        return Err(changed());
                    }
                    if s.code() == Some("InvalidRange") {
                        // The range starts past the end (of the version asked for: S3 checks If-Match first).
                        return Ok(Box::new(io::empty()));
                    }
                }
                Err(sdk_error("S3 GetObject", e))
            }
        }
    }
}

fn presigning(secs: u64) -> Result<aws_sdk_s3::presigning::PresigningConfig, StoreError> {
    aws_sdk_s3::presigning::PresigningConfig::expires_in(std::time::Duration::from_secs(secs))
        .map_err(|e| StoreError::Other { message: e.to_string(), retryable: false })
}

/// Streams an S3 body as `Read`.
struct Body {
    stream: ByteStream,
    chunk: bytes_buf::Chunk,
    rt: Handle,
}

mod bytes_buf {
    /// The current piece of the body and how much of it was read.
    #[derive(Default)]
    pub struct Chunk {
        pub data: Vec<u8>,
        pub at: usize,
    }
}

impl Read for Body {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.chunk.at == self.chunk.data.len() {
            match self.rt.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(b)) => {
                    self.chunk.data.clear();
                    self.chunk.data.extend_from_slice(&b);
                    self.chunk.at = 0;
                }
                Some(Err(e)) => return Err(io::Error::other(e)),
            }
        }
        let n = out.len().min(self.chunk.data.len() - self.chunk.at);
        out[..n].copy_from_slice(&self.chunk.data[self.chunk.at..self.chunk.at + n]);
        self.chunk.at += n;
        Ok(n)
    }
}

impl ObjectStore for S3Store {
    fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let out = self.rt.block_on(self.client.head_object().bucket(&self.bucket).key(key).send()).map_err(|e| {
            if e.as_service_error().is_some_and(|s| s.is_not_found()) {
                StoreError::NotFound(key.to_string())
            } else {
                sdk_error("S3 HeadObject", e)
            }
        })?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            etag: out.e_tag().unwrap_or_default().trim_matches('"').to_string(),
        })
    }

    fn get_range(&self, key: &str, start: u64, end: Option<u64>) -> Result<Box<dyn Read + Send>, StoreError> {
        self.get(key, None, start, end)
    }

    fn get_range_of(
        &self,
        key: &str,
        etag: &str,
        start: u64,
        end: Option<u64>,
    ) -> Result<Box<dyn Read + Send>, StoreError> {
        self.get(key, Some(etag), start, end)
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let body = ByteStream::from(bytes.to_vec());
        self.rt
            .block_on(self.client.put_object().bucket(&self.bucket).key(key).body(body).send())
            .map_err(|e| sdk_error("S3 PutObject", e))?;
        Ok(())
    }

    fn put_stream(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StoreError> {
        Ok(Box::new(Multipart {
            store: self.clone(),
            key: key.to_string(),
            buf: Vec::new(),
            upload: None,
            parts: Vec::new(),
        }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let req =
                self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).set_continuation_token(token.clone());
            let page = self.rt.block_on(req.send()).map_err(|e| sdk_error("S3 ListObjectsV2", e))?;
            for o in page.contents() {
                out.push(ObjectMeta {
                    key: o.key().unwrap_or_default().to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: o.e_tag().unwrap_or_default().trim_matches('"').to_string(),
                });
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.rt
            .block_on(self.client.delete_object().bucket(&self.bucket).key(key).send())
            .map_err(|e| sdk_error("S3 DeleteObject", e))?;
        Ok(())
    }

    fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let mut deleted = 0u64;
        loop {
            // Each page is deleted before the next is listed, so listing from the start again sees what is left.
            let req = self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).max_keys(1000);
            let page = self.rt.block_on(req.send()).map_err(|e| sdk_error("S3 ListObjectsV2", e))?;
            let ids = page
                .contents()
                .iter()
                .filter_map(|o| o.key())
                .map(|k| {
                    ObjectIdentifier::builder()
                        .key(k)
                        .build()
                        .map_err(|e| StoreError::Other { message: format!("S3 DeleteObjects: {e}"), retryable: false })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if ids.is_empty() {
                return Ok(deleted);
            }
            let n = ids.len() as u64;
            let delete = Delete::builder()
                .set_objects(Some(ids))
                .quiet(true)
                .build()
                .map_err(|e| StoreError::Other { message: format!("S3 DeleteObjects: {e}"), retryable: false })?;
            let out = self
                .rt
                .block_on(self.client.delete_objects().bucket(&self.bucket).delete(delete).send())
                .map_err(|e| sdk_error("S3 DeleteObjects", e))?;
            if let Some(e) = out.errors().first() {
                return Err(StoreError::Other {
                    message: format!(
                        "S3 DeleteObjects: {}: {}",
                        e.key().unwrap_or_default(),
                        e.message().unwrap_or_default()
                    ),
                    retryable: true,
                });
            }
            deleted += n;
        }
    }

    fn uri(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }
}

/// A streaming upload: one PutObject if it stays under a part, else multipart.
struct Multipart {
    store: S3Store,
    key: String,
    buf: Vec<u8>,
    upload: Option<String>,
    parts: Vec<CompletedPart>,
}

impl Multipart {
    fn send_part(&mut self) -> Result<(), StoreError> {
        let s = &self.store;
        if self.upload.is_none() {
            let out =
                s.rt.block_on(s.client.create_multipart_upload().bucket(&s.bucket).key(&self.key).send())
                    .map_err(|e| sdk_error("S3 CreateMultipartUpload", e))?;
            self.upload = Some(out.upload_id().unwrap_or_default().to_string());
        }
        let n = self.parts.len() as i32 + 1;
        let body = ByteStream::new(SdkBody::from(std::mem::take(&mut self.buf)));
        let req = s
            .client
            .upload_part()
            .bucket(&s.bucket)
            .key(&self.key)
            .upload_id(self.upload.as_deref().unwrap_or_default())
            .part_number(n)
            .body(body);
        let out = s.rt.block_on(req.send()).map_err(|e| sdk_error("S3 UploadPart", e))?;
        self.parts.push(CompletedPart::builder().part_number(n).set_e_tag(out.e_tag().map(str::to_string)).build());
        Ok(())
    }
}

impl Write for Multipart {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // Up to the end of the part, and the buffer grows (doubling) to one
        // part at most.
        let part = self.store.part_size;
        let n = data.len().min(part - self.buf.len());
        if self.buf.len() + n > self.buf.capacity() {
            let want = (self.buf.len() + n).max((self.buf.capacity() * 2).min(part));
            self.buf.reserve_exact(want - self.buf.len());
        }
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == part {
            self.send_part().map_err(io::Error::other)?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for Multipart {
    fn finish(mut self: Box<Self>) -> Result<(), StoreError> {
        if self.upload.is_none() {
            let bytes = std::mem::take(&mut self.buf);
            return self.store.put(&self.key, &bytes);
        }
        if !self.buf.is_empty() {
            self.send_part()?;
        }
        let s = self.store.clone();
        let done = CompletedMultipartUpload::builder().set_parts(Some(std::mem::take(&mut self.parts))).build();
        let req = s
            .client
            .complete_multipart_upload()
            .bucket(&s.bucket)
            .key(&self.key)
            .upload_id(self.upload.take().unwrap_or_default())
            .multipart_upload(done);
        s.rt.block_on(req.send()).map_err(|e| sdk_error("S3 CompleteMultipartUpload", e))?;
        Ok(())
    }
}

impl Drop for Multipart {
    fn drop(&mut self) {
        if let Some(id) = self.upload.take() {
            let s = &self.store;
            let req = s.client.abort_multipart_upload().bucket(&s.bucket).key(&self.key).upload_id(id);
            if let Err(e) = s.rt.block_on(req.send()) {
                tracing::warn!(key = self.key, error = %aws_sdk_s3::error::DisplayErrorContext(&e), "could not abort a multipart upload");
            }
        }
    }
}
