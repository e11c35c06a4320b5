"""Per kernel: the executable added lines, their instructions, the trace ranges; each VM's log.

A kernel's plan (``<coverage dir>/<build key>/plan.json``) says, for every
file the series touches, which added lines are executable (the debug info
maps at least one instruction to them, as the innermost line or as a call
inlined there) and by which instruction addresses; and which address ranges
QEMU must log: the whole functions holding those instructions, adjacent
ones merged, nothing else.  Every VM of that kernel writes its own log
beside it: ``<vm>.boot.log`` for a VM that boots, ``<vm>.log`` for one
resumed from a saved boot.  A resumed VM starts with an empty translation
cache, so it logs all it runs after the resume, but code that runs only at
boot (``rcfs_init``, subsystem registration) is logged only by a boot: the
first VM of each kernel in a coverage directory therefore boots instead of
resuming (:func:`vm_trace`).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import cache
from harness.coverage import added, debuginfo
from harness.coverage.added import DiffLine
from harness.coverage.debuginfo import Chain, Function
from harness.errors import InputError
from harness.kernel import build_entry, patches

if TYPE_CHECKING:  # harness.run.target imports this module when a run measures coverage
    from harness.run.target import Prepared

PLAN = "plan.json"
BOOT_LOG = ".boot.log"
LOG = ".log"
FORMAT = 2
#: functions start 16-byte aligned: less than this between two traced ones is padding
FUNCTION_ALIGN = 16


@dataclass(frozen=True)
class FilePlan:
    added: tuple[int, ...]  # added line numbers in the patched file
    executable: dict[int, tuple[int, ...]]  # added line -> addresses of its instructions
    hunks: tuple[tuple[DiffLine, ...], ...]  # the file's diff, for the HTML page


@dataclass(frozen=True)
class KernelPlan:
    key: str  # the build's key: one directory per kernel
    label: str
    series: str
    source: str  # digest of the patched files: kernels with the same one share line numbers
    ranges: tuple[tuple[int, int], ...]  # [start, end) addresses QEMU logs
    functions: tuple[str, ...]  # the functions those ranges hold
    files: dict[str, FilePlan]

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "key": self.key, "label": self.label, "series": self.series,
                "source": self.source,
                "ranges": [list(r) for r in self.ranges], "functions": list(self.functions),
                "files": {path: {"added": list(f.added),
                                 "executable": {str(line): list(a) for line, a in f.executable.items()},
                                 "hunks": [[asdict(d) for d in h] for h in f.hunks]}
                          for path, f in self.files.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> KernelPlan:
        try:
            if data["format"] != FORMAT:
                raise ValueError(f"format {data['format']!r}, expected {FORMAT}")
            files = {str(path): FilePlan(
                added=tuple(int(n) for n in f["added"]),
                executable={int(line): tuple(int(a) for a in addrs)
                            for line, addrs in f["executable"].items()},
                hunks=tuple(tuple(DiffLine(str(d["kind"]), None if d["number"] is None else int(d["number"]),
                                           str(d["text"])) for d in h) for h in f["hunks"]))
                for path, f in data["files"].items()}
            return cls(key=str(data["key"]), label=str(data["label"]), series=str(data["series"]),
                       source=str(data["source"]),
                       ranges=tuple((int(s), int(e)) for s, e in data["ranges"]),
                       functions=tuple(str(n) for n in data["functions"]), files=files)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"{where}: not a coverage plan ({exc})") from None


def load(path: Path) -> KernelPlan:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the coverage plan ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a coverage plan (expected a JSON object)")
    return KernelPlan.from_json(data, str(path))


# --- what executes the added lines ----------------------------------------------------


def analyse(functions: list[Function], row_addresses: list[int], added_lines: Mapping[str, set[int]],
            read_instructions: Callable[[int, int], list[int]],
            read_chains: Callable[[list[int]], dict[int, Chain]],
            ) -> tuple[dict[str, dict[int, set[int]]], list[Function]]:
    """Which instructions execute each added line, and the functions that hold them.

    ``row_addresses``: line-table rows of files with the base name of a
    measured file (a first, cheap cut); every instruction of the functions
    holding them is then mapped with its full inline chain.
    """
    candidates = debuginfo.containing(functions, row_addresses)
    instructions: list[int] = []
    for start, end in debuginfo.merge_ranges((f.start, f.end) for f in candidates):
        instructions += read_instructions(start, end)
    executable: dict[str, dict[int, set[int]]] = {path: {} for path in added_lines}
    hits: list[int] = []
    for address, chain in read_chains(instructions).items():
        for path, line in chain:
            f = debuginfo.source_file(path, added_lines)
            if f is not None and line in added_lines[f]:
                executable[f].setdefault(line, set()).add(address)
                hits.append(address)
    return executable, debuginfo.containing(candidates, hits)


def make_plan(vmlinux: Path, pristine: Path, patched: Path, files: list[str], *, key: str, label: str,
              series: str) -> KernelPlan:
    """The plan of the kernel ``vmlinux`` built from ``patched`` (``pristine``: 2.6.20 as released)."""
    texts = {}
    for path in files:
        new = patched / path
        if new.is_file():
            old = pristine / path
            texts[path] = (old.read_text(errors="replace") if old.is_file() else "",
                           new.read_text(errors="replace"))
    added_lines = {path: set(added.added_lines(old, new)) for path, (old, new) in texts.items()}
    table = debuginfo.read_line_table(vmlinux)
    if not debuginfo.has_line_rows(table):
        raise InputError(f"{vmlinux}: no debug info (a DWARF line table); coverage needs a kernel "
                         "built with CONFIG_DEBUG_INFO (the coverage flavour)")
    basenames = {path.rsplit("/", 1)[-1] for path in added_lines}
    executable, traced = analyse(
        debuginfo.read_functions(vmlinux), debuginfo.parse_line_rows(table, basenames), added_lines,
        lambda start, end: debuginfo.read_instructions(vmlinux, start, end),
        lambda addresses: debuginfo.read_chains(vmlinux, addresses))
    return KernelPlan(
        key=key, label=label, series=series,
        source=cache.digest(*(f"{path}\0{new}" for path, (_, new) in sorted(texts.items()))),
        ranges=tuple(debuginfo.merge_ranges(((f.start, f.end) for f in traced), gap=FUNCTION_ALIGN)),
        functions=tuple(f.name for f in traced),
        files={path: FilePlan(
            added=tuple(sorted(added_lines[path])),
            executable={line: tuple(sorted(a)) for line, a in sorted(executable[path].items())},
            hunks=tuple(tuple(h) for h in added.hunks(*texts[path]))) for path in texts})


def plan_for(prepared: Prepared) -> KernelPlan:
    """The plan of a harness build (its vmlinux, work tree and pristine source)."""
    build = prepared.build
    vmlinux = build_entry.artefact_paths(build.directory)["vmlinux"]
    if not vmlinux.is_file():
        raise InputError(f"kernel {prepared.spec.label}: {vmlinux} is missing; coverage needs the "
                         "vmlinux of a harness build")
    try:
        meta = json.loads(build.meta_path.read_text())
        source_id = str(meta["inputs"]["source"]["id"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"kernel {prepared.spec.label}: {build.meta_path}: cannot tell its source "
                         f"({exc})") from None
    series = patches.load_series(prepared.spec.series)
    return make_plan(vmlinux, cache.subdir("sources") / source_id / "tree", build.directory / "src",
                     added.scoped_files(series), key=build.key, label=prepared.spec.label,
                     series=series.name)


# --- one coverage directory -----------------------------------------------------------

_plans: dict[tuple[Path, str], KernelPlan] = {}
_plans_lock = threading.Lock()


def kernel_plan(prepared: Prepared, directory: Path) -> KernelPlan:
    """The plan of ``prepared`` in ``directory`` (made and written there on first use)."""
    directory = directory.absolute()
    ident = (directory, prepared.build.key)
    with _plans_lock:
        if ident not in _plans:
            path = directory / prepared.build.key / PLAN
            try:
                plan = load(path) if path.is_file() else None
            except InputError:  # an older harness's plan: made again
                plan = None
            if plan is None:
                plan = plan_for(prepared)
                path.parent.mkdir(parents=True, exist_ok=True)
                cache.write_json_atomic(path, plan.to_json())
            _plans[ident] = plan
        return _plans[ident]


@dataclass(frozen=True)
class VMTrace:
    """How one VM is traced: its log file, the ranges, and whether it must boot (not resume)."""

    log: Path
    ranges: tuple[tuple[int, int], ...]
    boots: bool


def vm_trace(prepared: Prepared, directory: Path, name: str, *, resumes: bool) -> VMTrace | None:
    """The trace of the VM ``name`` of ``prepared`` (None: the kernel has no code to trace).

    ``resumes``: the VM would resume a saved boot; it boots instead when no
    VM of this kernel has booted with a trace in ``directory`` yet.
    """
    plan = kernel_plan(prepared, directory)
    if not plan.ranges:
        return None
    kdir = directory.absolute() / plan.key
    boots = not resumes or not any(kdir.glob("*" + BOOT_LOG))
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "vm"
    suffix = BOOT_LOG if boots else LOG
    log = kdir / (slug + suffix)
    n = 1
    while log.exists():  # an earlier session's VM of the same name: keep its log
        n += 1
        log = kdir / f"{slug}-{n}{suffix}"
    log.touch()  # claimed now: the next VM of this kernel knows the boot is traced
    return VMTrace(log, plan.ranges, boots)
