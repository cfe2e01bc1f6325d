//! Keeping the answer out of an exercise's folder until the reveal.
//!
//! A run folder holds, beside its profiles and metrics, files that name the
//! scenario: `run.json`, `verdict.json`, the children's logs, the report.
//! [`seal`] moves everything but the profiles and `metrics.jsonl` into
//! `DIR/answer/`.
//!
//! The profiles name the code that allocated and holds memory, and that
//! includes, here and there, the scenario's own module: its setup code
//! (`<scenarios::leaks::request_field_hold::RequestFieldHold as …>::server`)
//! or a caller's closure that holds the leak. [`seal`] keeps the original
//! of such a profile in `answer/` and leaves a copy in which those names
//! read `scenarios::exercise::scenario` (and its source file
//! `scenarios/src/exercise/scenario.rs`); nothing else in it changes.
//!
//! [`unseal`] puts everything back: the folder is then the run as
//! `leaklab run` wrote it.
//!
//! ```text
//! DIR/heap-NNN.pb.gz pool-NNN.pb.gz holders-NNN.pb.gz metrics.jsonl   what the learner reads
//! DIR/answer/run.json verdict.json serve.log peer.log report.html …   sealed
//! DIR/answer/heap-NNN.pb.gz …                                         originals of masked profiles
//! ```

use std::borrow::Cow;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The sealed folder, inside the exercise's.
pub const ANSWER_DIR: &str = "answer";

/// The most a profile may take once decompressed.
const MAX_PROFILE_BYTES: u64 = 256 << 20;

/// What the scenario's modules become in a masked profile.
const MASKED_PATH: &str = "scenarios::exercise::scenario";

/// What the scenario's source files become.
const MASKED_FILE: &str = "scenarios/src/exercise/scenario.rs";

/// What the scenario's types become.
const MASKED_TYPE: &str = "Scenario";

/// Whether the learner reads this file of a run folder before the reveal.
pub fn visible(name: &str) -> bool {
    let profile = ["heap-", "pool-", "holders-"].iter().any(|p| name.starts_with(p)) && name.ends_with(".pb.gz");
    profile || name == "metrics.jsonl"
}

