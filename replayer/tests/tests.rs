//! Integration tests of the replay stage.
