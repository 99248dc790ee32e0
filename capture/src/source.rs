//! Packet sources: capture files read through libpcap in offline mode.
//!
//! libpcap reads pcap and pcapng (whatever the file is named). The reader keeps the byte offset
//! of each record, so that an error in a truncated or corrupt file names where it is.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::decode::LinkType;
use crate::error::CaptureError;

/// One packet as read.
#[derive(Debug)]
pub struct Packet<'a> {
    /// Capture time, µs since the Unix epoch.
    pub ts_us: i64,
    /// Captured bytes (may be shorter than the packet on the wire).
    pub data: &'a [u8],
    /// Length of the packet on the wire.
    pub wire_len: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Pcap,
    Pcapng,
}

/// A capture file opened for reading.
pub struct FileSource {
    path: PathBuf,
    cap: pcap::Capture<pcap::Offline>,
    link: LinkType,
    format: Format,
    offset: u64,
    packets: u64,
}

impl FileSource {
    /// Opens `path`, applying an optional BPF `filter`.
    pub fn open(path: &Path, filter: Option<&str>) -> Result<Self, CaptureError> {
        let format = sniff_format(path)?;
        let mut cap = pcap::Capture::from_file_with_precision(path, pcap::Precision::Micro)
            .map_err(|e| CaptureError::Open {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        if let Some(expr) = filter {
            cap.filter(expr, true).map_err(|e| CaptureError::Filter {
                expr: expr.to_owned(),
                message: e.to_string(),
            })?;
        }
        let dlt = cap.get_datalink().0;
        let link = LinkType::from_dlt(dlt).ok_or_else(|| CaptureError::UnsupportedLinkType {
            path: path.to_path_buf(),
            dlt,
        })?;
        let offset = match format {
            Format::Pcap => 24,
            Format::Pcapng => 0,
        };
        Ok(FileSource {
            path: path.to_path_buf(),
            cap,
            link,
            format,
            offset,
            packets: 0,
        })
    }

    /// The file's link type.
    pub fn link_type(&self) -> LinkType {
        self.link
    }

    /// Packets read so far (those the filter passed).
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// The next packet; `Ok(None)` at the end of the file; an error names the file and offset
    /// of the record that could not be read.
    pub fn next_packet(&mut self) -> Result<Option<Packet<'_>>, CaptureError> {
        match self.cap.next_packet() {
            Ok(p) => {
                self.packets += 1;
                let caplen = p.header.caplen as u64;
                // Offsets are exact for pcap (16-byte record headers, no filter skipping
                // records); for pcapng and filtered reads they are a lower bound.
                self.offset += match self.format {
                    Format::Pcap => 16 + caplen,
                    Format::Pcapng => 32 + caplen.div_ceil(4) * 4,
                };
                let ts_us = p.header.ts.tv_sec * 1_000_000 + p.header.ts.tv_usec;
                Ok(Some(Packet {
                    ts_us,
                    data: p.data,
                    wire_len: p.header.len,
                }))
            }
            Err(pcap::Error::NoMorePackets) => Ok(None),
            Err(e) => Err(CaptureError::Read {
                path: self.path.clone(),
                packets: self.packets,
                offset: self.offset,
                message: e.to_string(),
            }),
        }
    }
}

/// Reads the magic number, so that a file that is not a capture gets a clear message.
fn sniff_format(path: &Path) -> Result<Format, CaptureError> {
    let open_err = |message: String| CaptureError::Open {
        path: path.to_path_buf(),
        message,
    };
    let mut f = std::fs::File::open(path).map_err(|e| open_err(e.to_string()))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(|e| open_err(e.to_string()))?;
    if n < 4 {
        return Err(open_err(format!(
            "file is {n} bytes long, too short for a pcap or pcapng header"
        )));
    }
    match magic {
        [0x0a, 0x0d, 0x0d, 0x0a] => Ok(Format::Pcapng),
        [0xd4, 0xc3, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0xc3, 0xd4]
        | [0x4d, 0x3c, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0x3c, 0x4d] => Ok(Format::Pcap),
        _ => Err(open_err(format!(
            "not a pcap or pcapng file (magic bytes {:02x}{:02x}{:02x}{:02x})",
            magic[0], magic[1], magic[2], magic[3]
        ))),
    }
}