/// Moves what names the scenario into `DIR/answer/` (see the module doc).
pub fn seal(dir: &Path) -> anyhow::Result<()> {
    let answer = dir.join(ANSWER_DIR);
    fs::create_dir_all(&answer).with_context(|| format!("creating {}", answer.display()))?;
    for (name, path) in files(dir)? {
        let sealed = answer.join(&name);
        if !visible(&name) {
            fs::rename(&path, &sealed)
                .with_context(|| format!("moving {} into {}", path.display(), answer.display()))?;
            continue;
        }
        if !name.ends_with(".pb.gz") {
            continue;
        }
        let masked = mask_profile(&read_gzip(&path)?)
            .with_context(|| format!("{} is not a profile the quiz can read", path.display()))?;
        if let Some(masked) = masked {
            fs::rename(&path, &sealed)?;
            fs::write(&path, gzip(&masked)?).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Puts back what [`seal`] moved (a folder without `answer/` is left as it
/// is); fails, moving nothing, if `answer/` holds anything but files.
pub fn unseal(dir: &Path) -> anyhow::Result<()> {
    let answer = dir.join(ANSWER_DIR);
    if !answer.is_dir() {
        return Ok(());
    }
    let sealed = files(&answer)?;
    if fs::read_dir(&answer)?.flatten().any(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
        bail!("{} holds folders: it is not a sealed answer; choose another --out", answer.display());
    }
    for (name, path) in sealed {
        fs::rename(&path, dir.join(&name)).with_context(|| format!("moving {} back", path.display()))?;
    }
    fs::remove_dir(&answer).with_context(|| format!("removing {}", answer.display()))
}

/// The files (not folders, not hidden) directly in `dir`, by name.
fn files(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().is_ok_and(|t| t.is_file()) && !name.starts_with('.') {
            out.push((name, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn read_gzip(path: &Path) -> anyhow::Result<Vec<u8>> {
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(file)
        .take(MAX_PROFILE_BYTES + 1)
        .read_to_end(&mut out)
        .with_context(|| format!("decompressing {}", path.display()))?;
    if out.len() as u64 > MAX_PROFILE_BYTES {
        bail!("{} is larger than {} MiB decompressed", path.display(), MAX_PROFILE_BYTES >> 20);
    }
    Ok(out)
}

fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes)?;
    Ok(enc.finish()?)
}

/// The profile (`profile.proto`, uncompressed) with its strings masked, or
/// `None` if no string names the scenario. Only the string table (field 6
/// of `Profile`) changes; every other field is copied byte for byte.
pub fn mask_profile(pb: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
    const STRING_TABLE: u64 = 6;
    let mut out = Vec::with_capacity(pb.len());
    let mut changed = false;
    let mut i = 0;
    while i < pb.len() {
        let start = i;
        let key = varint(pb, &mut i)?;
        let end = match key & 7 {
            0 => {
                varint(pb, &mut i)?;
                i
            }
            1 => i + 8,
            5 => i + 4,
            2 => {
                let len = usize::try_from(varint(pb, &mut i)?)?;
                i.checked_add(len).context("a length past the end")?
            }
            wire => bail!("wire type {wire} at byte {start}"),
        };
        if end > pb.len() {
            bail!("a field past the end at byte {start}");
        }
        let string = (key == STRING_TABLE << 3 | 2).then(|| std::str::from_utf8(&pb[i..end]).ok()).flatten();
        match string.map(mask) {
            Some(Cow::Owned(masked)) => {
                changed = true;
                put_varint(&mut out, key);
                put_varint(&mut out, masked.len() as u64);
                out.extend_from_slice(masked.as_bytes());
            }
            _ => out.extend_from_slice(&pb[start..end]),
        }
        i = end;
    }
    Ok(changed.then_some(out))
}

fn varint(pb: &[u8], i: &mut usize) -> anyhow::Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&b) = pb.get(*i) else { bail!("a varint past the end") };
        *i += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    bail!("a varint of more than 10 bytes")
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A profile's string with the scenario's modules, types and source files
/// masked (see the module doc); borrowed when nothing names them.
pub fn mask(s: &str) -> Cow<'_, str> {
    // Mangled symbol names (`Function.system_name`) carry lengths; they are
    // replaced whole.
    const MANGLED: [&str; 4] =
        ["scenarios..leaks..", "scenarios..controls..", "9scenarios5leaks", "9scenarios8controls"];
    if MANGLED.iter().any(|m| s.contains(m)) {
        return Cow::Owned(MASKED_PATH.to_owned());
    }
    let mut out = Cow::Borrowed(s);
    for (prefix, masked, file) in [
        ("scenarios::leaks::", MASKED_PATH, false),
        ("scenarios::controls::", MASKED_PATH, false),
        ("scenarios/src/leaks/", MASKED_FILE, true),
        ("scenarios/src/controls/", MASKED_FILE, true),
    ] {
        if out.contains(prefix) {
            out = Cow::Owned(mask_after(&out, prefix, masked, file));
        }
    }
    out
}

/// Replaces each `prefix` and the name after it (a module, then the type
/// it declares if one follows; or a file name) by `masked`.
fn mask_after(s: &str, prefix: &str, masked: &str, file: bool) -> String {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || (file && c == '.');
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find(prefix) {
        out.push_str(&rest[..at]);
        out.push_str(masked);
        let after = &rest[at + prefix.len()..];
        let mut next = &after[after.find(|c: char| !ident(c)).unwrap_or(after.len())..];
        if !file {
            if let Some(ty) = next.strip_prefix("::").filter(|t| t.starts_with(|c: char| c.is_ascii_uppercase())) {
                out.push_str("::");
                out.push_str(MASKED_TYPE);
                next = &ty[ty.find(|c: char| !ident(c)).unwrap_or(ty.len())..];
            }
        }
        rest = next;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_the_scenario_are_masked() {
        let cases = [
            (
                "<scenarios::leaks::request_field_hold::RequestFieldHold as scenarios::scenario::Serves>::server",
                "<scenarios::exercise::scenario::Scenario as scenarios::scenario::Serves>::server",
            ),
            (
                "hashbrown table in <scenarios::leaks::response_field_hold::ResponseFieldHold as \
                 scenarios::scenario::Calls>::caller::{{closure}}::{{closure}}",
                "hashbrown table in <scenarios::exercise::scenario::Scenario as \
                 scenarios::scenario::Calls>::caller::{{closure}}::{{closure}}",
            ),
            ("scenarios::leaks::surge::server", "scenarios::exercise::scenario::server"),
            ("scenarios::controls::steady::Steady::new", "scenarios::exercise::scenario::Scenario::new"),
            ("/work/x/scenarios/src/leaks/request_field_hold.rs", "/work/x/scenarios/src/exercise/scenario.rs"),
            ("/work/x/scenarios/src/controls/burst.rs", "/work/x/scenarios/src/exercise/scenario.rs"),
            (
                "_ZN102_$LT$scenarios..leaks..request_field_hold..RequestFieldHold$u20$as$u20$x$GT$6server17hE",
                MASKED_PATH,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(mask(input), want, "{input}");
        }
        for kept in ["scenarios::handler::ScenarioHandler::remember", "rpc::codec::echo::Request::read_field_2", ""] {
            assert!(matches!(mask(kept), Cow::Borrowed(_)), "{kept}");
        }
    }

    /// A profile with a sample type, a string table and a comment.
    fn profile(strings: &[&str]) -> Vec<u8> {
        let mut pb = Vec::new();
        // sample_type { type: 1, unit: 2 }
        pb.extend_from_slice(&[0x0a, 0x04, 0x08, 0x01, 0x10, 0x02]);
        for s in strings {
            put_varint(&mut pb, 6 << 3 | 2);
            put_varint(&mut pb, s.len() as u64);
            pb.extend_from_slice(s.as_bytes());
        }
        // time_nanos (varint) and comment (repeated int64).
        pb.extend_from_slice(&[0x48, 0x96, 0x01, 0x68, 0x03]);
        pb
    }

    #[test]
    fn only_the_string_table_changes() {
        let names = ["", "inuse_space", "bytes", "scenarios::leaks::burst::Burst::f"];
        let masked = mask_profile(&profile(&names)).unwrap().expect("a name to mask");
        assert_eq!(masked, profile(&["", "inuse_space", "bytes", "scenarios::exercise::scenario::Scenario::f"]));
        assert_eq!(mask_profile(&profile(&["", "rpc::pool::Pool::lease"])).unwrap(), None);
        assert!(mask_profile(&[0x0a, 0x10, 0x01]).is_err(), "a length past the end");
        assert!(mask_profile(&[0x0b]).is_err(), "wire type 3");
    }

    #[test]
    fn seal_then_unseal_gives_the_folder_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let leaky = gzip(&profile(&["", "scenarios::leaks::burst::Burst::f"])).unwrap();
        let plain = gzip(&profile(&["", "rpc::pool::Pool::lease"])).unwrap();
        fs::write(dir.join("heap-000.pb.gz"), &leaky).unwrap();
        fs::write(dir.join("pool-000.pb.gz"), &plain).unwrap();
        for (name, text) in [("metrics.jsonl", "{}\n"), ("run.json", "{\"scenario\":\"burst\"}"), ("serve.log", "x")] {
            fs::write(dir.join(name), text).unwrap();
        }
        seal(dir).unwrap();
        let names = |d: &Path| files(d).unwrap().into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(names(dir), ["heap-000.pb.gz", "metrics.jsonl", "pool-000.pb.gz"]);
        assert_eq!(names(&dir.join(ANSWER_DIR)), ["heap-000.pb.gz", "run.json", "serve.log"]);
        let visible = read_gzip(&dir.join("heap-000.pb.gz")).unwrap();
        assert!(!String::from_utf8_lossy(&visible).contains("burst"));
        unseal(dir).unwrap();
        assert_eq!(names(dir), ["heap-000.pb.gz", "metrics.jsonl", "pool-000.pb.gz", "run.json", "serve.log"]);
        assert_eq!(fs::read(dir.join("heap-000.pb.gz")).unwrap(), leaky);
        assert!(!dir.join(ANSWER_DIR).exists());
    }
}
