//! Flags more than one command takes: a scenario, its variant and its
//! `--set` pairs.

use clap::{Args, ValueEnum};
use scenarios::{Info, Variant};

/// Leak or fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VariantArg {
    /// The documented leak.
    Leak,
    /// The guide's remedy applied.
    Fix,
}

impl From<VariantArg> for Variant {
    fn from(v: VariantArg) -> Self {
        match v {
            VariantArg::Leak => Variant::Leak,
            VariantArg::Fix => Variant::Fix,
        }
    }
}

/// Parses `KEY=VALUE`.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// A scenario and its settings, shared by `serve` and `peer`.
#[derive(Debug, Args, Clone)]
pub struct ScenarioArgs {
    /// Scenario name (see `leaklab list`).
    #[arg(long)]
    pub scenario: Option<String>,
    /// Which variant.
    #[arg(long, value_enum, default_value_t = VariantArg::Leak)]
    pub variant: VariantArg,
    /// A scenario parameter (`leaklab explain S` lists them); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,
}

/// Resolves `--scenario` of `serve`/`peer`.
pub fn scenario_of(args: &ScenarioArgs) -> anyhow::Result<Option<(&'static Info, Variant, scenarios::Params)>> {
    let Some(name) = &args.scenario else { return Ok(None) };
    let info = scenarios::find(name)?;
    let params = scenarios::Params::parse(info, &args.set)?;
    Ok(Some((info, args.variant.into(), params)))
}
