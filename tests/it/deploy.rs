//! The shipped deployment files stay in step with the configuration they embed.

use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

/// `deploy/k8s/configmap.yaml` carries `config/example.toml` verbatim (as a YAML block scalar), so what
/// Kubernetes users deploy is the example the config tests validate.
#[test]
fn k8s_configmap_embeds_the_example_config_verbatim() {
    let map = read("deploy/k8s/configmap.yaml");
    let (_, block) = map
        .split_once("  groupwatch.toml: |\n")
        .expect("configmap has data.\"groupwatch.toml\" as a block scalar");
    let embedded: String = block
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let example = read("config/example.toml");
    assert_eq!(
        embedded.trim_end(),
        example.trim_end(),
        "regenerate deploy/k8s/configmap.yaml as its header says"
    );
}
