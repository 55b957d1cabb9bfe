"""``ENTITY_HALLUCINATION`` and ``ENTITY_MISMATCH``: ids that came from nowhere, or from the wrong customer.

Seed 003's fault: the model referenced ``ord_555``, an id that was never in
its context; ``get_order(ord_555)`` then returned an order of ``cust_012`` in a
run about ``cust_789``. The backward trace starts at the LLM call that first
referenced the invented id, so both the LLM span (its requested arguments) and
the tool span (its actual arguments) are checked.

An id is *known* in a run when it was declared as the run's subject, appeared
in an LLM call's input, in the run's own input, or in the result of an earlier
successful tool call. Ids compare in their normal form
(:func:`.ids.normalise_id`: decoration such as ``#``, quotes and trailing
punctuation removed, case folded, a number equal to its text), whatever type
each side gave them. What the run read is learnt liberally
(:func:`.ids.learnable_ids`: every scalar and every word with a digit, under
any key), so an id that appeared earlier in any form is known; what is
*checked* stays the extractor's strict shapes.

A run is only checked once it has an *input* basis: declared entities, the
run's own input, or an LLM call whose input was scanned. Without one the engine
cannot know what the agent was given (foreign spans recorded without content,
or tools driven by code with ids from its own configuration), and every id
would look invented; tool results alone do not make a basis for that reason.

Raw results are scanned for ids lazily, only when an id is not already known
or the run has a subject to compare against, so a run whose calls reference
only known ids never pays for extraction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..semconv import Flag
from .ids import learnable_ids, normalise_id
from .record import Entity, Finding, SpanRecord
from .state import CallKey, CallState, RunState, bounded_put

if TYPE_CHECKING:
    from .context import Context

LEARN_LIMIT = 4096  # ids taken from one raw result or input
# Upper-case codes found in prose ("RTX4090", "E1234") ground ids but are never accused: a model
# may legitimately write a product or error code it knows into a search query. Under an id-ish
# key the same value gets the key's type and is checked.
WEAK_TYPES = frozenset({"code"})
MAX_PENDING = 128  # raw values held for lazy learning before they are scanned anyway (most runs never are)


def declare(ctx: Context, run: RunState, entities: Mapping[str, Any]) -> None:
    """Record the run's subject (``{"customer": "cust_789"}``): known ids, and what results must match."""
    for etype, value in entities.items():
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            continue
        eid = str(value).strip()
        if not eid:
            continue
        low = normalise_id(value)
        run.subject[ctx.entity_type(str(etype))] = (eid, low)
        _learn_id(ctx, run, low)
        run.basis = True


def learn_input(ctx: Context, run: RunState, entities: Iterable[Entity] | None, raw: Any = None) -> None:
    """Ids a run was given as input (its own input, or what an LLM call read)."""
    if entities is not None:
        run.basis = True
        for entity in entities:
            _learn_id(ctx, run, normalise_id(entity[1]))
    if raw is not None:
        run.basis = True
        _learn_raw(ctx, run, raw, entities is None)


def _learn_id(ctx: Context, run: RunState, low: str) -> None:
    known = run.known
    if low not in known:
        if len(known) < ctx.max_entities:
            known[low] = None
        else:
            ctx.stats.entities_evicted += bounded_put(known, low, None, ctx.max_entities)


def _learn_raw(ctx: Context, run: RunState, raw: Any, strict: bool) -> None:
    """Hold ``raw`` for lazy learning; ``strict``: its extractor ids are not known yet either.

    Values are read only when an id is missing, so a run whose ids are all
    known never pays for the liberal scan. When too many wait, the values whose
    extractor ids are unknown are read now and the oldest of the others are
    forgotten (their shaped ids were learnt already; bounded memory per run).
    """
    pending = run.pending
    pending.append((raw, strict))
    if len(pending) > MAX_PENDING:
        extract = ctx.extractor.extract
        kept: list[tuple[Any, bool]] = []
        for value, needs_extraction in pending:
            if needs_extraction:
                for entity in extract(value, limit=LEARN_LIMIT):
                    _learn_id(ctx, run, normalise_id(entity[1]))
            kept.append((value, False))
        dropped = len(kept) - MAX_PENDING // 2
        ctx.stats.entities_evicted += dropped
        run.pending = kept[dropped:]


def _flush(ctx: Context, run: RunState) -> None:
    pending, run.pending = run.pending, []
    extract = ctx.extractor.extract
    for raw, strict in pending:
        if strict:
            for entity in extract(raw, limit=LEARN_LIMIT):
                _learn_id(ctx, run, normalise_id(entity[1]))
        for norm in learnable_ids(raw, LEARN_LIMIT):
            _learn_id(ctx, run, norm)


