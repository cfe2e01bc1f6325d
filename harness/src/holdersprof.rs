//! `GET /debug/pprof/holders`: who holds the memory, as a Go-format heap
//! profile whose stacks are retainer chains (see `profiler`'s holder scan).
//!
//! Off unless the process runs in holder mode (`leaklab serve --holders`):
//! then it answers 404 with the reason. A scan forks the process and walks
//! its whole heap, so one runs at a time (503 while busy) and a new one
//! starts at most once per [`MIN_INTERVAL`] (429 with `Retry-After`). Like
//! every admin route it is served on loopback by default.
//!
//! The response carries the scan's figures as headers, for runs to record:
//! `x-holders-pause-us` (the fork, which pauses the process's other
//! threads), `x-holders-scan-ms`, `x-holders-total-ms`, `x-holders-blocks`,
//! `x-holders-partial` (why the profile is partial, empty if it is not).
//! Query: `max_hops=N` (named blocks per chain, default 16).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use profiler::{HolderError, HolderOptions};

use crate::probe::Probe;

/// Least time between the starts of two scans.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

static LAST_SCAN: Mutex<Option<Instant>> = Mutex::new(None);

/// Query parameters.
#[derive(Debug, Default, serde::Deserialize)]
pub struct HoldersQuery {
    /// Named blocks per chain.
    pub max_hops: Option<usize>,
}

/// Answers one request.
pub async fn serve(probe: Arc<Probe>, q: HoldersQuery) -> Response {
    if !probe.profiler.holder_mode() {
        return (StatusCode::NOT_FOUND, format!("{}\n", HolderError::Off)).into_response();
    }
    {
        let mut last = LAST_SCAN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = *last {
            let since = t.elapsed();
            if since < MIN_INTERVAL {
                let wait = (MIN_INTERVAL - since).as_secs().max(1).to_string();
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, wait)],
                    format!("one holder scan per {MIN_INTERVAL:?}\n"),
                )
                    .into_response();
            }
        }
        *last = Some(Instant::now());
    }
    let opts = HolderOptions { max_hops: q.max_hops.unwrap_or(16).clamp(1, 256), ..HolderOptions::default() };
    // The task that runs the scan is the profiler's, not the program's: its
    // memory is no holder (see `profiler::as_own`).
    let scan = profiler::as_own(|| tokio::task::spawn_blocking(move || probe.profiler.holders_profile(&opts))).await;
    match scan {
        Ok(Ok(scan)) => {
            let s = &scan.stats;
            let gz = scan.profile.encode_gzip();
            let mut resp = (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                    (header::CONTENT_DISPOSITION, "attachment; filename=\"holders\"".to_owned()),
                ],
                gz,
            )
                .into_response();
            let h = resp.headers_mut();
            let mut put = |name: &'static str, value: String| {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    h.insert(HeaderName::from_static(name), v);
                }
            };
            put("x-holders-pause-us", s.pause.as_micros().to_string());
            put("x-holders-scan-ms", format!("{:.3}", s.scan.as_secs_f64() * 1e3));
            put("x-holders-total-ms", format!("{:.3}", s.total.as_secs_f64() * 1e3));
            put("x-holders-blocks", s.blocks.to_string());
            put("x-holders-partial", s.partial.join("; ").replace(['\r', '\n'], " "));
            resp
        }
        Ok(Err(e @ HolderError::Busy)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("holder scan failed: {e}\n")).into_response(),
    }
}
