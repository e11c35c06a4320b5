from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import InputError
from harness.kernel import config

FAKE_KCONFIG = """\
config RCFS
\tbool "Resource control file system support"
\tdefault n

config MAX_RC_SUBSYS
\tint "Number of subsystems"
\tdepends on RCFS
\trange 1 255
\tdefault 8

menuconfig NETDEVICES
\tbool "Network devices"

config E1000
\ttristate "Intel PRO/1000"

config CMDLINE
\tstring "cmdline"
"""


@pytest.fixture
def fake_tree(tmp_path: Path) -> Path:
    (tmp_path / "init").mkdir()
    (tmp_path / "init" / "Kconfig").write_text(FAKE_KCONFIG)
    (tmp_path / "arch").mkdir()
    (tmp_path / "arch" / "Kconfig.debug").write_text("config DEBUG_SLAB\n\tbool\n\trange 3 4\n")
    return tmp_path


@pytest.fixture
def configs(tmp_path: Path) -> Path:
    d = tmp_path / "kernel-configs"
    d.mkdir()
    (d / "configs.toml").write_text(
        '[configs.small]\ntemplate = "small.j2"\nparams = { rcfs = true, n = 3 }\n'
        '[configs.off]\ntemplate = "small.j2"\nparams = { rcfs = false, n = 1 }\n'
    )
    (d / "base.j2").write_text("CONFIG_NETDEVICES=y\n# CONFIG_E1000 is not set\n")
    (d / "small.j2").write_text(
        '{% include "base.j2" %}\n{% if rcfs %}CONFIG_RCFS=y\nCONFIG_MAX_RC_SUBSYS={{ n }}\n'
        "{% else %}# CONFIG_RCFS is not set\n{% endif %}"
        '{% if "extra" in series_chain %}CONFIG_E1000=y\n{% endif %}'
    )
    return d


def test_render_named_config_with_params(configs: Path) -> None:
    req = config.render("small", directory=configs)
    assert req.symbols == {
        "CONFIG_NETDEVICES": "y",
        "CONFIG_E1000": "n",
        "CONFIG_RCFS": "y",
        "CONFIG_MAX_RC_SUBSYS": "3",
    }
    assert req.label == "small"


def test_series_chain_reaches_template(configs: Path) -> None:
    req = config.render("small", directory=configs, series_chain=("base", "extra"))
    assert req.symbols["CONFIG_E1000"] == "y"


def test_overrides_win_and_change_digest(configs: Path) -> None:
    plain = config.render("small", directory=configs)
    req = config.render("small", directory=configs, overrides=["MAX_RC_SUBSYS=5"])
    assert req.symbols["CONFIG_MAX_RC_SUBSYS"] == "5"
    assert req.overrides == {"CONFIG_MAX_RC_SUBSYS": "5"}
    assert req.label == "small[MAX_RC_SUBSYS=5]"
    assert req.digest() != plain.digest()
    assert config.render("small", directory=configs).digest() == plain.digest()


def test_unknown_config_names_choices(configs: Path) -> None:
    with pytest.raises(InputError, match=r"unknown config 'nope'; expected one of: off, small"):
        config.render("nope", directory=configs)


@pytest.mark.parametrize("bad", ["MAX_RC_SUBSYS", "=3", "CONFIG_=3", "CONFIG_X=", "lower case=1",
                                 'CONFIG_S="open'])
def test_malformed_set(bad: str) -> None:
    with pytest.raises(InputError, match="--set"):
        config.parse_set(bad)


def test_parse_set_adds_prefix() -> None:
    assert config.parse_set("RCFS=y") == ("CONFIG_RCFS", "y")
    assert config.parse_set("CONFIG_CMDLINE=\"a b\"") == ("CONFIG_CMDLINE", '"a b"')


def test_read_kconfig_types_and_ranges(fake_tree: Path) -> None:
    k = config.read_kconfig(fake_tree)
    assert k["CONFIG_MAX_RC_SUBSYS"].type == "int"
    assert k["CONFIG_MAX_RC_SUBSYS"].ranges == ((1, 255),)
    assert k["CONFIG_MAX_RC_SUBSYS"].where == "init/Kconfig"
    assert k["CONFIG_NETDEVICES"].type == "bool"
    assert k["CONFIG_E1000"].type == "tristate"
    assert k["CONFIG_DEBUG_SLAB"].where == "arch/Kconfig.debug"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("MAX_RC_SUBSYS=0", r"CONFIG_MAX_RC_SUBSYS=0: out of range, allowed 1\.\.255"),
        ("MAX_RC_SUBSYS=300", r"CONFIG_MAX_RC_SUBSYS=300: out of range, allowed 1\.\.255"),
        ("MAX_RC_SUBSYS=abc", r"CONFIG_MAX_RC_SUBSYS=abc: expected an integer"),
        ("RCFS=m", r"CONFIG_RCFS=m: expected y or n"),
        ("E1000=x", r"CONFIG_E1000=x: expected y, m or n"),
        ("NO_SUCH=y", r"CONFIG_NO_SUCH: no such symbol"),
        ("CMDLINE=abc", r"expected a quoted string"),
    ],
)
def test_validate_refuses(configs: Path, fake_tree: Path, override: str, message: str) -> None:
    req = config.render("small", directory=configs, overrides=[override])
    with pytest.raises(InputError, match=message):
        config.validate(req, config.read_kconfig(fake_tree))


