"""The compiled payload check and event id equal pydantic's and hashlib's answers.

``payload_plan(model)`` (catalog/_speedups.c) takes payloads that are already canonical and
JSON-ready without asking pydantic. Whenever it answers, the answer must be what the pydantic
validator returns followed by ``_json_ready`` — same values, same key order — and it must never
answer for a payload pydantic rejects or converts. Checked on every catalogued type's cases and
on every field of every type with probe values of each awkward sort. The compiled ``event_id``
must equal ``uuid5`` for keys of every length around the SHA-1 block boundaries.

Values must be equal and of the same types; the key order is the payload's rather than the
model's (no serialisation sees it: every sink sorts keys).
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import catalog.envelope as envelope
from catalog.base import _VALID_TS
from catalog.envelope import (
    NAMESPACE,
    EventDraft,
    EventValidationError,
    _json_ready,
    _py_event_id,
    build_envelope,
    event_id,
    payload_plan,
    payload_validator,
)
from catalog.jsonschema_export import example
from catalog.registry import REGISTRY
from tests.unit.catalog_cases import invalid_cases, null_cases, valid_cases

pytestmark = pytest.mark.skipif(not envelope.SPEEDUPS, reason="the C extension is not built")

LOWER = "0b5f4c1e-6f1a-4d6e-9a55-0c8e7f3b2a10"


class _Text(str):
    pass


PROBES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    100,
    101,
    2**70,
    1.5,
    float("nan"),
    float("inf"),
    "",
    "x",
    "USER",
    "user",
    "team",
    "pending",
    LOWER,
    LOWER.upper(),
    LOWER[:-1] + "G",
    LOWER + "\n",
    uuid.UUID(LOWER),
    "2026-01-02T03:04:05.678Z",
    "2026-01-02T03:04:05.678901Z",
    "2026-01-02T03:04:05.678+00:00",
    "2026-13-02T03:04:05.678Z",
    datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    "caf\u00e9 \u2713",
    "\ud800",
    _Text("x"),
    _Text(LOWER),
    [],
    ["a", "b"],
    [LOWER],
    [LOWER.upper()],
    ["\ud800"],
    ("a",),
    [1, {"a": None}],
    {},
    {"a": 1, "b": [True, None, "x"]},
    {"status_id": {"previous": "a", "new": "b"}},
    {"status_id": {"previous": {1, 2}}},
    {"status_id": {"previous": float("nan")}},
    {"status_id": "flat"},
    {1: "x"},
    {_Text("k"): "x"},
    {"a": datetime(2026, 1, 2, tzinfo=UTC)},
    {"a": (1, 2)},
    {"a": {"b": {"c": {"d": [1]}}}},
    "user@example.com",
]


def _reference(model: type, payload: Any) -> tuple[str, Any]:
    """pydantic's validator, then the JSON-ready step: what build_envelope did before the plan."""
    try:
        out = payload_validator(model).validate_python(payload)
    except ValidationError:
        return "error", None
    try:
        return "ok", _json_ready("T", "k", out)
    except EventValidationError:
        return "not-json", None


def _agree(event_type: str, payload: Any) -> bool:
    """Whether the plan answered; fails the test when its answer differs from pydantic's."""
    model = REGISTRY[event_type].model
    verdict, expected = _reference(model, payload)  # first: it fills the timestamp cache
    got = payload_plan(model)(payload, _VALID_TS)
    if got is None:
        return False
    assert verdict == "ok", (event_type, payload, verdict)
    assert got == expected, (event_type, payload)
    # the payload's own key order (sinks sort keys when they serialise)
    assert list(got) == list(payload), (event_type, payload)
    assert type(got) is dict and got is not payload
    return True


def astuple_shallow(env: envelope.Envelope) -> tuple[Any, ...]:
    return tuple(getattr(env, f.name) for f in dataclasses.fields(env))


def _cases_for(event_type: str) -> list[dict[str, Any]]:
    base = example(event_type)
    model = REGISTRY[event_type].model
    payloads = [base]
    for name in [*model.model_fields, "zzExtra"]:
        payloads.extend({**base, name: probe} for probe in PROBES)
        payloads.append({k: v for k, v in base.items() if k != name})
    return payloads


