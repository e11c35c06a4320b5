"""conftest.py of a stand-in suite for ``harness test`` cells (tests/unit/test_matrix.py copies it).

It replaces the stages the plugin runs with fakes, so a real pytest process
with the real plugin runs a cell in a fraction of a second, without a kernel:
the kernel "builds" at once, the image builds unless ``FAKE_IMAGE_FAILS`` is
set, and the VM is a stand-in that records which kernel each test ran on.
Each test that ends appends its node id to ``$FAKE_PROGRESS``.
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness import image
from harness.errors import StageError
from harness.machine.vm import BootInfo
from harness.plugin import kernels
from harness.run import target


@dataclass
class FakeBuilt:
    bzimage: Path = Path("/nonexistent/bzImage")
    log: Path = Path("/nonexistent/build.log")
    system_map: Path = Path("/nonexistent/System.map")
    cached: bool = True
    duration: float = 0.0
    warnings: int = 0


@dataclass
class FakeImage:
    recipe: str


def build_image(recipe: str) -> FakeImage:
    if os.environ.get("FAKE_IMAGE_FAILS"):
        raise StageError("busybox: make failed (exit 2)", stage="image")
    return FakeImage(recipe)


@dataclass
class FakeVM:
    cfg: object
    name: str
    console_log: Path = field(default_factory=lambda: Path("/nonexistent/console.log"))
    stopped: bool = False

    def boot(self) -> BootInfo:
        return BootInfo(1, 0.1, {}, self.console_log, resumed=True)

    def alive(self) -> bool:
        return not self.stopped

    def crashed(self) -> bool:
        return False

    def mark(self) -> int:
        return 0

    def sync_console(self) -> bool:
        return True

    def console_since(self, mark: int = 0) -> str:
        return ""

    def events_since(self, mark: int = 0) -> list[object]:
        return []

    def stop(self, graceful: bool = True) -> None:
        self.stopped = True

    def kill(self) -> None:
        self.stopped = True


def pytest_configure(config: pytest.Config) -> None:
    patch = pytest.MonkeyPatch()
    patch.setattr(kernels, "VM", FakeVM)
    patch.setattr(target, "vm_config", lambda prepared, options, name: name)
    patch.setattr(target, "build_kernel", lambda spec: FakeBuilt())
    patch.setattr(image, "resolve_recipe", lambda name: str(name))
    patch.setattr(image, "build_image", build_image)


@pytest.fixture(autouse=True)
def _progress(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    progress = os.environ.get("FAKE_PROGRESS")
    if progress:
        with open(progress, "a") as f:
            f.write(request.node.nodeid + "\n")
