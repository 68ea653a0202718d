//! Threshold filter: passes on the readings outside a configured range.
//!
//! Config (`spec.config`):
//! - `min`, `max` (numbers; at least one, `min <= max`): the range, inclusive. A missing bound
//!   is open.
//! - `forwardInRange` (boolean, default `false`): also emit the readings within the range.
//!
//! Outputs: `out-of-range` (value < min, value > max, or NaN) and, with `forwardInRange`,
//! `in-range` (the others). Readings keep their timestamp, value, device and metric.
#![deny(unsafe_code)]

use edgeplane_sdk::{export_workload, Batch, Config, Emitter, Workload};

pub const OUT_OF_RANGE: &str = "out-of-range";
pub const IN_RANGE: &str = "in-range";

#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdFilter {
    min: f64,
    max: f64,
    forward_in_range: bool,
}

impl Default for ThresholdFilter {
    /// Unconfigured: nothing is out of range. `configure` requires a bound anyway.
    fn default() -> Self {
        Self { min: f64::NEG_INFINITY, max: f64::INFINITY, forward_in_range: false }
    }
}

impl Workload for ThresholdFilter {
    fn configure(&mut self, config: &Config) -> Result<(), String> {
        config.deny_unknown(&["min", "max", "forwardInRange"])?;
        let min = config.f64_opt("min")?;
        let max = config.f64_opt("max")?;
        let forward_in_range = config.bool_or("forwardInRange", false)?;
        match (min, max) {
            (None, None) => return Err("config.min: at least one of config.min and config.max is required".to_owned()),
            (Some(min), Some(max)) if min > max => return Err(format!("config.min: must not exceed config.max ({min} > {max})")),
            _ => {}
        }
        *self = Self { min: min.unwrap_or(f64::NEG_INFINITY), max: max.unwrap_or(f64::INFINITY), forward_in_range };
        Ok(())
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Emitter) {
        for reading in batch.iter() {
            // Written so that NaN, which compares false with everything, is out of range.
            let in_range = reading.value >= self.min && reading.value <= self.max;
            if !in_range {
                out.emit(OUT_OF_RANGE, reading);
            } else if self.forward_in_range {
                out.emit(IN_RANGE, reading);
            }
        }
    }
}

export_workload!(ThresholdFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use edgeplane_sdk::{encode_batch, NativeHost, Reading};

    fn batch(values: &[f64]) -> Vec<u8> {
        encode_batch(values.iter().enumerate().map(|(i, &value)| Reading {
            timestamp_ms: i as u64,
            value,
            device: "press-7",
            metric: "temperature",
        }))
        .unwrap()
    }

    fn values(data: &[u8]) -> Vec<f64> {
        Batch::parse(data).unwrap().iter().map(|r| r.value).collect()
    }

    fn host(config: &str) -> NativeHost<ThresholdFilter> {
        let mut host = NativeHost::new();
        host.configure(&format!(r#"{{"config": {config}}}"#)).unwrap();
        host
    }

    #[test]
    fn emits_out_of_range_readings_only() {
        let mut h = host(r#"{"min": 10, "max": 20}"#);
        let out = h.process(&batch(&[5.0, 10.0, 15.0, 20.0, 25.0, f64::NAN])).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, OUT_OF_RANGE);
        let got = values(&out[0].1);
        assert_eq!(got[..2], [5.0, 25.0]);
        assert!(got[2].is_nan());
        // Everything else about a reading is passed on unchanged.
        let first = Batch::parse(&out[0].1).unwrap().iter().next().unwrap();
        assert_eq!(first, Reading { timestamp_ms: 0, value: 5.0, device: "press-7", metric: "temperature" });
    }

    #[test]
    fn forwards_in_range_readings_when_asked() {
        let mut h = host(r#"{"min": 10, "max": 20, "forwardInRange": true}"#);
        let out = h.process(&batch(&[5.0, 12.0, 30.0, 18.0])).unwrap();
        assert_eq!(out.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>(), [OUT_OF_RANGE, IN_RANGE]);
        assert_eq!(values(&out[0].1), [5.0, 30.0]);
        assert_eq!(values(&out[1].1), [12.0, 18.0]);
    }

    #[test]
    fn one_bound_is_enough() {
        let mut h = host(r#"{"max": 0}"#);
        assert_eq!(values(&h.process(&batch(&[-1e300, 0.0, 1.0])).unwrap()[0].1), [1.0]);
        let mut h = host(r#"{"min": 0}"#);
        assert_eq!(values(&h.process(&batch(&[-1.0, 0.0, 1e300])).unwrap()[0].1), [-1.0]);
    }

    #[test]
    fn nothing_to_emit() {
        let mut h = host(r#"{"min": 0, "max": 1}"#);
        assert!(h.process(&batch(&[0.5])).unwrap().is_empty());
        assert!(h.process(&batch(&[])).unwrap().is_empty());
    }

    #[test]
    fn refuses_bad_configuration_and_keeps_the_old_one() {
        let mut h = host(r#"{"min": 10}"#);
        let cases = [
            ("{}", "config.min: at least one of config.min and config.max is required"),
            (r#"{"min": 5, "max": 1}"#, "config.min: must not exceed config.max (5 > 1)"),
            (r#"{"min": "5"}"#, "config.min: expected a number, got a string"),
            (r#"{"max": 1, "forwardInRange": 1}"#, "config.forwardInRange: expected a boolean, got a number"),
            (r#"{"max": 1, "forwardinrange": true}"#, "config.forwardinrange: unknown key (known keys: min, max, forwardInRange)"),
        ];
        for (config, message) in cases {
            assert_eq!(h.configure(&format!(r#"{{"config": {config}}}"#)).unwrap_err(), message);
        }
        assert_eq!(values(&h.process(&batch(&[5.0, 15.0])).unwrap()[0].1), [5.0]);
    }

    #[test]
    fn unconfigured_instance_refuses_batches() {
        let mut h: NativeHost<ThresholdFilter> = NativeHost::new();
        assert_eq!(h.process(&batch(&[1.0])), Err(edgeplane_sdk::code::NOT_CONFIGURED));
    }

    #[test]
    fn malformed_batch() {
        let mut h = host(r#"{"min": 0}"#);
        assert_eq!(h.process(&[1, 0, 0, 0]), Err(edgeplane_sdk::code::INVALID));
    }

    #[test]
    fn refused_output_is_reported() {
        let mut h = host(r#"{"min": 0}"#);
        assert_eq!(h.process_with(&batch(&[-1.0]), |_, _| -1), Err(edgeplane_sdk::code::EMIT_REFUSED));
        // The next batch starts clean.
        assert_eq!(values(&h.process(&batch(&[-2.0])).unwrap()[0].1), [-2.0]);
    }
}
