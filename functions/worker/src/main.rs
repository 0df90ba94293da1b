//! A chunk task → the chunk's partial aggregate, stored and marked done.
#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    fanfold_lambda::run(fanfold_lambda::worker).await
}
