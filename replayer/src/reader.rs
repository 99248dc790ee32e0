//! The recording as a source of the sender: passes over a capture's `exchanges` files, in
//! request order, offered to a [`SenderInput`] from a thread of its own (Parquet decoding is
//! blocking work).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::input::SenderInput;
use crate::source::Recording;

/// Offers `passes` passes over `recording` (`None`: until the sender stops) to `input`, then
/// closes it. Exchanges met out of request order are added to `out_of_order`. A read error
/// stops the sender with that error.
pub(crate) fn read_recording(
    recording: Recording,
    passes: Option<u32>,
    mut input: SenderInput,
    out_of_order: Arc<AtomicU64>,
) {
    let mut pass = 0u32;
    while passes.is_none_or(|p| pass < p) {
        input.start_pass(pass);
        let mut stream = recording.stream();
        let mut seq = 0;
        while let Some(next) = stream.next_exchange(&mut seq) {
            match next {
                Ok(ex) => {
                    if input.push_blocking(pass, ex).is_err() {
                        return; // sending stopped
                    }
                }
                Err(e) => {
                    input.fail_blocking(e.into());
                    return;
                }
            }
        }
        out_of_order.fetch_add(stream.late(), Ordering::Relaxed);
        pass += 1;
    }
    let _ = input.close_blocking();
}
