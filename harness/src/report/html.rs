//! The page: one self-contained HTML file. Charts are inline SVG; each
//! flame graph is inferno's SVG document in an `<iframe srcdoc>` (its
//! script expects a document of its own: ids, `svg[0]`), which a small
//! script of the page searches; nothing is fetched. All text from files is
//! escaped.

use std::fmt::Write as _;
use std::path::Path;

use super::flame::Growth;
use super::markup::{escape, svg_body, svg_height};
use super::run::Run;

/// What a run contributes to the page besides its data.
#[derive(Debug)]
pub(super) struct Pictures {
    /// The timeline's SVG.
    pub(super) timeline: String,
    /// The flame graph's SVG document.
    pub(super) flame: String,
    /// What the flame graph shows.
    pub(super) growth: Growth,
    /// The pool's view, if the run has pool profiles.
    pub(super) pool: Option<String>,
}

const STYLE: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; color: #1e1e1e; margin: 0; background: #fafafa; }
main { max-width: 1340px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 24px; margin: 8px 0 4px; }
h2 { font-size: 19px; margin: 32px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
p, li { line-height: 1.45; }
.sub { color: #555; margin: 0 0 8px; }
.grid { display: grid; grid-template-columns: repeat(var(--cols), minmax(0, 1fr)); gap: 16px; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 12px 16px; }
.right { color: #1b7a1b; font-weight: 600; }
.wrong { color: #b41e1e; font-weight: 600; }
.kind { font-size: 18px; font-weight: 700; }
.chart { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 4px; overflow-x: auto; }
.chart svg { display: block; max-width: 100%; height: auto; }
iframe.flame { width: 100%; border: 1px solid #ddd; border-radius: 6px; background: #fff; }
code, pre { font-family: ui-monospace, 'DejaVu Sans Mono', monospace; font-size: 13px; }
pre { background: #f0f0f0; border: 1px solid #ddd; border-radius: 6px; padding: 10px 12px; overflow-x: auto; white-space: pre-wrap; }
blockquote { margin: 8px 0; padding: 8px 16px; border-left: 4px solid #9aa7b8; background: #fff; }
blockquote .heading { font-weight: 700; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 8px 0; }
dl.facts dt { color: #555; }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
.search { margin: 8px 0; }
.search input { font-size: 14px; padding: 4px 6px; width: 320px; }
.note { color: #555; font-size: 14px; }
";

/// Searches every flame graph of the page with inferno's own `search`;
/// each frame is a same-origin `srcdoc` document.
const SCRIPT: &str = "
function flameSearch(term) {
  var status = document.getElementById('flame-status');
  var matched = 0;
  document.querySelectorAll('iframe.flame').forEach(function (f) {
    var w = f.contentWindow;
    if (!w || typeof w.search !== 'function') return;
    if (w.searching) w.search_prompt();
    if (!term) return;
    try { w.search(term); } catch (e) { status.textContent = 'not a regular expression: ' + e.message; return; }
    if (w.searching) matched += 1;
  });
  if (term && status.textContent.indexOf('not a regular') !== 0) {
    status.textContent = matched ? 'highlighted in ' + matched + ' graph(s)' : 'no frame matches';
  } else if (!term) {
    status.textContent = '';
  }
}
document.getElementById('flame-form').addEventListener('submit', function (e) {
  e.preventDefault();
  document.getElementById('flame-status').textContent = '';
  flameSearch(document.getElementById('flame-term').value);
});
";

/// The tallest a flame graph's frame is on the page; a taller graph
/// scrolls inside it.
const MAX_FLAME_HEIGHT: u32 = 640;

/// Keeps inferno's script from failing where a frame's URL cannot change
/// (a `srcdoc` document): its state in the URL is only a convenience.
const FRAME_PRELUDE: &str = "<script>(function(){var r=history.replaceState.bind(history);\
history.replaceState=function(s,t,u){try{r(s,t,u);}catch(e){}};})();</script>";

/// The page for one run, or for runs side by side.
pub(super) fn page(runs: &[(&Run, &Pictures)]) -> String {
    let cols = runs.len();
    let mut h = String::new();
    let titles: Vec<String> = runs.iter().map(|(r, _)| r.title()).collect();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>leaklab report: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main style=\"--cols: {cols}\">\n",
        escape(&titles.join(" vs "))
    );
    let _ = writeln!(h, "<h1>leaklab report: {}</h1>", escape(&titles.join(" compared with ")));
    for (run, _) in runs {
        let _ = writeln!(h, "<p class=\"sub\">{}</p>", run_facts(run));
    }

    h.push_str("<h2 id=\"verdict\">The verdict</h2>\n<div class=\"grid\">\n");
    for (run, _) in runs {
        h.push_str(&verdict(run));
    }
    h.push_str("</div>\n");

    h.push_str("<h2 id=\"timeline\">Memory over time</h2>\n");
    let _ = writeln!(
        h,
        "<p class=\"note\">Stacked areas: the in-use bytes of the sites that grew most, as the heap profiles \
         (<code>heap-NNN.pb.gz</code>) count them, with every other site above them; a site is the frame the engine \
         names for a stack (a decoded field's reader, the framework's read or encode path, else business code). \
         Black line: RSS. Dashed, on the right axis: open connections and requests per second. Shaded: the \
         phases. Red dashed line: the snapshot from which the engine's verdict was the expected leak and stayed so.{}</p>",
        if cols > 1 { " Both runs are drawn on the same scales." } else { "" }
    );
    h.push_str("<div class=\"grid\">\n");
    for (_, p) in runs {
        let _ = writeln!(h, "<div class=\"chart\">{}</div>", svg_body(&p.timeline));
    }
    h.push_str("</div>\n");

    h.push_str("<h2 id=\"flame\">Where the memory grew</h2>\n");
    h.push_str(
        "<p class=\"note\">A flame graph of the growth: for each stack, the in-use bytes it gained from the first \
         to the last snapshot of the load (stacks that shrank are left out). The widest frames near the top are \
         where the growth was allocated; a tall graph scrolls inside its frame, down to the roots of the stacks. \
         Hover a frame for its bytes, click to zoom; search below or with the graph's own <em>Search</em>.</p>\n\
         <form id=\"flame-form\" class=\"search\"><input id=\"flame-term\" type=\"search\" \
         placeholder=\"a function, or a regular expression (read_field)\" aria-label=\"search the flame graphs\"> \
         <button type=\"submit\">Search</button> <span id=\"flame-status\" class=\"note\"></span></form>\n",
    );
    h.push_str("<div class=\"grid\">\n");
    for (run, p) in runs {
        // A tall graph scrolls inside its frame, its top (the leaves) first.
        let height = svg_height(&p.flame).unwrap_or(120).clamp(60, MAX_FLAME_HEIGHT);
        let doc = format!(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\">{FRAME_PRELUDE}<style>body{{margin:0}} body>svg{{width:100%}}</style></head>\
             <body>{}</body></html>",
            svg_body(&p.flame)
        );
        let _ = writeln!(
            h,
            "<iframe class=\"flame\" title=\"flame graph of the growth of {}\" height=\"{height}\" srcdoc=\"{}\"></iframe>",
            escape(&run.title()),
            escape(&doc)
        );
    }
    h.push_str("</div>\n");

    h.push_str("<h2 id=\"pool\">The pool's view</h2>\n");
    h.push_str(
        "<p class=\"note\">From <code>pool-NNN.pb.gz</code>: pooled chunks that stay pinned after the buffer that \
         took them let go, by who still holds them (a decoded field cut from the chunk without a copy, a barrier \
         slot) and by who took them from the pool. A heap profile cannot show this: it blames whoever first \
         allocated the chunk, long ago. Lines: bytes that connection buffers are using, and bytes cached for \
         reuse.</p>\n<div class=\"grid\">\n",
    );
    for (_, p) in runs {
        match &p.pool {
            Some(svg) => {
                let _ = writeln!(h, "<div class=\"chart\">{}</div>", svg_body(svg));
            }
            None => h.push_str("<div class=\"card\">This run has no pool profiles.</div>\n"),
        }
    }
    h.push_str("</div>\n");

    // One card per scenario: a leak and its fix share theirs.
    let mut shown: Vec<&Run> = Vec::new();
    for (run, _) in runs {
        if !shown.iter().any(|s| s.info.is_some() && s.info.map(|i| i.name) == run.info.map(|i| i.name)) {
            shown.push(run);
        }
    }
    let _ = writeln!(
        h,
        "<h2 id=\"guide\">What the guide says, and what this scenario does</h2>\n<div class=\"grid\" style=\"--cols: {}\">",
        shown.len()
    );
    for run in shown {
        h.push_str(&explain(run));
    }
    h.push_str("</div>\n");

    h.push_str("<h2 id=\"pprof\">The same by hand, with <code>go tool pprof</code></h2>\n");
    h.push_str(&commands(runs));

    h.push_str(
        "<p class=\"note\">Written by <code>leaklab report</code>. This page is self-contained: it loads nothing \
         from the network.</p>\n</main>\n",
    );
    let _ = write!(h, "<script>{SCRIPT}</script>\n</body>\n</html>\n");
    h
}

/// Folder, snapshots, interval and parameters of a run.
fn run_facts(run: &Run) -> String {
    let mut s = format!(
        "<strong>{}</strong>: <code>{}</code>, {} heap snapshots",
        escape(&run.title()),
        escape(&run.dir.display().to_string()),
        run.input.heaps.len()
    );
    if run.record.interval_s > 0.0 {
        let _ = write!(s, " every {} ms", (run.record.interval_s * 1000.0).round());
    }
    if !run.record.params.is_empty() {
        let params: Vec<String> = run.record.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = write!(s, "; <code>{}</code>", escape(&params.join(" ")));
    }
    s
}

/// The field a site names (`Request::read_field_2`, `Request.msg (field
/// 2)`, `(*Request).FastReadField2`), in words.
fn field_of(site: &str) -> Option<String> {
    for marker in ["::read_field_", ".FastReadField", ".ReadField"] {
        if let Some(at) = site.find(marker) {
            let digits: String = site[at + marker.len()..].chars().take_while(char::is_ascii_digit).collect();
            let owner = site[..at].rsplit([':', '.', '*', '(', ')', ' ']).find(|s| !s.is_empty())?;
            if !digits.is_empty() {
                return Some(format!("{owner} field {digits} (the field whose tag is {digits} in the IDL)"));
            }
        }
    }
    let at = site.find(" (field ")?;
    let name = site[..at].rsplit(' ').next()?;
    let tag: String = site[at + " (field ".len()..].chars().take_while(char::is_ascii_digit).collect();
    Some(format!("{name} (the field whose tag is {tag} in the IDL)"))
}

fn verdict(run: &Run) -> String {
    let j = &run.judged;
    let v = &j.verdict;
    let mut s = String::from("<div class=\"card\">\n");
    let _ =
        write!(s, "<h3>{}</h3>\n<p><span class=\"kind\">{}</span>", escape(&run.title()), escape(&v.kind.to_string()));
    match (j.correct(), &j.expected) {
        (Some(true), _) => s.push_str(" <span class=\"right\">right</span>"),
        (Some(false), Some(e)) => {
            let _ = write!(s, " <span class=\"wrong\">wrong: {} was expected</span>", escape(e));
        }
        _ => {}
    }
    let _ = writeln!(s, "</p>\n<p>{}</p>", escape(&v.summary));
    if let Some(k) = j.detected_at {
        let t = run.times.get(k).map(|t| format!(" at {:.1} s", t.t)).unwrap_or_default();
        let _ = writeln!(
            s,
            "<p>The verdict was right from snapshot {k} (<code>{}</code>{t}) on.</p>",
            escape(&run.heap_name(k))
        );
    }
    if !j.from_file {
        s.push_str(
            "<p class=\"note\">This folder has no <code>verdict.json</code>: the engine ran for this report.</p>\n",
        );
    }
    for (i, f) in v.findings.iter().enumerate() {
        if i > 0 {
            let _ = writeln!(s, "<h3>Also: {}</h3>", escape(&f.kind.to_string()));
        }
        s.push_str("<dl class=\"facts\">\n");
        let mut fact = |k: &str, v: String| {
            let _ = writeln!(s, "<dt>{k}</dt><dd>{v}</dd>");
        };
        fact("kind", escape(&f.kind.to_string()));
        fact("score", format!("{:.2}", f.score));
        fact("site", format!("<code>{}</code>", escape(&f.site)));
        if let Some(field) = field_of(&f.site) {
            fact("field", escape(&field));
        }
        fact("growth", format!("{:.1} MiB, {:.2} MiB/s", f.growth_bytes / 1048576.0, f.growth_bytes_per_s / 1048576.0));
        let held = |holder: &diagnosis::Holder| {
            let chain: Vec<String> = holder.chain.iter().map(|l| format!("<code>{}</code>", escape(l))).collect();
            format!("{} ({:.0}% of the held growth)", chain.join(" → "), holder.share * 100.0)
        };
        if let Some(holder) = &f.holder {
            fact("held by", held(holder));
        }
        for holder in &f.also_held_by {
            fact("also held by", held(holder));
        }
        s.push_str("</dl>\n<ul>\n");
        for e in &f.evidence {
            let _ = writeln!(s, "<li>{}</li>", escape(e));
        }
        let _ = writeln!(s, "</ul>\n<p><strong>What to do:</strong> {}</p>", escape(&f.remedy));
    }
    s.push_str("</div>\n");
    s
}

fn explain(run: &Run) -> String {
    let mut s = String::from("<div class=\"card\">\n");
    let Some(info) = run.info else {
        let _ = writeln!(
            s,
            "<p>{} is not a scenario of the catalogue: see the guide's cases with <code>leaklab list</code>.</p></div>",
            escape(&run.title())
        );
        return s;
    };
    let _ = writeln!(s, "<h3>{}</h3>", escape(info.name));
    if info.control {
        let _ = writeln!(s, "<p>{}</p>", escape(info.guide));
    } else {
        let _ = writeln!(
            s,
            "<p class=\"note\">From the <em>Memory Leak Self-Check Guide</em> (its figures are not part of the text):</p>\n\
             <blockquote>{}</blockquote>",
            guide_html(info.guide)
        );
    }
    for (head, text) in
        [("What it reproduces", info.reproduces), ("What the profiles show", info.profile_shows), ("The fix", info.fix)]
    {
        let _ = writeln!(s, "<h3>{head}</h3>\n<p>{}</p>", inline_code(text));
    }
    s.push_str("</div>\n");
    s
}

/// Escapes text and sets its `backquoted` spans as code.
fn inline_code(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{}</code>", escape(part));
        } else {
            out.push_str(&escape(part));
        }
    }
    out
}

/// A block of the guide's text.
#[derive(Debug, PartialEq)]
enum Block {
    Heading(String),
    Para(String),
    Item(String),
    Code(Vec<String>),
}

/// Whether a line of the guide is code (its Go examples).
fn is_code(line: &str, depth: i32) -> bool {
    let call = line.find('(').is_some_and(|at| {
        let head = &line[..at];
        !head.is_empty() && head.chars().all(|c| c.is_alphanumeric() || c == '.' || c == '_') && head.contains('.')
    }) && line.ends_with(')');
    depth > 0 || line.ends_with('{') || line == "}" || line.starts_with("//") || line.contains(":=") || call
}

/// The guide's text (verbatim, with the line breaks its inline code left)
/// as HTML: paragraphs and list items rejoined, inline code set as code,
/// code examples kept as lines.
fn guide_html(text: &str) -> String {
    let mut blocks: Vec<Block> = Vec::new();
    for (n, excerpt) in text.split("\n\n").enumerate() {
        let lines: Vec<&str> = excerpt.lines().map(str::trim_end).collect();
        let mut depth = 0;
        let mut open: Option<Block> = None;
        let mut bullet = false;
        let mut prev_ended = true;
        for (i, line) in lines.iter().enumerate() {
            let next = lines.get(i + 1).copied().unwrap_or("");
            if is_code(line, depth) {
                depth += line.matches('{').count() as i32 - line.matches('}').count() as i32;
                match &mut open {
                    Some(Block::Code(code)) => code.push((*line).to_owned()),
                    _ => {
                        blocks.extend(open.take());
                        open = Some(Block::Code(vec![(*line).to_owned()]));
                    }
                }
                prev_ended = true;
                continue;
            }
            if *line == "-" {
                blocks.extend(open.take());
                bullet = true;
                continue;
            }
            let (item, body) = match line.strip_prefix("- ") {
                Some(rest) => (true, rest),
                None => (bullet, *line),
            };
            bullet = false;
            let joins_back = body.starts_with(['.', ',', ';', ':', ')']);
            if n == 0
                && i == 0
                && !body.ends_with(['.', ':', '?'])
                && body.contains(' ')
                && !next.starts_with(['.', ','])
            {
                blocks.push(Block::Heading(escape(body)));
                prev_ended = true;
                continue;
            }
            let token = !body.contains(char::is_whitespace) && body.chars().count() <= 48 && !prev_ended;
            let piece = if token { format!("<code>{}</code>", escape(body)) } else { escape(body) };
            match &mut open {
                Some(Block::Para(p) | Block::Item(p)) if !item && (!prev_ended || joins_back) => {
                    if !joins_back {
                        p.push(' ');
                    }
                    p.push_str(&piece);
                }
                _ => {
                    blocks.extend(open.take());
                    open = Some(if item { Block::Item(piece) } else { Block::Para(piece) });
                }
            }
            prev_ended = body.ends_with(['.', ':', '?']) && !next.starts_with(['.', ',', ';', ')']);
        }
        blocks.extend(open.take());
    }
    let mut out = String::new();
    let mut in_list = false;
    for b in blocks {
        let item = matches!(b, Block::Item(_));
        if item && !in_list {
            out.push_str("<ul>");
        } else if !item && in_list {
            out.push_str("</ul>");
        }
        in_list = item;
        match b {
            Block::Heading(t) => {
                let _ = write!(out, "<p class=\"heading\">{t}</p>");
            }
            Block::Para(t) => {
                let _ = write!(out, "<p>{t}</p>");
            }
            Block::Item(t) => {
                let _ = write!(out, "<li>{t}</li>");
            }
            Block::Code(lines) => {
                let _ = write!(out, "<pre>{}</pre>", escape(&lines.join("\n")));
            }
        }
    }
    if in_list {
        out.push_str("</ul>");
    }
    out
}

/// A word as a POSIX shell reads it back.
fn shell(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c)) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// A path as a shell word.
fn path(p: &Path) -> String {
    shell(&p.display().to_string())
}

/// A site as a regular expression for `-peek`: the frame it names
/// (after "taken at" for a site the pool renamed), metacharacters escaped.
fn peek_regex(site: &str) -> String {
    let frame = site.rsplit(" taken at ").next().unwrap_or(site);
    let mut out = String::new();
    for c in frame.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn commands(runs: &[(&Run, &Pictures)]) -> String {
    let mut s = String::new();
    for (run, p) in runs {
        let (from, to) = (p.growth.from, p.growth.to);
        let heap = |i: usize| run.heap_files.get(i).map(|f| path(f));
        let _ = writeln!(s, "<h3>{}</h3>\n<pre>", escape(&run.title()));
        let mut line = |comment: &str, cmd: String| {
            let _ = writeln!(s, "# {}\n{}\n", escape(comment), escape(&cmd));
        };
        if let (Some(a), Some(b)) = (heap(from), heap(to)) {
            line(
                "what grew over the load (the flame graph above)",
                format!("go tool pprof -top -sample_index=inuse_space -diff_base {a} {b}"),
            );
            line(
                "the same in the browser (View > Flame Graph)",
                format!("go tool pprof -http=localhost:8080 -sample_index=inuse_space -diff_base {a} {b}"),
            );
        }
        if let Some(last) = heap(run.heap_files.len().saturating_sub(1)) {
            line(
                "what is in use at the end, after the load stopped",
                format!("go tool pprof -top -sample_index=inuse_space {last}"),
            );
            if let Some(f) = run.judged.verdict.findings.first() {
                line(
                    "who calls the site, and what it calls",
                    format!("go tool pprof -peek {} -sample_index=inuse_space {last}", shell(&peek_regex(&f.site))),
                );
            }
        }
        if let Some(pool) = run.pool_files.last() {
            line(
                "who holds pooled chunks at the end (the pool's view)",
                format!("go tool pprof -top -sample_index=inuse_space {}", path(pool)),
            );
        }
        if let Some(holders) = run.holder_files.last() {
            line(
                "who holds the memory at the end: chains from a root to the held blocks",
                format!("go tool pprof -tree -sample_index=inuse_space {}", path(holders)),
            );
        }
        s.push_str("</pre>\n");
    }
    if let [(a, _), (b, _), ..] = runs {
        if let (Some(la), Some(lb)) = (a.heap_files.last(), b.heap_files.last()) {
            let _ = writeln!(
                s,
                "<h3>Between the two runs</h3>\n<pre># what {} keeps at the end that {} does not\n{}\n</pre>",
                escape(&a.title()),
                escape(&b.title()),
                escape(&format!("go tool pprof -top -sample_index=inuse_space -diff_base {} {}", path(lb), path(la)))
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backquotes_are_code() {
        assert_eq!(inline_code("call `f<T>()` now"), "call <code>f&lt;T&gt;()</code> now");
    }

    #[test]
    fn fields_are_named() {
        assert_eq!(
            field_of("rpc::codec::echo::Request::read_field_2").as_deref(),
            Some("Request field 2 (the field whose tag is 2 in the IDL)")
        );
        assert_eq!(
            field_of("Request.msg (field 2), pinned in pooled buffers taken at rpc::linkbuf::InputBuffer::book")
                .as_deref(),
            Some("Request.msg (the field whose tag is 2 in the IDL)")
        );
        assert_eq!(
            field_of("echo.(*Response).FastReadField3").as_deref(),
            Some("Response field 3 (the field whose tag is 3 in the IDL)")
        );
        assert_eq!(field_of("rpc::linkbuf::InputBuffer::book"), None);
    }

    #[test]
    fn guide_text_reads_as_paragraphs_lists_and_code() {
        let rfh = scenarios::find("request-field-hold").unwrap().guide;
        let html = guide_html(rfh);
        assert!(
            html.starts_with("<p class=\"heading\">Holding onto a Field of Request Object Persistently</p>"),
            "{html}"
        );
        assert!(
            html.contains("<p>Note that for <code>[]byte</code> <code>orstring</code> types, even holding"),
            "{html}"
        );
        assert!(html.contains("<pre>func (s *EchoServerImpl)"), "{html}");
        assert!(html.contains("return resp, nil\n}</pre>"), "{html}");
        assert!(html.contains("memory leak in Request.Field2. Then you can check"), "{html}");
        let surge = guide_html(scenarios::find("conn-surge-request").unwrap().guide);
        assert!(surge.contains("<p>Server Request Leak: Large incoming request size</p>"), "{surge}");
        let sonic = guide_html(scenarios::find("sonic-string-hold").unwrap().guide);
        assert!(
            sonic.contains("<ul><li>There is a large <code>string</code> object in theRequest/Response</li>"),
            "{sonic}"
        );
        let resp = guide_html(scenarios::find("response-field-hold").unwrap().guide);
        assert!(resp.contains("in response, even if it’s just one byte.</p><pre>resp, err :="), "{resp}");
    }

    #[test]
    fn shell_words_and_regexes() {
        assert_eq!(shell("runs/rfh/heap-001.pb.gz"), "runs/rfh/heap-001.pb.gz");
        assert_eq!(shell("my runs/it's"), "'my runs/it'\\''s'");
        assert_eq!(peek_regex("rpc::codec::echo::Request::read_field_2"), "rpc::codec::echo::Request::read_field_2");
        assert_eq!(peek_regex("Request.msg (field 2), pinned in pooled buffers taken at a::B<T>::c"), "a::B<T>::c");
        assert_eq!(peek_regex("<T as x>::f(1)"), "<T as x>::f\\(1\\)");
    }
}
