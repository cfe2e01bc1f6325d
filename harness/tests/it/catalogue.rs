//! `leaklab list` and `leaklab explain`: the catalogue as DESIGN.md gives it.

use crate::support::leaklab;

/// The catalogue of DESIGN.md: scenario, side, expected kind of the leak
/// variant.
const DESIGN: [(&str, &str, &str); 13] = [
    ("request-field-hold", "server", "request-field-held"),
    ("response-field-hold", "client", "response-field-held"),
    ("conn-surge-request", "server", "connection-surge-barriers"),
    ("conn-surge-response-nocopy", "server", "connection-surge-barriers"),
    ("conn-surge-response-copy", "server", "connection-surge-barriers"),
    ("idle-connections", "server", "idle-connection-buffers"),
    ("oversized-request", "server", "oversized-request"),
    ("duplicate-clients", "client", "duplicate-clients"),
    ("sonic-string-hold", "server", "zero-copy-string-held"),
    ("steady", "server", "none"),
    ("bounded-cache", "server", "none"),
    ("warmup", "server", "none"),
    ("burst", "server", "none"),
];

#[test]
fn list_json_names_the_thirteen_design_scenarios() {
    let (status, stdout, stderr) = leaklab(&["list", "--json"]);
    assert!(status.success(), "leaklab list --json: {status}\n{stderr}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout).expect("list --json prints a JSON array");
    let names: Vec<&str> = rows.iter().map(|r| r["scenario"].as_str().unwrap_or("")).collect();
    let design: Vec<&str> = DESIGN.iter().map(|d| d.0).collect();
    assert_eq!(names, design);
    for (row, (name, side, expected)) in rows.iter().zip(DESIGN) {
        assert_eq!(row["side"], side, "{name}");
        assert_eq!(row["expected"]["leak"], expected, "{name}");
        assert_eq!(row["expected"]["fix"], "none", "{name}");
        assert_eq!(row["control"], expected == "none", "{name}");
    }
}

#[test]
fn list_table_shows_every_scenario() {
    let (status, stdout, stderr) = leaklab(&["list"]);
    assert!(status.success(), "leaklab list: {status}\n{stderr}");
    for (name, _, expected) in DESIGN {
        let line = stdout.lines().find(|l| l.split_whitespace().next() == Some(name));
        let line = line.unwrap_or_else(|| panic!("{name} missing from leaklab list:\n{stdout}"));
        assert!(line.contains(expected), "{line}");
    }
}

#[test]
fn explain_request_field_hold_names_read_field_2() {
    let (status, stdout, stderr) = leaklab(&["explain", "request-field-hold"]);
    assert!(status.success(), "leaklab explain: {status}\n{stderr}");
    assert!(stdout.contains("read_field_2"), "{stdout}");
    assert!(stdout.contains("request-field-held"), "{stdout}");
    assert!(stdout.contains("decode"), "the parameters are listed:\n{stdout}");
    assert!(stdout.contains("range   4KiB | 8KiB | 16KiB"), "the range exercises draw from:\n{stdout}");
}

#[test]
fn explain_lists_the_modifiers_every_scenario_accepts() {
    for (name, mixes) in [("request-field-hold", true), ("steady", false)] {
        let (status, stdout, stderr) = leaklab(&["explain", name]);
        assert!(status.success(), "leaklab explain {name}: {status}\n{stderr}");
        for m in ["onset", "leak_rate", "background", "mix"] {
            assert!(stdout.lines().any(|l| l.trim_start().starts_with(m)), "{name}: {m} missing:\n{stdout}");
        }
        assert!(stdout.contains("none | churn | cache | burst | all"), "{stdout}");
        assert_eq!(stdout.contains("mixes with: "), mixes, "{stdout}");
    }
}

#[test]
fn explain_unknown_scenario_fails_and_names_the_known_ones() {
    let (status, stdout, stderr) = leaklab(&["explain", "request-field-hld"]);
    assert!(!status.success(), "leaklab explain of an unknown scenario succeeded:\n{stdout}");
    assert!(stderr.contains("request-field-hld") && stderr.contains("request-field-hold"), "{stderr}");
}
