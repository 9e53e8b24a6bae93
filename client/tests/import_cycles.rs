//! No import cycles between the files of `client/src` (ARCHITECTURE.md, "Layering").
//!
//! Run it alone with `cargo test -p kv-client --test import_cycles -- --nocapture`: it prints
//! every file's imports and fails naming the files of each cycle.
//!
//! An edge `a.rs → b.rs` is any path `crate::…`, `super::…` or `self::…` in `a.rs`'s code
//! (`use` trees included, comments excluded) that names an item of `b.rs`, and any
//! `use child::…` (a path relative to the module it is written in). `mod x;` lines
//! are not edges: declaring a child is not using it. A parent's re-export
//! (`pub use child::Item` in `mod.rs`) is an edge from the parent to the child, so a child
//! that imports through its parent (`crate::session::SessionEvent`) while the parent
//! re-exports from it shows up as a cycle, as it should.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`["tui", "app"]`) → file, for every `.rs` file under `src`.
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let mut parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            // bin/*.rs are crates of their own: their `crate::` is not the library's.
            if parts.first().map(String::as_str) == Some("bin") {
                continue;
            }
            if matches!(parts.last().map(String::as_str), Some("mod") | Some("lib")) {
                parts.pop();
            }
            out.insert(parts, path);
        }
    }
    out
}