def test_many_layouts_of_one_type_stay_correct() -> None:
    """More key layouts than the plan remembers: each is checked from scratch, none is mixed up."""
    model = REGISTRY["TICKET_STATUS_CHANGED"].model
    base = example("TICKET_STATUS_CHANGED")
    for round_ in range(3):
        for n in range(20):
            payload = {**base, **{f"extra{j}_{n}": j for j in range(n % 5)}}
            if n % 3 == 0:
                payload = dict(reversed(payload.items()))
            if n % 7 == 0:
                del payload["ticketId"]  # a required field: pydantic's answer (an error)
            if n % 4 == 0:
                payload["tenantId"] = payload["tenantId"].upper()  # pydantic converts: not the fast path
            assert _agree("TICKET_STATUS_CHANGED", payload) == (n % 7 != 0 and n % 4 != 0), (round_, n)
        assert payload_plan(model) is payload_plan(model)


@pytest.mark.parametrize("event_type", sorted(REGISTRY))
def test_the_plan_answers_only_as_pydantic_does(event_type: str) -> None:
    answered = sum(_agree(event_type, payload) for payload in _cases_for(event_type))
    # The canonical example, and the many probes that are canonical, take the fast path unless
    # the example holds a field the plan leaves to pydantic (an e-mail address, a nested model).
    model = REGISTRY[event_type].model
    present = [
        _inner(f)
        for name, f in zip(model.model_fields, _fields(model), strict=True)
        if name in example(event_type)
    ]
    if all(envelope._field_kind(f)[0] != envelope._K_FALLBACK for f in present):
        assert answered >= 10


def test_the_plan_agrees_on_the_shared_catalog_cases() -> None:
    cases = [*valid_cases(), *invalid_cases(), *null_cases()]
    answered = sum(_agree(case.event_type, case.payload) for case in cases)
    assert answered >= len(REGISTRY)  # at least every type's canonical example


def test_non_dict_payloads_are_left_to_pydantic() -> None:
    plan = payload_plan(REGISTRY["TICKET_UPDATED"].model)
    base = example("TICKET_UPDATED")
    for payload in (list(base.items()), None, "x", REGISTRY["TICKET_UPDATED"].model.model_validate(base)):
        assert plan(payload, _VALID_TS) is None


def test_the_payload_is_a_copy_where_pydantic_copies() -> None:
    """Dicts and lists in a payload are copied, so a deriver's later change cannot reach the envelope."""
    payload = {**example("TICKET_UPDATED"), "updatedFields": ["status_id"]}
    payload["changes"] = {"status_id": {"previous": "a", "new": "b"}}
    got = payload_plan(REGISTRY["TICKET_UPDATED"].model)(payload, _VALID_TS)
    assert got is not None
    assert got["updatedFields"] is not payload["updatedFields"]
    assert got["changes"] is not payload["changes"]
    assert got["changes"]["status_id"] is not payload["changes"]["status_id"]


def test_an_adopting_caller_gets_its_own_payload_and_the_same_envelope() -> None:
    """The watcher hands its drafts over (adopt): no copies, an equal envelope, the same JSON."""
    fast = envelope.fast_envelope
    assert fast is not None
    tenant, ticket = str(uuid.uuid4()), str(uuid.uuid4())
    payload = {**example("TICKET_UPDATED"), "tenantId": tenant, "ticketId": ticket}
    payload["updatedFields"] = ["status_id"]
    payload["changes"] = {"status_id": {"previous": LOWER, "new": LOWER}}
    draft = EventDraft("TICKET_UPDATED", tenant, ticket, payload)
    when = datetime(2026, 1, 2, tzinfo=UTC)
    general = build_envelope(draft, slot="s", lsn=1, xid=1, commit_time=when, table="tickets")
    source = envelope.envelope_source("s", 1, 1, when, "tickets", False)
    copied = fast(draft, source, source.lsn)
    adopted = fast(draft, source, source.lsn, True)
    assert copied is not None and adopted is not None
    assert copied == adopted == general
    assert copied.payload is not payload and copied.payload["changes"] is not payload["changes"]
    assert adopted.payload is payload and adopted.payload["changes"] is payload["changes"]
    assert adopted.payload["updatedFields"] is payload["updatedFields"]
    assert envelope.envelopes_json([adopted]) == envelope.envelopes_json([general])
    # what the plan cannot answer is still left to pydantic, the draft untouched
    odd = {**payload, "occurredAt": "yesterday"}
    assert fast(EventDraft("TICKET_UPDATED", tenant, ticket, odd), source, source.lsn, True) is None
    assert odd["occurredAt"] == "yesterday"


