//! Build script of `meshfast._core`.
//!
//! With the `cython` feature (on in every maturin build: pyproject.toml), each
//! `cython/NAME.pyx` of the repository is compiled into this extension: Cython
//! turns it into C (module `meshfast._NAME`), the `cc` crate compiles the C
//! against the target interpreter's headers, and `src/speedups.rs` calls its
//! init function from `_core`'s (cython/README.md). Without the feature it does
//! nothing, so plain `cargo` needs neither Cython nor Python headers.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "cython")]
    cython::build();
}

#[cfg(feature = "cython")]
mod cython {
    use std::env;
    use std::fmt::Write as _;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// Fails the build with a message that says what is missing and how to get it.
    /// A build without the compiled modules is never shipped silently.
    macro_rules! fail {
        ($($arg:tt)*) => {
            panic!("\n\nmeshfast (feature `cython`): {}\n\n", format!($($arg)*))
        };
    }

    pub fn build() {
        let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
        let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
        let dir = manifest.join("../../cython");
        println!("cargo:rerun-if-changed={}", dir.display());
        println!("cargo:rerun-if-env-changed=PYO3_PYTHON");

        // The interpreter maturin builds for; under pip's build isolation its
        // environment (PYTHONPATH) also holds the build requirements, Cython among them.
        let python = env::var("PYO3_PYTHON").unwrap_or_else(|_| "python3".to_owned());
        let probe = run_python(
            &python,
            "import sysconfig\n\
             p = sysconfig.get_paths()\n\
             print(p['include']); print(p['platinclude'])\n\
             try:\n    import Cython; print(Cython.__version__)\n\
             except ImportError:\n    print('')\n",
        );
        let mut lines = probe.lines();
        let include = PathBuf::from(lines.next().unwrap_or_default());
        let platinclude = PathBuf::from(lines.next().unwrap_or_default());
        let version = lines.next().unwrap_or_default().trim().to_owned();
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if major < 3 {
            let found = if version.is_empty() { "none" } else { &version };
            fail!(
                "Cython >= 3 is needed by {python} (found: {found}). `pip install .` \
                 installs it in the build environment ([build-system] requires); with \
                 --no-build-isolation, `pip install 'cython>=3'` first. Plain cargo \
                 builds leave the feature off and need no Cython."
            );
        }
        if !include.join("Python.h").is_file() {
            fail!(
                "no Python.h in {} (the headers of {python}): install them \
                 (Debian: apt-get install python3-dev)",
                include.display()
            );
        }

        let mut pyx: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| fail!("cannot read {}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pyx"))
            .collect();
        pyx.sort();

        let mut build = cc::Build::new();
        build
            .include(&include)
            .include(&platinclude)
            // Single-phase init: `PyInit_NAME` returns the module itself, which
            // speedups.rs registers (PEP 489's would return a module *definition*).
            .define("CYTHON_PEP489_MULTI_PHASE_INIT", "0")
            .warnings(false);
        let mut table = String::new();
        let mut decls = String::new();
        for path in &pyx {
            println!("cargo:rerun-if-changed={}", path.display());
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            if stem.is_empty() || !stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                fail!(
                    "{}: a module name must be a Python identifier",
                    path.display()
                );
            }
            let module = format!("meshfast._{stem}");
            let c = out.join(format!("{stem}.c"));
            cythonize(&python, path, &module, &c);
            build.file(&c);
            let _ = writeln!(
                decls,
                "    fn PyInit__{stem}() -> *mut pyo3::ffi::PyObject;"
            );
            let _ = writeln!(table, "    (\"{module}\", PyInit__{stem}),");
        }
        if !pyx.is_empty() {
            // cc exits the build script with its own terse message when the compiler is
            // missing: look for it first, to say what to install.
            let no_compiler = match build.try_get_compiler() {
                Err(e) => Some(e.to_string()),
                Ok(tool) => tool.to_command().output().err().map(|e| e.to_string()),
            };
            if let Some(e) = no_compiler {
                fail!("no C compiler (Debian: apt-get install gcc): {e}");
            }
            build.try_compile("meshfast_cython").unwrap_or_else(|e| {
                fail!("cannot compile the C that Cython generated (is a C compiler installed? Debian: apt-get install gcc): {e}")
            });
        }
        let generated = format!(
            "// Generated by rust/py/build.rs from cython/*.pyx.\n\
             extern \"C\" {{\n{decls}}}\n\
             /// (name in `sys.modules`, single-phase init function) of each compiled module.\n\
             const MODULES: &[(&str, unsafe extern \"C\" fn() -> *mut pyo3::ffi::PyObject)] = &[\n{table}];\n"
        );
        std::fs::write(out.join("cython_modules.rs"), generated)
            .unwrap_or_else(|e| fail!("cannot write to {}: {e}", out.display()));
    }

    fn run_python(python: &str, code: &str) -> String {
        let output = Command::new(python)
            .args(["-c", code])
            .output()
            .unwrap_or_else(|e| fail!("cannot run the Python interpreter {python}: {e}"));
        if !output.status.success() {
            fail!(
                "{python} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn cythonize(python: &str, pyx: &Path, module: &str, c: &Path) {
        let output = Command::new(python)
            .args(["-m", "cython", "-3", "--module-name", module, "-o"])
            .arg(c)
            .arg(pyx)
            .output()
            .unwrap_or_else(|e| fail!("cannot run {python} -m cython: {e}"));
        if !output.status.success() {
            fail!(
                "Cython failed on {}:\n{}{}",
                pyx.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}
