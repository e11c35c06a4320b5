"""``harness doctor``: is this machine able to build, boot and test?

Each check names what is missing and the exact command that installs it.
With ``--install`` (as root) the missing Debian packages are installed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness import cache, proc


def _multilib() -> str:
    """gcc-N-multilib for the host gcc: plain gcc-multilib conflicts with the
    i686 cross compiler that the guest image needs."""
    result = proc.run(["gcc", "-dumpversion"], check=False) if proc.which("gcc") else None
    major = result.stdout.strip().split(".")[0] if result is not None and result.ok else "12"
    return f"gcc-{major}-multilib"


#: Debian packages for the whole harness (kernel build, guest image, VM).
HOST_PACKAGES = (
    "make", "gcc", _multilib(), "bc", "patch", "bzip2", "xz-utils", "cpio", "git",
    "qemu-system-x86", "openssh-client", "linux-libc-dev",
    "chromium",  # renders the HTML report in the report test
)
#: i386 packages (need ``dpkg --add-architecture i386`` first).
I386_PACKAGES = ("musl-dev:i386", "gcc-i686-linux-gnu", "binutils-i686-linux-gnu")
MIN_FREE_GB = 4.0


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
                     + " ".join(HOST_PACKAGES + I386_PACKAGES))
    missing = tuple(p for p in HOST_PACKAGES + I386_PACKAGES if not _dpkg_installed(p))
    if missing:
        return Check("debian packages", False, "missing: " + " ".join(missing), missing)
    return Check("debian packages", True, "all present")


def check_m32() -> Check:
    with tempfile.TemporaryDirectory() as tmp:
        c = Path(tmp) / "t.c"
        c.write_text("#include <stdint.h>\nint main(void) { return sizeof(void *) == 4 ? 0 : 1; }\n")
        result = proc.run(["gcc", "-m32", "-c", str(c), "-o", str(Path(tmp) / "t.o")], check=False)
    if result.ok:
        return Check("gcc -m32", True, "compiles 32-bit code")
    return Check("gcc -m32", False, "gcc cannot compile 32-bit code", (_multilib(),))


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
    prefix = "" if os.geteuid() == 0 else "sudo "
    parts = []
    if any(p.endswith(":i386") for p in packages):
        parts.append(f"{prefix}dpkg --add-architecture i386")
    parts.append(f"{prefix}apt-get update")
    parts.append(f"{prefix}apt-get install -y {' '.join(sorted(set(packages)))}")
    return " && ".join(parts)


def install(packages: tuple[str, ...]) -> None:
    """Install Debian packages (root only).  A failing index update is tolerated."""
    if any(p.endswith(":i386") for p in packages):
        proc.run(["dpkg", "--add-architecture", "i386"], what="dpkg --add-architecture")
    proc.run(["apt-get", "update", "-qq"], check=False)
    proc.run(["apt-get", "install", "-y", "-qq", *sorted(set(packages))],
             env={"DEBIAN_FRONTEND": "noninteractive"}, what="apt-get install")


def run(do_install: bool = False, out: Callable[[str], None] = print) -> int:
    checks = [check() for check in CHECKS]
    missing = tuple(p for c in checks if not c.ok for p in c.packages)
    if missing and do_install and os.geteuid() == 0:
        out(f"installing: {' '.join(sorted(set(missing)))}")
        install(missing)
        checks = [check() for check in CHECKS]
        missing = tuple(p for c in checks if not c.ok for p in c.packages)
    for c in checks:
        out(f"{'ok  ' if c.ok else 'FAIL'} {c.name:16} {c.detail}")
    if missing:
        out(f"fix with: {install_command(missing)}")
    return 0 if all(c.ok for c in checks) else 1
