"""coditect: the host capabilities a sandboxed Python agent may call.

Imported by the agents (`import coditect`) that run under CPython 3.12 for
WASI in the Coditect sandbox; standard library only, and it works under any
CPython >= 3.9 on a host (tests point CHANNEL_DIR, _stdin and OUTPUT_DIR
elsewhere).

The channel. A task granted host capabilities sees the read-write folder
CHANNEL_DIR (`/coditect`), and its stdin is the answer stream. To call
capability NAME (`[a-z][a-z0-9_.-]{0,63}`) with request bytes R:

  1. write R to `CHANNEL_DIR/NAME.request` (opened "wb", written, closed);
  2. read one frame from stdin: the ASCII line `ok LEN\\n` or `error LEN\\n`,
     then exactly LEN bytes of body.

`ok` gives the body; `error` raises CapabilityError with the body as its
message (UTF-8). Without CHANNEL_DIR, or when stdin ends before a whole
frame (the host answers nothing when no request is waiting), the
capability is not granted: CapabilityError("capability NAME is not granted
to this task"). Requests over 8 MiB are refused here (the host would refuse
them too); answers over 64 MiB, and a header that is not `ok|error LEN`,
raise CapabilityError naming the problem. One call at a time: the agents
are single-threaded.

    call(name, request: bytes) -> bytes

The language model (capability `llm`):

    llm(messages, *, max_tokens=None, temperature=None, purpose=None) -> Answer

messages: [{"role": "system"|"user"|"assistant", "content": str}, ...].
Request JSON: {"messages": [...], "max_tokens": int, "temperature": float,
"purpose": str}, absent keys omitted. The ok body is JSON {"content",
"model", "tokens_in", "tokens_out", "finish_reason"}, returned as
Answer(content, model, tokens_in, tokens_out, finish_reason). Failures raise
LlmError(kind, message), a CapabilityError, with kind one of

    limit        the task's max_llm_calls or max_tokens is spent
    unavailable  the provider is down, its circuit is open, or it timed out
    provider     the provider (or the host) answered something unusable
    bad_request  the request was refused as malformed or too large
    not_granted  the task has no llm capability

taken from the error body {"kind", "message"}; an error body that is not
that JSON is kind "provider" with the body as the message (so is one
naming another kind, the message then starting with that kind) (the host's own
"capability llm is not granted to this task" is kind "not_granted" and
"the request is larger than ..." is "bad_request").

Violations the agent itself reports (the node reads the file after the
agent exits 0):

    report_violation(kind, message, output_dir=None)

writes `OUTPUT_DIR/violation.json` as {"kind": kind, "message": message}
(message cut to 4000 characters).

Helpers for agents (the last section; not capabilities): what the built-in
LLM agents (coder.py, planner.py) share. Output lines (out, err), text
(one_line, cut), capped reads (read_capped, read_text, read_json,
read_input_text), the task's inputs (find_report: the first
INPUT/deps/*/report.json; read_retry: INPUT/.coditect/retry.json;
retry_section), the workspace walk (walk_workspace), fenced blocks in an
answer (open_fence, closes_fence), and the model's failures (ask_llm,
report_bad_output, write_answer). Messages that name the agent take it as
a `prefix` argument.
"""

import collections
import json
import os
import re
import sys

CHANNEL_DIR = "/coditect"
OUTPUT_DIR = "/output"

NAME_RE = re.compile(r"[a-z][a-z0-9_.-]{0,63}\Z")
MAX_REQUEST_BYTES = 8 << 20
MAX_RESPONSE_BYTES = 64 << 20
MAX_HEADER_BYTES = 64
MAX_VIOLATION_CHARS = 4000
LLM_ERROR_KINDS = frozenset({"limit", "unavailable", "provider", "bad_request", "not_granted"})
ROLES = frozenset({"system", "user", "assistant"})
HEADER_RE = re.compile(rb"(ok|error) (0|[1-9][0-9]{0,18})\Z")


class CapabilityError(Exception):
    """A capability call failed; str(error) says why, in one line."""


class LlmError(CapabilityError):
    """The llm capability failed: kind (see the module docstring) and message."""

    def __init__(self, kind, message):
        super().__init__("%s: %s" % (kind, message))
        self.kind = kind
        self.message = message


Answer = collections.namedtuple("Answer", "content model tokens_in tokens_out finish_reason")


def _stdin():
    """The binary stream answers arrive on (None when there is no stdin)."""
    stream = sys.stdin
    if stream is None:
        return None
    return getattr(stream, "buffer", stream)


class _NotGranted(CapabilityError):
    """No channel, or stdin ended before a whole frame."""

    def __init__(self, name):
        super().__init__("capability %s is not granted to this task" % name)


