"""The README's configuration reference stays complete as keys are added."""

from pathlib import Path

from slmc_hpc.schema import SCHEMA

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_every_config_key_is_documented():
    for section, keys in SCHEMA.items():
        assert f"`[{section}]`" in README, section
        for key in keys:
            assert f"| `{key.name}` |" in README, f"[{section}] {key.name} missing from README"


def test_every_output_dataset_is_documented():
    from slmc_hpc.output import MEASURE_DTYPES

    for name in MEASURE_DTYPES:
        assert f"`/measure/{name}`" in README, name
