//! `leaklab list`: scenarios, their variants and the diagnosis each should
//! get.

use clap::Args;
use scenarios::Variant;

/// Flags of `leaklab list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// One JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `leaklab list`.
pub fn list(args: &ListArgs) -> anyhow::Result<()> {
    let all = scenarios::catalogue();
    if args.json {
        let rows: Vec<serde_json::Value> = all
            .iter()
            .map(|i| {
                serde_json::json!({
                    "scenario": i.name, "side": i.side.to_string(), "control": i.control,
                    "expected": { "leak": i.expected_kind(Variant::Leak), "fix": i.expected_kind(Variant::Fix) },
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("{:<28} {:<7} {:<10} {:<28} EXPECTED (fix)", "SCENARIO", "SIDE", "VARIANTS", "EXPECTED (leak)");
    for i in all {
        let variants = if i.control { "one" } else { "leak, fix" };
        println!(
            "{:<28} {:<7} {:<10} {:<28} {}",
            i.name,
            i.side.to_string(),
            variants,
            i.expected_kind(Variant::Leak),
            i.expected_kind(Variant::Fix)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The scenarios' expected kinds and the engine's vocabulary are one
    /// list kept in two crates (neither may depend on the other).
    #[test]
    fn every_expected_kind_is_one_the_engine_can_give() {
        for info in scenarios::catalogue() {
            for v in scenarios::Variant::ALL {
                let kind = info.expected_kind(v);
                assert!(diagnosis::KINDS.contains(&kind), "{} {v}: {kind}", info.name);
            }
        }
        for kind in scenarios::VERDICT_KINDS {
            assert!(diagnosis::KINDS.contains(&kind), "{kind}");
        }
    }
}
