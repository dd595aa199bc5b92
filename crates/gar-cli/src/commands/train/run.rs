//! `gar train --config`: the training loop.

use std::path::Path;

pub fn run(_config: &Path) -> anyhow::Result<()> {
    anyhow::bail!("gar train --config is not built yet")
}
