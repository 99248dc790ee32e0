//! The guard that keeps a replay off production: a target that names a host the recording
//! was captured from is refused before anything is sent.

use std::collections::HashSet;
use std::net::IpAddr;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int32Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use crate::error::ReplayError;
use crate::source::Recording;
use crate::target::Target;

/// Hosts the recording was captured from: (address or lower-case name, port).
pub(crate) fn captured_hosts(recording: &Recording) -> Result<HashSet<(String, u16)>, ReplayError> {
    let mut out = HashSet::new();
    for path in recording.files() {
        let err = |e: parquet::errors::ParquetError| {
            ReplayError::Read(shadowtap_core::read::ReadError::Parquet {
                path: path.to_path_buf(),
                source: e,
            })
        };
        let file = std::fs::File::open(path).map_err(|source| ReplayError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(err)?;
        let mask = ProjectionMask::columns(
            builder.parquet_schema(),
            ["server_ip", "server_port", "host"],
        );
        for batch in builder
            .with_projection(mask)
            .with_batch_size(8192)
            .build()
            .map_err(err)?
        {
            let batch = batch.map_err(|e| err(e.into()))?;
            let (Some(ip), Some(port), Some(host)) = (
                batch.column_by_name("server_ip"),
                batch.column_by_name("server_port"),
                batch.column_by_name("host"),
            ) else {
                continue;
            };
            let (ip, port, host) = (
                ip.as_string::<i32>(),
                port.as_primitive::<Int32Type>(),
                host.as_string::<i32>(),
            );
            for i in 0..batch.num_rows() {
                let p = port.value(i).clamp(0, 65_535) as u16;
                out.insert((ip.value(i).to_owned(), p));
                if host.is_valid(i) {
                    let h = host.value(i).to_ascii_lowercase();
                    let (name, hp) = split_host_port(&h).unwrap_or((h.clone(), p));
                    out.insert((name, hp));
                }
            }
            if out.len() > 100_000 {
                break; // enough to recognise a mistake; a recording of that many hosts is rare
            }
        }
    }
    Ok(out)
}

fn split_host_port(h: &str) -> Option<(String, u16)> {
    if let Some(rest) = h.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok())?;
        return Some((addr.to_owned(), port));
    }
    let (name, port) = h.rsplit_once(':')?;
    if name.contains(':') {
        return None; // a bare IPv6 address
    }
    Some((name.to_owned(), port.parse().ok()?))
}

pub(crate) async fn check_targets(
    targets: &[Target],
    captured: &HashSet<(String, u16)>,
) -> Result<(), ReplayError> {
    for t in targets {
        let host = t
            .url
            .host_str()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_ascii_lowercase();
        let port = t.url.port_or_known_default().unwrap_or(80);
        let mut names = vec![host.clone()];
        if let Ok(addrs) = tokio::net::lookup_host((host.as_str(), port)).await {
            names.extend(addrs.map(|a| a.ip().to_string()));
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            names.push(ip.to_string());
        }
        if let Some(hit) = names
            .iter()
            .find(|n| captured.contains(&((*n).clone(), port)))
        {
            return Err(ReplayError::CapturedHost {
                target: t.name.clone(),
                url: t.url.to_string(),
                captured: format!("{hit}:{port}"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports_split() {
        assert_eq!(
            split_host_port("example.com:8080"),
            Some(("example.com".into(), 8080))
        );
        assert_eq!(split_host_port("[::1]:80"), Some(("::1".into(), 80)));
        assert_eq!(split_host_port("example.com"), None);
        assert_eq!(split_host_port("::1"), None);
    }
}
