//! `edgectl data query | tail`: records in the cloud sink.
//!
//! Every request goes through [`Client::call`], so each page fails over between
//! orchestrators on its own. Cursors are the same on every orchestrator (they are assigned
//! by the replicated state machine), so a tail that continues on another server from its
//! last cursor neither misses nor repeats a record.

use std::collections::VecDeque;
use std::time::Duration;

use clap::Args;
use edgeplane_api::data::{DataPage, StoredRecord, DATA};
use edgeplane_client::Method;

use crate::{Client, Failure};

/// Which records to show.
#[derive(Debug, Args)]
pub struct Filters {
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    #[arg(long)]
    pub workload: Option<String>,
    /// The edge node that uploaded the records.
    #[arg(long)]
    pub node: Option<String>,
    /// `{namespace}/{assignment}/{output}`.
    #[arg(long)]
    pub stream: Option<String>,
    /// The workload output that produced the records (`--output` is the print format).
    #[arg(long)]
    pub output_name: Option<String>,
    /// Only records after this cursor.
    #[arg(long)]
    pub after: Option<u64>,
}

/// The largest page the orchestrator serves.
const PAGE: u32 = 10_000;

/// One page of records, from `--after`; `DataPage.next` continues it.
pub async fn query(client: &Client, filters: &Filters, limit: Option<u32>, output: &str) -> Result<(), Failure> {
    let page = fetch(client, filters, filters.after, limit).await?;
    match output {
        "json" => crate::print_json(&page),
        "yaml" => out!("{}", serde_yaml::to_string(&page).expect("serializable")),
        _ => {
            print_header();
            page.records.iter().for_each(print_record);
            eprintln!("# next: {} (pass as --after to continue)", page.next);
        }
    }
    Ok(())
}

/// The last `last` records matching the filters; with `follow`, then every new one as it
/// arrives, polling every `interval`, until interrupted.
pub async fn tail(client: &Client, filters: &Filters, last: usize, follow: bool, interval: Duration, output: &str) -> Result<(), Failure> {
    // The API pages forward only: walk to the end, keeping the last records.
    let mut after = filters.after;
    let mut kept: VecDeque<StoredRecord> = VecDeque::with_capacity(last + 1);
    loop {
        let page = fetch(client, filters, after, Some(PAGE)).await?;
        let full = page.records.len() == PAGE as usize;
        after = Some(page.next);
        for record in page.records {
            kept.push_back(record);
            if kept.len() > last {
                kept.pop_front();
            }
        }
        if !full {
            break;
        }
    }
    if !matches!(output, "json" | "yaml") {
        print_header();
    }
    let show = |record: &StoredRecord| match output {
        "json" => outln!("{}", serde_json::to_string(record).expect("serializable")),
        "yaml" => out!("---\n{}", serde_yaml::to_string(record).expect("serializable")),
        _ => print_record(record),
    };
    kept.iter().for_each(show);
    if !follow {
        return Ok(());
    }
    let mut next = after.unwrap_or(0);
    loop {
        tokio::time::sleep(interval).await;
        let page = fetch(client, filters, Some(next), Some(PAGE)).await?;
        if page.first_retained > next + 1 && page.records.first().is_none_or(|r| r.cursor > next + 1) {
            eprintln!("# retention evicted records before cursor {} before they could be shown", page.first_retained);
        }
        page.records.iter().for_each(show);
        next = page.next;
    }
}

async fn fetch(client: &Client, filters: &Filters, after: Option<u64>, limit: Option<u32>) -> Result<DataPage, Failure> {
    let (_, page) = client.call(Method::GET, DATA, &query_pairs(filters, after, limit), None).await?;
    Ok(page)
}

/// The URL parameters of `GET /v1/data` ([`edgeplane_api::data::DataQuery`]).
fn query_pairs(filters: &Filters, after: Option<u64>, limit: Option<u32>) -> Vec<(&'static str, String)> {
    let f = filters;
    let named =
        [("namespace", &f.namespace), ("workload", &f.workload), ("node", &f.node), ("stream", &f.stream), ("output", &f.output_name)];
    let mut pairs: Vec<(&'static str, String)> = named.into_iter().filter_map(|(k, v)| Some((k, v.clone()?))).collect();
    pairs.extend(after.map(|a| ("after", a.to_string())));
    pairs.extend(limit.map(|l| ("limit", l.to_string())));
    pairs
}

fn print_header() {
    outln!(
        "{:>8}  {:<16} {:<48} {:>6}  {:<8} {:>13}  {:<16} {:<18} VALUE",
        "CURSOR",
        "NODE",
        "STREAM",
        "SEQ",
        "MODEL",
        "TS",
        "DEVICE",
        "METRIC"
    );
}

/// One line per reading, or one for a record without readings.
fn print_record(stored: &StoredRecord) {
    let r = &stored.record;
    let model = r.model.as_deref().unwrap_or("-");
    let prefix = format!("{:>8}  {:<16} {:<48} {:>6}  {model:<8}", stored.cursor, stored.node, r.stream, r.seq);
    if r.readings.is_empty() {
        let what = match &r.opaque {
            Some(b64) => format!("(opaque, {} bytes)", decoded_len(b64)),
            None => "(no readings)".to_owned(),
        };
        outln!("{prefix} {:>13}  {what}", r.produced_ms);
    }
    for reading in &r.readings {
        outln!("{prefix} {:>13}  {:<16} {:<18} {}", reading.ts, reading.device, reading.metric, reading.value);
    }
}

/// The length of padded base64's decoded bytes, without decoding them.
fn decoded_len(b64: &str) -> usize {
    let padding = b64.bytes().rev().take_while(|b| *b == b'=').count();
    (b64.len() / 4 * 3).saturating_sub(padding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_url_parameters() {
        let filters = Filters {
            namespace: None,
            workload: None,
            node: Some("edge-1".into()),
            stream: None,
            output_name: Some("alerts".into()),
            after: None,
        };
        let pairs = query_pairs(&filters, Some(7), Some(5));
        let expected = [("node", "edge-1"), ("output", "alerts"), ("after", "7"), ("limit", "5")].map(|(k, v)| (k, v.to_owned()));
        assert_eq!(pairs, expected);
    }

    #[test]
    fn opaque_sizes_are_counted_from_base64() {
        assert_eq!(decoded_len("AAECAw=="), 4);
        assert_eq!(decoded_len("AAEC"), 3);
        assert_eq!(decoded_len("AAECAwQ="), 5);
        assert_eq!(decoded_len(""), 0);
    }
}
