//! The Cython modules of `cython/` (see cython/README.md), linked into this extension.
//!
//! Why here: one install command must build everything, and maturin builds one
//! shared object. So build.rs compiles Cython's C into `_core` (feature
//! `cython`, which every maturin build turns on), and `_core`'s init calls each
//! module's init function and registers the module under its stable name
//! (`meshfast._headers` in `sys.modules`, also `_core._headers`): Python then
//! imports it like any other module once `_core` is loaded.

use pyo3::prelude::*;

// `MODULES`: (name, init function) of each `cython/*.pyx`, written by build.rs.
include!(concat!(env!("OUT_DIR"), "/cython_modules.rs"));

pub fn register(core: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = core.py();
    let sys_modules = py.import("sys")?.getattr("modules")?;
    for &(name, init) in MODULES {
        // SAFETY: `init` is a Cython `PyInit_*` compiled with
        // CYTHON_PEP489_MULTI_PHASE_INIT=0 (build.rs): a single-phase init that,
        // called with the GIL held (we hold `py`), returns a new reference to the
        // initialised module, or NULL with an exception set.
        let module = unsafe { Bound::from_owned_ptr_or_err(py, init()) }?;
        // Outside the import machinery the module is named by its last part only.
        module.setattr("__name__", name)?;
        sys_modules.set_item(name, &module)?;
        core.add(name.rsplit('.').next().unwrap_or(name), module)?;
    }
    Ok(())
}
