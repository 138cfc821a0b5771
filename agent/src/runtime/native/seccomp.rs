//! The seccomp profile of native tasks, in the spirit of Docker's default: the calls a task has
//! no business making (mounts, namespaces, tracing, kernel keys, BPF, modules, clocks, reboot,
//! io_uring, ...) fail with `EPERM`; everything else is allowed. Built once per agent with
//! `seccompiler` and installed by the task's child just before exec ([`crate::sys`]).

use std::collections::BTreeMap;

use nix::libc;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};

/// Calls denied outright.
const DENIED: &[i64] = &[
    // Mounts, the new mount API, root changes.
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    // New namespaces (for `clone`, see `clone_rules`), joining others.
    libc::SYS_unshare,
    libc::SYS_setns,
    // Other processes' memory and execution.
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kcmp,
    libc::SYS_pidfd_getfd,
    // Kernel keys, BPF, perf, userfaultfd, io_uring.
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    // Kernel modules, kexec, reboot, swap, accounting, quotas, the kernel log.
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_vhangup,
    // Clocks.
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_settimeofday,
    libc::SYS_adjtimex,
    // File handles (they bypass path checks), NUMA policy.
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_move_pages,
    libc::SYS_mbind,
    libc::SYS_set_mempolicy,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_uselib,
    #[cfg(target_arch = "x86_64")]
    libc::SYS__sysctl,
];

/// `clone` with any namespace flag (its flags are the first argument on x86_64 and aarch64).
fn clone_rules() -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWCGROUP,
    ]
    .into_iter()
    .map(|flag| {
        let flag = flag as u64;
        SeccompRule::new(vec![SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(flag), flag)?])
    })
    .collect()
}

/// The profile's filters, in the order they are installed.
pub fn profile() -> Result<Vec<BpfProgram>, String> {
    let build = || -> Result<Vec<BpfProgram>, seccompiler::Error> {
        let arch = std::env::consts::ARCH.try_into()?;
        let mut denied: BTreeMap<i64, Vec<SeccompRule>> = DENIED.iter().map(|&nr| (nr, Vec::new())).collect();
        denied.insert(libc::SYS_clone, clone_rules()?);
        let eperm = SeccompFilter::new(denied, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), arch)?;
        // `clone3` passes its flags in memory, where no filter can read them: it is "not
        // implemented", and the C library falls back to `clone`, filtered above.
        let clone3 = [(libc::SYS_clone3, Vec::new())].into_iter().collect();
        let enosys = SeccompFilter::new(clone3, SeccompAction::Allow, SeccompAction::Errno(libc::ENOSYS as u32), arch)?;
        Ok(vec![eperm.try_into()?, enosys.try_into()?])
    };
    build().map_err(|e| format!("cannot build the seccomp profile: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_profile_builds() {
        let filters = super::profile().unwrap();
        assert_eq!(filters.len(), 2);
        assert!(filters.iter().all(|f| !f.is_empty()));
    }
}
