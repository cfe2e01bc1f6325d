//! Locking shared by the balancer cache's modules.

use std::sync::{Mutex, MutexGuard};

/// Locks, ignoring poisoning: every critical section of the balancer cache
/// leaves the data consistent, so a panic elsewhere does not make it
/// unusable.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