def test_build_envelope_takes_the_fast_path_for_derived_payloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A payload as the ticket deriver builds it never reaches pydantic (the benchmark's case)."""
    tenant, ticket = str(uuid.uuid4()), str(uuid.uuid4())
    now = "2026-01-02T03:04:05.678Z"
    payload = {
        "tenantId": tenant,
        "occurredAt": now,
        "actorType": "USER",
        "actorUserId": LOWER,
        "ticketId": ticket,
        "previousStatusId": LOWER,
        "newStatusId": LOWER,
        "changedAt": now,
    }
    draft = EventDraft("TICKET_STATUS_CHANGED", tenant, ticket, payload)
    when = datetime(2026, 1, 2, tzinfo=UTC)
    first = build_envelope(draft, slot="s", lsn=1, xid=1, commit_time=when, table="tickets")

    def refuse(model: type) -> Any:
        raise AssertionError("pydantic was asked")

    # the compiled builder fills the slotted dataclass directly; the result is an ordinary Envelope
    assert envelope._ENVELOPE_SLOTS is True
    assert type(first) is envelope.Envelope and first == envelope.Envelope(*astuple_shallow(first))
    assert repr(first).startswith("Envelope(id=") and dataclasses.replace(first) == first
    monkeypatch.setattr(envelope, "payload_validator", refuse)
    monkeypatch.setattr(envelope, "_VALIDATORS", {})
    again = build_envelope(draft, slot="s", lsn=1, xid=1, commit_time=when, table="tickets")
    assert again == first
    bad = EventDraft("TICKET_STATUS_CHANGED", tenant, ticket, {**payload, "changedAt": "yesterday"})
    with pytest.raises(AssertionError, match="pydantic was asked"):
        build_envelope(bad, slot="s", lsn=1, xid=1, commit_time=when, table="tickets")


@pytest.mark.parametrize("length", [*range(0, 140), 1000, 4096])
def test_event_id_is_uuid5(length: int) -> None:
    key = ("TICKET_ASSIGNED:" + "é✓x" * length)[: 16 + length]
    expected = str(uuid.uuid5(NAMESPACE, key))
    assert event_id(key) == expected
    assert _py_event_id(key) == expected


def test_event_id_refuses_what_has_no_utf8_form() -> None:
    with pytest.raises(UnicodeEncodeError):
        event_id("\ud800")
    with pytest.raises(TypeError):
        event_id(b"bytes")  # type: ignore[arg-type]


def test_the_built_extension_is_not_older_than_its_source() -> None:
    from catalog import _speedups

    built = Path(_speedups.__file__)
    source = Path(envelope.__file__).with_name("_speedups.c")
    if built.parent == source.parent:  # an in-place (editable) build
        assert built.stat().st_mtime >= source.stat().st_mtime, "stale build: run `make venv`"


def test_without_the_extension_envelopes_are_byte_for_byte_the_same() -> None:
    """CDC_NO_SPEEDUPS=1 sends every payload through pydantic, as a build without a C compiler does."""
    script = (
        "import sys\n"
        "from datetime import UTC, datetime\n"
        "from catalog import envelope\n"
        "from catalog.envelope import EventDraft, build_envelope\n"
        "from catalog.jsonschema_export import example\n"
        "from catalog.registry import REGISTRY\n"
        "out = [str(envelope.SPEEDUPS)]\n"
        "for et in sorted(REGISTRY):\n"
        "    p = example(et)\n"
        "    d = EventDraft(et, p['tenantId'], '0b5f4c1e-6f1a-4d6e-9a55-0c8e7f3b2a10', p)\n"
        "    e = build_envelope(d, slot='s', lsn=7, xid=3, commit_time=datetime(2026, 1, 2, tzinfo=UTC),"
        " table='t')\n"
        "    out.append(e.to_json_bytes().decode())\n"
        "print('\\n'.join(out))\n"
    )
    runs = {}
    for flag in ("", "1"):
        env = {**os.environ, "CDC_NO_SPEEDUPS": flag}
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
        )
        runs[flag] = done.stdout.splitlines()
    assert runs[""][0] == "True" and runs["1"][0] == "False"
    assert runs[""][1:] == runs["1"][1:] and len(runs[""]) == len(REGISTRY) + 1


