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

/// How [`drain_shuffled`] treats a task that returns an error.
#[allow(dead_code)] // not every test file drains a queue
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OnTaskError {
    /// The test fails.
    Panic,
    /// The task's job fails, as the worker pool does with a task that fails for good.
    FailJob,
}

/// Runs every task of `queue` in an order shuffled by `seed`, each
/// delivered `copies` times, until the queue is empty.
#[allow(dead_code)]
pub fn drain_shuffled(
    p: &fanfold_pipeline::Pipeline,
    queue: &fanfold_pipeline::contract::QueueDispatcher,
    seed: u64,
    copies: usize,
    on_error: OnTaskError,
) {
    let mut rng = seed | 1;
    let mut step = 0;
    loop {
        let task = {
            let mut q = queue.0.lock().unwrap();
            if q.is_empty() {
                break;
            }
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let i = (rng % q.len() as u64) as usize;
            q.remove(i).unwrap()
        };
        for c in 0..copies {
            match (p.run_task(&task, &format!("owner-{step}-{c}")), on_error) {
                (Ok(()), _) => {}
                (Err(e), OnTaskError::Panic) => panic!("{task:?}: {e}"),
                (Err(e), OnTaskError::FailJob) => p.fail_task(task.job(), &e, 1).unwrap(),
            }
        }
        step += 1;
    }
}
