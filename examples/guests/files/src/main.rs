//! Works on files given with `skiff run --file/--dir` and leaves outputs for `--output`.
//! Commands (one per argument group): `upper IN OUT` writes IN upper-cased to OUT; `ls DIR` lists a
//! tree; `read PATH` and `write PATH` report `ok` or `denied`; `hoard PATH` opens PATH again and
//! again, keeping every handle, until it is refused, and says how many it got; `fill PATH` writes
//! PATH a MiB at a time until a write fails, says how far it got and exits 1.
use std::fs;
use std::path::Path;

use skiff_guest as task;

fn list(dir: &Path, prefix: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = format!("{}{}", prefix, entry.file_name().to_string_lossy());
        if entry.file_type()?.is_dir() {
            list(&entry.path(), &format!("{}/", name), out)?;
        } else {
            out.push(name);
        }
    }
    Ok(())
}

fn main() {
    let args = task::args();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "upper" if i + 2 < args.len() => {
                match fs::read(&args[i + 1]).and_then(|b| fs::write(&args[i + 2], b.to_ascii_uppercase())) {
                    Ok(()) => task::output_line(&format!("upper {} -> {}: ok", args[i + 1], args[i + 2])),
                    Err(e) => task::output_line(&format!("upper {}: denied ({})", args[i + 1], e)),
                }
                i += 3;
            }
            "ls" if i + 1 < args.len() => {
                let mut names = Vec::new();
                match list(Path::new(&args[i + 1]), "", &mut names) {
                    Ok(()) => {
                        names.sort();
                        task::output_line(&format!("ls {}: {}", args[i + 1], names.join(",")));
                    }
                    Err(e) => task::output_line(&format!("ls {}: denied ({})", args[i + 1], e)),
                }
                i += 2;
            }
            "read" if i + 1 < args.len() => {
                match fs::read(&args[i + 1]) {
                    Ok(b) => task::output_line(&format!("read {}: ok ({} bytes)", args[i + 1], b.len())),
                    Err(e) => task::output_line(&format!("read {}: denied ({})", args[i + 1], e)),
                }
                i += 2;
            }
            "write" if i + 1 < args.len() => {
                match fs::write(&args[i + 1], b"overwritten\n") {
                    Ok(()) => task::output_line(&format!("write {}: ok", args[i + 1])),
                    Err(e) => task::output_line(&format!("write {}: denied ({})", args[i + 1], e)),
                }
                i += 2;
            }
            "hoard" if i + 1 < args.len() => {
                let mut kept = Vec::new();
                let why = loop {
                    match fs::File::open(&args[i + 1]) {
                        Ok(f) if kept.len() < 1_000_000 => kept.push(f),
                        Ok(_) => break "a million handles".to_string(),
                        Err(e) => break e.to_string(),
                    }
                };
                task::output_line(&format!("hoard {}: {} handles, then {}", args[i + 1], kept.len(), why));
                i += 2;
            }
            "fill" if i + 1 < args.len() => {
                use std::io::Write;
                let chunk = vec![0x5a_u8; 1 << 20];
                let mut written = 0;
                let why = match fs::File::create(&args[i + 1]) {
                    Ok(mut f) => loop {
                        match f.write_all(&chunk) {
                            Ok(()) if written < 1 << 20 => written += 1,
                            Ok(()) => break "a TiB".to_string(),
                            Err(e) => break e.to_string(),
                        }
                    },
                    Err(e) => e.to_string(),
                };
                task::output_line(&format!("fill {}: {} MiB, then {}", args[i + 1], written, why));
                task::exit(1);
            }
            other => {
                task::error(&format!("unknown command {}", other));
                task::exit(2);
            }
        }
    }
}
