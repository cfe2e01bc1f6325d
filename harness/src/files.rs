//! Reading and copying files that may be hostile: a FIFO, a link to
//! `/dev/zero`, or a file that grows while it is read passes any check of
//! its length made beforehand, so the limit is applied to the bytes read.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::Context;

/// The bytes of `path`, at most `max`: a longer file is an error naming it,
/// read no further than `max + 1` bytes.
pub fn read_at_most(path: &Path, max: u64) -> anyhow::Result<Vec<u8>> {
    let file = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes).with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > max {
        anyhow::bail!("{}: more than {max} bytes, the limit", path.display());
    }
    Ok(bytes)
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
        // A device reports a length of 0 and never ends.
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert_eq!(std::fs::metadata(&zero).unwrap().len(), 0);
        let err = read_at_most(&zero, 1 << 20).unwrap_err().to_string();
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
}
