"""Faults on the real guest: each ends in a clear result, leaves no process, and the harness
still works on the next run.

Guest faults (kernel crash, QEMU killed, SSH server killed, hung command) run an inner pytest
session (tests/target/faults_inner/inner_*.py) in a subprocess and check its JUnit outcome per
test, the plugin's build/boot records and that none of its QEMUs is left.  The boot that never
finishes uses the Python API.  Ctrl-C runs the CLI in its own process group and sends SIGINT
to the group, as a terminal does.

The cached-source-tarball fault (corrupted or truncated) is covered by
tests/unit/test_source.py::test_corrupted_cached_tarball_is_moved_aside.

Processes are attributed by an environment tag (``HARNESS_FAULT_TAG``) that every child
inherits, QEMU included: other runs sharing this cache start QEMUs too, so a before/after
comparison of every QEMU would blame them on us.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import cache
from harness import results as report
from harness.kernel import build, config, patches, source
from harness.kernel.source import Source
from harness.machine.vm import BootError
from harness.run import kept, target

REPO = Path(__file__).resolve().parents[2]
INNER = Path(__file__).resolve().parent / "faults_inner"
HARNESS = [sys.executable, "-m", "harness"]
TAG = "HARNESS_FAULT_TAG"
INNER_TIMEOUT = 240.0


# --- processes ---------------------------------------------------------------------


def tagged(tag: str) -> list[tuple[int, str]]:
    """Live processes (pid, command line) whose environment carries ``tag``."""
    marker = f"{TAG}={tag}".encode()
    found: list[tuple[int, str]] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if marker not in Path(f"/proc/{entry.name}/environ").read_bytes().split(b"\0"):
                continue
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()
        except OSError:
            continue
        found.append((int(entry.name), cmdline.replace(b"\0", b" ").decode(errors="replace").strip()))
    return found


def tagged_qemus(tag: str) -> list[tuple[int, str]]:
    return [(pid, cmd) for pid, cmd in tagged(tag) if "qemu-system" in cmd]


def group_members(pgid: int) -> list[tuple[int, str]]:
    """Live (not zombie) processes of process group ``pgid``."""
    members: list[tuple[int, str]] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append((int(entry.name), cmdline.replace(b"\0", b" ").decode(errors="replace")))
    return members


def wait_gone(tag: str, seconds: float = 10.0) -> list[tuple[int, str]]:
    """Wait up to ``seconds`` for the tagged QEMUs to go; returns those still there."""
    deadline = time.monotonic() + seconds
    while (left := tagged_qemus(tag)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def kill_tagged(tag: str) -> None:
    for pid, _ in tagged(tag):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def tagged_env(tag: str) -> dict[str, str]:
    env = dict(os.environ, **{TAG: tag})
    env.pop("PYTEST_ADDOPTS", None)
    return env


@contextlib.contextmanager
def cli(args: list[str], tag: str, stderr: Path) -> Iterator[subprocess.Popen[str]]:
    """``harness ARGS`` in a new session (its own process group); always cleaned up."""
    with stderr.open("w") as err:
        p = subprocess.Popen([*HARNESS, *args], cwd=REPO, env=tagged_env(tag), text=True,
                             stdout=subprocess.PIPE, stderr=err, start_new_session=True)
    try:
        yield p
    finally:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        kill_tagged(tag)


def interrupt(p: subprocess.Popen[str], within: float) -> tuple[int, float]:
    """Ctrl-C: SIGINT to the whole process group; (exit code, seconds to exit)."""
    start = time.monotonic()
    os.killpg(p.pid, signal.SIGINT)
    try:
        code = p.wait(timeout=within)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {within:g}s after SIGINT")
    return code, time.monotonic() - start


def wait_for(what: str, predicate: Callable[[], bool], timeout: float,
             p: subprocess.Popen[str] | None = None, stderr: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if p is not None and p.poll() is not None:
            text = stderr.read_text() if stderr else ""
            pytest.fail(f"exited {p.returncode} before {what}:\n{text[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:g}s")
        time.sleep(0.1)


@pytest.fixture(autouse=True)
def _needs_source(kernel_source: Source) -> None:
    """Skip (with the reason saying how to get one) without a 2.6.20 source."""


# --- inner sessions ------------------------------------------------------------------


@dataclass
class InnerRun:
    returncode: int
    seconds: float
    output: str
    tests: dict[str, report.TestRecord]  # by test function name
    boots: list[report.BootRecord]
    left: list[tuple[int, str]]  # tagged QEMUs still running after the session


def run_inner(name: str, directory: Path) -> InnerRun:
    """Run faults_inner/inner_NAME.py in its own pytest process (bounded by INNER_TIMEOUT)."""
    tag = uuid.uuid4().hex
    junit, records = directory / "junit.xml", directory / "records.json"
    argv = [sys.executable, "-m", "pytest", str(INNER / f"inner_{name}.py"),
            "-o", "python_files=inner_*.py", "-p", "no:cacheprovider", "-o", "junit_family=xunit2",
            "--kernel-series", "rcfs-testss", f"--junitxml={junit}", f"--harness-records={records}",
            "-q", "-rfE"]
    start = time.monotonic()
    p = subprocess.Popen(argv, cwd=REPO, env=tagged_env(tag), text=True, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = p.communicate(timeout=INNER_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        output, _ = p.communicate()
        kill_tagged(tag)
        pytest.fail(f"inner session {name} hung: killed after {INNER_TIMEOUT:g}s\n{output[-4000:]}")
    seconds = time.monotonic() - start
    left = wait_gone(tag)
    kill_tagged(tag)
    assert junit.is_file(), f"inner session {name} wrote no JUnit XML (exit {p.returncode}):\n{output}"
    tests = {r.path.rsplit("::", 1)[-1]: r for r in report.parse_junit(junit, f"inner-{name}")}
    session = report.SessionRecords.load(records) if records.is_file() else report.SessionRecords()
    boots = [b for k in session.kernels for b in k.boots]
    return InnerRun(p.returncode, seconds, output, tests, boots, left)


def check_fault(run: InnerRun, fault: str, expected: str, max_seconds: float, *needles: str) -> None:
    """The common verdict: the faulty test's status, the next test passes on a second boot,
    no QEMU left; ``needles`` must appear in the faulty test's message or details."""
    first, second = run.tests.get("test_1_" + fault), run.tests.get("test_2_next_test_passes")
    assert first is not None and second is not None, f"tests missing from JUnit: {run.output}"
    assert not run.left, f"QEMU left behind: {run.left}"
    assert second.status == "PASS", f"the next test did not pass: {second.message}\n{run.output}"
    assert [b.status for b in run.boots] == ["PASS", "PASS"], f"boots: {run.boots}"
    assert first.duration is not None and first.duration < max_seconds, (
        f"{fault} took {first.duration}s (limit {max_seconds}s)")
    text = f"{first.message}\n{first.details}"
    for needle in needles:
        assert needle in text, f"{needle!r} not in the report of {fault}:\n{text[:3000]}"
    assert first.status == expected, (
        f"{fault}: JUnit says {first.status}, expected {expected}: {first.message}")


