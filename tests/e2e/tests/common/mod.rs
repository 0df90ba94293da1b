//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

// The fixtures and result-file helpers the local pipeline tests use too.
#[path = "../../../../crates/local/tests/support/mod.rs"]
mod support;
#[allow(unused_imports)] // not every test binary uses every helper
pub use support::{fixture, parts, read, rows_of};

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

/// `fanfold gen --profile bmat` into `dir/name`: about `size` bytes from `seed`.
pub fn gen_bmat(dir: &Path, name: &str, size: &str, seed: u64) -> PathBuf {
    let p = dir.join(name);
    let seed = seed.to_string();
    let out = fanfold(&["gen", "--profile", "bmat", "--size", size, "-o", p.to_str().unwrap(), "--seed", &seed], dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    p
}
