//! `docs/reference.md` is true to the code: every key of the commented example configuration
//! and every metric the gateway serves is named in it.

use std::path::Path;

fn page() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference.md"))
        .unwrap()
}

/// Every key with a value of a YAML mapping, as dotted paths (`session.idle_timeout`); a
/// section (`session`) is named by its keys.
fn keys(value: &serde_yaml::Value, prefix: &str, out: &mut Vec<String>) {
    if let serde_yaml::Value::Mapping(map) = value {
        for (k, v) in map {
            let k = k.as_str().expect("string keys");
            let path = if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                serde_yaml::Value::Mapping(_) => keys(v, &path, out),
                _ => out.push(path),
            }
        }
    }
}

#[test]
fn every_key_of_the_example_configuration_is_documented() {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/portcullis.yaml"),
    )
    .unwrap();
    let yaml: serde_yaml::Value = serde_yaml::from_str(&example).unwrap();
    let mut all = Vec::new();
    keys(&yaml, "", &mut all);
    assert!(all.len() > 25, "the example has its keys: {all:?}");
    let page = page();
    let missing: Vec<_> = all
        .iter()
        .filter(|k| {
            let (parent, last) = k.rsplit_once('.').unwrap_or(("", k));
            // `passwords.argon2.memory_kib` may be written so, or as `.memory_kib` beside its
            // parent `passwords.argon2`.
            let named = page.contains(&format!("`{k}`"))
                || page.contains(&format!("`{parent}`")) && page.contains(&format!("`.{last}`"));
            !named
        })
        .collect();
    assert!(missing.is_empty(), "not in docs/reference.md: {missing:?}");
}

#[test]
fn every_metric_is_documented() {
    let text = portcullis::service::metrics::Metrics::new().render();
    let page = page();
    let mut names: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("# TYPE portcullis_"))
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    names.dedup();
    assert!(names.len() >= 9, "{names:?}");
    let missing: Vec<_> = names
        .iter()
        .filter(|n| !page.contains(&format!("`{n}`")))
        .collect();
    assert!(missing.is_empty(), "not in docs/reference.md: {missing:?}");
}
