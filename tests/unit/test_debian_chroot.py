"""scripts/debian-chroot: its pure parts (command line, apt sources, mountinfo, result lines)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
SCRIPT = SCRIPTS / "debian-chroot"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("debian_chroot_lib", SCRIPTS / "debian_chroot_lib.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["debian_chroot_lib"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


dc = _load()


# --- command line ---------------------------------------------------------------------------


def test_defaults_run_both_readme_commands_in_bookworm() -> None:
    opts = dc.parse_args([], {})
    assert opts.suite == "bookworm"
    assert opts.targets == ("test-kernel", "test")
    assert opts.chroots == Path("/var/tmp/harness-chroots")
    assert opts.root == Path("/var/tmp/harness-chroots/bookworm")
    assert opts.kernel_src is None
    assert not (opts.fresh or opts.cold or opts.keep_mounts or opts.umount_only or opts.shell
                or opts.committed)


def test_environment_gives_chroot_folder_and_kernel_source() -> None:
    opts = dc.parse_args(["--suite", "trixie", "test-kernel"],
                         {"HARNESS_CHROOTS": "/work/chroots", "HARNESS_KERNEL_SRC": "/src/linux"})
    assert opts.root == Path("/work/chroots/trixie")
    assert opts.kernel_src == "/src/linux"
    assert opts.targets == ("test-kernel",)


def test_options_override_environment() -> None:
    opts = dc.parse_args(["--chroots", "/x", "--kernel-src", "/k", "--fresh", "--cold", "--keep-mounts",
                          "--committed"],
                         {"HARNESS_CHROOTS": "/work/chroots", "HARNESS_KERNEL_SRC": "/src/linux"})
    assert (opts.chroots, opts.kernel_src) == (Path("/x"), "/k")
    assert opts.fresh and opts.cold and opts.keep_mounts and opts.committed


@pytest.mark.parametrize(("argv", "named"), [
    (["--suite", "Bookworm"], "--suite 'Bookworm'"),
    (["--suite", "../etc"], "--suite '../etc'"),
    (["test; rm -rf /"], "target 'test; rm -rf /'"),
    (["-", "test"], "target '-'"),
    (["--chroots", "chroots"], "--chroots 'chroots'"),
    (["--mirror", "deb.debian.org/debian"], "--mirror 'deb.debian.org/debian'"),
    (["--umount", "test"], "--umount"),
    (["--shell", "test"], "--shell"),
])
def test_bad_input_is_refused_naming_it(argv: list[str], named: str) -> None:
    with pytest.raises(dc.Failure) as info:
        dc.parse_args(argv, {})
    assert named in str(info.value)
    assert "\n" not in str(info.value)


def test_script_finds_its_modules_from_any_directory_and_refuses_bad_input(tmp_path: Path) -> None:
    # before any root check: exit 2 with one line naming the input, nothing written
    r = subprocess.run([sys.executable, str(SCRIPT), "--suite", "Bookworm", "--chroots", str(tmp_path / "c")],
                       cwd=tmp_path, capture_output=True, text=True, check=False)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.splitlines() == [
        "debian-chroot: error: --suite 'Bookworm': expected a Debian release name such as bookworm or trixie"]
    assert list(tmp_path.iterdir()) == []


def test_unknown_option_is_a_failure_not_an_exit(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(dc.Failure):
        dc.parse_args(["--no-such-option"], {})
    assert "--no-such-option" in capsys.readouterr().err


# --- kernel source ----------------------------------------------------------------------------


def _plan(value: str) -> Any:
    return dc.kernel_src_plan(value, lambda p: p.is_dir(), lambda p: p.is_file())


def test_kernel_tree_is_mounted_as_a_directory(tmp_path: Path) -> None:
    plan = _plan(str(tmp_path))
    assert (plan.host, plan.inside, plan.value, plan.is_dir) == (tmp_path, "/mnt/kernel-src",
                                                                 "/mnt/kernel-src", True)


def test_kernel_tarball_keeps_its_name(tmp_path: Path) -> None:
    tarball = tmp_path / "linux-2.6.20.tar.bz2"
    tarball.write_bytes(b"x")
    plan = _plan(str(tarball))
    assert (plan.inside, plan.value, plan.is_dir) == ("/mnt/linux-2.6.20.tar.bz2",
                                                      "/mnt/linux-2.6.20.tar.bz2", False)


def test_git_repository_keeps_its_ref(tmp_path: Path) -> None:
    plan = _plan(f"{tmp_path}@v2.6.20")
    assert plan.host == tmp_path
    assert plan.value == "/mnt/kernel-src.git@v2.6.20"


def test_directory_with_at_sign_in_its_name_is_a_directory(tmp_path: Path) -> None:
    odd = tmp_path / "linux@2.6.20"
    odd.mkdir()
    assert _plan(str(odd)).value == "/mnt/kernel-src"


@pytest.mark.parametrize("value", ["relative/linux", "/no/such/linux-2.6.20", "/no/such/repo@v2.6.20"])
def test_unusable_kernel_source_is_refused(value: str) -> None:
    with pytest.raises(dc.Failure, match="kernel source"):
        _plan(value)


def test_bad_git_ref_is_refused(tmp_path: Path) -> None:
    with pytest.raises(dc.Failure, match="PATH@REF"):
        _plan(f"{tmp_path}@$(reboot)")


# --- apt sources ------------------------------------------------------------------------------

HOST_SOURCES = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def test_mirrors_come_from_the_hosts_deb822_sources() -> None:
    assert dc.mirrors_from_apt(HOST_SOURCES) == ("http://deb.debian.org/debian",
                                                 "http://deb.debian.org/debian-security")


def test_disabled_and_source_only_stanzas_are_skipped() -> None:
    text = ("Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n"
            "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n\n"
            "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n")
    assert dc.mirrors_from_apt(text) == ("http://mirror.example/debian", None)


def test_one_line_sources_list_is_understood() -> None:
    lst = ("# comment\ndeb [arch=amd64] http://ftp.example/debian bookworm main\n"
           "deb http://security.example/debian-security bookworm-security main\n")
    assert dc.mirrors_from_apt("", lst) == ("http://ftp.example/debian",
                                            "http://security.example/debian-security")


def test_chroot_sources_are_those_of_a_real_release() -> None:
    text = dc.chroot_sources("trixie", "http://m/debian", "http://m/debian-security", "/k.pgp")
    stanzas = [s for s in text.split("\n\n") if s.strip()]
    assert len(stanzas) == 2
    assert "Suites: trixie trixie-updates" in stanzas[0] and "URIs: http://m/debian\n" in stanzas[0]
    assert "Suites: trixie-security" in stanzas[1] and "URIs: http://m/debian-security" in stanzas[1]
    assert all("Signed-By: /k.pgp" in s for s in stanzas)


def test_unstable_has_no_updates_or_security_suite() -> None:
    text = dc.chroot_sources("sid", "http://m/debian", "http://m/debian-security", None)
    assert "Suites: sid\n" in text
    assert "security" not in text and "Signed-By" not in text


# --- mounts ------------------------------------------------------------------------------------

MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:5 / /dev rw shared:2 - devtmpfs udev rw
90 22 0:21 / /work/chroots/bookworm/proc rw - proc proc rw
91 22 0:20 / /work/chroots/bookworm/sys rw - sysfs sysfs rw
92 22 0:5 / /work/chroots/bookworm/dev rw - devtmpfs udev rw
93 92 0:24 / /work/chroots/bookworm/dev/pts rw - devpts devpts rw
94 22 254:0 /src /work/chroots/bookworm/mnt/kernel\\040src ro - ext4 /dev/vda rw
95 22 0:21 / /work/chroots/bookworm2/proc rw - proc proc rw
"""


