"""A config's vCPU count: configs.toml `cpus`, the SMP template, vm_config."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import InputError
from harness.kernel import config


def _write(directory: Path, table: str) -> None:
    (directory / "configs.toml").write_text(table)
    (directory / "t.j2").write_text("{% if cpus > 1 %}CONFIG_SMP=y\nCONFIG_NR_CPUS={{ cpus }}\n"
                                    "{% else %}# CONFIG_SMP is not set\n{% endif %}")


def test_cpus_defaults_to_one_and_reaches_the_template(tmp_path: Path) -> None:
    _write(tmp_path, '[configs.up]\ntemplate = "t.j2"\n[configs.smp]\ntemplate = "t.j2"\ncpus = 2\n')
    defs = config.load_defs(tmp_path)
    assert (defs["up"].cpus, defs["smp"].cpus) == (1, 2)
    assert config.render("up", directory=tmp_path).symbols == {"CONFIG_SMP": "n"}
    assert config.render("smp", directory=tmp_path).symbols == {"CONFIG_SMP": "y", "CONFIG_NR_CPUS": "2"}


@pytest.mark.parametrize("value", ["0", "9", '"2"', "1.5", "true"])
def test_bad_cpus_is_an_input_error(tmp_path: Path, value: str) -> None:
    _write(tmp_path, f'[configs.bad]\ntemplate = "t.j2"\ncpus = {value}\n')
    with pytest.raises(InputError, match=r"config 'bad': cpus = .*expected an integer 1\.\.8"):
        config.load_defs(tmp_path)


def test_a_param_named_cpus_cannot_contradict_the_vm(tmp_path: Path) -> None:
    _write(tmp_path, '[configs.smp]\ntemplate = "t.j2"\ncpus = 2\nparams = { cpus = 1 }\n')
    assert config.render("smp", directory=tmp_path).symbols["CONFIG_NR_CPUS"] == "2"


def test_shipped_debug_smp_is_an_smp_debug_kernel() -> None:
    smp = config.render("debug-smp", series_chain=("compat", "rcfs")).symbols
    assert (smp["CONFIG_SMP"], smp["CONFIG_NR_CPUS"], smp["CONFIG_PROVE_LOCKING"]) == ("y", "2", "y")
    assert config.load_defs()["debug-smp"].cpus == 2
    debug = config.render("debug").symbols
    assert (debug["CONFIG_SMP"], debug["CONFIG_HZ_1000"], debug["CONFIG_DEBUG_SLAB_LEAK"]) == ("n", "y", "y")
