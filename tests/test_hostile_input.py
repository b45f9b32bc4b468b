"""Hostile configuration input, property-based (hypothesis).

The CLI contract (README, "Exit codes"): any bad configuration gives exit code 2 and ONE line
on stderr, ``slmc-hpc: error: ...``, naming the offending key or section; never a Python
traceback, never a hang, and never a change to an existing output file.

The strategies are derived from ``slmc_hpc.config.SCHEMA`` (each Key's kind, default, check
and choices), so a key added to the schema is covered without editing this file. Whether a
generated value is bad is decided by the schema read literally (the README's type column, the
Key's own ``check`` and ``choices``); values the schema accepts may still be rejected by the
cross-key consistency checks, so for those only the form of the answer is asserted (and, when
accepted, that the value was taken as given). ``run`` is only ever called on configurations
that are certainly invalid, so no property launches a simulation.

Examples are derandomized (the same inputs on every run); ``SLMC_HOSTILE_SCALE=10`` tests ten
times as many.

The tests at the end are the package bugs this file found (now fixed), kept as regression
tests.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import math
import os
import re
import signal
import subprocess
import sys
import tomllib
import traceback
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slmc_hpc.cli import main
from slmc_hpc.config import parse
from slmc_hpc.schema import DEPENDS, REQUIRED, SCHEMA

PREFIX = "slmc-hpc: error: "
SCALE = int(os.environ.get("SLMC_HOSTILE_SCALE", "1"))
CALL_LIMIT_S = 30  # one in-process main() call; a hang becomes a failure, not a stuck CI job


def hsettings(n: int):
    return settings(max_examples=n * SCALE, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# ---------------------------------------------------------------------------------------
# The schema, read as data

SECTIONS = list(SCHEMA)
KEYS = [(section, key) for section, keys in SCHEMA.items() for key in keys]
KEY_IDS = [f"{section}.{key.name}" for section, key in KEYS]
NUMERIC_KINDS = ("int", "float", "int_or_global", "int_or_auto", "float_or_auto", "float_list")
NUMERIC = [(s, k) for s, k in KEYS if k.kind in NUMERIC_KINDS]
KNOWN_NAMES = {s: {k.name for k in keys} for s, keys in SCHEMA.items()}
ALL_NAMES = set(SECTIONS) | {k.name for _, k in KEYS}

# Values for the keys that have no default. [temperatures] values has default None but is
# "required unless T_min, T_max" (README); every REQUIRED key must appear here.
REQUIRED_VALUES = {("lattice", "L"): 4, ("temperatures", "values"): [0.1]}
LADDER = {"T_min": 0.05, "T_max": 0.4, "count": 4}


def _base(ladder: bool = False) -> dict:
    """Every key at its schema default (unset keys left out), plus the required values:
    a valid configuration from which any optional key can be dropped."""
    doc = {s: {k.name: k.default for k in keys if k.default not in (None, REQUIRED, DEPENDS)}
           for s, keys in SCHEMA.items()}
    for s, k in KEYS:
        if k.default is REQUIRED:
            assert (s, k.name) in REQUIRED_VALUES, f"new required key [{s}] {k.name}: give this test a value"
    for (s, name), value in REQUIRED_VALUES.items():
        doc[s][name] = value
    # keys whose default depends on others are left to parse, but for a short thermalization
    # (the default 12000 steps would make every run of these tests slow)
    doc["run"]["thermalize"] = 200
    if ladder:
        del doc["temperatures"]["values"]
        doc["temperatures"].update(LADDER)
    return doc


def has_kind(kind: str, v) -> bool:
    """The README's type column: does v have the type this kind of key takes?"""
    def number(x):
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if kind == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == "float":
        return number(v)
    if kind == "str":
        return isinstance(v, str)
    if kind == "bool":
        return isinstance(v, bool)
    if kind in ("int_or_global", "int_or_auto"):
        return v == kind.split("_or_")[1] or (isinstance(v, int) and not isinstance(v, bool))
    if kind == "float_or_auto":
        return v == "auto" or number(v)
    if kind == "float_list":
        return isinstance(v, list) and all(number(x) for x in v)
    raise AssertionError(f"unknown key kind {kind!r}: teach tests/test_hostile_input.py about it")


def taken_as(kind: str, v):
    """The value the configuration should hold for a well-typed v."""
    if kind == "float" or kind == "float_or_auto" and v != "auto":
        return float(v)
    if kind == "float_list":
        return [float(x) for x in v]
    return v


