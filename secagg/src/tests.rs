//! Whole-round tests.
