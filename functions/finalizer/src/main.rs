//! A finalize task → the merged, capped result files, manifest and summary.
#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    fanfold_lambda::run(fanfold_lambda::finalizer).await
}
