//! Reader of fixture bundles (see fixtures/README.md). Work in progress.
