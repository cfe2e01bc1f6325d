//! What one side of a comparison runs, as the command line says it: a
//! variant and parameters (`fix,payload=64KiB`), or a plain server's flags
//! (`--decode nocopy`).

use std::fmt;

use scenarios::Variant;

/// One side's SETTINGS: `VARIANT[,KEY=VALUE]...` or `KEY=VALUE[,KEY=VALUE]...`.
///
/// ```text
/// leak                       the leak variant, the scenario's parameters
/// fix,payload=64KiB          the fix, with one parameter changed
/// decode=nocopy              the side's default variant, one parameter changed
/// variant=fix,rps=0          the variant as a key, like any other
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideSettings {
    /// The variant, when the settings name one.
    pub variant: Option<Variant>,
    /// Parameters, in the order given; each key at most once.
    pub set: Vec<(String, String)>,
}

impl SideSettings {
    /// The variant, or `default` when the settings name none.
    pub fn variant_or(&self, default: Variant) -> Variant {
        self.variant.unwrap_or(default)
    }
}

impl fmt::Display for SideSettings {
    /// The canonical form: `fix,payload=64KiB`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self.variant.iter().map(ToString::to_string).collect();
        parts.extend(self.set.iter().map(|(k, v)| format!("{k}={v}")));
        f.write_str(&parts.join(","))
    }
}

fn variant(word: &str) -> Result<Variant, String> {
    match word {
        "leak" => Ok(Variant::Leak),
        "fix" => Ok(Variant::Fix),
        other => Err(format!("{other:?} is not a variant (leak or fix)")),
    }
}

/// Parses one side's SETTINGS (see [`SideSettings`]).
pub fn parse_side(text: &str) -> Result<SideSettings, String> {
    let mut settings = SideSettings { variant: None, set: Vec::new() };
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    if parts.iter().all(|p| p.is_empty()) {
        return Err("empty settings: give a variant (leak, fix) and/or KEY=VALUE pairs, separated by commas".into());
    }
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            return Err(format!("{text:?} has an empty item between commas"));
        }
        let Some((key, value)) = part.split_once('=') else {
            if i > 0 {
                return Err(format!("{part:?} is not KEY=VALUE (only the first item may be a bare variant)"));
            }
            settings.variant = Some(variant(part)?);
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(format!("{part:?} has no key"));
        }
        if key == "variant" {
            if settings.variant.is_some() {
                return Err(format!("{text:?} names the variant twice"));
            }
            settings.variant = Some(variant(value)?);
        } else if settings.set.iter().any(|(k, _)| k == key) {
            return Err(format!("{text:?} sets {key} twice"));
        } else {
            settings.set.push((key.to_owned(), value.to_owned()));
        }
    }
    Ok(settings)
}

/// `base` with `over` laid on it: a key in both takes `over`'s value, in
/// `base`'s place; new keys come after.
pub fn overlay(base: &[(String, String)], over: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(base.len() + over.len());
    for (k, v) in base.iter().chain(over) {
        match out.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v.clone(),
            None => out.push((k.clone(), v.clone())),
        }
    }
    out
}

/// Flags of `leaklab serve` that a run sets itself; a side's `--a-serve`
/// or `--b-serve` may not.
pub const RUN_OWNS: [&str; 10] = [
    "--listen",
    "--admin",
    "--ready-file",
    "--scenario",
    "--variant",
    "--set",
    "--peer",
    "--drive-for",
    "--holders",
    "--profile-rate",
];

/// Splits a side's serve FLAGS into words as a shell would for simple
/// cases: on white space, with `'...'` and `"..."` quoting (no escapes,
/// no expansion); refuses the flags a run sets itself ([`RUN_OWNS`]).
pub fn split_serve_flags(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(q) = quote {
        return Err(format!("{text:?} has an unclosed {q}"));
    }
    words.extend(word);
    for w in &words {
        let name = w.split_once('=').map_or(w.as_str(), |(n, _)| n);
        if RUN_OWNS.contains(&name) {
            return Err(format!(
                "{name} is set by the run itself (the compare's --profile-rate, --holders and --seed apply to both sides)"
            ));
        }
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// Settings, the variant they name and the pairs they set.
    type Case<'a> = (&'a str, Option<Variant>, &'a [(&'a str, &'a str)]);

    #[test]
    fn side_settings_parse() {
        let cases: &[Case] = &[
            ("leak", Some(Variant::Leak), &[]),
            ("fix", Some(Variant::Fix), &[]),
            (" fix , payload=64KiB ", Some(Variant::Fix), &[("payload", "64KiB")]),
            ("fix,payload=64KiB,rps=0", Some(Variant::Fix), &[("payload", "64KiB"), ("rps", "0")]),
            ("decode=nocopy", None, &[("decode", "nocopy")]),
            ("variant=fix,rps=0", Some(Variant::Fix), &[("rps", "0")]),
            ("payload=4KiB,variant=leak", Some(Variant::Leak), &[("payload", "4KiB")]),
            ("background=a=b", None, &[("background", "a=b")]),
        ];
        for (text, variant, pairs) in cases {
            let s = parse_side(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(s, SideSettings { variant: *variant, set: set(pairs) }, "{text:?}");
            // The canonical form reads back the same.
            assert_eq!(parse_side(&s.to_string()), Ok(s.clone()), "{text:?}");
        }
        assert_eq!(parse_side("fix,payload=64KiB").map(|s| s.to_string()), Ok("fix,payload=64KiB".into()));
    }

    #[test]
    fn side_settings_refuse_what_is_unclear() {
        for (text, says) in [
            ("", "empty settings"),
            (" , ", "empty settings"),
            ("fixed", "not a variant"),
            ("fix,,rps=1", "empty item"),
            ("rps=1,fix", "not KEY=VALUE"),
            ("fix,leak", "not KEY=VALUE"),
            ("=5", "no key"),
            ("rps=1,rps=2", "sets rps twice"),
            ("fix,variant=leak", "variant twice"),
            ("variant=maybe", "not a variant"),
        ] {
            let err = parse_side(text).expect_err(text);
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_side_overrides_the_shared_settings() {
        let shared = set(&[("payload", "4KiB"), ("rps", "100")]);
        let side = set(&[("rps", "0"), ("decode", "nocopy")]);
        assert_eq!(overlay(&shared, &side), set(&[("payload", "4KiB"), ("rps", "0"), ("decode", "nocopy")]));
        assert_eq!(overlay(&[], &side), side);
        assert_eq!(overlay(&shared, &[]), shared);
    }

    #[test]
    fn serve_flags_split_like_a_shell() {
        let ok = |t: &str| split_serve_flags(t).unwrap_or_else(|e| panic!("{t:?}: {e}"));
        assert_eq!(ok("--decode nocopy  --nocopy-write"), ["--decode", "nocopy", "--nocopy-write"]);
        assert_eq!(ok("  "), Vec::<String>::new());
        assert_eq!(ok("--idle-timeout '30 s' --x=\"a b\"c"), ["--idle-timeout", "30 s", "--x=a bc"]);
        assert_eq!(ok("--x ''"), ["--x", ""]);
        assert!(split_serve_flags("--x 'open").expect_err("unclosed").contains("unclosed '"));
        for owned in ["--listen 127.0.0.1:1", "--decode copy --admin=127.0.0.1:0", "--profile-rate 1", "--holders"] {
            let err = split_serve_flags(owned).expect_err(owned);
            assert!(err.contains("set by the run itself"), "{owned}: {err}");
        }
    }
}