def schema_problem(key, v) -> str | None:
    """Why the schema, read literally, rejects v for this key alone (None: it does not)."""
    if not has_kind(key.kind, v):
        return "type"
    v = taken_as(key.kind, v)
    if v in ("auto", "global") and key.kind.endswith("_or_" + v):
        return None
    if key.kind in ("float", "float_or_auto") and not math.isfinite(v):
        return "not finite"
    if key.kind == "float_list" and not all(math.isfinite(x) for x in v):
        return "not finite"
    if key.choices is not None and v not in key.choices:
        return "not a choice"
    if key.check is not None:
        return key.check(v)
    return None


# ---------------------------------------------------------------------------------------
# TOML writing (independent of slmc_hpc.config.to_toml, which handles plain values only)

BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")


def _string(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _key(k: str) -> str:
    return k if BARE_KEY.match(k) else _string(k)


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def toml_text(doc: dict) -> str:
    lines = [f"{_key(k)} = {_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"[{_key(name)}]")
            lines += [f"{_key(k)} = {_value(v)}" for k, v in table.items()]
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)  # a failure here is a bug of this test, not of the package
    return text


# ---------------------------------------------------------------------------------------
# Strategies

SPECIAL_INTS = [0, -1, 1, 2, -2**31, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -2**63, 2**64, 10**18, 10**30,
                -10**30, 10**300, -10**300]  # beyond ~1.8e308 an int overflows float(): see the xfails
SPECIAL_FLOATS = [0.0, -0.0, -1.0, 1.0, 0.5, 5e-324, 1e-320, 1e-7, 1e-6, 1e308, -1e308,
                  math.nan, math.inf, -math.inf]

ints = st.one_of(st.sampled_from(SPECIAL_INTS), st.integers(-5, 120), st.integers(-2**66, 2**66))
floats = st.one_of(st.sampled_from(SPECIAL_FLOATS), st.floats(), st.floats(-10, 10))
texts = st.text(max_size=12)
bare_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,11}", fullmatch=True)
dates = st.one_of(st.dates(datetime.date(1, 1, 1), datetime.date(9999, 12, 31)), st.times(),
                  st.datetimes(datetime.datetime(1900, 1, 1), datetime.datetime(2100, 1, 1)),
                  st.datetimes(datetime.datetime(1900, 1, 1), datetime.datetime(2100, 1, 1),
                               timezones=st.just(datetime.timezone.utc)))
scalars = st.one_of(st.booleans(), ints, floats, texts, dates,
                    st.sampled_from(["global", "4", "4.0", "nan", "inf", "true", "", " ", "linear"]))
toml_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(bare_names, inner, max_size=3)),
                           max_leaves=6)


def _sample_valid(key):
    """A value of the right type for the key (its default, or a stand-in for unset ones)."""
    if key.default not in (None, REQUIRED, DEPENDS):
        return key.default
    return {"int": 4, "float": 0.1, "float_list": [0.1], "str": "x", "bool": False,
            "int_or_global": 1, "int_or_auto": 1, "float_or_auto": 0.1}[key.kind]


def confusions(key):
    """The classic type confusions for this key: its value as a string, in a list, in a
    table, a float for an int, a boolean for a number, ..."""
    v = _sample_valid(key)
    out = [str(v), [v], {"value": v}, True, False, datetime.date(2024, 1, 1), {}, []]
    if isinstance(v, int) and not isinstance(v, bool):
        out += [float(v), v + 0.5, math.nan, math.inf]
    if isinstance(v, float):
        out += [str(v), "1e3"]
    if isinstance(v, list):
        out += [v[0], [str(x) for x in v], [v], [True], [{"T": x} for x in v]]
    if isinstance(v, str):
        out += [1, 0.0, [v], {"name": v}]
    return [x for x in out if not has_kind(key.kind, x)]


def wrong_type(key):
    return st.one_of(st.sampled_from(confusions(key)), toml_values).filter(lambda v: not has_kind(key.kind, v))


def numeric_values(key):
    if key.kind in ("int", "int_or_global", "int_or_auto"):
        return ints
    if key.kind in ("float", "float_or_auto"):
        return st.one_of(floats, ints)
    if key.kind == "float_list":
        return st.one_of(st.lists(st.one_of(floats, ints), max_size=5),
                         st.lists(st.floats(1e-7, 10), min_size=1, max_size=5))
    raise AssertionError(key.kind)


