//! The per-task handle cap, answered as WASI answers: past its cap, a guest's `path_open` fails
//! with `ENFILE` ("too many files open in system": the guest's system is its task), as it would
//! on a host out of descriptors, instead of the trap wasmtime-wasi makes of a full resource table.
//!
//! The table itself is given room for a few more entries than the cap, so that calls which hold
//! a handle for a moment (`poll_oneoff`'s pollables, a stream for one read) still work for a guest
//! at its cap; only what would go past that room traps (TRAP, named as the handle limit).

use wasmtime::{AsContextMut, Caller, Extern, Linker};
use wasmtime_wasi::p1::wasi_snapshot_preview1 as p1;
use wasmtime_wasi::p1::wasi_snapshot_preview1::WasiSnapshotPreview1;

use super::TaskCtx;

/// Room in a task's resource table beyond its cap, for handles held during one call.
pub const HEADROOM: usize = 16;
/// WASI preview 1's `errno::nfile`.
const ENFILE: i32 = 41;

/// Replaces `path_open` in `linker` (which has WASI preview 1 already) with one that refuses to
/// open past the task's cap.
pub fn add_to_linker(linker: &mut Linker<TaskCtx>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap_async(
        "wasi_snapshot_preview1",
        "path_open",
        move |mut caller: Caller<'_, TaskCtx>,
              (dirfd, dirflags, path, path_len, oflags, base, inheriting, fdflags, fd): (
            i32,
            i32,
            i32,
            i32,
            i32,
            i64,
            i64,
            i32,
            i32,
        )| {
            Box::new(async move {
                let held = wasmtime_wasi::WasiView::ctx(&mut caller.data_mut().wasi).table.iter_mut().count();
                if held >= caller.data().max_handles {
                    return Ok(ENFILE);
                }
                let export = caller.get_export("memory");
                let fuel = caller.as_context_mut().hostcall_fuel();
                let Some(Extern::Memory(memory)) = &export else {
                    wasmtime::bail!("missing required memory export");
                };
                let (mem, ctx) = memory.data_and_store_mut(&mut caller);
                let wasi = &mut ctx.wasi;
                wasi.set_hostcall_fuel(fuel);
                let mut mem = wiggle::GuestMemory::Unshared(mem);
                p1::path_open(wasi, &mut mem, dirfd, dirflags, path, path_len, oflags, base, inheriting, fdflags, fd)
                    .await
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
