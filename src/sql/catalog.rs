//! The created views of a pipeline, by name: what the planner finds a view's name in, kept
//! in the state directory (`views.json`) so that a restart installs them again.
//!
//! ```text
//! CREATE VIEW spend AS SELECT customer, sum(amount) FROM transactions GROUP BY customer
//! → views.json: [{"id": 1, "name": "spend", "sql": "CREATE VIEW spend AS ...", "body": ...}]
//! restart → each statement planned again, in creation order, over the views before it
//! ```

use std::collections::BTreeMap;

use super::plan::{plan_in, Plan};
use super::relation::Relation;
use super::views::{next_id, register, FindView, ViewBody, ViewDef};

/// The created views of a pipeline, by name, with the logical time each answers from.
#[derive(Debug, Default)]
pub struct Catalog {
    views: BTreeMap<String, (ViewDef, u64)>,
    /// Names being created (lowercase): held from the check that a name is free until the
    /// view is added, so that of two `CREATE VIEW`s of one name (in any case) one fails.
    pending: std::collections::BTreeSet<String>,
    /// Where the definitions are kept across restarts (the state directory), if anywhere.
    file: Option<std::path::PathBuf>,
}

impl Catalog {
    /// A catalog kept in `dir/views.json`, with the views kept there (ids preserved).
    pub fn open(dir: Option<&std::path::Path>) -> anyhow::Result<Catalog> {
        use anyhow::Context;
        let file = dir.map(|d| d.join("views.json"));
        let mut catalog = Catalog { views: BTreeMap::new(), pending: Default::default(), file: file.clone() };
        if let Some(file) = file.filter(|f| f.exists()) {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let mut defs: Vec<ViewDef> =
                serde_json::from_str(&text).with_context(|| format!("{} is not a list of views", file.display()))?;
            // In creation order: a view over a view comes after its base.
            defs.sort_by_key(|d| d.id);
            let mut rewrite = false;
            for mut def in defs {
                // The body is planned again from the statement, over the views restored so
                // far: a damaged or hand-edited file is an error naming the view, never a
                // body that reads columns that are not there.
                def.body = match plan_in(&def.sql, &catalog) {
                    Ok(Plan::CreateView { body, name, .. }) if name == def.name => body,
                    Ok(_) => {
                        anyhow::bail!("{}: the statement of view {:?} does not create it", file.display(), def.name)
                    }
                    Err(e) => {
                        anyhow::bail!("{}: view {:?} cannot be restored: {}", file.display(), def.name, e.message)
                    }
                };
                if catalog.get(&def.name).is_some() || catalog.views.values().any(|(d, _)| d.id == def.id) {
                    // Only an older build wrote such a file (two creations of one name raced):
                    // the first one created stays, and the file is written again without the other.
                    tracing::warn!(
                        "{}: view {:?} (id {}) is defined twice; the first one created is kept",
                        file.display(),
                        def.name,
                        def.id
                    );
                    rewrite = true;
                    continue;
                }
                register(&def);
                next_id(def.id);
                catalog.views.insert(def.name.clone(), (def, 0));
            }
            if rewrite {
                catalog.save()?;
            }
        }
        Ok(catalog)
    }

    /// Holds `name` for a view being created: false when a view, or another creation, has it
    /// (in any case).
    pub fn reserve(&mut self, name: &str) -> bool {
        self.get(name).is_none() && self.pending.insert(name.to_lowercase())
    }

    /// Lets go of a name [`Catalog::reserve`] held.
    pub fn release(&mut self, name: &str) {
        self.pending.remove(&name.to_lowercase());
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

impl FindView for Catalog {
    fn find_view(&self, name: &str) -> Option<&ViewDef> {
        self.get(name)
    }
}
