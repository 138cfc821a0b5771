//! Resource lists given on command lines (`cpus:2,mem:4G`); sizes, durations, CPU counts and
//! `KEY=VALUE` are [`skiff_core::units`].

pub use skiff_core::units::*;

/// Parses a resource list such as `cpus:2,mem:4G,disk:10G,wasm_slots:100` (any subset).
pub fn parse_resources(text: &str) -> Result<crate::resources::Resources, String> {
    let mut r = crate::resources::Resources::default();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part
            .split_once(':')
            .ok_or_else(|| format!("invalid resources {text:?}: expected NAME:VALUE, got {part:?}"))?;
        match name {
            "cpus" => r.millicpus = (parse_cpus(value)? * 1000.0).round() as u64,
            "mem" => r.mem_bytes = parse_size(value)?,
            "disk" => r.disk_bytes = parse_size(value)?,
            "wasm_slots" => {
                r.wasm_slots = value.parse().map_err(|_| format!("invalid wasm_slots {value:?}: expected a count"))?;
            }
            other => {
                return Err(format!(
                    "invalid resources {text:?}: unknown resource {other:?} (cpus, mem, disk, wasm_slots)"
                ));
            }
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_lists() {
        let r = parse_resources("cpus:2.5,mem:4G,wasm_slots:10").unwrap();
        assert_eq!((r.millicpus, r.mem_bytes, r.disk_bytes, r.wasm_slots), (2500, 4 << 30, 0, 10));
        for (bad, why) in [("cpus=2", "NAME:VALUE"), ("gpus:1", "unknown resource"), ("mem:lots", "invalid size")] {
            let err = parse_resources(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