@pytest.fixture(scope="module")
def crash_run(kernel_source: Source, tmp_path_factory: pytest.TempPathFactory) -> InnerRun:
    return run_inner("crash", tmp_path_factory.mktemp("crash"))


def test_kernel_crash_is_a_fail_with_the_panic_and_the_next_test_gets_a_fresh_vm(
        crash_run: InnerRun) -> None:
    # crash_kernel() oopses the guest (NULL call in sys_sync) with panic_on_oops set
    check_fault(crash_run, "kernel_crashes", "FAIL", 60, "Kernel panic - not syncing",
                "unable to handle kernel NULL pointer dereference")
    assert "1 failed, 1 passed" in crash_run.output, crash_run.output[-2000:]


def test_each_boot_keeps_its_own_console_log(crash_run: InnerRun) -> None:
    """The crashed VM's console must survive the next boot (the records point at it)."""
    logs = [str(b.console_log_path) for b in crash_run.boots]
    assert len(set(logs)) == len(logs), f"boots share a console log (the first is overwritten): {logs}"
    first = Path(logs[0]).read_bytes().decode(errors="replace")
    assert "Kernel panic - not syncing" in first


def test_qemu_killed_is_an_error_not_a_hang(tmp_path: Path) -> None:
    run = run_inner("qemu_killed", tmp_path)
    assert "1 passed, 1 error" in run.output, run.output[-3000:]  # pytest's own verdict
    check_fault(run, "qemu_killed", "ERROR", 30, "the VM is not running")


