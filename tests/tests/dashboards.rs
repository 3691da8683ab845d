//! The monitoring files compose.yaml ships — Prometheus's configuration and alert rules, Grafana's
//! provisioning and the telerelay dashboard — agree with docs/metrics.md and with each other:
//! every `telerelay_*` metric they use is in the catalogue, with labels it has; the recorder's
//! state gauges are never summed; the rules and panels are complete; and every file compose.yaml
//! mounts exists where the configuration expects it. No broker or database needed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value as Json;
use serde_norway::Value as Yaml;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repository().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Yaml {
    let mut value: Yaml =
        serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    // compose.yaml shares settings through `<<:` merge keys.
    value.apply_merge().unwrap();
    value
}

/// One metric of docs/metrics.md's catalogue.
#[derive(Debug)]
struct Metric {
    kind: String,
    labels: BTreeSet<String>,
    /// In "the province's state" table: gauges every recorder reports alike (max, never sum).
    state_gauge: bool,
}

/// The catalogue: every table row whose first cell is a `telerelay_*` name.
fn catalogue() -> BTreeMap<String, Metric> {
    let mut metrics = BTreeMap::new();
    let mut state_section = false;
    for line in read("docs/metrics.md").lines() {
        if line.starts_with("###") {
            state_section = line.contains("state");
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 5 || !cells[1].starts_with("`telerelay_") {
            continue;
        }
        let name = cells[1].trim_matches('`').to_owned();
        metrics.insert(
            name,
            Metric {
                kind: cells[2].to_owned(),
                labels: label_names(cells[3]),
                state_gauge: state_section,
            },
        );
    }
    assert!(metrics.len() > 30, "the catalogue parsed: {metrics:?}");
    metrics
}

/// The label names of a catalogue cell: the backticked words outside parentheses (inside them
/// are the label's values or notes).
fn label_names(cell: &str) -> BTreeSet<String> {
    let mut outside = String::new();
    let mut depth = 0;
    for c in cell.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            c if depth == 0 => outside.push(c),
            _ => {}
        }
    }
    outside
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn is_identifier_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every `telerelay_*` name in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find("telerelay_") {
        let preceded = rest[..start]
            .chars()
            .next_back()
            .is_some_and(is_identifier_char);
        let tail = &rest[start..];
        let end = tail.find(|c| !is_identifier_char(c)).unwrap_or(tail.len());
        if !preceded {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// Every label name an expression uses: in `by (…)` / `without (…)` lists and `{…}` selectors.
fn label_uses(expr: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    for keyword in ["by (", "without ("] {
        for (index, _) in expr.match_indices(keyword) {
            let list = &expr[index + keyword.len()..];
            let list = &list[..list.find(')').unwrap()];
            labels.extend(list.split(',').map(|label| label.trim().to_owned()));
        }
    }
    for (index, _) in expr.match_indices('{') {
        let selector = &expr[index + 1..];
        let selector = &selector[..selector.find('}').unwrap()];
        // Grafana legends ({{pool}}) are not in expressions; a selector is label op "value", …
        for matcher in selector.split(',') {
            let name: String = matcher
                .trim()
                .chars()
                .take_while(|c| is_identifier_char(*c))
                .collect();
            if !name.is_empty() {
                labels.insert(name);
            }
        }
    }
    labels
}

/// Checks one expression against the catalogue; returns the metrics it uses.
fn check_expression(
    where_: &str,
    expr: &str,
    catalogue: &BTreeMap<String, Metric>,
) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for name in metric_names(expr) {
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                catalogue
                    .get(base)
                    .filter(|metric| metric.kind == "histogram")
                    .map(|_| base.to_owned())
            })
            .unwrap_or_else(|| name.clone());
        assert!(
            catalogue.contains_key(&base),
            "{where_}: {name} is not in docs/metrics.md's catalogue: {expr}"
        );
        used.insert(base);
    }
    // Labels every series has, and the histogram bucket bound.
    let mut known: BTreeSet<String> = ["job", "instance", "le"].map(String::from).into();
    for name in &used {
        known.extend(catalogue[name].labels.iter().cloned());
    }
    for label in label_uses(expr) {
        assert!(
            known.contains(&label),
            "{where_}: label {label} is not a label of {used:?} in the catalogue: {expr}"
        );
    }
    if used.iter().any(|name| catalogue[name].state_gauge) {
        assert!(
            !expr.contains("sum"),
            "{where_}: the recorder's state gauges are aggregated with max, never sum: {expr}"
        );
    }
    used
}

fn text<'a>(value: &'a Yaml, key: &str, where_: &str) -> &'a str {
    value
        .get(key)
        .and_then(Yaml::as_str)
        .unwrap_or_else(|| panic!("{where_}: no {key}"))
}

