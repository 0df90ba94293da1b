//! S3 object created under `incoming/` → a job, split into chunk tasks.
#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    fanfold_lambda::run(fanfold_lambda::splitter).await
}
