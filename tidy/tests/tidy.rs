//! The source tree's own rules, checked on every test run:
//! - the engine's layers (`engine/src/lib.rs`) import only downward, and its log and projections
//!   know nothing of each other;
//! - in every crate, no two source files import each other (directly or through others);
//! - no source file has more than 600 lines of code before its test module.
//!
//! Test code (`#[cfg(test)]` to the end of a file, or a file of tests) may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The engine's top-level modules and their layers: a module may import its own and lower
/// layers only.
const ENGINE_LAYERS: &[(&str, u8)] = &[
    ("error", 0),
    ("model", 0),
    ("codec", 1),
    ("identity", 2),
    ("storage", 2),
    ("log", 3),
    ("projection", 3),
    ("writer", 4),
    ("commands", 5),
    ("store", 6),
    ("testkit", 7),
    ("fuzz_targets", 8),
];

/// Engine modules of one layer that must not import each other.
const ENGINE_STRANGERS: &[(&str, &str)] = &[("log", "projection"), ("projection", "log")];

/// Crates whose sources are checked for cycles and size.
const CRATES: &[&str] = &["engine", "node", "replay-tool", "benches", "proto"];

/// Source files over this many lines of code want splitting by concern.
const FILE_LINES_MAX: usize = 600;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(read) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = read.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a source file relative to `src`: `model/event/plain_header.rs` ->
/// `model::event::plain_header`; `lib.rs` and `main.rs` -> ``; `bin/x.rs` -> `bin::x`.
fn module_of(src: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(src).unwrap_or(path).with_extension("");
    let parts: Vec<String> = relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    if parts == ["lib"] || parts == ["main"] {
        String::new()
    } else {
        parts.join("::")
    }
}

/// A file's code before its test module; `None` for a file of tests.
fn code(path: &Path, text: &str) -> Option<String> {
    let name = path.file_stem()?.to_string_lossy();
    if name == "tests" || name.ends_with("_tests") {
        return None;
    }
    Some(text.split("#[cfg(test)]\nmod ").next().unwrap_or(text).to_string())
}

/// Every `crate::a::b` path a piece of code names, as the longest prefix that is a module.
fn imports(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in code.lines().map(str::trim).filter(|line| !line.starts_with("//")) {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let path: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
            let mut segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            while !segments.is_empty() && !modules.contains(&segments.join("::")) {
                segments.pop();
            }
            if !segments.is_empty() {
                out.insert(segments.join("::"));
            }
        }
    }
    out
}

/// A crate's modules, each with its code (test files left out) and the modules it imports.
struct Crate {
    files: Vec<(String, PathBuf, String)>,
    edges: BTreeMap<String, BTreeSet<String>>,
}

fn read_crate(name: &str) -> Crate {
    let src = workspace().join(name).join("src");
    let mut paths = Vec::new();
    sources(&src, &mut paths);
    let modules: BTreeSet<String> = paths.iter().map(|path| module_of(&src, path)).collect();
    let mut files = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in paths {
        let module = module_of(&src, &path);
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let Some(code) = code(&path, &text) else { continue };
        for imported in imports(&code, &modules) {
            // A module's own children and parents are one unit (`mod` declarations, re-exports).
            let related = imported == module
                || module.starts_with(&format!("{imported}::"))
                || imported.starts_with(&format!("{module}::"));
            if !related {
                edges.entry(module.clone()).or_default().insert(imported);
            }
        }
        files.push((module, path, code));
    }
    Crate { files, edges }
}

/// Every cycle of imports, as one line each (each cycle named once, from its smallest module).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut found = Vec::new();
    for start in edges.keys() {
        // Depth-first search for a path back to `start` through modules greater than it.
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            for next in edges.get(&at).into_iter().flatten() {
                if next == start {
                    found.push(format!("{} -> {start}", path.join(" -> ")));
                } else if next > start && seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    found
}

fn engine_layer(module: &str) -> Option<u8> {
    let top = module.split("::").next().unwrap_or_default();
    ENGINE_LAYERS.iter().find(|(name, _)| *name == top).map(|(_, layer)| *layer)
}

#[test]
fn the_engine_imports_only_downward_through_its_layers() {
    let engine = read_crate("engine");
    let mut wrong = Vec::new();
    for (module, _, _) in &engine.files {
        let Some(own) = engine_layer(module) else {
            assert!(module.is_empty(), "engine module {module} is in no layer: add it to ENGINE_LAYERS");
            continue;
        };
        let top = module.split("::").next().unwrap_or_default();
        for imported in engine.edges.get(module).into_iter().flatten() {
            let target = imported.split("::").next().unwrap_or_default();
            let Some(theirs) = engine_layer(imported) else { continue };
            if theirs > own || ENGINE_STRANGERS.contains(&(top, target)) {
                wrong.push(format!("{module} (layer {own}) imports {imported} (layer {theirs})"));
            }
        }
    }
    assert!(wrong.is_empty(), "the engine's layering is broken:\n{}", wrong.join("\n"));
}

#[test]
fn no_two_source_files_of_a_crate_import_each_other() {
    let mut wrong = Vec::new();
    for name in CRATES {
        for cycle in cycles(&read_crate(name).edges) {
            wrong.push(format!("{name}: {cycle}"));
        }
    }
    assert!(wrong.is_empty(), "modules that import each other:\n{}", wrong.join("\n"));
}

#[test]
fn no_source_file_is_longer_than_it_should_be() {
    let mut wrong = Vec::new();
    for name in CRATES {
        for (_, path, code) in read_crate(name).files {
            let lines = code.lines().count();
            if lines > FILE_LINES_MAX {
                wrong.push(format!("{} has {lines} lines of code", path.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "split these by concern (at most {FILE_LINES_MAX} lines):\n{}", wrong.join("\n"));
}

#[test]
fn the_checks_see_an_upward_import_and_a_cycle() {
    let modules: BTreeSet<String> = ["model", "model::merge", "store"].into_iter().map(String::from).collect();
    let found =
        imports("use crate::store::Store;\nuse crate::model::merge::{CaseState, Record};\n// crate::store", &modules);
    assert_eq!(found, ["model::merge".to_string(), "store".to_string()].into_iter().collect());
    assert!(engine_layer("store") > engine_layer("model::merge"));
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), ["b".to_string()].into_iter().collect()),
        ("b".to_string(), ["c".to_string()].into_iter().collect()),
        ("c".to_string(), ["a".to_string()].into_iter().collect()),
    ]
    .into_iter()
    .collect();
    assert_eq!(cycles(&edges), vec!["a -> b -> c -> a".to_string()]);
}
