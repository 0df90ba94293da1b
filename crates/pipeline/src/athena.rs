//! The table a DONE job's parts make for Athena (and Glue, and QuickSight
//! through Athena): its `CREATE EXTERNAL TABLE` statement, over
//! `results/<job>/data/` (where the parts are and nothing else). Group
//! columns are `string`; counts `bigint`; sums `bigint`, or
//! `decimal(38,s)` with the largest scale written (or past 64 bits); means
//! `double`; min and max as their values (`string` when text); first and
//! last `string`. Column names follow Athena's rule (lower-case letters,
//! digits and `_`): `Total Number of Plays for Date` is
//! `total_number_of_plays_for_date`; the header row is skipped.

use std::collections::HashSet;

use fanfold_engine::kinds::ValueKind;

use crate::ports::StoreError;
use fanfold_engine::Compiled;
use serde::{Deserialize, Serialize};

/// A job's table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    /// The Glue database.
    pub database: String,
    /// The table: `fanfold_<job id>`.
    pub name: String,
    /// (column, type), in the parts' order.
    pub columns: Vec<(String, String)>,
    /// Where the parts are (`s3://…/results/<job>/data/`).
    pub location: String,
    /// The parts' field delimiter.
    pub delimiter: char,
    /// The statement that creates it.
    pub ddl: String,
}

/// Where DONE jobs' tables are made (the Glue Data Catalog on AWS; none
/// locally, where `athena.sql` holds the statement). Making a table that
/// exists makes it again, the same.
pub trait TableCatalog: Send + Sync {
    /// Creates (or replaces) the table.
    fn create_table(&self, table: &Table) -> Result<(), StoreError>;
}

/// An output header name as an Athena column name, unique among `taken`.
pub fn column_name(header: &str, taken: &mut HashSet<String>) -> String {
    let mut c: String =
        header.chars().map(|ch| if ch.is_ascii_alphanumeric() { ch.to_ascii_lowercase() } else { '_' }).collect();
    while c.contains("__") {
        c = c.replace("__", "_");
    }
    let mut c = c.trim_matches('_').to_string();
    if c.is_empty() || c.starts_with(|ch: char| ch.is_ascii_digit()) {
        c = format!("c_{c}");
    }
    let mut name = c.clone();
    let mut n = 2;
    while !taken.insert(name.clone()) {
        name = format!("{c}_{n}");
        n += 1;
    }
    name
}

impl Table {
    /// The table of job `job`'s result.
    pub fn of(job: &str, compiled: &Compiled, kinds: &[ValueKind], database: &str, location: &str) -> Table {
        let groups = compiled.output_header.len() - compiled.aggs.len();
        let mut taken = HashSet::new();
        let columns: Vec<(String, String)> = compiled
            .output_header
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let t = match i.checked_sub(groups) {
                    None => "string".to_string(),
                    Some(a) => kinds.get(a).copied().unwrap_or_default().sql_type(compiled.aggs[a].op),
                };
                (column_name(h, &mut taken), t)
            })
            .collect();
        let name = format!("fanfold_{job}");
        let delimiter = compiled.dialect.delimiter as char;
        let sep = if delimiter == '\t' { "\\t".to_string() } else { delimiter.to_string().replace('\'', "\\'") };
        let cols: Vec<String> = columns.iter().map(|(c, t)| format!("  `{c}` {t}")).collect();
        let ddl = format!(
            "CREATE EXTERNAL TABLE IF NOT EXISTS `{database}`.`{name}` (\n{}\n)\n\
             ROW FORMAT SERDE 'org.apache.hadoop.hive.serde2.OpenCSVSerde'\n\
             WITH SERDEPROPERTIES ('separatorChar' = '{sep}', 'quoteChar' = '\"', 'escapeChar' = '\\\\')\n\
             STORED AS TEXTFILE\n\
             LOCATION '{}'\n\
             TBLPROPERTIES ('skip.header.line.count' = '1');\n",
            cols.join(",\n"),
            location.replace('\'', "%27"),
        );
        Table { database: database.to_string(), name, columns, location: location.to_string(), delimiter, ddl }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_become_athena_column_names_once_each() {
        let mut t = HashSet::new();
        assert_eq!(column_name("Total Number of Plays for Date", &mut t), "total_number_of_plays_for_date");
        assert_eq!(column_name("Song", &mut t), "song");
        assert_eq!(column_name("song", &mut t), "song_2", "unique");
        assert_eq!(column_name("2024 sales (€)", &mut t), "c_2024_sales");
        assert_eq!(column_name("", &mut t), "c_");
        assert_eq!(column_name("--", &mut t), "c__2");
    }

    #[test]
    fn the_statement_types_each_column_and_skips_the_header() {
        let spec = fanfold_engine::Spec::from_json(
            r#"{"group_by":["Song"],"aggregates":[{"op":"count","as":"n"},{"op":"sum","column":"v","as":"Total v"},{"op":"mean","column":"v","as":"avg"},{"op":"max","column":"Song","as":"last name"}]}"#,
        )
        .unwrap();
        let compiled = spec.compile(Some(&["Song".to_string(), "v".to_string()]), 2).unwrap();
        let kinds = [
            ValueKind::default(),
            ValueKind { scale: 2, ..ValueKind::default() },
            ValueKind::default(),
            ValueKind { text: true, ..ValueKind::default() },
        ];
        let t = Table::of("abc", &compiled, &kinds, "fanfold", "s3://b/results/abc/data/");
        assert_eq!(
            t.columns,
            [
                ("song", "string"),
                ("n", "bigint"),
                ("total_v", "decimal(38,2)"),
                ("avg", "double"),
                ("last_name", "string")
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert!(
            t.ddl.starts_with("CREATE EXTERNAL TABLE IF NOT EXISTS `fanfold`.`fanfold_abc` (\n  `song` string,\n"),
            "{}",
            t.ddl
        );
        assert!(t.ddl.contains("LOCATION 's3://b/results/abc/data/'"), "{}", t.ddl);
        assert!(t.ddl.contains("'skip.header.line.count' = '1'"), "{}", t.ddl);
        assert!(t.ddl.contains("'separatorChar' = ','"), "{}", t.ddl);
    }
}
