"""The timetable transfer's resources as records (hosting guide fiche 5): pure rules, no input/output.

A transfer carries the resources of a base and its timetable's courses, by kind; they refer to each
other by client-side refs (a student's ``class_ref``) or by the ids of records of the same transfer.
:func:`transfer_records` checks every record (:func:`campus.rules.records.validate_fields`), gives it a
new id and resolves the refs, reporting every problem. The use case, which creates the base, is
:meth:`campus.services.exchange.Exchange.transfer_base`.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from campus.errors import Invalid
from campus.rules.records import KINDS, validate_fields

# What a timetable transfer may carry: the resources, and the timetable's courses.
TRANSFER_KINDS = tuple(k.name for k in KINDS.values() if k.section == "resources") + ("courses",)
MAX_TRANSFER_ERRORS = 50  # problems listed in one refusal (of a transfer, or of a users file)


def transfer_records(resources: Any, errors: list[dict]) -> tuple[list[tuple[str, UUID, dict]],
                                                                   dict[str, dict[str, str]]]:
    """Validated records with new ids, refs resolved, in an order where targets come first."""
    if not isinstance(resources, dict):
        errors.append({"field": "resources", "message": "must be an object of lists by kind"})
        return [], {}
    for key in resources:
        if key not in TRANSFER_KINDS:
            errors.append({"field": f"resources.{key}",
                           "message": f"a transfer carries {', '.join(TRANSFER_KINDS)}, not {key!r}"})
    ids: dict[str, dict[str, UUID]] = {}  # kind -> ref -> id
    new_ids: dict[str, set[UUID]] = {kind: set() for kind in KINDS}
    rows: list[tuple[str, UUID, dict]] = []
    for kind_name in TRANSFER_KINDS:  # KINDS order: what is referred to comes first
        items = resources.get(kind_name, [])
        kind = KINDS[kind_name]
        ids[kind_name] = {}
        if not isinstance(items, list):
            errors.append({"field": f"resources.{kind_name}", "message": "must be a list"})
            continue
        for index, item in enumerate(items):
            where = f"resources.{kind_name}[{index}]"
            if not isinstance(item, dict):
                errors.append({"field": where, "message": "must be an object"})
                continue
            data = dict(item)
            ref = data.pop("ref", None)
            if ref is not None:
                if isinstance(ref, bool) or not isinstance(ref, (str, int)) or not str(ref).strip() \
                        or len(str(ref)) > 100:
                    errors.append({"field": f"{where}.ref", "message": "must be a text or a number (1 to 100 "
                                   "characters)"})
                    ref = None
                elif str(ref) in ids[kind_name]:
                    errors.append({"field": f"{where}.ref", "message": f"another {kind.singular} has the ref "
                                   f"{ref!r}"})
                    ref = None
            renamed: dict[str, str] = {}
            for field_name, target in kind.references.items():
                ref_field = field_name.removesuffix("_id") + "_ref"
                if ref_field not in data:
                    continue
                if field_name in data:
                    errors.append({"field": f"{where}.{ref_field}",
                                   "message": f"give {field_name} or {ref_field}, not both"})
                target_ref = data.pop(ref_field)
                renamed[field_name] = ref_field
                if target_ref is None:
                    continue
                target_id = ids.get(target, {}).get(str(target_ref))
                if target_id is None:
                    errors.append({"field": f"{where}.{ref_field}",
                                   "message": f"no {KINDS[target].singular} with the ref {target_ref!r} in the "
                                   "transfer"})
                    data[field_name] = uuid4()  # keeps the other checks going; the transfer is refused anyway
                else:
                    data[field_name] = target_id
            record_id = uuid4()
            new_ids[kind_name].add(record_id)
            if ref is not None:  # even if the record is refused below: no cascade of errors on its referrers
                ids[kind_name][str(ref)] = record_id
            try:
                fields = validate_fields(kind, data)
            except Invalid as exc:
                for e in exc.errors:
                    errors.append({"field": f"{where}.{renamed.get(e['field'], e['field'])}",
                                   "message": e["message"]})
                continue
            for field_name, target in kind.references.items():
                value = fields.get(field_name)
                if value is not None and field_name not in renamed and value not in new_ids[target]:
                    errors.append({"field": f"{where}.{field_name}",
                                   "message": f"no {KINDS[target].singular} with id {value} in the transfer "
                                   f"(refer to it with {field_name.removesuffix('_id')}_ref)"})
            rows.append((kind_name, record_id, fields))
    refs = {kind: {ref: str(record_id) for ref, record_id in by_ref.items()} for kind, by_ref in ids.items() if by_ref}
    return rows, refs
