"""Bad input gives one clear message naming the key, exit code 2, no traceback."""

import pytest

from slmc_hpc.cli import describe, main
from slmc_hpc.config import ConfigError, parse, stores_every_key, to_toml

GOOD = """
[lattice]
kind = "square"
L = 4
[model]
t = 1.0
J = 4.0
mu = -2.5
J_direct = 0.0
[temperatures]
values = [0.1]
[effective_model]
kind = "linear"
shells = 3
[slmc]
local_updates = 16
[run]
sampler = "slmc"
thermalize = 20
measure = 30
snapshot_every = 10
seed = 1
output = "run.h5"
"""


def test_good_config_parses_with_exact_keys():
    cfg = parse(GOOD)
    assert cfg.lattice.L == 4 and cfg.model.J == 4.0 and cfg.temperatures.values == [0.1]
    assert cfg.local_updates == 16 and cfg.run.sampler == "slmc" and cfg.run.output == "run.h5"
    assert cfg.training.every == 2  # default filled in: thermalize / 8 (at most 500)
    assert cfg.training.loss == "pair" and cfg.run.step_size == "auto"
    # bond pairs of 4 shells within 2 spacings on the square lattice, for the linear model and
    # (since 0.4.1) the Transformer; other lattices keep 2 shells at any range
    assert (cfg.effective_model.bond_shells, cfg.effective_model.bond_range) == (4, 2.0)
    other = parse(GOOD.replace('kind = "linear"', 'kind = "transformer"'))
    assert (other.effective_model.bond_shells, other.effective_model.bond_range) == (4, 2.0)
    other = parse(GOOD.replace('kind = "square"\nL = 4', 'kind = "chain"\nL = 16'))
    assert (other.effective_model.bond_shells, other.effective_model.bond_range) == (2, 0.0)
    # above 256 sites 2 shells (the class table is B²), still within 2
    large = parse(GOOD.replace("L = 4", "L = 18").replace("local_updates = 16", "local_updates = 0"))
    assert (large.effective_model.bond_shells, large.effective_model.bond_range) == (2, 2.0)


def test_local_updates_zero_means_n_sites():
    assert parse(GOOD.replace("local_updates = 16", "local_updates = 0")).local_updates == 16


BAD = [
    ("L = 4", "L = 0", r"\[lattice\] L must be at least 2"),
    ("L = 4", "L = -3", r"\[lattice\] L must be at least 2"),
    ("L = 4", 'L = "4"', r"\[lattice\] L must be an integer"),
    ("L = 4", "L = 4.0", r"\[lattice\] L must be an integer"),
    ("L = 4", "L = 200", r"\[lattice\] L = 200 gives a 80000x80000"),
    ("values = [0.1]", "values = [-0.1]", r"\[temperatures\] values temperatures must be positive"),
    ("values = [0.1]", "values = [0.0]", r"\[temperatures\] values temperatures must be positive"),
    ("values = [0.1]", "values = [0.2, 0.1]", r"strictly ascending"),
    ("values = [0.1]", "values = []", r"at least one temperature"),
    ("values = [0.1]", "values = [nan]", r"\[temperatures\] values must contain only finite"),
    ("values = [0.1]", 'values = "hot"', r"\[temperatures\] values must be a list of numbers"),
    ("values = [0.1]", 'values = [0.1, 0.2]\nadapt = "barrier"\nexchange_every = 0',
     r"adapt = \"barrier\" tunes the ladder for replica exchanges, but exchange_every = 0"),
    ("values = [0.1]", 'values = [0.1]\nadapt = "feedback"', r"\[temperatures\] adapt must be one of 'none', 'barrier'"),
    ("J = 4.0", "J = inf", r"\[model\] J must be finite"),
    ("J = 4.0", "J = true", r"\[model\] J must be a number"),
    ("J = 4.0", "Jay = 4.0", r"\[model\] unknown key 'Jay'"),
    ('sampler = "slmc"', 'sampler = "hmc"', r"\[run\] sampler must be one of 'slmc', 'exact'"),
    ('kind = "linear"', 'kind = "mlp"', r"\[effective_model\] kind must be one of"),
    ("shells = 3", "shells = 0", r"\[effective_model\] shells must be at least 1"),
    ("measure = 30", "measure = 0", r"\[run\] measure must be at least 1"),
    ("thermalize = 20", "thermalize = -1", r"\[run\] thermalize must not be negative"),
    ("[slmc]", "[training]\nevery = 40\n[slmc]", r"\[run\] thermalize = 20 is shorter than \[training\] every = 40"),
    ("[slmc]", "[slmcc]", r"unknown section \[slmcc\]"),
    ("L = 4\n", "", r"\[lattice\] L is required"),
    ("[temperatures]\nvalues = [0.1]\n", "", r"\[temperatures\] values is required"),
    ("[lattice]", "lattice = 3\n[lattic]", r"unknown section \[lattic\]"),
    ("L = 4", "L = 4 =", r"not valid TOML"),
]