def _unknown(ctx: Context, run: RunState, entities: Iterable[Entity]) -> list[Entity]:
    known = run.known
    missing = [e for e in entities if e[0] not in WEAK_TYPES and normalise_id(e[1]) not in known]
    if missing and run.pending:
        _flush(ctx, run)
        missing = [e for e in missing if normalise_id(e[1]) not in known]
    return missing


def _describe(missing: list[Entity]) -> str:
    etype, raw = missing[0]
    norm = f"(normalised: {normalise_id(raw)})"
    if len(missing) == 1:
        return f"{etype} {raw} {norm}, which appears"
    return f"{etype} {raw} (and {len(missing) - 1} more) {norm}, which appear"


def check_llm(ctx: Context, run: RunState, rec: SpanRecord, out: list[Finding]) -> None:
    """Learn what the LLM read; flag ids in the calls it requested that it could not have read anywhere."""
    if rec.input_entities is not None or rec.input_raw is not None:
        learn_input(ctx, run, rec.input_entities, rec.input_raw)
    requested = rec.requested_entities
    if requested and run.basis:
        missing = _unknown(ctx, run, requested)
        if missing:
            tools = ", ".join(sorted({c[0] for c in rec.requested_calls})) or "a tool"
            finding = ctx.flagger.make(
                Flag.ENTITY_HALLUCINATION,
                f"the model requested {tools} with {_describe(missing)} nowhere earlier in the run "
                f"(not declared, not in any input or earlier tool result)",
                rec.span_id,
            )
            if finding is not None:
                out.append(finding)
    requested_by = run.requested
    for call in rec.requested_calls:
        key = call if call.__class__ is tuple else (call[0], call[1])
        if len(requested_by) < ctx.max_calls or key in requested_by:
            requested_by[key] = rec.span_id
        else:
            bounded_put(requested_by, key, rec.span_id, ctx.max_calls)


def check_tool_args(
    ctx: Context,
    run: RunState,
    rec: SpanRecord,
    tool: str,
    key: CallKey | None,
    cs: CallState | None,
    out: list[Finding],
) -> None:
    """Flag a tool call whose arguments reference an id unknown to the run (related: the requesting LLM)."""
    entities = rec.arg_entities
    if entities is None:
        if rec.arguments is None:
            return
        if cs is not None and cs.arg_ids is not None:
            entities = cs.arg_ids
        else:
            entities = ctx.extractor.extract(rec.arguments)
            if cs is not None:
                cs.arg_ids = entities
    if not entities:
        return
    missing = _unknown(ctx, run, entities)
    if not missing:
        return
    related = run.requested.get(key) if key is not None else None
    finding = ctx.flagger.make(
        Flag.ENTITY_HALLUCINATION,
        f"{tool or 'tool'} arguments reference {_describe(missing)} nowhere earlier in the run "
        f"(not declared, not in any input or earlier tool result)",
        rec.span_id,
        related,
    )
    if finding is not None:
        out.append(finding)


def observe_result(ctx: Context, run: RunState, rec: SpanRecord, tool: str, out: list[Finding]) -> None:
    """Learn the ids of a successful result; flag it when it belongs to another entity than the subject."""
    entities = rec.result_entities
    raw = rec.result
    if run.subject:
        if entities is None:
            entities = ctx.extractor.extract(raw, limit=LEARN_LIMIT)
        _check_mismatch(ctx, run, rec, tool, entities, out)
    if entities is not None:
        for entity in entities:
            _learn_id(ctx, run, normalise_id(entity[1]))
    if raw is not None:  # every value in it, under any key (learnt lazily, when an id is missing)
        _learn_raw(ctx, run, raw, entities is None)


def _check_mismatch(
    ctx: Context, run: RunState, rec: SpanRecord, tool: str, entities: tuple[Entity, ...], out: list[Finding]
) -> None:
    if not entities:
        return
    ids = {normalise_id(e[1]) for e in entities}
    for stype, (sid, slow) in run.subject.items():
        if slow in ids:
            continue
        for etype, eid in entities:
            if ctx.entity_type(str(etype)) == stype or _prefix_type(ctx, str(eid)) == stype:
                finding = ctx.flagger.make(
                    Flag.ENTITY_MISMATCH,
                    f"{tool or 'tool'} returned data of {stype} {eid} in a run about {stype} {sid}",
                    rec.span_id,
                )
                if finding is not None:
                    out.append(finding)
                return


def _prefix_type(ctx: Context, eid: str) -> str | None:
    ptype = ctx.extractor.prefix_type(eid)
    return ctx.entity_type(ptype) if ptype is not None else None
