//! Bytes as people read them.

/// Bytes in a mebibyte.
pub(crate) const MIB: f64 = 1048576.0;

/// `12.3 MiB`.
pub(crate) fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / MIB)
}
