//! Views created at run time: `CREATE VIEW name AS SELECT ...`, a definition every worker
//! installs on the running dataflow ([`crate::dataflow::created`]).
//!
//! Two kinds:
//!
//! | definition | how it is kept |
//! |---|---|
//! | `SELECT [key,] aggregates FROM transactions [WHERE] [GROUP BY key] [HAVING]` | a dataflow of its own, fed the live transactions (backfilled from the version table when it is created, then every change), that keeps per key count, total, min and max, arranged by key |
//! | `SELECT columns FROM <view> [WHERE]` (a view over a view's rows) | nothing more: read from that view's arrangement, filtered |
//!
//! The key is `customer`, `category`, `date_trunc('hour' \| 'day', ts)` or nothing; the
//! aggregates are `count(*)` and `count`, `sum`, `min`, `max`, `avg` of `amount`.
//!
//! ```text
//! CREATE VIEW big_spenders AS SELECT customer, sum(amount) AS total, count(*) FROM transactions
//!   WHERE amount >= 100 GROUP BY customer HAVING sum(amount) > 200
//! → Aggregate { key: Customer, filter: amount >= 100, stage: [customer, sum, count],
//!               columns: customer ← 0, total ← 1, count ← 2, having: $1 > 200 }
//! ```
//!
//! A created view's relation is [`Relation::View`]: its schema is registered here, once per
//! process, when the view is installed (its column names then live as long as the process:
//! a few bytes per view created).

use std::collections::BTreeMap;
use std::sync::{Mutex, RwLock};

use serde::{Deserialize, Serialize};

use super::expr::{Expr, Unit};
use super::plan::{AggFunc, Select};
use super::relation::Relation;
use super::value::{Type, Value};
use super::SqlError;
use crate::dataflow::rows::CustomerRow;

/// What a created view is grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ViewKey {
    /// One group (no `GROUP BY`).
    Nothing,
    /// `GROUP BY customer`
    Customer,
    /// `GROUP BY category` (NULL is a group)
    Category,
    /// `GROUP BY date_trunc('hour', ts)` (NULL for no event time)
    Hour,
    /// `GROUP BY date_trunc('day', ts)`
    Day,
}

impl ViewKey {
    /// The key of a transaction row (`id, customer, amount, category, ts`).
    pub fn of(self, row: &[Value]) -> Value {
        let truncate = |step: i64| match row[4] {
            Value::Timestamp(t) => Value::Timestamp(t.div_euclid(step) * step),
            _ => Value::Null,
        };
        match self {
            ViewKey::Nothing => Value::Null,
            ViewKey::Customer => row[1].clone(),
            ViewKey::Category => row[3].clone(),
            ViewKey::Hour => truncate(3600),
            ViewKey::Day => truncate(86_400),
        }
    }

    /// The key of a transaction: what [`ViewKey::of`] gives for its row, without building
    /// the row (a maintained view computes it for every change it is fed).
    pub fn of_txn(self, txn: &crate::event::Txn) -> Value {
        let truncate = |step: i64| txn.ts.map_or(Value::Null, |t| Value::Timestamp(t.div_euclid(step) * step));
        match self {
            ViewKey::Nothing => Value::Null,
            ViewKey::Customer => Value::Text(std::sync::Arc::clone(&txn.customer)),
            ViewKey::Category => txn.category.as_ref().map_or(Value::Null, |c| Value::Text(std::sync::Arc::clone(c))),
            ViewKey::Hour => truncate(3600),
            ViewKey::Day => truncate(86_400),
        }
    }

    fn ty(self) -> Type {
        match self {
            ViewKey::Hour | ViewKey::Day => Type::Timestamp,
            _ => Type::Text,
        }
    }
}

/// How a created view is computed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ViewBody {
    /// Maintained by a dataflow over the live transactions.
    Aggregate {
        /// Transactions kept (`WHERE`, over the transaction row).
        filter: Option<Expr>,
        /// The group key.
        key: ViewKey,
        /// The aggregates, in the order of the stage row (after the key, if any).
        aggs: Vec<AggFunc>,
        /// `HAVING`, over the stage row.
        having: Option<Expr>,
        /// Each column: its name and the stage row's value it shows.
        columns: Vec<(String, usize)>,
    },
    /// Another relation's rows that pass a filter.
    Filter {
        /// The relation read.
        base: Relation,
        /// Rows kept, over the base's row.
        filter: Option<Expr>,
        /// Each column: its name and the base row's value it shows.
        columns: Vec<(String, usize)>,
    },
}

