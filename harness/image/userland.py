"""Guest binaries (busybox, dropbear, the recipe's programs), built with musl and cached in userland/."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import archive, cache, proc, progress
from harness.errors import StageError
from harness.image import entry
from harness.image.debsrc import DebianSource
from harness.image.recipe import Package, Program
from harness.image.toolchain import KERNEL_HEADER_LINKS, GuestToolchain, check_static_i386
from harness.kernel import config
from harness.kernel.build import MAKE_ENV

# Bump when the build logic changes what a userland entry contains.
USERLAND_FORMAT = "2"

DROPBEAR_PROGRAMS = ("dropbear", "dropbearkey")
DROPBEAR_CONFIGURE = (
    "--enable-static",
    "--disable-harden",
    "--disable-zlib",
    "--disable-lastlog",
    "--disable-utmp",
    "--disable-utmpx",
    "--disable-wtmp",
    "--disable-wtmpx",
    "--disable-pututline",
    "--disable-pututxline",
    "--disable-loginfunc",
)
PROGRAM_CFLAGS = ("-Os", "-Wall", "-Wextra")
OLDCONFIG_ANSWERS = "\n" * 4000

#: builds into a staging directory; returns (guest path -> file name in it, busybox applet links)
Builder = Callable[[Path, int], tuple[dict[str, str], list[str]]]


@dataclass(frozen=True)
class Userland:
    """Compiled guest binaries: image path -> file in the cache."""

    directory: Path
    binaries: dict[str, Path]
    links: tuple[str, ...] = ()  # busybox applet paths (absolute guest paths)
    cached: bool = False


def run_logged(argv: Sequence[str], log: Path, *, cwd: Path, what: str,
               input: str | None = None) -> None:
    """Run a build command with its output appended to ``log``."""
    with log.open("a") as f:
        result = proc.run(argv, cwd=cwd, log_to=f, check=False, input=input, env=MAKE_ENV)
    if not result.ok:
        tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-12:])
        raise StageError(f"{what} failed (exit {result.returncode})\n{tail}", stage="image")


def userland_entry(name: str, key: str, build: Builder, jobs: int,
                   meta: dict[str, Any] | None = None) -> Userland:
    """``userland/<name>-<key>/``, built with ``build`` unless there; ``meta`` goes into userland.json."""
    final = cache.subdir("userland") / f"{name}-{key}"
    with cache.lock(f"userland-{name}-{key}", f"the {name} build"):
        try:
            data = entry.read(final, "userland.json", key)
            if data is not None:
                return Userland(final, entry.files(final, "binaries", data.get("binaries")),
                                entry.strings("links", data.get("links", [])), cached=True)
        except entry.BadManifest as exc:
            entry.set_aside(final, exc)
        start = time.monotonic()
        failed_log = final.with_name(final.name + ".failed.log")
        with cache.staged_dir(final) as stage:
            try:
                binaries, links = build(stage, jobs)
            except StageError as exc:
                # The stage is about to be removed: keep its log for the user.
                if (stage / "build.log").is_file():
                    shutil.copyfile(stage / "build.log", failed_log)
                    raise StageError(f"{exc}\nfull log: {failed_log}", stage="image") from None
                raise
            failed_log.unlink(missing_ok=True)
            for path in binaries.values():
                check_static_i386(stage / path)
            cache.write_json_atomic(stage / "userland.json", {
                "name": name, "key": key, "binaries": binaries, "links": links,
                "seconds": round(time.monotonic() - start, 1), **(meta or {}),
            })
        return Userland(final, {k: final / v for k, v in binaries.items()}, tuple(links))


def extract_orig(tarball: Path, work: Path) -> Path:
    archive.safe_extract_tar(tarball, work / "src")
    tops = list((work / "src").iterdir())
    if len(tops) != 1 or not tops[0].is_dir():
        raise StageError(f"{tarball.name}: expected one top-level directory", stage="image")
    return tops[0]


def busybox_config(allno: str, fragment: bytes | None) -> tuple[str, dict[str, str]]:
    """(.config, wanted symbols): ``allno`` (``make allnoconfig``) with the recipe's fragment merged in."""
    wanted = config.parse_fragment((fragment or b"").decode(), "busybox config fragment")
    return config.merge(allno, wanted), wanted


def selected_extras(allno: str, wanted: dict[str, str], final: str) -> list[str]:
    """Symbols ``final`` turns on that neither allnoconfig nor the fragment did (selected by others)."""
    before = {s for s, v in config.read_dotconfig(allno).items() if v == "y"}
    return sorted(s for s, v in config.read_dotconfig(final).items()
                  if v == "y" and s not in before and s not in wanted)


def _kernel_headers(work: Path) -> Path:
    khdr = work / "kernel-headers"
    khdr.mkdir()
    for name, target in KERNEL_HEADER_LINKS.items():
        if not target.is_dir():
            raise StageError(f"{target} missing: sudo apt-get install linux-libc-dev", stage="image")
        (khdr / name).symlink_to(target)
    return khdr