def test_validate_accepts_edges_and_unknown_not_set(configs: Path, fake_tree: Path) -> None:
    kconfig = config.read_kconfig(fake_tree)
    for value in ("1", "255", "0x10"):
        config.validate(config.render("small", directory=configs,
                                      overrides=[f"MAX_RC_SUBSYS={value}", "GONE=n"]), kconfig)


def test_merge_replaces_lines_instead_of_appending() -> None:
    dotconfig = "# CONFIG_RCFS is not set\nCONFIG_A=y\nCONFIG_MAX_RC_SUBSYS=8\n"
    merged = config.merge(dotconfig, {"CONFIG_RCFS": "y", "CONFIG_MAX_RC_SUBSYS": "2",
                                      "CONFIG_A": "n", "CONFIG_NEW": "y"})
    assert merged == "CONFIG_RCFS=y\n# CONFIG_A is not set\nCONFIG_MAX_RC_SUBSYS=2\nCONFIG_NEW=y\n"
    assert "is not set" not in merged.split("\n")[0]


def test_check_survivors_lists_every_loss(configs: Path) -> None:
    req = config.render("small", directory=configs)
    final = "CONFIG_NETDEVICES=y\n# CONFIG_RCFS is not set\n"
    with pytest.raises(InputError) as err:
        config.check_survivors(req, final)
    text = str(err.value)
    assert "CONFIG_RCFS wanted y, got not set" in text
    assert "CONFIG_MAX_RC_SUBSYS wanted 3, got not set" in text
    assert "NETDEVICES" not in text and "E1000" not in text


def test_check_survivors_accepts_exact_result(configs: Path) -> None:
    req = config.render("off", directory=configs)
    config.check_survivors(req, "CONFIG_NETDEVICES=y\n")


def test_bad_template_line_is_reported(configs: Path) -> None:
    (configs / "small.j2").write_text("CONFIG_OK=y\nthis is junk\n")
    with pytest.raises(InputError, match=r"small.j2 \(rendered\):2: 'this is junk'"):
        config.render("small", directory=configs)


def test_project_configs_render() -> None:
    for name in ("default", "norcfs", "debug"):
        req = config.render(name, series_chain=("compat", "rcfs"))
        assert "CONFIG_SERIAL_8250_CONSOLE" in req.symbols
    default = config.render("default", series_chain=("compat", "rcfs")).symbols
    assert (default["CONFIG_RCFS"], default["CONFIG_MAX_RC_SUBSYS"],
            default["CONFIG_MAX_RC_HIERARCHIES"]) == ("y", "8", "4")
    assert config.render("norcfs").symbols["CONFIG_RCFS"] == "n"
    assert config.render("debug").symbols["CONFIG_PROVE_LOCKING"] == "y"


@pytest.mark.parametrize("value", ['"$(id)"', '"$$(id)"', '"`id`"', '"a;b"', '"a|b"', '"a\\"b"',
                                   '"a\nb"', '"a\\\\b"', "'a'", "$(id)", "y;id", '"a#b"', '"a\'b"'])
def test_values_make_or_a_shell_would_evaluate_are_refused(value: str) -> None:
    with pytest.raises(InputError) as err:
        config.parse_set(f"CONFIG_LOCALVERSION={value}")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("value", ["y", "m", "n", "8", "-1", "0x1F", '""', '"-rc1"',
                                   '"console=ttyS0,115200 root=/dev/ram0"', '"a+b_c.d:e"'])
def test_safe_values_are_kept_as_they_are(value: str) -> None:
    assert config.parse_set(f"CONFIG_X={value}") == ("CONFIG_X", value)


def test_a_fragment_with_an_unsafe_string_is_refused() -> None:
    with pytest.raises(InputError, match=r"frag:2: CONFIG_CMDLINE: the string may hold only"):
        config.parse_fragment('CONFIG_A=y\nCONFIG_CMDLINE="$(shell id)"\n', "frag")
