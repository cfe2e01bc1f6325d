//! Each leak variant grows where the guide (and `leaklab explain`) says it
//! does: in the profiles the run wrote, between the first snapshot and the
//! last one of the load phase, the samples under the named site grow by at
//! least [`MIN_GROWTH`] and make at least [`MIN_SHARE`] of all the growth
//! of that profile.

use diagnosis::HeapSample;

use crate::support::{
    called_from, chain_growth, exclusive, has_frame, held_under, inuse_of, mib, run, top_growth, Finished, Pick, MIB,
};

/// The least growth at the site over the run (1 s warm-up, 3 s load).
const MIN_GROWTH: f64 = 4.0 * MIB;

/// The least share of the profile's total in-use growth the site makes.
const MIN_SHARE: f64 = 0.5;

/// Growth at `site` in the `kind` profiles of a run, asserted; returns it.
fn assert_grows(run: &Finished, kind: &str, site: &str, pick: Pick<'_>) -> f64 {
    let metrics = run.metrics();
    let last = run.last_in(&metrics, "load");
    let first = run.profile(kind, 0);
    let end = run.profile(kind, last);
    let growth = inuse_of(&end, pick) - inuse_of(&first, pick);
    let total = end.total_inuse_bytes() - first.total_inuse_bytes();
    let share = if total > 0.0 { growth / total } else { 0.0 };
    let top: Vec<String> =
        top_growth(&first, &end, 4).into_iter().map(|(g, stack)| format!("  {} {stack}", mib(g))).collect();
    let report = format!(
        "{} ({kind} profile, snapshot 0 -> {last}): {site} grew {} of {} total ({:.0}%); largest growth:\n{}",
        run.scenario,
        mib(growth),
        mib(total),
        share * 100.0,
        top.join("\n")
    );
    eprintln!("LEAK-SITE {report}");
    assert!(growth >= MIN_GROWTH, "less than {} at the site: {report}", mib(MIN_GROWTH));
    assert!(share >= MIN_SHARE, "the site is not where the profile grows: {report}");
    growth
}

/// Who holds it: in the holder profiles the run took, between the first
/// one and the last one (after the drain: what stays) or, when little
/// stays, the fullest one, the chains that gained over the blocks
/// allocated under `held` and name `holder` (the scenario's holder, as
/// `leaklab explain` gives it) hold at least as much as any other chain.
/// Memory under one site can be held by several chains at once (the leaked
/// buffers by the barrier slots, the buffers of connections still open by
/// their tasks): those naming the holder must still explain a quarter of
/// the growth.
fn assert_held_by(run: &Finished, held: &str, holder: &str) {
    let holders = run.holders();
    assert!(holders.len() >= 3, "{}: {} holder profiles", run.scenario, holders.len());
    let first = &holders[0].1;
    let pick = |s: &HeapSample| held_under(s, held) || s.frames[0].function.contains(held);
    // What stays (the last profile, after the drain) when it stays; else
    // the fullest moment (connections the drain closes free their buffers).
    let sum = |c: &[(f64, Vec<String>)]| c.iter().map(|x| x.0.max(0.0)).sum::<f64>();
    let all: Vec<Vec<(f64, Vec<String>)>> =
        holders[1..].iter().map(|(_, later)| chain_growth(first, later, &pick)).collect();
    let fullest = all.iter().max_by(|a, b| sum(a).total_cmp(&sum(b))).cloned().unwrap_or_default();
    let last = all.last().cloned().unwrap_or_default();
    let chains = if sum(&last) >= diagnosis::HOLDER_STAYS * sum(&fullest) { last } else { fullest };
    let total: f64 = chains.iter().map(|c| c.0.max(0.0)).sum();
    let report: Vec<String> = chains.iter().take(4).map(|(g, c)| format!("  {} {}", mib(*g), c.join(" -> "))).collect();
    eprintln!("HOLDER {}: blocks under {held}:\n{}", run.scenario, report.join("\n"));
    assert!(!chains.is_empty(), "{}: no block under {held}", run.scenario);
    // The chains that name the holder, together, hold at least as much as
    // any chain that does not (blocks of one size held by several chains
    // tie: an oversized request still in flight in its decoding task holds
    // as many bytes as the connection buffer that keeps the last one), and
    // explain a quarter of the growth.
    let names = |chain: &[String]| holder.split('|').any(|part| chain.iter().any(|link| link.contains(part)));
    let named: f64 = chains.iter().filter(|c| names(&c.1)).map(|c| c.0.max(0.0)).sum();
    let other = chains.iter().filter(|c| !names(&c.1)).map(|c| c.0).fold(0.0, f64::max);
    assert!(
        named > 0.0 && named >= other,
        "{}: the chains naming {holder} hold less than another chain:\n{}",
        run.scenario,
        report.join("\n")
    );
    assert!(
        named >= 0.25 * total,
        "{}: the chains naming {holder} explain too little:\n{}",
        run.scenario,
        report.join("\n")
    );
}

