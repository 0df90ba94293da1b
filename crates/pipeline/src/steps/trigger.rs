//! Dataset triggering: a file added to, replaced in or removed from a
//! dataset folder starts a new version once the folder has been quiet for
//! `Config::dataset_quiet_ms`, so that files dropped together make one job.
//!
//! Each event writes a mark `_fanfold/datasets/pending/<folder hash>/<ms>-<n>`
//! (never rewritten, so no event's mark can overwrite another's). The due
//! check (the sweeper on AWS, the watcher's loop in `fanfold serve`) lists
//! the marks; a folder whose newest mark is older than the quiet time gets
//! its version submitted from the folder as it is then, and exactly the
//! marks it listed are deleted: a mark written meanwhile stays and starts
//! the next version. Two checks at once submit the same file list, which
//! is the same job id: never two merges of one version.

use std::io::Read;

use fanfold_engine::Spec;
use sha2::{Digest, Sha256};

use super::Pipeline;
use crate::config::{now_ms, PipelineError, Submitted};
use crate::ports::StoreError;

const PENDING: &str = "_fanfold/datasets/pending/";

/// The folder of an `incoming/` key and its file name.
fn split_key(key: &str) -> Option<(&str, &str)> {
    let (dir, name) = key.rsplit_once('/')?;
    dir.starts_with("incoming/").then_some((dir, name))
}

impl Pipeline {
    /// The spec of folder `dir` when its `_spec.json` makes it a dataset.
    pub fn dataset_spec(&self, dir: &str) -> Result<Option<Spec>, PipelineError> {
        // A spec that does not parse is not a dataset's: its files are
        // rejected one by one with the reason (`submit_object`).
        Ok(self.folder_spec_text(dir)?.and_then(|t| Spec::from_json(&t).ok()).filter(|s| s.dataset))
    }

    /// Object `key` was created, replaced or removed. In a dataset folder
    /// the change is noted for the folder's next version and `true` is
    /// returned; elsewhere nothing happens (`false`).
    pub fn dataset_event(&self, key: &str) -> Result<bool, PipelineError> {
        let Some((dir, name)) = split_key(key) else { return Ok(false) };
        if self.dataset_spec(dir)?.is_none() {
            return Ok(false);
        }
        if crate::steps::is_dataset_file(name) {
            let mark = format!("{}{:013}-{}", Self::pending_prefix(dir), now_ms(), crate::config::unique_owner("e"));
            self.output.put(&mark, dir.as_bytes())?;
        }
        Ok(true)
    }

    fn pending_prefix(dir: &str) -> String {
        format!("{PENDING}{}/", hex::encode(&Sha256::digest(dir.as_bytes())[..12]))
    }

    /// Submits the version of every dataset folder quiet since
    /// `quiet_ms` before `now` (see the module docs). Returns a line per
    /// version started.
    pub fn start_due_datasets(&self, now: u64) -> Result<Vec<String>, PipelineError> {
        let mut marks = self.output.list(PENDING)?;
        marks.sort_by(|a, b| a.key.cmp(&b.key));
        let mut out = Vec::new();
        let mut i = 0;
        while i < marks.len() {
            let folder_of = |k: &str| k.rsplit_once('/').map(|(f, _)| f.to_string()).unwrap_or_default();
            let folder = folder_of(&marks[i].key);
            let j = i + marks[i..].iter().take_while(|m| folder_of(&m.key) == folder).count();
            let group = &marks[i..j];
            i = j;
            let newest = group.iter().filter_map(|m| mark_ms(&m.key)).max().unwrap_or(0);
            if newest.saturating_add(self.config.dataset_quiet_ms) > now {
                continue;
            }
            let dir = {
                let mut d = String::new();
                match self.output.get_range(&group[0].key, 0, None) {
                    Ok(mut r) => r.read_to_string(&mut d).map_err(StoreError::Io)?,
                    Err(StoreError::NotFound(_)) => continue, // another check took it
                    Err(e) => return Err(e.into()),
                };
                d
            };
            if let Some(s) = self.submit_due(&dir)? {
                out.push(format!("dataset {dir}: version {} {}", s.id, if s.new { "started" } else { "exists" }));
            }
            for m in group {
                self.output.delete(&m.key)?;
            }
        }
        Ok(out)
    }

    fn submit_due(&self, dir: &str) -> Result<Option<Submitted>, PipelineError> {
        match self.dataset_spec(dir)? {
            Some(spec) => Ok(Some(self.submit_dataset(dir, &spec, |_| true)?)),
            None => Ok(None), // no longer a dataset
        }
    }
}

/// The time of a mark `<prefix><ms>-<n>`.
fn mark_ms(key: &str) -> Option<u64> {
    key.rsplit('/').next()?.split('-').next()?.parse().ok()
}