class _TooLarge(CapabilityError):
    """A request over MAX_REQUEST_BYTES."""


class _WriteFailed(CapabilityError):
    """The request file could not be written."""


def _read_exactly(stream, count):
    """count bytes from stream, or fewer if it ends first."""
    chunks = []
    left = count
    while left > 0:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_header(stream, name):
    """The header line without its newline, or None at the end of stdin."""
    line = bytearray()
    while True:
        byte = stream.read(1)
        if not byte:
            return None
        if byte == b"\n":
            return bytes(line)
        line += byte
        if len(line) > MAX_HEADER_BYTES:
            raise CapabilityError("capability %s answered a frame header longer than %d bytes"
                                  % (name, MAX_HEADER_BYTES))


def _read_frame(name):
    """(ok, body) of the next answer frame on stdin."""
    stream = _stdin()
    if stream is None:
        raise _NotGranted(name)
    header = _read_header(stream, name)
    if header is None:
        raise _NotGranted(name)
    match = HEADER_RE.match(header)
    if not match:
        raise CapabilityError("capability %s answered a malformed frame header %r" % (name, header[:40]))
    length = int(match.group(2))
    if length > MAX_RESPONSE_BYTES:
        raise CapabilityError("capability %s answered %d bytes, over the %d MiB limit"
                              % (name, length, MAX_RESPONSE_BYTES >> 20))
    body = _read_exactly(stream, length)
    if len(body) < length:
        raise _NotGranted(name)
    return match.group(1) == b"ok", body


def _exchange(name, request):
    """(ok, body): writes the request, reads the answer frame."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError("%r is not a capability name ([a-z][a-z0-9_.-]{0,63})" % (name,))
    if isinstance(request, str):
        request = request.encode("utf-8")
    request = bytes(request)
    if len(request) > MAX_REQUEST_BYTES:
        raise _TooLarge("the request to capability %s is %d bytes, over the %d MiB limit"
                        % (name, len(request), MAX_REQUEST_BYTES >> 20))
    if not os.path.isdir(CHANNEL_DIR):
        raise _NotGranted(name)
    path = os.path.join(CHANNEL_DIR, name + ".request")
    try:
        with open(path, "wb") as f:
            f.write(request)
    except OSError as exc:
        raise _WriteFailed("cannot write the request for capability %s: %s"
                           % (name, exc.strerror or exc)) from None
    return _read_frame(name)


def call(name, request):
    """The body of capability name's answer to request (bytes, or str as
    UTF-8); raises CapabilityError when the capability fails or is not
    granted, ValueError for a name that cannot be a capability's."""
    ok, body = _exchange(name, request)
    if ok:
        return body
    raise CapabilityError(body.decode("utf-8", "replace"))


# ---------------------------------------------------------------- llm

def _llm_request(messages, max_tokens, temperature, purpose):
    checked = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError("message %d is not a dict with role and content" % index)
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ValueError("message %d has role %r, not system, user or assistant" % (index, role))
        if not isinstance(content, str):
            raise ValueError("message %d has no string content" % index)
        checked.append({"role": role, "content": content})
    if not checked:
        raise ValueError("llm needs at least one message")
    request = {"messages": checked}
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError("max_tokens must be a positive int, not %r" % (max_tokens,))
        request["max_tokens"] = max_tokens
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise ValueError("temperature must be a number, not %r" % (temperature,))
        request["temperature"] = float(temperature)
    if purpose is not None:
        request["purpose"] = str(purpose)
    return json.dumps(request, ensure_ascii=False).encode("utf-8")


def _llm_error(body):
    """The LlmError an error body of the llm capability stands for."""
    text = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("kind"), str):
        message = parsed.get("message")
        message = message if isinstance(message, str) else text
        if parsed["kind"] in LLM_ERROR_KINDS:
            return LlmError(parsed["kind"], message)
        return LlmError("provider", "%s: %s" % (parsed["kind"], message))
    if text == "capability llm is not granted to this task":
        return LlmError("not_granted", text)
    if text.startswith("the request is larger than"):
        return LlmError("bad_request", text)
    return LlmError("provider", text)


def _answer(body):
    try:
        parsed = json.loads(body.decode("utf-8"))
    except ValueError as exc:
        raise LlmError("provider", "the llm answer is not JSON: %s" % exc) from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("content"), str):
        raise LlmError("provider", "the llm answer has no string content")

    def count(key):
        value = parsed.get(key, 0)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    model = parsed.get("model")
    finish = parsed.get("finish_reason")
    return Answer(parsed["content"], model if isinstance(model, str) else "", count("tokens_in"),
                  count("tokens_out"), finish if isinstance(finish, str) else None)


