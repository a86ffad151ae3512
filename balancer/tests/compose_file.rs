//! The compose file users start rondo with: every setting of the balancer reaches the
//! container when set in the shell or an `.env` file (`RONDO_TRIES=5 docker compose up`), except
//! the few the layout fixes.

use clap::CommandFactory;

/// Settings the layout fixes, with the reason; every other one must pass through.
const FIXED: &[(&str, &str)] = &[
    (
        "RONDO_LISTEN",
        "the published port maps to 8080 inside the container",
    ),
    ("RONDO_UPSTREAMS", "the layout's three services"),
    (
        "RONDO_ADMIN_LISTEN",
        "published on the host's 127.0.0.1:9901",
    ),
];

/// The variable names of the `balancer` service's `environment:` map, with their values as
/// written (empty for a bare `NAME:`, which Compose passes through from the shell when set).
fn balancer_environment() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker-compose.yml");
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines().skip_while(|l| *l != "  balancer:");
    assert!(lines.next().is_some(), "no balancer service in {path}");
    let mut lines = lines.skip_while(|l| *l != "    environment:").skip(1);
    let mut vars = Vec::new();
    for line in lines.by_ref() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') {
            continue;
        }
        if !line.starts_with("      ") {
            break;
        }
        let (name, value) = trimmed.split_once(':').expect("a NAME: value line");
        vars.push((name.to_owned(), value.trim().to_owned()));
    }
    assert!(!vars.is_empty(), "no environment in the balancer service");
    vars
}

#[test]
fn every_setting_passes_through_the_compose_file() {
    let env = balancer_environment();
    let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
    let settings: Vec<String> = balancer::Config::command()
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    assert!(settings.len() > 25, "{settings:?}");
    for setting in &settings {
        if FIXED.iter().any(|(n, _)| n == setting) {
            continue;
        }
        let (_, value) = env
            .iter()
            .find(|(n, _)| n == setting)
            .unwrap_or_else(|| panic!("{setting} does not pass through docker-compose.yml"));
        // `NAME:` passes the shell's value or nothing; `NAME: "${NAME:-default}"` the shell's
        // value or the layout's default. A plain value would ignore the shell.
        assert!(
            value.is_empty() || value.starts_with(&format!("\"${{{setting}:-")),
            "{setting}: {value} ignores the shell's {setting}"
        );
    }
    for name in &names {
        assert!(
            settings.iter().any(|s| s == name) || *name == "RUST_LOG",
            "docker-compose.yml sets {name}, which rondo does not read"
        );
    }
}