@pytest.mark.parametrize("old,new,message", BAD)
def test_bad_config_names_the_problem(old, new, message):
    assert old in GOOD
    with pytest.raises(ConfigError, match=message):
        parse(GOOD.replace(old, new, 1))


def test_too_many_shells_for_the_lattice_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text(GOOD.replace("shells = 3", "shells = 6"))
    assert main(["run", str(path), "--output", str(tmp_path / "o.h5")]) == 2
    err = capsys.readouterr().err
    assert "[effective_model] shells" in err and "Traceback" not in err
    assert not (tmp_path / "o.h5").exists()


@pytest.mark.parametrize("old,new,message", BAD[:6])
def test_cli_exits_2_without_traceback(tmp_path, capsys, old, new, message):
    path = tmp_path / "c.toml"
    path.write_text(GOOD.replace(old, new, 1))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("slmc-hpc: error: ") and "Traceback" not in err


def test_missing_config_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml' does not exist" in capsys.readouterr().err


def test_existing_output_is_not_overwritten_unless_asked(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text(GOOD)
    out = tmp_path / "run.h5"
    out.write_bytes(b"precious results")
    assert main(["run", str(path), "--output", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == b"precious results"
    assert main(["run", str(path), "--output", str(out), "--overwrite"]) == 0
    assert out.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"


def test_keys_reference_lists_every_key(capsys):
    assert main(["keys"]) == 0
    text = capsys.readouterr().out
    for key in ("L", "J_direct", "values", "shells", "local_updates", "snapshot_every", "step_size"):
        assert f"  {key} " in text
    assert text.strip() == describe()


def test_replace_revalidates_and_rewrites_the_text():
    cfg = parse(GOOD).replace("run", sampler="exact", output='we"ird\\name.h5')
    assert cfg.run.sampler == "exact" and cfg.run.output == 'we"ird\\name.h5' and cfg.lattice.L == 4
    assert parse(cfg.text).run.output == cfg.run.output and parse(cfg.text).temperatures.values == [0.1]
    with pytest.raises(ConfigError, match=r"\[run\] measure must be at least 1"):
        parse(GOOD).replace("run", measure=0)


@pytest.mark.parametrize("old,new,message", [
    ("values = [0.1]", "values = [1e-320]", r"below 1e-06 are not supported"),
    ("seed = 1", "seed = 18446744073709551616", r"\[run\] seed is too large"),
    ("[run]", "[training]\nbuffer_size = 1000000000000\n[run]",
     r"\[training\] buffer_size = 1000000000000 would hold"),
    ("local_updates = 16", "local_updates = 100000000", r"\[slmc\] local_updates must be at most"),
    ('kind = "linear"\nshells = 3', 'kind = "transformer"\nshells = 3\nbond_shells = 4\n[training]\nbatch_size = 10000000',
     r"bond_shells = 4 with \[training\] batch_size = 10000000: training would hold .* GiB of bond-pair products"),
    ('kind = "linear"\nshells = 3', 'kind = "transformer"\nshells = 3\ngate_channels = -1',
     r"\[effective_model\] gate_channels must not be negative"),
    ('kind = "linear"\nshells = 3', 'kind = "linear"\nshells = 3\nbond_range = -1.5',
     r"\[effective_model\] bond_range must not be negative"),
])
def test_absurd_values_are_clear_errors(old, new, message):
    with pytest.raises(ConfigError, match=message):
        parse(GOOD.replace(old, new, 1))


def test_bond_pair_terms_of_linear_and_inner_models_are_checked():
    """bond_shells on the linear model and [slmc] inner_bond_shells (nested only) obey the
    lattice's shell count and the training-memory limit, each error naming its key."""
    big = GOOD.replace("L = 4", "L = 40").replace("shells = 3", "shells = 3\nbond_shells = 4")
    with pytest.raises(ConfigError, match=r"\[effective_model\] bond_shells = 4: training would hold 6.5 GiB of "
                                          r"bond-pair products \(16000 bonds\); at most 4 GiB is allowed \(fewer bond_shells\)"):
        parse(big)
    nested = GOOD.replace('kind = "linear"', 'kind = "transformer"').replace("local_updates = 16",
                                                                           "local_updates = 16\ninner_bond_shells = 6")
    with pytest.raises(ConfigError, match=r"\[slmc\] inner_bond_shells = 6 exceeds the 5 distinct distances"):
        parse(nested)
    # the inner model exists only in the nested scheme
    assert parse(nested.replace("[slmc]", '[slmc]\nscheme = "plain"')).slmc.inner_bond_shells == 6
    assert parse(nested.replace("inner_bond_shells = 6", "inner_bond_shells = 2")).slmc.inner_bond_shells == 2


def test_shell_limit_only_applies_to_slmc():
    text = GOOD.replace("L = 4", "L = 3").replace("shells = 3", "shells = 4")
    with pytest.raises(ConfigError, match="shells = 4 exceeds"):
        parse(text)
    assert parse(text.replace('sampler = "slmc"', 'sampler = "exact"')).run.sampler == "exact"


def test_geometric_ladder_from_t_min_and_t_max():
    from slmc_hpc.assemble import temperature_ladder

    text = GOOD.replace("values = [0.1]", "T_min = 0.05\nT_max = 0.4\ncount = 4")
    assert temperature_ladder(parse(text), n_ranks=1) == pytest.approx([0.05, 0.1, 0.2, 0.4])
    no_count = parse(GOOD.replace("values = [0.1]", "T_min = 0.05\nT_max = 0.2"))
    assert temperature_ladder(no_count, n_ranks=3) == pytest.approx([0.05, 0.1, 0.2])  # one per rank
    assert temperature_ladder(parse(GOOD), n_ranks=3) == [0.1]


@pytest.mark.parametrize("new,message", [
    ("values = [0.1]\nT_min = 0.05\nT_max = 0.4", "either values or T_min and T_max, not both"),
    ("T_min = 0.05", r"values is required \(or T_min and T_max"),
    ("T_min = 0.4\nT_max = 0.05", "T_max = 0.05 must be above T_min = 0.4"),
    ("T_min = -0.1\nT_max = 0.4", r"\[temperatures\] T_min temperatures must be positive"),
])
def test_bad_temperature_ladders(new, message):
    with pytest.raises(ConfigError, match=message):
        parse(GOOD.replace("values = [0.1]", new))


def _minimal(**sections) -> str:
    doc = {"lattice": {"L": 8}, "temperatures": {"values": [0.02]}}
    for name, values in sections.items():
        doc.setdefault(name, {}).update(values)
    return to_toml(doc)


def test_defaults_are_the_benchmarks_sampler_sized_to_the_lattice():
    """A configuration naming only the lattice and temperatures gets the cheapest sampler
    measured (analysis/BENCHMARKS.md): linear model, 8 shells, bond-pair terms within 4 shells
    and 2 spacings, pair loss, tuned path; sized down where the lattice is small or large."""
    cfg = parse(_minimal())
    em, tr = cfg.effective_model, cfg.training
    assert (em.kind, em.shells, em.bond_shells, em.bond_range, tr.loss) == ("linear", 8, 4, 2.0, "pair")
    assert (cfg.slmc.local_updates, cfg.run.step_size, cfg.run.thermalize, tr.every) == ("auto", "auto", 12000, 500)
    # since 0.5: the linear model learns from the last two thirds of thermalization, 2000 ... 8000
    assert tr.buffer_size == 8000
    assert [parse(_minimal(run={"thermalize": n})).training.buffer_size for n in (400, 6000, 30000)] == [2000, 4000, 8000]
    # at most 0.5 GiB of spins per slot, never below the 2000 of 0.4: L = 60 (3600 sites) 3106, L = 90 2000
    assert [parse(_minimal(lattice={"L": L})).training.buffer_size for L in (37, 60, 90)] == [8000, 3106, 2000]
    assert cfg.slmc.inner_bond_shells == 4
    assert parse(_minimal(lattice={"L": 4})).effective_model.shells == 5  # all 5 distances of 4x4
    chain = parse(_minimal(lattice={"kind": "chain", "L": 2}))
    assert (chain.effective_model.shells, chain.effective_model.bond_shells) == (1, 1)
    assert parse(_minimal(lattice={"L": 16})).effective_model.bond_shells == 4  # up to 256 sites
    assert parse(_minimal(lattice={"L": 24})).effective_model.bond_shells == 2  # 32 parameters
    assert parse(_minimal(lattice={"L": 24}, training={"buffer_size": 40})).effective_model.bond_shells == 0
    assert parse(_minimal(lattice={"L": 25})).effective_model.bond_shells == 0  # over 600 sites
    assert parse(_minimal(run={"thermalize": 400})).training.every == 50
    assert parse(_minimal(run={"thermalize": 3})).training.every == 1
    exact = parse(_minimal(run={"sampler": "exact"}))
    assert (exact.slmc.local_updates, exact.run.step_size, exact.run.thermalize) == (0, 0.5, 500)
    # a self-tuning ladder takes the first half of thermalization: three times as long
    adapted = {"temperatures": {"values": [0.02, 0.04], "adapt": "barrier"}}
    assert parse(_minimal(**adapted)).run.thermalize == 36000 and parse(_minimal(**adapted)).training.every == 500
    assert parse(_minimal(**adapted, run={"sampler": "exact"})).run.thermalize == 1500
    nested = parse(_minimal(effective_model={"kind": "transformer", "bond_shells": 1}))
    assert nested.slmc.inner_bond_shells == 1  # follows the Transformer's head
    # the Transformer's head and inner model get the linear default's bond pairs (since 0.4.1)
    head = parse(_minimal(effective_model={"kind": "transformer"}))
    assert (head.effective_model.bond_shells, head.effective_model.bond_range, head.slmc.inner_bond_shells) == (4, 2.0, 4)
    assert head.training.epochs == 1  # since 0.4.2: one pass per round cost what 30 did, thermalized 8-10x faster
    # a round's pass over 4x the data would break the Transformer's training budget: 2000 over 4000
    assert (head.run.thermalize, head.training.buffer_size) == (4000, 2000)
    cubic = parse(_minimal(lattice={"kind": "cubic", "L": 4}, effective_model={"kind": "transformer"}))
    assert (cubic.effective_model.bond_shells, cubic.effective_model.bond_range) == (2, 0.0)  # not measured there
    # what is given wins, and a dependent default follows what is given
    given = parse(_minimal(effective_model={"shells": 3, "bond_shells": 0}, slmc={"local_updates": 16},
                           run={"step_size": 0.5, "thermalize": 80}, training={"every": 20}))
    assert (given.effective_model.shells, given.effective_model.bond_shells, given.slmc.inner_bond_shells) == (3, 0, 0)
    assert (given.slmc.local_updates, given.run.step_size, given.training.every) == (16, 0.5, 20)


def test_complete_text_means_the_same_and_legacy_texts_keep_their_defaults():
    cfg = parse(_minimal())
    assert parse(cfg.complete_text).sections.keys() == cfg.sections.keys()
    assert all(parse(cfg.complete_text).sections[n].as_dict() == s.as_dict() for n, s in cfg.sections.items())
    assert parse(cfg.complete_text, legacy=True).effective_model.shells == 8  # nothing omitted: nothing legacy
    old = parse(_minimal(), legacy=True)  # a text stored before 0.2 meant the defaults of then
    assert (old.effective_model.shells, old.effective_model.bond_shells, old.training.loss) == (3, 0, "energy")
    assert (old.slmc.local_updates, old.run.step_size, old.run.thermalize, old.training.every) == (0, 0.5, 200, 20)
    assert old.training.epochs == 30
    # a text stored by 0.2 or 0.3 has every key but bond_range (added in 0.4), and meant any separation
    stored = parse(cfg.replace("effective_model", bond_shells=2).complete_text.replace("bond_range = 2.0\n", ""),
                   legacy=True)
    assert (stored.effective_model.bond_shells, stored.effective_model.bond_range) == (2, 0.0)
    assert stores_every_key(cfg.complete_text.replace("bond_range = 2.0\n", ""))


def test_replace_resolves_dependent_defaults_again():
    cfg = parse(_minimal())
    exact = cfg.replace("run", sampler="exact")  # "auto" path defaults must not survive into the exact sampler
    assert (exact.slmc.local_updates, exact.run.step_size) == (0, 0.5)


def test_a_model_that_could_never_be_trained_is_refused():
    """A round needs twice the head's parameters in training samples (training/learner.py):
    at L = 28 the bond-pair terms within 2 shells at any range have 1053 classes, which a buffer
    of 2000 (1599 training samples) cannot fit; within 2 spacings (the default range) 23."""
    every = {"bond_shells": 2, "bond_range": 0.0}
    with pytest.raises(ConfigError, match=r"\[training\] buffer_size = 2000 .* 1062 parameters .* at least 2657"):
        parse(_minimal(lattice={"L": 28}, effective_model=every, run={"thermalize": 3000}))  # buffer 2000
    assert parse(_minimal(lattice={"L": 28}, effective_model=every, training={"buffer_size": 2657}))
    assert parse(_minimal(lattice={"L": 28}, effective_model=every, run={"sampler": "exact"}))
    assert parse(_minimal(lattice={"L": 28}, effective_model={"bond_shells": 2}))
