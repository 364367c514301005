//! The views created at run time, by name: the one place their definitions are kept — in the
//! state directory (`views.json`), so that a restart installs them again — and from which they
//! are registered with DataFusion, so that every statement, `information_schema` and
//! `pg_catalog` (psql's `\dv`) find them.
//!
//! ```text
//! CREATE VIEW spend AS SELECT customer, sum(amount) FROM transactions GROUP BY customer
//! → views.json: [{"id": 1, "name": "spend", "sql": "CREATE VIEW spend AS ...",
//!                 "maintained": {"id": 1, "key": "Customer", "filter": null}, "reads": ["transactions"]}]
//! restart → each statement planned again, in creation order, over the views before it
//! ```
//!
//! Tables ([`crate::table`]) are kept beside them (`tables.json`), by the same names: a name
//! is a table's or a view's, not both.
//!
//! Names are case-insensitive, as unquoted SQL names are: `spend` and `SPEND` are one view.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::dataflow::created::Maintained;
use crate::table::TableDef;

/// A created view, as kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewDef {
    /// Unique in this pipeline's life (and in its state directory).
    pub id: u64,
    /// Its name, as created.
    pub name: String,
    /// The statement that created it.
    pub sql: String,
    /// What the workers keep of it (none: a view over another relation's rows, read through).
    #[serde(default)]
    pub maintained: Option<Maintained>,
    /// The relations its `SELECT` reads.
    #[serde(default)]
    pub reads: Vec<String>,
    /// The column a row of it is named by (its group key, or its base's key), if it shows one:
    /// found when it is planned.
    #[serde(skip)]
    pub key: Option<(usize, String)>,
}

/// The created views of a pipeline, with the logical time each answers from.
#[derive(Debug, Default)]
pub struct Catalog {
    views: BTreeMap<String, (ViewDef, u64)>,
    tables: BTreeMap<String, TableDef>,
    /// Names being created (lowercase): held from the check that a name is free until the
    /// view is added, so that of two `CREATE VIEW`s of one name (in any case) one fails.
    pending: BTreeSet<String>,
    /// Where the definitions are kept across restarts (the state directory), if anywhere.
    file: Option<std::path::PathBuf>,
    /// The next id.
    next: u64,
}

impl Catalog {
    /// A catalog kept in `dir/views.json`, with the definitions kept there (in creation
    /// order). Two views of one name (an older build let concurrent creations race) keep the
    /// first one created; the file is written again without the other.
    pub fn open(dir: Option<&std::path::Path>) -> anyhow::Result<Catalog> {
        use anyhow::Context;
        let file = dir.map(|d| d.join("views.json"));
        let mut catalog = Catalog { file: file.clone(), next: 1, ..Catalog::default() };
        if let Some(file) = file.filter(|f| f.exists()) {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let mut defs: Vec<ViewDef> =
                serde_json::from_str(&text).with_context(|| format!("{} is not a list of views", file.display()))?;
            defs.sort_by_key(|d| d.id);
            let mut rewrite = false;
            for def in defs {
                catalog.next = catalog.next.max(def.id + 1);
                if catalog.get(&def.name).is_some() || catalog.views.values().any(|(d, _)| d.id == def.id) {
                    tracing::warn!(
                        "{}: view {:?} (id {}) is defined twice; the first one created is kept",
                        file.display(),
                        def.name,
                        def.id
                    );
                    rewrite = true;
                    continue;
                }
                catalog.views.insert(def.name.to_lowercase(), (def, 0));
            }
            if rewrite {
                catalog.save()?;
            }
        }
        if let Some(file) = dir.map(|d| d.join("tables.json")).filter(|f| f.exists()) {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let defs: Vec<TableDef> =
                serde_json::from_str(&text).with_context(|| format!("{} is not a list of tables", file.display()))?;
            for def in defs {
                catalog.next = catalog.next.max(def.id + 1);
                catalog.tables.insert(def.name.to_lowercase(), def);
            }
        }
        Ok(catalog)
    }

    /// A new view id.
    pub fn next_id(&mut self) -> u64 {
        self.next += 1;
        self.next - 1
    }

