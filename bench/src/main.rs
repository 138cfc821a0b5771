//! `skiff-bench`: runs the end-to-end benchmarks and writes the report (see the library's docs).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use skiff_bench::fleet::{Cluster, Security, etcd::Etcd, secure_etcd};
use skiff_bench::path::{self, Program};
use skiff_bench::report::{Report, Row};
use skiff_bench::stats::{Summary, mib};
use skiff_bench::{allocator, density, failover, longevity, peers};

#[derive(Debug, Parser)]
#[command(about = "Skiff's end-to-end benchmarks beside their peers; writes report.md and PNG plots")]
struct Args {
    /// Where the report and the plots go.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Trivial tasks timed one after another on each path (latency).
    #[arg(long, default_value_t = 1000)]
    tasks: usize,
    /// Instances of the throughput job on the Skiff paths (peers run `--tasks` jobs).
    #[arg(long, default_value_t = 10_000)]
    throughput_tasks: u32,
    /// Numbers of idle Wasm tasks the agent's memory is measured with.
    #[arg(long, value_delimiter = ',', default_value = "0,1000,10000")]
    density: Vec<u32>,
    /// Leader kills of the failover benchmark (0: skip it).
    #[arg(long, default_value_t = 5)]
    kills: usize,
    /// Parts to leave out: embedded, etcd, tls, native, peers, density, failover, allocator.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// A Markdown file (README.md) whose section between `<!-- skiff-bench:begin -->` and
    /// `<!-- skiff-bench:end -->` is replaced with the report and the latency plot.
    #[arg(long)]
    readme: Option<PathBuf>,
    /// Run only the longevity benchmark with this many tasks (through 3 coordinators on etcd,
    /// garbage collection on), writing `longevity.md` in `--out` (0: the usual benchmarks).
    #[arg(long, default_value_t = 0)]
    longevity_tasks: u64,
    /// Instances per job of the longevity benchmark.
    #[arg(long, default_value_t = 10_000)]
    longevity_job: u32,
    /// Live (pending) tasks in the registry when the longevity benchmark kills the leader.
    #[arg(long, default_value_t = 100_000)]
    longevity_live: u32,
    /// The TrueType font of the plots.
    #[arg(long, default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")]
    font: PathBuf,
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .map_or("?".into(), |kib| format!("{:.0} GiB", kib as f64 / (1 << 20) as f64));
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).and_then(|l| Some(l.split_once(':')?.1.trim().to_owned()))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|o| o.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_owned())))
        .unwrap_or_else(|| "Linux".into());
    let kernel = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{date}, {os} (kernel {kernel}), {cpus} × {model}, {mem}")
}

/// The agents of the path benchmarks: two, each offering its host's CPUs.
const AGENTS: usize = 2;

/// Latency and throughput of `program` through the fleet at `addr`.
fn measure_path(
    rt: &tokio::runtime::Runtime,
    name: &str,
    how: String,
    fleet: &Cluster,
    program: &Program,
    tasks: usize,
    throughput_tasks: u32,
) -> Result<Row> {
    let addr = fleet.addr.as_str();
    eprintln!("{name}: {tasks} tasks one after another ...");
    let times = rt.block_on(path::latency(addr, program, 20, tasks)).with_context(|| format!("{name}: latency"))?;
    eprintln!("{name}: a job of {throughput_tasks} instances ...");
    let cpu = |pids: &[u32]| pids.iter().map(|&p| path::cpu_time(p)).sum::<Duration>();
    let coordinator = [fleet.coordinator.child.id()];
    let agents = agent_pids(fleet);
    let before = (cpu(&coordinator), cpu(&agents));
    let secs = rt
        .block_on(path::throughput(addr, program, throughput_tasks, Duration::from_secs(300)))
        .with_context(|| format!("{name}: throughput"))?;
    let per_task = |now: Duration, then: Duration| now.saturating_sub(then) / throughput_tasks.max(1);
    let cpu_per_task = Some((per_task(cpu(&coordinator), before.0), per_task(cpu(&agents), before.1)));
    let row = Row {
        name: name.into(),
        how,
        to_running: Some(Summary::new(times.iter().map(|t| t.to_running).collect())),
        to_finished: Summary::new(times.iter().map(|t| t.to_finished).collect()),
        throughput: Some((throughput_tasks as usize, secs)),
        cpu_per_task,
    };
    eprintln!(
        "{name}: finished p50 {:?} p99 {:?}, {:.0} tasks/s",
        row.to_finished.p50(),
        row.to_finished.p99(),
        row.per_sec().unwrap_or(0.0)
    );
    Ok(row)
}

