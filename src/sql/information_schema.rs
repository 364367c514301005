//! `information_schema` as Postgres shows it — type names clients know (`numeric`, `bigint`,
//! `timestamp with time zone`), positions from 1 — for the clients that browse with it
//! (Grafana's query builder, DBeaver, SQLAlchemy's `inspect`, Metabase). DataFusion's own
//! names the types by Arrow (`Decimal128(38, 2)`) and counts from 0.
//!
//! | table | rows |
//! |---|---|
//! | `tables` | every relation of every schema: `BASE TABLE` or `VIEW` |
//! | `columns` | their columns: `data_type`, `udt_name`, `numeric_precision`/`_scale`, `is_nullable` |
//! | `views` | the views, with their definitions where they have one |
//! | `schemata` | `public`, `pg_catalog`, `information_schema` |
//!
//! Read at planning time from the session's catalog, so a view created a moment ago is
//! there. `SHOW TABLES` and `SHOW COLUMNS` read these tables too.
//!
//! ```text
//! SELECT column_name, data_type, ordinal_position FROM information_schema.columns
//!  WHERE table_name = 'customers';
//! customer | text   | 1
//! total    | numeric| 2   …
//! ```

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{CatalogProviderList, SchemaProvider, Session};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

/// The schema's name.
pub const NAME: &str = "information_schema";

/// The tables of one schema's worth of Postgres' `information_schema`.
#[derive(Debug)]
pub struct PgInformationSchema {
    catalogs: Weak<dyn CatalogProviderList>,
}

impl PgInformationSchema {
    /// Over the catalogs of a session (held weakly: the session holds this schema).
    pub fn new(catalogs: &Arc<dyn CatalogProviderList>) -> PgInformationSchema {
        PgInformationSchema { catalogs: Arc::downgrade(catalogs) }
    }
}

/// The tables it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Tables,
    Columns,
    Views,
    Schemata,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Tables, Kind::Columns, Kind::Views, Kind::Schemata];

    fn name(self) -> &'static str {
        match self {
            Kind::Tables => "tables",
            Kind::Columns => "columns",
            Kind::Views => "views",
            Kind::Schemata => "schemata",
        }
    }

    fn schema(self) -> SchemaRef {
        let text = |n: &str| Field::new(n, DataType::Utf8, true);
        let int = |n: &str| Field::new(n, DataType::Int32, true);
        Arc::new(Schema::new(match self {
            Kind::Tables => vec![
                text("table_catalog"),
                text("table_schema"),
                text("table_name"),
                text("table_type"),
                text("is_insertable_into"),
                text("is_typed"),
            ],
            Kind::Columns => vec![
                text("table_catalog"),
                text("table_schema"),
                text("table_name"),
                text("column_name"),
                int("ordinal_position"),
                text("column_default"),
                text("is_nullable"),
                text("data_type"),
                int("character_maximum_length"),
                int("numeric_precision"),
                int("numeric_scale"),
                int("datetime_precision"),
                text("udt_catalog"),
                text("udt_schema"),
                text("udt_name"),
                text("is_updatable"),
            ],
            Kind::Views => vec![
                text("table_catalog"),
                text("table_schema"),
                text("table_name"),
                text("view_definition"),
                text("check_option"),
                text("is_updatable"),
                text("is_insertable_into"),
            ],
            Kind::Schemata => vec![text("catalog_name"), text("schema_name"), text("schema_owner")],
        }))
    }
}

