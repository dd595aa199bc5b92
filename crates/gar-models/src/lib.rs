//! gar-models
