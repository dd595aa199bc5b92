//! gar-processor