def test_probe_values_cover_every_kind() -> None:
    kinds = {
        envelope._field_kind(_inner(f))[0] & 0xFF for spec in REGISTRY.values() for f in _fields(spec.model)
    }
    # every kind the compiler knows is used by some catalogued field, so the probes reach it
    assert kinds >= set(range(14)) - {envelope._K_FALLBACK}
    assert any(isinstance(p, float) and math.isnan(p) for p in PROBES)


def _fields(model: type) -> list[Any]:
    schema: Any = model.__pydantic_core_schema__  # type: ignore[attr-defined]
    if schema["type"] == "definitions":
        schema = schema["schema"]
    return [spec["schema"] for spec in schema["schema"]["fields"].values()]


def _inner(schema: Any) -> Any:
    return schema["schema"] if schema["type"] == "default" else schema


@pytest.mark.parametrize(
    "discriminator", [None, "team", 'a"b', "back\\slash", "tab\there", "caf\u00e9", "x\u2028y"]
)
def test_envelope_json_equals_orjson_of_the_envelope(discriminator: str | None) -> None:
    """The compiled writer's bytes are orjson's for the whole envelope dict, keys sorted; text
    that would need escaping (or is not ASCII) goes to orjson whole."""
    import orjson

    when = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    checked = 0
    for event_type in sorted(REGISTRY):
        payload = example(event_type)
        payload["zzNested"] = {"b": [1, 2.5, None, True], "a": '\u00e9\n"', "c": {"z": 1, "y": 2}}
        draft = EventDraft(event_type, payload["tenantId"], LOWER, payload, discriminator)
        env = build_envelope(draft, slot="s", lsn=7 << 32 | 5, xid=3, commit_time=when, table="public.t")
        expected = orjson.dumps(
            env._with_source(envelope._source_json(env.source)), option=orjson.OPT_SORT_KEYS
        )
        assert env.to_json_bytes() == expected
        checked += 1
    assert checked == len(REGISTRY)
    plain = discriminator is None or discriminator == "team"
    env_json = envelope._envelope_json
    assert env_json is not None
    answered = env_json("i", "T", "t", {}, "k" if plain else f"k:{discriminator}", "r", b"{}")
    assert (answered is not None) == plain


