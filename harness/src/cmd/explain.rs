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
    println!("\nTry it: leaklab run {} --variant leak, then --variant fix", i.name);
    Ok(())
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
