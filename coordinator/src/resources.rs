//! Scalar resources with exact arithmetic: CPUs are kept in milli-cores so that offers and
//! reservations add up without floating-point drift.

use skiff_proto as pb;

/// Resources of an agent, an offer or a task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// Thousandths of a CPU core.
    pub millicpus: u64,
    pub mem_bytes: u64,
    pub disk_bytes: u64,
    pub wasm_slots: u32,
}

impl Resources {
    /// True when `self` can hold `other`.
    pub fn contains(&self, other: &Resources) -> bool {
        self.millicpus >= other.millicpus
            && self.mem_bytes >= other.mem_bytes
            && self.disk_bytes >= other.disk_bytes
            && self.wasm_slots >= other.wasm_slots
    }

    /// `self - other`, or `None` if `other` does not fit.
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        Some(Resources {
            millicpus: self.millicpus.checked_sub(other.millicpus)?,
            mem_bytes: self.mem_bytes.checked_sub(other.mem_bytes)?,
            disk_bytes: self.disk_bytes.checked_sub(other.disk_bytes)?,
            wasm_slots: self.wasm_slots.checked_sub(other.wasm_slots)?,
        })
    }

    /// `self - other`, clamped at zero (used when releasing what was reserved).
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            millicpus: self.millicpus.saturating_sub(other.millicpus),
            mem_bytes: self.mem_bytes.saturating_sub(other.mem_bytes),
            disk_bytes: self.disk_bytes.saturating_sub(other.disk_bytes),
            wasm_slots: self.wasm_slots.saturating_sub(other.wasm_slots),
        }
    }

    pub fn saturating_add(&self, other: &Resources) -> Resources {
        Resources {
            millicpus: self.millicpus.saturating_add(other.millicpus),
            mem_bytes: self.mem_bytes.saturating_add(other.mem_bytes),
            disk_bytes: self.disk_bytes.saturating_add(other.disk_bytes),
            wasm_slots: self.wasm_slots.saturating_add(other.wasm_slots),
        }
    }

    /// Component-wise minimum (used to cap an offer at what a quota limit leaves).
    pub fn min(&self, other: &Resources) -> Resources {
        Resources {
            millicpus: self.millicpus.min(other.millicpus),
            mem_bytes: self.mem_bytes.min(other.mem_bytes),
            disk_bytes: self.disk_bytes.min(other.disk_bytes),
            wasm_slots: self.wasm_slots.min(other.wasm_slots),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.millicpus == 0 && self.mem_bytes == 0 && self.wasm_slots == 0
    }
}

impl std::fmt::Display for Resources {
    /// `cpus=0.25 mem=64MiB` (disk and wasm slots only when set).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cpus={} mem={}MiB", self.millicpus as f64 / 1000.0, self.mem_bytes as f64 / (1u64 << 20) as f64)?;
        if self.disk_bytes > 0 {
            write!(f, " disk={}MiB", self.disk_bytes >> 20)?;
        }
        if self.wasm_slots > 0 {
            write!(f, " wasm_slots={}", self.wasm_slots)?;
        }
        Ok(())
    }
}

impl From<&pb::Resources> for Resources {
    fn from(r: &pb::Resources) -> Self {
        let cpus = if r.cpus.is_finite() && r.cpus > 0.0 { r.cpus } else { 0.0 };
        Resources {
            millicpus: (cpus * 1000.0).round() as u64,
            mem_bytes: r.mem_bytes,
            disk_bytes: r.disk_bytes,
            wasm_slots: r.wasm_slots,
        }
    }
}

impl From<Resources> for pb::Resources {
    fn from(r: Resources) -> Self {
        pb::Resources {
            cpus: r.millicpus as f64 / 1000.0,
            mem_bytes: r.mem_bytes,
            disk_bytes: r.disk_bytes,
            wasm_slots: r.wasm_slots,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(millicpus: u64, mem_bytes: u64, wasm_slots: u32) -> Resources {
        Resources { millicpus, mem_bytes, disk_bytes: 0, wasm_slots }
    }

    #[test]
    fn arithmetic() {
        let cases = [
            // (have, want, fits, remainder)
            (r(1000, 100, 1), r(250, 50, 1), true, Some(r(750, 50, 0))),
            (r(1000, 100, 1), r(1000, 100, 1), true, Some(r(0, 0, 0))),
            (r(1000, 100, 1), r(1001, 1, 0), false, None),
            (r(1000, 100, 1), r(1, 101, 0), false, None),
            (r(1000, 100, 0), r(1, 1, 1), false, None),
        ];
        for (have, want, fits, rest) in cases {
            assert_eq!(have.contains(&want), fits, "{have:?} contains {want:?}");
            assert_eq!(have.checked_sub(&want), rest, "{have:?} - {want:?}");
        }
    }

    #[test]
    fn fractional_cpus_are_exact() {
        let quarter = Resources::from(&pb::Resources { cpus: 0.25, ..Default::default() });
        let mut total = Resources { millicpus: 1000, ..Default::default() };
        for _ in 0..4 {
            total = total.checked_sub(&quarter).expect("four quarters fit in one core");
        }
        assert_eq!(total.millicpus, 0);
        assert_eq!(Resources::from(&pb::Resources { cpus: f64::NAN, ..Default::default() }).millicpus, 0);
        assert_eq!(pb::Resources::from(quarter).cpus, 0.25);
    }
}
