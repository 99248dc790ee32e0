//! Integration tests of the proxy.