def test_mounts_under_a_chroot_children_first_newest_first() -> None:
    assert dc.mounts_under(MOUNTINFO, Path("/work/chroots/bookworm")) == [
        "/work/chroots/bookworm/mnt/kernel src",
        "/work/chroots/bookworm/dev/pts",
        "/work/chroots/bookworm/dev",
        "/work/chroots/bookworm/sys",
        "/work/chroots/bookworm/proc",
    ]


def test_no_mounts_under_an_unmounted_chroot() -> None:
    assert dc.mounts_under(MOUNTINFO, Path("/work/chroots/trixie")) == []


# --- result lines ------------------------------------------------------------------------------


def test_counts_are_the_last_tally_of_pytest_or_harness() -> None:
    out = ("===== 3 passed in 0.10s =====\n"
           "\x1b[32m========== 212 passed, 4 skipped, 1 xfailed in 95.31s (0:01:35) ==========\x1b[0m\n")
    assert dc.result_counts(out) == "212 passed, 4 skipped, 1 xfailed in 95.31s (0:01:35)"
    harness = "progress\rharness: 180 tests, 150 pass, 30 xfail, 2 builds, 2 boots\n  rcfs-fixes build PASS\n"
    assert dc.result_counts(harness) == "180 tests, 150 pass, 30 xfail, 2 builds, 2 boots"
    assert dc.result_counts("make: *** [Makefile:31: test-kernel] Error 2\n") is None


