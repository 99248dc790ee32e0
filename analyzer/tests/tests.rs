//! Integration tests of the analyze stage.