def test_sshd_killed_is_an_error_and_the_vm_is_replaced(tmp_path: Path) -> None:
    run = run_inner("sshd_killed", tmp_path)
    assert "1 passed, 1 error" in run.output, run.output[-3000:]
    check_fault(run, "sshd_killed", "ERROR", 40, "SSH")


def test_hung_command_times_out_as_an_error_within_seconds(tmp_path: Path) -> None:
    run = run_inner("hang", tmp_path)
    assert "1 passed, 1 error" in run.output, run.output[-3000:]
    # 3 s command timeout + 2 s to let dropbear close the killed command's channel
    check_fault(run, "command_hangs", "ERROR", 15, "timed out after 3s")


# --- a kernel that never finishes booting --------------------------------------------


def test_boot_that_never_finishes_is_a_boot_error_within_the_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    prepared = target.prepare(target.KernelSpec("default", "rcfs-testss"))
    tag = uuid.uuid4().hex
    monkeypatch.setenv(TAG, tag)  # QEMU inherits it
    # /bin/cat as init waits on the console forever: no init-start, no sshd
    options = target.BootOptions(boot_timeout=15, append="rdinit=/bin/cat")
    start = time.monotonic()
    with pytest.raises(BootError) as err, target.booted(prepared, options):
        pytest.fail("the guest booted with rdinit=/bin/cat")
    seconds = time.monotonic() - start
    assert 14 < seconds < 25, f"BootError after {seconds:.1f}s (boot timeout 15s)"
    text = str(err.value)
    assert "timed out after 15s waiting for 'init-start'" in text, text[:2000]
    # the console tail is in the message: the kernel came up to userspace, /init never ran
    assert "--- last console lines" in text, text[:2000]
    assert "Freeing unused kernel memory" in err.value.console_tail, text[:2000]
    assert err.value.console_tail in text
    assert not wait_gone(tag, 5), "QEMU left behind"


# --- Ctrl-C --------------------------------------------------------------------------


BUILD_SET = "CONFIG_MAX_RC_HIERARCHIES=5"


def build_entry(series: str, config_name: str, overrides: list[str]) -> tuple[str, Path]:
    """The cache entry (key, directory) that ``harness build`` uses for these inputs."""
    loaded = patches.load_series(series)
    request = build.BuildRequest(
        source=source.resolve(None, allow_download=False), series=loaded,
        config=config.render(config_name, series_chain=loaded.chain, overrides=overrides))
    return build.entry_dir(request, build.detect_toolchain())


def remove_entry(key: str, directory: Path) -> None:
    with cache.lock(f"build-{key}"):
        cache.remove_tree(directory)


