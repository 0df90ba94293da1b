//! A bounded pool of worker threads: the local [`Dispatcher`].
//!
//! Tasks go into a queue; `workers` threads take them and run the
//! pipeline's step. A task that fails with a retryable error is tried again
//! (up to three attempts, as Lambda retries async invokes); otherwise the
//! job is failed with the reason.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;

use fanfold_pipeline::{Dispatcher, Pipeline, PipelineError, StoreError, Task};

const ATTEMPTS: u32 = 3;

/// What the pool's threads do with a task: the pipeline's step, or in the
/// dispatcher's contract test, a recorder.
pub trait RunTask: Send + Sync + 'static {
    /// Runs one task; `owner` names the thread (for leases).
    fn run_task(&self, task: &Task, owner: &str) -> Result<(), PipelineError>;
    /// The task failed for good after `attempts` tries.
    fn failed(&self, task: &Task, error: &PipelineError, attempts: u32);
}

impl RunTask for Pipeline {
    fn run_task(&self, task: &Task, owner: &str) -> Result<(), PipelineError> {
        Pipeline::run_task(self, task, owner)
    }
    fn failed(&self, task: &Task, error: &PipelineError, attempts: u32) {
        let _ = self.fail_task(task.job(), error, attempts);
    }
}

#[derive(Default)]
struct Queue {
    tasks: VecDeque<(Task, u32)>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

/// The sending side; cheap to clone into the pipeline.
#[derive(Clone, Default)]
pub struct PoolDispatcher {
    shared: Arc<Shared>,
}

impl Dispatcher for PoolDispatcher {
    fn dispatch(&self, tasks: Vec<Task>) -> Result<(), StoreError> {
        let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.closed {
            return Err(StoreError::Other { message: "the worker pool is shut down".into(), retryable: false });
        }
        q.tasks.extend(tasks.into_iter().map(|t| (t, 1)));
        drop(q);
        self.shared.ready.notify_all();
        Ok(())
    }
}

/// The worker threads.
pub struct Pool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl PoolDispatcher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts `workers` threads running tasks against `pipeline`. The
    /// pipeline holds this dispatcher, so the threads hold it weakly.
    pub fn start<R: RunTask>(&self, pipeline: &Arc<R>, workers: usize) -> Pool {
        let threads = (0..workers.max(1))
            .map(|n| {
                let shared = self.shared.clone();
                let pipeline: Weak<R> = Arc::downgrade(pipeline);
                std::thread::Builder::new()
                    .name(format!("fanfold-worker-{n}"))
                    .spawn(move || worker(n, &shared, &pipeline))
                    .expect("spawn a worker thread")
            })
            .collect();
        Pool { shared: self.shared.clone(), threads }
    }
}

fn worker<R: RunTask>(n: usize, shared: &Shared, pipeline: &Weak<R>) {
    let owner = format!("local-{}-{n}", std::process::id());
    loop {
        let (task, attempt) = {
            let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(t) = q.tasks.pop_front() {
                    break t;
                }
                if q.closed {
                    return;
                }
                q = shared.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        let Some(p) = pipeline.upgrade() else { return };
        // A panic is a bug, not a reason to hang: the task fails for good
        // (its job with it) and the thread goes on with the next one.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.run_task(&task, &owner))).unwrap_or_else(
            |panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(PipelineError::Invalid(format!("internal error: the task panicked: {what}")))
            },
        );
        if let Err(e) = ran {
            let job = task.job().to_string();
            if e.retryable() && attempt < ATTEMPTS {
                tracing::warn!(job, attempt, error = %e, "task failed; retrying");
                let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
                q.tasks.push_back((task, attempt + 1));
                drop(q);
                shared.ready.notify_one();
            } else {
                tracing::error!(job, attempt, error = %e, "task failed");
                p.failed(&task, &e, attempt);
            }
        }
    }
}

impl Pool {
    /// Whether every worker thread has stopped (they stop only when the
    /// pool closes, unless something outside a task's panic guard killed
    /// them): a run that waits for its job must not wait for ever then.
    pub fn stopped(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    /// Lets queued tasks finish, then stops the threads.
    pub fn shutdown(mut self) {
        self.close();
    }

    fn close(&mut self) {
        {
            let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.closed = true;
        }
        self.shared.ready.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.close();
    }
}
