//! The jobs API behind API Gateway: `fanfold_api`'s router on lambda_http.
#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    fanfold_lambda::run_api().await
}
