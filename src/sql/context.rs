//! The DataFusion session every statement is planned in: the relations under `lambda.public`,
//! `information_schema` (Postgres' shape: [`super::information_schema`]), `pg_catalog` (from `datafusion-pg-catalog`: what psql's `\d`,
//! SQLAlchemy, DBeaver and Grafana ask when they connect), this engine's functions
//! ([`super::functions`]), exact decimal literals (`1.5` is `numeric`, as in Postgres), and
//! one pool of memory for all the statements together.

use std::sync::Arc;

use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;

use super::table::LiveTable;
use crate::compute::relation::BUILT_IN;

/// The catalog's name, as `current_database()` says it.
pub const CATALOG: &str = "lambda";
/// The schema the relations are in.
pub const SCHEMA: &str = "public";
/// The most memory the statements' operators may hold together (their sorts, hash tables,
/// joins); a statement that needs more is refused (53200).
pub const MEMORY_BYTES: usize = 2 << 30;

/// A session over the built-in relations of a pipeline of `workers` workers reading `topic`,
/// for statements run on `partitions` threads.
pub fn session(topic: &str, workers: usize, partitions: usize) -> anyhow::Result<SessionContext> {
    let mut config = SessionConfig::new()
        .with_default_catalog_and_schema(CATALOG, SCHEMA)
        .with_create_default_catalog_and_schema(true)
        .with_information_schema(false)
        .with_target_partitions(partitions.max(1));
    let options = config.options_mut();
    options.sql_parser.parse_float_as_decimal = true;
    options.sql_parser.dialect = datafusion::config::Dialect::PostgreSQL;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(MEMORY_BYTES, 1.0)
        .build_arc()
        .map_err(|e| anyhow::anyhow!("cannot set up the SQL engine's memory: {e}"))?;
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        // After DataFusion's own rules: joins yield (see `cooperative.rs`).
        .with_physical_optimizer_rule(Arc::new(super::cooperative::JoinsYield))
        .build();
    let context = SessionContext::new_with_state(state);
    for relation in BUILT_IN {
        context
            .register_table(
                relation.name(),
                Arc::new(
                    LiveTable::built_in(relation, topic, workers).defined_by(super::builtin::definition(relation)),
                ),
            )
            .map_err(|e| anyhow::anyhow!("cannot register {}: {e}", relation.name()))?;
    }
    super::functions::register(&context);
    datafusion_pg_catalog::setup_pg_catalog(
        &context,
        CATALOG,
        datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
    )
    .map_err(|e| anyhow::anyhow!("cannot set up pg_catalog: {e}"))?;
    // Postgres' `information_schema`, in place of DataFusion's (see `information_schema.rs`).
    let catalog = context.catalog(CATALOG).ok_or_else(|| anyhow::anyhow!("no catalog {CATALOG}"))?;
    let schema = super::information_schema::PgInformationSchema::new(context.state().catalog_list());
    catalog
        .register_schema(super::information_schema::NAME, Arc::new(schema))
        .map_err(|e| anyhow::anyhow!("cannot set up information_schema: {e}"))?;
    // Integer arithmetic that fails on overflow (see `checked.rs`).
    context.add_analyzer_rule(Arc::new(super::checked::CheckedArithmetic::new()));
    // Ours, over pg_catalog's and DataFusion's of the same names.
    super::functions::register(&context);
    Ok(context)
}
