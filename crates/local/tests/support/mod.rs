//! Helpers of the local pipeline tests: the shared fixtures and result files.

use std::path::{Path, PathBuf};

/// A file of the project's test fixtures (`tests/fixtures`).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name)
}

/// A file's text.
pub fn read(p: impl AsRef<Path>) -> String {
    String::from_utf8(std::fs::read(p.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", p.as_ref().display()))).unwrap()
}

/// The `part-*` files of `dir`, by name, with their text.
pub fn parts(dir: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("part-"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), read(&p)))
        .collect();
    v.sort();
    v
}

/// The result rows of `parts`, in order, without the header of each part.
pub fn rows_of(parts: &[(String, String)]) -> String {
    parts.iter().map(|(_, c)| c.split_once('\n').map_or("", |(_, rows)| rows)).collect()
}
