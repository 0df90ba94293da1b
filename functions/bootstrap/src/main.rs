//! Every fanfold Lambda function: the function's `Handler` (`splitter`,
//! `worker`, `finalizer`, `sweeper` or `api`) names the role it plays.
#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    fanfold_lambda::main_from_env().await
}
