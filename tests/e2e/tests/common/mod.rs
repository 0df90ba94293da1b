//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(name)
}

/// The `fanfold` binary, built once (a test package cannot name another package's binary).
pub fn fanfold_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "fanfold", "--bin", "fanfold"])
            .current_dir(&root)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building fanfold failed");
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
        target.join("debug").join("fanfold")
    })
}

pub fn fanfold(args: &[&str], cwd: &Path) -> Output {
    Command::new(fanfold_bin()).args(args).current_dir(cwd).output().expect("run fanfold")
}

pub fn read(p: impl AsRef<Path>) -> String {
    String::from_utf8(std::fs::read(p.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", p.as_ref().display()))).unwrap()
}

/// `fanfold gen --profile bmat` into `dir/name`: about `size` bytes from `seed`.
pub fn gen_bmat(dir: &Path, name: &str, size: &str, seed: u64) -> PathBuf {
    let p = dir.join(name);
    let seed = seed.to_string();
    let out = fanfold(&["gen", "--profile", "bmat", "--size", size, "-o", p.to_str().unwrap(), "--seed", &seed], dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    p
}

/// The part files of a result directory, in name order: (name, content).
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
