//! The layers of `docs/architecture.md`, enforced: a module of `src/` may name (`crate::…`)
//! only modules of its own layer or of layers below it. Reads the source as text, so a
//! new import that goes up fails `make test`.

use std::path::{Path, PathBuf};

/// Bottom to top, as `docs/architecture.md` lists them.
const LAYERS: [&str; 8] = [
    "core", "config", "store", "policy", "service", "web", "gateway", "cli",
];

/// The layer of a file of `src/`: its first directory (or its stem, for a single file).
fn layer_of(relative: &Path) -> Option<&'static str> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    LAYERS.iter().copied().find(|l| *l == name)
}

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == layer)
}

/// Every `crate::NAME` the text refers to (in `use` lines and in paths alike), with its line.
fn crate_references(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            found.push((n + 1, name));
            rest = after;
        }
    }
    found
}

/// The imports of `text` (a file of layer `layer`) that go up, as `line: crate::name (layer)`.
fn upward(layer: &str, text: &str) -> Vec<String> {
    let own = rank(layer).expect("a known layer");
    crate_references(text)
        .into_iter()
        .filter_map(|(line, name)| {
            let target = rank(&name)?;
            (target > own).then(|| format!("{line}: crate::{name} ({name} is above {layer})"))
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        if matches!(relative.to_str(), Some("lib.rs" | "main.rs")) {
            continue;
        }
        let Some(layer) = layer_of(relative) else {
            problems.push(format!("{}: in no layer ({LAYERS:?})", relative.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for p in upward(layer, &text) {
            problems.push(format!("{}:{p}", relative.display()));
        }
        // `crate::` names no module outside the layers.
        for (line, name) in crate_references(&text) {
            if rank(&name).is_none() {
                problems.push(format!(
                    "{}:{line}: crate::{name} is not a layer",
                    relative.display()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "imports that break the layering:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_finds_an_upward_import() {
    let text = "use crate::core::time::Clock;\nuse crate::gateway::App; // up\nfn f() { crate::service::x(); }\n// crate::cli in a comment\n";
    assert_eq!(
        upward("policy", text),
        [
            "2: crate::gateway (gateway is above policy)",
            "3: crate::service (service is above policy)",
        ]
    );
    assert!(upward("gateway", text).is_empty());
    assert_eq!(layer_of(Path::new("store/sqlite/users.rs")), Some("store"));
    assert_eq!(layer_of(Path::new("cli.rs")), Some("cli"));
    assert_eq!(layer_of(Path::new("utils.rs")), None);
}

#[test]
fn the_architecture_page_lists_the_same_layers() {
    let page =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/architecture.md"))
            .unwrap();
    let order: Vec<usize> = LAYERS
        .iter()
        .map(|l| {
            page.find(&format!("`{l}/`"))
                .unwrap_or_else(|| panic!("`{l}/` is not on the page"))
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] > w[1]),
        "the page lists the layers top to bottom"
    );
}
