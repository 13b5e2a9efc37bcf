//! Paired rounds: how the `ids` and `proxy` benches compare two sides like with like.
//!
//! On this kind of machine (2 shared cores, a virtual CPU with steal time, other builds running) the rate of
//! the same loop moves by 20% between runs minutes apart, while two loops run a second apart see nearly the
//! same machine. So a comparison is made of short **rounds**: each round runs every side once, back to back,
//! in an order that alternates from round to round (ABBA: A B, then B A, so that neither side always runs
//! first, into whatever the one before left behind), and gives one ratio per round. The verdict rests on the
//! **median of the per-round ratios**; the spread of those ratios (min, max and the middle half) says how far
//! one round can be trusted, and a 95% confidence interval of the median (from order statistics, so without
//! assuming a distribution) says how far the median can: a target inside it is reported as undecided rather
//! than met or missed by chance. A best-of-N rate, which the benches printed before, mixes the luckiest round of
//! one side with the luckiest of the other, and those need not be the same round.

/// The verdict when the target lies inside the 95% confidence interval of the median.
pub const UNDECIDED: &str = "undecided (the target is inside the 95% confidence interval)";

/// The per-round values of one ratio (or one measure), and what sums them up.
#[derive(Debug, Clone, Default)]
pub struct Spread(Vec<f64>);

impl Spread {
    /// Adds one round's value.
    pub fn push(&mut self, value: f64) {
        self.0.push(value);
    }

    /// The values in order.
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The value at quantile `q` (0.0 to 1.0) of the rounds, by linear interpolation between the nearest two.
    pub fn quantile(&self, q: f64) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
    }

    /// The median of the rounds.
    pub fn median(&self) -> f64 {
        self.quantile(0.5)
    }

    /// A 95% confidence interval of the median: the order statistics whose ranks bracket half the rounds by
    /// 1.96 standard deviations of a binomial count (distribution-free: it assumes only that rounds are
    /// independent). With 61 rounds, the 23rd and 39th values.
    pub fn median_ci95(&self) -> (f64, f64) {
        let v = self.sorted();
        let n = v.len() as f64;
        if v.is_empty() {
            return (f64::NAN, f64::NAN);
        }
        let k = ((n - 1.96 * n.sqrt()) / 2.0).floor().max(0.0) as usize;
        (v[k], v[v.len() - 1 - k])
    }

    /// How the median compares with `target`: at least it, below it, or undecided (the target inside the 95%
    /// confidence interval of the median, so another run may well judge the other way).
    pub fn judge(&self, target: f64) -> &'static str {
        match self.median_ci95() {
            (lo, _) if lo >= target => "met",
            (_, hi) if hi < target => "NOT met",
            _ => UNDECIDED,
        }
    }

    /// How the median compares with a ceiling `target`: at most it, above it, or undecided (the mirror of
    /// [`judge`](Self::judge), for measures where less is better, such as CPU above a floor).
    pub fn judge_at_most(&self, target: f64) -> &'static str {
        match self.median_ci95() {
            (_, hi) if hi <= target => "met",
            (lo, _) if lo > target => "NOT met",
            _ => UNDECIDED,
        }
    }

    /// `median (middle half lo-hi, all lo-hi)` with `decimals` decimals, e.g. `1.01 (0.99-1.03, 0.95-1.08)`.
    pub fn show(&self, decimals: usize) -> String {
        let v = self.sorted();
        let (min, max) = (v.first().copied().unwrap_or(f64::NAN), v.last().copied().unwrap_or(f64::NAN));
        format!(
            "{:.d$} (IQR {:.d$}-{:.d$}, all {:.d$}-{:.d$})",
            self.median(),
            self.quantile(0.25),
            self.quantile(0.75),
            min,
            max,
            d = decimals
        )
    }
}

/// The order in which round `round` runs `sides` sides: forwards in even rounds, backwards in odd ones.
pub fn abba(round: usize, sides: usize) -> impl Iterator<Item = usize> {
    (0..sides).map(move |i| if round % 2 == 0 { i } else { sides - 1 - i })
}