/// The code of a file without comments (line comments, doc comments, block comments) and
/// without string literals, so neither can make an edge.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            while i < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') {
            // A char literal ('"' would otherwise open a string); lifetimes are left alone.
            let end = text[i + 1..].find('\'').map_or(b.len(), |e| i + 2 + e);
            i = end;
            out.push_str("' '");
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Every path the code names that starts with `crate`, `super` or `self`, with `use` trees
/// (`use crate::a::{b, c::d}`) expanded into one path per leaf. Each comes with the inline
/// modules it sits in (`mod tests { use super::*; }`), which `super` and `self` start from.
fn paths(code: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let toks = tokens(code);
    let mut out = Vec::new();
    // Inline modules open here: (name, brace depth inside it).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i].as_str();
        let starts = matches!(t, "crate" | "super" | "self")
            && toks.get(i + 1).map(String::as_str) == Some("::")
            && (i == 0 || toks[i - 1] != "::");
        if starts {
            let mut found = Vec::new();
            i = tree(&toks, i, Vec::new(), &mut found);
            let at: Vec<String> = inline.iter().map(|(n, _)| n.clone()).collect();
            out.extend(found.into_iter().map(|p| (at.clone(), p)));
            continue;
        }
        // `use child::Item;` (2018 paths): relative to the module it is written in. A
        // crate name (`use std::…`) resolves to the file itself, which is no edge.
        let relative_use = t == "use"
            && toks
                .get(i + 1)
                .is_some_and(|n| is_ident(n) && !matches!(n.as_str(), "crate" | "super" | "self"));
        if relative_use {
            let mut found = Vec::new();
            i = tree(&toks, i + 1, vec!["self".to_string()], &mut found);
            let at: Vec<String> = inline.iter().map(|(n, _)| n.clone()).collect();
            out.extend(found.into_iter().map(|p| (at.clone(), p)));
            continue;
        }
        match t {
            "mod" if toks.get(i + 2).map(String::as_str) == Some("{") => {
                depth += 1;
                inline.push((toks[i + 1].clone(), depth));
                i += 3;
                continue;
            }
            "{" => depth += 1,
            "}" => {
                if inline.last().is_some_and(|&(_, d)| d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Reads one path (or use tree) at `toks[i]`, pushing complete paths; returns where it ended.
fn tree(
    toks: &[String],
    mut i: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    loop {
        match toks.get(i).map(String::as_str) {
            Some("{") => {
                i += 1;
                loop {
                    match toks.get(i).map(String::as_str) {
                        Some("}") => return i + 1,
                        Some(",") => i += 1,
                        None => return i,
                        _ => i = tree(toks, i, prefix.clone(), out),
                    }
                }
            }
            Some(t) if is_ident(t) => {
                prefix.push(t.to_string());
                i += 1;
                if toks.get(i).map(String::as_str) == Some("::") {
                    i += 1;
                } else {
                    out.push(prefix);
                    return i;
                }
            }
            Some("*") => {
                out.push(prefix);
                return i + 1;
            }
            _ => {
                if !prefix.is_empty() {
                    out.push(prefix);
                }
                return i;
            }
        }
    }
}

fn is_ident(t: &str) -> bool {
    t.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

fn tokens(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            cur.push(c);
            continue;
        }
        if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            out.push("::".into());
        } else if !c.is_whitespace() {
            out.push(c.to_string());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The file a path names: the longest module prefix of its absolute form.
fn resolve(
    here: &[String],
    inline: &[String],
    path: &[String],
    mods: &BTreeMap<Vec<String>, PathBuf>,
) -> Option<Vec<String>> {
    // `self` is the module the path is written in (a file's, or an inline one inside it);
    // `super` its parent.
    let abs = absolute(here, inline, path);
    (0..=abs.len())
        .rev()
        .map(|n| abs[..n].to_vec())
        .find(|m| mods.contains_key(m))
}

/// The absolute module path a `crate`/`super`/`self` path spells.
fn absolute(here: &[String], inline: &[String], path: &[String]) -> Vec<String> {
    let mut abs: Vec<String> = match path.first().map(String::as_str) {
        Some("crate") => Vec::new(),
        _ => here.iter().chain(inline).cloned().collect(),
    };
    for seg in path {
        match seg.as_str() {
            "crate" | "self" => {}
            "super" => {
                abs.pop();
            }
            s => abs.push(s.to_string()),
        }
    }
    abs
}

/// The rest of every path `alias::a::b` in the code (not itself after a `::`).
fn alias_paths(code: &str, alias: &str) -> Vec<Vec<String>> {
    let toks = tokens(code);
    let mut out = Vec::new();
    for i in 0..toks.len() {
        if toks[i] != alias
            || toks.get(i + 1).map(String::as_str) != Some("::")
            || (i > 0 && toks[i - 1] == "::")
        {
            continue;
        }
        let mut rest = Vec::new();
        let mut j = i + 2;
        while let Some(t) = toks.get(j).filter(|t| is_ident(t)) {
            rest.push(t.clone());
            if toks.get(j + 1).map(String::as_str) != Some("::") {
                break;
            }
            j += 2;
        }
        out.push(rest);
    }
    out
}

/// Files that import each other, directly or through others (Tarjan's strongly connected
/// components with more than one file).
fn cycles(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    struct State<'a> {
        graph: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on: BTreeSet<&'a Vec<String>>,
        next: usize,
        out: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Vec<String>) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let l = s.low[w].min(s.low[v]);
                s.low.insert(v, l);
            } else if s.on.contains(w) {
                let l = s.index[w].min(s.low[v]);
                s.low.insert(v, l);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn name(m: &[String], mods: &BTreeMap<Vec<String>, PathBuf>) -> String {
    mods[m]
        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(&mods[m])
        .display()
        .to_string()
}

#[test]
fn no_import_cycle_between_files_of_client_src() {
    // KV_CYCLES_SRC checks another tree (e.g. an older checkout's client/src).
    let src = std::env::var_os("KV_CYCLES_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let mods = modules(&src);
    assert!(
        mods.len() > 20,
        "found only {} files under {src:?}",
        mods.len()
    );
    // Every absolute path each file names.
    let mut refs: BTreeMap<Vec<String>, Vec<Vec<String>>> = BTreeMap::new();
    for (m, file) in &mods {
        let text = std::fs::read_to_string(file).expect("read source");
        let code = code_only(&text);
        let mine = refs.entry(m.clone()).or_default();
        // A module brought in by name (`use crate::tui::widgets;`) and then used through it
        // (`widgets::help::render`): those later paths count too.
        let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (inline, p) in paths(&code) {
            let abs = absolute(m, &inline, &p);
            if mods.contains_key(&abs)
                && mods
                    .keys()
                    .any(|k| k.len() > abs.len() && k.starts_with(&abs))
            {
                if let Some(leaf) = p.last() {
                    aliases.insert(leaf.clone(), abs.clone());
                }
            }
            mine.push(abs);
        }
        for (alias, base) in &aliases {
            for rest in alias_paths(&code, alias) {
                let mut abs = base.clone();
                abs.extend(rest);
                mine.push(abs);
            }
        }
    }
    // What a parent module re-exports (`pub use child::Item;`): item name → its path, so a
    // path through the parent leads to the file that defines the item, not to the parent.
    let reexports: BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>> = refs
        .iter()
        .map(|(m, paths)| {
            let items = paths
                .iter()
                .filter(|p| p.len() == m.len() + 2 && p.starts_with(m))
                .map(|p| (p[p.len() - 1].clone(), p.clone()))
                .collect();
            (m.clone(), items)
        })
        .collect();
    let target = |mut abs: Vec<String>| -> Option<Vec<String>> {
        for _ in 0..8 {
            let to = (0..=abs.len())
                .rev()
                .map(|n| abs[..n].to_vec())
                .find(|k| mods.contains_key(k))?;
            match abs.get(to.len()).and_then(|item| reexports[&to].get(item)) {
                Some(real) if *real != abs => {
                    let mut next = real.clone();
                    next.extend(abs[to.len() + 1..].iter().cloned());
                    abs = next;
                }
                _ => return Some(to),
            }
        }
        None
    };
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (m, paths) in &refs {
        let edges = graph.entry(m.clone()).or_default();
        for abs in paths {
            if let Some(to) = target(abs.clone()) {
                if &to != m {
                    edges.insert(to);
                }
            }
        }
    }
    for (m, to) in &graph {
        let to: Vec<String> = to.iter().map(|t| name(t, &mods)).collect();
        println!("{} -> {}", name(m, &mods), to.join(", "));
    }
    let found = cycles(&graph);
    let report: Vec<String> = found
        .iter()
        .map(|c| {
            c.iter()
                .map(|m| name(m, &mods))
                .collect::<Vec<_>>()
                .join(" <-> ")
        })
        .collect();
    assert!(report.is_empty(), "import cycles:\n{}", report.join("\n"));
}

#[test]
fn the_checker_sees_use_trees_and_relative_paths() {
    let code = code_only(
        "use crate::tui::{app::App, model::{Member, Overlay}};\n// use crate::nope;\n\
         fn f() { super::events::emit(); let s = \"crate::str\"; }\n\
         mod tests { use super::*; }\n pub use events::{pump, Flow};",
    );
    let p: Vec<Vec<String>> = paths(&code).into_iter().map(|(_, p)| p).collect();
    let want: Vec<Vec<String>> = [
        &["crate", "tui", "app", "App"][..],
        &["crate", "tui", "model", "Member"],
        &["crate", "tui", "model", "Overlay"],
        &["super", "events", "emit"],
        &["super"],
        &["self", "events", "pump"],
        &["self", "events", "Flow"],
    ]
    .iter()
    .map(|v| v.iter().map(|s| s.to_string()).collect())
    .collect();
    assert_eq!(p, want);
    let mods: BTreeMap<Vec<String>, PathBuf> = [(vec!["tui".to_string()], PathBuf::new())]
        .into_iter()
        .collect();
    // `super` inside `mod tests` of tui/mod.rs is tui itself, not the crate root.
    let here = vec!["tui".to_string()];
    let tests = vec!["tests".to_string()];
    assert_eq!(resolve(&here, &tests, &p[4], &mods), Some(here.clone()));
}
