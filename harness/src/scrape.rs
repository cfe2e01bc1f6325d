//! Scraping a process's admin endpoint: profiles as bytes, `/metrics` as
//! figures, and the `metrics.jsonl` line format.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::metrics::{FIGURES, LARGEST_PEER, LARGEST_PEER_FIELD, LARGEST_PEER_LABEL};
use crate::probe::Figures;

/// One line of `metrics.jsonl`, as a run writes it; the diagnosis reads it
/// back as a [`diagnosis::MetricsLine`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricsLine {
    /// Seconds since the run started.
    pub t: f64,
    /// `warmup`, `load`, `drain`, `settle`.
    pub phase: String,
    /// CPU seconds (user and system) the process under test had used when
    /// the snapshot began, as the run reads them from outside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_s: Option<f64>,
    /// CPU seconds it used while this snapshot's profiles, metrics and
    /// holder scan were taken: the cost of being watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_cpu_s: Option<f64>,
    /// The figures.
    #[serde(flatten)]
    pub figures: Figures,
}

/// An HTTP agent with short timeouts, for loopback scraping.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(true)
        .build()
        .into()
}

/// The largest response body read: a profile's limit
/// ([`diagnosis::MAX_PROFILE_BYTES`], 64 MiB), which is also far more than
/// any `/metrics` text; a larger body is refused, not decoded.
pub const MAX_BODY_BYTES: u64 = diagnosis::MAX_PROFILE_BYTES;

/// GET `http://ADDR/PATH` as bytes.
pub fn get_bytes(agent: &ureq::Agent, addr: SocketAddr, path: &str) -> anyhow::Result<Vec<u8>> {
    get_url(agent, &format!("http://{addr}{path}"))
}

/// GET a URL as bytes, at most [`MAX_BODY_BYTES`]: a larger body is an
/// error naming the URL, read no further.
pub fn get_url(agent: &ureq::Agent, url: &str) -> anyhow::Result<Vec<u8>> {
    let mut resp = agent.get(url).call().with_context(|| format!("GET {url}"))?;
    crate::files::read_capped(resp.body_mut().as_reader(), MAX_BODY_BYTES, url)
}

/// GET as text.
pub fn get_text(agent: &ureq::Agent, addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    Ok(String::from_utf8_lossy(&get_bytes(agent, addr, path)?).into_owned())
}

/// The figures `leaklab serve` exposes, from its `/metrics` text; a figure
/// missing from the text reads 0.
pub fn figures(text: &str) -> Figures {
    let m = diagnosis::parse_prometheus(text);
    let mut figures = Figures::default();
    for f in &FIGURES {
        (f.write)(&mut figures, m.get(f.metric.name).copied().unwrap_or(0.0).max(0.0) as u64);
    }
    figures.largest_peer = label_value(text, LARGEST_PEER, LARGEST_PEER_LABEL);
    figures
}

/// The value of label `label` on the first sample of `name`.
pub fn label_value(text: &str, name: &str, label: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))?;
    let start = line.find(&format!("{label}=\""))? + label.len() + 2;
    let end = start + line[start..].find('"')?;
    Some(line[start..end].to_owned())
}

/// Renames the Prometheus names `leaklab serve` exposes to the
/// `metrics.jsonl` names the diagnosis reads; other names pass through.
pub fn leaklab_names(values: BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    values
        .into_iter()
        .map(|(k, v)| match FIGURES.iter().find(|f| f.metric.name == k) {
            Some(f) => (f.field.to_owned(), v),
            None => (k, v),
        })
        .collect()
}

/// A live process's `/metrics` text at `t` seconds as the diagnosis reads
/// a `metrics.jsonl` line: every value (`leaklab serve`'s under their
/// `metrics.jsonl` names), and the largest request's peer.
pub fn diagnosis_line(t: f64, text: &str) -> diagnosis::MetricsLine {
    let mut line = diagnosis::MetricsLine {
        t,
        phase: None,
        values: leaklab_names(diagnosis::parse_prometheus(text)),
        text: Default::default(),
    };
    if let Some(peer) = label_value(text, LARGEST_PEER, LARGEST_PEER_LABEL) {
        line.text.insert(LARGEST_PEER_FIELD.into(), peer);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves one response of `len` bytes (zeros, sent in 1 MiB writes
    /// until the client stops reading) on a loopback port.
    fn one_response(len: u64) -> SocketAddr {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut head = [0u8; 1024];
            let _ = s.read(&mut head);
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
            let chunk = vec![0u8; 1 << 20];
            let mut left = len;
            while left > 0 {
                let n = left.min(chunk.len() as u64);
                if s.write_all(&chunk[..n as usize]).is_err() {
                    return;
                }
                left -= n;
            }
        });
        addr
    }

    #[test]
    fn a_body_past_the_limit_is_refused_and_read_no_further() {
        let agent = agent();
        let addr = one_response(MAX_BODY_BYTES + (16 << 20));
        let err = get_bytes(&agent, addr, "/debug/pprof/heap").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("/debug/pprof/heap: more than 67108864 bytes"), "{text}");
        let addr = one_response(4096);
        assert_eq!(get_bytes(&agent, addr, "/metrics").unwrap().len(), 4096);
    }

    #[test]
    fn parses_prometheus_text() {
        let text = "# HELP x y\n# TYPE x gauge\nprocess_resident_memory_bytes 5844992.0\n\
                    leaklab_requests_total 196080\nwith_labels{a=\"b c\"} 3.5\nbad line\n";
        let m = diagnosis::parse_prometheus(text);
        assert_eq!(m["process_resident_memory_bytes"], 5844992.0);
        assert_eq!(m["leaklab_requests_total"], 196080.0);
        assert_eq!(m["with_labels"], 3.5);
        assert_eq!(m.len(), 3);
        let f = figures(text);
        assert_eq!((f.rss_bytes, f.requests), (5844992, 196080));
        let peer = "leaklab_largest_request_peer{peer=\"127.0.0.1:5555\"} 1.0\n";
        assert_eq!(figures(peer).largest_peer.as_deref(), Some("127.0.0.1:5555"));
    }

    #[test]
    fn a_written_line_reads_back_as_the_live_one() {
        let mut f = Figures::default();
        for (i, m) in FIGURES.iter().enumerate() {
            (m.write)(&mut f, 10 + i as u64);
        }
        f.largest_peer = Some("127.0.0.1:5555".into());
        let written = MetricsLine { t: 1.5, phase: "load".into(), cpu_s: None, scrape_cpu_s: None, figures: f.clone() };
        let json = serde_json::to_string(&written).expect("line as JSON");
        let read = diagnosis::parse_metrics(json.as_bytes(), "metrics.jsonl").expect("parsed");
        let mut text = String::new();
        for m in &FIGURES {
            text.push_str(&format!("{} {}\n", m.metric.name, (m.metric.read)(&f)));
        }
        text.push_str(&format!("{LARGEST_PEER}{{{LARGEST_PEER_LABEL}=\"127.0.0.1:5555\"}} 1\n"));
        let mut live = diagnosis_line(1.5, &text);
        // The live line also passes the peer's gauge through under its own name.
        assert_eq!(live.values.remove(LARGEST_PEER), Some(1.0));
        assert_eq!(read[0].values, live.values);
        assert_eq!(read[0].text, live.text);
        assert_eq!(read[0].phase.as_deref(), Some("load"));
        assert_eq!(figures(&text), f);
    }
}
