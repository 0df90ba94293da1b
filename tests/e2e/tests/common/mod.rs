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

/// The `fanfold` binary, built once (a test package cannot name another
/// package's binary). Built as `scripts/cloud-local` builds the functions:
/// the test profile and every target, exactly what `cargo test --workspace`
/// built, so nothing is compiled again (in the dev profile this was a
/// second build of every dependency, ~100 s in CI), and without the package
/// variables cargo sets for this test (a changed `CARGO_MANIFEST_DIR` reruns
/// build scripts).
pub fn fanfold_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-q", "--profile", "test", "--workspace", "--all-targets"]).current_dir(&root);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            let package_var = ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_BIN_"].iter().any(|p| k.starts_with(p))
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                    "OUT_DIR",
                ]
                .contains(&k.as_ref());
            if package_var {
                cmd.env_remove(k.as_ref());
            }
        }
        let status = cmd.status().expect("run cargo build");
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
