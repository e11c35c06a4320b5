"""The guest toolchain (musl for i386) and the check that a binary is static i386 ELF."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from harness import cache, proc
from harness.errors import StageError

GUEST_GCC = "i686-linux-gnu-gcc"
GUEST_STRIP = "i686-linux-gnu-strip"
MUSL_SPECS = Path("/usr/lib/i386-linux-musl/musl-gcc.specs")
MUSL_LIBC = Path("/usr/lib/i386-linux-musl/libc.a")
TOOLCHAIN_INSTALL = (
    "sudo dpkg --add-architecture i386 && sudo apt-get update && "
    "sudo apt-get install musl-dev:i386 gcc-i686-linux-gnu binutils-i686-linux-gnu"
)
#: Debian packages the image stage needs on the host (for `harness doctor`, CI)
APT_PACKAGES = (
    "musl-dev:i386",  # pulls gcc-i686-linux-gnu and binutils-i686-linux-gnu
    "gcc-i686-linux-gnu",
    "binutils-i686-linux-gnu",
    "linux-libc-dev",  # kernel headers for busybox
    "gcc",  # busybox's kconfig runs on the host
    "make",
    "bzip2",
    "xz-utils",
    "openssh-client",  # ssh-keygen
    "apt",  # apt-get source
)

# Kernel headers for busybox: musl has none of its own.
KERNEL_HEADER_LINKS = {
    "linux": Path("/usr/include/linux"),
    "asm-generic": Path("/usr/include/asm-generic"),
    "mtd": Path("/usr/include/mtd"),
    "asm": Path("/usr/include/x86_64-linux-gnu/asm"),
}


@dataclass(frozen=True)
class GuestToolchain:
    cc: tuple[str, ...]
    strip: str
    id: str


def guest_toolchain() -> GuestToolchain:
    """The musl i386 cross toolchain, or a StageError saying how to install it."""
    missing = [str(p) for p in (MUSL_SPECS, MUSL_LIBC) if not p.is_file()]
    missing += [t for t in (GUEST_GCC, GUEST_STRIP) if proc.which(t) is None]
    if missing:
        raise StageError(
            f"guest toolchain (musl for i386) missing: {', '.join(missing)}; "
            f"install it with: {TOOLCHAIN_INSTALL}", stage="image"
        )
    version = proc.run([GUEST_GCC, "--version"], what=GUEST_GCC).stdout.splitlines()[0]
    headers = Path("/usr/include/linux/version.h")
    tc_id = cache.digest(
        version,
        cache.file_sha256(MUSL_LIBC),
        cache.file_sha256(MUSL_SPECS),
        headers.read_bytes() if headers.is_file() else b"",
    )
    return GuestToolchain((GUEST_GCC, "-specs", str(MUSL_SPECS)), GUEST_STRIP, tc_id)


def check_prerequisites() -> list[str]:
    """Problems that would stop an image build, each with its fix (for doctor)."""
    problems = []
    try:
        guest_toolchain()
    except StageError as exc:
        problems.append(str(exc))
    for tool, pkg in (("ssh-keygen", "openssh-client"), ("make", "make"), ("gcc", "gcc")):
        if proc.which(tool) is None:
            problems.append(f"{tool} missing: sudo apt-get install {pkg}")
    for target in KERNEL_HEADER_LINKS.values():
        if not target.is_dir():
            problems.append(f"{target} missing (kernel headers for busybox): "
                            "sudo apt-get install linux-libc-dev")
    if proc.which("apt-get") is None:
        problems.append("apt-get missing: Debian sources must be placed by hand in "
                        f"{cache.root() / 'downloads' / 'debian'}")
    return problems


def check_static_i386(path: Path) -> None:
    """Refuse a binary that would not run in the guest (not i386, or dynamic)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 1 or data[5] != 1:
        raise StageError(f"{path}: not a 32-bit little-endian ELF file", stage="image")
    e_machine = struct.unpack_from("<H", data, 18)[0]
    if e_machine != 3:
        raise StageError(f"{path}: ELF machine {e_machine}, expected 3 (i386)", stage="image")
    phoff, = struct.unpack_from("<I", data, 28)
    phentsize, phnum = struct.unpack_from("<HH", data, 42)
    for i in range(phnum):
        p_type, = struct.unpack_from("<I", data, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP
            raise StageError(f"{path}: dynamically linked; the guest has no libraries", stage="image")
