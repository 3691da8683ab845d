//! Reading the services' `/metrics` in tests: a small parser of the text exposition, enough to
//! ask "what is this counter now" and "which families does this service expose", and waits for
//! a metric to reach a value.

use crate::TestRelay;

/// Which service to scrape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Desk,
    Dispatcher,
    Recorder,
}

/// One sample line: `name{label="value",...} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// One scrape of a service.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    pub text: String,
    pub samples: Vec<Sample>,
    /// `(family name, type)` from the `# TYPE` lines.
    pub families: Vec<(String, String)>,
}

impl Scrape {
    pub fn parse(text: &str) -> Self {
        let mut scrape = Scrape {
            text: text.to_owned(),
            ..Default::default()
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some((name, kind)) = rest.split_once(' ') {
                    scrape.families.push((name.to_owned(), kind.to_owned()));
                }
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                scrape.samples.push(
                    parse_sample(line).unwrap_or_else(|| panic!("unreadable sample line {line:?}")),
                );
            }
        }
        scrape
    }

    /// The sum of the samples named `name` whose labels include every pair of `labels`; 0 when
    /// there is none (a labelled family shows a label set only once it has moved).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|sample| sample.name == name)
            .filter(|sample| {
                labels
                    .iter()
                    .all(|(key, value)| sample.labels.iter().any(|(k, v)| k == key && v == value))
            })
            .map(|sample| sample.value)
            .sum()
    }

    /// Whether a sample named `name` with these labels is exposed at all.
    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.samples.iter().any(|sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.iter().any(|(k, v)| k == key && v == value))
        })
    }

    /// The type of family `name` (as in `# TYPE`), if exposed.
    pub fn family_type(&self, name: &str) -> Option<&str> {
        self.families
            .iter()
            .find(|(family, _)| family == name)
            .map(|(_, kind)| kind.as_str())
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(at) => line.split_at(at),
        None => return None,
    };
    let mut labels = Vec::new();
    let rest = if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inner.strip_prefix('}') {
                break after;
            }
            inner = inner.strip_prefix(',').unwrap_or(inner);
            let (key, after_key) = inner.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after_key.char_indices();
            let end = loop {
                let (at, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break at,
                    other => value.push(other),
                }
            };
            labels.push((key.to_owned(), value));
            inner = &after_key[end + 1..];
        }
    } else {
        rest
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `GET <base>/metrics`, parsed; panics unless it answers 200.
pub async fn scrape(http: &reqwest::Client, base: &str) -> Scrape {
    let response = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {base}/metrics: {e}"));
    assert_eq!(response.status().as_u16(), 200, "GET {base}/metrics");
    Scrape::parse(&response.text().await.unwrap_or_default())
}

/// Waits until `name{labels}` at `base` reads `expected`, then returns the whole scrape.
pub async fn wait_for_value(
    relay: &TestRelay,
    base: &str,
    name: &str,
    labels: &[(&str, &str)],
    expected: f64,
) -> Scrape {
    let mut last = 0.0;
    let found = tokio::time::timeout(crate::DEADLINE, async {
        loop {
            let scrape = scrape(&relay.http, base).await;
            last = scrape.value(name, labels);
            if last == expected {
                return scrape;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    })
    .await;
    found
        .unwrap_or_else(|_| panic!("{name}{labels:?} at {base} stayed {last}, expected {expected}"))
}

/// The base URL of one of the relay's in-process services.
pub fn url(relay: &TestRelay, service: Service) -> String {
    match service {
        Service::Desk => relay.desk_url.clone(),
        Service::Dispatcher => relay.dispatcher_url.clone().unwrap(),
        Service::Recorder => relay.recorder_url.clone().unwrap(),
    }
}

/// As [`wait_for_value`], for one of the relay's in-process services.
pub async fn wait_metric(
    relay: &TestRelay,
    service: Service,
    name: &str,
    labels: &[(&str, &str)],
    expected: f64,
) -> Scrape {
    wait_for_value(relay, &url(relay, service), name, labels, expected).await
}

/// The sum of `name{labels}` over the three services: publishes are counted by whichever
/// service's outbox relay took the row (they share the outbox).
pub async fn total(relay: &TestRelay, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for service in [Service::Desk, Service::Dispatcher, Service::Recorder] {
        sum += relay.scrape(service).await.value(name, labels);
    }
    sum
}

/// The HTTP status `GET url` answers.
pub async fn status_of(relay: &TestRelay, url: &str) -> u16 {
    relay.http.get(url).send().await.unwrap().status().as_u16()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_and_without_labels_are_read() {
        let scrape = Scrape::parse(
            "# TYPE telerelay_claims counter\n\
             telerelay_claims_total{pool=\"xy-ecg\",priority=\"stat\"} 2\n\
             telerelay_claims_total{pool=\"xy-ecg\",priority=\"routine\"} 1\n\
             telerelay_broker_session_up 1\n\
             odd{route=\"/a\\\"b\"} 3.5\n\
             # EOF\n",
        );
        assert_eq!(scrape.value("telerelay_claims_total", &[]), 3.0);
        assert_eq!(
            scrape.value("telerelay_claims_total", &[("priority", "stat")]),
            2.0
        );
        assert_eq!(scrape.value("telerelay_broker_session_up", &[]), 1.0);
        assert_eq!(scrape.value("odd", &[("route", "/a\"b")]), 3.5);
        assert_eq!(scrape.value("missing", &[]), 0.0);
        assert_eq!(scrape.family_type("telerelay_claims"), Some("counter"));
    }
}
