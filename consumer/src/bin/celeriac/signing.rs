//! `--signing-keys`: the key file of the subcommands that publish.

use std::path::PathBuf;
use std::process::ExitCode;

use celeriac_schema::signing::Keyring;
use clap::Args;

/// The signing option of `send`, `submit` and `beat`.
#[derive(Debug, Args)]
pub struct SigningArgs {
    /// Sign every task published with the first key of this file: one
    /// `<key-id> <base64 secret>` per line, `#` comments. Needed when the
    /// workers require signatures (they take the same file).
    #[arg(
        long,
        env = "CELERIAC_SIGNING_KEYS",
        value_name = "PATH",
        global = true
    )]
    pub signing_keys: Option<PathBuf>,
}

impl SigningArgs {
    /// The keyring, if a file was given; a file that cannot be read or
    /// holds a bad line is reported (with its line) and exits 2.
    pub fn keyring(&self) -> Result<Option<Keyring>, ExitCode> {
        let Some(path) = &self.signing_keys else {
            return Ok(None);
        };
        celeriac_producer::signing::load_keyring(path)
            .map(Some)
            .map_err(|e| {
                eprintln!("error: {e}");
                ExitCode::from(2)
            })
    }
}