def llm(messages, *, max_tokens=None, temperature=None, purpose=None):
    """One chat completion through the node's llm capability: an Answer,
    or LlmError(kind, message); ValueError for malformed messages."""
    request = _llm_request(list(messages), max_tokens, temperature, purpose)
    try:
        ok, body = _exchange("llm", request)
    except _NotGranted as exc:
        raise LlmError("not_granted", str(exc)) from None
    except _TooLarge as exc:
        raise LlmError("bad_request", str(exc)) from None
    except _WriteFailed as exc:
        raise LlmError("unavailable", str(exc)) from None
    except CapabilityError as exc:
        raise LlmError("provider", str(exc)) from None
    if not ok:
        raise _llm_error(body)
    return _answer(body)


# ---------------------------------------------------------------- violations

def ensure_dir(path):
    """os.makedirs without touching "/": under WASI stat("/") fails, and
    os.makedirs checks every ancestor."""
    path = os.path.abspath(path)
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder)
        except FileExistsError:
            pass


def report_violation(kind, message, output_dir=None):
    """Writes OUTPUT_DIR/violation.json ({"kind", "message"}); the agent
    should then exit 0. Returns the file's path."""
    folder = OUTPUT_DIR if output_dir is None else output_dir
    ensure_dir(folder)
    text = str(message)
    if len(text) > MAX_VIOLATION_CHARS:
        text = text[:MAX_VIOLATION_CHARS - 1] + "…"
    path = os.path.join(folder, "violation.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"kind": str(kind), "message": text}, f, ensure_ascii=False)
        f.write("\n")
    return path


# ---------------------------------------------------------------- helpers for agents
#
# Shared by the built-in LLM agents (coder.py, planner.py); not capabilities.
# Each keeps that agent's exact messages: where a message names the agent,
# the caller passes the name as `prefix` ("coder", "planner", ...).

MAX_WALK_FILES = 20000
SKIP_DIRS = frozenset({".git", "__pycache__", "node_modules", ".venv", "venv"})
MAX_REPORT_BYTES = 32 << 20
MAX_SMALL_JSON_BYTES = 64 << 10
MAX_RETRY_DETAIL_CHARS = 4096
MAX_ANSWER_FILE_BYTES = 1 << 20
EXIT_TASK = 3
FENCE_RE = re.compile(r"( {0,3})(`{3,}|~{3,})(.*)\Z")


def out(text):
    """text and a newline on stdout, flushed; a closed stdout is ignored."""
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):
        pass


def err(text):
    """text and a newline on stderr, flushed; a closed stderr is ignored."""
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def one_line(text):
    """str(text) with every run of whitespace made one space."""
    return " ".join(str(text).split())


def cut(text, limit):
    """text, or its first limit - 1 characters and "…" when it is longer."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def read_capped(path, limit):
    """(bytes, complete): at most limit bytes of the file; None when it is
    missing or unreadable."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError:
        return None
    return data[:limit], len(data) <= limit


def read_text(path, limit):
    """The file as text (cut to limit bytes, undecodable bytes replaced), or
    None when it is missing."""
    got = read_capped(path, limit)
    if got is None:
        return None
    return got[0].decode("utf-8", "replace")


def read_json(path, limit, prefix):
    """The file's JSON, or None when it is missing, too large or not JSON
    (the last two said on stderr as "PREFIX: PATH ..., ignored")."""
    got = read_capped(path, limit)
    if got is None:
        return None
    data, complete = got
    if not complete:
        err("%s: %s is larger than %d bytes, ignored" % (prefix, path, limit))
        return None
    try:
        return json.loads(data.decode("utf-8", "replace"))
    except ValueError as exc:
        err("%s: %s is not JSON (%s), ignored" % (prefix, path, exc))
        return None


def read_input_text(path, limit, what):
    """The file as text (undecodable bytes replaced), "" when it is missing;
    over limit bytes it is cut there and "(WHAT was cut at N KiB)" added."""
    got = read_capped(path, limit)
    if got is None:
        return ""
    text = got[0].decode("utf-8", "replace")
    if not got[1]:
        text += "\n(%s was cut at %d KiB)" % (what, limit >> 10)
    return text


def find_report(input_dir, prefix):
    """The first INPUT/deps/*/report.json (by dependency name), parsed, or None."""
    deps = os.path.join(input_dir, "deps")
    try:
        names = sorted(os.listdir(deps))
    except OSError:
        return None
    for name in names:
        path = os.path.join(deps, name, "report.json")
        if os.path.isfile(path):
            report = read_json(path, MAX_REPORT_BYTES, prefix)
            if isinstance(report, dict):
                return report
    return None