@st.composite
def typos(draw, names):
    """A near miss of a real name (deleted, doubled, swapped or re-cased letter, ...), or
    a made-up bare name (it may hit a real name: see unknown_name)."""
    real = draw(st.sampled_from(sorted(names)))
    i = draw(st.integers(0, len(real) - 1))
    op = draw(st.sampled_from(["delete", "double", "swap", "case", "insert", "plural", "dash", "made-up"]))
    if op == "delete":
        name = real[:i] + real[i + 1:]
    elif op == "double":
        name = real[:i] + real[i] + real[i:]
    elif op == "swap" and len(real) > 1:
        j = min(i, len(real) - 2)
        name = real[:j] + real[j + 1] + real[j] + real[j + 2:]
    elif op == "case":
        name = real[:i] + real[i].swapcase() + real[i + 1:]
    elif op == "insert":
        name = real[:i] + draw(st.sampled_from("aeixz_0")) + real[i:]
    elif op == "plural":
        name = real + "s"
    elif op == "dash":
        name = real.replace("_", "-") if "_" in real else real + "-"
    else:
        name = draw(bare_names)
    return name


def unknown_name(names):
    return typos(names).filter(lambda n: n and n not in names)


# ---------------------------------------------------------------------------------------
# Calling the CLI

class Hang(BaseException):
    """Raised by the alarm; a BaseException so no ``except Exception`` can swallow it."""