def _configure_busybox(pkg: Package, src: Path, log: Path) -> str:
    run_logged(["make", "allnoconfig"], log, cwd=src, what="busybox make allnoconfig")
    allno = (src / ".config").read_text()
    merged, wanted = busybox_config(allno, pkg.config)
    (src / ".config").write_text(merged)
    run_logged(["make", "oldconfig"], log, cwd=src, input=OLDCONFIG_ANSWERS,
               what="busybox make oldconfig")
    final = (src / ".config").read_text()
    missing = config.lost_symbols(wanted, final)
    if missing:
        raise StageError(f"busybox config: lost after oldconfig: {', '.join(missing)}", stage="image")
    extras = selected_extras(allno, wanted, final)
    with log.open("a") as f:
        f.write(f"# turned on by the fragment's selections: {' '.join(extras) or 'nothing'}\n")
    return final


def build_busybox(pkg: Package, source: DebianSource, tc: GuestToolchain, jobs: int) -> Userland:
    """busybox from ``allnoconfig`` plus exactly the recipe's applets and features, static."""
    key = cache.digest(USERLAND_FORMAT, source.version, source.orig.sha256, pkg.config or b"", tc.id)

    def build(stage: Path, jobs: int) -> tuple[dict[str, str], list[str]]:
        log = stage / "build.log"
        work = stage / "work"
        src = extract_orig(source.orig_path, work)
        khdr = _kernel_headers(work)
        with progress.step(f"busybox {source.version}: configure and build") as s:
            s.update("make allnoconfig + the recipe's applets")
            final_config = _configure_busybox(pkg, src, log)
            s.update("make busybox")
            run_logged(
                ["make", f"-j{jobs}", f"CC={' '.join(tc.cc)}", f"EXTRA_CFLAGS=-isystem {khdr}",
                 "busybox", "busybox.links"],
                log, cwd=src, what="busybox build",
            )
            run_logged([tc.strip, "-o", str(stage / "busybox"), "busybox"], log, cwd=src,
                       what="strip busybox")
        (stage / "busybox.config").write_text(final_config)
        links = [
            line.strip() for line in (src / "busybox.links").read_text().splitlines()
            if line.strip().startswith("/")
        ]
        cache.remove_tree(work)
        return {"/bin/busybox": "busybox"}, links

    return userland_entry("busybox", key, build, jobs, {"source": source.meta()})


def build_dropbear(pkg: Package, source: DebianSource, tc: GuestToolchain, jobs: int) -> Userland:
    key = cache.digest(USERLAND_FORMAT, source.version, source.orig.sha256, pkg.options or b"", tc.id,
                       " ".join(DROPBEAR_CONFIGURE), " ".join(DROPBEAR_PROGRAMS))

    def build(stage: Path, jobs: int) -> tuple[dict[str, str], list[str]]:
        log = stage / "build.log"
        work = stage / "work"
        src = extract_orig(source.orig_path, work)
        (src / "localoptions.h").write_bytes(pkg.options or b"")
        with progress.step(f"dropbear {source.version}: configure and build") as s:
            s.update("configure")
            run_logged(
                ["./configure", "--host=i686-linux-gnu", f"CC={' '.join(tc.cc)}",
                 *DROPBEAR_CONFIGURE],
                log, cwd=src, what="dropbear configure",
            )
            s.update("make")
            run_logged(
                ["make", f"-j{jobs}", f"PROGRAMS={' '.join(DROPBEAR_PROGRAMS)}", "STATIC=1"],
                log, cwd=src, what="dropbear build",
            )
            for prog in DROPBEAR_PROGRAMS:
                run_logged([tc.strip, "-o", str(stage / prog), prog], log, cwd=src,
                           what=f"strip {prog}")
        cache.remove_tree(work)
        return {"/usr/sbin/dropbear": "dropbear", "/usr/bin/dropbearkey": "dropbearkey"}, []

    return userland_entry("dropbear", key, build, jobs, {"source": source.meta()})


def build_program(program: Program, tc: GuestToolchain) -> Userland:
    key = cache.digest(USERLAND_FORMAT, program.source, " ".join(program.cflags), tc.id,
                       " ".join(PROGRAM_CFLAGS))

    def build(stage: Path, jobs: int) -> tuple[dict[str, str], list[str]]:
        src = stage / f"{program.name}.c"
        src.write_bytes(program.source)
        log = stage / "build.log"
        run_logged(
            [*tc.cc, "-static", *PROGRAM_CFLAGS, *program.cflags, "-o", program.name, src.name],
            log, cwd=stage, what=f"compile {program.name} ({program.source_path})",
        )
        run_logged([tc.strip, program.name], log, cwd=stage, what=f"strip {program.name}")
        return {program.install: program.name}, []

    return userland_entry(program.name, key, build, 1)
