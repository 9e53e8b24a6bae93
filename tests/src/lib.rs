//! Helpers for whole-system tests (in progress).