#[async_trait]
impl SchemaProvider for PgInformationSchema {
    fn table_names(&self) -> Vec<String> {
        Kind::ALL.iter().map(|k| k.name().to_owned()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let kind = Kind::ALL.into_iter().find(|k| k.name() == name.to_ascii_lowercase());
        Ok(kind.map(|kind| Arc::new(InfoTable { kind, catalogs: self.catalogs.clone() }) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        Kind::ALL.iter().any(|k| k.name() == name.to_ascii_lowercase())
    }
}

/// One of the tables, built when a statement scans it.
#[derive(Debug)]
struct InfoTable {
    kind: Kind,
    catalogs: Weak<dyn CatalogProviderList>,
}

#[async_trait]
impl TableProvider for InfoTable {
    fn schema(&self) -> SchemaRef {
        self.kind.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let catalogs =
            self.catalogs.upgrade().ok_or_else(|| DataFusionError::Internal("the session is gone".into()))?;
        let rows = rows(self.kind, catalogs.as_ref()).await?;
        let schema = self.kind.schema();
        let columns: Vec<ArrayRef> = (0..schema.fields().len())
            .map(|c| -> ArrayRef {
                match schema.field(c).data_type() {
                    DataType::Int32 => Arc::new(
                        rows.iter().map(|r| r[c].as_deref().and_then(|v| v.parse().ok())).collect::<Int32Array>(),
                    ),
                    _ => Arc::new(rows.iter().map(|r| r[c].as_deref()).collect::<StringArray>()),
                }
            })
            .collect();
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
        let exec = MemorySourceConfig::try_new_exec(&[vec![batch]], schema, projection.cloned())?;
        Ok(exec)
    }
}

/// One relation of the catalog.
struct Relation {
    catalog: String,
    schema: String,
    name: String,
    table: Arc<dyn TableProvider>,
}

/// Every relation of every catalog, this schema's own tables among them.
async fn relations(catalogs: &dyn CatalogProviderList) -> Result<Vec<Relation>> {
    let mut out = Vec::new();
    for catalog_name in catalogs.catalog_names() {
        let Some(catalog) = catalogs.catalog(&catalog_name) else { continue };
        for schema_name in catalog.schema_names() {
            let Some(schema) = catalog.schema(&schema_name) else { continue };
            let mut names = schema.table_names();
            names.sort();
            for name in names {
                if let Some(table) = schema.table(&name).await? {
                    out.push(Relation { catalog: catalog_name.clone(), schema: schema_name.clone(), name, table });
                }
            }
        }
    }
    Ok(out)
}

/// The rows of a table, each value as text (`None`: NULL).
async fn rows(kind: Kind, catalogs: &dyn CatalogProviderList) -> Result<Vec<Vec<Option<String>>>> {
    let text = |s: &str| Some(s.to_owned());
    let mut rows = Vec::new();
    match kind {
        Kind::Schemata => {
            for catalog_name in catalogs.catalog_names() {
                let Some(catalog) = catalogs.catalog(&catalog_name) else { continue };
                let mut names = catalog.schema_names();
                names.sort();
                for schema in names {
                    rows.push(vec![text(&catalog_name), text(&schema), text("lambda")]);
                }
            }
        }
        Kind::Tables => {
            for r in relations(catalogs).await? {
                let kind = match r.table.table_type() {
                    TableType::Base => "BASE TABLE",
                    TableType::View => "VIEW",
                    TableType::Temporary => "LOCAL TEMPORARY",
                };
                rows.push(vec![text(&r.catalog), text(&r.schema), text(&r.name), text(kind), text("NO"), text("NO")]);
            }
        }
        Kind::Views => {
            for r in relations(catalogs).await? {
                if r.table.table_type() == TableType::View {
                    let definition = r.table.get_table_definition().map(str::to_owned);
                    rows.push(vec![
                        text(&r.catalog),
                        text(&r.schema),
                        text(&r.name),
                        definition,
                        text("NONE"),
                        text("NO"),
                        text("NO"),
                    ]);
                }
            }
        }
        Kind::Columns => {
            for r in relations(catalogs).await? {
                for (i, field) in r.table.schema().fields().iter().enumerate() {
                    let ty = PgType::of(field.data_type());
                    let number = |n: Option<i32>| n.map(|n| n.to_string());
                    rows.push(vec![
                        text(&r.catalog),
                        text(&r.schema),
                        text(&r.name),
                        text(field.name()),
                        Some((i + 1).to_string()),
                        None,
                        text(if field.is_nullable() { "YES" } else { "NO" }),
                        text(ty.sql_name),
                        None,
                        number(ty.precision),
                        number(ty.scale),
                        number(ty.datetime_precision),
                        text(&r.catalog),
                        text("pg_catalog"),
                        text(ty.udt_name),
                        text("NO"),
                    ]);
                }
            }
        }
    }
    Ok(rows)
}

/// An Arrow type as Postgres names it.
struct PgType {
    /// The SQL standard's name (`data_type`).
    sql_name: &'static str,
    /// Postgres' own (`udt_name`).
    udt_name: &'static str,
    precision: Option<i32>,
    scale: Option<i32>,
    datetime_precision: Option<i32>,
}

impl PgType {
    fn of(ty: &DataType) -> PgType {
        let plain =
            |sql_name, udt_name| PgType { sql_name, udt_name, precision: None, scale: None, datetime_precision: None };
        match ty {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => plain("text", "text"),
            DataType::Boolean => plain("boolean", "bool"),
            DataType::Int8 | DataType::Int16 | DataType::UInt8 => {
                PgType { precision: Some(16), scale: Some(0), ..plain("smallint", "int2") }
            }
            DataType::Int32 | DataType::UInt16 => {
                PgType { precision: Some(32), scale: Some(0), ..plain("integer", "int4") }
            }
            DataType::Int64 | DataType::UInt32 | DataType::UInt64 => {
                PgType { precision: Some(64), scale: Some(0), ..plain("bigint", "int8") }
            }
            DataType::Float16 | DataType::Float32 => PgType { precision: Some(24), ..plain("real", "float4") },
            DataType::Float64 => PgType { precision: Some(53), ..plain("double precision", "float8") },
            DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => {
                PgType { precision: Some(i32::from(*p)), scale: Some(i32::from(*s)), ..plain("numeric", "numeric") }
            }
            DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => {
                PgType { precision: Some(i32::from(*p)), scale: Some(i32::from(*s)), ..plain("numeric", "numeric") }
            }
            DataType::Timestamp(_, Some(_)) => {
                PgType { datetime_precision: Some(6), ..plain("timestamp with time zone", "timestamptz") }
            }
            DataType::Timestamp(_, None) => {
                PgType { datetime_precision: Some(6), ..plain("timestamp without time zone", "timestamp") }
            }
            DataType::Date32 | DataType::Date64 => PgType { datetime_precision: Some(0), ..plain("date", "date") },
            DataType::Time32(_) | DataType::Time64(_) => {
                PgType { datetime_precision: Some(6), ..plain("time without time zone", "time") }
            }
            DataType::Interval(_) | DataType::Duration(_) => plain("interval", "interval"),
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
                plain("bytea", "bytea")
            }
            DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => plain("ARRAY", "_text"),
            _ => plain("USER-DEFINED", "text"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrow_types_have_their_postgres_names() {
        let money = PgType::of(&DataType::Decimal128(38, 2));
        assert_eq!(
            (money.sql_name, money.udt_name, money.precision, money.scale),
            ("numeric", "numeric", Some(38), Some(2))
        );
        let time = PgType::of(&DataType::Timestamp(
            datafusion::arrow::datatypes::TimeUnit::Microsecond,
            Some("+00:00".into()),
        ));
        assert_eq!((time.sql_name, time.udt_name), ("timestamp with time zone", "timestamptz"));
        assert_eq!(PgType::of(&DataType::Int64).sql_name, "bigint");
        assert_eq!(PgType::of(&DataType::Utf8).udt_name, "text");
    }
}
