//! What a bench run measured, printed as a table or as JSON.

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct RunReport {
    /// `baseline` or `herald`.
    pub target: String,
    pub clients: usize,
    pub connected: usize,
    /// New sessions per second (the handshake, plus for Herald a `subscribe` and its reply or
    /// the route's `subscribed`) while connecting: the median of `connect_rates`.
    pub connect_rate: f64,
    /// Each connect round's sessions per second (`--connect-rounds`).
    pub connect_rates: Vec<f64>,
    /// The server's CPU per session over the connect rounds whose clients were closed again
    /// (all but the last, each with its closes): what a session costs the server itself,
    /// whatever share of the machine the load's clients take (with `--pid` for Herald).
    pub connect_cpu: Option<SessionCpu>,
    pub steps: Vec<StepReport>,
    /// Resident memory of the measured processes after connecting, KiB (with `--pid`).
    pub rss_kib: Option<u64>,
    /// Resident memory the connections added, per connection, KiB (with `--pid`).
    pub rss_kib_per_connection: Option<f64>,
    pub errors: u64,
}

/// CPU time per session, in microseconds.
#[derive(Debug, Serialize)]
pub struct SessionCpu {
    pub user_us: f64,
    pub system_us: f64,
}

#[derive(Debug, Serialize)]
pub struct StepReport {
    /// Messages per second asked for.
    pub rate: u64,
    pub published: u64,
    pub deliveries: u64,
    pub deliveries_per_sec: f64,
    pub latency_us: Latency,
    /// Clients closed by the server during the step (slow consumers, ...).
    pub dropped_clients: u64,
    /// CPU used by the measured processes, in % of one core (with `--pid`).
    pub cpu_percent: Option<f64>,
    /// The same for each process, in `--pid` order.
    pub cpu_percent_each: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

pub fn print(reports: &[RunReport], json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(reports).expect("reports serialize"));
        return;
    }
    for r in reports {
        println!(
            "{}: {}/{} clients connected, {:.0} sessions/s{}{}{}{}",
            r.target,
            r.connected,
            r.clients,
            r.connect_rate,
            if r.connect_rates.len() > 1 {
                let rounds: Vec<String> = r.connect_rates.iter().map(|rate| format!("{rate:.0}")).collect();
                format!(" (median of {})", rounds.join(", "))
            } else {
                String::new()
            },
            r.connect_cpu.as_ref().map_or(String::new(), |cpu| format!(
                ", {:.1} µs user + {:.1} µs system CPU per session",
                cpu.user_us, cpu.system_us
            )),
            r.rss_kib.zip(r.rss_kib_per_connection).map_or(String::new(), |(kib, per)| format!(
                ", {kib} KiB resident ({per:.2} KiB added per connection)"
            )),
            if r.errors > 0 { format!(", {} errors", r.errors) } else { String::new() },
        );
        println!(
            "  {:>8} {:>10} {:>12} {:>14} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6}",
            "rate",
            "published",
            "deliveries",
            "deliveries/s",
            "p50 µs",
            "p99 µs",
            "p99.9",
            "max µs",
            "drops",
            "cpu %"
        );
        for s in &r.steps {
            println!(
                "  {:>8} {:>10} {:>12} {:>14.0} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6}",
                s.rate,
                s.published,
                s.deliveries,
                s.deliveries_per_sec,
                s.latency_us.p50,
                s.latency_us.p99,
                s.latency_us.p999,
                s.latency_us.max,
                s.dropped_clients,
                s.cpu_percent.map_or("-".into(), |c| format!("{c:.1}")),
            );
        }
    }
    if let [baseline, herald] = reports {
        for (b, h) in baseline.steps.iter().zip(&herald.steps) {
            println!(
                "herald / baseline at {} msg/s: deliveries {:.2}x, p99 {:.2}x",
                b.rate,
                h.deliveries_per_sec / b.deliveries_per_sec.max(1.0),
                h.latency_us.p99 as f64 / b.latency_us.p99.max(1) as f64
            );
        }
        println!(
            "herald / baseline connect rate: {:.2}x",
            herald.connect_rate / baseline.connect_rate.max(1.0)
        );
    }
}
