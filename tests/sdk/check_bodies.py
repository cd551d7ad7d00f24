"""Parses every request body clockbridge sent into the official lark-oapi SDK's request-body model.

Usage: check_bodies.py DIR. DIR holds files named <api>-<n>.json (api: user_flows, user_approvals,
upload_report, leave_accrual), one raw request body each. The SDK's models accept any dict, so this
script walks each body against the model's declared `_types`, recursively: an unknown field, or a
value of the wrong JSON type (a string where the model has int, an object where it has a list...),
fails. Each body must also survive the SDK's own parse and serialisation unchanged. Every api must
have at least one body. Exit 0 when all pass; otherwise each problem is printed and the exit code is 1.
"""

import json
import os
import sys
import typing

import lark_oapi
from lark_oapi.api.attendance.v1 import (
    BatchCreateUserFlowRequestBody,
    CreateUserApprovalRequestBody,
    PatchLeaveAccrualRecordRequestBody,
    UploadReportArchiveRuleRequestBody,
)

MODELS = {
    "user_flows": BatchCreateUserFlowRequestBody,
    "user_approvals": CreateUserApprovalRequestBody,
    "upload_report": UploadReportArchiveRuleRequestBody,
    "leave_accrual": PatchLeaveAccrualRecordRequestBody,
}


def check(value, t, path, errors):
    origin = typing.get_origin(t)
    if origin is list:
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__} {value!r}")
            return
        (item,) = typing.get_args(t)
        for i, v in enumerate(value):
            check(v, item, f"{path}[{i}]", errors)
        return
    if isinstance(t, type) and hasattr(t, "_types"):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected an object ({t.__name__}), got {value!r}")
            return
        for k, v in value.items():
            if k not in t._types:
                errors.append(f"{path}.{k}: unknown field: {t.__name__} has {sorted(t._types)}")
                continue
            check(v, t._types[k], f"{path}.{k}", errors)
        return
    if t is bool:
        ok = isinstance(value, bool)
    elif t is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif t is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif t is str:
        ok = isinstance(value, str)
    else:
        errors.append(f"{path}: the model declares {t!r}, which this check does not know")
        return
    if not ok:
        errors.append(f"{path}: {value!r} is not {t.__name__}")


def main():
    directory = sys.argv[1]
    errors = []
    seen = {api: 0 for api in MODELS}
    for name in sorted(os.listdir(directory)):
        api = name.rsplit("-", 1)[0]
        model = MODELS.get(api)
        if model is None:
            errors.append(f"{name}: unknown api {api!r}")
            continue
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            body = json.load(f)
        seen[api] += 1
        check(body, model, f"{name}: {model.__name__}", errors)
        parsed = lark_oapi.JSON.unmarshal(json.dumps(body), model)
        again = json.loads(lark_oapi.JSON.marshal(parsed))
        if again != body:
            errors.append(f"{name}: changed by the SDK's parse and serialisation: {again!r} != {body!r}")
    for api, n in seen.items():
        if n == 0:
            errors.append(f"no body was sent to {api}")
    for e in errors:
        print(e)
    print(f"checked {sum(seen.values())} bodies: {seen}")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
