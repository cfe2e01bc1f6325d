//! The process's executable mappings, from `/proc/self/maps`: the
//! `mapping` table of a profile, so tools can tell which file each address
//! belongs to.

/// An executable mapping of the process, from `/proc/self/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Map {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Offset of `start` in the mapped file.
    pub offset: u64,
    /// The mapped file; empty for anonymous memory, `[vdso]` and the like
    /// for the kernel's.
    pub path: String,
}

/// The executable mappings listed in `text`, in the format of
/// `/proc/PID/maps`; lines that do not parse are skipped.
fn parse_maps(text: &str) -> Vec<Map> {
    let mut maps = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(range), Some(perms), Some(offset)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if !perms.contains('x') {
            continue;
        }
        let path = fields.nth(2).unwrap_or("").to_string();
        let Some((start, end)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end), Ok(offset)) =
            (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16), u64::from_str_radix(offset, 16))
        else {
            continue;
        };
        maps.push(Map { start, end, offset, path });
    }
    maps
}

/// The executable mappings, the main binary's first (tools take the first
/// mapping for the main binary).
pub(crate) fn process_maps() -> Vec<Map> {
    let mut maps = parse_maps(&std::fs::read_to_string("/proc/self/maps").unwrap_or_default());
    let here = process_maps as *const () as usize as u64;
    if let Some(main) = maps.iter().position(|m| m.start <= here && here < m.end) {
        let m = maps.remove(main);
        maps.insert(0, m);
    }
    maps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_maps() {
        let text = "\
55d0c0a00000-55d0c0a20000 r--p 00000000 08:01 1234 /usr/bin/app
55d0c0a20000-55d0c0b00000 r-xp 00020000 08:01 1234 /usr/bin/app
7f0000000000-7f0000001000 rw-p 00000000 00:00 0
7ffd1c1f0000-7ffd1c1f2000 r-xp 00000000 00:00 0                          [vdso]
garbage line
";
        assert_eq!(
            parse_maps(text),
            vec![
                Map { start: 0x55d0c0a20000, end: 0x55d0c0b00000, offset: 0x20000, path: "/usr/bin/app".into() },
                Map { start: 0x7ffd1c1f0000, end: 0x7ffd1c1f2000, offset: 0, path: "[vdso]".into() },
            ]
        );
    }
}
