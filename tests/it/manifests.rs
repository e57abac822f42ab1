//! Checks of the shipped manifests (owned by the packaging work).
