//! `bellows image build`: the in-memory OS machines network-boot to run
//! the worker, built from this machine's kernel, busybox and this very
//! binary into the server's `DATA_DIR/osie` (see `bellows_osie`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

use crate::error::CliError;
use crate::output::Format;
use crate::output::structured;

/// `bellows image …`
#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    /// Build the in-memory OS (vmlinuz + initramfs) that machines with a
    /// workflow boot: Debian's kernel and the modules for common NICs,
    /// disks and file systems, busybox, and this bellows binary running
    /// `bellows worker`. Writes DATA_DIR/osie, where the server serves it.
    Build(Box<BuildArgs>),
}

/// `bellows image build` flags.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Kernel image [default: the newest /boot/vmlinuz-*].
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Module directory [default: /lib/modules/RELEASE of the kernel].
    #[arg(long, value_name = "DIR")]
    pub modules: Option<PathBuf>,
    /// busybox binary (Debian's busybox-static).
    #[arg(long, value_name = "PATH", default_value = "/bin/busybox")]
    pub busybox: PathBuf,
    /// bellows binary to run as the worker [default: `bellows-worker` next
    /// to this program (the worker alone, smaller), else this program].
    #[arg(long, value_name = "PATH")]
    pub bellows: Option<PathBuf>,
    /// Write vmlinuz and initramfs here [default: DATA_DIR/osie].
    #[arg(long, value_name = "DIR", conflicts_with = "data_dir")]
    pub output_dir: Option<PathBuf>,
    /// The server's data directory; the image goes to DATA_DIR/osie, which
    /// `bellows server` serves by default.
    #[arg(
        long,
        value_name = "DIR",
        env = "BELLOWS_DATA_DIR",
        default_value = "./bellows-data"
    )]
    pub data_dir: PathBuf,
    /// Another kernel module to include (with its dependencies); repeat or
    /// separate with commas.
    #[arg(long = "extra-module", value_name = "NAME", value_delimiter = ',')]
    pub extra_modules: Vec<String>,
    /// Where firmware named by the modules is found; copied if present.
    #[arg(long, value_name = "DIR", default_value = "/lib/firmware")]
    pub firmware_dir: PathBuf,
    /// gzip level of the initramfs (1 fastest … 9 smallest).
    #[arg(long, value_name = "N", default_value_t = bellows_osie::build::DEFAULT_GZIP_LEVEL,
          value_parser = clap::value_parser!(u32).range(0..=9))]
    pub gzip_level: u32,
    /// Keep the bellows binary's symbols and debug sections (larger image).
    #[arg(long)]
    pub no_strip: bool,
    /// The OCI runtime for container actions (Debian's crun); left out,
    /// with a note, when the file is missing.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/usr/bin/crun",
        conflicts_with = "no_crun"
    )]
    pub crun: PathBuf,
    /// Build without a container runtime: built-in actions only.
    #[arg(long)]
    pub no_crun: bool,
}

