//! Errors of the analyze stage, and the exit codes the CLI gives them.

/// What can stop an analysis.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// Bad input: a missing directory, files that are not shadowtap's, a bad policy.
    #[error("{0}")]
    Input(String),
    /// A SQL error (with the list of tables).
    #[error("SQL: {0}")]
    Sql(String),
    /// Writing the outputs failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl AnalyzeError {
    /// Exit code for CI: 64 for usage and input errors (EX_USAGE), 74 for I/O (EX_IOERR),
    /// 65 for SQL errors (EX_DATAERR).
    pub fn exit_code(&self) -> u8 {
        match self {
            AnalyzeError::Input(_) => 64,
            AnalyzeError::Sql(_) => 65,
            AnalyzeError::Io { .. } => 74,
        }
    }
}

impl From<datafusion::error::DataFusionError> for AnalyzeError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        AnalyzeError::Sql(e.to_string())
    }
}
