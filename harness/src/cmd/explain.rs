//! `leaklab explain`: what a scenario reproduces, what its profile shows,
//! the fix, its parameters.

use clap::Args;
use scenarios::{Variant, Vary};

/// Flags of `leaklab explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Scenario name (see `leaklab list`).
    pub scenario: String,
}

/// `leaklab explain`.
pub fn explain(args: &ExplainArgs) -> anyhow::Result<()> {
    let i = scenarios::find(&args.scenario)?;
    println!("{} ({} side{})", i.name, i.side, if i.control { ", healthy control" } else { "" });
    println!(
        "expected diagnosis: leak variant `{}`, fix variant `{}`\n",
        i.expected_kind(Variant::Leak),
        i.expected_kind(Variant::Fix)
    );
    println!("What it reproduces\n{}\n", wrap(i.reproduces));
    println!("What the profiles show\n{}\n", wrap(i.profile_shows));
    println!("The fix\n{}\n", wrap(i.fix));
    println!("Parameters (--set KEY=VALUE; exercises draw those with a range, `leaklab quiz`)");
    for p in i.params {
        println!("  {:<16} default {:<10} {}", p.name, p.default, p.help);
        if p.vary != Vary::Fixed {
            println!("  {:<16} range   {}", "", p.vary);
        }
    }
    println!("\nModifiers (every scenario; the range is what a sweep draws from)");
    for p in scenarios::modifiers() {
        println!("  {:<16} default {:<10} {}", p.name, p.default, p.help);
        if p.vary != Vary::Fixed {
            println!("  {:<16} range   {}", "", p.vary);
        }
    }
    let mixes: Vec<&str> = scenarios::mix_candidates(i).iter().map(|m| m.name).collect();
    if mixes.is_empty() {
        println!("  {:<16} {} mixes with no other mechanism", "", i.name);
    } else {
        println!("  {:<16} mixes with: {}", "", mixes.join(", "));
    }
    println!("\n{}", wrap(modifier_effect(i)));
    println!("\nTry it: leaklab run {} --variant leak, then --variant fix", i.name);
    Ok(())
}

/// What `onset` and `leak_rate` mean for this scenario's mechanism.
fn modifier_effect(i: &scenarios::Info) -> &'static str {
    if i.control {
        return "A control: onset and leak_rate change nothing; background adds its noise.";
    }
    match i.expected {
        "request-field-held" | "zero-copy-string-held" => {
            "onset/leak_rate: before the onset every call is handled as in the fix (a copy is cached); from the \
             onset on, one call in leak_rate caches the slice that keeps the whole field."
        }
        "response-field-held" => {
            "onset/leak_rate: before the onset every response is copied as in the fix; from the onset on, one call \
             in leak_rate caches the slice that keeps the whole response field."
        }
        "duplicate-clients" => {
            "onset/leak_rate: before the onset every call goes through one shared client, as in the fix; from the \
             onset on, one call in leak_rate creates a new client that is never closed."
        }
        "idle-connection-buffers" => {
            "onset/leak_rate: the upstream closes every connection it opens before the onset after idle_timeout, as \
             the fix's server would; from the onset on it leaves one connection in leak_rate open."
        }
        "oversized-request" => {
            "onset/leak_rate: no oversized call before the onset; from the onset on, one in leak_rate of the \
             oversized calls the default sends (one call in every*leak_rate)."
        }
        _ => {
            "onset/leak_rate: no surge before the onset; from the onset on, surges grow one in leak_rate (what \
             legacy slots keep follows the peak of connections, so a surge that does not grow adds nothing)."
        }
    }
}

fn wrap(text: &str) -> String {
    let mut out = String::new();
    for para in text.split("\n\n") {
        let mut line = String::from("  ");
        for word in para.split_whitespace() {
            if line.len() + word.len() > 78 && !line.trim().is_empty() {
                out.push_str(line.trim_end());
                out.push('\n');
                line = String::from("  ");
            }
            line.push_str(word);
            line.push(' ');
        }
        out.push_str(line.trim_end());
        out.push_str("\n\n");
    }
    out.trim_end().to_owned()
}
