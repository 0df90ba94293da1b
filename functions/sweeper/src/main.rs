//! Scheduled: re-dispatches work whose time ran out; fails jobs past their budget.
#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    fanfold_lambda::run(fanfold_lambda::sweeper).await
}
