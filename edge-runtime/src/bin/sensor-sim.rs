//! `sensor-sim`: a factory's sensors, publishing over MQTT what the demo's edge nodes process.
//!
//! Line A has two presses with a temperature and a vibration sensor each; line B has two
//! pumps with a vibration sensor each. Every sensor samples at `--rate-hz`; every
//! `--publish-ms` the readings of each topic (`line-a/temperature`, `line-a/vibration`,
//! `line-b/vibration`) go out as one JSON array, QoS 1.
//!
//! The signals (the plant model below does no IO and is seeded, so a run can be replayed):
//! - temperature (°C): a per-machine base, a slow sinusoidal drift (the hall warming and
//!   cooling) and Gaussian noise;
//! - vibration (mm/s RMS): around 2.1 with Gaussian noise;
//! - faults, one every `--fault-every-s`, in turn: a press overheating (temperature ramps past
//!   90 °C), a worn bearing (vibration several mm/s up and rougher), spikes (single outliers),
//!   and a slight imbalance (vibration +0.9 mm/s), the fault a coarse model misses;
//! - `--imbalance` gives pump-b2 that slight imbalance for the whole run.
//!
//! Each fault is printed when it starts (`fault ...`) and a summary every 10 s (`published
//! ...`), so the demo can show what the edge should find. On SIGINT/SIGTERM or after
//! `--duration-s` it waits for the broker's acknowledgements and prints the totals.
//!
//! `--dataset FILE` publishes nothing: it runs the same plant for `--duration-s` simulated
//! seconds as fast as it can and writes every reading as CSV with the fault acting on it
//! (`device,metric,ts,value,fault`), labelled data to train a detector on
//! (scripts/models/train_vibration_model.py).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use edgeplane_api::data::Reading;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport};

#[derive(Debug, Parser)]
#[command(name = "sensor-sim", about = "Publishes a factory's simulated sensor readings over MQTT.")]
struct Args {
    /// The MQTT broker, host:port (TLS).
    #[arg(long, default_value = "127.0.0.1:8883")]
    broker: String,
    /// The cluster CA's certificate: the broker's certificate must be issued by it.
    #[arg(long, required_unless_present = "dataset")]
    ca_cert: Option<std::path::PathBuf>,
    /// The device's certificate and key (a user in group edgeplane:devices), which the broker
    /// takes as its identity.
    #[arg(long, required_unless_present = "dataset")]
    cert: Option<std::path::PathBuf>,
    #[arg(long, required_unless_present = "dataset")]
    key: Option<std::path::PathBuf>,
    /// Write `--duration-s` simulated seconds of labelled readings to this CSV file instead of
    /// publishing.
    #[arg(long, requires = "duration_s")]
    dataset: Option<std::path::PathBuf>,
    /// Samples per second of each sensor.
    #[arg(long, default_value_t = 10.0)]
    rate_hz: f64,
    /// How often each topic's readings are published (as one JSON array).
    #[arg(long, default_value_t = 200)]
    publish_ms: u64,
    /// Seconds between the starts of two faults (0: no faults).
    #[arg(long, default_value_t = 15.0)]
    fault_every_s: f64,
    /// pump-b2 runs with a slight imbalance the whole time.
    #[arg(long)]
    imbalance: bool,
    /// Seed of the noise and the fault schedule.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long)]
    duration_s: Option<f64>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.rate_hz > 0.0 && args.rate_hz <= 10_000.0, "--rate-hz must be in (0, 10000], got {}", args.rate_hz);
    anyhow::ensure!(args.publish_ms > 0, "--publish-ms must be positive");
    if let Some(path) = &args.dataset {
        return write_dataset(&args, path);
    }
    let (Some(ca_cert), Some(cert), Some(key)) = (&args.ca_cert, &args.cert, &args.key) else {
        anyhow::bail!("--ca-cert, --cert and --key are required to publish");
    };
    let (host, port) = match args.broker.rsplit_once(':') {
        Some((host, port)) => {
            (host.to_owned(), port.parse::<u16>().map_err(|_| anyhow::anyhow!("--broker: bad port in {:?}", args.broker))?)
        }
        None => (args.broker.clone(), 8883),
    };
    let ca = edgeplane_tls::config::read(ca_cert)?;
    let identity = edgeplane_tls::TlsIdentity::load(cert, key)?;
    let tls = edgeplane_tls::config::client_config(&ca, Some(&identity))?;
    let mut options = MqttOptions::new(format!("sensor-sim-{}", std::process::id()), host, port);
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(tls))));
    options.set_keep_alive(Duration::from_secs(5));
    let (client, eventloop) = AsyncClient::new(options, 1024);
    let link = Arc::new(Link::default());
    tokio::spawn(poll(eventloop, link.clone(), args.broker.clone()));

    let started = now_ms();
    let mut plant =
        Plant::new(args.seed, FaultSchedule { every_ms: (args.fault_every_s * 1000.0) as u64, imbalance: args.imbalance }, started);
    let sample_ms = 1000.0 / args.rate_hz;
    let mut next_sample = started as f64;
    let mut publish = tokio::time::interval(Duration::from_millis(args.publish_ms));
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut report = tokio::time::interval(Duration::from_secs(10));
    report.tick().await;
    let deadline = args.duration_s.map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s));
    let mut stop = Box::pin(shutdown(deadline));
    let mut totals = Totals::default();

    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = publish.tick() => {
                let now = now_ms();
                let mut topics: BTreeMap<&'static str, Vec<Reading>> = BTreeMap::new();
                while next_sample <= now as f64 {
                    for (topic, reading, fault) in plant.sample(next_sample as u64) {
                        if let Some(fault) = fault {
                            println!("fault {fault}");
                        }
                        topics.entry(topic).or_default().push(reading);
                    }
                    next_sample += sample_ms;
                }
                for (topic, readings) in topics {
                    let payload = serde_json::to_vec(&readings)?;
                    // Waits when the request queue is full: the simulator slows with the broker.
                    client.publish(topic, QoS::AtLeastOnce, false, payload.clone()).await?;
                    totals.add(topic, readings.len() as u64, payload.len() as u64);
                }
            }
            _ = report.tick() => {
                let connected = if link.connected.load(Ordering::Relaxed) { "" } else { "; not connected to the broker" };
                println!("published {} (acknowledged messages: {}){connected}", totals.summary(), link.acked.load(Ordering::Relaxed));
            }
        }
    }
    // Let the broker acknowledge what is in flight (a second at most), then say what went out.
    let flush_until = tokio::time::Instant::now() + Duration::from_secs(1);
    while link.acked.load(Ordering::Relaxed) < totals.messages && tokio::time::Instant::now() < flush_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = client.disconnect().await;
    println!("total {} (acknowledged messages: {})", totals.summary(), link.acked.load(Ordering::Relaxed));
    Ok(())
}

