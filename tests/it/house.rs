//! The house rules a newcomer relies on when reading the code, checked over `src/`:
//! no module imports a module that (directly or through others) imports it back — so each
//! can be read knowing only what it imports — and no source file grows past 600 lines. A
//! module may use the items of the modules it is part of (its parents: `dataflow::Time` in
//! every part of the dataflow); those uses are not counted as imports.
//!
//! Imports are the paths written in the code outside comments and `#[cfg(test)]` modules:
//! `crate::a::b`, `super::b`, and a `mod.rs` naming its own child (`plan::Select`). A path
//! counts for the longest module it names (`crate::sql::plan::Select` → `sql::plan`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/sql/plan.rs` → `sql::plan`; `src/sql/mod.rs` → `sql`; `src/lib.rs` → ``.
fn module_of(root: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(root).expect("under src/").with_extension("");
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts.join("::")
}

/// The code without comments, and without the `#[cfg(test)]` part at its end.
fn code(text: &str) -> String {
    let text = text.find("#[cfg(test)]").map_or(text, |at| &text[..at]);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |at| &after[at..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |at| &after[at + 2..]);
        } else {
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The paths of identifiers joined by `::` that start at `prefix` (which must not follow a
/// letter, digit, `_` or `:`).
fn paths_after<'a>(code: &'a str, prefix: &'a str) -> impl Iterator<Item = Vec<&'a str>> + 'a {
    code.match_indices(prefix).filter_map(move |(at, _)| {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            return None;
        }
        let rest = &code[at + prefix.len()..];
        let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
        Some(rest[..end].split("::").filter(|s| !s.is_empty()).collect())
    })
}

/// Each module and the modules it imports.
fn imports(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(root, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(root, f)).collect();
    let longest = |parts: &[&str]| -> Option<String> {
        (1..=parts.len()).rev().map(|n| parts[..n].join("::")).find(|m| modules.contains(m))
    };
    let mut graph = BTreeMap::new();
    for file in &files {
        let module = module_of(root, file);
        let code = code(&std::fs::read_to_string(file).expect("a readable source file"));
        let is_parent = file.file_name().is_some_and(|n| n == "mod.rs" || n == "lib.rs");
        let mut base: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
        if !is_parent {
            base.pop();
        }
        let mut deps = BTreeSet::new();
        deps.extend(paths_after(&code, "crate::").filter_map(|p| longest(&p)));
        deps.extend(paths_after(&code, "super::").filter_map(|p| longest(&[&base[..], &p[..]].concat())));
        if is_parent {
            // A parent naming its child: `use plan::Select;`, `scan::merge_groups(..)`.
            let own: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
            for (at, _) in code.match_indices("::") {
                let start = code[..at].rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(0, |s| s + 1);
                if code[..start].ends_with("::") || start == at {
                    continue;
                }
                let child = [&own[..], &[&code[start..at]]].concat().join("::");
                if modules.contains(&child) {
                    deps.insert(child);
                }
            }
        }
        // A module may use its parents' items: a parent is the package its children are
        // parts of (`dataflow::Time` for every part of the dataflow).
        deps.retain(|d| !is_ancestor(d, &module));
        graph.insert(module, deps);
    }
    graph
}

/// Whether `ancestor` is `module` or contains it (`` and `sql` both contain `sql::plan`).
fn is_ancestor(ancestor: &str, module: &str) -> bool {
    ancestor.is_empty() || module == ancestor || module.starts_with(&format!("{ancestor}::"))
}

/// The modules `from` reaches through imports.
fn reach(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_owned()];
    while let Some(m) = stack.pop() {
        for next in graph.get(&m).into_iter().flatten() {
            if seen.insert(next.clone()) {
                stack.push(next.clone());
            }
        }
    }
    seen
}

#[test]
fn no_module_imports_itself_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = imports(&root);
    assert!(graph.len() > 50, "the walk found the modules ({} of them)", graph.len());
    assert!(graph["sql::views"].contains("sql::table"), "imports are found: {:?}", graph["sql::views"]);
    assert!(graph["sql"].contains("sql::read"), "a parent's imports of its children are found");
    let mut cycles = Vec::new();
    for (module, deps) in &graph {
        for dep in deps {
            if reach(&graph, dep).contains(module) {
                cycles.push(format!("{module} imports {dep}, which leads back to {module}"));
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn no_source_file_is_longer_than_600_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "examples"] {
        sources(&root.join(dir), &mut files);
    }
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).expect("readable").lines().count();
            (lines > 600).then(|| format!("{}: {lines} lines", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these files by idea:\n{}", long.join("\n"));
}

#[test]
fn the_import_reader_sees_through_comments_and_tests() {
    let code = code("use crate::a; // crate::b\n/* crate::c */ fn f() {}\n#[cfg(test)]\nmod tests { use crate::d; }");
    let found: Vec<Vec<&str>> = paths_after(&code, "crate::").collect();
    assert_eq!(found, vec![vec!["a"]]);
    let found: Vec<Vec<&str>> = paths_after("x::crate::y; my_crate::z; crate::p::Q", "crate::").collect();
    assert_eq!(found, vec![vec!["p", "Q"]]);
}