/// A created view, as installed on every worker and kept in the state directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewDef {
    /// Unique in this process's life (and in the state directory).
    pub id: u64,
    /// Its name.
    pub name: String,
    /// The statement that created it.
    pub sql: String,
    /// How it is computed.
    pub body: ViewBody,
}

impl ViewDef {
    /// Its columns' names and types.
    pub fn columns(&self) -> Vec<(String, Type)> {
        match &self.body {
            ViewBody::Aggregate { key, aggs, columns, .. } => {
                let keyed = usize::from(*key != ViewKey::Nothing);
                let stage: Vec<Type> = (0..keyed)
                    .map(|_| key.ty())
                    .chain(aggs.iter().map(|a| if *a == AggFunc::Count { Type::BigInt } else { Type::Numeric }))
                    .collect();
                columns.iter().map(|(n, i)| (n.clone(), stage[*i])).collect()
            }
            ViewBody::Filter { base, columns, .. } => {
                let types = base.columns();
                columns.iter().map(|(n, i)| (n.clone(), types[*i].1)).collect()
            }
        }
    }

    /// The column a read can seek on: the group key, when it is shown first; for a view over
    /// a view, its base's key column.
    pub fn key_column(&self) -> Option<usize> {
        match &self.body {
            ViewBody::Aggregate { key, columns, .. } if *key != ViewKey::Nothing => {
                (columns.first().map(|(_, i)| *i) == Some(0)).then_some(0)
            }
            // A view over a view's rows keeps its base's key, where it shows it.
            ViewBody::Filter { base, columns, .. } => {
                let key = base.key()?;
                columns.iter().position(|(_, i)| *i == key)
            }
            _ => None,
        }
    }

    /// A maintained group's row as the view shows it, or `None` when `HAVING` leaves it out.
    pub fn row(&self, key: &Value, row: &CustomerRow) -> Option<Vec<Value>> {
        let ViewBody::Aggregate { key: kind, aggs, having, columns, .. } = &self.body else { return None };
        let mut stage = Vec::with_capacity(aggs.len() + 1);
        if *kind != ViewKey::Nothing {
            stage.push(key.clone());
        }
        stage.extend(aggs.iter().map(|a| match a {
            AggFunc::Count => Value::Int(row.count),
            AggFunc::Sum => Value::Numeric(row.total),
            AggFunc::Min => Value::Numeric(i128::from(row.min)),
            AggFunc::Max => Value::Numeric(i128::from(row.max)),
            AggFunc::Avg => Value::Numeric(super::expr::divide_rounded(row.total, i128::from(row.count.max(1)))),
        }));
        if having.as_ref().is_some_and(|h| !h.accepts(&stage)) {
            return None;
        }
        Some(columns.iter().map(|(_, i)| stage[*i].clone()).collect())
    }
}

