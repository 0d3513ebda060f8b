//! The architecture, enforced: reads `server/src` and checks the rule of the
//! layers that `lib.rs` states. The front (`api`) alone speaks gRPC; the
//! core, model and observe layers never import tonic, prost or the generated
//! `candela` types; no layer imports one above it; and no module imports
//! another that imports it back (no import cycle between files).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and the crate modules it may import.
const MAY_IMPORT: &[(&str, &[&str])] = &[
    ("observe", &[]),
    ("model", &["observe"]),
    ("core", &["model", "observe"]),
    ("config", &["core", "model", "observe"]),
    ("api", &["config", "core", "model", "observe"]),
    ("train", &["model"]),
    ("testing", &["api", "config", "train"]),
];

/// The layers that must not know the transport: all but the front.
const TRANSPORT_NEUTRAL: &[&str] = &["observe", "model", "core", "config", "train", "testing"];

/// Crates only the front may use.
const TRANSPORT: &[&str] = &[
    "tonic",
    "tonic_health",
    "tonic_reflection",
    "tonic_types",
    "prost",
    "candela",
    "http",
    "h2",
    "hyper",
    "hyper_util",
    "axum",
];

fn sources() -> Vec<(Vec<String>, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files
        .into_iter()
        .filter(|path| !path.starts_with(root.join("bin")) && !path.ends_with("main.rs"))
        .map(|path| {
            let relative = path.strip_prefix(&root).unwrap().with_extension("");
            let mut module: Vec<String> = relative.iter().map(|part| part.to_string_lossy().into_owned()).collect();
            if module.last().is_some_and(|last| last == "mod" || last == "lib") {
                module.pop();
            }
            (module, std::fs::read_to_string(&path).unwrap())
        })
        .collect()
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

/// The code of a file without its comments and its `#[cfg(test)]` module.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap();
    text.lines().map(|line| line.split("//").next().unwrap()).collect::<Vec<_>>().join("\n")
}

/// Every path a file names: `crate::a::b`, `super::c`, `tonic::…` (the
/// identifiers after each `::`-joined start, braces opened one level).
fn paths(code: &str) -> Vec<Vec<String>> {
    // `use a::{b, c}` over several lines becomes one token `a::{b,c`.
    let mut compact = String::with_capacity(code.len());
    for c in code.chars() {
        let joining = compact.ends_with([',', '{']);
        if !(c.is_whitespace() && joining) {
            compact.push(c);
        }
    }
    let code = compact.as_str();
    let mut found = Vec::new();
    let tokens: Vec<&str> =
        code.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':' || c == '{' || c == ',')).collect();
    for token in tokens {
        let token = token.trim_matches(',');
        if !token.contains("::") {
            continue;
        }
        let split =
            |path: &str| -> Vec<String> { path.split("::").filter(|p| !p.is_empty()).map(String::from).collect() };
        match token.split_once("::{") {
            Some((base, group)) => {
                // A comma before the path ends what came before it (`f(1,crate::a::{b`).
                let base = split(base.rsplit(',').next().unwrap_or(base));
                for member in group.split(',') {
                    let mut path = base.clone();
                    path.extend(member.split("::").filter(|p| !p.is_empty() && *p != "{").map(String::from));
                    found.push(path);
                }
            }
            // Arguments: `f(1,crate::a::B,tonic::C)` holds two paths.
            None => found.extend(token.split(',').filter(|part| part.contains("::")).map(split)),
        }
    }
    found
}

/// The module file a path names, from `module` (the file it is written in).
fn resolve(module: &[String], path: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    let mut absolute: Vec<String> = match path.first()?.as_str() {
        "crate" => Vec::new(),
        "super" => module[..module.len().checked_sub(1)?].to_vec(),
        "self" => module.to_vec(),
        _ => return None,
    };
    let rest = &path[1..];
    let mut best = None;
    for part in rest {
        absolute.push(part.clone());
        if modules.contains(&absolute) {
            best = Some(absolute.clone());
        }
    }
    best
}

