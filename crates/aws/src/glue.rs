//! `TableCatalog` as Glue `CreateTable`: a DONE job's parts become a table
//! Athena (and QuickSight through it) can query, in the stack's database.

use aws_sdk_glue::types::{Column, SerDeInfo, StorageDescriptor, TableInput};
use aws_sdk_glue::Client;
use fanfold_pipeline::athena::{Table, TableCatalog};
use fanfold_pipeline::StoreError;
use tokio::runtime::Handle;

use crate::sdk_error;

/// Creates tables in the Glue Data Catalog.
pub struct GlueCatalog {
    client: Client,
    rt: Handle,
}

impl GlueCatalog {
    /// A catalog client.
    pub fn new(config: &aws_config::SdkConfig, rt: Handle) -> Self {
        let conf = aws_sdk_glue::config::Builder::from(config).interceptor(crate::requests::CountRequests).build();
        GlueCatalog { client: Client::from_conf(conf), rt }
    }
}

/// The Glue form of the table `Table::ddl` states.
fn table_input(t: &Table) -> Result<TableInput, StoreError> {
    let bad = |e: aws_sdk_glue::error::BuildError| StoreError::Other { message: e.to_string(), retryable: false };
    let columns = t
        .columns
        .iter()
        .map(|(name, ty)| Column::builder().name(name).r#type(ty).build().map_err(bad))
        .collect::<Result<Vec<_>, _>>()?;
    let serde = SerDeInfo::builder()
        .serialization_library("org.apache.hadoop.hive.serde2.OpenCSVSerde")
        .parameters("separatorChar", t.delimiter.to_string())
        .parameters("quoteChar", "\"")
        .parameters("escapeChar", "\\")
        .build();
    let storage = StorageDescriptor::builder()
        .set_columns(Some(columns))
        .location(&t.location)
        .input_format("org.apache.hadoop.mapred.TextInputFormat")
        .output_format("org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat")
        .serde_info(serde)
        .build();
    TableInput::builder()
        .name(&t.name)
        .table_type("EXTERNAL_TABLE")
        .parameters("classification", "csv")
        .parameters("skip.header.line.count", "1")
        .storage_descriptor(storage)
        .build()
        .map_err(bad)
}

impl TableCatalog for GlueCatalog {
    fn create_table(&self, t: &Table) -> Result<(), StoreError> {
        let input = table_input(t)?;
        let created =
            self.rt.block_on(self.client.create_table().database_name(&t.database).table_input(input.clone()).send());
        match created {
            Ok(_) => Ok(()),
            // A commit that runs again: the same table, made the same.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_already_exists_exception()) => {
                let req = self.client.update_table().database_name(&t.database).table_input(input);
                self.rt.block_on(req.send()).map(|_| ()).map_err(|e| sdk_error("Glue UpdateTable", e))
            }
            Err(e) => Err(sdk_error("Glue CreateTable", e)),
        }
    }
}