/// Turns a planned `SELECT` into a view's body, or says which construct a view cannot have.
pub fn body(select: &Select) -> Result<ViewBody, SqlError> {
    let unsupported = |what: &str| Err(SqlError::unsupported(format!("{what} in a view")));
    if !select.order.is_empty() || select.limit.is_some() || select.offset > 0 {
        return unsupported("ORDER BY, LIMIT or OFFSET");
    }
    let scan = &select.scan;
    let columns: Result<Vec<(String, usize)>, SqlError> = select
        .output
        .iter()
        .map(|(name, e, _)| match e {
            Expr::Column(i) => Ok((name.clone(), *i)),
            other => Err(SqlError::unsupported(format!(
                "the expression {other:?} as a column of a view (name a column or an aggregate)"
            ))),
        })
        .collect();
    let columns = columns?;
    if let Some((name, _)) = columns
        .iter()
        .enumerate()
        .find_map(|(i, (n, _))| columns[..i].iter().find(|(m, _)| m.eq_ignore_ascii_case(n)).map(|c| (c.0.clone(), i)))
    {
        return Err(SqlError::new("42701", format!("column \"{name}\" specified more than once (name it with AS)")));
    }
    // A sink writes each row as JSON with its logical `time` beside the columns: a column of
    // that name would be overwritten there (and dropped when the sink reads its topic back).
    if let Some((name, _)) = columns.iter().find(|(n, _)| n.eq_ignore_ascii_case("time")) {
        return Err(SqlError::new(
            "42939",
            format!("column name \"{name}\" is reserved for the logical time of a view's changes (name it with AS)"),
        ));
    }
    match (&scan.group, scan.relation) {
        (None, Relation::Transactions) => {
            unsupported("a view of single transactions (group them, or query transactions)")
        }
        (None, base) => {
            if select.having.is_some() {
                return unsupported("HAVING without GROUP BY");
            }
            Ok(ViewBody::Filter { base, filter: scan.filter.clone(), columns })
        }
        (Some(_), relation) if relation != Relation::Transactions => {
            unsupported("GROUP BY over another view (group the transactions)")
        }
        (Some((keys, aggs)), _) => {
            let key = match keys.as_slice() {
                [] => ViewKey::Nothing,
                [Expr::Column(1)] => ViewKey::Customer,
                [Expr::Column(3)] => ViewKey::Category,
                [Expr::DateTrunc(Unit::Hour, ts)] if **ts == Expr::Column(4) => ViewKey::Hour,
                [Expr::DateTrunc(Unit::Day, ts)] if **ts == Expr::Column(4) => ViewKey::Day,
                _ => return unsupported("a GROUP BY other than customer, category or date_trunc('hour' | 'day', ts)"),
            };
            let mut funcs = Vec::new();
            for agg in aggs {
                match (&agg.arg, agg.func) {
                    (None, AggFunc::Count) | (Some(Expr::Column(2)), _) => funcs.push(agg.func),
                    _ => return unsupported("an aggregate of something else than amount (or count(*))"),
                }
            }
            if let Some(filter) = &scan.filter {
                let mut read = Vec::new();
                filter.columns(&mut read);
                if read.contains(&0) {
                    return unsupported("a filter on id");
                }
            }
            Ok(ViewBody::Aggregate {
                filter: scan.filter.clone(),
                key,
                aggs: funcs,
                having: select.having.clone(),
                columns,
            })
        }
    }
}

/// A created view's schema, as the planner and the readers see it.
#[derive(Debug)]
pub struct Schema {
    /// Its name.
    pub name: &'static str,
    /// Its columns.
    pub columns: &'static [(&'static str, Type)],
    /// The column a read can seek on.
    pub key: Option<usize>,
}

static SCHEMAS: RwLock<BTreeMap<u64, &'static Schema>> = RwLock::new(BTreeMap::new());

/// Registers `def`'s schema for [`Relation::View`] (once per id in this process).
pub fn register(def: &ViewDef) {
    if schema(def.id).is_some() {
        return;
    }
    // Before taking the lock: a view over a view reads its base's schema.
    let (columns, key) = (def.columns(), def.key_column());
    let mut schemas = SCHEMAS.write().unwrap_or_else(|p| p.into_inner());
    if schemas.contains_key(&def.id) {
        return;
    }
    let columns: Vec<(&'static str, Type)> =
        columns.into_iter().map(|(n, t)| (&*Box::leak(n.into_boxed_str()), t)).collect();
    let schema = Schema {
        name: Box::leak(def.name.clone().into_boxed_str()),
        columns: Box::leak(columns.into_boxed_slice()),
        key,
    };
    schemas.insert(def.id, Box::leak(Box::new(schema)));
}

/// The schema of created view `id`, if registered.
pub fn schema(id: u64) -> Option<&'static Schema> {
    SCHEMAS.read().unwrap_or_else(|p| p.into_inner()).get(&id).copied()
}

/// A new view id, unique in this process and above `floor` (the ids in the state directory).
pub fn next_id(floor: u64) -> u64 {
    static NEXT: Mutex<u64> = Mutex::new(1);
    let mut next = NEXT.lock().unwrap_or_else(|p| p.into_inner());
    *next = (*next).max(floor + 1);
    *next += 1;
    *next - 1
}

/// The created views of a pipeline, by name, with the logical time each answers from.
#[derive(Debug, Default)]
pub struct Catalog {
    views: BTreeMap<String, (ViewDef, u64)>,
    /// Where the definitions are kept across restarts (the state directory), if anywhere.
    file: Option<std::path::PathBuf>,
}

