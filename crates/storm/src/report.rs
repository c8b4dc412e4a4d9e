//! What the storm saw: the checks of every byte (`--verify`), the server's
//! memory and CPU over the run, per-stage percentiles, the per-machine CSV
//! and the chart of machines called back over time.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::dhcp::Lease;
use crate::http::Got;
use crate::tftp::Fetched;
use crate::{Error, HTTP_BYTES, Outcome, RunArgs, STAGES, TFTP_BYTES};

/// Checks what machines received against the server's own files.
pub struct Verifier {
    data_dir: PathBuf,
    digests: Mutex<HashMap<PathBuf, Option<[u8; 32]>>>,
}

impl Verifier {
    /// Checks against the files under `data_dir` (`ipxe/`, `osie/`).
    pub fn new(data_dir: PathBuf) -> Verifier {
        Verifier {
            data_dir,
            digests: Mutex::new(HashMap::new()),
        }
    }

    fn digest(&self, path: PathBuf) -> Option<[u8; 32]> {
        let mut cache = self
            .digests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *cache.entry(path.clone()).or_insert_with(|| {
            std::fs::read(&path)
                .ok()
                .map(|bytes| Sha256::digest(&bytes).into())
        })
    }

    /// The lease is the machine's reservation.
    pub fn lease(&self, lease: &Lease, reserved: Ipv4Addr) -> Result<(), Error> {
        if lease.address != reserved {
            return Err(Error::msg(format!(
                "leased {} where {reserved} is reserved",
                lease.address
            )));
        }
        Ok(())
    }

    /// The TFTP file is the server's `ipxe/` file of that name.
    pub fn tftp(&self, file: &str, got: &Fetched) -> Result<(), Error> {
        let name = file.rsplit('/').next().unwrap_or(file);
        self.same(self.data_dir.join("ipxe").join(name), got.sha256, file)
    }

    /// A whole HTTP file is the server's `osie/` file of that name.
    pub fn http(&self, url: &str, got: &Got) -> Result<(), Error> {
        if got.sha256.is_none() {
            return Ok(()); // a Range fetch: its length was checked
        }
        let path = url.split('?').next().unwrap_or(url);
        let name = path.rsplit('/').next().unwrap_or(path);
        self.same(self.data_dir.join("osie").join(name), got.sha256, url)
    }

    fn same(&self, path: PathBuf, got: Option<[u8; 32]>, what: &str) -> Result<(), Error> {
        let want = self
            .digest(path.clone())
            .ok_or_else(|| Error::msg(format!("cannot read {} to check {what}", path.display())))?;
        if got != Some(want) {
            return Err(Error::msg(format!(
                "{what}: the bytes received are not {}",
                path.display()
            )));
        }
        Ok(())
    }
}

/// The server's peak resident memory and CPU time over the run.
#[derive(Default, Clone)]
pub struct ServerUse {
    /// Peak VmRSS seen, KiB.
    pub peak_rss_kib: u64,
    /// utime + stime over the run, seconds.
    pub cpu_secs: f64,
    /// This process's own CPU over the run, seconds.
    pub own_cpu_secs: f64,
    /// VmRSS when sampling began, KiB.
    pub start_rss_kib: u64,
    /// Every sample: seconds since the start, VmRSS KiB, server CPU
    /// seconds since the start (`server.csv`).
    pub samples: Vec<(f64, u64, f64)>,
}

/// Samples the server every 200 ms until stopped.
pub struct Sampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<ServerUse>,
}