#[test]
fn the_layers_hold_and_no_module_imports_back() {
    let files = sources();
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(module, _)| module.clone()).collect();
    let rules: BTreeMap<&str, &[&str]> = MAY_IMPORT.iter().copied().collect();
    let mut problems = Vec::new();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, text) in &files {
        let code = code(text);
        let layer = module.first().map(String::as_str).unwrap_or("lib");
        for path in paths(&code) {
            let first = path[0].as_str();
            if TRANSPORT_NEUTRAL.contains(&layer) && TRANSPORT.contains(&first) {
                problems.push(format!(
                    "{}: names `{}` (only api/ speaks a wire format)",
                    module.join("::"),
                    path.join("::")
                ));
            }
            let Some(target) = resolve(module, &path, &modules) else { continue };
            let target_layer = target.first().map(String::as_str).unwrap_or("lib");
            if let Some(allowed) = rules.get(layer)
                && target_layer != layer
                && !allowed.contains(&target_layer)
            {
                problems.push(format!("{}: imports `{}`, a layer it may not", module.join("::"), target.join("::")));
            }
            // A parent module declaring its children is not an import.
            if target != *module && !module.starts_with(&target) {
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    // Any cycle: a module that reaches itself.
    for start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<Vec<String>> = edges[start].iter().cloned().collect();
        while let Some(next) = stack.pop() {
            if next == *start {
                problems.push(format!("{}: is in an import cycle", start.join("::")));
                break;
            }
            if seen.insert(next.clone()) {
                stack.extend(edges.get(&next).into_iter().flatten().cloned());
            }
        }
    }
    assert!(problems.is_empty(), "the layering rule is broken:\n  {}", problems.join("\n  "));
    // The check reads what it should: the front's imports of the core are seen.
    assert!(
        edges[&["api", "grpc", "v1"].map(String::from).to_vec()]
            .contains(&vec!["core".to_string(), "scoring".to_string()])
    );
}

/// The longest a file in `server/src` may grow: past it, a file holds more
/// than one concern and is split by concern.
const MAX_LINES: usize = 500;

#[test]
fn every_file_is_small_enough_to_hold_one_concern() {
    let long: Vec<String> = sources()
        .into_iter()
        .map(|(module, text)| (module.join("::"), text.lines().count()))
        .filter(|(_, lines)| *lines > MAX_LINES)
        .map(|(module, lines)| format!("{module}: {lines} lines"))
        .collect();
    assert!(long.is_empty(), "split these by concern (at most {MAX_LINES} lines each):\n  {}", long.join("\n  "));
}

#[test]
fn every_public_type_name_has_one_meaning() {
    let mut defined: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (module, text) in sources() {
        for line in code(&text).lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let [visibility, kind, name, ..] = words.as_slice()
                && visibility.starts_with("pub")
                && ["struct", "enum", "trait", "type"].contains(kind)
            {
                let name = name.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap();
                defined.entry(name.to_string()).or_default().push(module.join("::"));
            }
        }
    }
    let twice: Vec<String> = defined
        .into_iter()
        .filter(|(_, modules)| modules.len() > 1)
        .map(|(name, modules)| format!("{name}: {}", modules.join(", ")))
        .collect();
    assert!(twice.is_empty(), "public type names defined more than once:\n  {}", twice.join("\n  "));
}

#[test]
fn the_front_neither_keeps_answers_nor_shadows() {
    // Release safety (keeping answers for outcomes, shadowing) is the core's
    // (`core::engine`); a front that names it is doing the core's work.
    for (module, text) in sources().into_iter().filter(|(module, _)| module.first().is_some_and(|top| top == "api")) {
        for word in [".offer(", ".keep(", "AnswerKey", "scoring::serve", "scoring::score(", "scoring::recorded("] {
            assert!(!code(&text).contains(word), "{}: names `{word}`, the core's work", module.join("::"));
        }
    }
}
