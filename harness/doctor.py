"""``harness doctor``: checks that this machine can build, boot and test, and installs what is missing."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness import cache, proc
from harness.errors import ToolMissing

# Each check names what is missing and the exact command that installs it;
# with --install (as root) the missing Debian packages are installed.  Nothing
# that may be missing is run before it is installed: gcc is asked for its
# version only when it is there, otherwise apt says which gcc it would install
# (`apt-cache depends gcc`), and the multilib package is the one of that gcc.

#: stands for gcc-N-multilib, N the major version of the gcc installed (or that apt installs);
#: plain gcc-multilib conflicts with the i686 cross compiler the guest image needs
MULTILIB = "gcc-N-multilib"
#: Debian packages for the whole harness (kernel build, guest image, VM), MULTILIB included.
BASE_PACKAGES = (
    "make", "gcc", MULTILIB, "bc", "patch", "bzip2", "xz-utils", "cpio", "git",
    "qemu-system-x86", "openssh-client", "linux-libc-dev",
    "chromium",  # renders the HTML report in the report test
)
#: i386 packages (need ``dpkg --add-architecture i386`` first).
I386_PACKAGES = ("musl-dev:i386", "gcc-i686-linux-gnu", "binutils-i686-linux-gnu")
MIN_FREE_GB = 4.0

_DEPENDS_GCC = re.compile(r"^\s*\|?Depends:\s*<?gcc-(\d+)>?\s*$", re.M)


def gcc_major_from_depends(text: str) -> str | None:
    """N of the ``gcc-N`` that ``apt-cache depends gcc`` lists: the gcc apt installs as ``gcc``."""
    majors = _DEPENDS_GCC.findall(text)
    return max(majors, key=int) if majors else None


def installed_gcc_major() -> str | None:
    """The major version of the installed gcc; None (without running anything) when there is none."""
    if proc.which("gcc") is None:
        return None
    result = proc.run(["gcc", "-dumpversion"], check=False)
    major = result.stdout.strip().split(".")[0]
    return major if result.ok and major.isdigit() else None


def apt_gcc_major() -> str | None:
    """The major version of the gcc that ``apt-get install gcc`` would install (None if apt cannot say)."""
    if proc.which("apt-cache") is None:
        return None
    result = proc.run(["apt-cache", "depends", "gcc"], check=False)
    return gcc_major_from_depends(result.stdout) if result.ok else None


def multilib_package() -> str | None:
    """gcc-N-multilib for the installed gcc, else for the gcc apt would install."""
    major = installed_gcc_major() or apt_gcc_major()
    return f"gcc-{major}-multilib" if major else None


def resolve_packages(packages: tuple[str, ...]) -> tuple[str, ...]:
    """``packages`` with :data:`MULTILIB` replaced by its real name when it can be told."""
    if MULTILIB not in packages:
        return packages
    multilib = multilib_package()
    return tuple(multilib or p if p == MULTILIB else p for p in packages)


def host_packages() -> tuple[str, ...]:
    return resolve_packages(BASE_PACKAGES)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    packages: tuple[str, ...] = ()


def _dpkg_installed(package: str) -> bool:
    result = proc.run(["dpkg-query", "-W", "-f=${Status}", package], check=False)
    return result.ok and "ok installed" in result.stdout


def check_packages() -> Check:
    if proc.which("dpkg-query") is None:
        return Check("debian packages", False, "not a Debian/Ubuntu system: install by hand "
                     + " ".join(host_packages() + I386_PACKAGES))
    missing = tuple(p for p in host_packages() + I386_PACKAGES if not _dpkg_installed(p))
    if missing:
        return Check("debian packages", False, "missing: " + " ".join(missing), missing)
    return Check("debian packages", True, "all present")


def check_m32() -> Check:
    if proc.which("gcc") is None:
        return Check("gcc -m32", False, "gcc is not installed", ("gcc", MULTILIB))
    with tempfile.TemporaryDirectory() as tmp:
        c = Path(tmp) / "t.c"
        c.write_text("#include <stdint.h>\nint main(void) { return sizeof(void *) == 4 ? 0 : 1; }\n")
        result = proc.run(["gcc", "-m32", "-c", str(c), "-o", str(Path(tmp) / "t.o")], check=False)
    if result.ok:
        return Check("gcc -m32", True, "compiles 32-bit code")
    return Check("gcc -m32", False, "gcc cannot compile 32-bit code", (multilib_package() or MULTILIB,))


def check_qemu() -> Check:
    path = proc.which("qemu-system-i386")
    if path is None:
        return Check("qemu", False, "qemu-system-i386 not found", ("qemu-system-x86",))
    version = proc.run([path, "--version"], check=False).stdout.splitlines()[:1]
    return Check("qemu", True, version[0] if version else path)


def check_guest_toolchain() -> Check:
    from harness import image

    problems = image.check_prerequisites()
    if problems:
        return Check("guest toolchain", False, "; ".join(problems), I386_PACKAGES)
    return Check("guest toolchain", True, "musl i386 cross compiler present")


def check_debian_sources() -> Check:
    """The guest image builds busybox and dropbear from Debian source packages."""
    from harness import image

    try:
        image.deb_src_twin()
    except Exception as exc:  # noqa: BLE001 - any failure here means "no access"
        return Check("debian sources", False, f"cannot derive deb-src entries: {exc}")
    downloads = image.debian_downloads()
    cached = sorted(p.name for p in downloads.glob("*.dsc")) if downloads.is_dir() else []
    detail = f"cached: {', '.join(cached)}" if cached else "deb-src entries derivable from /etc/apt"
    return Check("debian sources", True, detail)


def check_disk() -> Check:
    root = cache.root()
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free / 2**30
    ok = free >= MIN_FREE_GB
    return Check("free disk", ok, f"{free:.1f} GiB free in {root} (need {MIN_FREE_GB:.0f})")


def check_kernel_source() -> Check:
    from harness.errors import HarnessError
    from harness.kernel import source

    try:
        src = source.resolve(None, allow_download=False)
    except HarnessError:
        return Check("kernel source", True,
                     "none cached yet: the first build downloads linux-2.6.20.tar.bz2 "
                     "(or set HARNESS_KERNEL_SRC)")
    return Check("kernel source", True, f"{src.origin}")


CHECKS: tuple[Callable[[], Check], ...] = (
    check_packages, check_m32, check_qemu, check_guest_toolchain, check_debian_sources,
    check_disk, check_kernel_source,
)


def install_command(packages: tuple[str, ...]) -> str:
    """The command that installs ``packages`` (printed when doctor may not install them itself)."""
    prefix = "" if os.geteuid() == 0 else "sudo "
    packages = resolve_packages(packages)
    parts = []
    if any(p.endswith(":i386") for p in packages):
        parts.append(f"{prefix}dpkg --add-architecture i386")
    parts.append(f"{prefix}apt-get update")
    parts.append(f"{prefix}apt-get install -y {' '.join(sorted(set(packages)))}")
    note = (f"  ({MULTILIB}: N is the major version of the gcc that apt installs)"
            if MULTILIB in packages else "")
    return " && ".join(parts) + note


def install(packages: tuple[str, ...], out: Callable[[str], None] = print) -> None:
    """Install Debian packages (root only).  A failing index update is tolerated.

    The multilib package is named only after ``apt-get update``, from the gcc
    apt is about to install (or the one installed); ``out`` gets the list apt is given.
    """
    if any(p.endswith(":i386") for p in packages):
        proc.run(["dpkg", "--add-architecture", "i386"], what="dpkg --add-architecture")
    proc.run(["apt-get", "update", "-qq"], check=False)
    packages = resolve_packages(packages)
    if MULTILIB in packages:
        raise ToolMissing("cannot tell which gcc apt installs (`apt-cache depends gcc` names no gcc-N), "
                          f"so not which {MULTILIB}: install gcc first")
    names = sorted(set(packages))
    out(f"installing: {' '.join(names)}")
    proc.run(["apt-get", "install", "-y", "-qq", *names],
             env={"DEBIAN_FRONTEND": "noninteractive"}, what="apt-get install")


def run(do_install: bool = False, out: Callable[[str], None] = print) -> int:
    checks = [check() for check in CHECKS]
    missing = tuple(p for c in checks if not c.ok for p in c.packages)
    if missing and do_install and os.geteuid() == 0:
        install(missing, out)
        checks = [check() for check in CHECKS]
        missing = tuple(p for c in checks if not c.ok for p in c.packages)
    for c in checks:
        out(f"{'ok  ' if c.ok else 'FAIL'} {c.name:16} {c.detail}")
    if missing:
        out(f"fix with: {install_command(missing)}")
    return 0 if all(c.ok for c in checks) else 1