impl Sampler {
    /// Starts sampling `pids` (their RSS and CPU summed; with none, only
    /// this process's CPU).
    pub fn start(pids: Vec<u32>) -> Sampler {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let cpu = |pids: &[u32]| pids.iter().copied().map(cpu_secs).sum::<f64>();
            let cpu0 = cpu(&pids);
            let own0 = own_cpu_secs();
            let started = std::time::Instant::now();
            let rss = |pids: &[u32]| pids.iter().copied().map(rss_kib).sum::<u64>();
            let start_rss_kib = rss(&pids);
            let mut peak = 0;
            let mut samples = Vec::new();
            loop {
                let now = rss(&pids);
                peak = peak.max(now);
                // At most an hour of samples (5 a second).
                if samples.len() < 18_000 {
                    samples.push((started.elapsed().as_secs_f64(), now, cpu(&pids) - cpu0));
                }
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
            ServerUse {
                peak_rss_kib: peak,
                cpu_secs: cpu(&pids) - cpu0,
                own_cpu_secs: own_cpu_secs() - own0,
                start_rss_kib,
                samples,
            }
        });
        Sampler { stop, task }
    }

    /// Stops and returns what was seen.
    pub async fn stop(self) -> ServerUse {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn stat_cpu_secs(path: &str) -> f64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let after = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

fn cpu_secs(pid: u32) -> f64 {
    stat_cpu_secs(&format!("/proc/{pid}/stat"))
}

fn own_cpu_secs() -> f64 {
    stat_cpu_secs("/proc/self/stat")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Writes the files, prints the failures (the first few of each kind) and
/// the summary line; true when every machine called back (or, with no
/// worker stage, has its initrd).
pub fn finish(
    args: &RunArgs,
    outcomes: &[Outcome],
    server: &ServerUse,
    wall: Duration,
) -> Result<bool, Error> {
    let failures: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| o.failure.as_deref())
        .collect();
    let mut kinds: HashMap<String, (usize, &str)> = HashMap::new();
    for f in &failures {
        // Group by the stage and the start of the message.
        let key: String = f.chars().take(40).collect();
        kinds.entry(key).or_insert((0, f)).0 += 1;
    }
    for (n, example) in kinds.values() {
        eprintln!("storm: {n} × {example}");
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|e| Error::msg(format!("{}: {e}", args.out.display())))?;
    write_csv(&args.out, outcomes)?;
    let mut done: Vec<Duration> = outcomes.iter().filter_map(|o| o.done).collect();
    done.sort();
    write_completed(&args.out, &done)?;
    write_server(&args.out, server)?;
    write_svg(&args.out.join("storm.svg"), &done, outcomes.len(), args)?;

    let mut per_stage = String::new();
    for (s, name) in STAGES.iter().enumerate() {
        let mut v: Vec<Duration> = outcomes
            .iter()
            .filter(|o| o.failure.is_none())
            .filter_map(|o| o.stages.get(s).copied())
            .collect();
        if v.is_empty() {
            continue; // a stage this storm does not run (no worker stage)
        }
        v.sort();
        let _ = write!(
            per_stage,
            "{}{name} {:.0}/{:.0} ms",
            if per_stage.is_empty() { "" } else { ", " },
            ms(percentile(&v, 0.5)),
            ms(percentile(&v, 0.99))
        );
    }
    let last = done.last().copied().unwrap_or(wall);
    let mib = |b: &std::sync::atomic::AtomicU64| {
        b.load(std::sync::atomic::Ordering::Relaxed) as f64 / (1 << 20) as f64
    };
    eprintln!(
        "storm: server RSS {:.1} MB before the storm",
        server.start_rss_kib as f64 / 1024.0
    );
    eprintln!(
        "storm: moved {:.0} MiB by TFTP and {:.0} MiB by HTTP in {:.1} s",
        mib(&TFTP_BYTES),
        mib(&HTTP_BYTES),
        wall.as_secs_f64()
    );
    println!(
        "storm: {} machines, {} failures, {:.1} s to last {}, p50/p99 per stage: {per_stage}, server peak RSS {:.1} MB, server CPU {:.1} s (generator CPU {:.1} s)",
        outcomes.len(),
        failures.len(),
        last.as_secs_f64(),
        if args.actions == 0 {
            "initrd"
        } else {
            "call-back"
        },
        server.peak_rss_kib as f64 / 1024.0,
        server.cpu_secs,
        server.own_cpu_secs,
    );
    Ok(failures.is_empty())
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| Error::msg(format!("{}: {e}", path.display())))
}

fn write_csv(dir: &Path, outcomes: &[Outcome]) -> Result<(), Error> {
    let mut s = String::from("machine,started_ms");
    for name in STAGES {
        let _ = write!(s, ",{name}_ms");
    }
    s.push_str(",done_ms,failure\n");
    // In machine order (outcomes arrive in the order machines finished).
    let mut ordered: Vec<&Outcome> = outcomes.iter().collect();
    ordered.sort_by_key(|o| o.machine.unwrap_or(usize::MAX));
    for o in ordered {
        let machine = o.machine.map(|i| i.to_string()).unwrap_or_default();
        let _ = write!(s, "{machine},{:.1}", ms(o.started));
        for st in 0..STAGES.len() {
            match o.stages.get(st) {
                Some(d) => {
                    let _ = write!(s, ",{:.1}", ms(*d));
                }
                None => s.push(','),
            }
        }
        let done = o.done.map(|d| format!("{:.1}", ms(d))).unwrap_or_default();
        let failure = o.failure.as_deref().unwrap_or("").replace(['"', '\n'], "'");
        let _ = writeln!(s, ",{done},\"{failure}\"");
    }
    write(&dir.join("machines.csv"), &s)
}

