"""harness doctor on a machine without a compiler: nothing missing is run, the right multilib is picked."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from harness import doctor, proc

# `apt-cache depends gcc`, recorded on Debian 12 (bookworm) and Debian 13 (trixie).
DEPENDS_BOOKWORM = """\
gcc
  Depends: cpp
  Depends: gcc-12
  Conflicts: <gcc-doc>
 |Recommends: libc6-dev
  Recommends: <libc-dev>
    libc6-dev
  Suggests: gcc-multilib
  Suggests: make
    make-guile
  Suggests: manpages-dev
  Suggests: <gcc-doc>
"""
DEPENDS_TRIXIE = """\
gcc
  Depends: cpp
  Depends: cpp-x86-64-linux-gnu
  Depends: gcc-14
  Depends: gcc-x86-64-linux-gnu
  Conflicts: <gcc-doc>
 |Recommends: libc6-dev
  Recommends: <libc-dev>
    libc6-dev
  Suggests: gcc-multilib
  Suggests: make
    make-guile
  Suggests: <gcc-doc>
"""
# before `apt-get update` on a fresh container apt knows no package
DEPENDS_NO_LISTS = ""


def test_gcc_major_from_recorded_apt_outputs() -> None:
    assert doctor.gcc_major_from_depends(DEPENDS_BOOKWORM) == "12"
    assert doctor.gcc_major_from_depends(DEPENDS_TRIXIE) == "14"  # not gcc-x86-64-linux-gnu
    assert doctor.gcc_major_from_depends(DEPENDS_NO_LISTS) is None
    assert doctor.gcc_major_from_depends("gcc\n  Suggests: gcc-multilib\n") is None


@dataclass
class FakeMachine:
    """A Debian machine as doctor sees it through harness.proc: what is installed, what apt says."""

    installed: set[str]  # commands on PATH
    packages: set[str]  # installed Debian packages
    depends_before_update: str
    depends_after_update: str
    gcc_version: str = "14.2.0"
    updated: bool = False
    ran: list[tuple[str, ...]] = field(default_factory=list)

    def which(self, name: str) -> str | None:
        return f"/usr/bin/{name}" if name in self.installed else None

    def run(self, argv: Sequence[object], **_kw: object) -> proc.Completed:
        args = tuple(str(a) for a in argv)
        self.ran.append(args)
        if args[0] not in self.installed:
            raise AssertionError(f"ran {args[0]}, which is not installed: {args}")
        out, code = "", 0
        if args[:2] == ("apt-cache", "depends"):
            out = self.depends_after_update if self.updated else self.depends_before_update
        elif args[:2] == ("apt-get", "update"):
            self.updated = True
        elif args[:2] == ("apt-get", "install"):
            new = [a for a in args[2:] if not a.startswith("-")]
            self.packages |= set(new)
            self.installed |= {"gcc"} if "gcc" in new else set()
        elif args[0] == "dpkg-query":
            code = 0 if args[-1] in self.packages else 1
            out = "install ok installed" if code == 0 else ""
        elif args[:2] == ("gcc", "-dumpversion"):
            out = self.gcc_version + "\n"
        return proc.Completed(args, code, out, "", 0.0)


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> FakeMachine:
    m = FakeMachine(installed={"apt-get", "apt-cache", "dpkg", "dpkg-query"}, packages=set(),
                    depends_before_update=DEPENDS_NO_LISTS, depends_after_update=DEPENDS_TRIXIE)
    monkeypatch.setattr(proc, "which", m.which)
    monkeypatch.setattr(proc, "run", m.run)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(doctor, "CHECKS", (doctor.check_packages, doctor.check_m32))
    return m


def test_importing_and_listing_packages_runs_no_gcc(machine: FakeMachine) -> None:
    assert doctor.host_packages().count(doctor.MULTILIB) == 1  # apt cannot say yet
    machine.updated = True
    assert "gcc-14-multilib" in doctor.host_packages()
    assert not [argv for argv in machine.ran if argv[0] == "gcc"]


def test_install_on_a_machine_without_a_compiler(machine: FakeMachine) -> None:
    lines: list[str] = []
    assert doctor.run(do_install=True, out=lines.append) == 0
    installs = [argv for argv in machine.ran if argv[:2] == ("apt-get", "install")]
    assert len(installs) == 1
    assert "gcc" in installs[0] and "gcc-14-multilib" in installs[0]
    assert doctor.MULTILIB not in installs[0] and "gcc-multilib" not in installs[0]
    first_gcc = next(i for i, argv in enumerate(machine.ran) if argv[0] == "gcc")
    assert first_gcc > machine.ran.index(installs[0])  # gcc is run only once it is installed
    update = machine.ran.index(("apt-get", "update", "-qq"))
    assert update < machine.ran.index(installs[0])
    announced = [line.split()[1:] for line in lines if line.startswith("installing: ")]
    assert announced == [[a for a in installs[0][2:] if not a.startswith("-")]]  # what apt got


def test_debian_12_gets_gcc_12_multilib(machine: FakeMachine) -> None:
    machine.depends_after_update = DEPENDS_BOOKWORM
    machine.gcc_version = "12"
    assert doctor.run(do_install=True, out=lambda _line: None) == 0
    assert "gcc-12-multilib" in machine.packages


def test_an_installed_gcc_decides(machine: FakeMachine) -> None:
    machine.installed.add("gcc")
    machine.gcc_version = "13.3.0"
    machine.depends_before_update = DEPENDS_TRIXIE
    assert doctor.multilib_package() == "gcc-13-multilib"


def test_printed_command_without_root(machine: FakeMachine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    command = doctor.install_command(("gcc", doctor.MULTILIB, "musl-dev:i386"))
    assert command.startswith("sudo dpkg --add-architecture i386 && sudo apt-get update && ")
    assert "gcc-N-multilib" in command and "N is the major version" in command
    machine.updated = True
    assert "gcc-14-multilib" in doctor.install_command(("gcc", doctor.MULTILIB))
