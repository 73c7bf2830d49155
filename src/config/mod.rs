//! Configuration: the file format (`file`), validation (`validate`), the
//! validated model (`model`) and its errors (`error`).

mod error;
mod file;
mod model;
mod validate;

use std::path::Path;

pub use error::{ConfigError, Diagnostic};
pub use model::*;

/// Parses and validates config text; `name` is the file name used in errors.
pub fn parse(text: &str, name: &str) -> Result<Config, ConfigError> {
    let invalid = |diagnostics| ConfigError::Invalid {
        file: name.to_string(),
        diagnostics,
    };
    let file: file::ConfigFile =
        serde_saphyr::from_str(text).map_err(|e| invalid(vec![syntax(&e)]))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    validate::validate(file, cores).map_err(invalid)
}

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        file: name.clone(),
        reason: e.to_string(),
    })?;
    parse(&text, &name)
}

/// A YAML or type error from the deserializer, as one positioned diagnostic.
fn syntax(e: &serde_saphyr::Error) -> Diagnostic {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let rendered = e.without_snippet().to_string();
    // The message may end with its own "at line X column Y"; we print the
    // position in front, so keep only the first line of the message.
    let first = rendered.lines().next().unwrap_or("invalid YAML");
    let message = first
        .rfind(" at line ")
        .map_or(first, |i| &first[..i])
        .trim()
        .to_string();
    Diagnostic::new(line, column, message)
}
