//! The output directory of `fanfold run`: what may be removed from it.
//!
//! A run replaces the results of an earlier run in the same directory
//! (their parts would otherwise mix with the new ones in a listing), but it
//! must never remove a file it did not write, least of all the file it
//! reads. So a run leaves a marker, [`MARKER`], beside its results; the
//! next run removes result-named files (`part-*.csv`, `manifest.json`,
//! `summary.json`, `athena.sql`) only where that marker is. Where the marker is missing
//! and such files exist, the run stops and names them. And whatever the
//! marker says, a directory whose result-named files include the input (by
//! file identity, so hard links and symlinks count) or that holds the input
//! under `_fanfold/` is refused before anything is touched.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The file that says "fanfold run wrote the results here".
pub const MARKER: &str = ".fanfold-out";

const MARKER_TEXT: &str = "This directory holds the results of `fanfold run`.\n\
The next run into it replaces part-*.csv, manifest.json, summary.json and athena.sql here.\n";

#[derive(Debug, thiserror::Error)]
pub enum OutDirError {
    #[error("output directory {dir}: {source}")]
    Io { dir: PathBuf, source: io::Error },
    #[error(
        "output directory {dir}: the input {input} would be replaced by the results (a result file or the \
         `_fanfold/` work area is the input): choose another --out"
    )]
    HoldsInput { dir: PathBuf, input: PathBuf },
    #[error(
        "output directory {dir} holds {first}{more}, which fanfold did not write (no {MARKER} marker): \
         choose an empty or new --out directory, or move them away"
    )]
    Foreign { dir: PathBuf, first: String, more: String },
}

/// Whether a file name is one of the names a run writes at the top of its
/// output directory.
pub fn is_result_name(name: &str) -> bool {
    (name.starts_with("part-") && name.ends_with(".csv"))
        || name == "manifest.json"
        || name == "summary.json"
        || name == "athena.sql"
}

/// Makes `dir` ready for a run reading `input`: creates it, checks that the
/// run can neither overwrite nor delete the input or a user's files, removes
/// the results of an earlier run and leaves the marker.
pub fn prepare(dir: &Path, input: &Path) -> Result<(), OutDirError> {
    let io_err = |source| OutDirError::Io { dir: dir.to_path_buf(), source };
    fs::create_dir_all(dir).map_err(io_err)?;
    let root = dir.canonicalize().map_err(io_err)?;
    let input_meta = fs::metadata(input).map_err(io_err)?;
    let same_file = |m: &fs::Metadata| m.dev() == input_meta.dev() && m.ino() == input_meta.ino();
    let input_abs = input.canonicalize().map_err(io_err)?;
    if input_abs.starts_with(root.join("_fanfold")) {
        return Err(OutDirError::HoldsInput { dir: root, input: input_abs });
    }
    let mut results = Vec::new();
    for entry in fs::read_dir(&root).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
        if !is_result_name(&name) {
            continue;
        }
        // Follows symlinks: a link to the input is the input.
        if fs::metadata(entry.path()).is_ok_and(|m| same_file(&m)) {
            return Err(OutDirError::HoldsInput { dir: root, input: input_abs });
        }
        results.push(name);
    }
    let marked = root.join(MARKER).is_file();
    if !marked && !results.is_empty() {
        results.sort();
        let more = match results.len() {
            1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        return Err(OutDirError::Foreign { dir: root, first: results.swap_remove(0), more });
    }
    for name in &results {
        match fs::remove_file(root.join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(e)),
            _ => {}
        }
    }
    if !marked {
        fs::write(root.join(MARKER), MARKER_TEXT).map_err(io_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn an_input_among_the_result_names_is_refused_and_kept() {
        let d = tmp();
        let input = d.path().join("part-00000.csv");
        fs::write(&input, "a,b\n1,2\n").unwrap();
        for out in [d.path().to_path_buf(), d.path().join(".")] {
            let err = prepare(&out, &input).unwrap_err();
            assert!(matches!(err, OutDirError::HoldsInput { .. }), "{err}");
        }
        // Marked or not, a link to the input is the input.
        fs::write(d.path().join(MARKER), "").unwrap();
        assert!(matches!(prepare(d.path(), &input), Err(OutDirError::HoldsInput { .. })));
        let other = tmp();
        let elsewhere = other.path().join("data.csv");
        fs::hard_link(&input, &elsewhere).unwrap();
        assert!(matches!(prepare(d.path(), &elsewhere), Err(OutDirError::HoldsInput { .. })));
        fs::remove_file(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&input, &elsewhere).unwrap();
        assert!(matches!(prepare(d.path(), &elsewhere), Err(OutDirError::HoldsInput { .. })));
        assert_eq!(fs::read_to_string(&input).unwrap(), "a,b\n1,2\n");
    }

    #[test]
    fn an_input_in_the_work_area_is_refused() {
        let d = tmp();
        fs::create_dir_all(d.path().join("_fanfold/partials")).unwrap();
        let input = d.path().join("_fanfold/partials/x.csv");
        fs::write(&input, "a\n").unwrap();
        assert!(matches!(prepare(d.path(), &input), Err(OutDirError::HoldsInput { .. })));
    }

    #[test]
    fn files_fanfold_did_not_write_are_named_not_removed() {
        let d = tmp();
        let input_dir = tmp();
        let input = input_dir.path().join("in.csv");
        fs::write(&input, "a\n").unwrap();
        fs::write(d.path().join("summary.json"), "mine").unwrap();
        fs::write(d.path().join("part-7.csv"), "mine").unwrap();
        fs::write(d.path().join("notes.txt"), "mine").unwrap();
        let err = prepare(d.path(), &input).unwrap_err().to_string();
        assert!(err.contains("part-7.csv and 1 more") && err.contains("did not write"), "{err}");
        for f in ["summary.json", "part-7.csv", "notes.txt"] {
            assert_eq!(fs::read_to_string(d.path().join(f)).unwrap(), "mine");
        }
    }

    #[test]
    fn an_earlier_runs_results_are_replaced_and_other_files_kept() {
        let d = tmp();
        let input_dir = tmp();
        let input = input_dir.path().join("in.csv");
        fs::write(&input, "a\n").unwrap();
        let out = d.path().join("new/out");
        prepare(&out, &input).unwrap();
        assert!(out.join(MARKER).is_file());
        for f in ["part-00000-00000.csv", "manifest.json", "summary.json", "notes.txt"] {
            fs::write(out.join(f), "old").unwrap();
        }
        prepare(&out, &input).unwrap();
        let mut left: Vec<String> =
            fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, [MARKER, "notes.txt"]);
    }
}