def read_retry(input_dir, prefix):
    """{"attempt", "kind", "detail"} of INPUT/.coditect/retry.json, or None."""
    data = read_json(os.path.join(input_dir, ".coditect", "retry.json"), MAX_SMALL_JSON_BYTES, prefix)
    if not isinstance(data, dict):
        return None
    attempt = data.get("attempt")
    return {"attempt": attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None,
            "kind": str(data.get("kind") or "unknown"),
            "detail": cut(str(data.get("detail") or ""), MAX_RETRY_DETAIL_CHARS)}


def retry_section(retry, how):
    """The prompt's section about a failed earlier attempt; for a rejected
    answer it ends "Answer again and fix that: HOW"."""
    attempt = " (attempt %d)" % retry["attempt"] if retry["attempt"] else ""
    if retry["kind"] == "bad_model_output":
        return ("# Your previous answer was rejected%s\n\n"
                "What was wrong with it: %s\n\n"
                "Answer again and fix that: %s" % (attempt, retry["detail"] or "(no detail)", how))
    return ("# The previous attempt failed%s\n\n"
            "It failed with %s: %s\n\n"
            "Take that into account in this answer." % (attempt, retry["kind"], retry["detail"] or "(no detail)"))


def walk_workspace(root, with_sizes=False):
    """(files, truncated): the files under root in sorted '/'-separated
    paths, skipping hidden names and SKIP_DIRS, following no links, at most
    MAX_WALK_FILES (truncated when there are more). with_sizes, each file is
    (path, size), and one whose size cannot be read is left out."""
    files, truncated = [], False
    if not os.path.isdir(root):
        return files, truncated
    stack = [""]
    while stack and not truncated:
        rel_dir = stack.pop()
        full_dir = os.path.join(root, rel_dir) if rel_dir else root
        try:
            entries = sorted(os.scandir(full_dir), key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            rel = rel_dir + "/" + name if rel_dir else name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if name not in SKIP_DIRS:
                        subdirs.append(rel)
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue
                size = entry.stat(follow_symlinks=False).st_size if with_sizes else None
            except OSError:
                continue
            if len(files) >= MAX_WALK_FILES:
                truncated = True
                break
            files.append((rel, size) if with_sizes else rel)
        stack.extend(reversed(subdirs))
    files.sort()
    return files, truncated


def open_fence(line):
    """(indent, fence, info) when line opens a fenced block: >= 3 backticks
    or tildes indented by at most 3 spaces, then an info string (with
    backticks, no backtick in it); else None."""
    match = FENCE_RE.match(line)
    if not match or (match.group(2)[0] == "`" and "`" in match.group(3)):
        return None
    return len(match.group(1)), match.group(2), match.group(3)


def closes_fence(line, fence):
    """Whether line closes a block opened by fence: the same character, at
    least as many, indented by at most 3 spaces, then only spaces and tabs."""
    match = FENCE_RE.match(line)
    return (match is not None and match.group(2)[0] == fence[0] and len(match.group(2)) >= len(fence)
            and not match.group(3).strip(" \t"))


def ask_llm(messages, output_dir, prefix, **options):
    """(answer, None) from llm(messages, **options), or (None, exit code)
    when it fails: kind unavailable or provider is violation llm_unavailable
    ("KIND: MESSAGE") in output_dir and exit 0; any other kind is the task's
    own error, exit EXIT_TASK. Either way a "PREFIX: the model ..." line on
    stderr."""
    try:
        return llm(messages, **options), None
    except LlmError as exc:
        if exc.kind in ("unavailable", "provider"):
            report_violation("llm_unavailable", one_line("%s: %s" % (exc.kind, exc.message)),
                             output_dir=output_dir)
            err("%s: the model is unavailable: %s: %s" % (prefix, exc.kind, exc.message))
            return None, 0
        err("%s: the model cannot be used: %s: %s" % (prefix, exc.kind, exc.message))
        return None, EXIT_TASK


def report_bad_output(reason, answer, output_dir, prefix):
    """Reports violation bad_model_output (reason, plus a note when the
    answer was cut off at the token limit) and says so on stderr; returns
    the exit code, 0."""
    if answer.finish_reason == "length":
        reason += " (the answer was cut off at the token limit)"
    report_violation("bad_model_output", one_line(reason), output_dir=output_dir)
    err("%s: bad model output: %s" % (prefix, reason))
    return 0


def write_answer(output_dir, content):
    """output_dir/answer.md: the model's answer, its first MAX_ANSWER_FILE_BYTES bytes."""
    data = content.encode("utf-8", "replace")[:MAX_ANSWER_FILE_BYTES]
    with open(os.path.join(output_dir, "answer.md"), "wb") as f:
        f.write(data)