/// The pool profile stays flat next to a heap leak that is not pooled: it
/// grows by less than a quarter of the heap site's growth.
fn assert_pool_flat(run: &Finished, site_growth: f64) {
    let metrics = run.metrics();
    let last = run.last_in(&metrics, "load");
    let growth = run.profile("pool", last).total_inuse_bytes() - run.profile("pool", 0).total_inuse_bytes();
    eprintln!("LEAK-SITE {}: pool profile grew {}", run.scenario, mib(growth));
    assert!(
        growth < site_growth / 4.0,
        "{}: the pool profile grew {} next to {}",
        run.scenario,
        mib(growth),
        mib(site_growth)
    );
}

/// A leak run, checked for a clean end and a complete folder.
fn leak_run(scenario: &str, set: &[&str]) -> Finished {
    let run = {
        let _lab = exclusive();
        run(scenario, "leak", set)
    };
    run.assert_clean();
    run.assert_run_record();
    run
}

/// Chunks leased by the pool (`Pool::lease`) for one of `takers`.
fn leased_by<'a>(takers: &'a [&'a str]) -> impl Fn(&HeapSample) -> bool + 'a {
    move |s: &HeapSample| called_from(s, "Pool::lease", takers)
}

const READ_PATH: [&str; 4] =
    ["InputBuffer::book", "InputBuffer::new_node", "InputBuffer::next_span", "InputBuffer::begin_span"];

#[test]
fn request_field_hold_copy_grows_under_read_field_2() {
    let run = leak_run("request-field-hold", &[]);
    let growth = assert_grows(&run, "heap", "Request::read_field_2", &|s| has_frame(s, "Request::read_field_2"));
    assert_pool_flat(&run, growth);
    assert_held_by(&run, "Request::read_field_2", scenarios::find("request-field-hold").unwrap().holder);
    // The run wrote its report, whose pictures name the site.
    for (file, names) in [("timeline.svg", "Request::read_field_2"), ("flame.svg", "Request::read_field_2")] {
        let text = std::fs::read_to_string(run.out.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(text.contains(names), "{file} does not name {names}");
    }
    let page = std::fs::read_to_string(run.out.join("report.html")).expect("report.html written by the run");
    assert!(page.contains("request-field-held") && page.contains("Holding onto a Field of Request Object"));
    assert!(run.stdout.contains("report: "), "{}", run.stdout);
}

#[test]
fn request_field_hold_nocopy_pins_pool_chunks_held_by_msg() {
    let run = leak_run("request-field-hold", &["decode=nocopy"]);
    let pinned_by_msg = |s: &HeapSample| {
        s.labels.iter().any(|(k, v)| k == "pinned" && v == "true")
            && s.frames.first().is_some_and(|f| f.function == "held by Request.msg (field 2, binary)")
    };
    assert_grows(&run, "pool", "pinned, held by Request.msg (field 2, binary)", &pinned_by_msg);
    assert_held_by(&run, "InputBuffer::", scenarios::find("request-field-hold").unwrap().holder);
}

#[test]
fn response_field_hold_grows_under_response_read_field_2() {
    let run = leak_run("response-field-hold", &[]);
    assert_grows(&run, "heap", "Response::read_field_2", &|s| has_frame(s, "Response::read_field_2"));
    assert_held_by(&run, "Response::read_field_2", scenarios::find("response-field-hold").unwrap().holder);
}

#[test]
fn conn_surge_response_nocopy_grows_under_the_handler() {
    let run = leak_run("conn-surge-response-nocopy", &[]);
    let growth = assert_grows(&run, "heap", "build_response", &|s| has_frame(s, "build_response"));
    assert_pool_flat(&run, growth);
    assert_held_by(&run, "build_response", scenarios::find("conn-surge-response-nocopy").unwrap().holder);
}

#[test]
fn conn_surge_response_copy_grows_in_output_chunks_from_the_pool() {
    let run = leak_run("conn-surge-response-copy", &[]);
    let pick = leased_by(&["OutputBuffer::malloc", "OutputBuffer::grow"]);
    assert_grows(&run, "heap", "Pool::lease <- OutputBuffer::malloc/grow", &pick);
    assert_held_by(&run, "OutputBuffer::", scenarios::find("conn-surge-response-copy").unwrap().holder);
}

#[test]
fn conn_surge_request_grows_on_the_read_path_into_the_pool() {
    let run = leak_run("conn-surge-request", &[]);
    let pick = leased_by(&READ_PATH);
    assert_grows(&run, "heap", "Pool::lease <- InputBuffer::book/new_node/next_span", &pick);
    assert_held_by(&run, "InputBuffer::", scenarios::find("conn-surge-request").unwrap().holder);
}

#[test]
fn oversized_request_grows_on_the_read_path_into_the_pool() {
    let run = leak_run("oversized-request", &[]);
    let pick = leased_by(&READ_PATH);
    assert_grows(&run, "heap", "Pool::lease <- InputBuffer::book/new_node/next_span", &pick);
    assert_held_by(&run, "InputBuffer::", scenarios::find("oversized-request").unwrap().holder);
}

#[test]
fn idle_connections_grow_in_the_buffers_of_each_connection() {
    let run = leak_run("idle-connections", &[]);
    // The guide: chunks leased by `InputBuffer::new` at each accept (exactly
    // that function, not `InputBuffer::new_node`), and by
    // `OutputBuffer::grow` after each connection's first call.
    let pick = |s: &HeapSample| {
        let Some(i) = s.frames.iter().position(|f| f.function.contains("Pool::lease")) else { return false };
        s.frames[i + 1..].iter().any(|f| {
            f.function.ends_with("InputBuffer::new")
                || f.function.contains("OutputBuffer::grow")
                || f.function.contains("OutputBuffer::malloc")
        })
    };
    assert_grows(&run, "heap", "Pool::lease <- InputBuffer::new / OutputBuffer::grow", &pick);
    assert_held_by(&run, "InputBuffer::new", scenarios::find("idle-connections").unwrap().holder);
}

#[test]
fn duplicate_clients_grow_in_the_balancer_hooks() {
    let run = leak_run("duplicate-clients", &[]);
    let pick = |s: &HeapSample| has_frame(s, "format_instances") || has_frame(s, "on_rebalance");
    assert_grows(&run, "heap", "format_instances / on_rebalance", &pick);
    assert_held_by(&run, "format_instances", scenarios::find("duplicate-clients").unwrap().holder);
}

#[test]
fn sonic_string_hold_grows_under_read_field_3() {
    let run = leak_run("sonic-string-hold", &[]);
    let growth = assert_grows(&run, "heap", "Request::read_field_3", &|s| has_frame(s, "Request::read_field_3"));
    assert_pool_flat(&run, growth);
    assert_held_by(&run, "Request::read_field_3", scenarios::find("sonic-string-hold").unwrap().holder);
}
