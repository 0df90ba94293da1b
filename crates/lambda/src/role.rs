//! One bootstrap for every function: the function's `Handler` setting
//! (Lambda puts it in the environment as `_HANDLER`) names the role it
//! plays. One binary links the AWS SDK once instead of five times, which is
//! most of a cold release build (see docs/architecture.md, "Deployed shape").

use crate::{finalizer, run, run_api, splitter, sweeper, worker};

/// What a function does, named by its `Handler`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// S3 object created under `incoming/` → a job, split into chunk tasks.
    Splitter,
    /// A chunk task → the chunk's partial aggregate, stored and marked done.
    Worker,
    /// Dispatch, plan, reduce and commit tasks: the fan-in.
    Finalizer,
    /// Scheduled: re-dispatches work whose time ran out; fails jobs past their budget.
    Sweeper,
    /// The jobs API behind API Gateway.
    Api,
}

impl Role {
    /// Every role, in the order the template declares the functions.
    pub const ALL: [Role; 5] = [Role::Splitter, Role::Worker, Role::Finalizer, Role::Sweeper, Role::Api];

    /// The `Handler` value that selects this role.
    pub fn handler(self) -> &'static str {
        match self {
            Role::Splitter => "splitter",
            Role::Worker => "worker",
            Role::Finalizer => "finalizer",
            Role::Sweeper => "sweeper",
            Role::Api => "api",
        }
    }

    /// The role a `Handler` value names, or an error that lists them.
    pub fn from_handler(handler: &str) -> Result<Role, String> {
        Role::ALL.into_iter().find(|r| r.handler() == handler).ok_or_else(|| {
            let names: Vec<_> = Role::ALL.iter().map(|r| r.handler()).collect();
            format!("the function's Handler is {handler:?}; it must name a role: {}", names.join(", "))
        })
    }

    /// Serves this role's events until the runtime stops the process.
    pub async fn serve(self) -> Result<(), lambda_runtime::Error> {
        match self {
            Role::Splitter => run(splitter).await,
            Role::Worker => run(worker).await,
            Role::Finalizer => run(finalizer).await,
            Role::Sweeper => run(sweeper).await,
            Role::Api => run_api().await,
        }
    }
}

/// The bootstrap's `main`: the role named by `_HANDLER`, served.
pub async fn main_from_env() -> Result<(), lambda_runtime::Error> {
    let handler = std::env::var("_HANDLER").unwrap_or_default();
    Role::from_handler(&handler)?.serve().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_is_named_by_its_handler_and_nothing_else_is_a_role() {
        for r in Role::ALL {
            assert_eq!(Role::from_handler(r.handler()), Ok(r));
        }
        let e = Role::from_handler("bootstrap").unwrap_err();
        assert!(e.contains("\"bootstrap\"") && e.contains("splitter, worker, finalizer, sweeper, api"), "{e}");
        assert!(Role::from_handler("").is_err());
        assert!(Role::from_handler("Worker").is_err());
    }
}