def test_ctrl_c_during_build_leaves_no_process_and_no_claim_of_success(tmp_path: Path) -> None:
    key, entry = build_entry("rcfs", "default", [BUILD_SET])
    remove_entry(key, entry)  # a fresh build, so there is compiling to interrupt
    args = ["build", "--config", "default", "--set", BUILD_SET, "--force"]
    log = entry / "build.log"

    def compiling() -> bool:
        with contextlib.suppress(OSError):
            text = log.read_text(errors="replace")
            return "bzImage\n" in text and "\n  CC " in text.split("bzImage\n", 1)[1]
        return False

    try:
        tag = uuid.uuid4().hex
        with cli(args, tag, tmp_path / "stderr1") as p:
            wait_for("compiling in build.log", compiling, 300, p, tmp_path / "stderr1")
            time.sleep(1)
            code, seconds = interrupt(p, within=10)
            left = group_members(p.pid)
        stderr = (tmp_path / "stderr1").read_text()
        assert code == 130, f"exit {code} after SIGINT:\n{stderr[-2000:]}"
        assert stderr.splitlines()[-1] == "harness: interrupted", stderr[-2000:]
        assert not left, f"processes of the build left running: {left}"
        assert entry.is_dir()
        assert not (entry / "meta.json").exists(), "an interrupted build claims success"
        leftovers = [p.name for p in entry.iterdir() if p.name.startswith(".")]
        leftovers += [p.name for p in entry.parent.iterdir() if p.name.startswith(f".{entry.name}.")]
        assert not leftovers, f"staging left behind: {leftovers}"
        print(f"build interrupted: exit {code} {seconds:.1f}s after SIGINT")

        # the next run works: the same build to completion
        start = time.monotonic()
        done = subprocess.run([*HARNESS, *args], cwd=REPO, env=tagged_env(uuid.uuid4().hex),
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        bzimage = Path(done.stdout.strip())
        assert bzimage.is_file() and entry in bzimage.parents
        meta = build.load_meta(entry)
        assert meta is not None and meta["paths"]["bzImage"] == str(bzimage)
        print(f"rebuild after the interruption: {time.monotonic() - start:.1f}s")
    finally:
        remove_entry(key, entry)


@pytest.mark.parametrize("when", ["booting", "kept"])
def test_ctrl_c_during_boot_stops_qemu(tmp_path: Path, when: str) -> None:
    target.prepare(target.KernelSpec("default", "rcfs"))  # cached: the CLI's default kernel
    tag = uuid.uuid4().hex
    stderr_path = tmp_path / "stderr"
    with cli(["boot", "--keep"], tag, stderr_path) as p:
        if when == "booting":
            console = cache.root() / "vm" / f"rcfs-default-{p.pid}.console.log"
            wait_for("VM console log", console.exists, 120, p, stderr_path)
            time.sleep(0.5)
            assert "booted" not in stderr_path.read_text()
        else:
            wait_for("'kept running' on stderr", lambda: "kept running" in stderr_path.read_text(),
                     120, p, stderr_path)
            assert kept.read() is not None
        assert tagged_qemus(tag), "no QEMU to interrupt"
        code, seconds = interrupt(p, within=10)
        stderr = stderr_path.read_text()
        left = wait_gone(tag, 5)
        members = group_members(p.pid)
    assert not left, f"QEMU left behind: {left}"
    assert not members, f"processes left: {members}"
    if when == "booting":
        assert code == 130, f"exit {code}:\n{stderr}"
        assert stderr.splitlines()[-1] == "harness: interrupted", stderr
    else:
        assert code == 0, f"exit {code} (Ctrl-C is how a kept VM is stopped):\n{stderr}"
        assert "stopping the VM" in stderr, stderr
        state = kept.state_path()
        assert not state.exists() or json.loads(state.read_text()).get("pid") != p.pid
    print(f"boot interrupted ({when}): exit {code} {seconds:.1f}s after SIGINT")


def test_ctrl_c_during_a_test_run_stops_qemu(tmp_path: Path) -> None:
    target.prepare(target.KernelSpec("default", "rcfs-testss"))  # cached
    tag = uuid.uuid4().hex
    stderr_path = tmp_path / "stderr"
    args = ["test", "--config", "default", "--series", "rcfs-testss", "--results", str(tmp_path / "results"),
            "--", "-k", "smoke", "--kernel-fresh-boot"]  # a real boot: a window to interrupt in
    with cli(args, tag, stderr_path) as p:
        wait_for("a QEMU of the test run", lambda: bool(tagged_qemus(tag)), 180, p, stderr_path)
        # the cell's pytest process names the console log; interrupt when sshd is up, as the
        # first test logs in
        inner = [pid for pid, cmd in tagged(tag) if " -m pytest " in cmd]
        assert len(inner) == 1, tagged(tag)
        pattern = f"rcfs-testss-default-boot*-{inner[0]}.console.log"

        def sshd_up() -> bool:
            for console in (cache.root() / "vm").glob(pattern):
                with contextlib.suppress(OSError):
                    if "HARNESS-MILESTONE: sshd-up" in console.read_bytes().decode(errors="replace"):
                        return True
            return False

        wait_for("sshd-up on the guest console", sshd_up, 60, p, stderr_path)
        code, seconds = interrupt(p, within=20)
        left = wait_gone(tag, 5)
        members = group_members(p.pid)
    stderr = stderr_path.read_text()
    assert not left, f"QEMU left behind: {left}"
    assert not members, f"processes left: {members}"
    assert code == 130, f"exit {code}:\n{stderr[-3000:]}"
    # what ran is written, marked interrupted (tests/target/test_interrupt_target.py has the details)
    (summary,) = list((tmp_path / "results").rglob(report.SUMMARY_JSON))
    assert report.load_summary(summary).interrupted == "SIGINT"
    assert "INTERRUPTED by SIGINT" in stderr, stderr[-3000:]
    print(f"test run interrupted: exit {code} {seconds:.1f}s after SIGINT")
