//! Crate-wide checks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The module a source file belongs to (`peer/client.rs` → `peer`); `None` for test-only files.
fn module_of(rel: &str) -> Option<String> {
    let name = rel.trim_end_matches(".rs");
    if name.ends_with("_tests") || name == "tests" || name.ends_with("/tests") || name == "lib" {
        return None;
    }
    let top = name.split('/').next().unwrap_or(name);
    Some(top.to_string())
}

fn sources(dir: &Path, base: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, base, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            // Test code may reach anywhere; only the shipped code counts.
            let shipped = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
            out.push((rel, shipped));
        }
    }
}

/// The crate's modules form layers: imports only go down (the issue 05
/// restructuring removed the cycle peer → inbound → repair → coordinator →
/// peer; this keeps it removed).
#[test]
fn import_graph_is_acyclic() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&base, &base, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in &files {
        let Some(module) = module_of(rel) else {
            continue;
        };
        let deps = graph.entry(module.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            let dep: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let dep = module_of(&format!("{dep}.rs")).unwrap_or_default();
            if !dep.is_empty() && dep != module && dep != "MAILBOX_CAPACITY" {
                deps.insert(dep);
            }
        }
        if let Some(list) = text.find("use crate::{") {
            let inner = &text[list + "use crate::{".len()..];
            let inner = &inner[..inner.find('}').unwrap_or(0)];
            for dep in inner.split(',') {
                let dep = dep.trim().split("::").next().unwrap_or("").to_string();
                if !dep.is_empty() && dep != module {
                    deps.insert(dep);
                }
            }
        }
    }
    // Depth-first search for a cycle.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for dep in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(dep, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
    assert!(
        graph["peer"]
            .iter()
            .all(|d| d == "wire" || d == "limits" || d == "faults"),
        "{:?}",
        graph["peer"]
    );
}
