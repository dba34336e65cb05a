"""Code verifier: run the response's function against hidden tests inside the sandbox.

The expected outputs never enter the sandbox: the harness only prints what the function returned
for each hidden input (behind a per-run random marker), and the parent compares. So code that reads
its own files, prints fake results or exits early cannot pass tests it does not solve. The program
text (candidate + harness + test inputs) is the only file copied into the sandbox; nothing else of
the project (reference solutions, other tests) is on its filesystem (docs/security.md).
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from synth.verifiers.math_answer import strip_thinking
from synth.verifiers.sandbox import SandboxLimits, run_python

_FENCE = re.compile(r"```(?:python|py|Python)?[ \t]*\n(.*?)```", re.S)

_HARNESS = '''

def __q3_run():
    import json as _json
    _fn = globals().get({entry!r})
    _out = []
    for _args in _json.loads({inputs!r}):
        if _fn is None:
            _out.append(["missing", None])
            continue
        try:
            _out.append(["ok", _json.loads(_json.dumps(_fn(*_args), default=repr))])
        except BaseException as _e:  # noqa: B036 - any failure of the candidate is a failed test
            _out.append(["exc", type(_e).__name__])
    print("\\n" + {marker!r} + _json.dumps(_out))

__q3_run()
'''


def extract_code(response: str) -> str | None:
    """The last fenced code block of the answer part, or the whole answer if it is bare code."""
    text = strip_thinking(response)
    blocks = _FENCE.findall(text)
    if blocks:
        return blocks[-1]
    if re.search(r"^\s*def \w+\(", text, re.M):
        return text
    return None


def _canon(v: Any) -> Any:
    return json.loads(json.dumps(v, default=repr))


def run_tests(code: str, entry_point: str, tests: list[dict], limits: SandboxLimits | None = None
              ) -> tuple[int, int, str, str]:
    """(passed, total, reason, detail). tests: [{"input": [args...], "output": expected}]."""
    marker = "@@Q3RESULT-" + secrets.token_hex(8) + "@@"
    inputs = json.dumps([t["input"] for t in tests])
    program = code + _HARNESS.format(entry=entry_point, inputs=inputs, marker=marker)
    res = run_python(program, limits)
    line = next((ln for ln in reversed(res.stdout.splitlines()) if ln.startswith(marker)), None)
    if line is None:
        last = (res.stderr.strip().splitlines() or [""])[-1][:300]
        return 0, len(tests), res.reason if res.reason != "ok" else "no_result", last
    got = json.loads(line[len(marker):])
    passed = 0
    first_fail = ""
    for t, (status, value) in zip(tests, got, strict=False):
        if status == "ok" and value == _canon(t["output"]):
            passed += 1
        elif not first_fail:
            first_fail = f"input={t['input']!r}: {status} {value!r}"[:300]
    if got and all(s == "missing" for s, _ in got):
        return 0, len(tests), "missing_function", f"no function named {entry_point!r}"
    return passed, len(tests), "ok" if passed == len(tests) else "tests_failed", first_fail