/// What the process `pid` (QEMU) has used so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Daemon {
    /// On-CPU nanoseconds of all its threads (`/proc/PID/task/*/schedstat`).
    pub cpu_ns: u64,
    /// Read system calls (`syscr` of `/proc/PID/io`): QEMU reads its monitor one byte per `recvmsg`, so per
    /// command this is the bytes of the command plus a few reads of its event notifiers.
    pub reads: u64,
}

impl Daemon {
    /// Reads the figures of `pid` now (zeros where `/proc` does not tell).
    pub fn now(pid: u32) -> Daemon {
        let cpu_ns = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |tasks| {
            tasks
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
                .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .sum()
        });
        let reads = std::fs::read_to_string(format!("/proc/{pid}/io"))
            .ok()
            .and_then(|io| io.lines().find_map(|l| l.strip_prefix("syscr:")?.trim().parse().ok()))
            .unwrap_or(0);
        Daemon { cpu_ns, reads }
    }

    /// What was used since `before`, per command of `commands`: (CPU microseconds, read calls).
    pub fn per_command_since(pid: u32, before: Daemon, commands: usize) -> (f64, f64) {
        let now = Daemon::now(pid);
        let n = commands as f64;
        ((now.cpu_ns - before.cpu_ns) as f64 / 1e3 / n, (now.reads - before.reads) as f64 / n)
    }
}

/// The machine's load average over the last minute and the share of CPU time stolen by the hypervisor since
/// `since` (a [`cpu_ticks`] reading), for the bench's output.
pub fn machine(since: Option<CpuTicks>) -> String {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    let steal = match (since, cpu_ticks()) {
        (Some(a), Some(b)) if b.total > a.total => {
            format!(", {:.1}% of CPU time stolen", (b.steal - a.steal) as f64 * 100.0 / (b.total - a.total) as f64)
        }
        _ => String::new(),
    };
    format!("load average {load}{steal}")
}

/// All CPUs' time so far, and the part of it stolen (from `/proc/stat`, in clock ticks).
#[derive(Debug, Clone, Copy)]
pub struct CpuTicks {
    total: u64,
    steal: u64,
}

/// Reads [`CpuTicks`] (`None` where `/proc/stat` is absent).
pub fn cpu_ticks() -> Option<CpuTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    Some(CpuTicks { total: fields.iter().take(8).sum(), steal: *fields.get(7)? })
}

#[cfg(test)]
mod tests {
    use super::{abba, Spread};

    #[test]
    fn quantiles_interpolate_and_ignore_order() {
        let mut s = Spread::default();
        for v in [5.0, 1.0, 3.0, 2.0, 4.0] {
            s.push(v);
        }
        assert_eq!(s.median(), 3.0);
        assert_eq!(s.quantile(0.25), 2.0);
        assert_eq!(s.quantile(0.0), 1.0);
        assert_eq!(s.quantile(1.0), 5.0);
        s.push(6.0);
        assert_eq!(s.median(), 3.5);
        assert_eq!(s.show(1), "3.5 (IQR 2.2-4.8, all 1.0-6.0)");
        // 6 rounds: k = floor((6 - 1.96 * 2.449) / 2) = 0, the extremes.
        assert_eq!(s.median_ci95(), (1.0, 6.0));
        assert_eq!(s.judge(0.5), "met");
        assert_eq!(s.judge(7.0), "NOT met");
        assert!(s.judge(3.0).starts_with("undecided"));
        assert_eq!(s.judge_at_most(7.0), "met");
        assert_eq!(s.judge_at_most(0.5), "NOT met");
        assert_eq!(s.judge_at_most(3.0), super::UNDECIDED);
    }

    #[test]
    fn the_confidence_interval_narrows_with_rounds() {
        let mut s = Spread::default();
        for v in 1..=61 {
            s.push(f64::from(v));
        }
        // k = floor((61 - 1.96 * 7.81) / 2) = 22: the 23rd and the 39th values.
        assert_eq!(s.median_ci95(), (23.0, 39.0));
    }

    #[test]
    fn abba_alternates() {
        assert_eq!(abba(0, 3).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(abba(1, 3).collect::<Vec<_>>(), [2, 1, 0]);
        assert_eq!(abba(2, 2).collect::<Vec<_>>(), [0, 1]);
    }
}