impl Catalog {
    /// A catalog kept in `dir/views.json`, with the views kept there (ids preserved).
    pub fn open(dir: Option<&std::path::Path>) -> anyhow::Result<Catalog> {
        use anyhow::Context;
        let file = dir.map(|d| d.join("views.json"));
        let mut catalog = Catalog { views: BTreeMap::new(), file: file.clone() };
        if let Some(file) = file.filter(|f| f.exists()) {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let mut defs: Vec<ViewDef> =
                serde_json::from_str(&text).with_context(|| format!("{} is not a list of views", file.display()))?;
            // In creation order: a view over a view comes after its base.
            defs.sort_by_key(|d| d.id);
            for mut def in defs {
                // The body is planned again from the statement, over the views restored so
                // far: a damaged or hand-edited file is an error naming the view, never a
                // body that reads columns that are not there.
                def.body = match super::plan::plan_in(&def.sql, &catalog) {
                    Ok(super::plan::Plan::CreateView { body, name, .. }) if name == def.name => body,
                    Ok(_) => {
                        anyhow::bail!("{}: the statement of view {:?} does not create it", file.display(), def.name)
                    }
                    Err(e) => {
                        anyhow::bail!("{}: view {:?} cannot be restored: {}", file.display(), def.name, e.message)
                    }
                };
                if catalog.get(&def.name).is_some() || catalog.views.values().any(|(d, _)| d.id == def.id) {
                    anyhow::bail!("{}: view {:?} is defined twice", file.display(), def.name);
                }
                register(&def);
                next_id(def.id);
                catalog.views.insert(def.name.clone(), (def, 0));
            }
        }
        Ok(catalog)
    }

    /// The view named `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&ViewDef> {
        self.views.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, (d, _))| d)
    }

    /// Every view, with the time it answers from (0 when not known yet), in creation order
    /// (a view over a view after its base).
    pub fn all(&self) -> impl Iterator<Item = (&ViewDef, u64)> {
        let mut all: Vec<(&ViewDef, u64)> = self.views.values().map(|(d, t)| (d, *t)).collect();
        all.sort_by_key(|(d, _)| d.id);
        all.into_iter()
    }

    /// Adds a view, created at `time`, and writes the definitions down.
    pub fn add(&mut self, def: ViewDef, time: u64) -> anyhow::Result<()> {
        self.views.insert(def.name.clone(), (def, time));
        self.save()
    }

    /// Notes the time a view answers from (for one restored at start).
    pub fn created_at(&mut self, id: u64, time: u64) {
        if let Some((_, t)) = self.views.values_mut().find(|(d, _)| d.id == id) {
            *t = (*t).max(time);
        }
    }

    /// Removes a view and writes the definitions down.
    pub fn remove(&mut self, name: &str) -> anyhow::Result<Option<ViewDef>> {
        let key = self.views.keys().find(|n| n.eq_ignore_ascii_case(name)).cloned();
        let removed = key.and_then(|k| self.views.remove(&k)).map(|(d, _)| d);
        self.save()?;
        Ok(removed)
    }

    /// The views whose definitions read `base` (they must go first).
    pub fn dependents(&self, base: Relation) -> Vec<String> {
        self.views
            .values()
            .filter(|(d, _)| matches!(&d.body, ViewBody::Filter { base: b, .. } if *b == base))
            .map(|(d, _)| d.name.clone())
            .collect()
    }

    /// Writes every definition to the state directory, atomically (a temporary file renamed).
    fn save(&self) -> anyhow::Result<()> {
        use anyhow::Context;
        let Some(file) = &self.file else { return Ok(()) };
        let defs: Vec<&ViewDef> = self.all().map(|(d, _)| d).collect();
        let temporary = file.with_extension("json.tmp");
        std::fs::write(&temporary, serde_json::to_vec_pretty(&defs).expect("views serialize"))
            .and_then(|()| std::fs::File::open(&temporary)?.sync_all())
            .and_then(|()| std::fs::rename(&temporary, file))
            .with_context(|| format!("cannot write {}", file.display()))
    }
}

#[cfg(test)]
mod tests {
    use crate::sql::plan::{plan, Plan};

    #[test]
    fn a_view_column_cannot_be_named_time() {
        for name in ["time", "\"Time\""] {
            let sql =
                format!("CREATE VIEW v AS SELECT customer, count(*) AS {name} FROM transactions GROUP BY customer");
            let error = plan(&sql).err().unwrap_or_else(|| panic!("{sql} was accepted"));
            assert_eq!(error.code, "42939", "{}", error.message);
        }
        let sql = "CREATE VIEW v AS SELECT customer, count(*) AS times FROM transactions GROUP BY customer";
        assert!(matches!(plan(sql), Ok(Plan::CreateView { .. })));
    }
}
