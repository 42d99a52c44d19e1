//! The CLI's remembered session: server, token and who it is, in the user's config directory
//! (`$PARLEY_CONFIG_DIR`, else `$XDG_CONFIG_HOME/parley`, else `~/.config/parley`). The
//! end-to-end encryption state of the device lives there too (see `e2ee.rs`).

use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub(super) struct Saved {
    pub server: String,
    pub username: String,
    pub user_id: String,
    pub device_id: String,
    pub token: String,
}

pub(super) fn dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("PARLEY_CONFIG_DIR") {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(d).join("parley"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; set PARLEY_CONFIG_DIR")?;
    Ok(PathBuf::from(home).join(".config").join("parley"))
}

pub(super) fn save(s: &Saved) -> anyhow::Result<PathBuf> {
    let dir = dir()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("session.json");
    std::fs::write(&path, serde_json::to_vec_pretty(s)?).with_context(|| format!("cannot write {}", path.display()))?;
    // The token is a credential: keep it readable by its owner only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(path)
}

pub(super) fn load() -> anyhow::Result<Saved> {
    let path = dir()?.join("session.json");
    let bytes =
        std::fs::read(&path).with_context(|| format!("not signed in (no {}); run `parley login`", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is damaged; run `parley login` again", path.display()))
}

/// The password from the flag/environment, else one line of standard input.
pub(super) fn password(given: Option<String>) -> anyhow::Result<String> {
    if let Some(p) = given {
        return Ok(p);
    }
    eprint!("password: ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("cannot read the password")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