/// Dispatches `bellows image …`.
pub fn run(format: Format, cmd: ImageCmd) -> Result<ExitCode, CliError> {
    match cmd {
        ImageCmd::Build(args) => build(format, *args),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

/// The worker-only build installed beside this program, or this program.
fn worker_binary() -> Result<PathBuf, CliError> {
    let me = std::env::current_exe().map_err(|e| {
        CliError::Usage(format!(
            "cannot find this program's path ({e}); give --bellows PATH"
        ))
    })?;
    let worker_only = me.with_file_name("bellows-worker");
    Ok(if worker_only.is_file() {
        worker_only
    } else {
        me
    })
}

fn build(format: Format, args: BuildArgs) -> Result<ExitCode, CliError> {
    let bellows = match args.bellows {
        Some(p) => p,
        None => worker_binary()?,
    };
    let output = match args.output_dir {
        Some(dir) => dir,
        None => {
            // The server's data directory: created private, as the server
            // would (it holds the database and the secret key).
            bellows_store::files::private_dir(&args.data_dir)
                .map_err(|e| CliError::Server(format!("data directory: {e}")))?;
            args.data_dir.join("osie")
        }
    };
    let mut opts = bellows_osie::BuildOptions::debian(bellows.clone(), output);
    opts.kernel = args.kernel;
    opts.modules_dir = args.modules;
    opts.busybox = args.busybox;
    opts.extra_modules = args.extra_modules;
    opts.firmware_dir = Some(args.firmware_dir);
    opts.gzip_level = args.gzip_level;
    opts.strip = !args.no_strip;
    opts.crun = (!args.no_crun).then_some(args.crun);
    // Reproducible builds: the same inputs give the same bytes.
    opts.mtime = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let r = bellows_osie::build(&opts).map_err(|e| CliError::Usage(e.to_string()))?;
    let v = json!({
        "kernel": r.kernel, "kernel_release": r.kernel_release, "modules_dir": r.modules_dir,
        "vmlinuz": r.vmlinuz, "initramfs": r.initramfs,
        "kernel_bytes": r.kernel_bytes, "initramfs_bytes": r.initramfs_bytes,
        "cpio_bytes": r.cpio_bytes, "entries": r.entries,
        "modules": r.modules, "eager_modules": r.eager_modules, "builtin": r.builtin,
        "unavailable": r.unavailable, "firmware": r.firmware, "libraries": r.libraries,
        "applets": r.applets, "bellows": bellows, "bellows_bytes": r.bellows_bytes,
        "stripped": r.strip.is_ok(), "ca_certificates": r.ca_certificates,
        "crun": r.crun.as_ref().map(|(path, bytes)| json!({"path": path, "bytes": bytes})),
        "seconds": r.elapsed.as_secs_f64(),
    });
    if structured(format, &v)? {
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "in-memory OS for kernel {} in {} ({:.1} s)",
        r.kernel_release,
        r.vmlinuz.parent().unwrap_or(&r.vmlinuz).display(),
        r.elapsed.as_secs_f64()
    );
    println!(
        "  vmlinuz    {}  from {}",
        mib(r.kernel_bytes),
        r.kernel.display()
    );
    println!(
        "  initramfs  {}  (gzip -{} of {} of cpio, {} entries)",
        mib(r.initramfs_bytes),
        opts.gzip_level,
        mib(r.cpio_bytes),
        r.entries
    );
    println!(
        "  modules    {} from {} ({} loaded at every boot, the rest for their hardware)",
        r.modules.len(),
        r.modules_dir.display(),
        r.eager_modules.len()
    );
    if !r.builtin.is_empty() {
        println!(
            "             built into the kernel: {}",
            r.builtin.join(", ")
        );
    }
    if !r.unavailable.is_empty() {
        println!(
            "             not in this kernel (left out): {}",
            r.unavailable.join(", ")
        );
    }
    if !r.firmware.is_empty() {
        println!("  firmware   {} files", r.firmware.len());
    }
    println!(
        "  bellows    {}{} from {}, with {} loader/library files; busybox with {} applets{}",
        mib(r.bellows_bytes),
        match &r.strip {
            Ok(()) => " (stripped)".to_string(),
            Err(why) if why == "not asked" => String::new(),
            Err(why) => format!(" (not stripped: {why})"),
        },
        bellows.display(),
        r.libraries.len(),
        r.applets,
        if r.ca_certificates {
            "; CA certificates"
        } else {
            ""
        }
    );
    match &r.crun {
        Some((path, bytes)) => println!(
            "  crun       {} from {}: container actions run on images the worker pulls",
            mib(*bytes),
            path.display()
        ),
        None if args.no_crun => {
            println!("  crun       left out (--no-crun): built-in actions only")
        }
        None => println!(
            "  crun       not found: built-in actions only (apt-get install crun, or give --crun)"
        ),
    }
    Ok(ExitCode::SUCCESS)
}
