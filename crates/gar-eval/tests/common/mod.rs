//! Locates the benchmark copies in `<workspace>/../shared/data`; tests skip (and say so) when
//! that folder is absent, as in a user's checkout.

use std::path::PathBuf;

/// `…/shared/data/evaluation`, or `None` after printing why the test is skipped.
pub fn evaluation_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/evaluation");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP: benchmark data not found at {} (needs ../shared/data beside the workspace)",
            dir.display()
        );
        None
    }
}

/// Returns from the test when the data is absent.
#[macro_export]
macro_rules! data_or_skip {
    () => {
        match common::evaluation_dir() {
            Some(d) => d,
            None => return,
        }
    };
}