fn write_completed(dir: &Path, done: &[Duration]) -> Result<(), Error> {
    let mut s = String::from("seconds,machines_called_back\n");
    for (n, d) in done.iter().enumerate() {
        let _ = writeln!(s, "{:.3},{}", d.as_secs_f64(), n + 1);
    }
    write(&dir.join("completed.csv"), &s)
}

/// The server's resident memory and CPU over the run, five times a
/// second: where the peak falls against the stages in `machines.csv`.
fn write_server(dir: &Path, server: &ServerUse) -> Result<(), Error> {
    let mut s = String::from("seconds,server_rss_mb,server_cpu_s\n");
    for (t, rss, cpu) in &server.samples {
        let _ = writeln!(s, "{t:.1},{:.1},{cpu:.2}", *rss as f64 / 1024.0);
    }
    write(&dir.join("server.csv"), &s)
}

/// A line chart: machines called back (y) against seconds since the storm
/// began (x), with the arrivals' ramp as a dashed line.
fn write_svg(path: &Path, done: &[Duration], total: usize, args: &RunArgs) -> Result<(), Error> {
    let (w, h, left, bottom, top, right) = (720.0, 420.0, 70.0, 50.0, 40.0, 20.0);
    let done_what = if args.actions == 0 {
        "with their initrd"
    } else {
        "called back"
    };
    let max_t = done
        .last()
        .map(|d| d.as_secs_f64())
        .unwrap_or(1.0)
        .max(args.ramp_secs)
        .max(1.0);
    let x_max = nice(max_t);
    let y_max = total.max(1) as f64;
    let x = |t: f64| left + (w - left - right) * t / x_max;
    let y = |n: f64| h - bottom - (h - bottom - top) * n / y_max;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="14">bellows-storm: {total} machines, {} {done_what}</text>
"#,
        w / 2.0,
        done.len()
    );
    // Axes and ticks.
    let _ = writeln!(
        s,
        r#"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>"#,
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    for k in 0..=5 {
        let t = x_max * k as f64 / 5.0;
        let n = y_max * k as f64 / 5.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{t:.0}</text><text x="{}" y="{:.1}" text-anchor="end">{n:.0}</text><line x1="{left}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="lightgray"/>"#,
            x(t),
            h - bottom + 18.0,
            left - 6.0,
            y(n) + 4.0,
            y(n),
            w - right,
            y(n)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">seconds since the storm began</text><text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">machines {done_what}</text>"#,
        (left + w - right) / 2.0,
        h - 10.0,
        (top + h - bottom) / 2.0,
        (top + h - bottom) / 2.0
    );
    // Arrivals.
    let _ = writeln!(
        s,
        r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="gray" stroke-dasharray="4 4"/><text x="{:.1}" y="{:.1}" fill="gray">arrivals</text>"#,
        x(0.0),
        y(0.0),
        x(args.ramp_secs),
        y(y_max),
        x(args.ramp_secs) + 4.0,
        y(y_max) + 14.0
    );
    // Completions, as a step line (at most ~1,000 points).
    let step = (done.len() / 1000).max(1);
    let mut points = format!("{:.1},{:.1}", x(0.0), y(0.0));
    for (n, d) in done.iter().enumerate() {
        if n % step == 0 || n + 1 == done.len() {
            let _ = write!(
                points,
                " {:.1},{:.1}",
                x(d.as_secs_f64()),
                y((n + 1) as f64)
            );
        }
    }
    let _ = writeln!(
        s,
        r#"<polyline points="{points}" fill="none" stroke="steelblue" stroke-width="2"/>"#
    );
    s.push_str("</svg>\n");
    write(path, &s)
}

/// The next round number at or above `t` (1, 2, 5 × 10ⁿ).
fn nice(t: f64) -> f64 {
    let mag = 10f64.powf(t.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= t {
            return m * mag;
        }
    }
    10.0 * mag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_axes() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(51));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
        assert_eq!(nice(37.0), 50.0);
        assert_eq!(nice(60.0), 100.0);
        assert_eq!(nice(8.0), 10.0);
    }
}
