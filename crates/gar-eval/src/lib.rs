//! gar-eval
