//! Secrets that never show up in logs, `--help` or `Debug` output.

use std::{fmt, str::FromStr};

/// A secret string. `Debug` and `Display` print `***`; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value, for handing to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Secret {
    /// The secret given directly or read from a file (Docker secrets); the file wins. The
    /// error names the file, never its content.
    pub fn resolve(
        value: Option<&Secret>,
        file: Option<&std::path::Path>,
    ) -> anyhow::Result<Option<Secret>> {
        match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("cannot read the secret file {}: {e}", path.display())
                })?;
                Ok(Some(Secret(text.trim_end_matches(['\n', '\r']).to_owned())))
            }
            None => Ok(value.cloned()),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}