@contextlib.contextmanager
def time_limit(seconds):
    def on_alarm(signum, frame):
        raise Hang(f"main() gave no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def call(argv):
    """main(argv) in this process: (exit code, stdout, stderr). An exception escaping main
    (what a user would see as a traceback) or a hang fails the test with the exception."""
    out, err = io.StringIO(), io.StringIO()
    escaped = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            with time_limit(CALL_LIMIT_S):
                code = main(argv)
        except SystemExit as exc:  # argparse; never expected with these arguments
            code = f"SystemExit({exc.code!r})"
        except (Exception, Hang) as exc:
            escaped = exc
            tb = traceback.format_exc()
    if escaped is not None:
        pytest.fail(f"main({argv!r}) raised {type(escaped).__name__} (a traceback for the user): "
                    f"{str(escaped)[:300]}\n{tb[-1500:]}", pytrace=False)
    return code, out.getvalue(), err.getvalue()


def assert_rejected(result, names=(), what=""):
    """Exit 2 and exactly one line ``slmc-hpc: error: ...`` naming one of ``names``."""
    code, out, err = result
    context = f"{what}\nstderr: {err[:600]!r}"
    assert code == 2, f"exit code {code!r}, expected 2; {context}"
    assert err.startswith(PREFIX), f"stderr does not start with {PREFIX!r}; {context}"
    assert err.endswith("\n") and err.count("\n") == 1 and "\r" not in err, f"not exactly one line; {context}"
    assert "Traceback" not in err, context
    assert out == "", f"something on stdout for a rejected input: {out[:300]!r}"
    if names:
        assert any(n in err for n in names), f"message names none of {list(names)}; {context}"


def assert_answered(result, what=""):
    """Exit 0, or a proper rejection (exit 2, one line) - never anything else."""
    if result[0] != 0:
        assert_rejected(result, what=what)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def write(workdir):
    path = workdir / "config.toml"

    def write(content) -> Path:
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    return write


TINY_RUN = """
[lattice]
kind = "chain"
L = 2
[temperatures]
values = [0.5]
[run]
sampler = "exact"
thermalize = 0
measure = 2
snapshot_every = 1
progress_every = 1000.0
"""


class Precious:
    """A valid output file of a real (tiny) run, and the state of its folder."""

    def __init__(self, folder: Path):
        self.folder = folder
        config = folder.parent / f"{folder.name}-tiny.toml"
        config.write_text(TINY_RUN)
        self.path = folder / "results.h5"
        code, out, err = call(["run", str(config), "--output", str(self.path)])
        assert code == 0, f"the tiny valid run failed (exit {code}): {err[-2000:]}"
        self.content = self.path.read_bytes()
        assert self.content[:8] == b"\x89HDF\r\n\x1a\n"
        self.digest = sha256(self.path)
        self.listing = sorted(os.listdir(folder))

    def damage(self) -> str | None:
        """What happened to the file and its folder (None: nothing); puts things back, so
        later tests report their own failures rather than this one."""
        changed = not self.path.is_file() or sha256(self.path) != self.digest
        listing = sorted(os.listdir(self.folder))
        if not changed and listing == self.listing:
            return None
        for name in set(listing) - set(self.listing):
            (self.folder / name).unlink()
        self.path.write_bytes(self.content)
        if changed:
            return "the existing output file was changed"
        return f"files appeared or vanished: {sorted(set(listing) ^ set(self.listing))}"

    def assert_untouched(self, what=""):
        damage = self.damage()
        assert damage is None, f"{damage}; {what}"


@pytest.fixture(scope="module")
def precious(tmp_path_factory):
    return Precious(tmp_path_factory.mktemp("output"))


RUN_FLAGS = st.sampled_from([[], ["--overwrite"]])


def reject_run(precious, config: Path, flags, names=(), what=""):
    """run on a certainly invalid configuration: rejected, the existing output untouched
    (even with --overwrite: the configuration is checked before anything is written)."""
    result = call(["run", str(config), "--output", str(precious.path), *flags])
    damage = precious.damage()
    assert_rejected(result, names, what=f"run {flags}: {what}")
    assert damage is None, f"{damage}; run {flags}: {what}"


# ---------------------------------------------------------------------------------------
# The base configuration itself

@pytest.mark.parametrize("ladder", [False, True], ids=["values", "ladder"])
def test_base_configuration_is_valid(write, ladder):
    code, out, err = call(["check", str(write(toml_text(_base(ladder))))])
    assert (code, err) == (0, ""), err
    assert out.count("\n") == len(SCHEMA)


def test_precious_output_survives_a_valid_run_without_overwrite(precious, workdir):
    config = workdir / "tiny.toml"
    config.write_text(TINY_RUN)
    assert_rejected(call(["run", str(config), "--output", str(precious.path)]), ["already exists"])
    precious.assert_untouched()


# ---------------------------------------------------------------------------------------
# Wrong types, for every key

@pytest.mark.parametrize("section,key", KEYS, ids=KEY_IDS)
def test_type_confusions_for_every_key(write, section, key):
    for value in confusions(key):
        doc = _base()
        doc[section][key.name] = value
        path = write(toml_text(doc))
        assert_rejected(call(["check", str(path)]), [f"[{section}] {key.name}"], what=f"[{section}] {key.name} = {value!r}")


@pytest.mark.parametrize("section,key", KEYS, ids=KEY_IDS)
@hsettings(12)
@given(data=st.data())
def test_wrong_type_for_every_key_is_rejected_by_check(write, section, key, data):
    value = data.draw(wrong_type(key), label="value")
    doc = _base()
    doc[section][key.name] = value
    path = write(toml_text(doc))
    assert_rejected(call(["check", str(path)]), [f"[{section}] {key.name}"], what=f"[{section}] {key.name} = {value!r}")


@hsettings(60)
@given(data=st.data(), flags=RUN_FLAGS)
def test_wrong_type_never_touches_an_existing_output(write, precious, data, flags):
    section, key = data.draw(st.sampled_from(KEYS), label="key")
    value = data.draw(wrong_type(key), label="value")
    doc = _base()
    doc[section][key.name] = value
    reject_run(precious, write(toml_text(doc)), flags, [f"[{section}] {key.name}"], f"[{section}] {key.name} = {value!r}")


@hsettings(80)
@given(data=st.data())
def test_several_wrong_types_at_once_name_one_of_them(write, data):
    chosen = data.draw(st.lists(st.sampled_from(KEYS), min_size=2, max_size=6, unique_by=lambda sk: KEY_IDS[KEYS.index(sk)]),
                       label="keys")
    doc = _base()
    for section, key in chosen:
        doc[section][key.name] = data.draw(wrong_type(key), label=f"{section}.{key.name}")
    path = write(toml_text(doc))
    assert_rejected(call(["check", str(path)]), [f"[{s}] {k.name}" for s, k in chosen])


@pytest.mark.parametrize("section", SECTIONS)
@hsettings(10)
@given(value=toml_values.filter(lambda v: not isinstance(v, dict)))
def test_a_section_that_is_not_a_table_is_rejected(write, section, value):
    doc = _base()
    doc[section] = value  # written as a top-level `section = value`; lists of tables included
    assert_rejected(call(["check", str(write(toml_text(doc)))]), [f"[{section}]"], what=f"{section} = {value!r}")


# ---------------------------------------------------------------------------------------
# NaN, ±inf, negative, zero and absurd values for every numeric key

def judge_numeric(write, section, key, value):
    """A value for one key of the base: rejected naming the key when the schema says it is
    bad; otherwise accepted as given, or refused by a cross-key check naming the key or its
    section."""
    doc = _base()
    doc[section][key.name] = value
    path = write(toml_text(doc))
    what = f"[{section}] {key.name} = {value!r}"
    result = call(["check", str(path)])
    problem = schema_problem(key, value)
    if problem is not None:
        assert_rejected(result, [f"[{section}] {key.name}"], what=f"{what} ({problem})")
    elif result[0] == 0:
        got = getattr(parse(path.read_text()).sections[section], key.name)
        assert got == taken_as(key.kind, value), f"{what} accepted but read as {got!r}"
    else:
        assert_rejected(result, [f"[{section}]", f"{key.name} ="], what=what)


def special_values(key):
    """NaN, ±inf, zero, negative and absurd values of this key's kind, every one of them."""
    if key.kind in ("int", "int_or_global", "int_or_auto"):
        return SPECIAL_INTS
    if key.kind in ("float", "float_or_auto"):
        return SPECIAL_FLOATS + [0, -1, 10**300]
    if key.kind == "float_list":
        return [[x] for x in SPECIAL_FLOATS] + [[], [0.1, math.nan], [0.1, 0.1], [0.2, 0.1], [0.1, math.inf],
                                                [1e-7, 1e-6], [1, 2, 3], [10**300]]
    raise AssertionError(key.kind)


@pytest.mark.parametrize("section,key", NUMERIC, ids=[f"{s}.{k.name}" for s, k in NUMERIC])
def test_special_values_for_every_numeric_key(write, section, key):
    for value in special_values(key):
        judge_numeric(write, section, key, value)


@pytest.mark.parametrize("section,key", NUMERIC, ids=[f"{s}.{k.name}" for s, k in NUMERIC])
@hsettings(20)
@given(data=st.data())
def test_numeric_values_are_judged_by_the_schema(write, section, key, data):
    judge_numeric(write, section, key, data.draw(numeric_values(key), label="value"))


@hsettings(60)
@given(data=st.data(), flags=RUN_FLAGS)
def test_out_of_range_values_never_touch_an_existing_output(write, precious, data, flags):
    section, key = data.draw(st.sampled_from(NUMERIC), label="key")
    value = data.draw(numeric_values(key).filter(lambda v: schema_problem(key, v) is not None), label="value")
    doc = _base()
    doc[section][key.name] = value
    reject_run(precious, write(toml_text(doc)), flags, [f"[{section}] {key.name}"], f"[{section}] {key.name} = {value!r}")


# README: N = L**dim sites with 2N <= 16384 (so L <= 8192, 90, 20 for chain, square, cubic).
@pytest.mark.parametrize("kind,largest", [("chain", 8192), ("square", 90), ("cubic", 20)])
def test_lattice_size_limit(write, kind, largest):
    doc = _base()
    doc["lattice"]["kind"] = kind
    for L, ok in [(largest, True), (largest + 1, False), (10**6, False), (2**63, False), (10**300, False)]:
        doc["lattice"]["L"] = L
        result = call(["check", str(write(toml_text(doc)))])
        if ok:
            assert result[0] == 0, result[2]
        else:
            assert_rejected(result, ["[lattice] L"], what=f"{kind} L = {L}")


@pytest.mark.parametrize("changes,names", [
    ({"run": {"measure": 10**15, "snapshot_every": 1}}, ["[run]"]),
    ({"run": {"measure": 10**300, "snapshot_every": 1}}, ["[run]"]),
    ({"training": {"buffer_size": 10**12}}, ["[training] buffer_size"]),
    ({"training": {"buffer_size": 10**300}}, ["[training] buffer_size"]),
    ({"training": {"buffer_size": 2**63, "loss": "pair"}}, ["[training] buffer_size"]),
    ({"slmc": {"local_updates": 10**7}}, ["[slmc] local_updates"]),
    ({"run": {"seed": 2**64}}, ["[run] seed"]),
    ({"training": {"every": 10**18}}, ["[training] every"]),
    ({"effective_model": {"shells": 10**9}}, ["[effective_model] shells"]),
    ({"effective_model": {"kind": "transformer", "block_shells": 10**9}}, ["[effective_model] block_shells"]),
    ({"effective_model": {"kind": "transformer", "attention_shells": 10**9}}, ["[effective_model] attention_shells"]),
    ({"temperatures": {"values": [1e-300, 0.1]}}, ["[temperatures] values"]),
], ids=lambda x: str(x)[:60])
def test_absurd_sizes_are_rejected(write, precious, changes, names):
    doc = _base()
    for section, values in changes.items():
        doc[section].update(values)
    path = write(toml_text(doc))
    assert_rejected(call(["check", str(path)]), names, what=str(changes))
    reject_run(precious, path, [], names, str(changes))


# ---------------------------------------------------------------------------------------
# Missing sections and keys

@pytest.mark.parametrize("ladder", [False, True], ids=["values", "ladder"])
@hsettings(80)
@given(data=st.data())
def test_missing_sections_and_keys(write, precious, ladder, data):
    doc = _base(ladder)
    present = [(s, name) for s in doc for name in doc[s]]
    dropped_keys = data.draw(st.sets(st.sampled_from(present)), label="dropped keys")
    dropped_sections = data.draw(st.sets(st.sampled_from(SECTIONS)), label="dropped sections")
    for s, name in dropped_keys:
        del doc[s][name]
    for s in dropped_sections:
        del doc[s]
    gone = {(s, n) for s, n in present if s in dropped_sections or (s, n) in dropped_keys}
    # what the README makes required: keys without a default, and the temperatures
    # (values, or both T_min and T_max)
    required = [(s, k.name) for s, k in KEYS if k.default is REQUIRED]
    required += [("temperatures", "T_min"), ("temperatures", "T_max")] if ladder else [("temperatures", "values")]
    missing = [f"[{s}] {n}" for s, n in required if (s, n) in gone]
    path = write(toml_text(doc))
    result = call(["check", str(path)])
    if not missing:
        assert result[0] == 0, f"valid without {sorted(gone)} but: {result[2]!r}"
        return
    names = [m for m in missing if m.startswith("[lattice]")] or ["[temperatures]"]
    assert_rejected(result, names, what=f"without {sorted(gone)}")
    reject_run(precious, path, [], names, f"without {sorted(gone)}")


def test_empty_configuration(write, precious):
    for content in ["", b"", "\n\n", "# nothing but a comment\n", "[lattice]\n[temperatures]\n"]:
        path = write(content)
        assert_rejected(call(["check", str(path)]), ["[lattice] L"], what=repr(content))
        reject_run(precious, path, [], ["[lattice] L"], repr(content))


# ---------------------------------------------------------------------------------------
# Unknown sections and keys, typos of real names

@hsettings(120)
@given(data=st.data(), value=toml_values)
def test_unknown_section_is_rejected(write, data, value):
    # typos of section and key names (a key name at the top level is an unknown section too)
    name = data.draw(typos(ALL_NAMES).filter(lambda n: n and n not in SCHEMA), label="section")
    doc = _base()
    doc[name] = data.draw(st.one_of(st.just({}), st.dictionaries(bare_names, toml_values, max_size=2),
                                    st.just(value)), label="content")
    path = write(toml_text(doc))
    assert_rejected(call(["check", str(path)]), [f"unknown section [{name}]"], what=f"section {name!r}")


@hsettings(150)
@given(data=st.data(), value=toml_values)
def test_unknown_key_is_rejected(write, data, value):
    section = data.draw(st.sampled_from(SECTIONS), label="section")
    known = KNOWN_NAMES[section]
    name = data.draw(st.one_of(unknown_name(known), unknown_name(ALL_NAMES).filter(lambda n: n not in known)),
                     label="key")
    doc = _base()
    doc[section][name] = value
    path = write(toml_text(doc))
    assert_rejected(call(["check", str(path)]), [f"[{section}] unknown key {name!r}"], what=f"[{section}] {name!r}")


@hsettings(60)
@given(data=st.data(), flags=RUN_FLAGS)
def test_misplaced_key_is_rejected_and_never_touches_an_existing_output(write, precious, data, flags):
    """A real key in the wrong section (``L`` under [model], ``seed`` under [training], ...)."""
    home, key = data.draw(st.sampled_from(KEYS), label="key")
    section = data.draw(st.sampled_from([s for s in SECTIONS if key.name not in KNOWN_NAMES[s]]), label="section")
    doc = _base()
    doc[section][key.name] = _sample_valid(key)
    path = write(toml_text(doc))
    names = [f"[{section}] unknown key {key.name!r}"]
    assert_rejected(call(["check", str(path)]), names, what=f"{key.name} of [{home}] under [{section}]")
    reject_run(precious, path, flags, names, f"{key.name} under [{section}]")


# ---------------------------------------------------------------------------------------
# Broken TOML, bytes, files that are not configuration files

def toml_fails(text: str) -> bool:
    try:
        tomllib.loads(text)
    except Exception:
        return True
    return False


TOKENS = ["[", "]", "[[", "]]", "=", " = ", '"', "'", '"""', "\n", " ", "\t", "#", "{", "}", ",", ".", "\\",
          "[lattice]", "[temperatures]", "[run]", "L", "4", "values", "[0.1]", "0x", "1e", "_", "+", "-",
          "nan", "inf", "true", "1979-05-27", "07:32:00", "\r\n", "\x00", "\ufeff", "é", "\u2028"]


@hsettings(150)
@given(text=st.one_of(st.text(max_size=200), st.lists(st.sampled_from(TOKENS), max_size=30).map("".join)))
def test_random_text(write, text):
    path = write(text)
    result = call(["check", str(path)])
    # no valid configuration is this short without [lattice] L and the temperatures
    assert_rejected(result, ["not valid TOML"] if toml_fails(text) else [], what=repr(text))


@hsettings(80)
@given(content=st.binary(max_size=200))
def test_random_bytes(write, content):
    path = write(content)
    try:
        content.decode("utf-8")
        names = []
    except UnicodeDecodeError:
        names = ["cannot read configuration file"]
    assert_rejected(call(["check", str(path)]), names, what=repr(content))


BASE_TEXT = toml_text(_base())


@hsettings(150)
@given(data=st.data(), flags=RUN_FLAGS)
def test_truncated_and_spliced_toml(write, precious, data, flags):
    cut = data.draw(st.integers(0, len(BASE_TEXT)), label="cut")
    how = data.draw(st.sampled_from(["truncate", "delete", "insert", "duplicate"]), label="how")
    if how == "truncate":
        text = BASE_TEXT[:cut]
    elif how == "delete":
        text = BASE_TEXT[:cut] + BASE_TEXT[cut + data.draw(st.integers(1, 20), label="n"):]
    elif how == "insert":
        text = BASE_TEXT[:cut] + data.draw(st.sampled_from(TOKENS) | st.text(max_size=5), label="junk") + BASE_TEXT[cut:]
    else:
        text = BASE_TEXT[:cut] + BASE_TEXT[max(0, cut - data.draw(st.integers(1, 40), label="n")):]
    path = write(text)
    result = call(["check", str(path)])
    if toml_fails(text):
        assert_rejected(result, ["not valid TOML"], what=repr(text))
        reject_run(precious, path, flags, ["not valid TOML"], repr(text))
    else:  # still TOML (e.g. cut at a line end): any answer, but a proper one
        assert_answered(result, what=repr(text))


def test_files_that_are_not_configurations(workdir, precious):
    folder = workdir / "not-files"
    folder.mkdir(exist_ok=True)
    good = BASE_TEXT
    cases = {
        "missing": (folder / "nope.toml", None, ["does not exist"]),
        "directory": (folder / "adir.toml", "dir", ["cannot read configuration file"]),
        "latin-1": (folder / "latin1.toml", ("# T in Kelvin \xb0\n" + good).encode("latin-1"),
                    ["cannot read configuration file"]),
        "utf-16": (folder / "utf16.toml", good.encode("utf-16"), ["cannot read configuration file"]),
        "invalid utf-8": (folder / "bad.toml", b"[lattice]\nL = 4\xff\xfe\n", ["cannot read configuration file"]),
        "nul bytes": (folder / "nul.toml", good.encode().replace(b"\n", b"\n\x00", 1), ["not valid TOML"]),
        "bom": (folder / "bom.toml", b"\xef\xbb\xbf" + good.encode(), []),
        "binary": (folder / "bin.toml", bytes(range(256)) * 4, ["cannot read configuration file"]),
        "hdf5 file": (precious.path, None, ["cannot read configuration file"]),
        "name with newline": (folder / "bad\nname.toml", None, ["does not exist"]),
    }
    for what, (path, content, names) in cases.items():
        if content == "dir":
            path.mkdir(exist_ok=True)
        elif content is not None:
            path.write_bytes(content)
        assert_rejected(call(["check", str(path)]), names, what=what)
        reject_run(precious, path, [], names, what)
        reject_run(precious, path, ["--overwrite"], names, what)


# ---------------------------------------------------------------------------------------
# Through the real entry point

ENTRY = Path(sys.executable).parent / "slmc-hpc"


@pytest.mark.skipif(not ENTRY.exists(), reason="slmc-hpc entry point not installed next to this Python")
def test_entry_point_gives_one_line_and_exit_2(workdir, precious):
    folder = workdir / "entry"
    folder.mkdir(exist_ok=True)
    doc = _base()
    doc["lattice"]["L"] = [4]
    (folder / "type.toml").write_text(toml_text(doc))
    (folder / "bytes.toml").write_bytes(b"[lattice]\nL = \xff\n")
    for argv, name in [(["check", "type.toml"], "[lattice] L"),
                       (["run", "bytes.toml", "--output", str(precious.path), "--overwrite"],
                        "cannot read configuration file")]:
        proc = subprocess.run([str(ENTRY), *argv], cwd=folder, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith(PREFIX) and proc.stderr.count("\n") == 1, proc.stderr
        assert name in proc.stderr and "Traceback" not in proc.stderr and proc.stdout == ""
    precious.assert_untouched()


# ---------------------------------------------------------------------------------------
# Package bugs this file found (all fixed): each case stays as a regression test

def _replace_key(section, line):
    """The base text with ``line`` (a literal the dict cannot hold) in place of its key."""
    name = line.split(" = ")[0]
    doc = _base()
    doc[section].pop(name, None)
    return toml_text(doc).replace(f"[{section}]\n", f"[{section}]\n{line}\n", 1)


@pytest.mark.parametrize("section,line", [("model", "t = 1" + "0" * 400),
                                          ("temperatures", "values = [1" + "0" * 400 + "]"),
                                          ("run", "step_size = -1" + "0" * 309)])
def test_bug_int_beyond_float_range(write, section, line):
    assert_rejected(call(["check", str(write(_replace_key(section, line)))]), [f"[{section}] {line.split(' =')[0]}"])


@pytest.mark.parametrize("section,line", [
    ("lattice", "L = 1" + "0" * 4400),             # tomllib: ValueError from int()
    ("lattice", "L = 0x1" + "0" * 4000),           # message "L = {L} gives a ..." cannot format L
    ("run", "seed = 0x1" + "0" * 4000),            # message "got {value!r}" cannot format it
    ("run", "thermalize = 0x1" + "0" * 4000),      # valid for the schema; `check` cannot print it
])
def test_bug_integers_with_too_many_digits(write, section, line):
    result = call(["check", str(write(_replace_key(section, line)))])
    assert_rejected(result, [f"[{section}]", "not valid TOML"])


@pytest.mark.parametrize("count", [10**12, 10**20])
def test_bug_huge_temperature_count(write, count):
    doc = _base(ladder=True)
    doc["temperatures"]["count"] = count
    assert_rejected(call(["check", str(write(toml_text(doc)))]), ["[temperatures] count"])


def test_bug_unknown_section_name_with_newline(write):
    doc = _base()
    doc["a\nb"] = {}
    assert_rejected(call(["check", str(write(toml_text(doc)))]), ["unknown section"])


def test_bug_output_name_with_nul_overwrites_a_file(tmp_path):
    keep = tmp_path / "keep"
    keep.write_bytes(b"precious results")
    config = tmp_path / "c.toml"
    config.write_text(TINY_RUN + f'output = "{keep}\\u0000.h5"\n')
    result = call(["run", str(config)])
    assert keep.read_bytes() == b"precious results", "an existing file was overwritten"
    assert_rejected(result, ["[run] output"])


@pytest.mark.skipif(not ENTRY.exists(), reason="slmc-hpc entry point not installed next to this Python")
def test_bug_configuration_read_with_the_locale_encoding(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("# β = 1/T\n" + BASE_TEXT, encoding="utf-8")
    env = dict(os.environ, LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0")
    proc = subprocess.run([str(ENTRY), "check", str(config)], capture_output=True, text=True,
                          encoding="utf-8", env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