#[test]
fn the_alert_rules_are_complete_and_use_only_catalogued_metrics() {
    let catalogue = catalogue();
    let rules = yaml("deploy/prometheus/alerts.yml");
    let groups = rules["groups"].as_sequence().expect("groups");
    let mut alerts = BTreeSet::new();
    let mut used = BTreeSet::new();
    for group in groups {
        let group_name = text(group, "name", "a rule group");
        let rules = group["rules"].as_sequence().expect("rules");
        assert!(!rules.is_empty(), "{group_name} has rules");
        for rule in rules {
            let alert = text(rule, "alert", group_name).to_owned();
            let expr = text(rule, "expr", &alert);
            let wait = text(rule, "for", &alert);
            assert!(
                wait.ends_with(['s', 'm', 'h']) && wait[..wait.len() - 1].parse::<u32>().is_ok(),
                "{alert}: for: {wait}"
            );
            let severity = rule["labels"]["severity"].as_str();
            assert!(
                matches!(severity, Some("critical" | "warning")),
                "{alert}: severity {severity:?}"
            );
            let summary = rule["annotations"]["summary"].as_str().unwrap_or_default();
            assert!(!summary.is_empty(), "{alert} has a summary");
            assert!(alerts.insert(alert.clone()), "{alert} is named once");
            used.extend(check_expression(&alert, expr, &catalogue));
        }
    }
    // The alerts the issue asks for: lane age, dead letters, SLA, critical values, services.
    for needed in [
        "TelerelayLaneOldestWaitingHigh",
        "TelerelayDeadLettersArriving",
        "TelerelayDeadLettersUnreplayed",
        "TelerelaySlaBreaches",
        "TelerelayRequestsOverdue",
        "TelerelayCriticalValueUnacknowledged",
        "TelerelayServiceDown",
        "TelerelayServiceNotReady",
    ] {
        assert!(alerts.contains(needed), "{needed} in {alerts:?}");
    }
    for metric in [
        "telerelay_lane_oldest_waiting_seconds",
        "telerelay_dead_letters_total",
        "telerelay_dead_letters_unreplayed",
        "telerelay_sla_breached_total",
        "telerelay_sla_open_overdue",
        "telerelay_critical_overdue",
        "telerelay_broker_session_up",
    ] {
        assert!(used.contains(metric), "an alert watches {metric}");
    }
    // Every alert is documented for the operator on call.
    let runbook = read("docs/dashboards.md");
    for alert in &alerts {
        assert!(
            runbook.contains(alert.as_str()),
            "docs/dashboards.md covers {alert}"
        );
    }
}

#[test]
fn the_dashboard_has_a_pipeline_and_a_clinical_row_of_valid_panels() {
    let catalogue = catalogue();
    let dashboard: Json =
        serde_json::from_str(&read("deploy/grafana/dashboards/telerelay.json")).unwrap();
    assert_eq!(dashboard["uid"], "telerelay");
    let datasource_uid = {
        let provisioned = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
        let source = &provisioned["datasources"][0];
        assert_eq!(source["type"].as_str(), Some("prometheus"));
        assert_eq!(source["url"].as_str(), Some("http://prometheus:9090"));
        source["uid"].as_str().unwrap().to_owned()
    };
    let mut rows = Vec::new();
    let mut titles = BTreeSet::new();
    let mut used = BTreeSet::new();
    let mut panels_per_row: BTreeMap<String, usize> = BTreeMap::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().expect("every panel has a title");
        let grid = &panel["gridPos"];
        assert!(
            ["h", "w", "x", "y"].iter().all(|key| grid[key].is_u64()),
            "{title}: gridPos {grid}"
        );
        if panel["type"] == "row" {
            rows.push(title.to_owned());
            continue;
        }
        assert!(titles.insert(title.to_owned()), "{title} is used once");
        *panels_per_row
            .entry(rows.last().cloned().expect("panels sit in a row"))
            .or_default() += 1;
        assert_eq!(
            panel["datasource"]["uid"],
            datasource_uid.as_str(),
            "{title}: datasource"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has targets");
        let mut refs = BTreeSet::new();
        for target in targets {
            assert!(
                refs.insert(target["refId"].as_str().expect("refId")),
                "{title}: refIds"
            );
            let expr = target["expr"].as_str().expect("expr");
            used.extend(check_expression(title, expr, &catalogue));
        }
    }
    assert_eq!(rows, ["Pipeline", "Clinical"]);
    assert!(
        panels_per_row["Pipeline"] >= 8 && panels_per_row["Clinical"] >= 6,
        "{panels_per_row:?}"
    );
    // What the issue lists for each row.
    for metric in [
        "telerelay_requests_received_total",
        "telerelay_requests_rejected_total",
        "telerelay_dead_letters_total",
        "telerelay_redeliveries_total",
        "telerelay_publish_confirm_seconds",
        "telerelay_deliveries_in_flight",
        "telerelay_queue_messages",
        "telerelay_lane_oldest_waiting_seconds",
        "telerelay_broker_reconnects_total",
        "telerelay_turnaround_seconds",
        "telerelay_sla_open_at_risk",
        "telerelay_sla_open_overdue",
        "telerelay_sla_breached_total",
        "telerelay_escalations_total",
        "telerelay_returns_total",
        "telerelay_critical_ack_seconds",
        "telerelay_critical_open",
    ] {
        assert!(used.contains(metric), "a panel shows {metric}");
    }
}

