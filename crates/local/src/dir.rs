//! An object store on a directory. Keys are `/`-separated relative paths;
//! no key can name anything outside the root: absolute keys, `..`, `.`,
//! empty segments, backslashes and NUL are refused, and a path that leads
//! out through a symlink is refused too. Writes go to a temporary file in
//! the same directory and are renamed into place, so a reader never sees
//! half an object.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use fanfold_pipeline::{ObjectMeta, ObjectStore, ObjectWriter, StoreError};

const TMP_PREFIX: &str = ".fanfold-tmp-";

pub struct DirStore {
    root: PathBuf,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// No such object: not there, or a "directory" on the way is a file
/// (`incoming/a.csv/b`).
fn is_missing(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

fn invalid(key: &str, reason: &'static str) -> StoreError {
    StoreError::InvalidKey { key: key.to_string(), reason }
}

/// Checks a key's shape (no file system access).
pub fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(invalid(key, "empty key"));
    }
    if key.len() > 1024 {
        return Err(invalid(key, "longer than 1024 bytes"));
    }
    if key.contains('\0') {
        return Err(invalid(key, "contains NUL"));
    }
    if key.contains('\\') {
        return Err(invalid(key, "contains a backslash"));
    }
    if key.starts_with('/') {
        return Err(invalid(key, "absolute"));
    }
    for seg in key.split('/') {
        match seg {
            "" => return Err(invalid(key, "empty path segment")),
            "." | ".." => return Err(invalid(key, "`.` or `..` segment")),
            s if s.starts_with(TMP_PREFIX) => return Err(invalid(key, "reserved name")),
            _ => {}
        }
    }
    Ok(())
}

impl DirStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn new(root: impl AsRef<Path>) -> io::Result<Self> {
        fs::create_dir_all(root.as_ref())?;
        Ok(DirStore { root: root.as_ref().canonicalize()? })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of a key, checked to stay under the root (symlinks included).
    fn path(&self, key: &str, create_parent: bool) -> Result<PathBuf, StoreError> {
        check_key(key)?;
        let path = self.root.join(key);
        let parent = path.parent().expect("a key has a parent under the root");
        if create_parent {
            fs::create_dir_all(parent)?;
        }
        match parent.canonicalize() {
            Ok(p) if p.starts_with(&self.root) => {}
            Ok(_) => return Err(invalid(key, "leads outside the store through a link")),
            Err(e) if is_missing(&e) => return Err(StoreError::NotFound(key.to_string())),
            Err(e) => return Err(e.into()),
        }
        if let Ok(m) = fs::symlink_metadata(&path) {
            if m.file_type().is_symlink() {
                let target = path.canonicalize().map_err(|_| StoreError::NotFound(key.to_string()))?;
                if !target.starts_with(&self.root) {
                    return Err(invalid(key, "leads outside the store through a link"));
                }
            }
        }
        Ok(path)
    }

    fn open(&self, key: &str) -> Result<(File, fs::Metadata), StoreError> {
        let path = self.path(key, false)?;
        let f =
            File::open(&path)
                .map_err(|e| if is_missing(&e) { StoreError::NotFound(key.to_string()) } else { e.into() })?;
        let m = f.metadata()?;
        if !m.is_file() {
            return Err(StoreError::NotFound(key.to_string()));
        }
        Ok((f, m))
    }
}

fn etag(m: &fs::Metadata) -> String {
    let mtime = m.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0);
    // The inode too: a file renamed over another with the same size and
    // modification time (`cp -p`, `mv`) is another version.
    format!("{:x}-{:x}-{:x}", m.len(), mtime, std::os::unix::fs::MetadataExt::ino(m))
}

/// Bytes `[start, end)` of an open file (clamped to its length).
fn read_range(mut f: File, m: &fs::Metadata, start: u64, end: Option<u64>) -> Result<Box<dyn Read + Send>, StoreError> {
    let end = end.unwrap_or(m.len()).min(m.len());
    let start = start.min(end);
    f.seek(SeekFrom::Start(start))?;
    Ok(Box::new(f.take(end - start)))
}

struct TmpWriter {
    tmp: PathBuf,
    dest: PathBuf,
    file: Option<io::BufWriter<File>>,
}

impl Write for TmpWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.as_mut().expect("open until finish").write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("open until finish").flush()
    }
}

impl ObjectWriter for TmpWriter {
    fn finish(mut self: Box<Self>) -> Result<(), StoreError> {
        let f = self.file.take().expect("finish once");
        f.into_inner().map_err(|e| e.into_error())?;
        fs::rename(&self.tmp, &self.dest)?;
        Ok(())
    }
}

impl Drop for TmpWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl DirStore {
    fn tmp_writer(&self, key: &str) -> Result<TmpWriter, StoreError> {
        let dest = self.path(key, true)?;
        if dest.is_dir() {
            return Err(invalid(key, "names a directory"));
        }
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dest.with_file_name(format!("{TMP_PREFIX}{}-{n}", std::process::id()));
        let file = File::create(&tmp)?;
        Ok(TmpWriter { tmp, dest, file: Some(io::BufWriter::with_capacity(1 << 20, file)) })
    }
}

impl ObjectStore for DirStore {
    fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let (_, m) = self.open(key)?;
        Ok(ObjectMeta { key: key.to_string(), size: m.len(), etag: etag(&m) })
    }

    fn get_range(&self, key: &str, start: u64, end: Option<u64>) -> Result<Box<dyn Read + Send>, StoreError> {
        let (f, m) = self.open(key)?;
        read_range(f, &m, start, end)
    }

    fn get_range_of(
        &self,
        key: &str,
        want: &str,
        start: u64,
        end: Option<u64>,
    ) -> Result<Box<dyn Read + Send>, StoreError> {
        // The open file is the version read: a rename over the key after
        // this check does not change what this reader sees.
        let (f, m) = self.open(key)?;
        if etag(&m) != want {
            return Err(StoreError::Changed { key: key.to_string(), etag: want.to_string() });
        }
        read_range(f, &m, start, end)
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let mut w = Box::new(self.tmp_writer(key)?);
        w.write_all(bytes)?;
        w.finish()
    }

    fn put_stream(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StoreError> {
        Ok(Box::new(self.tmp_writer(key)?))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut out = Vec::new();
        let mut stack = vec![(self.root.clone(), String::new())];
        while let Some((dir, rel)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            for e in entries {
                let e = e?;
                let Ok(name) = e.file_name().into_string() else { continue };
                if name.starts_with(TMP_PREFIX) {
                    continue;
                }
                let key = format!("{rel}{name}");
                let ft = e.file_type()?;
                if ft.is_dir() {
                    let sub = format!("{key}/");
                    if prefix.starts_with(&sub) || sub.starts_with(prefix) {
                        stack.push((e.path(), sub));
                    }
                } else if ft.is_file() && key.starts_with(prefix) {
                    let m = e.metadata()?;
                    out.push(ObjectMeta { key, size: m.len(), etag: etag(&m) });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key, false);
        let path = match path {
            Err(StoreError::NotFound(_)) => return Ok(()),
            p => p?,
        };
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        // Remove directories the delete left empty, up to the root.
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    fn uri(&self, key: &str) -> String {
        format!("file://{}", self.root.join(key).display())
    }
}