def test_envelopes_json_equals_each_to_json_bytes() -> None:
    """The batch writer reads the slots of each envelope, asks for each Source's JSON once per
    run of envelopes sharing it, and gives each envelope's own to_json_bytes()."""
    envs = []
    for n, event_type in enumerate(sorted(REGISTRY)):
        payload = example(event_type)
        discriminator = 'q"uote' if n % 5 == 0 else None  # some need escaping: orjson writes those
        draft = EventDraft(event_type, payload["tenantId"], LOWER, payload, discriminator)
        when = datetime(2026, 1, 2, 3, 4, n % 3, tzinfo=UTC)
        table = "public.t" if n % 2 else "public.u"
        envs.append(
            build_envelope(draft, slot="s", lsn=1000 + n // 4, xid=n // 4, commit_time=when, table=table)
        )
    envs.append(envelope.Envelope.from_dict(envs[0].to_dict()))  # one built by its constructor
    expected = [e.to_json_bytes() for e in envs]
    assert envelope.envelopes_json(envs) == expected
    assert envelope.envelopes_json(tuple(reversed(envs))) == list(reversed(expected))
    assert envelope.envelopes_json([]) == []


def test_python_code_run_inside_a_check_cannot_swap_its_layout() -> None:
    """An allocation inside a check may run Python code (here a collector callback) that calls
    the same plan with new layouts; the running check keeps its own layout and answers right."""
    import gc

    model = REGISTRY["TICKET_UPDATED"].model
    plan = envelope._speedups.Plan(
        [
            (name, kind | (envelope._K_REQUIRED if required else 0), arg)
            for name, kind, arg, required in _compiled_fields(model)
        ]
    )
    base = example("TICKET_UPDATED")
    payload_validator(model).validate_python(base)  # the timestamp is known
    bogus = {
        "tenantId": base["tenantId"],
        "occurredAt": base["occurredAt"],
        "ticketId": base["ticketId"],
        "changes": {"status": {"previous": "a", "new": "b"}},
        "actorType": "bogus",
    }
    assert plan(bogus, _VALID_TS) is None
    calls = {"left": 50}

    def crowd(phase: str, info: dict[str, Any]) -> None:
        if calls["left"] and phase == "start":
            calls["left"] -= 1
            for j in range(10):  # more layouts than the plan keeps, each as long as the running one
                crowded = {k: bogus[k] for k in ("tenantId", "occurredAt", "ticketId")}
                plan({**crowded, f"x{j}": 1, f"y{j}": 2}, _VALID_TS)

    threshold = gc.get_threshold()
    gc.callbacks.append(crowd)
    gc.set_threshold(1)
    try:
        keep = [{} for _ in range(300)]  # empty the dict free list: the copies allocate
        assert plan(bogus, _VALID_TS) is None
        assert plan(base, _VALID_TS) == payload_validator(model).validate_python(base)
    finally:
        gc.callbacks.remove(crowd)
        gc.set_threshold(*threshold)
    assert keep and calls["left"] < 50


def test_the_batch_writer_holds_what_a_callback_could_free() -> None:
    source = envelope.Source("slot", "0/1", 1, "2026-01-01T00:00:00.000Z", "t")
    for mode in ("payload", "list"):
        envs = [
            envelope.Envelope("id", "T", "2026-01-01T00:00:00.000Z", {"k": ["v" * 50]}, "key", "ref", source)
        ]

        def source_bytes(src: envelope.Source, mode: str = mode, envs: list[Any] = envs) -> bytes:
            if mode == "payload":
                envs[0].payload = {"other": 1}
            else:
                envs.clear()
            return b'{"x":1}'

        (out,) = envelope._speedups.envelopes_json(envs, source_bytes)
        assert out.startswith(b'{"eventType":"T"')


def test_an_uninitialised_plan_is_an_error_not_a_crash() -> None:
    plan = envelope._speedups.Plan.__new__(envelope._speedups.Plan)
    with pytest.raises(RuntimeError):
        plan({"a": 1}, {})


def _compiled_fields(model: Any) -> list[tuple[str, int, Any, bool]]:
    out = []
    for name, spec in zip(model.model_fields, _fields(model), strict=True):
        required = spec["type"] != "default"
        kind, arg = envelope._field_kind(_inner(spec))
        out.append((name, kind, arg, required))
    return out


def test_a_build_of_another_version_of_the_extension_is_not_used() -> None:
    """A catalog/_speedups built from an older source (a pull without a rebuild) would be
    called with arguments it does not take: the catalog runs without it, and says so."""
    import subprocess
    import sys

    script = (
        "import sys, types\n"
        "sys.modules['catalog._speedups'] = types.ModuleType('catalog._speedups')\n"
        "from catalog import envelope\n"
        "print(envelope.SPEEDUPS, envelope.fast_envelope)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CDC_NO_SPEEDUPS"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["False", "None"]
    assert "built from another version of its source" in out.stderr
    from catalog import _speedups

    assert _speedups.API_VERSION == envelope.API_VERSION
