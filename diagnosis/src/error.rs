//! [`DiagnosisError`]: what went wrong, and in which file.

use std::path::PathBuf;

/// An input could not be read. Every variant names the file (or, for live
/// input, the URL it came from).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiagnosisError {
    /// The directory holds no `heap-NNN.pb.gz`.
    #[error("{}: no heap profiles (heap-NNN.pb.gz)", dir.display())]
    NoProfiles {
        /// The directory searched.
        dir: PathBuf,
    },
    /// A profile is not a readable heap profile.
    #[error("{}: {reason}", path.display())]
    Profile {
        /// The profile's file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A line of a metrics file is not a metrics object.
    #[error("{}:{line}: {reason}", path.display())]
    Metrics {
        /// The metrics file.
        path: PathBuf,
        /// The line, counted from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// `run.json` has no readable phase spans.
    #[error("{}: phases: {reason}", path.display())]
    Phases {
        /// The `run.json` file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file or directory could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error from the system.
        source: std::io::Error,
    },
}

/// How a profile's refusal for the run's budget begins
/// ([`DiagnosisError::past_run_budget`]).
pub(crate) const PAST_RUN_BUDGET: &str = "the run's profiles would take";

impl DiagnosisError {
    /// Whether a profile was refused because the profiles one decoder read
    /// before it fill the run's memory budget
    /// ([`DecodeLimits::run_memory`](crate::DecodeLimits::run_memory)): no
    /// later profile of the run fits either.
    pub fn past_run_budget(&self) -> bool {
        matches!(self, DiagnosisError::Profile { reason, .. } if reason.starts_with(PAST_RUN_BUDGET))
    }

    /// The file or directory the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            DiagnosisError::NoProfiles { dir } => dir,
            DiagnosisError::Profile { path, .. }
            | DiagnosisError::Metrics { path, .. }
            | DiagnosisError::Phases { path, .. }
            | DiagnosisError::Io { path, .. } => path,
        }
    }
}
