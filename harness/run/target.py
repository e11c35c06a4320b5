"""A test target: one kernel (source + series + config) with the guest image, booted.

This is where the stages meet: :func:`prepare` runs source → patches →
config → build and the image stage; :func:`booted` boots the result in a
:class:`~harness.machine.vm.VM` and guarantees QEMU is gone afterwards.  The CLI
(``boot``, ``run``) and the pytest plugin both go through here.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import image
from harness.coverage import flavour
from harness.coverage import plan as coverage_plan
from harness.errors import InputError
from harness.image import Image
from harness.kernel import build, build_entry, config, patches, source
from harness.kernel.build import BuildResult
from harness.machine import snapshot
from harness.machine.vm import VM, VMConfig


@dataclass(frozen=True)
class KernelSpec:
    """Which kernel to build: the key a test asks for with ``@pytest.mark.kernel``."""

    config: str = "default"
    series: str = "rcfs"
    overrides: tuple[str, ...] = ()
    kernel_src: str | None = None
    recipe: str = "default"

    @property
    def label(self) -> str:
        sets = ",".join(o.removeprefix("CONFIG_") for o in self.overrides)
        return f"{self.series}/{self.config}" + (f"[{sets}]" if sets else "")


@dataclass(frozen=True)
class Prepared:
    spec: KernelSpec
    build: BuildResult
    image: Image


@dataclass
class BootOptions:
    boot_timeout: float | None = None
    kvm: bool = False
    memory_mb: int = 256
    append: str = ""
    console_dir: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)
    snapshot: bool = True  # resume a saved boot (made on first use) instead of booting
    coverage: Path | None = None  # trace the patch's code into this directory (harness.coverage)


def build_kernel(spec: KernelSpec, *, jobs: int | None = None, force: bool = False,
                 debug_info: bool = False) -> BuildResult:
    """Build ``spec``; ``debug_info``: its coverage flavour (same code, with DWARF)."""
    if jobs is not None:
        build.check_jobs(jobs)
    series = patches.load_series(spec.series)
    overrides = list(spec.overrides)
    if debug_info:
        plain = config.render(spec.config, series_chain=series.chain, overrides=overrides)
        overrides = flavour.debug_info_overrides(plain.symbols) + overrides
    request_config = config.render(spec.config, series_chain=series.chain, overrides=overrides)
    src = source.resolve(spec.kernel_src)
    kwargs = {"jobs": jobs} if jobs is not None else {}
    req = build.BuildRequest(source=src, series=series, config=request_config, **kwargs)
    return build.build(req, force=force)


def prepare(spec: KernelSpec, *, jobs: int | None = None) -> Prepared:
    """Build (or find cached) the kernel and the guest image."""
    recipe = image.resolve_recipe(spec.recipe)
    built = build_kernel(spec, jobs=jobs)
    img = image.build_image(recipe, jobs=jobs)
    return Prepared(spec, built, img)


def _prebuilt_meta(bzimage: Path) -> build_entry.BuildMeta | None:
    """The checked meta.json of the build entry ``bzimage`` is the kernel of, if it is one.

    A damaged entry is not moved aside here (the caller is using its kernel): its
    meta.json is just not used.
    """
    # a harness build lives in builds/<entry>/out/arch/i386/boot/bzImage
    if len(bzimage.parents) <= 4:
        return None
    entry = bzimage.parents[4]
    try:
        meta = build_entry.read_meta(entry, build_entry.entry_key(entry))
    except build_entry.BadEntry:
        return None
    return meta if meta is not None and meta.paths["bzImage"] == bzimage else None


def prepare_prebuilt(spec: KernelSpec, bzimage: Path) -> Prepared:
    """A kernel built elsewhere (by ``harness bisect``) with the guest image."""
    bzimage = bzimage.absolute()
    if not bzimage.is_file():
        raise InputError(f"--kernel-bzimage {bzimage}: no such file")
    meta = _prebuilt_meta(bzimage)
    if meta is not None:
        built = BuildResult(key=meta.key, directory=bzimage.parents[4], bzimage=bzimage,
                            dotconfig=meta.paths["config"], system_map=meta.paths["System.map"],
                            log=meta.paths["log"], cached=True, duration=meta.duration,
                            warnings=meta.warnings)
    else:
        built = BuildResult(key="prebuilt", directory=bzimage.parent, bzimage=bzimage,
                            dotconfig=bzimage.parent, system_map=bzimage.parent, log=bzimage,
                            cached=True, duration=0.0, warnings=0)
    img = image.build_image(image.resolve_recipe(spec.recipe))
    return Prepared(spec, built, img)


def vm_config(prepared: Prepared, options: BootOptions, name: str) -> VMConfig:
    """How to start a VM of ``prepared`` (with its config's ``cpus``); with ``options.snapshot``,
    resuming its saved boot (booting once now to save it, if needed: a boot failure is raised
    from here)."""
    defs = config.load_defs()
    cpus = defs[prepared.spec.config].cpus if prepared.spec.config in defs else 1
    kwargs: dict[str, Any] = {"kvm": options.kvm, "memory_mb": options.memory_mb,
                              "append": options.append, "cpus": cpus}
    if options.boot_timeout:
        kwargs["boot_timeout"] = options.boot_timeout
    elif cpus > 1:
        # measured: a 2-CPU debug guest booted to SSH in 3-4 s on an idle host but in 55-61 s
        # with 6 CPU hogs on 2 cores (a uniprocessor one: 8 s); its vCPUs spin on each other
        kwargs["boot_timeout"] = 180.0
    if options.console_dir is not None:
        options.console_dir.mkdir(parents=True, exist_ok=True)
        kwargs["console_log"] = options.console_dir / f"{name}.console.log"
    cfg = VMConfig.for_image(prepared.build.bzimage, prepared.image, **kwargs)
    trace = None
    if options.coverage is not None:
        trace = coverage_plan.vm_trace(prepared, options.coverage, name, resumes=options.snapshot)
    if options.snapshot and (trace is None or not trace.boots):
        cfg = snapshot.resume_config(cfg, snapshot.ensure(cfg, name))
    if trace is not None:  # the first VM of a kernel boots: code run only at boot is traced too
        cfg = dataclasses.replace(cfg, trace_log=trace.log, trace_ranges=trace.ranges)
    return cfg


@contextlib.contextmanager
def booted(prepared: Prepared, options: BootOptions | None = None,
           name: str | None = None) -> Iterator[VM]:
    """Boot ``prepared`` and yield the running VM; QEMU is always stopped and reaped."""
    options = options or BootOptions()
    vm_name = name or prepared.spec.label.replace("/", "-")
    vm = VM(vm_config(prepared, options, vm_name), name=vm_name)
    try:
        vm.boot()
        yield vm
    finally:
        vm.stop()
