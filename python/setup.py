"""Builds the om-constants package from this repository: cargo builds the
library and the om-constants tool (the folder above this one holds their
sources), and both go into the package beside its Python module.

The wheel is tagged py3-none (a ctypes module: any Python 3) and, on Linux,
manylinux_2_<N>, where 2.<N> is the newest glibc symbol version the two
built files need, read from them; they may only need libraries every
manylinux system has.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MANIFEST = ROOT / "Cargo.toml"

# What a manylinux wheel may link against (PEP 600 and the manylinux
# policies): glibc's libraries and the GCC runtime.
MANYLINUX_LIBS = {
    "libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1",
    "libutil.so.1", "libresolv.so.2", "libgcc_s.so.1", "libstdc++.so.6",
}


def fail(message):
    raise SystemExit(f"om-constants: {message}")


def version():
    """The library's version, from its Cargo.toml."""
    if not MANIFEST.is_file():
        fail(
            f"{MANIFEST} is missing: this package is built from the om-constants "
            "repository (`pip install ./python` from its folder), not from a copy "
            "of python/ alone"
        )
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib
    with open(MANIFEST, "rb") as f:
        return tomllib.load(f)["package"]["version"]


def artefacts():
    """The file names cargo gives the library and the tool here."""
    if sys.platform == "win32":
        return "om_constants.dll", "om-constants.exe"
    if sys.platform == "darwin":
        return "libom_constants.dylib", "om-constants"
    return "libom_constants.so", "om-constants"


class BuildWithCargo(build_py):
    """build_py, then `cargo build --release` of the library and the tool,
    copied into the package: om_constants/<library>, om_constants/bin/<tool>."""

    def run(self):
        super().run()
        # Its own target folder by default: the README's `cargo build
        # --release` keeps target/release to itself.
        target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target" / "python")
        cmd = [
            os.environ.get("CARGO", "cargo"), "build", "--release", "--locked",
            "--manifest-path", str(MANIFEST), "-p", "om-constants", "-p", "om-constants-cli",
        ]
        try:
            subprocess.run(cmd, check=True, env=dict(os.environ, CARGO_TARGET_DIR=str(target)))
        except FileNotFoundError:
            fail(f"{cmd[0]} was not found: install Rust (https://rustup.rs) to build this package")
        except subprocess.CalledProcessError as e:
            fail(f"`{' '.join(cmd)}` failed (exit {e.returncode}); cargo's output is above")
        lib, tool = artefacts()
        package = Path(self.build_lib) / "om_constants"
        (package / "bin").mkdir(parents=True, exist_ok=True)
        shutil.copy2(target / "release" / lib, package / lib)
        shutil.copy2(target / "release" / tool, package / "bin" / tool)


def elf_needs(path):
    """(DT_NEEDED libraries, newest GLIBC_2.x minor) of an ELF file."""
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile
    from elftools.elf.gnuversions import GNUVerNeedSection

    needed, newest = set(), 0
    with open(path, "rb") as f:
        elf = ELFFile(f)
        for section in elf.iter_sections():
            if isinstance(section, DynamicSection):
                needed |= {t.needed for t in section.iter_tags() if t.entry.d_tag == "DT_NEEDED"}
            elif isinstance(section, GNUVerNeedSection):
                for _, auxes in section.iter_versions():
                    for aux in auxes:
                        name = aux.name
                        if name.startswith("GLIBC_2."):
                            newest = max(newest, int(name[len("GLIBC_2."):].split(".")[0]))
    return needed, newest


class Wheel(bdist_wheel):
    """py3-none, manylinux_2_<N> from the built files (see the module doc)."""

    def get_tag(self):
        _, _, plat = super().get_tag()
        if plat.startswith("linux_"):
            build_lib = Path(self.get_finalized_command("build_py").build_lib) / "om_constants"
            lib, tool = artefacts()
            newest = 0
            for path in (build_lib / lib, build_lib / "bin" / tool):
                needed, glibc = elf_needs(path)
                odd = {n for n in needed if n not in MANYLINUX_LIBS and not n.startswith("ld-linux")}
                if odd:
                    fail(f"{path} needs {', '.join(sorted(odd))}, which manylinux does not allow")
                newest = max(newest, glibc)
            plat = f"manylinux_2_{newest}_{plat[len('linux_'):]}"
        return "py3", "none", plat


class Binary(Distribution):
    """Not pure Python: the wheel carries a built library for one platform."""

    def has_ext_modules(self):
        return True


setup(
    version=version(),
    cmdclass={"build_py": BuildWithCargo, "bdist_wheel": Wheel},
    distclass=Binary,
)
