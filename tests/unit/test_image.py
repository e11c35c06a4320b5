"""The guest image stage: recipes, the cpio writer, safe tar extraction, /init, keys, assembly (all pure)."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import stat
import struct
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import archive, cache, image, resources
from harness.errors import InputError, StageError
from harness.image import aptsrc, assemble, cpio, toolchain, userland
from harness.image.cpio import CpioMember
from harness.image.debsrc import DebianSource, DscFile

DEFAULT = resources.shipped("images") / "default"
HAVE_KEYGEN = shutil.which("ssh-keygen") is not None


# --- helpers ------------------------------------------------------------------------


def copy_recipe(tmp_path: Path, edit: dict[str, str] | None = None, append: str = "") -> Path:
    """A copy of the default recipe (and the files it names) under tmp_path."""
    d = tmp_path / "images" / "default"
    shutil.copytree(DEFAULT, d)
    for program in ("rcfs-probe", "rcfs-ns"):
        shutil.copytree(resources.shipped("images") / program, tmp_path / "images" / program)
    recipe = d / "recipe.toml"
    text = recipe.read_text()
    for old, new in (edit or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    recipe.write_text(text + append)
    return recipe


def load_error(recipe: Path) -> str:
    with pytest.raises(InputError) as info:
        image.load_recipe(recipe)
    message = str(info.value)
    assert "\n" not in message
    return message


def fake_elf(path: Path, *, machine: int = 3, interp: bool = False) -> Path:
    """A minimal 32-bit ELF header (with one PT_INTERP/PT_LOAD program header)."""
    phoff = 52
    header = b"\x7fELF" + bytes([1, 1, 1]) + b"\0" * 9
    header += struct.pack("<HHIIIIIHHHHHH", 2, machine, 1, 0, phoff, 0, 0, 52, 32, 1, 0, 0, 0)
    ph = struct.pack("<IIIIIIII", 3 if interp else 1, 0, 0, 0, 0, 0, 5, 0x1000)
    path.write_bytes(header + ph)
    path.chmod(0o755)
    return path


# --- recipe ---------------------------------------------------------------------------


def test_default_recipe_loads() -> None:
    r = image.load_recipe(DEFAULT / "recipe.toml")
    assert r.name == "default"
    assert [(u.name, u.uid, u.home) for u in r.users] == [
        ("root", 0, "/root"), ("alice", 1000, "/home/alice"), ("bob", 1001, "/home/bob")]
    assert str(r.packages["busybox"].upstream) == ">=1.35, <1.38"
    assert r.packages["busybox"].upstream.admits("1.35.0") and r.packages["busybox"].upstream.admits("1.37.0")
    assert not r.packages["busybox"].upstream.admits("1.38.0")
    assert r.packages["dropbear"].upstream.admits("2022.83")
    assert r.packages["dropbear"].upstream.admits("2025.89")
    assert not r.packages["dropbear"].upstream.admits("2022.82")
    assert r.packages["dropbear"].source == "dropbear"
    assert b"DROPBEAR_SVR_PASSWORD_AUTH 0" in (r.packages["dropbear"].options or b"")
    assert b"CONFIG_STATIC=y" in (r.packages["busybox"].config or b"")
    assert [p.install for p in r.programs] == ["/bin/rcfs-probe", "/bin/rcfs-ns"]
    assert {g.name: g.gid for g in r.groups} == {"root": 0, "alice": 1000, "bob": 1001, "tty": 5}
    assert r.network.netmask == "255.255.255.0"
    assert len(r.recipe_hash) == 16
    assert image.resolve_recipe("default").recipe_hash == r.recipe_hash
    assert image.load_recipe(DEFAULT).recipe_hash == r.recipe_hash  # a directory works too


@pytest.mark.parametrize(
    ("edit", "append", "expected"),
    [
        ({'name = "default"': 'name = "default'}, "", "malformed TOML"),
        ({'name = "default"\n': ""}, "", "missing key 'name'"),
        ({}, "colour = 1\n", "unknown key(s) 'colour'"),
        ({'uid = 1001': 'uid = 1000'}, "", "uid 1000 appears twice"),
        ({'name = "bob"': 'name = "Bob!"'}, "", "not a valid user name"),
        ({'uid = 1001': 'uid = "1001"'}, "", "'uid' must be int, not str"),
        ({'uid = 1001': 'uid = 70000'}, "", "out of range"),
        ({'home = "/root"': 'home = "/../etc"'}, "", "escapes the root"),
        ({'home = "/root"': 'home = "root"'}, "", "must be an absolute guest path"),
        ({'install = "/bin/rcfs-probe"': 'install = "/bin/../../x"'}, "", "escapes the root"),
        ({'init = "init.j2"': 'init = "nope.j2"'}, "", "cannot read"),
        ({'options = "localoptions.h"': 'options = "missing.h"'}, "", "cannot read"),
        ({'upstream = ">=1.35, <1.38"': 'upstream = "latest"'}, "", "not an upstream version clause"),
        ({'upstream = ">=1.35, <1.38"': 'upstream = ">=1.35,"'}, "", "not an upstream version clause"),
        ({'upstream = ">=2022.83, <2026"': 'upstream = 2022'}, "", "'upstream' must be str"),
        ({'upstream = ">=2022.83, <2026"': 'version = "2022.83-1+deb12u3"'}, "",
         "name the upstream versions instead"),
        ({'config = "busybox.config"': 'config = "busybox.config"\nsource = "Busy Box"'}, "",
         "not a Debian source package name"),
        ({'prefix = 24': 'prefix = 31'}, "", "prefix 31 out of range"),
        ({'address = "10.0.2.15"': 'address = "10.0.2.300"'}, "", "not an IPv4 address"),
        ({}, '\n[[files]]\npath = "/etc/x"\n', "exactly one of 'content' and 'source'"),
        ({}, '\n[[files]]\npath = "/etc/x"\ncontent = "a"\nmode = 0o17777\n',
         "not a permission mode"),
        ({}, '\n[[files]]\npath = "/etc/x"\nsource = "../../../../etc/shadow-nope"\n',
         "cannot read"),
        ({}, '\n[[groups]]\nname = "wheel"\ngid = 10\nmembers = ["carol"]\n',
         "member 'carol' is not a user"),
    ],
)
def test_malformed_recipes_are_one_line_input_errors(
    tmp_path: Path, edit: dict[str, str], append: str, expected: str
) -> None:
    recipe = copy_recipe(tmp_path, edit, append)
    message = load_error(recipe)
    assert expected in message
    assert str(recipe.resolve()) in message or "recipe" in message


def test_missing_package_and_unknown_package_key(tmp_path: Path) -> None:
    text = (DEFAULT / "recipe.toml").read_text()
    start = text.index("[packages.dropbear]")
    end = text.index("# Every user")
    recipe = copy_recipe(tmp_path)
    recipe.write_text(text[:start] + text[end:])
    assert "missing key 'dropbear'" in load_error(recipe)
    recipe.write_text(text.replace("[packages.busybox]\n", "[packages.busybox]\npatches = []\n"))
    assert "unknown key(s) 'patches'" in load_error(recipe)


def test_unreadable_recipe(tmp_path: Path) -> None:
    assert "cannot read" in load_error(tmp_path / "nope.toml")
    with pytest.raises(InputError, match="no image recipe 'nope'"):
        image.resolve_recipe("nope")


def test_recipe_hash_is_stable(tmp_path: Path) -> None:
    base = image.load_recipe(DEFAULT).recipe_hash
    # Comments, blank lines and another location do not matter...
    recipe = copy_recipe(tmp_path, {"name = \"default\"": "# a comment\n\nname = \"default\""})
    assert image.load_recipe(recipe).recipe_hash == base
    # ...and neither does key order inside a table.
    recipe.write_text(recipe.read_text().replace(
        'address = "10.0.2.15"       # QEMU user-mode networking defaults\nprefix = 24',
        'prefix = 24\naddress = "10.0.2.15"'))
    assert image.load_recipe(recipe).recipe_hash == base


@pytest.mark.parametrize(
    "change",
    [
        lambda d: (d / "init.j2").write_text((d / "init.j2").read_text() + "# edit\n"),
        lambda d: (d / "busybox.config").write_text("CONFIG_STATIC=y\n"),
        lambda d: (d / "localoptions.h").write_text("#define DO_MOTD 0\n"),
        lambda d: (d.parent / "rcfs-probe" / "rcfs-probe.c").write_text("int main(){}\n"),
        lambda d: (d / "recipe.toml").write_text(
            (d / "recipe.toml").read_text().replace("uid = 1001", "uid = 1002")),
        lambda d: (d / "recipe.toml").write_text(
            (d / "recipe.toml").read_text().replace('hostname = "rcfs-guest"', 'hostname = "x"')),
    ],
    ids=["init", "busybox-config", "localoptions", "program", "user", "hostname"],
)
def test_recipe_hash_sees_every_input(tmp_path: Path, change) -> None:  # type: ignore[no-untyped-def]
    recipe = copy_recipe(tmp_path)
    before = image.load_recipe(recipe).recipe_hash
    change(recipe.parent)
    assert image.load_recipe(recipe).recipe_hash != before


# --- /init ----------------------------------------------------------------------------


def test_init_renders_with_milestones_in_order() -> None:
    text = image.render_init(image.load_recipe(DEFAULT))
    assert text.startswith("#!/bin/sh\n")
    body = text[text.index("export PATH"):]  # after the header comment
    positions = [body.index(f'milestone "{m}"') for m in image.INIT_MILESTONES]
    assert positions == sorted(positions)
    assert image.MILESTONE_FAILED in body and image.MILESTONE_SHUTDOWN in body
    for name, kind, major, minor, _mode in image.DEVICES:
        assert f"\n{name} {kind} {major} {minor} " in body
    for fs in ("proc /proc", "sysfs /sys", "devpts /dev/pts", "tmpfs /tmp"):
        assert fs in body
    assert "ifconfig eth0 10.0.2.15 netmask 255.255.255.0 up" in body
    assert "route add default gw 10.0.2.2" in body
    assert f"-r {image.HOST_KEY_PATH}" in body and "-p 22" in body
    assert ":0016 00000000:0000 0A" in body  # port 22 listening, in /proc/net/tcp
    assert "reboot -f" in body and "trap 'shutdown_vm poweroff' USR2" in body
    assert "{{" not in text and "{%" not in text


def test_init_template_errors(tmp_path: Path) -> None:
    recipe = copy_recipe(tmp_path)
    (recipe.parent / "init.j2").write_text("#!/bin/sh\necho {{ nonsense }}\n")
    with pytest.raises(InputError, match="'nonsense' is undefined"):
        image.render_init(image.load_recipe(recipe))
    (recipe.parent / "init.j2").write_text("#!/bin/sh\n{% if %}\n")
    with pytest.raises(InputError, match=r"init.j2: line 2"):
        image.render_init(image.load_recipe(recipe))
    (recipe.parent / "init.j2").write_text("echo no shebang\n")
    with pytest.raises(InputError, match="#!"):
        image.render_init(image.load_recipe(recipe))


# --- cpio -----------------------------------------------------------------------------

MEMBERS = [
    cpio.directory("bin"),
    CpioMember("bin/busybox", data=b"\x7fELF fake", mode=0o755),
    cpio.symlink("bin/sh", "/bin/busybox"),
    cpio.chardev("dev/console", 5, 1),
    CpioMember("home/alice/.ssh/authorized_keys", data=b"ssh-ed25519 AAAA alice\n",
               mode=0o600, uid=1000, gid=1000),
    cpio.directory("tmp", 0o1777),
    CpioMember("init", data=b"#!/bin/sh\n", mode=0o755),
    CpioMember("odd", data=b"123"),  # sizes that need padding
]


def test_cpio_round_trip(tmp_path: Path) -> None:
    out = cpio.write_cpio(MEMBERS, tmp_path / "a.cpio.gz")
    blob = out.read_bytes()
    assert blob[:2] == b"\x1f\x8b"
    entries = {e.path: e for e in cpio.read_cpio(blob)}
    # parents were added, and every directory precedes its contents
    names = [e.path for e in cpio.read_cpio(blob)]
    for name in names:
        for parent in archive.parent_paths(name):
            assert names.index(parent) < names.index(name)
    assert entries["home"].kind == "dir" and entries["home"].mode == 0o755
    assert entries["bin/busybox"].data == b"\x7fELF fake" and entries["bin/busybox"].mode == 0o755
    assert entries["bin/sh"].kind == "symlink" and entries["bin/sh"].data == b"/bin/busybox"
    assert entries["dev/console"].kind == "chardev" and entries["dev/console"].rdev == (5, 1)
    key = entries["home/alice/.ssh/authorized_keys"]
    assert (key.uid, key.gid, key.mode) == (1000, 1000, 0o600)
    assert entries["tmp"].mode == 0o1777
    raw = gzip.decompress(blob)
    assert len(raw) % 512 == 0
    # reproducible: same members, same bytes
    assert cpio.write_cpio(MEMBERS, tmp_path / "b.cpio.gz").read_bytes() == blob


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio(1) not installed")
def test_cpio_is_readable_by_gnu_cpio(tmp_path: Path) -> None:
    raw = cpio.cpio_bytes(MEMBERS)
    listing = subprocess.run(["cpio", "-itv", "--numeric-uid-gid", "--quiet"], input=raw,
                             capture_output=True, check=True).stdout.decode()
    lines = {line.split()[-1] if "->" not in line else line.split()[-3]: line
             for line in listing.splitlines()}
    assert lines["home/alice/.ssh/authorized_keys"].startswith("-rw-------")
    assert " 1000 " in lines["home/alice/.ssh/authorized_keys"]
    assert lines["bin/sh"].startswith("lrwxrwxrwx") and "-> /bin/busybox" in lines["bin/sh"]
    assert lines["dev/console"].startswith("crw-------")
    assert lines["tmp"].startswith("drwxrwxrwt")
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["cpio", "-id", "--quiet", "--no-absolute-filenames"], input=raw, cwd=dest,
                   check=True)
    assert (dest / "odd").read_bytes() == b"123"
    assert (dest / "init").stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ([CpioMember("../etc/passwd")], "escapes the root"),
        ([CpioMember("/etc/passwd")], "absolute path"),
        ([CpioMember("a/../../b")], "'..'"),
        ([CpioMember("a/./../b")], "'..'"),
        ([CpioMember("")], "empty name"),
        ([CpioMember("a\0b")], "NUL"),
        ([CpioMember(".")], "names the root"),
        ([CpioMember("etc/x"), CpioMember("etc//x/")], "given twice"),
        ([cpio.symlink("lnk", "/etc"), CpioMember("lnk/passwd")], "passes through symlink"),
        ([cpio.symlink("a/lnk", "../.."), CpioMember("a/lnk/b/c")], "passes through symlink"),
        ([CpioMember("f"), CpioMember("f/g")], "is not a directory"),
        ([CpioMember("f", mode=0o100644)], "non-permission bits"),
        ([cpio.symlink("s", "")], "empty symlink target"),
    ],
)
def test_cpio_refuses_escaping_members(members: list[CpioMember], expected: str) -> None:
    with pytest.raises(InputError, match=expected):
        cpio.cpio_bytes(members)


# --- tar --------------------------------------------------------------------------------


def make_tar(path: Path, entries: list[tuple[str, str, str | bytes]]) -> Path:
    """entries: (name, type, payload) with type file/dir/sym/hard/chr/fifo."""
    mode = {".gz": ":gz", ".bz2": ":bz2", ".xz": ":xz"}.get(path.suffix, "")
    with tarfile.open(path, "w" + mode) as tf:  # type: ignore[call-overload]
        for name, kind, payload in entries:
            ti = tarfile.TarInfo(name)
            data = b""
            if kind == "file":
                data = payload if isinstance(payload, bytes) else payload.encode()
                ti.size = len(data)
                ti.mode = 0o755 if name.endswith(".sh") else 0o644
            elif kind == "dir":
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
            elif kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, str(payload)
            elif kind == "hard":
                ti.type, ti.linkname = tarfile.LNKTYPE, str(payload)
            elif kind == "chr":
                ti.type, ti.devmajor, ti.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "fifo":
                ti.type = tarfile.FIFOTYPE
            tf.addfile(ti, io.BytesIO(data) if kind == "file" else None)
    return path


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tar.bz2", ".tar.xz"])
def test_safe_extract_tar_good_archive(tmp_path: Path, suffix: str) -> None:
    tar = make_tar(tmp_path / f"good{suffix}", [
        ("top/", "dir", ""),
        ("top/run.sh", "file", "#!/bin/sh\n"),
        ("top/sub/data", "file", "x"),
        ("top/link", "sym", "sub/data"),
        ("top/sub/up", "sym", "../run.sh"),
        ("top/hard", "hard", "top/sub/data"),
    ])
    dest = tmp_path / "out"
    assert archive.safe_extract_tar(tar, dest) == ["top"]
    assert (dest / "top" / "link").resolve() == (dest / "top" / "sub" / "data").resolve()
    assert os.readlink(dest / "top" / "sub" / "up") == "../run.sh"
    assert (dest / "top" / "run.sh").stat().st_mode & 0o100
    assert (dest / "top" / "hard").read_text() == "x"


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([("/etc/evil", "file", "x")], "absolute path"),
        ([("../evil", "file", "x")], "'..'"),
        ([("a/../../evil", "file", "x")], "'..'"),
        ([("a/", "dir", ""), ("a/l", "sym", "../../etc")], "points outside"),
        ([("l", "sym", "/etc/passwd")], "absolute path"),
        ([("d/up", "sym", ".."), ("l", "sym", "d/up/..")], "points outside"),
        ([("loop", "sym", "loop/x")], "points outside"),
        ([("l", "sym", "sub"), ("l/f", "file", "x")], "passes through link"),
        ([("h", "hard", "/etc/passwd")], "absolute path"),
        ([("h", "hard", "not-in-archive")], "not an earlier regular file"),
        ([("null", "chr", "")], "device file refused"),
        ([("p", "fifo", "")], "FIFO file refused"),
        ([("f", "file", "a"), ("f", "file", "b")], "appears twice"),
        ([("x", "sym", "sub"), ("x", "file", "b")], "appears twice"),
    ],
)
def test_safe_extract_tar_refusals(
    tmp_path: Path, entries: list[tuple[str, str, str]], expected: str
) -> None:
    tar = make_tar(tmp_path / "bad.tar.gz", [("ok", "file", "fine"), *entries])
    dest = tmp_path / "out"
    with pytest.raises(InputError, match=expected):
        archive.safe_extract_tar(tar, dest)
    assert list(dest.iterdir()) == []  # checked before anything was written


def test_safe_extract_tar_bad_inputs(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball")
    with pytest.raises(InputError, match="not a tar archive"):
        archive.safe_extract_tar(junk, tmp_path / "out")
    good = make_tar(tmp_path / "g.tar", [("f", "file", "x")])
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "existing").write_text("")
    with pytest.raises(InputError, match="not empty"):
        archive.safe_extract_tar(good, busy)


# --- busybox config merging -------------------------------------------------------------


def test_busybox_fragment_merges_through_config_module() -> None:
    from harness.kernel import config

    dotconfig = "CONFIG_A=y\n# CONFIG_STATIC is not set\nCONFIG_TC=y\nCONFIG_S=\"x\"\n"
    wanted = config.parse_fragment("CONFIG_STATIC=y\n# CONFIG_TC is not set\n# comment\nCONFIG_S=\"y\"\n",
                                   "busybox config fragment")
    merged = config.merge(dotconfig, wanted)
    lines = merged.splitlines()
    assert "CONFIG_STATIC=y" in lines and "# CONFIG_STATIC is not set" not in lines
    assert "# CONFIG_TC is not set" in lines and "CONFIG_TC=y" not in lines
    assert lines.count('CONFIG_S="y"') == 1 and 'CONFIG_S="x"' not in lines
    assert config.lost_symbols(wanted, merged) == []
    assert config.lost_symbols(wanted, "CONFIG_TC=y\n") == [
        "CONFIG_STATIC wanted y, got not set", "CONFIG_TC wanted not set, got y",
        'CONFIG_S wanted "y", got not set']
    with pytest.raises(InputError, match="is not a kernel config line"):
        config.parse_fragment("STATIC=y\n", "busybox config fragment")


# --- apt sources --------------------------------------------------------------------------


def test_deb_src_twin(tmp_path: Path) -> None:
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://deb.debian.org/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n"
        "Components: main\nEnabled: no\n"
    )
    (etc / "sources.list.d" / "other.sources").write_text(
        "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n")
    (etc / "sources.list").write_text(
        "deb [arch=amd64 signed-by=/k.gpg] http://ftp.de.debian.org/debian bookworm main contrib\n"
        "# deb http://commented.debian.org/debian bookworm main\n")
    twin = image.deb_src_twin(etc)
    stanzas = list(aptsrc.deb822_stanzas(twin))
    assert [dict(s)["URIs"] for s in stanzas] == [
        "http://deb.debian.org/debian", "http://ftp.de.debian.org/debian"]
    assert all(dict(s)["Types"] == "deb-src" for s in stanzas)
    assert dict(stanzas[0])["Suites"] == "bookworm bookworm-updates"
    assert dict(stanzas[1])["Signed-By"] == "/k.gpg"
    assert dict(stanzas[1])["Components"] == "main contrib"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert image.deb_src_twin(empty) == image.FALLBACK_DEB_SRC


# --- keys ----------------------------------------------------------------------------------


@pytest.mark.skipif(not HAVE_KEYGEN, reason="ssh-keygen (openssh-client) not installed")
def test_keys_fingerprint_and_dropbear_format(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "k_ed25519"
    seed, pub = image.generate_ed25519(key, "test")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(seed) == 32 and len(pub) == 32
    listed = subprocess.run(["ssh-keygen", "-lf", str(key)], capture_output=True, text=True,
                            check=True).stdout.split()
    assert listed[1] == image.fingerprint(pub)
    assert (key.with_suffix(".pub").read_text().split()[:2]
            == image.ed25519_public_line(pub).split())
    blob = image.dropbear_ed25519_key(seed, pub)
    assert blob[:15] == b"\0\0\0\x0bssh-ed25519" and blob[15:19] == b"\0\0\0\x40"
    assert blob[19:] == seed + pub


def test_openssh_key_parser_rejects_garbage(tmp_path: Path) -> None:
    p = tmp_path / "k"
    p.write_text("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n")
    with pytest.raises(StageError, match="not an OpenSSH private key"):
        image.read_openssh_ed25519(p)


# --- binaries and assembly (with fake userland) --------------------------------------------


def test_static_i386_check(tmp_path: Path) -> None:
    image.check_static_i386(fake_elf(tmp_path / "ok"))
    with pytest.raises(StageError, match="dynamically linked"):
        image.check_static_i386(fake_elf(tmp_path / "dyn", interp=True))
    with pytest.raises(StageError, match="expected 3"):
        image.check_static_i386(fake_elf(tmp_path / "arm", machine=40))


def test_userland_entries_are_cached(tmp_path: Path) -> None:
    builds: list[str] = []

    def build(stage: Path, jobs: int) -> tuple[dict[str, str], list[str]]:
        builds.append("x")
        fake_elf(stage / "tool")
        return {"/bin/tool": "tool"}, ["/bin/alias"]

    first = userland.userland_entry("tool", "k1", build, 1, {"source": {"version": "1.0-1"}})
    again = userland.userland_entry("tool", "k1", build, 1)
    assert builds == ["x"] and not first.cached and again.cached
    assert again.binaries == {"/bin/tool": first.directory / "tool"} and again.links == (
        "/bin/alias",)
    assert json.loads((first.directory / "userland.json").read_text())["source"] == {"version": "1.0-1"}

    def broken(stage: Path, jobs: int) -> tuple[dict[str, str], list[str]]:
        (stage / "build.log").write_text("cc: error: boom\n")
        raise StageError("compile failed")

    with pytest.raises(StageError, match="full log: .*tool-k2.failed.log"):
        userland.userland_entry("tool", "k2", broken, 1)
    assert not (cache.subdir("userland") / "tool-k2").exists()
    assert "boom" in (cache.subdir("userland") / "tool-k2.failed.log").read_text()


ALLNO = ("CONFIG_HAVE_DOT_CONFIG=y\n# CONFIG_STATIC is not set\n# CONFIG_ASH is not set\n"
         "# CONFIG_TC is not set\nCONFIG_FEATURE_EDITING_MAX_LEN=0\nCONFIG_SH_IS_ASH=y\n")


def test_busybox_config_is_allnoconfig_plus_the_fragment() -> None:
    fragment = b"# comment\nCONFIG_STATIC=y\nCONFIG_ASH=y\nCONFIG_FEATURE_EDITING_MAX_LEN=1024\n"
    merged, wanted = userland.busybox_config(ALLNO, fragment)
    lines = merged.splitlines()
    assert "CONFIG_STATIC=y" in lines and "CONFIG_ASH=y" in lines
    assert "CONFIG_FEATURE_EDITING_MAX_LEN=1024" in lines and "CONFIG_FEATURE_EDITING_MAX_LEN=0" not in lines
    assert "# CONFIG_TC is not set" in lines  # what the fragment does not name stays off
    assert wanted == {"CONFIG_STATIC": "y", "CONFIG_ASH": "y", "CONFIG_FEATURE_EDITING_MAX_LEN": "1024"}
    # oldconfig turned on something the fragment selects: reported, not refused
    final = merged + "CONFIG_SHELL_ASH=y\n"
    assert userland.selected_extras(ALLNO, wanted, final) == ["CONFIG_SHELL_ASH"]
    with pytest.raises(InputError, match="busybox config fragment:1: 'STATIC=y'"):
        userland.busybox_config(ALLNO, b"STATIC=y\n")


def test_shipped_busybox_fragment_is_only_switches_and_values() -> None:
    from harness.kernel import config

    wanted = config.parse_fragment((DEFAULT / "busybox.config").read_text(), "busybox.config")
    assert wanted["CONFIG_STATIC"] == "y" and wanted["CONFIG_ASH"] == "y"
    assert "CONFIG_TC" not in wanted  # the applet that fails with linux-libc-dev 6.12
    # every applet /init runs is in it
    init = (DEFAULT / "init.j2").read_text()
    for applet in ("mount", "mknod", "ifconfig", "route", "ping", "hostname", "setsid", "reboot"):
        assert applet in init and wanted.get(f"CONFIG_{applet.upper()}") == "y", applet


def fake_source(tmp_path: Path, name: str, version: str) -> DebianSource:
    upstream = version.split(":")[-1].rsplit("-", 1)[0]
    orig = DscFile(f"{name}_{upstream}.orig.tar.bz2", "0" * 64)
    return DebianSource(name, name, version, tmp_path, f"{name}_{version}.dsc", (orig,))


@dataclass
class FakeUserland:
    counts: dict[str, int]  # builds (and fetches) so far
    versions: dict[str, str]  # the Debian version "apt offers" for each package


@pytest.fixture
def fake_userland(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeUserland:
    """Replace toolchain, downloads and compilers by fakes; count the builds."""
    fake = FakeUserland({"busybox": 0, "dropbear": 0, "program": 0, "fetch": 0},
                        {"busybox": "1:1.35.0-4+deb12u1", "dropbear": "2022.83-1+deb12u3"})
    bins = tmp_path / "bins"
    bins.mkdir()

    def made(name: str, files: dict[str, str], links: tuple[str, ...] = ()) -> image.Userland:
        fake.counts[name] += 1
        return image.Userland(bins, {g: fake_elf(bins / h) for g, h in files.items()}, links)

    def fetch(recipe: image.Recipe, refresh: bool = False) -> dict[str, DebianSource]:
        fake.counts["fetch"] += 1
        return {n: fake_source(tmp_path, n, fake.versions[n]) for n in recipe.packages}

    monkeypatch.setattr(assemble, "guest_toolchain",
                        lambda: image.GuestToolchain(("cc",), "strip", "tc"))
    monkeypatch.setattr(assemble, "fetch_sources", fetch)
    monkeypatch.setattr(assemble, "build_busybox", lambda *a: made(
        "busybox", {"/bin/busybox": "busybox"}, ("/bin/sh", "/sbin/ifconfig", "/linuxrc")))
    monkeypatch.setattr(assemble, "build_dropbear", lambda *a: made(
        "dropbear", {"/usr/sbin/dropbear": "dropbear"}))
    monkeypatch.setattr(assemble, "build_program", lambda p, tc: made(
        "program", {p.install: p.name}))
    return fake


@pytest.mark.skipif(not HAVE_KEYGEN, reason="ssh-keygen (openssh-client) not installed")
def test_build_image_assembles_and_caches(tmp_path: Path, fake_userland: FakeUserland) -> None:
    recipe = copy_recipe(tmp_path)
    r = image.load_recipe(recipe)
    img = image.build_image(r)
    assert not img.cached and img.recipe_hash == r.recipe_hash
    assert img.directory == cache.root() / "images" / img.key
    assert img.sources == {"busybox": "1:1.35.0-4+deb12u1", "dropbear": "2022.83-1+deb12u3"}
    manifest = json.loads((img.directory / "image.json").read_text())
    assert manifest["sources"]["busybox"]["version"] == "1:1.35.0-4+deb12u1"
    assert manifest["sources"]["dropbear"]["orig"] == "dropbear_2022.83.orig.tar.bz2"
    assert set(img.client_keys) == {"root", "alice", "bob"}
    for key in img.client_keys.values():
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    entries = {e.path: e for e in cpio.read_cpio(img.initramfs.read_bytes())}
    init = entries["init"]
    assert init.mode == 0o755 and image.MILESTONE_SSHD_UP.encode() in init.data
    assert entries["bin/sh"].data == b"/bin/busybox" and "linuxrc" not in entries
    assert entries["bin/rcfs-probe"].mode == 0o755
    assert entries["dev/console"].rdev == (5, 1)
    hk = entries["etc/dropbear/dropbear_ed25519_host_key"]
    assert hk.mode == 0o600 and hk.uid == 0 and len(hk.data) == 4 + 11 + 4 + 64
    assert entries["etc/shadow"].mode == 0o600
    assert all(line.split(":")[1] == "!" for line in entries["etc/shadow"].data.decode().split())
    assert b"alice:x:1000:1000:alice:/home/alice:/bin/sh\n" in entries["etc/passwd"].data
    for user, uid in (("root", 0), ("alice", 1000), ("bob", 1001)):
        home = "root" if user == "root" else f"home/{user}"
        for path, mode in ((home, 0o700), (f"{home}/.ssh", 0o700),
                           (f"{home}/.ssh/authorized_keys", 0o600)):
            assert (entries[path].uid, entries[path].gid, entries[path].mode) == (uid, uid, mode)
        pub = img.client_keys[user].with_name(img.client_keys[user].name + ".pub")
        assert pub.read_text().split()[1] in entries[f"{home}/.ssh/authorized_keys"].data.decode()
    assert entries["tmp"].mode == 0o1777
    assert img.host_key_fingerprint.startswith("SHA256:")
    assert (img.directory / "contents.txt").read_text().count("\n") == len(entries)

    again = image.build_image(image.load_recipe(recipe))
    assert again.cached and again.initramfs == img.initramfs
    assert again.host_key_fingerprint == img.host_key_fingerprint
    assert fake_userland.counts["busybox"] == 1

    # A new /init is a new image; the compiled binaries are asked for again,
    # and the real builders answer from userland/ (keyed without the template).
    (recipe.parent / "init.j2").write_text((recipe.parent / "init.j2").read_text() + "# v2\n")
    other = image.build_image(image.load_recipe(recipe))
    assert other.recipe_hash != img.recipe_hash and not other.cached
    assert img.initramfs.is_file()


@pytest.mark.skipif(not HAVE_KEYGEN, reason="ssh-keygen (openssh-client) not installed")
def test_another_debian_version_is_another_image(tmp_path: Path, fake_userland: FakeUserland) -> None:
    """Same recipe, another exact Debian revision (say, after a point release): a new image key."""
    r = image.load_recipe(copy_recipe(tmp_path))
    first = image.build_image(r)
    fake_userland.versions["dropbear"] = "2022.83-1+deb12u4"
    second = image.build_image(r)
    assert second.key != first.key and not second.cached
    assert second.recipe_hash == first.recipe_hash
    assert second.sources["dropbear"] == "2022.83-1+deb12u4"
    assert image.Image.load(first.directory) is not None  # the old one is still there


def test_image_key_names_every_version(tmp_path: Path) -> None:
    r = image.load_recipe(DEFAULT)
    a = {"busybox": fake_source(tmp_path, "busybox", "1:1.35.0-4"),
         "dropbear": fake_source(tmp_path, "dropbear", "2022.83-1")}
    b = {**a, "busybox": fake_source(tmp_path, "busybox", "1:1.37.0-6")}
    assert image.image_key(r, a) != image.image_key(r, b)
    assert image.image_key(r, a) == image.image_key(r, dict(a))
    missing = {**a, "busybox": None}
    assert image.image_key(r, missing) not in (image.image_key(r, a), image.image_key(r, b))
    assert image.image_dir(r, a) == cache.root() / "images" / image.image_key(r, a)
    # without downloads there is no version to build: a directory that is never an image
    assert image.Image.load(image.image_dir(r)) is None


@pytest.mark.skipif(not HAVE_KEYGEN, reason="ssh-keygen (openssh-client) not installed")
def test_build_image_refuses_conflicting_extra_file(
    tmp_path: Path, fake_userland: FakeUserland
) -> None:
    recipe = copy_recipe(tmp_path, append='\n[[files]]\npath = "/etc/passwd"\ncontent = "x"\n')
    r = image.load_recipe(recipe)
    with pytest.raises(InputError, match="given twice"):
        image.build_image(r)
    assert not any((cache.root() / "images").iterdir())


def test_missing_toolchain_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(toolchain, "MUSL_SPECS", Path("/nonexistent/musl-gcc.specs"))
    with pytest.raises(StageError) as info:
        image.guest_toolchain()
    assert "apt-get install musl-dev:i386" in str(info.value)
    assert info.value.stage == "image"
    assert any("musl-dev:i386" in p for p in image.check_prerequisites())
