//! Deterministic sampling: the same input and percentage always keep the same exchanges.

use std::str::FromStr;

use crate::exchange::Exchange;
use crate::id::sample_bucket;

/// What is kept or dropped as one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SampleBy {
    /// Each exchange on its own.
    #[default]
    Exchange,
    /// A whole keep-alive connection.
    Connection,
    /// Every exchange of one client address.
    Client,
}

impl FromStr for SampleBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "exchange" => Ok(SampleBy::Exchange),
            "connection" => Ok(SampleBy::Connection),
            "client" => Ok(SampleBy::Client),
            other => Err(format!(
                "unknown sampling unit {other:?} (expected exchange, connection or client)"
            )),
        }
    }
}

/// A sampling percentage, kept as basis points (1/100 of a percent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percent(u32);

impl Percent {
    /// 100%.
    pub const ALL: Percent = Percent(10_000);

    /// The share in basis points.
    pub fn basis_points(self) -> u32 {
        self.0
    }
}

impl FromStr for Percent {
    type Err = String;
    /// `25`, `25%` and `2.5%` are accepted; the value must be above 0 and at most 100.
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let t = t.strip_suffix('%').unwrap_or(t).trim();
        let v: f64 = t
            .parse()
            .map_err(|_| format!("{s:?} is not a percentage (try 25 or 25%)"))?;
        if !(v > 0.0 && v <= 100.0) {
            return Err(format!("{s:?} is outside (0, 100]"));
        }
        let bp = (v * 100.0).round() as u32;
        if bp == 0 {
            return Err(format!("{s:?} is below the 0.01% resolution"));
        }
        Ok(Percent(bp))
    }
}

/// Decides which exchanges to keep.
#[derive(Debug, Clone, Copy)]
pub struct Sampler {
    /// Share kept.
    pub percent: Percent,
    /// Unit kept or dropped together.
    pub by: SampleBy,
}

impl Sampler {
    /// True when `ex` is in the sample.
    pub fn keep(&self, ex: &Exchange) -> bool {
        if self.percent == Percent::ALL {
            return true;
        }
        let bucket = match self.by {
            SampleBy::Exchange => sample_bucket(ex.exchange_id.as_bytes()),
            SampleBy::Connection => sample_bucket(ex.connection_id.as_bytes()),
            SampleBy::Client => sample_bucket(ex.client_ip.to_string().as_bytes()),
        };
        bucket < self.percent.basis_points()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_forms() {
        assert_eq!("25".parse::<Percent>().unwrap(), "25%".parse().unwrap());
        assert_eq!("2.5%".parse::<Percent>().unwrap().basis_points(), 250);
        assert!("0".parse::<Percent>().is_err());
        assert!("101%".parse::<Percent>().is_err());
        assert!("abc".parse::<Percent>().is_err());
        assert!("nan".parse::<Percent>().is_err());
    }
}
