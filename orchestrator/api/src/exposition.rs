//! The two Prometheus text formats every process's `/metrics` answers in.
//!
//! prometheus-client writes OpenMetrics 1.0, which Prometheus asks for. Other clients
//! (promtool, curl, older scrapers) read the classic text format (0.0.4), where a counter's
//! family is named after its `_total` samples, there is no `# EOF`, `# UNIT` or exemplars.
//! Given OpenMetrics to them, promtool reports every counter as lacking help text. So
//! `/metrics` answers as Prometheus' own client libraries do: OpenMetrics to whoever accepts
//! it, the classic format to everyone else ([`Exposition::negotiate`], [`to_classic`]).

use std::collections::HashMap;

/// `Content-Type` of OpenMetrics 1.0 text.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the classic text format.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The format a scrape is answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    OpenMetrics,
    Classic,
}

impl Exposition {
    /// OpenMetrics when the `Accept` header lists `application/openmetrics-text` with a
    /// non-zero quality, the classic format otherwise (no header, `*/*`, `text/plain`).
    pub fn negotiate(accept: Option<&str>) -> Exposition {
        let openmetrics = accept.is_some_and(|accept| {
            accept.split(',').any(|range| {
                let mut parts = range.split(';').map(str::trim);
                let media = parts.next().unwrap_or_default();
                let refused = parts.any(|p| p.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()).is_some_and(|q| q <= 0.0));
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if openmetrics {
            Exposition::OpenMetrics
        } else {
            Exposition::Classic
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Exposition::Classic => CLASSIC_CONTENT_TYPE,
        }
    }

    /// `openmetrics` (as prometheus-client encodes it) in this format.
    pub fn render(self, openmetrics: String) -> String {
        match self {
            Exposition::OpenMetrics => openmetrics,
            Exposition::Classic => to_classic(&openmetrics),
        }
    }
}

/// OpenMetrics text in the classic format: counter and info families renamed after their
/// samples (`x` → `x_total`, `x` → `x_info`), OpenMetrics-only types mapped to the classic
/// ones, and `# EOF`, `# UNIT`, `_created` samples and exemplars left out.
pub fn to_classic(openmetrics: &str) -> String {
    let mut types: HashMap<&str, &str> = HashMap::new();
    for line in openmetrics.lines() {
        if let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|rest| rest.split_once(' ')) {
            types.insert(name, kind.trim());
        }
    }
    let family_name = |name: &str| -> String {
        match types.get(name).copied() {
            Some("counter") if !name.ends_with("_total") => format!("{name}_total"),
            Some("info") if !name.ends_with("_info") => format!("{name}_info"),
            _ => name.to_owned(),
        }
    };
    let mut classic = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            // Classic HELP escapes only `\` and newlines.
            classic.push_str(&format!("# HELP {} {}\n", family_name(name), help.replace("\\\"", "\"")));
        } else if let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|rest| rest.split_once(' ')) {
            let kind = match kind.trim() {
                kind @ ("counter" | "gauge" | "histogram" | "summary") => kind,
                "info" | "stateset" => "gauge",
                _ => "untyped",
            };
            classic.push_str(&format!("# TYPE {} {kind}\n", family_name(name)));
        } else if line.starts_with('#') || line.is_empty() {
            // `# EOF`, `# UNIT` and any other comment.
        } else {
            let (series, rest) = split_series(line);
            let sample = series.split('{').next().unwrap_or(series);
            let created = sample.strip_suffix("_created").is_some_and(|base| {
                let base = base.strip_suffix("_total").unwrap_or(base);
                matches!(types.get(base).copied(), Some("counter" | "histogram" | "summary"))
            });
            if created {
                continue;
            }
            // An exemplar follows the value (and timestamp) after " # ".
            let value = rest.split(" # ").next().unwrap_or(rest).trim_end();
            classic.push_str(series);
            classic.push(' ');
            classic.push_str(value.trim_start());
            classic.push('\n');
        }
    }
    classic
}

/// A sample line split after its name and labels: label values may hold spaces, `}` and `#`.
fn split_series(line: &str) -> (&str, &str) {
    let Some(open) = line.find(['{', ' ']) else { return (line, "") };
    if line.as_bytes()[open] == b' ' {
        return line.split_at(open);
    }
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line.char_indices().skip_while(|(i, _)| *i <= open) {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return line.split_at(i + 1),
            _ => {}
        }
    }
    (line, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What prometheus-client 0.22 writes for a counter, a labelled gauge with awkward label
    /// values, a histogram with an exemplar, an info metric and a unit.
    const OPENMETRICS: &str = "# HELP edgeplane_sink_records_accepted Uploaded records stored.
# TYPE edgeplane_sink_records_accepted counter
edgeplane_sink_records_accepted_total 7
edgeplane_sink_records_accepted_created 1700000000.0
# HELP edgeplane_node_health Health \\\"as judged\\\".
# TYPE edgeplane_node_health gauge
edgeplane_node_health{node=\"a} # b\",state=\"Ready\"} 1
# HELP edgeplane_raft_fsync_seconds Time to persist one Ready.
# TYPE edgeplane_raft_fsync_seconds histogram
# UNIT edgeplane_raft_fsync_seconds seconds
edgeplane_raft_fsync_seconds_sum 0.5
edgeplane_raft_fsync_seconds_count 2
edgeplane_raft_fsync_seconds_bucket{le=\"+Inf\"} 2 # {trace=\"x\"} 0.3
# HELP edgeplane_build Build.
# TYPE edgeplane_build info
edgeplane_build_info{version=\"1\"} 1
# TYPE edgeplane_odd unknown
edgeplane_odd 3
# EOF
";

    #[test]
    fn classic_names_families_after_their_samples_and_drops_what_it_cannot_say() {
        let classic = to_classic(OPENMETRICS);
        assert_eq!(
            classic,
            "# HELP edgeplane_sink_records_accepted_total Uploaded records stored.
# TYPE edgeplane_sink_records_accepted_total counter
edgeplane_sink_records_accepted_total 7
# HELP edgeplane_node_health Health \"as judged\".
# TYPE edgeplane_node_health gauge
edgeplane_node_health{node=\"a} # b\",state=\"Ready\"} 1
# HELP edgeplane_raft_fsync_seconds Time to persist one Ready.
# TYPE edgeplane_raft_fsync_seconds histogram
edgeplane_raft_fsync_seconds_sum 0.5
edgeplane_raft_fsync_seconds_count 2
edgeplane_raft_fsync_seconds_bucket{le=\"+Inf\"} 2
# HELP edgeplane_build_info Build.
# TYPE edgeplane_build_info gauge
edgeplane_build_info{version=\"1\"} 1
# TYPE edgeplane_odd untyped
edgeplane_odd 3
"
        );
    }

    #[test]
    fn openmetrics_only_for_clients_that_ask_for_it() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Exposition::negotiate(Some(prometheus)), Exposition::OpenMetrics);
        assert_eq!(Exposition::negotiate(Some("Application/OpenMetrics-Text")), Exposition::OpenMetrics);
        for classic in [None, Some("*/*"), Some("text/plain"), Some("application/openmetrics-text;q=0, text/plain"), Some("")] {
            assert_eq!(Exposition::negotiate(classic), Exposition::Classic, "{classic:?}");
        }
        assert_eq!(Exposition::Classic.render(OPENMETRICS.to_owned()), to_classic(OPENMETRICS));
        assert_eq!(Exposition::OpenMetrics.render(OPENMETRICS.to_owned()), OPENMETRICS);
    }
}
