"""The real guest userland: busybox, dropbear and rcfs-probe built from Debian sources into a tmp cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import cache, image, resources
from harness.errors import StageError
from harness.image import cpio
from harness.kernel import config

DEFAULT = resources.shipped("images") / "default"
# The user's downloads, read before the autouse fixture points HARNESS_CACHE at a tmp dir:
# copied into the test's cache so the sources are not downloaded again.
USER_DOWNLOADS = cache.root() / "downloads" / "debian"


def _copy_downloads() -> int:
    dest = cache.subdir("downloads") / "debian"
    dest.mkdir(parents=True, exist_ok=True)
    copied = 0
    if USER_DOWNLOADS.is_dir():
        for f in USER_DOWNLOADS.iterdir():
            if f.is_file() and ".bad-" not in f.name:
                shutil.copy2(f, dest / f.name)
                copied += 1
    return copied


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> image.Image:
    """The default image, built once in a cache of its own (never the user's)."""
    tmp_cache = tmp_path_factory.mktemp("cache")
    saved = os.environ.get("HARNESS_CACHE")
    os.environ["HARNESS_CACHE"] = str(tmp_cache)
    try:
        try:
            image.guest_toolchain()
        except StageError as exc:
            pytest.skip(str(exc))
        _copy_downloads()
        try:
            img = image.build_image(image.load_recipe(DEFAULT))
        except StageError as exc:
            if not any(image.debian_downloads().glob("*.dsc")):
                pytest.skip(f"Debian sources could not be had here (no network?): {exc}")
            raise
        assert img.directory.is_relative_to(tmp_cache)
        return img
    finally:
        if saved is None:
            os.environ.pop("HARNESS_CACHE", None)
        else:
            os.environ["HARNESS_CACHE"] = saved


def _members(img: image.Image) -> dict[str, cpio.CpioEntry]:
    return {e.path: e for e in cpio.read_cpio(img.initramfs.read_bytes())}


def _extract(entries: dict[str, cpio.CpioEntry], path: str, dest: Path) -> Path:
    out = dest / Path(path).name
    out.write_bytes(entries[path].data)
    out.chmod(0o755)
    image.check_static_i386(out)
    return out


def test_image_records_the_exact_debian_versions(built: image.Image) -> None:
    manifest = json.loads((built.directory / "image.json").read_text())
    recipe = image.load_recipe(DEFAULT)
    for name in ("busybox", "dropbear"):
        version = manifest["sources"][name]["version"]
        assert built.sources[name] == version
        assert recipe.packages[name].upstream.admits_debian(version)
        entry = built.directory.parent.parent / "userland" / manifest["userland"][name]
        assert json.loads((entry / "userland.json").read_text())["source"]["version"] == version


def test_busybox_is_allnoconfig_plus_the_fragment(built: image.Image) -> None:
    manifest = json.loads((built.directory / "image.json").read_text())
    entry = built.directory.parent.parent / "userland" / manifest["userland"]["busybox"]
    final = config.read_dotconfig((entry / "busybox.config").read_text())
    wanted = config.parse_fragment((DEFAULT / "busybox.config").read_text(), "busybox.config")
    assert config.lost_symbols(wanted, (entry / "busybox.config").read_text()) == []
    assert final.get("CONFIG_TC", "n") == "n" and final.get("CONFIG_VI", "n") == "n"
    on = {s for s, v in final.items() if v == "y"}
    # nothing beyond the fragment but kconfig's own always-on symbols
    assert on - set(wanted) <= {"CONFIG_HAVE_DOT_CONFIG", "CONFIG_INSTALL_APPLET_SYMLINKS",
                                "CONFIG_NO_DEBUG_LIB", "CONFIG_FEATURE_BUFFERS_USE_MALLOC",
                                "CONFIG_SHELL_ASH", "CONFIG_TRY_LOOP_CONFIGURE"}


def test_image_holds_working_binaries(built: image.Image, tmp_path: Path) -> None:
    entries = _members(built)
    for path in ("bin/busybox", "usr/sbin/dropbear", "usr/bin/dropbearkey", "bin/rcfs-probe"):
        _extract(entries, path, tmp_path)
    links = {p for p, e in entries.items() if e.kind == "symlink"}
    for applet in ("bin/sh", "bin/mount", "sbin/ifconfig", "sbin/route", "bin/mknod",
                   "sbin/poweroff", "sbin/reboot", "bin/ping", "usr/bin/awk", "bin/dmesg"):
        assert applet in links, applet
    # i386 binaries usually run on an x86_64 host: check the host key with
    # dropbear's own tool, the shell, and rcfs-probe's output format.
    key = tmp_path / "hostkey"
    key.write_bytes(entries["etc/dropbear/dropbear_ed25519_host_key"].data)
    try:
        out = subprocess.run([str(tmp_path / "dropbearkey"), "-y", "-f", str(key)],
                             capture_output=True, text=True, timeout=30)
    except OSError as exc:
        pytest.skip(f"cannot run i386 binaries on this host: {exc}")
    assert f"Fingerprint: {built.host_key_fingerprint}" in out.stdout
    sh = subprocess.run([str(tmp_path / "busybox"), "sh", "-c",
                         "i=0; while [ $i -lt 3 ]; do i=$((i + 1)); done; echo \"$i\"; "
                         "printf '%s\\n' \"${PWD%%/*}x\"; seq 2 | tail -c 2"],
                        capture_output=True, text=True, timeout=30)
    assert (sh.returncode, sh.stdout) == (0, "3\nx\n2\n")
    probe = str(tmp_path / "rcfs-probe")
    target = tmp_path / "written"
    res = subprocess.run([probe, "-x", "-n", "3000", "write", str(target), "41"],
                         capture_output=True, text=True)
    assert res.returncode == 0
    assert res.stdout.splitlines() == ["open: OK", "write: OK 3000", "close: OK"]
    assert target.read_bytes() == b"A" * 3000
    res = subprocess.run([probe, "read", str(tmp_path / "missing")], capture_output=True,
                         text=True)
    assert (res.returncode, res.stdout) == (1, "open: ENOENT\n")
    res = subprocess.run([probe, "mount", "none", str(tmp_path), "no-such-fs", "-"],
                         capture_output=True, text=True)
    assert res.returncode == 1 and res.stdout.startswith("mount: E")
    # -t: an operation that blocks (open of a FIFO nobody writes) is given up on,
    # and the output pipe is not held open by the blocked child
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    res = subprocess.run([probe, "-t", "200", "read", str(fifo)], capture_output=True, text=True,
                         timeout=30)
    assert (res.returncode, res.stdout) == (3, "read: TIMEOUT\n")
    with open(fifo, "w"):  # let the blocked child go
        pass
    res = subprocess.run([probe, "-t", "5000", "read", str(target)], capture_output=True, text=True,
                         timeout=30)
    assert (res.returncode, res.stdout) == (0, "open: OK\nread: OK 3000\n" + "A" * 3000 + "\nclose: OK\n")
    # cleanup of a directory that is no rcfs mount, on a host without rcfs: nothing to do
    res = subprocess.run([probe, "cleanup", str(tmp_path)], capture_output=True, text=True)
    assert (res.returncode, res.stdout) == (0, "")


def test_second_build_comes_from_the_cache(built: image.Image, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE", str(built.directory.parent.parent))
    again = image.build_image(image.load_recipe(DEFAULT))
    assert again.cached and again.key == built.key and again.sources == built.sources