/// `--dataset`: the plant sampled for `--duration-s` simulated seconds, every reading written
/// with the fault acting on it (empty if none).
fn write_dataset(args: &Args, path: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    let seconds = args.duration_s.unwrap_or(0.0);
    anyhow::ensure!(seconds > 0.0 && seconds <= 30.0 * 86_400.0, "--duration-s must be in (0, 30 days] with --dataset");
    // A fixed start: the same seed gives the same file.
    let started = 1_700_000_000_000;
    let mut plant =
        Plant::new(args.seed, FaultSchedule { every_ms: (args.fault_every_s * 1000.0) as u64, imbalance: args.imbalance }, started);
    let file = std::fs::File::create(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    writeln!(out, "device,metric,ts,value,fault")?;
    let sample_ms = 1000.0 / args.rate_hz;
    let end = started as f64 + seconds * 1000.0;
    let mut t = started as f64;
    let mut rows = 0u64;
    while t < end {
        let at = t as u64;
        for (_, reading, _) in plant.sample(at) {
            let fault = plant.fault_on(&reading.device, &reading.metric, at).unwrap_or("");
            writeln!(out, "{},{},{},{},{fault}", reading.device, reading.metric, reading.ts, reading.value)?;
            rows += 1;
        }
        t += sample_ms;
    }
    out.flush()?;
    println!("wrote {rows} readings ({seconds} s simulated, seed {}) to {}", args.seed, path.display());
    Ok(())
}

/// What the polling task learns of the connection.
#[derive(Debug, Default)]
struct Link {
    acked: AtomicU64,
    connected: AtomicBool,
}

/// Drives the connection (keep-alives, acknowledgements); reconnects every half second.
async fn poll(mut eventloop: EventLoop, link: Arc<Link>, broker: String) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                link.acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                link.connected.store(true, Ordering::Relaxed);
                eprintln!("sensor-sim: connected to {broker}");
            }
            Ok(_) => {}
            Err(e) => {
                if link.connected.swap(false, Ordering::Relaxed) {
                    eprintln!("sensor-sim: broker {broker}: {e}; retrying");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn shutdown(deadline: Option<tokio::time::Instant>) {
    let interrupted = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    match deadline {
        Some(at) => tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = interrupted => {}
        },
        None => interrupted.await,
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[derive(Debug, Default)]
struct Totals {
    messages: u64,
    readings: u64,
    bytes: u64,
    per_topic: BTreeMap<&'static str, u64>,
}

impl Totals {
    fn add(&mut self, topic: &'static str, readings: u64, bytes: u64) {
        self.messages += 1;
        self.readings += readings;
        self.bytes += bytes;
        *self.per_topic.entry(topic).or_default() += readings;
    }

    fn summary(&self) -> String {
        let topics: Vec<String> = self.per_topic.iter().map(|(t, n)| format!("{t}={n}")).collect();
        format!("{} readings, {} messages, {} bytes [{}]", self.readings, self.messages, self.bytes, topics.join(" "))
    }
}

// ---- The plant model: pure, seeded. ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metric {
    Temperature,
    Vibration,
}

struct Sensor {
    device: &'static str,
    metric: Metric,
    topic: &'static str,
    /// Temperature: the machine's normal level; vibration: the healthy RMS.
    base: f64,
    noise: f64,
}

const SENSORS: &[Sensor] = &[
    Sensor { device: "press-a1", metric: Metric::Temperature, topic: "line-a/temperature", base: 52.0, noise: 0.4 },
    Sensor { device: "press-a2", metric: Metric::Temperature, topic: "line-a/temperature", base: 57.0, noise: 0.4 },
    Sensor { device: "press-a1", metric: Metric::Vibration, topic: "line-a/vibration", base: 2.1, noise: 0.3 },
    Sensor { device: "press-a2", metric: Metric::Vibration, topic: "line-a/vibration", base: 2.1, noise: 0.3 },
    Sensor { device: "pump-b1", metric: Metric::Vibration, topic: "line-b/vibration", base: 2.1, noise: 0.3 },
    Sensor { device: "pump-b2", metric: Metric::Vibration, topic: "line-b/vibration", base: 2.1, noise: 0.3 },
];

/// How long a fault lasts.
const FAULT_MS: u64 = 8_000;
/// Slow drift of the halls' temperature: amplitude (°C) and period.
const DRIFT_C: f64 = 6.0;
const DRIFT_PERIOD_MS: f64 = 600_000.0;
/// The slight imbalance: enough for a sensitive model, mostly below a coarse one.
const IMBALANCE_MM_S: f64 = 0.9;

#[derive(Debug, Clone, Copy, PartialEq)]
enum FaultKind {
    /// Temperature ramps by `OVERHEAT_C` over the fault, then drops back.
    Overheat,
    /// Vibration +3 mm/s and twice as rough.
    WornBearing,
    /// Five single readings 6 mm/s up.
    Spikes,
    Imbalance,
}

const OVERHEAT_C: f64 = 40.0;
const FAULT_CYCLE: [(FaultKind, &str); 4] = [
    (FaultKind::WornBearing, "press-a1"),
    (FaultKind::Overheat, "press-a2"),
    (FaultKind::Imbalance, "pump-b1"),
    (FaultKind::Spikes, "pump-b2"),
];

#[derive(Debug, Clone, Copy)]
struct FaultSchedule {
    /// Between fault starts; 0 disables them.
    every_ms: u64,
    imbalance: bool,
}

#[derive(Debug, Clone, Copy)]
struct ActiveFault {
    kind: FaultKind,
    device: &'static str,
    start_ms: u64,
}

impl ActiveFault {
    /// What the fault adds to `sensor`'s reading at `t`, if anything.
    fn offset(&self, sensor: &Sensor, t: u64, rng: &mut Rng) -> f64 {
        if sensor.device != self.device || t < self.start_ms || t >= self.start_ms + FAULT_MS {
            return 0.0;
        }
        let progress = (t - self.start_ms) as f64 / FAULT_MS as f64;
        match (self.kind, sensor.metric) {
            (FaultKind::Overheat, Metric::Temperature) => OVERHEAT_C * progress,
            (FaultKind::WornBearing, Metric::Vibration) => 3.0 + rng.gaussian() * sensor.noise,
            // One spike in each fifth of the fault.
            (FaultKind::Spikes, Metric::Vibration) if rng.unit() < 5.0 / (FAULT_MS as f64 / 100.0) => 6.0,
            (FaultKind::Imbalance, Metric::Vibration) => IMBALANCE_MM_S,
            _ => 0.0,
        }
    }

    fn describe(&self) -> String {
        let what = match self.kind {
            FaultKind::Overheat => format!("overheating: temperature ramps up by {OVERHEAT_C} °C"),
            FaultKind::WornBearing => "worn bearing: vibration +3 mm/s and rougher".to_owned(),
            FaultKind::Spikes => "loose mount: vibration spikes of +6 mm/s".to_owned(),
            FaultKind::Imbalance => format!("slight imbalance: vibration +{IMBALANCE_MM_S} mm/s"),
        };
        format!("{} {what} for {} s (ts {})", self.device, FAULT_MS / 1000, self.start_ms)
    }
}

struct Plant {
    rng: Rng,
    schedule: FaultSchedule,
    started_ms: u64,
    /// Faults started so far.
    faults: u64,
    active: Option<ActiveFault>,
}

impl Plant {
    fn new(seed: u64, schedule: FaultSchedule, started_ms: u64) -> Plant {
        Plant { rng: Rng::new(seed), schedule, started_ms, faults: 0, active: None }
    }

    /// One sample of every sensor at `t` (ms since the Unix epoch, not decreasing): its topic,
    /// the reading, and the description of a fault that starts with it.
    fn sample(&mut self, t: u64) -> Vec<(&'static str, Reading, Option<String>)> {
        let mut started = self.start_fault(t);
        let elapsed = t.saturating_sub(self.started_ms) as f64;
        let drift = DRIFT_C * (std::f64::consts::TAU * elapsed / DRIFT_PERIOD_MS).sin();
        SENSORS
            .iter()
            .map(|sensor| {
                let mut value = sensor.base + self.rng.gaussian() * sensor.noise;
                if sensor.metric == Metric::Temperature {
                    value += drift;
                }
                if self.schedule.imbalance && sensor.device == "pump-b2" && sensor.metric == Metric::Vibration {
                    value += IMBALANCE_MM_S;
                }
                if let Some(fault) = self.active {
                    value += fault.offset(sensor, t, &mut self.rng);
                }
                let metric = match sensor.metric {
                    Metric::Temperature => "temperature",
                    Metric::Vibration => "vibration",
                };
                // Two decimals, as the sensors report; vibration RMS is never negative.
                let value = (value.max(0.0) * 100.0).round() / 100.0;
                let reading = Reading { ts: t, device: sensor.device.to_owned(), metric: metric.to_owned(), value };
                (sensor.topic, reading, started.take())
            })
            .collect()
    }

    /// The fault acting on a device's metric at `t` (the label of a reading), by name.
    fn fault_on(&self, device: &str, metric: &str, t: u64) -> Option<&'static str> {
        if self.schedule.imbalance && device == "pump-b2" && metric == "vibration" {
            return Some("imbalance");
        }
        let fault = self.active.filter(|f| f.device == device && t >= f.start_ms && t < f.start_ms + FAULT_MS)?;
        match (fault.kind, metric) {
            (FaultKind::Overheat, "temperature") => Some("overheat"),
            (FaultKind::WornBearing, "vibration") => Some("worn-bearing"),
            (FaultKind::Spikes, "vibration") => Some("spikes"),
            (FaultKind::Imbalance, "vibration") => Some("imbalance"),
            _ => None,
        }
    }

    /// Starts the next fault of the cycle when one is due; the first comes 5 s in.
    fn start_fault(&mut self, t: u64) -> Option<String> {
        let every = self.schedule.every_ms;
        if every == 0 {
            return None;
        }
        let due = self.started_ms + 5_000 + self.faults * every;
        if t < due {
            return None;
        }
        let (kind, device) = FAULT_CYCLE[(self.faults % FAULT_CYCLE.len() as u64) as usize];
        self.faults += 1;
        let fault = ActiveFault { kind, device, start_ms: t };
        self.active = Some(fault);
        Some(fault.describe())
    }
}

/// SplitMix64: small, fast, and the same sequence everywhere for a seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    fn gaussian(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: u64 = 1_800_000_000_000;

    fn run(plant: &mut Plant, from: u64, to: u64) -> Vec<(&'static str, Reading, Option<String>)> {
        (from..to).step_by(100).flat_map(|t| plant.sample(t)).collect()
    }

    fn values<'a>(samples: &'a [(&str, Reading, Option<String>)], device: &'a str, metric: &'a str) -> impl Iterator<Item = f64> + 'a {
        samples.iter().filter(move |(_, r, _)| r.device == device && r.metric == metric).map(|(_, r, _)| r.value)
    }

    fn mean(values: impl Iterator<Item = f64>) -> f64 {
        let (sum, n) = values.fold((0.0, 0), |(s, n), v| (s + v, n + 1));
        sum / f64::from(n)
    }

    #[test]
    fn the_same_seed_replays_the_same_readings() {
        let schedule = FaultSchedule { every_ms: 3_000, imbalance: true };
        let a = run(&mut Plant::new(3, schedule, START), START, START + 20_000);
        let b = run(&mut Plant::new(3, schedule, START), START, START + 20_000);
        assert_eq!(a, b);
        let c = run(&mut Plant::new(4, schedule, START), START, START + 20_000);
        assert_ne!(a, c, "another seed, other noise");
    }

    #[test]
    fn healthy_machines_stay_in_their_normal_bands() {
        let mut plant = Plant::new(1, FaultSchedule { every_ms: 0, imbalance: false }, START);
        let samples = run(&mut plant, START, START + 60_000);
        assert_eq!(samples.len(), 600 * SENSORS.len());
        assert!(samples.iter().all(|(_, _, fault)| fault.is_none()), "no faults were scheduled");
        let vibration = mean(values(&samples, "pump-b1", "vibration"));
        assert!((vibration - 2.1).abs() < 0.05, "healthy vibration averages 2.1 mm/s, got {vibration}");
        let hottest = values(&samples, "press-a2", "temperature").fold(f64::MIN, f64::max);
        assert!(hottest < 80.0, "a healthy press stays under the filter's 80 °C, reached {hottest}");
        let topics: std::collections::BTreeSet<_> = samples.iter().map(|(t, _, _)| *t).collect();
        assert_eq!(topics.into_iter().collect::<Vec<_>>(), ["line-a/temperature", "line-a/vibration", "line-b/vibration"]);
    }

    #[test]
    fn faults_come_in_turn_and_show_in_the_signal() {
        let mut plant = Plant::new(1, FaultSchedule { every_ms: 10_000, imbalance: false }, START);
        let samples = run(&mut plant, START, START + 45_000);
        let faults: Vec<&String> = samples.iter().filter_map(|(_, _, f)| f.as_ref()).collect();
        assert_eq!(faults.len(), 4, "faults at 5, 15, 25 and 35 s: {faults:?}");
        assert!(faults[0].starts_with("press-a1 worn bearing"), "{faults:?}");
        assert!(faults[1].starts_with("press-a2 overheating"), "{faults:?}");
        // The worn bearing (5-13 s) against the same sensor's healthy time (13-15 s and later).
        let during = |samples: &[(&str, Reading, Option<String>)], device: &str, metric: &str, from: u64, to: u64| {
            mean(
                samples
                    .iter()
                    .filter(|(_, r, _)| r.device == device && r.metric == metric && r.ts >= START + from && r.ts < START + to)
                    .map(|(_, r, _)| r.value),
            )
        };
        assert!(during(&samples, "press-a1", "vibration", 5_000, 13_000) > 4.5);
        assert!(during(&samples, "press-a1", "vibration", 14_000, 45_000) < 2.3);
        let hottest = values(&samples, "press-a2", "temperature").fold(f64::MIN, f64::max);
        assert!(hottest > 90.0, "the overheating press passes 90 °C, reached {hottest}");
        assert!((during(&samples, "pump-b1", "vibration", 25_000, 33_000) - 3.0).abs() < 0.1, "imbalance: +0.9 mm/s");
    }

    #[test]
    fn a_persistent_imbalance_shifts_pump_b2_only() {
        let mut plant = Plant::new(2, FaultSchedule { every_ms: 0, imbalance: true }, START);
        let samples = run(&mut plant, START, START + 30_000);
        assert!((mean(values(&samples, "pump-b2", "vibration")) - 3.0).abs() < 0.05);
        assert!((mean(values(&samples, "pump-b1", "vibration")) - 2.1).abs() < 0.05);
    }
}
