//! Reading and copying files that may be hostile: a file that grows while
//! it is read passes any check of its length made beforehand, so the limit
//! is applied to the bytes read; a FIFO, a device or a link to one is
//! refused when opened ([`diagnosis::open_regular`]), never waited on.

use std::io::Read;
use std::path::Path;

use anyhow::Context;

/// At most `max` bytes from `r`, which `what` names in errors: a longer
/// stream is an error, read no further than `max + 1` bytes.
pub fn read_capped(r: impl Read, max: u64, what: &str) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    r.take(max + 1).read_to_end(&mut bytes).with_context(|| format!("reading {what}"))?;
    if bytes.len() as u64 > max {
        anyhow::bail!("{what}: more than {max} bytes, the limit");
    }
    Ok(bytes)
}

/// The bytes of `path`, at most `max` ([`read_capped`]); `None` if there is
/// no such file.
pub fn read_if_present(path: &Path, max: u64) -> anyhow::Result<Option<Vec<u8>>> {
    let file = match diagnosis::open_regular(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    read_capped(file, max, &path.display().to_string()).map(Some)
}

/// The bytes of `path`, at most `max` ([`read_capped`]); a missing file is
/// an error too.
pub fn read_at_most(path: &Path, max: u64) -> anyhow::Result<Vec<u8>> {
    read_if_present(path, max)?.with_context(|| format!("reading {}: no such file", path.display()))
}

/// As [`read_at_most`], as UTF-8 text.
pub fn read_text_at_most(path: &Path, max: u64) -> anyhow::Result<String> {
    String::from_utf8(read_at_most(path, max)?).with_context(|| format!("{}: not UTF-8 text", path.display()))
}

/// Copies `from` to `to` if `from` is a regular file (links are not
/// followed) of at most `max` bytes; an error names it otherwise.
pub fn copy_regular(from: &Path, to: &Path, max: u64) -> anyhow::Result<()> {
    let meta = std::fs::symlink_metadata(from).with_context(|| format!("reading {}", from.display()))?;
    if !meta.file_type().is_file() {
        anyhow::bail!("{}: not a regular file", from.display());
    }
    let bytes = read_at_most(from, max)?;
    std::fs::write(to, bytes).with_context(|| format!("writing {}", to.display()))
}

/// Writes `bytes` to `path` as a new file: a link already there (a folder
/// that may be hostile can hold `report.html -> ~/.bashrc`) is removed,
/// not written through.
pub fn write_new(path: &Path, bytes: impl AsRef<[u8]>) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("replacing {}", path.display())),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut file, bytes.as_ref()).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_apply_to_the_bytes_read_not_to_the_length_reported() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small");
        std::fs::write(&small, b"12345").unwrap();
        assert_eq!(read_at_most(&small, 5).unwrap(), b"12345");
        let err = read_at_most(&small, 4).unwrap_err().to_string();
        assert!(err.contains("small: more than 4 bytes"), "{err}");
        // A device reports a length of 0 and never ends: refused.
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert_eq!(std::fs::metadata(&zero).unwrap().len(), 0);
        let err = format!("{:#}", read_at_most(&zero, 1 << 20).unwrap_err());
        assert!(err.contains("not a regular file"), "{err}");
        // A file longer than the limit is read no further than it.
        let long = dir.path().join("long");
        std::fs::write(&long, vec![b'x'; (1 << 20) + 10]).unwrap();
        let err = read_at_most(&long, 1 << 20).unwrap_err().to_string();
        assert!(err.contains("more than 1048576 bytes"), "{err}");
        // Copies take regular files only, within the limit.
        let copy = dir.path().join("copy");
        copy_regular(&small, &copy, 5).unwrap();
        assert_eq!(std::fs::read(&copy).unwrap(), b"12345");
        let err = copy_regular(&zero, &copy, 1 << 20).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        assert!(copy_regular(&small, &copy, 4).is_err());
        assert!(read_text_at_most(&small, 5).is_ok());
    }

    #[test]
    fn a_new_file_replaces_a_link_instead_of_writing_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let report = dir.path().join("report.html");
        std::os::unix::fs::symlink(&victim, &report).unwrap();
        write_new(&report, "<html>").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(&report).unwrap(), b"<html>");
        assert!(!std::fs::symlink_metadata(&report).unwrap().file_type().is_symlink());
        write_new(&report, "again").unwrap();
        assert_eq!(std::fs::read(&report).unwrap(), b"again");
    }
}
