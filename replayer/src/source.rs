//! The recording, streamed in request order.
//!
//! A capture writes several file series (one per writer thread, per partition, rotated), each
//! roughly in completion order. Pacing needs request-start order across all of them, without
//! loading the recording: files are opened lazily in order of their first request time (read
//! from the Parquet footer statistics), and a k-way merge over the open files, each behind a
//! small reorder window, yields exchanges in `request_start` order. A row later than its
//! file's window allows is yielded as soon as it is seen, and counted.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::PathBuf;

use shadowtap_core::read::{find_exchange_files, Columns, ExchangeFile, ReadError};
use shadowtap_core::Exchange;

/// Rows per Parquet batch.
const BATCH_ROWS: usize = 1024;
/// Rows each open file holds back to put them in order.
const REORDER_WINDOW: usize = 2048;

/// A recording: its files and what their footers say.
#[derive(Debug, Clone)]
pub struct Recording {
    files: Vec<FileInfo>,
}

#[derive(Debug, Clone)]
struct FileInfo {
    path: PathBuf,
    first_us: i64,
    rows: u64,
}

impl Recording {
    /// Finds the `exchanges` files under `dir` and reads their footers (not their data).
    pub fn open(dir: &std::path::Path) -> Result<Self, ReadError> {
        let mut files = Vec::new();
        for path in find_exchange_files(dir)? {
            let f = ExchangeFile::open(&path, BATCH_ROWS)?;
            files.push(FileInfo {
                first_us: f.time_range.map_or(i64::MIN, |r| r.0),
                rows: f.rows,
                path,
            });
        }
        files.sort_by(|a, b| (a.first_us, &a.path).cmp(&(b.first_us, &b.path)));
        Ok(Recording { files })
    }

    /// Exchanges in the recording.
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }

    /// Files in the recording.
    pub fn files(&self) -> impl Iterator<Item = &std::path::Path> {
        self.files.iter().map(|f| f.path.as_path())
    }

    /// Streams the exchanges in request-start order.
    pub fn stream(&self) -> OrderedExchanges {
        OrderedExchanges {
            pending: self.files.clone().into(),
            open: Vec::new(),
            late: 0,
            last_us: i64::MIN,
        }
    }
}

/// One open file behind its reorder window.
struct OpenFile {
    file: ExchangeFile,
    window: BinaryHeap<Reverse<Keyed>>,
    done: bool,
}

/// An exchange ordered by request start, then by its position in the file.
struct Keyed(i64, u64, Box<Exchange>);

impl PartialEq for Keyed {
    fn eq(&self, o: &Self) -> bool {
        (self.0, self.1) == (o.0, o.1)
    }
}
impl Eq for Keyed {}
impl PartialOrd for Keyed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Keyed {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(o.0, o.1))
    }
}

impl OpenFile {
    /// Fills the window from the file.
    fn fill(&mut self, seq: &mut u64) -> Result<(), ReadError> {
        while !self.done && self.window.len() < REORDER_WINDOW {
            match self.file.next_batch() {
                None => self.done = true,
                Some(batch) => {
                    for ex in batch? {
                        *seq += 1;
                        self.window
                            .push(Reverse(Keyed(ex.request_start_us, *seq, Box::new(ex))));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Exchanges of a recording in request-start order.
pub struct OrderedExchanges {
    pending: std::collections::VecDeque<FileInfo>,
    open: Vec<OpenFile>,
    late: u64,
    last_us: i64,
}

impl OrderedExchanges {
    /// Exchanges yielded after a later one (out of order beyond the reorder window).
    pub fn late(&self) -> u64 {
        self.late
    }

    /// The next exchange, `None` at the end of the recording. Boxed as it was kept in the
    /// reorder window, so it travels on to the sending thread without another copy.
    pub fn next_exchange(&mut self, seq: &mut u64) -> Option<Result<Box<Exchange>, ReadError>> {
        loop {
            for f in &mut self.open {
                if let Err(e) = f.fill(seq) {
                    return Some(Err(e));
                }
            }
            self.open.retain(|f| !(f.done && f.window.is_empty()));
            // The smallest head among open files.
            let best = self
                .open
                .iter()
                .enumerate()
                .filter_map(|(i, f)| f.window.peek().map(|Reverse(k)| (i, k.0)))
                .min_by_key(|&(_, t)| t);
            // A file not opened yet may start before that head: open it first.
            let open_next = match (self.pending.front(), best) {
                (Some(_), None) => true,
                (Some(next), Some((_, t))) => next.first_us <= t,
                (None, _) => false,
            };
            if open_next {
                let info = self.pending.pop_front().expect("checked");
                match ExchangeFile::open_with(&info.path, BATCH_ROWS, Columns::Requests) {
                    Ok(file) => self.open.push(OpenFile {
                        file,
                        window: BinaryHeap::new(),
                        done: false,
                    }),
                    Err(e) => return Some(Err(e)),
                }
                continue;
            }
            let (i, _) = best?;
            let Reverse(Keyed(t, _, ex)) = self.open[i].window.pop().expect("peeked");
            if t < self.last_us {
                self.late += 1;
            }
            self.last_us = self.last_us.max(t);
            return Some(Ok(ex));
        }
    }
}