/// Every agent process of `fleet` and the executor process each runs its tasks in (named in its
/// work directory's `executor.pid`: boot id, pid, start time).
fn agent_pids(fleet: &Cluster) -> Vec<u32> {
    let executors = fleet.work_dirs.iter().filter_map(|d| {
        let line = std::fs::read_to_string(d.path().join("executor.pid")).ok()?;
        line.split_whitespace().nth(1)?.parse().ok()
    });
    fleet.agents.iter().map(|a| a.child.id()).chain(executors).collect()
}

fn peer_row(result: peers::PeerResult) -> Row {
    Row {
        name: result.name.into(),
        how: result.how,
        to_running: None,
        to_finished: Summary::new(result.latency),
        throughput: Some((result.throughput_n, result.throughput_secs)),
        cpu_per_task: None,
    }
}

/// Replaces what is between the skiff-bench markers of a Markdown file.
fn replace_section(path: &std::path::Path, section: &str) -> Result<()> {
    const BEGIN: &str = "<!-- skiff-bench:begin -->";
    const END: &str = "<!-- skiff-bench:end -->";
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let (Some(begin), Some(end)) = (text.find(BEGIN), text.find(END)) else {
        anyhow::bail!("{} has no `{BEGIN}` … `{END}` section to put the report in", path.display());
    };
    anyhow::ensure!(begin < end, "{}: `{END}` comes before `{BEGIN}`", path.display());
    let updated = format!("{}{BEGIN}\n{section}{}", &text[..begin], &text[end..]);
    std::fs::write(path, updated).with_context(|| format!("write {}", path.display()))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let rt = tokio::runtime::Runtime::new()?;
    let trivial = wat::parse_str(path::TRIVIAL_WAT)?;
    if args.longevity_tasks > 0 {
        eprintln!(
            "longevity: {} tasks, then a takeover with {} live tasks ...",
            args.longevity_tasks, args.longevity_live
        );
        let figures = longevity::run(args.longevity_tasks, args.longevity_job, args.longevity_live, &trivial)?;
        let text = format!("{}\n\n{}", machine(), longevity::markdown(&figures));
        std::fs::create_dir_all(&args.out)?;
        std::fs::write(args.out.join("longevity.md"), &text)?;
        println!("{text}");
        return Ok(());
    }
    let is_root = nix::unistd::Uid::effective().is_root();
    let mut report =
        Report { machine: machine(), command: std::env::args().collect::<Vec<_>>().join(" "), ..Report::default() };
    let agent_args: [&[&str]; AGENTS] = [&[], &[]];
    let run = |part: &str| !args.skip.iter().any(|s| s == part);
    // The trivial Wasm task on one fleet: `--tasks` for latency, `--throughput-tasks` in one job.
    let measure_wasm = |name: &str, how: String, fleet: &Cluster, wasm: &Program| {
        measure_path(&rt, name, how, fleet, wasm, args.tasks, args.throughput_tasks)
    };

    // Skiff, embedded registry.
    if run("embedded") {
        let fleet = Cluster::start_secured(Security::Plaintext, &[], &agent_args);
        let wasm = rt.block_on(path::upload(&fleet.addr, &trivial))?;
        let how = format!(
            "1 coordinator (embedded registry), {AGENTS} agents, plaintext; `SubmitTask` then `WatchTask` until FINISHED; throughput: one job of N instances"
        );
        report.rows.push(measure_wasm("Skiff Wasm (embedded)", how, &fleet, &wasm)?);
    }
    // Skiff on etcd: Wasm, then native tasks on the same fleet.
    if run("etcd") || run("native") {
        let etcd = Etcd::start(1);
        let fleet = Cluster::start_secured(Security::Plaintext, &["--etcd", &etcd.urls()], &agent_args);
        let wasm = rt.block_on(path::upload(&fleet.addr, &trivial))?;
        let how = format!(
            "1 coordinator on a 1-member etcd (every state change a fenced txn), {AGENTS} agents, plaintext; as above"
        );
        if run("etcd") {
            report.baseline = Some(report.rows.len());
            report.rows.push(measure_wasm("Skiff Wasm (etcd)", how, &fleet, &wasm)?);
        }
        if run("native") && is_root {
            let native = Program::Native { command: "/bin/true".into() };
            let how = "`/bin/true` as a native task (own cgroup, 0.1 CPU, run as nobody) on the etcd fleet; throughput job of `--tasks` instances".to_owned();
            report.rows.push(measure_path(
                &rt,
                "Skiff native (etcd)",
                how,
                &fleet,
                &native,
                args.tasks,
                args.tasks as u32,
            )?);
        } else if run("native") {
            report
                .skipped
                .push(("Skiff native".into(), "needs root (native tasks run in cgroups as another user)".into()));
        }
    }
    // The same on TLS everywhere: CLI, agents and etcd (`--client-cert-auth`) with client
    // certificates, and an ACL token checked on every call.
    if run("tls") {
        let etcd = secure_etcd(1);
        let fleet = Cluster::start(&["--etcd", &etcd.urls()], &agent_args);
        let wasm = rt.block_on(path::upload(&fleet.addr, &trivial))?;
        let how = "as Skiff Wasm (etcd), with mTLS on every hop (client, agents, etcd with client-cert auth) and an ACL token on every call".to_owned();
        report.rows.push(measure_wasm("Skiff Wasm (etcd, TLS + ACLs)", how, &fleet, &wasm)?);
    }
    if run("peers") {
        let dir = tempfile::tempdir()?;
        eprintln!("peers: fork+exec, runc, Slurm ({} jobs each) ...", args.tasks);
        for name in ["fork+exec", "runc", "slurm"] {
            let result = match name {
                "fork+exec" => peers::fork_exec(args.tasks),
                "runc" => peers::runc(&dir.path().join("runc"), args.tasks),
                _ => peers::slurm(&dir.path().join("slurm"), args.tasks),
            };
            match result {
                Ok(result) => report.rows.push(peer_row(result)),
                Err(err) => {
                    eprintln!("{name}: not measured: {err:#}");
                    report.skipped.push((name.into(), format!("{err:#}")));
                }
            }
        }
    }
    if run("density") && !args.density.is_empty() {
        eprintln!("density: {:?} idle Wasm tasks ...", args.density);
        let most = args.density.iter().copied().max().unwrap_or(0).max(1);
        let slots = most.to_string();
        let cpus = format!("{}", (most as f64 * 0.01).max(2.0).ceil());
        let mem = format!("{}", most as u64 + 1024);
        let fleet = Cluster::start(&[], &[&["--wasm-slots", &slots, "--cpus", &cpus, "--mem-mib", &mem]]);
        let pids = agent_pids(&fleet);
        let result = rt.block_on(async {
            let idle = path::upload(&fleet.addr, &wat::parse_str(density::IDLE_WAT)?).await?;
            let mut points = Vec::new();
            for &n in &args.density {
                let point = if n == 0 {
                    let pids = pids.clone();
                    density::Point {
                        tasks: 0,
                        memory: tokio::task::spawn_blocking(move || density::settled(pids)).await??,
                    }
                } else {
                    density::with_idle_tasks(&fleet.addr, pids.clone(), &idle, n).await?
                };
                eprintln!(
                    "density: {n} idle tasks: agent RSS {:.1} MiB, PSS {:.1} MiB",
                    mib(point.memory.rss_bytes),
                    mib(point.memory.pss_bytes)
                );
                points.push(point);
            }
            anyhow::Ok(points)
        });
        match result {
            Ok(points) => report.density = points,
            Err(err) => report.density_error = Some(format!("{err:#}")),
        }
    }
    if run("failover") && args.kills > 0 {
        eprintln!("failover: {} leader kills ...", args.kills);
        let dir = tempfile::tempdir()?;
        let module = dir.path().join("trivial.wasm");
        std::fs::write(&module, &trivial)?;
        report.failover = Some(failover::run(args.kills, &module.display().to_string())?);
    }
    if run("allocator") {
        eprintln!("allocator ...");
        report.allocator = Some(allocator::run());
    }
    report.took = started.elapsed();
    report.write(&args.out, &args.font)?;
    println!("{}", report.markdown());
    if let Some(readme) = &args.readme {
        let section = format!(
            "{}\n![Submit → finished latency CDF of every path]({}/latency.png)\n",
            report.markdown(),
            args.out.display()
        );
        replace_section(readme, &section)?;
        eprintln!("updated the benchmark section of {}", readme.display());
    }
    eprintln!("wrote {}/report.md, latency.png, throughput.png", args.out.display());
    Ok(())
}