#[test]
fn compose_mounts_the_monitoring_files_where_their_configuration_expects_them() {
    let compose = yaml("compose.yaml");
    let services = &compose["services"];
    // Every file or folder a service mounts from the repository exists.
    let mut mounts: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (name, service) in services.as_mapping().unwrap() {
        let name = name.as_str().unwrap().to_owned();
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let Some(spec) = volume.as_str() else {
                continue;
            };
            let mut parts = spec.split(':');
            let (source, target) = (parts.next().unwrap(), parts.next().unwrap());
            if let Some(path) = source.strip_prefix("./") {
                assert!(
                    repository().join(path).exists(),
                    "{name} mounts {source}, which exists"
                );
                mounts
                    .entry(name.clone())
                    .or_default()
                    .insert(target.to_owned(), path.to_owned());
            }
        }
    }
    let source_of = |service: &str, target: &str| -> String {
        mounts[service]
            .get(target)
            .unwrap_or_else(|| {
                panic!(
                    "{service} mounts something at {target}: {:?}",
                    mounts[service]
                )
            })
            .clone()
    };

    // Prometheus reads its configuration and the rules from where compose puts them.
    assert_eq!(
        source_of("prometheus", "/etc/prometheus/prometheus.yml"),
        "deploy/prometheus/prometheus.yml"
    );
    let config = yaml("deploy/prometheus/prometheus.yml");
    for rule_file in config["rule_files"].as_sequence().unwrap() {
        assert_eq!(
            source_of("prometheus", rule_file.as_str().unwrap()),
            "deploy/prometheus/alerts.yml"
        );
    }
    // Each scrape target is a compose service listening there.
    let environment = |service: &str, key: &str| -> Option<String> {
        services[service]["environment"][key]
            .as_str()
            .map(str::to_owned)
    };
    let mut jobs = BTreeSet::new();
    for job in config["scrape_configs"].as_sequence().unwrap() {
        let job_name = text(job, "job_name", "a scrape config");
        jobs.insert(job_name.to_owned());
        for target in job["static_configs"][0]["targets"].as_sequence().unwrap() {
            let (host, port) = target.as_str().unwrap().split_once(':').unwrap();
            assert!(
                services.get(host).is_some(),
                "{job_name} scrapes {host}, a compose service"
            );
            let listen = match host {
                "dispatcher" | "recorder" => environment(host, "TELERELAY_METRICS_ADDR"),
                "review-desk" => environment(host, "TELERELAY_HTTP_ADDR"),
                _ => continue,
            };
            assert_eq!(
                listen,
                Some(format!("0.0.0.0:{port}")),
                "{host} listens on all interfaces at the port Prometheus scrapes"
            );
        }
    }
    for job in ["dispatcher", "recorder", "review-desk"] {
        assert!(jobs.contains(job), "Prometheus scrapes {job}");
    }
    let alerts = read("deploy/prometheus/alerts.yml");
    assert!(
        alerts.contains(r#"up{job=~"dispatcher|recorder|review-desk"}"#),
        "ServiceDown watches the jobs"
    );

    // Grafana's provisioning, and the dashboard folder its provider reads.
    let datasources = source_of("grafana", "/etc/grafana/provisioning/datasources");
    let providers = source_of("grafana", "/etc/grafana/provisioning/dashboards");
    assert!(
        repository()
            .join(&datasources)
            .join("prometheus.yml")
            .is_file()
    );
    let provider = yaml(&format!("{providers}/telerelay.yml"));
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    let dashboards = source_of("grafana", path);
    assert!(
        repository()
            .join(dashboards)
            .join("telerelay.json")
            .is_file()
    );
    let home = environment("grafana", "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH").unwrap();
    assert_eq!(home, format!("{path}/telerelay.json"));
}

#[test]
fn expressions_are_read_for_metric_and_label_names() {
    let expr = r#"histogram_quantile(0.9, sum by (le, kind) (rate(telerelay_turnaround_seconds_bucket{stage="received_to_reported"}[1h]))) or my_telerelay_x"#;
    assert_eq!(
        metric_names(expr),
        BTreeSet::from(["telerelay_turnaround_seconds_bucket".to_owned()])
    );
    assert_eq!(
        label_uses(expr),
        ["le", "kind", "stage"].map(String::from).into()
    );
    assert_eq!(
        label_names("`queue`, `outcome` (`done`, `failed`)"),
        ["queue", "outcome"].map(String::from).into()
    );
    assert!(label_names("—").is_empty());
}