def test_result_line_of_a_failure_names_exit_time_counts_and_error() -> None:
    out = ("harness: 180 tests, 180 error, 2 builds\n"
           "harness: error: image: apt-get source busybox failed (exit 100)\n"
           "make: *** [Makefile:31: test-kernel] Error 2\n")
    line = dc.result_line("trixie", "test-kernel", 2, 372.4, out)
    assert line == ("debian-chroot: trixie: make test-kernel: FAILED (exit 2) in 6m12s; "
                    "180 tests, 180 error, 2 builds; "
                    "harness: error: image: apt-get source busybox failed (exit 100)")


def test_result_line_of_a_success() -> None:
    line = dc.result_line("bookworm", "test", 0, 42.0, "=== 200 passed in 41.0s ===\n")
    assert line == "debian-chroot: bookworm: make test: ok (exit 0) in 42.0s; 200 passed in 41.0s"


def test_a_python_traceback_gives_its_exception_line() -> None:
    out = ("Traceback (most recent call last):\n  File \"x\", line 1\n"
           "ModuleNotFoundError: No module named 'harness.results.html'\n"
           "make: *** [Makefile:31: test-kernel] Error 1\n")
    assert dc.last_error(out) == "ModuleNotFoundError: No module named 'harness.results.html'"


def test_first_failure_of_a_summary_prefers_the_build() -> None:
    summary = {
        "builds": [{"kernel": "rcfs-fixes/default", "status": "PASS", "message": None},
                   {"kernel": "rcfs-testss/default", "status": "FAIL",
                    "message": "apt-get source busybox=1:1.35.0-4+deb12u1 failed (exit 100)\nE: ..."}],
        "boots": [],
        "tests": [{"path": "test_a.py::test_x", "status": "ERROR", "message": "setup failed"}],
    }
    assert dc.summary_failure(summary) == ("first failure: build rcfs-testss/default FAIL: "
                                           "apt-get source busybox=1:1.35.0-4+deb12u1 failed (exit 100)")


def test_first_failure_of_a_summary_falls_back_to_tests_and_none() -> None:
    tests = [{"path": "test_a.py::test_ok", "status": "PASS"},
             {"path": "test_a.py::test_skip", "status": "SKIP"},
             {"path": "test_a.py::test_x", "status": "FAIL", "message": "assert 1 == 2"}]
    summary = {"builds": [{"kernel": "k", "status": "PASS"}], "boots": [], "tests": tests}
    assert dc.summary_failure(summary) == "first failure: test test_a.py::test_x FAIL: assert 1 == 2"
    assert dc.summary_failure({"builds": [], "tests": tests[:2]}) is None


def test_result_line_prefers_the_recorded_failure() -> None:
    line = dc.result_line("trixie", "test-kernel", 2, 5.0, "harness: error: x\n",
                          "first failure: build k FAIL: y")
    assert line.endswith("; no test counts; first failure: build k FAIL: y")