    /// The view named `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&ViewDef> {
        self.views.get(&name.to_lowercase()).map(|(d, _)| d)
    }

    /// Every view, with the time it answers from (0 when not known yet), in creation order
    /// (a view over a view after its base).
    pub fn all(&self) -> Vec<(ViewDef, u64)> {
        let mut all: Vec<(ViewDef, u64)> = self.views.values().cloned().collect();
        all.sort_by_key(|(d, _)| d.id);
        all
    }

    /// Holds `name` for a view or table being created: false when a view, a table, or another
    /// creation, has it (in any case).
    pub fn reserve(&mut self, name: &str) -> bool {
        self.get(name).is_none() && self.table(name).is_none() && self.pending.insert(name.to_lowercase())
    }

    /// The table named `name` (case-insensitive).
    pub fn table(&self, name: &str) -> Option<&TableDef> {
        self.tables.get(&name.to_lowercase())
    }

    /// Every table, in creation order.
    pub fn tables(&self) -> Vec<TableDef> {
        let mut all: Vec<TableDef> = self.tables.values().cloned().collect();
        all.sort_by_key(|d| d.id);
        all
    }

    /// Adds a table and writes the definitions down.
    pub fn add_table(&mut self, def: TableDef) -> anyhow::Result<()> {
        self.tables.insert(def.name.to_lowercase(), def);
        self.save()
    }

    /// Removes a table and writes the definitions down.
    pub fn remove_table(&mut self, name: &str) -> anyhow::Result<Option<TableDef>> {
        let removed = self.tables.remove(&name.to_lowercase());
        self.save()?;
        Ok(removed)
    }

    /// Lets go of a name [`Catalog::reserve`] held.
    pub fn release(&mut self, name: &str) {
        self.pending.remove(&name.to_lowercase());
    }

    /// Adds a view, created at `time`, and writes the definitions down.
    pub fn add(&mut self, def: ViewDef, time: u64) -> anyhow::Result<()> {
        self.views.insert(def.name.to_lowercase(), (def, time));
        self.save()
    }

    /// Replaces a view's definition as planned again at start (what it keeps), without writing.
    pub fn planned(&mut self, def: ViewDef) {
        if let Some((kept, _)) = self.views.get_mut(&def.name.to_lowercase()) {
            *kept = def;
        }
    }

    /// Notes the time a view answers from (for one restored at start).
    pub fn created_at(&mut self, id: u64, time: u64) {
        if let Some((_, t)) = self.views.values_mut().find(|(d, _)| d.id == id) {
            *t = (*t).max(time);
        }
    }

    /// Removes a view and writes the definitions down.
    pub fn remove(&mut self, name: &str) -> anyhow::Result<Option<ViewDef>> {
        let removed = self.views.remove(&name.to_lowercase()).map(|(d, _)| d);
        self.save()?;
        Ok(removed)
    }

    /// The views that read relation `name` (they must go first).
    pub fn dependents(&self, name: &str) -> Vec<String> {
        let name = name.to_lowercase();
        self.views
            .values()
            .filter(|(d, _)| d.reads.iter().any(|r| r.to_lowercase() == name))
            .map(|(d, _)| d.name.clone())
            .collect()
    }

    /// Writes every definition to the state directory, atomically (a temporary file renamed).
    fn save(&self) -> anyhow::Result<()> {
        let Some(file) = &self.file else { return Ok(()) };
        let defs: Vec<ViewDef> = self.all().into_iter().map(|(d, _)| d).collect();
        write_atomically(file, &serde_json::to_vec_pretty(&defs).expect("views serialize"))?;
        let tables = file.with_file_name("tables.json");
        if self.tables.is_empty() && !tables.exists() {
            return Ok(());
        }
        write_atomically(&tables, &serde_json::to_vec_pretty(&self.tables()).expect("tables serialize"))
    }
}

/// Writes `bytes` to `file` through a temporary file renamed over it.
fn write_atomically(file: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    let temporary = file.with_extension("json.tmp");
    std::fs::write(&temporary, bytes)
        .and_then(|()| std::fs::File::open(&temporary)?.sync_all())
        .and_then(|()| std::fs::rename(&temporary, file))
        .with_context(|| format!("cannot write {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(id: u64, name: &str) -> ViewDef {
        ViewDef {
            id,
            name: name.into(),
            sql: format!("CREATE VIEW {name} AS SELECT 1"),
            maintained: None,
            reads: vec!["customers".into()],
            key: None,
        }
    }

    #[test]
    fn names_are_held_in_any_case_until_let_go() {
        let mut catalog = Catalog::default();
        assert!(catalog.reserve("race"));
        assert!(!catalog.reserve("RACE"), "held");
        catalog.add(def(1, "race"), 5).unwrap();
        catalog.release("race");
        assert!(!catalog.reserve("Race"), "taken");
        assert_eq!(catalog.get("RACE").map(|d| d.id), Some(1));
        assert_eq!(catalog.dependents("Customers"), ["race"]);
    }

    #[test]
    fn a_file_with_twins_keeps_the_first_and_is_written_again() {
        let dir = std::env::temp_dir().join(format!("catalog-twins-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("views.json"), serde_json::to_vec(&[def(2, "RACE"), def(1, "race")]).unwrap()).unwrap();
        let mut catalog = Catalog::open(Some(&dir)).unwrap();
        assert_eq!(catalog.all().iter().map(|(d, _)| d.id).collect::<Vec<_>>(), [1]);
        assert_eq!(catalog.next_id(), 3, "ids are never given twice");
        let again = Catalog::open(Some(&dir)).unwrap();
        assert_eq!(again.all().len(), 1, "the file was written without the twin");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
