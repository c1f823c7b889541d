#!/usr/bin/env python3
"""OCPP Mock Server: a one-file OCPP 1.6 and 2.0.1 central system for testing chargers.

Start it, point a charger at the URL it prints, and drive the charger by typing
commands (``help`` lists them)::

    pip install websockets
    python ocpp_mock_server.py            # ws://127.0.0.1:60003
    python ocpp_mock_server.py --help

It answers every charger-initiated OCPP 1.6 action with a schema-valid reply,
sends every central-system-initiated action on command, and speaks both
standard OCPP 1.6-J and the dialect of the FlexiCharge charger.  Off-spec
payloads are answered and reported once as spec warnings (``--strict`` turns
them into CALLERRORs).

Runtime dependencies: the Python standard library (3.9+) and ``websockets``
(10.3 or newer; the ``websockets.asyncio`` API is used where it exists).

For a charger's CI, ``--script FILE`` runs a scenario and exits 0 (passed),
1 (failed) or 2 (invalid script); see docs/ci.md.  A second port (the
websocket port + 1) serves a live web page, a JSON control API, an event
stream and a file server; see docs/api.md.

The module reads top to bottom, leaves first, one banner comment per
section: protocol (framing, error codes, text helpers), spec lint (the 1.6
schemas' field rules), output and transcript (bus subscribers), events (the
EventBus and its event types), charger state (per charge point, across
reconnects), protocol engine (ChargerSession, CallQueue, ChargingFlow),
behaviour checks, charger-initiated actions (the handler dictionary,
authorization rules), server-initiated actions (command defaults,
FlexiCharge spellings), certificate signing, fault injection, command
language (parse_command, build_payload), console, scenario scripts, HTTP
API (routes, event stream, file server), the web page, websockets
compatibility, server (access control, listening), settings and CLI.  docs/guide.md, "How it is
built", lists the events and follows a command from a typed line to the wire.
"""

import argparse
import ast
import asyncio
import base64
import binascii
import collections
import contextlib
import dataclasses
import datetime
import difflib
import errno
import functools
import gc
import hashlib
import hmac
import http
import ipaddress
import itertools
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from typing import Any, Callable, Optional, Union

try:
    import resource
except ImportError:  # Windows: no open-files limit to read or raise
    resource = None  # type: ignore[assignment]

try:
    import websockets
except ImportError:  # pragma: no cover - exercised by hand on a bare machine
    sys.stderr.write("ocpp_mock_server needs the websockets package: pip install websockets\n")
    raise SystemExit(2) from None

__version__ = "0.1.0"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 60003
MAX_MESSAGE_ID_LENGTH = 36  # OCPP-J 1.6 section 4.1.4
MAX_ERROR_DESCRIPTION = 255  # characters of a CALLERROR's errorDescription (OCPP-J 2.0.1's limit)
# No answer to a charger's frame is larger than this many bytes or the frame
# itself, whichever is more: what a charger sends is never amplified.
MIN_REPLY_LIMIT = 1024
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024
FLEXICHARGE_VENDOR_ID = "com.flexicharge"
# One charger may keep the event loop this long (seconds) before the other
# chargers, the console and signals get a turn: fair by time, not by frames.
TURN_SECONDS = 0.005
# Characters of frame text gathered for the terminal and the history before they are handed over
# mid-turn: a flood of large frames keeps no more than this (and their parsed payloads) waiting.
MAX_GATHERED_FRAMES = 64 * 1024
RECENT_CALL_IDS = 1000  # ids of a charger's CALLs remembered to spot a reused one
# spec problems worked out per frame; the rest of the frame is not examined
MAX_PROBLEMS_PER_FRAME = 10
# distinct warn-once keys kept per connection; later ones are only counted
MAX_WARNINGS_PER_CHARGER = 200
MAX_CONNECTORS = 64  # connector statuses kept per charge point
MAX_OPEN_TRANSACTIONS = 64  # open transactions kept per charge point; the oldest is forgotten first
# charge points that have disconnected, kept for when they come back
REMEMBERED_CHARGE_POINTS = 1000
REPLACE_TIMEOUT = 1.0  # seconds a replaced connection gets to close before it is cut
MAX_FILE_VALUE = 1 << 20  # characters of a key=@path value (a certificate chain is far smaller)
# Seconds to wait for a charger to finish a closing handshake.  After a frame
# over --max-message-size the rest of it is still in flight, and websockets
# 10.3 waits this long before it reports the close.
CLOSE_TIMEOUT = 2.0
# seconds for quit, SIGINT or SIGTERM; what is left then is dropped
SHUTDOWN_GRACE = CLOSE_TIMEOUT + 1.0

# ---------------------------------------------------------------- Protocol

CALL, CALLRESULT, CALLERROR = 2, 3, 4

DIALECT_OCPP16 = "ocpp1.6"
DIALECT_FLEXICHARGE = "flexicharge"
DIALECT_OCPP201 = "ocpp2.0.1"

# OCPP-J 1.6 table 7, with the 1.6 spelling "OccurenceConstraintViolation".
NOT_IMPLEMENTED = "NotImplemented"
NOT_SUPPORTED = "NotSupported"
INTERNAL_ERROR = "InternalError"
PROTOCOL_ERROR = "ProtocolError"
SECURITY_ERROR = "SecurityError"
FORMATION_VIOLATION = "FormationViolation"
PROPERTY_CONSTRAINT_VIOLATION = "PropertyConstraintViolation"
OCCURENCE_CONSTRAINT_VIOLATION = "OccurenceConstraintViolation"
TYPE_CONSTRAINT_VIOLATION = "TypeConstraintViolation"
GENERIC_ERROR = "GenericError"
ERROR_CODES = frozenset({
    NOT_IMPLEMENTED, NOT_SUPPORTED, INTERNAL_ERROR, PROTOCOL_ERROR, SECURITY_ERROR,
    FORMATION_VIOLATION, PROPERTY_CONSTRAINT_VIOLATION, OCCURENCE_CONSTRAINT_VIOLATION,
    TYPE_CONSTRAINT_VIOLATION, GENERIC_ERROR,
})


# OCPP-J 2.0.1 section 4.3: its own spellings, and codes 1.6 does not have.
MESSAGE_TYPE_NOT_SUPPORTED = "MessageTypeNotSupported"
RPC_FRAMEWORK_ERROR = "RpcFrameworkError"


class RpcRules:
    """The OCPP-J rules of one protocol version: its subprotocol, its error codes (the 1.6
    spellings above are the server's own names for them: ``code`` gives the version's), and how
    it answers a frame it cannot read.

    ``answers_unreadable``: a frame whose message type is unknown is answered
    MessageTypeNotSupported, one whose id cannot be read RpcFrameworkError with
    the id "-1" (2.0.1); else such frames are ignored (1.6).
    ``max_identity``: the longest charge point id the version allows (a
    warning, refused under --strict), None for no limit; ``identity_forbidden``
    the characters it may not hold.
    """

    __slots__ = ("version", "subprotocol", "error_codes", "spellings", "old_spellings",
                 "answers_unreadable", "max_identity", "identity_forbidden")

    def __init__(self, version: str, subprotocol: str, error_codes: frozenset,
                 spellings: Optional[dict[str, str]] = None, answers_unreadable: bool = False,
                 max_identity: Optional[int] = None, identity_forbidden: str = "") -> None:
        self.version = version
        self.subprotocol = subprotocol
        self.error_codes = error_codes
        self.spellings = spellings or {}
        self.old_spellings = {new: old for old, new in self.spellings.items()}
        self.answers_unreadable = answers_unreadable
        self.max_identity = max_identity
        self.identity_forbidden = identity_forbidden

    def code(self, code: str) -> str:
        """The version's spelling of one of the server's error codes."""
        return self.spellings.get(code, code)

    def identity_problem(self, charger_id: str) -> Optional[str]:
        """What is wrong with ``charger_id`` as this version's charge point identity, if
        anything."""
        if self.max_identity is not None and len(charger_id) > self.max_identity:
            return "the charging station identity is %d characters long; OCPP %s allows %d" % (
                len(charger_id), self.version, self.max_identity)
        forbidden = sorted(set(charger_id) & set(self.identity_forbidden))
        if forbidden:
            return "the charging station identity holds %s, which OCPP %s does not allow" % (
                " ".join(map(repr, forbidden)), self.version)
        return None


RPC_16 = RpcRules("1.6", "ocpp1.6", ERROR_CODES)
RPC_201 = RpcRules(
    "2.0.1", "ocpp2.0.1",
    frozenset(ERROR_CODES - {FORMATION_VIOLATION, OCCURENCE_CONSTRAINT_VIOLATION}) | {
        "FormatViolation", "OccurrenceConstraintViolation", MESSAGE_TYPE_NOT_SUPPORTED,
        RPC_FRAMEWORK_ERROR},
    spellings={FORMATION_VIOLATION: "FormatViolation",
               OCCURENCE_CONSTRAINT_VIOLATION: "OccurrenceConstraintViolation"},
    answers_unreadable=True, max_identity=48, identity_forbidden=":")
RPC_RULES = {rules.subprotocol: rules for rules in (RPC_16, RPC_201)}  # by subprotocol
SUBPROTOCOLS = tuple(RPC_RULES)
ALL_ERROR_CODES = frozenset().union(*(rules.error_codes for rules in RPC_RULES.values()))


def internal_error_code(code: str) -> str:
    """The server's own name for an error code of any version (RpcRules.code spells it back)."""
    for rules in RPC_RULES.values():
        code = rules.old_spellings.get(code, code)
    return code


def choose_subprotocol(offered: "collections.abc.Sequence[str]") -> Optional[str]:
    """The first of the charger's ``offered`` subprotocols that the server speaks (the charger's
    own order of preference), or None."""
    return next((name for name in offered if name in RPC_RULES), None)


class FrameError(Exception):
    """A text that is not a usable OCPP-J frame.

    ``message_id`` is the id to answer with a CALLERROR of ``code``, or None
    when the frame cannot be answered (no readable id, or not a CALL).
    ``reply_id`` is the string id of a malformed CALLRESULT or CALLERROR: the
    server CALL it answers fails at once instead of waiting for its timeout.
    ``rpc_error`` is the code a version that answers unreadable frames uses
    (RpcRules.answers_unreadable): MessageTypeNotSupported (with the
    ``message_id`` when it could be read) or RpcFrameworkError.
    """

    def __init__(self, description: str, code: Optional[str] = None,
                 message_id: Optional[str] = None, reply_id: Optional[str] = None,
                 rpc_error: Optional[str] = None) -> None:
        super().__init__(description)
        self.description = description
        self.code = code
        self.message_id = message_id
        self.reply_id = reply_id
        self.rpc_error = rpc_error


class CallRefused(Exception):
    """A charger's CALL answered with a CALLERROR: raised by each check, caught once
    (ChargerSession.on_call)."""

    def __init__(self, code: str, description: str, details: Optional[dict] = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.details = details or {}


class Frame:
    """One parsed OCPP-J message.

    ``action`` is set for a CALL, and for a FlexiCharge-style CALLRESULT that
    carries the action name at index 2 (then ``flexicharge_result`` is True).
    The error fields of a CALLERROR are as the charger sent them: any JSON.
    """

    __slots__ = ("kind", "message_id", "action", "payload", "error_code",
                 "error_description", "error_details", "flexicharge_result")

    def __init__(self, kind: int, message_id: str, action: Optional[str] = None,
                 payload: Any = None, error_code: Any = "", error_description: Any = "",
                 error_details: Any = None, flexicharge_result: bool = False) -> None:
        self.kind = kind
        self.message_id = message_id
        self.action = action
        self.payload = payload
        self.error_code = error_code
        self.error_description = error_description
        self.error_details = error_details
        self.flexicharge_result = flexicharge_result


def _json_type(value: Any) -> str:
    """Name a decoded JSON value's type as JSON does ("string", "null"...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class NotJson(ValueError):
    """NaN, Infinity, -Infinity or a number too large for a double: not JSON (RFC 8259)."""


def _reject_constant(name: str) -> Any:
    raise NotJson("%s is not JSON (RFC 8259)" % name)


def _finite_float(text: str) -> float:
    value = float(text)
    if value - value != 0.0:  # inf - inf is nan
        raise NotJson("the number %s is too large for a double"
                      % (text if len(text) <= 20 else text[:17] + "..."))
    return value


# Python's json module reads NaN and Infinity (and 1e999 as inf) by default;
# RFC 8259 does not, and neither does a validating central system.
_strict_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_strict_json = _strict_decoder.decode
_scan_json = _strict_decoder.scan_once  # the C scanner: no whitespace around the value allowed


def _strict_array(text: str) -> Any:
    """loads_strict for a frame: the value scanned at once when the text is one array with nothing
    around it (every frame, nearly), else read by loads_strict (which raises as it does)."""
    if text[:1] == "[":
        try:
            value, end = _scan_json(text, 0)
        except StopIteration:  # not a value: loads_strict says so
            return _strict_json(text)
        if end == len(text):  # any other error is the one loads_strict raises
            return value
    return _strict_json(text)


def loads_strict(text: str) -> Any:
    """JSON text to a value: ValueError for what RFC 8259 does not allow (NotJson for NaN and
    friends)."""
    return _strict_json(text)


def parse_frame(text: str) -> Frame:
    """Parse one OCPP-J text frame.

    Raises FrameError for anything that is not a well-formed CALL, CALLRESULT
    or CALLERROR; its ``message_id`` is set when the frame is a CALL with a
    readable id, so the caller can answer it.  Frames with an unknown message
    type id raise it too, unanswerable: OCPP-J says to ignore them.
    """
    try:
        message = _strict_array(text)
    except NotJson as exc:
        raise _not_json_error(text, str(exc)) from None
    except ValueError as exc:
        raise FrameError("invalid JSON: %s" % exc, rpc_error=RPC_FRAMEWORK_ERROR) from None
    except RecursionError:
        raise FrameError("JSON nested too deeply to parse", rpc_error=RPC_FRAMEWORK_ERROR) from None
    # The common case first: a well-formed CALL.
    if (type(message) is list and len(message) == 4 and message[0] == CALL
        and type(message[0]) is int):
        message_id, action, payload = message[1], message[2], message[3]
        if type(message_id) is str and type(action) is str and action and type(payload) is dict:
            return Frame(CALL, message_id, action, payload)  # positional: faster
    return _parse_message(message)


def _not_json_error(text: str, description: str) -> FrameError:
    """The FrameError for a frame with NaN or Infinity: answerable when its id can still be read."""
    try:
        message = json.loads(text)  # lenient, only to find whom to answer
    except (ValueError, RecursionError):
        message = None
    if isinstance(message, list) and len(message) > 1 and type(message[0]) is int and \
            isinstance(message[1], str):
        if message[0] == CALL:
            return FrameError(description, FORMATION_VIOLATION, message[1])
        if message[0] in (CALLRESULT, CALLERROR):
            return FrameError(description, reply_id=message[1])
    return FrameError(description, rpc_error=RPC_FRAMEWORK_ERROR)


def _parse_message(message: Any) -> Frame:
    """The slow path of parse_frame: every frame that is not a plain, well-formed CALL."""
    if not isinstance(message, list):
        raise FrameError("a frame must be a JSON array, got %s" % _json_type(message),
                         rpc_error=RPC_FRAMEWORK_ERROR)
    if not message:
        raise FrameError("empty array: no message type id", rpc_error=RPC_FRAMEWORK_ERROR)
    kind = message[0]
    if type(kind) is not int or kind not in (CALL, CALLRESULT, CALLERROR):
        # OCPP-J 4.1.3: ignore it.  2.0, "2" and true are not type ids either.
        raise FrameError("unknown message type id %s (OCPP-J 4.1.3)" % _show(kind),
                         message_id=message[1] if len(message) > 1 and isinstance(
                             message[1], str) else None, rpc_error=MESSAGE_TYPE_NOT_SUPPORTED)
    if len(message) < 2:
        raise FrameError("message type %d without a message id" % kind,
                         rpc_error=RPC_FRAMEWORK_ERROR)
    raw_id = message[1]
    answerable_id = _id_text(raw_id) if kind == CALL else None
    if not isinstance(raw_id, str):
        raise FrameError("message id must be a string, got %s" % _json_type(raw_id),
                         FORMATION_VIOLATION, answerable_id, rpc_error=RPC_FRAMEWORK_ERROR)

    if kind == CALL:
        return _parse_call(message, raw_id)
    return _parse_reply(message, kind, raw_id)


def _id_text(raw_id: Any) -> Optional[str]:
    """The message id of a CALL as text to answer it with: a string as it is, any JSON number
    (integer, fraction, exponent, however long) as Python writes it; None for other JSON.

    A number is answered with a FormationViolation like any other non-string
    id, as long as the answer fits the reply cap (ChargerSession.answer).
    """
    if isinstance(raw_id, str):
        return raw_id
    if isinstance(raw_id, (int, float)) and not isinstance(raw_id, bool):
        try:
            return repr(raw_id)
        except ValueError:  # an integer over Python's digit limit for text (3.11 and later)
            return None
    return None


def _parse_call(message: list, raw_id: str) -> Frame:
    """A CALL that is not plain: the CALLERROR OCPP-J calls for, or the CALL with a null payload as
    {}."""
    if len(message) < 4:
        raise FrameError("CALL needs 4 elements [2, id, action, payload], got %d" % len(message),
                         PROTOCOL_ERROR, raw_id)
    if len(message) > 4:
        raise FrameError("CALL has %d elements, OCPP-J allows 4" % len(message),
                         FORMATION_VIOLATION, raw_id)
    action, payload = message[2], message[3]
    if not isinstance(action, str) or not action:
        raise FrameError("action must be a non-empty string, got %s" % _json_type(action),
                         FORMATION_VIOLATION, raw_id)
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise FrameError("payload of %s must be a JSON object, got %s"
                         % (printable(action), _json_type(payload)), FORMATION_VIOLATION, raw_id)
    return Frame(CALL, raw_id, action=action, payload=payload)


def _parse_reply(message: list, kind: int, raw_id: str) -> Frame:
    """A CALLRESULT (standard, or the FlexiCharge 4-element form) or a CALLERROR, fields as sent."""
    if kind == CALLRESULT:
        if len(message) == 3:
            return Frame(CALLRESULT, raw_id, payload=message[2])
        if len(message) == 4 and isinstance(message[2], str):
            return Frame(CALLRESULT, raw_id, action=message[2], payload=message[3],
                         flexicharge_result=True)
        raise FrameError("CALLRESULT needs 3 elements [3, id, payload], got %d" % len(message),
                         reply_id=raw_id)

    if len(message) < 4:
        raise FrameError("CALLERROR needs 5 elements [4, id, code, description, details], got %d"
                         % len(message), reply_id=raw_id)
    details = message[4] if len(message) > 4 else {}
    return Frame(CALLERROR, raw_id, error_code=message[2], error_description=message[3],
                 error_details=details)


# Built once: json.dumps with arguments builds a new encoder on every call.
# allow_nan=False: the server never writes NaN or Infinity, which are not JSON.
_compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
# JSONEncoder.encode makes a C encoder on every call; this one is made once and reused (no
# circular-reference check: a value with a cycle raises RecursionError, as one nested too deep).
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_compact_chunks = _c_make_encoder(None, json.JSONEncoder(allow_nan=False).default,
                                  json.encoder.encode_basestring, None, ":", ",", False, False,
                                  False) if _c_make_encoder is not None else None


def dump_json(value: Any) -> str:
    """Compact JSON, as sent on the wire and shown to the operator.

    Raises ValueError (NaN, Infinity) or RecursionError (nesting too deep):
    for a value that came from a charger, use render_json.
    """
    if type(value) is dict and len(value) == 1:  # one text field (Heartbeat's reply): no encoder
        for key, item in value.items():
            if type(key) is str and type(item) is str:
                return f"{{{_json_string(key)}:{_json_string(item)}}}"
    if _compact_chunks is None:  # no C encoder (another Python implementation)
        return _compact_json(value)
    return "".join(_compact_chunks(value, 0))


def render_json(value: Any) -> str:
    """JSON of any decoded value, for the operator or the transcript; it never raises."""
    try:
        return dump_json(value)
    except (ValueError, TypeError, RecursionError) as exc:
        return '"<cannot be shown as JSON: %s>"' % type(exc).__name__


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def encodable(text: str) -> str:
    """JSON ``text`` with each lone surrogate written as its \\uXXXX escape, so it encodes as UTF-8.

    A charger may send "\\ud800": legal JSON, but the character has no UTF-8
    form, so echoing it (a message id, an idTag) would abort the send.  In
    JSON text a surrogate can only stand inside a string, where its escape
    means the same character: the charger reads back exactly what it sent.
    """
    if text.isascii():  # nearly every frame, checked in C
        return text
    return _LONE_SURROGATE.sub(lambda match: "\\u%04x" % ord(match.group()), text)


# Control characters (C0, DEL, C1), the invisible ones below and lone
# surrogates never reach the terminal raw: a charger must not be able to
# repaint or forge the operator's screen, nor make a line unwritable.
# The Bidi_Control set, every format character (Cf) but the emoji joiner
# U+200D, and the line and paragraph separators, from one Unicode version
# on every Python (unicodedata would follow each Python's own).
_INVISIBLE_RANGES = (  # Unicode 15.1.0: scripts/invisible_characters.py
    (0x00AD, 0x00AD), (0x0600, 0x0605), (0x061C, 0x061C), (0x06DD, 0x06DD), (0x070F, 0x070F),
    (0x0890, 0x0891), (0x08E2, 0x08E2), (0x180E, 0x180E), (0x200B, 0x200C), (0x200E, 0x200F),
    (0x2028, 0x202E), (0x2060, 0x2064), (0x2066, 0x206F), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x1343F), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0001, 0xE0001), (0xE0020, 0xE007F),
)
_TERMINAL_ESCAPES = {code: "\\x%02x" % code
                     for code in itertools.chain(range(0x20), range(0x7F, 0xA0))}
_TERMINAL_ESCAPES.update({code: ("\\u%04x" if code <= 0xFFFF else "\\U%08x") % code
                          for code in itertools.chain(range(0xD800, 0xE000), *(
                              range(first, last + 1) for first, last in _INVISIBLE_RANGES))})
# For plain text a literal backslash is doubled too, so that a charger's own
# "\\x1b" (four characters) never looks like an escape the server made.
_PLAIN_ESCAPES = dict(_TERMINAL_ESCAPES)
_PLAIN_ESCAPES[ord("\\")] = "\\\\"
MAX_SHOWN_VALUE = 120  # characters of one charger-controlled value in a line of output
MAX_SHOWN = 2000  # characters of one payload on the terminal


def _cut(text: str, limit: int) -> tuple[str, str]:
    if len(text) <= limit:
        return text, ""
    return text[:limit], "...[%d more characters]" % (len(text) - limit)


def printable(text: str, limit: int = MAX_SHOWN_VALUE) -> str:
    """A charger-controlled text (an id, a URL path, an action name, an error code
    or description) made safe for a line of output: control characters escaped,
    backslashes doubled, and cut after ``limit`` characters with a visible marker.
    """
    if len(text) <= limit and text.isprintable() and "\\" not in text:  # the common case, in C
        return text
    text, marker = _cut(text, limit)
    if not text.isprintable() or "\\" in text:  # the common case is checked in C
        text = text.translate(_PLAIN_ESCAPES)
    return text + marker


def printable_json(text: str, limit: int = MAX_SHOWN) -> str:
    """JSON text for a line of output: like printable, but its backslashes are JSON's own
    escapes."""
    if len(text) <= limit and text.isprintable():  # the common case, in C
        return text
    text, marker = _cut(text, limit)
    if not text.isprintable():
        text = text.translate(_TERMINAL_ESCAPES)
    return text + marker


# The C string encoder json.dumps uses with ensure_ascii=False: "id" -> '"id"'.
_json_string = json.encoder.encode_basestring


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def build_call(message_id: str, action: str, payload_json: str) -> str:
    """CALL text; ``payload_json`` is the payload already serialized with dump_json."""
    return "[2,%s,%s,%s]" % (_json_string(message_id), _json_string(action), payload_json)


def build_call_result(message_id: str, payload_json: str, action: Optional[str] = None) -> str:
    """CALLRESULT text; with ``action`` it is the FlexiCharge 4-element form."""
    if action is None:
        return f"[3,{_json_string(message_id)},{payload_json}]"
    return "[3,%s,%s,%s]" % (_json_string(message_id), _json_string(action), payload_json)


def build_call_error(message_id: str, code: str, description: str,
                     details: Optional[dict] = None) -> str:
    """CALLERROR text; ``description`` cut to MAX_ERROR_DESCRIPTION characters."""
    if len(description) > MAX_ERROR_DESCRIPTION:
        description = description[:MAX_ERROR_DESCRIPTION - 3] + "..."
    return dump_json([CALLERROR, message_id, code, description, details or {}])


def call_payload_text(text: str, frame: Frame) -> str:
    """The payload of a parsed CALL as the charger wrote it, for the operator.

    It is sliced out of ``text`` when the frame starts as json.dumps writes
    one, compact or with ", " (nearly every charger); otherwise it is the
    payload serialized again.
    """
    # An id and an action with nothing to escape are written as they are: that is tried first (a
    # prefix with an unescaped quote or backslash cannot match text that parsed to them).
    prefix = f'[2,"{frame.message_id}","{frame.action}",' if text[2:3] == '"' else \
        f'[2, "{frame.message_id}", "{frame.action}", '
    if text.endswith("}]") and text.startswith(prefix):  # as json.dumps writes it: in C
        return text[len(prefix):-1]
    prefix = "[2,%s,%s," % (_json_string(frame.message_id), _json_string(frame.action))
    if text.endswith("}]") and text.startswith(prefix):  # compact, escapes in the id or action
        return text[len(prefix):-1]
    separator = ", " if text[3:4] == " " else ","
    prefix = "[2%s%s%s%s%s" % (separator, _json_string(frame.message_id), separator,
                               _json_string(frame.action), separator)
    if text.startswith(prefix):
        rest = text[len(prefix):].rstrip()
        if rest.endswith("]"):
            return rest[:-1].rstrip()
    try:
        return dump_json(frame.payload)
    except (ValueError, RecursionError):  # nested too deeply to write again: the frame as it came
        return text


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def iso_utc(moment: datetime.datetime) -> str:
    """ISO-8601 UTC with milliseconds and a Z, e.g. 2026-11-25T15:11:34.123Z."""
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + \
        "%03dZ" % (moment.microsecond // 1000)


class SecondClock:
    """The time now as text with milliseconds, for every frame.

    strftime runs once a second, not once a frame: ``pattern`` formats the
    whole seconds (through ``convert``, time.gmtime or time.localtime), then
    the milliseconds and ``suffix`` are appended.
    """

    def __init__(self, pattern: str, convert: Callable[[float], time.struct_time],
                 suffix: str = "") -> None:
        self.pattern = pattern
        self.convert = convert
        self.milliseconds = [".%03d%s" % (millisecond, suffix) for millisecond in range(1000)]
        self._second = -1
        self._text = ""
        self._millisecond_ends = 0.0
        self._now = ""
        self._at_second, self._at_text = -1, ""

    def now(self) -> str:
        now = time.time()
        if now < self._millisecond_ends:  # a busy server prints many lines in one millisecond
            return self._now
        millisecond = int(now * 1000)
        if millisecond // 1000 != self._second:
            self._second = millisecond // 1000
            self._text = time.strftime(self.pattern, self.convert(self._second))
        self._millisecond_ends = (millisecond + 1) / 1000
        self._now = self._text + self.milliseconds[millisecond % 1000]
        return self._now

    def at(self, moment: float) -> str:
        """The text of ``moment`` (seconds since the epoch), e.g. an event's time."""
        second, millisecond = divmod(int(moment * 1000), 1000)
        return self.second_text(second) + self.milliseconds[millisecond]

    def second_text(self, second: int) -> str:
        """The text of a whole ``second`` (since the epoch), before its milliseconds (the
        ``milliseconds`` table's texts, suffix included)."""
        if second != self._at_second:
            self._at_second, self._at_text = second, time.strftime(self.pattern,
                                                                   self.convert(second))
        return self._at_text


UTC_CLOCK = SecondClock("%Y-%m-%dT%H:%M:%S", time.gmtime, "Z")  # 2026-11-25T15:11:34.123Z
LOCAL_CLOCK = SecondClock("%H:%M:%S", time.localtime)  # 15:11:34.123, for the operator


# --------------------------------------------------------------- Spec lint
# Field rules of the official OCPP 1.6 JSON schemas (and the 1.6 security
# whitepaper), compiled once at import; the rule classes serve the 2.0.1
# field rules too (the next section).  Every object in the 1.6 schemas is
# closed (additionalProperties: false); in the 2.0.1 ones, every object but
# CustomDataType, which takes any more fields (OpenObject).  A broken rule
# maps to the OCPP-J error code a validating central system answers with
# (2.0.1 spells two of them FormatViolation, OccurrenceConstraintViolation):
#   wrong JSON type                -> TypeConstraintViolation
#   required field missing, array
#   below its minimum or above its
#   maximum length                 -> OccurenceConstraintViolation
#   field the schema does not know -> FormationViolation
#   too long, not in the enum,
#   out of range, not an ISO-8601
#   date-time                      -> PropertyConstraintViolation


class Problem:
    """One way a payload breaks its OCPP schema: where, what rule, which code.

    ``hint`` (a "did you mean" search) is a function, run only when the
    problem is shown: a frame may carry a thousand copies of one mistake.
    """

    __slots__ = ("path", "message", "code", "hint")

    def __init__(self, path: str, message: str, code: str,
                 hint: Optional[Callable[[], str]] = None) -> None:
        self.path = path
        self.message = message
        self.code = code
        self.hint = hint

    @property
    def key(self) -> tuple[str, str]:
        """Identity for "warn once": the field without array indices, and the code."""
        return re.sub(r"\[\d+\]", "[]", self.path), self.code

    def __str__(self) -> str:
        text = "%s %s" % (printable(self.path, 80) or "payload", self.message)
        return text + " (%s)" % self.hint() if self.hint is not None else text


def _show(value: Any) -> str:
    """A charger's value, short, as JSON (so its quotes and escapes are JSON's own)."""
    text = render_json(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Rule:
    """A field rule.

    ``valid`` answers "does ``value`` keep this rule?" as fast as it can, for
    every frame; ``check`` then says what is wrong, appending the Problems of
    ``value`` at ``path`` (it runs only for the frames that fail ``valid``).

    ``failure`` is the rule as Python source, a condition that holds when the
    value in a variable breaks it: an Object or Array compiles its fields' or
    items' conditions into one function (``compiled_valid``), which is most of
    the lint's speed.
    """

    type_name = "value"
    json_types: Optional[tuple] = None  # the Python types of the JSON type; true is no integer here

    def __init__(self, required: bool = False) -> None:
        self.required = required

    def valid(self, value: Any) -> bool:
        raise NotImplementedError

    def failure(self, name: str, constants: dict[str, Any]) -> str:
        """Python source of a condition that holds when the value in variable ``name`` breaks the
        rule; ``constants`` takes the objects the source names (here: its compiled valid)."""
        return "not %s(%s)" % (_constant(constants, self.compiled_valid()), name)

    def compiled_valid(self) -> Callable[[Any], bool]:
        """``valid`` as fast as it gets (a compiled function for an Object or an Array)."""
        return self.valid

    def check(self, value: Any, path: str, problems: list[Problem]) -> None:
        """Append the Problems of ``value`` at ``path``: its JSON type, then the rest of the
        rule."""
        if self.json_types is not None and (not isinstance(value, self.json_types) or (
                isinstance(value, bool) and bool not in self.json_types)):
            self._wrong_type(value, path, problems)
        else:
            self.check_value(value, path, problems)

    def check_value(self, value: Any, path: str, problems: list[Problem]) -> None:
        """The rule beyond the JSON type (``value`` has the right one)."""

    def describe(self) -> str:
        return self.type_name

    def _wrong_type(self, value: Any, path: str, problems: list[Problem]) -> None:
        got = _json_type(value)
        if value is not None:
            got += " " + _show(value)
        problems.append(Problem(path, "must be %s, got %s" % (self.type_name, got),
                                TYPE_CONSTRAINT_VIOLATION))


class String(Rule):
    type_name = "a string"
    json_types = (str,)

    def __init__(self, max_length: Optional[int] = None, required: bool = False) -> None:
        super().__init__(required)
        self.max_length = max_length

    def valid(self, value: Any) -> bool:
        return type(value) is str and (self.max_length is None or len(value) <= self.max_length)

    def failure(self, name: str, constants: dict[str, Any]) -> str:
        if self.max_length is None:
            return "type(%s) is not str" % name
        return "type(%s) is not str or len(%s) > %d" % (name, name, self.max_length)

    def check_value(self, value: Any, path: str, problems: list[Problem]) -> None:
        if self.max_length is not None and len(value) > self.max_length:
            problems.append(Problem(path, "is %d characters long, the limit is %d"
                                    % (len(value), self.max_length), PROPERTY_CONSTRAINT_VIOLATION))

    def describe(self) -> str:
        return ("string" if self.max_length is None else "string, up to %d characters"
                % self.max_length)


_DATE_TIME = re.compile(
    r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)\Z")


class DateTime(String):
    type_name = "an ISO-8601 date-time string"

    def __init__(self, required: bool = False) -> None:
        super().__init__(None, required)

    def valid(self, value: Any) -> bool:
        return type(value) is str and _DATE_TIME.match(value) is not None

    def failure(self, name: str, constants: dict[str, Any]) -> str:
        return "type(%s) is not str or %s(%s) is None" % (
            name, _constant(constants, _DATE_TIME.match), name)

    def check_value(self, value: Any, path: str, problems: list[Problem]) -> None:
        if not _DATE_TIME.match(value):
            problems.append(Problem(path,
                                    "must be an ISO-8601 date-time with a zone, like %s, got %s"
                                    % (UTC_CLOCK.now(), _show(value)),
                                    PROPERTY_CONSTRAINT_VIOLATION))

    def describe(self) -> str:
        return "date-time, ISO-8601 UTC"


class Scalar(Rule):
    """A rule that is a JSON type and nothing more (true is no integer here: the type is compared
    exactly)."""

    description = ""

    def valid(self, value: Any) -> bool:
        return type(value) in self.json_types

    def failure(self, name: str, constants: dict[str, Any]) -> str:
        return " and ".join("type(%s) is not %s" % (name, kind.__name__)
                            for kind in self.json_types)

    def describe(self) -> str:
        return self.description


class Integer(Scalar):
    type_name, json_types, description = "an integer", (int,), "integer"


class Decimal(Scalar):
    type_name, json_types, description = "a number", (int, float), "decimal number"


class Boolean(Scalar):
    type_name, json_types, description = "true or false", (bool,), "true or false"


class BoundedNumber(Decimal):
    """A number within ``minimum`` and ``maximum`` (None: no bound)."""

    def __init__(self, minimum: Optional[float] = None, maximum: Optional[float] = None,
                 required: bool = False) -> None:
        super().__init__(required)
        self.minimum = minimum
        self.maximum = maximum

    def valid(self, value: Any) -> bool:
        return type(value) in self.json_types and self._within(value)

    def failure(self, name: str, constants: dict[str, Any]) -> str:
        bounds = ["%s %s %r" % (name, sign, bound) for sign, bound in (
            ("<", self.minimum), (">", self.maximum)) if bound is not None]
        return "(%s)" % " or ".join(["(%s)" % super().failure(name, constants)] + bounds)

    def _within(self, value: Any) -> bool:
        return ((self.minimum is None or value >= self.minimum)
                and (self.maximum is None or value <= self.maximum))

    def check_value(self, value: Any, path: str, problems: list[Problem]) -> None:
        if not self._within(value):
            problems.append(Problem(path, "is %s, %s" % (_show(value), self._range()),
                                    PROPERTY_CONSTRAINT_VIOLATION))

    def _range(self) -> str:
        if self.maximum is None:
            return "the minimum is %s" % _show(self.minimum)
        if self.minimum is None:
            return "the maximum is %s" % _show(self.maximum)
        return "allowed: %s to %s" % (_show(self.minimum), _show(self.maximum))

    def describe(self) -> str:
        return "%s, %s" % (self.description, self._range())


class BoundedInteger(BoundedNumber):
    """An integer within ``minimum`` and ``maximum`` (None: no bound)."""

    type_name, json_types, description = "an integer", (int,), "integer"


class Anything(Rule):
    """Any JSON value: a schema without a type (2.0.1's DataTransfer data)."""

    type_name = "any JSON value"

    def valid(self, value: Any) -> bool:
        return True

    def failure(self, name: str, constants: dict[str, Any]) -> str:
        return "False"

    def describe(self) -> str:
        return "any JSON value"


class Enum(Rule):
    type_name = "a string"
    json_types = (str,)

    def __init__(self, values: tuple[str, ...], required: bool = False) -> None:
        super().__init__(required)
        self.values = values
        self._allowed = frozenset(values)

    def valid(self, value: Any) -> bool:
        return type(value) is str and value in self._allowed

    def failure(self, name: str, constants: dict[str, Any]) -> str:
        return "type(%s) is not str or %s not in %s" % (name, name,
                                                         _constant(constants, self._allowed))

    def check_value(self, value: Any, path: str, problems: list[Problem]) -> None:
        if value not in self._allowed:
            problems.append(Problem(path, "%s is not allowed" % _show(value),
                                    PROPERTY_CONSTRAINT_VIOLATION, lambda: self.suggest(value)))

    def suggest(self, value: str) -> str:
        close = difflib.get_close_matches(value[:100], self.values, n=1)
        if close:
            return "did you mean %s?" % close[0]
        if len(self.values) > 6:
            return "one of %s, ... (%d values)" % (", ".join(self.values[:6]), len(self.values))
        return "one of " + ", ".join(self.values)

    def describe(self) -> str:
        return "one of " + "|".join(self.values)


class Object(Rule):
    type_name = "an object"
    json_types = (dict,)

    def __init__(self, fields: dict[str, Rule], required: bool = False) -> None:
        super().__init__(required)
        self.fields = fields
        self.required_names = tuple(name for name, rule in fields.items() if rule.required)
        self._required = frozenset(self.required_names)
        self._compiled: Optional[Callable[[Any], bool]] = None

    closed = True  # no field beyond its own

    def valid(self, value: Any) -> bool:
        return self.compiled_valid()(value)

    def compiled_valid(self) -> Callable[[Any], bool]:
        if self._compiled is None:
            self._compiled = _compile_object(self)
            self.valid = self._compiled  # type: ignore[method-assign]  # calls skip the method
        return self._compiled

    def check_value(self, value: Any, path: str, problems: list[Problem]) -> None:
        prefix = path + "." if path else ""
        for name in self.required_names:
            if name not in value:
                problems.append(Problem(prefix + name, "is required but missing",
                                        OCCURENCE_CONSTRAINT_VIOLATION))
        for name, item in value.items():
            if len(problems) >= MAX_PROBLEMS_PER_FRAME:
                break
            rule = self.fields.get(name)
            if rule is None:
                problems.append(Problem(prefix + name, "is not a field of this message",
                                        FORMATION_VIOLATION, lambda name=name: self.suggest(name)))
            else:
                rule.check(item, prefix + name, problems)

    def suggest(self, name: str) -> str:
        close = difflib.get_close_matches(name[:100], self.fields, n=1)
        if close:
            return "did you mean %s?" % close[0]
        return "allowed: %s" % ", ".join(self.fields) if self.fields else "no fields allowed"

    def describe(self) -> str:
        return "object"


class OpenObject(Object):
    """An object that allows fields beyond its own (2.0.1's CustomDataType, whose schema has no
    ``additionalProperties: false``): its own fields keep their rules, the others are free."""

    closed = False

    def check_value(self, value: Any, path: str, problems: list[Problem]) -> None:
        prefix = path + "." if path else ""
        for name in self.required_names:
            if name not in value:
                problems.append(Problem(prefix + name, "is required but missing",
                                        OCCURENCE_CONSTRAINT_VIOLATION))
        for name, rule in self.fields.items():
            if name in value and len(problems) < MAX_PROBLEMS_PER_FRAME:
                rule.check(value[name], prefix + name, problems)

    def describe(self) -> str:
        return "object, open to more fields"


class Array(Rule):
    type_name = "an array"
    json_types = (list,)

    def __init__(self, items: Rule, min_items: int = 0, max_items: Optional[int] = None,
                 required: bool = False) -> None:
        super().__init__(required)
        self.items = items
        self.min_items = min_items
        self.max_items = max_items
        self._most = sys.maxsize if max_items is None else max_items
        self._compiled: Optional[Callable[[Any], bool]] = None

    def valid(self, value: Any) -> bool:
        return self.compiled_valid()(value)

    def compiled_valid(self) -> Callable[[Any], bool]:
        if self._compiled is None:
            self._compiled = _compile_array(self)
            self.valid = self._compiled  # type: ignore[method-assign]  # calls skip the method
        return self._compiled

    def check_value(self, value: Any, path: str, problems: list[Problem]) -> None:
        if len(value) < self.min_items:
            problems.append(Problem(path, "needs at least %d element(s)" % self.min_items,
                                    OCCURENCE_CONSTRAINT_VIOLATION))
        if len(value) > self._most:
            problems.append(Problem(path, "has %d elements, the limit is %d"
                                    % (len(value), self._most), OCCURENCE_CONSTRAINT_VIOLATION))
        index = 0
        while index < len(value) and len(problems) < MAX_PROBLEMS_PER_FRAME:
            self.items.check(value[index], "%s[%d]" % (path, index), problems)
            index += 1

    def describe(self) -> str:
        if self.max_items is not None:
            return "array (up to %d) of %s" % (self.max_items, self.items.describe())
        return "array of " + self.items.describe()


# Compiled rules: an Object's or an Array's valid() as one generated function
# whose leaves are inline conditions (a rule's ``failure``), made on first use.
# The objects and arrays inside it are written in too, down to
# INLINED_RULE_DEPTH levels (deeper ones are called): a TransactionEvent is
# checked in one call, not twelve.
INLINED_RULE_DEPTH = 8


class _RuleSource:
    """The source of one generated valid(): its lines, the constants they name, fresh names."""

    def __init__(self) -> None:
        self.lines = ["def valid(v):"]
        self.constants: dict[str, Any] = {}
        self.names = 0

    def constant(self, value: Any) -> str:
        return _constant(self.constants, value)

    def name(self, kind: str) -> str:
        self.names += 1
        return "%s%d" % (kind, self.names)

    def add(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)

    def function(self) -> Callable[[Any], bool]:
        self.add(1, "return True")
        return _compiled_function(self.lines, self.constants)


def _constant(constants: dict[str, Any], value: Any) -> str:
    """The name under which generated source reads ``value``."""
    name = "_c%d" % len(constants)
    constants[name] = value
    return name


def _compiled_function(lines: list[str], constants: dict[str, Any]) -> Callable[[Any], bool]:
    namespace = dict(constants)
    exec(compile("\n".join(lines), "<compiled rule>", "exec"), namespace)  # our own source only
    return namespace["valid"]


def _value_source(source: _RuleSource, rule: Rule, var: str, indent: int, depth: int) -> None:
    """Statements that return False when the value in ``var`` breaks ``rule``."""
    if depth < INLINED_RULE_DEPTH and type(rule) in (Object, OpenObject):
        _object_source(source, rule, var, indent, depth + 1)  # type: ignore[arg-type]
    elif depth < INLINED_RULE_DEPTH and type(rule) is Array:
        _array_source(source, rule, var, indent, depth + 1)  # type: ignore[arg-type]
    else:
        source.add(indent, "if %s: return False" % rule.failure(var, source.constants))


def _object_source(source: _RuleSource, rule: Object, var: str, indent: int, depth: int) -> None:
    """An object's statements: its type and required names in C, then one pass over the fields
    present, each name tested in turn (the required ones first, customData, seldom sent, last)
    with its condition inline."""
    source.add(indent, "if type(%s) is not dict: return False" % var)
    if rule.required_names:
        source.add(indent, "if not %s <= %s.keys(): return False"
                   % (source.constant(rule._required), var))
    if not rule.fields:
        if rule.closed:
            source.add(indent, "if %s: return False" % var)
        return
    key, field = source.name("k"), source.name("f")
    source.add(indent, "for %s, %s in %s.items():" % (key, field, var))
    names = sorted(rule.fields, key=lambda name: (name not in rule._required,
                                                  name == "customData"))
    for number, name in enumerate(names):
        source.add(indent + 1, "%s %s == %r:" % ("elif" if number else "if", key, name))
        _value_source(source, rule.fields[name], field, indent + 2, depth)
    if rule.closed:
        source.add(indent + 1, "else: return False")


def _array_source(source: _RuleSource, rule: Array, var: str, indent: int, depth: int) -> None:
    """An array's statements: its type and size, then its items' in a loop."""
    size = ["len(%s) < %d" % (var, rule.min_items)] if rule.min_items else []
    if rule.max_items is not None:
        size.append("len(%s) > %d" % (var, rule.max_items))
    source.add(indent, "if %s: return False" % " or ".join(["type(%s) is not list" % var] + size))
    item = source.name("i")
    source.add(indent, "for %s in %s:" % (item, var))
    _value_source(source, rule.items, item, indent + 1, depth)


def _compile_object(rule: Object) -> Callable[[Any], bool]:
    """``rule.valid`` as one function (see _object_source)."""
    source = _RuleSource()
    _object_source(source, rule, "v", 1, 1)
    return source.function()


def _compile_array(rule: Array) -> Callable[[Any], bool]:
    """``rule.valid`` as one function (see _array_source)."""
    source = _RuleSource()
    _array_source(source, rule, "v", 1, 1)
    return source.function()


def lint_payload(rules: Object, payload: Any) -> list[Problem]:
    """The ways ``payload`` breaks ``rules``, the first MAX_PROBLEMS_PER_FRAME of them (none: it is
    valid)."""
    if rules.valid(payload):
        return []
    problems: list[Problem] = []
    rules.check(payload, "", problems)
    return problems


DIAGNOSTICS_STATUS = ("Idle", "Uploaded", "UploadFailed", "Uploading")
FIRMWARE_STATUS = ("Downloaded", "DownloadFailed", "Downloading", "Idle", "InstallationFailed",
                   "Installing", "Installed")
READING_CONTEXT = ("Interruption.Begin", "Interruption.End", "Sample.Clock", "Sample.Periodic",
                   "Transaction.Begin", "Transaction.End", "Trigger", "Other")
VALUE_FORMAT = ("Raw", "SignedData")
MEASURAND = ("Energy.Active.Export.Register", "Energy.Active.Import.Register",
             "Energy.Reactive.Export.Register", "Energy.Reactive.Import.Register",
             "Energy.Active.Export.Interval", "Energy.Active.Import.Interval",
             "Energy.Reactive.Export.Interval", "Energy.Reactive.Import.Interval",
             "Power.Active.Export", "Power.Active.Import", "Power.Offered", "Power.Reactive.Export",
             "Power.Reactive.Import", "Power.Factor", "Current.Import", "Current.Export",
             "Current.Offered", "Voltage", "Frequency", "Temperature", "SoC", "RPM")
PHASE = ("L1", "L2", "L3", "N", "L1-N", "L2-N", "L3-N", "L1-L2", "L2-L3", "L3-L1")
LOCATION = ("Cable", "EV", "Inlet", "Outlet", "Body")
# The official MeterValues schema allows "Hertz"; the StopTransaction one does not.
UNIT_OF_MEASURE_NO_HERTZ = ("Wh", "kWh", "varh", "kvarh", "W", "kW", "VA", "kVA", "var", "kvar",
                            "A", "V", "K", "Celcius", "Celsius", "Fahrenheit", "Percent")
UNIT_OF_MEASURE = UNIT_OF_MEASURE_NO_HERTZ + ("Hertz",)
CHARGE_POINT_ERROR_CODE = ("ConnectorLockFailure", "EVCommunicationError", "GroundFailure",
                           "HighTemperature", "InternalError", "LocalListConflict", "NoError",
                           "OtherError", "OverCurrentFailure", "PowerMeterFailure",
                           "PowerSwitchFailure", "ReaderFailure", "ResetFailure", "UnderVoltage",
                           "OverVoltage", "WeakSignal")
CHARGE_POINT_STATUS = ("Available", "Preparing", "Charging", "SuspendedEVSE", "SuspendedEV",
                       "Finishing", "Reserved", "Unavailable", "Faulted")
STOP_REASON = ("EmergencyStop", "EVDisconnected", "HardReset", "Local", "Other", "PowerLoss",
               "Reboot", "Remote", "SoftReset", "UnlockCommand", "DeAuthorized")
UPLOAD_LOG_STATUS = ("BadMessage", "Idle", "NotSupportedOperation", "PermissionDenied", "Uploaded",
                     "UploadFailure", "Uploading")
SIGNED_FIRMWARE_STATUS = ("Downloaded", "DownloadFailed", "Downloading", "DownloadScheduled",
                          "DownloadPaused", "Idle", "InstallationFailed", "Installing", "Installed",
                          "InstallRebooting", "InstallScheduled", "InstallVerificationFailed",
                          "InvalidSignature", "SignatureVerified")
AVAILABILITY_TYPE = ("Inoperative", "Operative")
CHARGING_PROFILE_PURPOSE = ("ChargePointMaxProfile", "TxDefaultProfile", "TxProfile")
CHARGING_RATE_UNIT = ("A", "W")
CHARGING_PROFILE_KIND = ("Absolute", "Recurring", "Relative")
RECURRENCY_KIND = ("Daily", "Weekly")
RESET_TYPE = ("Hard", "Soft")
AUTHORIZATION_STATUS = ("Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx")
UPDATE_TYPE = ("Differential", "Full")
MESSAGE_TRIGGER = ("BootNotification", "DiagnosticsStatusNotification",
                   "FirmwareStatusNotification", "Heartbeat", "MeterValues", "StatusNotification")
EXTENDED_MESSAGE_TRIGGER = ("BootNotification", "LogStatusNotification",
                            "FirmwareStatusNotification", "Heartbeat", "MeterValues",
                            "SignChargePointCertificate", "StatusNotification")
HASH_ALGORITHM = ("SHA256", "SHA384", "SHA512")
CERTIFICATE_USE = ("CentralSystemRootCertificate", "ManufacturerRootCertificate")
LOG_TYPE = ("DiagnosticsLog", "SecurityLog")
ACCEPTED_REJECTED = ("Accepted", "Rejected")
ACCEPTED_REJECTED_NOT_SUPPORTED = ("Accepted", "Rejected", "NotSupported")
AVAILABILITY_STATUS = ("Accepted", "Rejected", "Scheduled")
CONFIGURATION_STATUS = ("Accepted", "Rejected", "RebootRequired", "NotSupported")
CLEAR_CHARGING_PROFILE_STATUS = ("Accepted", "Unknown")
DATA_TRANSFER_STATUS = ("Accepted", "Rejected", "UnknownMessageId", "UnknownVendorId")
RESERVATION_STATUS = ("Accepted", "Faulted", "Occupied", "Rejected", "Unavailable")
UPDATE_STATUS = ("Accepted", "Failed", "NotSupported", "VersionMismatch")
TRIGGER_MESSAGE_STATUS = ("Accepted", "Rejected", "NotImplemented")
UNLOCK_STATUS = ("Unlocked", "UnlockFailed", "NotSupported")
DELETE_CERTIFICATE_STATUS = ("Accepted", "Failed", "NotFound")
GET_INSTALLED_CERTIFICATE_STATUS = ("Accepted", "NotFound")
LOG_STATUS = ("Accepted", "Rejected", "AcceptedCanceled")
CERTIFICATE_STATUS = ("Accepted", "Failed", "Rejected")
UPDATE_FIRMWARE_STATUS = ("Accepted", "Rejected", "AcceptedCanceled", "InvalidCertificate",
                          "RevokedCertificate")


def _meter_value(units: tuple[str, ...], min_sampled_values: int) -> Object:
    return Object({
        "timestamp": DateTime(required=True),
        "sampledValue": Array(Object({
            "value": String(required=True),
            "context": Enum(READING_CONTEXT),
            "format": Enum(VALUE_FORMAT),
            "measurand": Enum(MEASURAND),
            "phase": Enum(PHASE),
            "location": Enum(LOCATION),
            "unit": Enum(units),
        }), min_items=min_sampled_values, required=True),
    })


def _charging_schedule(required: bool = False) -> Object:
    return Object({
        "duration": Integer(),
        "startSchedule": DateTime(),
        "chargingRateUnit": Enum(CHARGING_RATE_UNIT, required=True),
        "chargingSchedulePeriod": Array(Object({
            "startPeriod": Integer(required=True),
            "limit": Decimal(required=True),
            "numberPhases": Integer(),
        }), required=True),
        "minChargingRate": Decimal(),
    }, required=required)


def _charging_profile(required: bool = False) -> Object:
    return Object({
        "chargingProfileId": Integer(required=True),
        "transactionId": Integer(),
        "stackLevel": Integer(required=True),
        "chargingProfilePurpose": Enum(CHARGING_PROFILE_PURPOSE, required=True),
        "chargingProfileKind": Enum(CHARGING_PROFILE_KIND, required=True),
        "recurrencyKind": Enum(RECURRENCY_KIND),
        "validFrom": DateTime(),
        "validTo": DateTime(),
        "chargingSchedule": _charging_schedule(required=True),
    }, required=required)


def _certificate_hash_data(required: bool = False) -> Object:
    return Object({
        "hashAlgorithm": Enum(HASH_ALGORITHM, required=True),
        "issuerNameHash": String(128, required=True),
        "issuerKeyHash": String(128, required=True),
        "serialNumber": String(40, required=True),
    }, required=required)


def _id_tag_info(required: bool = False) -> Object:
    return Object({
        "expiryDate": DateTime(),
        "parentIdTag": String(20),
        "status": Enum(AUTHORIZATION_STATUS, required=True),
    }, required=required)


def _status(values: tuple[str, ...], **more: Rule) -> dict[str, Rule]:
    """A message whose required ``status`` is one of ``values``, and the ``more`` fields."""
    fields: dict[str, Rule] = {"status": Enum(values, required=True)}
    fields.update(more)
    return fields


# Requests a charger sends (the server answers them with CHARGER_ACTION_HANDLERS).
CHARGER_REQUESTS: dict[str, dict[str, Rule]] = {
    "Authorize": {
        "idTag": String(20, required=True),
    },
    "BootNotification": {
        "chargePointVendor": String(20, required=True),
        "chargePointModel": String(20, required=True),
        "chargePointSerialNumber": String(25),
        "chargeBoxSerialNumber": String(25),
        "firmwareVersion": String(50),
        "iccid": String(20),
        "imsi": String(20),
        "meterType": String(25),
        "meterSerialNumber": String(25),
    },
    "DataTransfer": {
        "vendorId": String(255, required=True),
        "messageId": String(50),
        "data": String(),
    },
    "DiagnosticsStatusNotification": _status(DIAGNOSTICS_STATUS),
    "FirmwareStatusNotification": _status(FIRMWARE_STATUS),
    "Heartbeat": {},
    "MeterValues": {
        "connectorId": Integer(required=True),
        "transactionId": Integer(),
        "meterValue": Array(_meter_value(UNIT_OF_MEASURE, 1), min_items=1, required=True),
    },
    "StartTransaction": {
        "connectorId": Integer(required=True),
        "idTag": String(20, required=True),
        "meterStart": Integer(required=True),
        "reservationId": Integer(),
        "timestamp": DateTime(required=True),
    },
    "StatusNotification": {
        "connectorId": Integer(required=True),
        "errorCode": Enum(CHARGE_POINT_ERROR_CODE, required=True),
        "info": String(50),
        "status": Enum(CHARGE_POINT_STATUS, required=True),
        "timestamp": DateTime(),
        "vendorId": String(255),
        "vendorErrorCode": String(50),
    },
    "StopTransaction": {
        "idTag": String(20),
        "meterStop": Integer(required=True),
        "timestamp": DateTime(required=True),
        "transactionId": Integer(required=True),
        "reason": Enum(STOP_REASON),
        "transactionData": Array(_meter_value(UNIT_OF_MEASURE_NO_HERTZ, 0)),
    },
    # OCPP 1.6 security whitepaper
    "SecurityEventNotification": {
        "type": String(50, required=True),
        "timestamp": DateTime(required=True),
        "techInfo": String(255),
    },
    "SignCertificate": {
        "csr": String(5500, required=True),
    },
    "LogStatusNotification": _status(UPLOAD_LOG_STATUS, requestId=Integer()),
    "SignedFirmwareStatusNotification": _status(SIGNED_FIRMWARE_STATUS, requestId=Integer()),
}

# Requests the server sends (console commands build them; see SERVER_ACTION_DEFAULTS).
SERVER_REQUESTS: dict[str, dict[str, Rule]] = {
    "CancelReservation": {
        "reservationId": Integer(required=True),
    },
    "ChangeAvailability": {
        "connectorId": Integer(required=True),
        "type": Enum(AVAILABILITY_TYPE, required=True),
    },
    "ChangeConfiguration": {
        "key": String(50, required=True),
        "value": String(500, required=True),
    },
    "ClearCache": {},
    "ClearChargingProfile": {
        "id": Integer(),
        "connectorId": Integer(),
        "chargingProfilePurpose": Enum(CHARGING_PROFILE_PURPOSE),
        "stackLevel": Integer(),
    },
    "DataTransfer": {
        "vendorId": String(255, required=True),
        "messageId": String(50),
        "data": String(),
    },
    "GetCompositeSchedule": {
        "connectorId": Integer(required=True),
        "duration": Integer(required=True),
        "chargingRateUnit": Enum(CHARGING_RATE_UNIT),
    },
    "GetConfiguration": {
        "key": Array(String(50)),
    },
    "GetDiagnostics": {
        "location": String(required=True),
        "retries": Integer(),
        "retryInterval": Integer(),
        "startTime": DateTime(),
        "stopTime": DateTime(),
    },
    "GetLocalListVersion": {},
    "RemoteStartTransaction": {
        "connectorId": Integer(),
        "idTag": String(20, required=True),
        "chargingProfile": _charging_profile(),
    },
    "RemoteStopTransaction": {
        "transactionId": Integer(required=True),
    },
    "ReserveNow": {
        "connectorId": Integer(required=True),
        "expiryDate": DateTime(required=True),
        "idTag": String(20, required=True),
        "parentIdTag": String(20),
        "reservationId": Integer(required=True),
    },
    "Reset": {
        "type": Enum(RESET_TYPE, required=True),
    },
    "SendLocalList": {
        "listVersion": Integer(required=True),
        "localAuthorizationList": Array(Object({
            "idTag": String(20, required=True),
            "idTagInfo": _id_tag_info(),
        })),
        "updateType": Enum(UPDATE_TYPE, required=True),
    },
    "SetChargingProfile": {
        "connectorId": Integer(required=True),
        "csChargingProfiles": _charging_profile(required=True),
    },
    "TriggerMessage": {
        "requestedMessage": Enum(MESSAGE_TRIGGER, required=True),
        "connectorId": Integer(),
    },
    "UnlockConnector": {
        "connectorId": Integer(required=True),
    },
    "UpdateFirmware": {
        "location": String(required=True),
        "retries": Integer(),
        "retrieveDate": DateTime(required=True),
        "retryInterval": Integer(),
    },
    # The OCPP 1.6 security whitepaper's.
    "CertificateSigned": {
        "certificateChain": String(10000, required=True),
    },
    "DeleteCertificate": {
        "certificateHashData": _certificate_hash_data(required=True),
    },
    "ExtendedTriggerMessage": {
        "requestedMessage": Enum(EXTENDED_MESSAGE_TRIGGER, required=True),
        "connectorId": Integer(),
    },
    "GetInstalledCertificateIds": {
        "certificateType": Enum(CERTIFICATE_USE, required=True),
    },
    "GetLog": {
        "log": Object({
            "remoteLocation": String(512, required=True),
            "oldestTimestamp": DateTime(),
            "latestTimestamp": DateTime(),
        }, required=True),
        "logType": Enum(LOG_TYPE, required=True),
        "requestId": Integer(required=True),
        "retries": Integer(),
        "retryInterval": Integer(),
    },
    "InstallCertificate": {
        "certificateType": Enum(CERTIFICATE_USE, required=True),
        "certificate": String(5500, required=True),
    },
    "SignedUpdateFirmware": {
        "retries": Integer(),
        "retryInterval": Integer(),
        "requestId": Integer(required=True),
        "firmware": Object({
            "location": String(512, required=True),
            "retrieveDateTime": DateTime(required=True),
            "installDateTime": DateTime(),
            "signingCertificate": String(5500, required=True),
            "signature": String(800, required=True),
        }, required=True),
    },
}

# What a charger answers to each server request.
CHARGER_REPLIES: dict[str, dict[str, Rule]] = {
    "CancelReservation": _status(ACCEPTED_REJECTED),
    "ChangeAvailability": _status(AVAILABILITY_STATUS),
    "ChangeConfiguration": _status(CONFIGURATION_STATUS),
    "ClearCache": _status(ACCEPTED_REJECTED),
    "ClearChargingProfile": _status(CLEAR_CHARGING_PROFILE_STATUS),
    "DataTransfer": _status(DATA_TRANSFER_STATUS, data=String()),
    "GetCompositeSchedule": _status(ACCEPTED_REJECTED, connectorId=Integer(),
                                    scheduleStart=DateTime(),
                                    chargingSchedule=_charging_schedule()),
    "GetConfiguration": {
        "configurationKey": Array(Object({
            "key": String(50, required=True),
            "readonly": Boolean(required=True),
            "value": String(500),
        })),
        "unknownKey": Array(String(50)),
    },
    "GetDiagnostics": {
        "fileName": String(255),
    },
    "GetLocalListVersion": {
        "listVersion": Integer(required=True),
    },
    "RemoteStartTransaction": _status(ACCEPTED_REJECTED),
    "RemoteStopTransaction": _status(ACCEPTED_REJECTED),
    "ReserveNow": _status(RESERVATION_STATUS),
    "Reset": _status(ACCEPTED_REJECTED),
    "SendLocalList": _status(UPDATE_STATUS),
    "SetChargingProfile": _status(ACCEPTED_REJECTED_NOT_SUPPORTED),
    "TriggerMessage": _status(TRIGGER_MESSAGE_STATUS),
    "UnlockConnector": _status(UNLOCK_STATUS),
    "UpdateFirmware": {},
    "CertificateSigned": _status(ACCEPTED_REJECTED),
    "DeleteCertificate": _status(DELETE_CERTIFICATE_STATUS),
    "ExtendedTriggerMessage": _status(TRIGGER_MESSAGE_STATUS),
    "GetInstalledCertificateIds": {
        "certificateHashData": Array(_certificate_hash_data(), min_items=1),
        "status": Enum(GET_INSTALLED_CERTIFICATE_STATUS, required=True),
    },
    "GetLog": {
        "status": Enum(LOG_STATUS, required=True),
        "filename": String(255),
    },
    "InstallCertificate": _status(CERTIFICATE_STATUS),
    "SignedUpdateFirmware": _status(UPDATE_FIRMWARE_STATUS),
}


# -------------------------------------------------- OCPP 2.0.1 field rules
# Generated by scripts/ocpp201_tables.py from the official OCPP 2.0.1 JSON schemas;
# do not edit by hand: change the script, run it and paste its output here.
# An object type's rules are built once (functools.cache) and shared: rules do not
# change once built.

V201_APN_AUTHENTICATION = ("CHAP", "NONE", "PAP", "AUTO")
V201_ATTRIBUTE = ("Actual", "Target", "MinSet", "MaxSet")
V201_AUTHORIZATION_STATUS = ("Accepted", "Blocked", "ConcurrentTx", "Expired", "Invalid",
                             "NoCredit", "NotAllowedTypeEVSE", "NotAtThisLocation", "NotAtThisTime",
                             "Unknown")
V201_BOOT_REASON = ("ApplicationReset", "FirmwareUpdate", "LocalReset", "PowerUp", "RemoteReset",
                    "ScheduledReset", "Triggered", "Unknown", "Watchdog")
V201_CANCEL_RESERVATION_STATUS = ("Accepted", "Rejected")
V201_CERTIFICATE_ACTION = ("Install", "Update")
V201_CERTIFICATE_SIGNED_STATUS = ("Accepted", "Rejected")
V201_CERTIFICATE_SIGNING_USE = ("ChargingStationCertificate", "V2GCertificate")
V201_CHANGE_AVAILABILITY_STATUS = ("Accepted", "Rejected", "Scheduled")
V201_CHARGING_LIMIT_SOURCE = ("EMS", "Other", "SO", "CSO")
V201_CHARGING_PROFILE_KIND = ("Absolute", "Recurring", "Relative")
V201_CHARGING_PROFILE_PURPOSE = ("ChargingStationExternalConstraints", "ChargingStationMaxProfile",
                                 "TxDefaultProfile", "TxProfile")
V201_CHARGING_PROFILE_STATUS = ("Accepted", "Rejected")
V201_CHARGING_RATE_UNIT = ("W", "A")
V201_CHARGING_STATE = ("Charging", "EVConnected", "SuspendedEV", "SuspendedEVSE", "Idle")
V201_CLEAR_CACHE_STATUS = ("Accepted", "Rejected")
V201_CLEAR_CHARGING_PROFILE_STATUS = ("Accepted", "Unknown")
V201_CLEAR_MESSAGE_STATUS = ("Accepted", "Unknown")
V201_CLEAR_MONITORING_STATUS = ("Accepted", "Rejected", "NotFound")
V201_COMPONENT_CRITERION = ("Active", "Available", "Enabled", "Problem")
V201_CONNECTOR = ("cCCS1", "cCCS2", "cG105", "cTesla", "cType1", "cType2", "s309-1P-16A",
                  "s309-1P-32A", "s309-3P-16A", "s309-3P-32A", "sBS1361", "sCEE-7-7", "sType2",
                  "sType3", "Other1PhMax16A", "Other1PhOver16A", "Other3Ph", "Pan", "wInductive",
                  "wResonant", "Undetermined", "Unknown")
V201_CONNECTOR_STATUS = ("Available", "Occupied", "Reserved", "Unavailable", "Faulted")
V201_COST_KIND = ("CarbonDioxideEmission", "RelativePricePercentage",
                  "RenewableGenerationPercentage")
V201_CUSTOMER_INFORMATION_STATUS = ("Accepted", "Rejected", "Invalid")
V201_DATA = ("string", "decimal", "integer", "dateTime", "boolean", "OptionList", "SequenceList",
             "MemberList")
V201_DATA_TRANSFER_STATUS = ("Accepted", "Rejected", "UnknownMessageId", "UnknownVendorId")
V201_DELETE_CERTIFICATE_STATUS = ("Accepted", "Failed", "NotFound")
V201_DISPLAY_MESSAGE_STATUS = ("Accepted", "NotSupportedMessageFormat", "Rejected",
                               "NotSupportedPriority", "NotSupportedState", "UnknownTransaction")
V201_ENERGY_TRANSFER_MODE = ("DC", "AC_single_phase", "AC_two_phase", "AC_three_phase")
V201_EVENT_NOTIFICATION = ("HardWiredNotification", "HardWiredMonitor", "PreconfiguredMonitor",
                           "CustomMonitor")
V201_EVENT_TRIGGER = ("Alerting", "Delta", "Periodic")
V201_FIRMWARE_STATUS = ("Downloaded", "DownloadFailed", "Downloading", "DownloadScheduled",
                        "DownloadPaused", "Idle", "InstallationFailed", "Installing", "Installed",
                        "InstallRebooting", "InstallScheduled", "InstallVerificationFailed",
                        "InvalidSignature", "SignatureVerified")
V201_GENERIC_DEVICE_MODEL_STATUS = ("Accepted", "Rejected", "NotSupported", "EmptyResultSet")
V201_GENERIC_STATUS = ("Accepted", "Rejected")
V201_GET_CERTIFICATE_ID_USE = ("V2GRootCertificate", "MORootCertificate", "CSMSRootCertificate",
                               "V2GCertificateChain", "ManufacturerRootCertificate")
V201_GET_CHARGING_PROFILE_STATUS = ("Accepted", "NoProfiles")
V201_GET_DISPLAY_MESSAGES_STATUS = ("Accepted", "Unknown")
V201_GET_INSTALLED_CERTIFICATE_STATUS = ("Accepted", "NotFound")
V201_GET_VARIABLE_STATUS = ("Accepted", "Rejected", "UnknownComponent", "UnknownVariable",
                            "NotSupportedAttributeType")
V201_HASH_ALGORITHM = ("SHA256", "SHA384", "SHA512")
V201_ID_TOKEN = ("Central", "eMAID", "ISO14443", "ISO15693", "KeyCode", "Local", "MacAddress",
                 "NoAuthorization")
V201_INSTALL_CERTIFICATE_STATUS = ("Accepted", "Rejected", "Failed")
V201_INSTALL_CERTIFICATE_USE = ("V2GRootCertificate", "MORootCertificate", "CSMSRootCertificate",
                                "ManufacturerRootCertificate")
V201_LOCATION = ("Body", "Cable", "EV", "Inlet", "Outlet")
V201_LOG = ("DiagnosticsLog", "SecurityLog")
V201_LOG_STATUS = ("Accepted", "Rejected", "AcceptedCanceled")
V201_MEASURAND = ("Current.Export", "Current.Import", "Current.Offered",
                  "Energy.Active.Export.Register", "Energy.Active.Import.Register",
                  "Energy.Reactive.Export.Register", "Energy.Reactive.Import.Register",
                  "Energy.Active.Export.Interval", "Energy.Active.Import.Interval",
                  "Energy.Active.Net", "Energy.Reactive.Export.Interval",
                  "Energy.Reactive.Import.Interval", "Energy.Reactive.Net", "Energy.Apparent.Net",
                  "Energy.Apparent.Import", "Energy.Apparent.Export", "Frequency",
                  "Power.Active.Export", "Power.Active.Import", "Power.Factor", "Power.Offered",
                  "Power.Reactive.Export", "Power.Reactive.Import", "SoC", "Voltage")
V201_MESSAGE_FORMAT = ("ASCII", "HTML", "URI", "UTF8")
V201_MESSAGE_PRIORITY = ("AlwaysFront", "InFront", "NormalCycle")
V201_MESSAGE_STATE = ("Charging", "Faulted", "Idle", "Unavailable")
V201_MESSAGE_TRIGGER = ("BootNotification", "LogStatusNotification", "FirmwareStatusNotification",
                        "Heartbeat", "MeterValues", "SignChargingStationCertificate",
                        "SignV2GCertificate", "StatusNotification", "TransactionEvent",
                        "SignCombinedCertificate", "PublishFirmwareStatusNotification")
V201_MONITOR = ("UpperThreshold", "LowerThreshold", "Delta", "Periodic", "PeriodicClockAligned")
V201_MONITORING_BASE = ("All", "FactoryDefault", "HardWiredOnly")
V201_MONITORING_CRITERION = ("ThresholdMonitoring", "DeltaMonitoring", "PeriodicMonitoring")
V201_MUTABILITY = ("ReadOnly", "WriteOnly", "ReadWrite")
V201_OCPP_INTERFACE = ("Wired0", "Wired1", "Wired2", "Wired3", "Wireless0", "Wireless1",
                       "Wireless2", "Wireless3")
V201_OCPP_TRANSPORT = ("JSON", "SOAP")
V201_OCPP_VERSION = ("OCPP12", "OCPP15", "OCPP16", "OCPP20")
V201_OPERATIONAL_STATUS = ("Inoperative", "Operative")
V201_PHASE = ("L1", "L2", "L3", "N", "L1-N", "L2-N", "L3-N", "L1-L2", "L2-L3", "L3-L1")
V201_PUBLISH_FIRMWARE_STATUS = ("Idle", "DownloadScheduled", "Downloading", "Downloaded",
                                "Published", "DownloadFailed", "DownloadPaused", "InvalidChecksum",
                                "ChecksumVerified", "PublishFailed")
V201_READING_CONTEXT = ("Interruption.Begin", "Interruption.End", "Other", "Sample.Clock",
                        "Sample.Periodic", "Transaction.Begin", "Transaction.End", "Trigger")
V201_REASON = ("DeAuthorized", "EmergencyStop", "EnergyLimitReached", "EVDisconnected",
               "GroundFault", "ImmediateReset", "Local", "LocalOutOfCredit", "MasterPass", "Other",
               "OvercurrentFault", "PowerLoss", "PowerQuality", "Reboot", "Remote",
               "SOCLimitReached", "StoppedByEV", "TimeLimitReached", "Timeout")
V201_RECURRENCY_KIND = ("Daily", "Weekly")
V201_REPORT_BASE = ("ConfigurationInventory", "FullInventory", "SummaryInventory")
V201_REQUEST_START_STOP_STATUS = ("Accepted", "Rejected")
V201_RESERVATION_UPDATE_STATUS = ("Expired", "Removed")
V201_RESERVE_NOW_STATUS = ("Accepted", "Faulted", "Occupied", "Rejected", "Unavailable")
V201_RESET = ("Immediate", "OnIdle")
V201_RESET_STATUS = ("Accepted", "Rejected", "Scheduled")
V201_SEND_LOCAL_LIST_STATUS = ("Accepted", "Failed", "VersionMismatch")
V201_SET_MONITORING_STATUS = ("Accepted", "UnknownComponent", "UnknownVariable",
                              "UnsupportedMonitorType", "Rejected", "Duplicate")
V201_SET_NETWORK_PROFILE_STATUS = ("Accepted", "Rejected", "Failed")
V201_SET_VARIABLE_STATUS = ("Accepted", "Rejected", "UnknownComponent", "UnknownVariable",
                            "NotSupportedAttributeType", "RebootRequired")
V201_TRANSACTION_EVENT = ("Ended", "Started", "Updated")
V201_TRIGGER_MESSAGE_STATUS = ("Accepted", "Rejected", "NotImplemented")
V201_TRIGGER_REASON = ("Authorized", "CablePluggedIn", "ChargingRateChanged",
                       "ChargingStateChanged", "Deauthorized", "EnergyLimitReached",
                       "EVCommunicationLost", "EVConnectTimeout", "MeterValueClock",
                       "MeterValuePeriodic", "TimeLimitReached", "Trigger", "UnlockCommand",
                       "StopAuthorized", "EVDeparted", "EVDetected", "RemoteStop", "RemoteStart",
                       "AbnormalCondition", "SignedDataReceived", "ResetCommand")
V201_UNLOCK_STATUS = ("Unlocked", "UnlockFailed", "OngoingAuthorizedTransaction",
                      "UnknownConnector")
V201_UNPUBLISH_FIRMWARE_STATUS = ("DownloadOngoing", "NoFirmware", "Unpublished")
V201_UPDATE = ("Differential", "Full")
V201_UPDATE_FIRMWARE_STATUS = ("Accepted", "Rejected", "AcceptedCanceled", "InvalidCertificate",
                               "RevokedCertificate")
V201_UPLOAD_LOG_STATUS = ("BadMessage", "Idle", "NotSupportedOperation", "PermissionDenied",
                          "Uploaded", "UploadFailure", "Uploading", "AcceptedCanceled")
V201_VPN = ("IKEv2", "IPSec", "L2TP", "PPTP")


@functools.cache
def _v201_ac_charging_parameters(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "energyAmount": Integer(required=True),
        "evMinCurrent": Integer(required=True),
        "evMaxCurrent": Integer(required=True),
        "evMaxVoltage": Integer(required=True),
    }, required=required)


@functools.cache
def _v201_apn(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "apn": String(512, required=True),
        "apnUserName": String(20),
        "apnPassword": String(20),
        "simPin": Integer(),
        "preferredNetwork": String(6),
        "useOnlyPreferredNetwork": Boolean(),
        "apnAuthentication": Enum(V201_APN_AUTHENTICATION, required=True),
    }, required=required)


@functools.cache
def _v201_additional_info(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "additionalIdToken": String(36, required=True),
        "type": String(50, required=True),
    }, required=required)


@functools.cache
def _v201_authorization_data(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "idToken": _v201_id_token(required=True),
        "idTokenInfo": _v201_id_token_info(),
    }, required=required)


@functools.cache
def _v201_certificate_hash_data_chain(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "certificateHashData": _v201_certificate_hash_data(required=True),
        "certificateType": Enum(V201_GET_CERTIFICATE_ID_USE, required=True),
        "childCertificateHashData": Array(_v201_certificate_hash_data(), min_items=1, max_items=4),
    }, required=required)


@functools.cache
def _v201_certificate_hash_data(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "hashAlgorithm": Enum(V201_HASH_ALGORITHM, required=True),
        "issuerNameHash": String(128, required=True),
        "issuerKeyHash": String(128, required=True),
        "serialNumber": String(40, required=True),
    }, required=required)


@functools.cache
def _v201_charging_limit(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "chargingLimitSource": Enum(V201_CHARGING_LIMIT_SOURCE, required=True),
        "isGridCritical": Boolean(),
    }, required=required)


@functools.cache
def _v201_charging_needs(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "acChargingParameters": _v201_ac_charging_parameters(),
        "dcChargingParameters": _v201_dc_charging_parameters(),
        "requestedEnergyTransfer": Enum(V201_ENERGY_TRANSFER_MODE, required=True),
        "departureTime": DateTime(),
    }, required=required)


@functools.cache
def _v201_charging_profile_criterion(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "chargingProfilePurpose": Enum(V201_CHARGING_PROFILE_PURPOSE),
        "stackLevel": Integer(),
        "chargingProfileId": Array(Integer(), min_items=1),
        "chargingLimitSource": Array(Enum(V201_CHARGING_LIMIT_SOURCE), min_items=1, max_items=4),
    }, required=required)


@functools.cache
def _v201_charging_profile(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "id": Integer(required=True),
        "stackLevel": Integer(required=True),
        "chargingProfilePurpose": Enum(V201_CHARGING_PROFILE_PURPOSE, required=True),
        "chargingProfileKind": Enum(V201_CHARGING_PROFILE_KIND, required=True),
        "recurrencyKind": Enum(V201_RECURRENCY_KIND),
        "validFrom": DateTime(),
        "validTo": DateTime(),
        "chargingSchedule": Array(_v201_charging_schedule(), min_items=1, max_items=3,
                                  required=True),
        "transactionId": String(36),
    }, required=required)


@functools.cache
def _v201_charging_schedule_period(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "startPeriod": Integer(required=True),
        "limit": Decimal(required=True),
        "numberPhases": Integer(),
        "phaseToUse": Integer(),
    }, required=required)


@functools.cache
def _v201_charging_schedule(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "id": Integer(required=True),
        "startSchedule": DateTime(),
        "duration": Integer(),
        "chargingRateUnit": Enum(V201_CHARGING_RATE_UNIT, required=True),
        "chargingSchedulePeriod": Array(_v201_charging_schedule_period(), min_items=1,
                                        max_items=1024, required=True),
        "minChargingRate": Decimal(),
        "salesTariff": _v201_sales_tariff(),
    }, required=required)


@functools.cache
def _v201_charging_station(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "serialNumber": String(25),
        "model": String(20, required=True),
        "modem": _v201_modem(),
        "vendorName": String(50, required=True),
        "firmwareVersion": String(50),
    }, required=required)


@functools.cache
def _v201_clear_charging_profile(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "evseId": Integer(),
        "chargingProfilePurpose": Enum(V201_CHARGING_PROFILE_PURPOSE),
        "stackLevel": Integer(),
    }, required=required)


@functools.cache
def _v201_clear_monitoring_result(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "status": Enum(V201_CLEAR_MONITORING_STATUS, required=True),
        "id": Integer(required=True),
        "statusInfo": _v201_status_info(),
    }, required=required)


@functools.cache
def _v201_component(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "evse": _v201_evse(),
        "name": String(50, required=True),
        "instance": String(50),
    }, required=required)


@functools.cache
def _v201_component_variable(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "component": _v201_component(required=True),
        "variable": _v201_variable(),
    }, required=required)


@functools.cache
def _v201_composite_schedule(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "chargingSchedulePeriod": Array(_v201_charging_schedule_period(), min_items=1,
                                        required=True),
        "evseId": Integer(required=True),
        "duration": Integer(required=True),
        "scheduleStart": DateTime(required=True),
        "chargingRateUnit": Enum(V201_CHARGING_RATE_UNIT, required=True),
    }, required=required)


@functools.cache
def _v201_consumption_cost(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "startValue": Decimal(required=True),
        "cost": Array(_v201_cost(), min_items=1, max_items=3, required=True),
    }, required=required)


@functools.cache
def _v201_cost(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "costKind": Enum(V201_COST_KIND, required=True),
        "amount": Integer(required=True),
        "amountMultiplier": Integer(),
    }, required=required)


@functools.cache
def _v201_custom_data(required: bool = False) -> Object:
    return OpenObject({
        "vendorId": String(255, required=True),
    }, required=required)


@functools.cache
def _v201_dc_charging_parameters(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "evMaxCurrent": Integer(required=True),
        "evMaxVoltage": Integer(required=True),
        "energyAmount": Integer(),
        "evMaxPower": Integer(),
        "stateOfCharge": BoundedInteger(minimum=0, maximum=100),
        "evEnergyCapacity": Integer(),
        "fullSoC": BoundedInteger(minimum=0, maximum=100),
        "bulkSoC": BoundedInteger(minimum=0, maximum=100),
    }, required=required)


@functools.cache
def _v201_evse(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "id": Integer(required=True),
        "connectorId": Integer(),
    }, required=required)


@functools.cache
def _v201_event_data(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "eventId": Integer(required=True),
        "timestamp": DateTime(required=True),
        "trigger": Enum(V201_EVENT_TRIGGER, required=True),
        "cause": Integer(),
        "actualValue": String(2500, required=True),
        "techCode": String(50),
        "techInfo": String(500),
        "cleared": Boolean(),
        "transactionId": String(36),
        "component": _v201_component(required=True),
        "variableMonitoringId": Integer(),
        "eventNotificationType": Enum(V201_EVENT_NOTIFICATION, required=True),
        "variable": _v201_variable(required=True),
    }, required=required)


@functools.cache
def _v201_firmware(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "location": String(512, required=True),
        "retrieveDateTime": DateTime(required=True),
        "installDateTime": DateTime(),
        "signingCertificate": String(5500),
        "signature": String(800),
    }, required=required)


@functools.cache
def _v201_get_variable_data(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "attributeType": Enum(V201_ATTRIBUTE),
        "component": _v201_component(required=True),
        "variable": _v201_variable(required=True),
    }, required=required)


@functools.cache
def _v201_get_variable_result(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "attributeStatusInfo": _v201_status_info(),
        "attributeStatus": Enum(V201_GET_VARIABLE_STATUS, required=True),
        "attributeType": Enum(V201_ATTRIBUTE),
        "attributeValue": String(2500),
        "component": _v201_component(required=True),
        "variable": _v201_variable(required=True),
    }, required=required)


@functools.cache
def _v201_id_token_info(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "status": Enum(V201_AUTHORIZATION_STATUS, required=True),
        "cacheExpiryDateTime": DateTime(),
        "chargingPriority": Integer(),
        "language1": String(8),
        "evseId": Array(Integer(), min_items=1),
        "groupIdToken": _v201_id_token(),
        "language2": String(8),
        "personalMessage": _v201_message_content(),
    }, required=required)


@functools.cache
def _v201_id_token(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "additionalInfo": Array(_v201_additional_info(), min_items=1),
        "idToken": String(36, required=True),
        "type": Enum(V201_ID_TOKEN, required=True),
    }, required=required)


@functools.cache
def _v201_log_parameters(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "remoteLocation": String(512, required=True),
        "oldestTimestamp": DateTime(),
        "latestTimestamp": DateTime(),
    }, required=required)


@functools.cache
def _v201_message_content(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "format": Enum(V201_MESSAGE_FORMAT, required=True),
        "language": String(8),
        "content": String(512, required=True),
    }, required=required)


@functools.cache
def _v201_message_info(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "display": _v201_component(),
        "id": Integer(required=True),
        "priority": Enum(V201_MESSAGE_PRIORITY, required=True),
        "state": Enum(V201_MESSAGE_STATE),
        "startDateTime": DateTime(),
        "endDateTime": DateTime(),
        "transactionId": String(36),
        "message": _v201_message_content(required=True),
    }, required=required)


@functools.cache
def _v201_meter_value(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "sampledValue": Array(_v201_sampled_value(), min_items=1, required=True),
        "timestamp": DateTime(required=True),
    }, required=required)


@functools.cache
def _v201_modem(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "iccid": String(20),
        "imsi": String(20),
    }, required=required)


@functools.cache
def _v201_monitoring_data(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "component": _v201_component(required=True),
        "variable": _v201_variable(required=True),
        "variableMonitoring": Array(_v201_variable_monitoring(), min_items=1, required=True),
    }, required=required)


@functools.cache
def _v201_network_connection_profile(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "apn": _v201_apn(),
        "ocppVersion": Enum(V201_OCPP_VERSION, required=True),
        "ocppTransport": Enum(V201_OCPP_TRANSPORT, required=True),
        "ocppCsmsUrl": String(512, required=True),
        "messageTimeout": Integer(required=True),
        "securityProfile": Integer(required=True),
        "ocppInterface": Enum(V201_OCPP_INTERFACE, required=True),
        "vpn": _v201_vpn(),
    }, required=required)


@functools.cache
def _v201_ocsp_request_data(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "hashAlgorithm": Enum(V201_HASH_ALGORITHM, required=True),
        "issuerNameHash": String(128, required=True),
        "issuerKeyHash": String(128, required=True),
        "serialNumber": String(40, required=True),
        "responderURL": String(512, required=True),
    }, required=required)


@functools.cache
def _v201_relative_time_interval(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "start": Integer(required=True),
        "duration": Integer(),
    }, required=required)


@functools.cache
def _v201_report_data(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "component": _v201_component(required=True),
        "variable": _v201_variable(required=True),
        "variableAttribute": Array(_v201_variable_attribute(), min_items=1, max_items=4,
                                   required=True),
        "variableCharacteristics": _v201_variable_characteristics(),
    }, required=required)


@functools.cache
def _v201_sales_tariff_entry(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "relativeTimeInterval": _v201_relative_time_interval(required=True),
        "ePriceLevel": BoundedInteger(minimum=0),
        "consumptionCost": Array(_v201_consumption_cost(), min_items=1, max_items=3),
    }, required=required)


@functools.cache
def _v201_sales_tariff(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "id": Integer(required=True),
        "salesTariffDescription": String(32),
        "numEPriceLevels": Integer(),
        "salesTariffEntry": Array(_v201_sales_tariff_entry(), min_items=1, max_items=1024,
                                  required=True),
    }, required=required)


@functools.cache
def _v201_sampled_value(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "value": Decimal(required=True),
        "context": Enum(V201_READING_CONTEXT),
        "measurand": Enum(V201_MEASURAND),
        "phase": Enum(V201_PHASE),
        "location": Enum(V201_LOCATION),
        "signedMeterValue": _v201_signed_meter_value(),
        "unitOfMeasure": _v201_unit_of_measure(),
    }, required=required)


@functools.cache
def _v201_set_monitoring_data(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "id": Integer(),
        "transaction": Boolean(),
        "value": Decimal(required=True),
        "type": Enum(V201_MONITOR, required=True),
        "severity": Integer(required=True),
        "component": _v201_component(required=True),
        "variable": _v201_variable(required=True),
    }, required=required)


@functools.cache
def _v201_set_monitoring_result(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "id": Integer(),
        "statusInfo": _v201_status_info(),
        "status": Enum(V201_SET_MONITORING_STATUS, required=True),
        "type": Enum(V201_MONITOR, required=True),
        "component": _v201_component(required=True),
        "variable": _v201_variable(required=True),
        "severity": Integer(required=True),
    }, required=required)


@functools.cache
def _v201_set_variable_data(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "attributeType": Enum(V201_ATTRIBUTE),
        "attributeValue": String(1000, required=True),
        "component": _v201_component(required=True),
        "variable": _v201_variable(required=True),
    }, required=required)


@functools.cache
def _v201_set_variable_result(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "attributeType": Enum(V201_ATTRIBUTE),
        "attributeStatus": Enum(V201_SET_VARIABLE_STATUS, required=True),
        "attributeStatusInfo": _v201_status_info(),
        "component": _v201_component(required=True),
        "variable": _v201_variable(required=True),
    }, required=required)


@functools.cache
def _v201_signed_meter_value(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "signedMeterData": String(2500, required=True),
        "signingMethod": String(50, required=True),
        "encodingMethod": String(50, required=True),
        "publicKey": String(2500, required=True),
    }, required=required)


@functools.cache
def _v201_status_info(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "reasonCode": String(20, required=True),
        "additionalInfo": String(512),
    }, required=required)


@functools.cache
def _v201_transaction(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "transactionId": String(36, required=True),
        "chargingState": Enum(V201_CHARGING_STATE),
        "timeSpentCharging": Integer(),
        "stoppedReason": Enum(V201_REASON),
        "remoteStartId": Integer(),
    }, required=required)


@functools.cache
def _v201_unit_of_measure(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "unit": String(20),
        "multiplier": Integer(),
    }, required=required)


@functools.cache
def _v201_vpn(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "server": String(512, required=True),
        "user": String(20, required=True),
        "group": String(20),
        "password": String(20, required=True),
        "key": String(255, required=True),
        "type": Enum(V201_VPN, required=True),
    }, required=required)


@functools.cache
def _v201_variable_attribute(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "type": Enum(V201_ATTRIBUTE),
        "value": String(2500),
        "mutability": Enum(V201_MUTABILITY),
        "persistent": Boolean(),
        "constant": Boolean(),
    }, required=required)


@functools.cache
def _v201_variable_characteristics(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "unit": String(16),
        "dataType": Enum(V201_DATA, required=True),
        "minLimit": Decimal(),
        "maxLimit": Decimal(),
        "valuesList": String(1000),
        "supportsMonitoring": Boolean(required=True),
    }, required=required)


@functools.cache
def _v201_variable_monitoring(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "id": Integer(required=True),
        "transaction": Boolean(required=True),
        "value": Decimal(required=True),
        "type": Enum(V201_MONITOR, required=True),
        "severity": Integer(required=True),
    }, required=required)


@functools.cache
def _v201_variable(required: bool = False) -> Object:
    return Object({
        "customData": _v201_custom_data(),
        "name": String(50, required=True),
        "instance": String(50),
    }, required=required)


# Requests a 2.0.1 charging station sends.
V201_CHARGER_REQUESTS: dict[str, dict[str, Rule]] = {
    "Authorize": {
        "customData": _v201_custom_data(),
        "idToken": _v201_id_token(required=True),
        "certificate": String(5500),
        "iso15118CertificateHashData": Array(_v201_ocsp_request_data(), min_items=1, max_items=4),
    },
    "BootNotification": {
        "customData": _v201_custom_data(),
        "chargingStation": _v201_charging_station(required=True),
        "reason": Enum(V201_BOOT_REASON, required=True),
    },
    "ClearedChargingLimit": {
        "customData": _v201_custom_data(),
        "chargingLimitSource": Enum(V201_CHARGING_LIMIT_SOURCE, required=True),
        "evseId": Integer(),
    },
    "DataTransfer": {
        "customData": _v201_custom_data(),
        "messageId": String(50),
        "data": Anything(),
        "vendorId": String(255, required=True),
    },
    "FirmwareStatusNotification": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_FIRMWARE_STATUS, required=True),
        "requestId": Integer(),
    },
    "Get15118EVCertificate": {
        "customData": _v201_custom_data(),
        "iso15118SchemaVersion": String(50, required=True),
        "action": Enum(V201_CERTIFICATE_ACTION, required=True),
        "exiRequest": String(5600, required=True),
    },
    "GetCertificateStatus": {
        "customData": _v201_custom_data(),
        "ocspRequestData": _v201_ocsp_request_data(required=True),
    },
    "Heartbeat": {
        "customData": _v201_custom_data(),
    },
    "LogStatusNotification": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_UPLOAD_LOG_STATUS, required=True),
        "requestId": Integer(),
    },
    "MeterValues": {
        "customData": _v201_custom_data(),
        "evseId": Integer(required=True),
        "meterValue": Array(_v201_meter_value(), min_items=1, required=True),
    },
    "NotifyChargingLimit": {
        "customData": _v201_custom_data(),
        "chargingSchedule": Array(_v201_charging_schedule(), min_items=1),
        "evseId": Integer(),
        "chargingLimit": _v201_charging_limit(required=True),
    },
    "NotifyCustomerInformation": {
        "customData": _v201_custom_data(),
        "data": String(512, required=True),
        "tbc": Boolean(),
        "seqNo": Integer(required=True),
        "generatedAt": DateTime(required=True),
        "requestId": Integer(required=True),
    },
    "NotifyDisplayMessages": {
        "customData": _v201_custom_data(),
        "messageInfo": Array(_v201_message_info(), min_items=1),
        "requestId": Integer(required=True),
        "tbc": Boolean(),
    },
    "NotifyEVChargingNeeds": {
        "customData": _v201_custom_data(),
        "maxScheduleTuples": Integer(),
        "chargingNeeds": _v201_charging_needs(required=True),
        "evseId": Integer(required=True),
    },
    "NotifyEVChargingSchedule": {
        "customData": _v201_custom_data(),
        "timeBase": DateTime(required=True),
        "chargingSchedule": _v201_charging_schedule(required=True),
        "evseId": Integer(required=True),
    },
    "NotifyEvent": {
        "customData": _v201_custom_data(),
        "generatedAt": DateTime(required=True),
        "tbc": Boolean(),
        "seqNo": Integer(required=True),
        "eventData": Array(_v201_event_data(), min_items=1, required=True),
    },
    "NotifyMonitoringReport": {
        "customData": _v201_custom_data(),
        "monitor": Array(_v201_monitoring_data(), min_items=1),
        "requestId": Integer(required=True),
        "tbc": Boolean(),
        "seqNo": Integer(required=True),
        "generatedAt": DateTime(required=True),
    },
    "NotifyReport": {
        "customData": _v201_custom_data(),
        "requestId": Integer(required=True),
        "generatedAt": DateTime(required=True),
        "reportData": Array(_v201_report_data(), min_items=1),
        "tbc": Boolean(),
        "seqNo": Integer(required=True),
    },
    "PublishFirmwareStatusNotification": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_PUBLISH_FIRMWARE_STATUS, required=True),
        "location": Array(String(512), min_items=1),
        "requestId": Integer(),
    },
    "ReportChargingProfiles": {
        "customData": _v201_custom_data(),
        "requestId": Integer(required=True),
        "chargingLimitSource": Enum(V201_CHARGING_LIMIT_SOURCE, required=True),
        "chargingProfile": Array(_v201_charging_profile(), min_items=1, required=True),
        "tbc": Boolean(),
        "evseId": Integer(required=True),
    },
    "ReservationStatusUpdate": {
        "customData": _v201_custom_data(),
        "reservationId": Integer(required=True),
        "reservationUpdateStatus": Enum(V201_RESERVATION_UPDATE_STATUS, required=True),
    },
    "SecurityEventNotification": {
        "customData": _v201_custom_data(),
        "type": String(50, required=True),
        "timestamp": DateTime(required=True),
        "techInfo": String(255),
    },
    "SignCertificate": {
        "customData": _v201_custom_data(),
        "csr": String(5500, required=True),
        "certificateType": Enum(V201_CERTIFICATE_SIGNING_USE),
    },
    "StatusNotification": {
        "customData": _v201_custom_data(),
        "timestamp": DateTime(required=True),
        "connectorStatus": Enum(V201_CONNECTOR_STATUS, required=True),
        "evseId": Integer(required=True),
        "connectorId": Integer(required=True),
    },
    "TransactionEvent": {
        "customData": _v201_custom_data(),
        "eventType": Enum(V201_TRANSACTION_EVENT, required=True),
        "meterValue": Array(_v201_meter_value(), min_items=1),
        "timestamp": DateTime(required=True),
        "triggerReason": Enum(V201_TRIGGER_REASON, required=True),
        "seqNo": Integer(required=True),
        "offline": Boolean(),
        "numberOfPhasesUsed": Integer(),
        "cableMaxCurrent": Integer(),
        "reservationId": Integer(),
        "transactionInfo": _v201_transaction(required=True),
        "evse": _v201_evse(),
        "idToken": _v201_id_token(),
    },
}

# Requests the server sends to a 2.0.1 charging station.
V201_SERVER_REQUESTS: dict[str, dict[str, Rule]] = {
    "CancelReservation": {
        "customData": _v201_custom_data(),
        "reservationId": Integer(required=True),
    },
    "CertificateSigned": {
        "customData": _v201_custom_data(),
        "certificateChain": String(10000, required=True),
        "certificateType": Enum(V201_CERTIFICATE_SIGNING_USE),
    },
    "ChangeAvailability": {
        "customData": _v201_custom_data(),
        "evse": _v201_evse(),
        "operationalStatus": Enum(V201_OPERATIONAL_STATUS, required=True),
    },
    "ClearCache": {
        "customData": _v201_custom_data(),
    },
    "ClearChargingProfile": {
        "customData": _v201_custom_data(),
        "chargingProfileId": Integer(),
        "chargingProfileCriteria": _v201_clear_charging_profile(),
    },
    "ClearDisplayMessage": {
        "customData": _v201_custom_data(),
        "id": Integer(required=True),
    },
    "ClearVariableMonitoring": {
        "customData": _v201_custom_data(),
        "id": Array(Integer(), min_items=1, required=True),
    },
    "CostUpdated": {
        "customData": _v201_custom_data(),
        "totalCost": Decimal(required=True),
        "transactionId": String(36, required=True),
    },
    "CustomerInformation": {
        "customData": _v201_custom_data(),
        "customerCertificate": _v201_certificate_hash_data(),
        "idToken": _v201_id_token(),
        "requestId": Integer(required=True),
        "report": Boolean(required=True),
        "clear": Boolean(required=True),
        "customerIdentifier": String(64),
    },
    "DataTransfer": {
        "customData": _v201_custom_data(),
        "messageId": String(50),
        "data": Anything(),
        "vendorId": String(255, required=True),
    },
    "DeleteCertificate": {
        "customData": _v201_custom_data(),
        "certificateHashData": _v201_certificate_hash_data(required=True),
    },
    "GetBaseReport": {
        "customData": _v201_custom_data(),
        "requestId": Integer(required=True),
        "reportBase": Enum(V201_REPORT_BASE, required=True),
    },
    "GetChargingProfiles": {
        "customData": _v201_custom_data(),
        "requestId": Integer(required=True),
        "evseId": Integer(),
        "chargingProfile": _v201_charging_profile_criterion(required=True),
    },
    "GetCompositeSchedule": {
        "customData": _v201_custom_data(),
        "duration": Integer(required=True),
        "chargingRateUnit": Enum(V201_CHARGING_RATE_UNIT),
        "evseId": Integer(required=True),
    },
    "GetDisplayMessages": {
        "customData": _v201_custom_data(),
        "id": Array(Integer(), min_items=1),
        "requestId": Integer(required=True),
        "priority": Enum(V201_MESSAGE_PRIORITY),
        "state": Enum(V201_MESSAGE_STATE),
    },
    "GetInstalledCertificateIds": {
        "customData": _v201_custom_data(),
        "certificateType": Array(Enum(V201_GET_CERTIFICATE_ID_USE), min_items=1),
    },
    "GetLocalListVersion": {
        "customData": _v201_custom_data(),
    },
    "GetLog": {
        "customData": _v201_custom_data(),
        "log": _v201_log_parameters(required=True),
        "logType": Enum(V201_LOG, required=True),
        "requestId": Integer(required=True),
        "retries": Integer(),
        "retryInterval": Integer(),
    },
    "GetMonitoringReport": {
        "customData": _v201_custom_data(),
        "componentVariable": Array(_v201_component_variable(), min_items=1),
        "requestId": Integer(required=True),
        "monitoringCriteria": Array(Enum(V201_MONITORING_CRITERION), min_items=1, max_items=3),
    },
    "GetReport": {
        "customData": _v201_custom_data(),
        "componentVariable": Array(_v201_component_variable(), min_items=1),
        "requestId": Integer(required=True),
        "componentCriteria": Array(Enum(V201_COMPONENT_CRITERION), min_items=1, max_items=4),
    },
    "GetTransactionStatus": {
        "customData": _v201_custom_data(),
        "transactionId": String(36),
    },
    "GetVariables": {
        "customData": _v201_custom_data(),
        "getVariableData": Array(_v201_get_variable_data(), min_items=1, required=True),
    },
    "InstallCertificate": {
        "customData": _v201_custom_data(),
        "certificateType": Enum(V201_INSTALL_CERTIFICATE_USE, required=True),
        "certificate": String(5500, required=True),
    },
    "PublishFirmware": {
        "customData": _v201_custom_data(),
        "location": String(512, required=True),
        "retries": Integer(),
        "checksum": String(32, required=True),
        "requestId": Integer(required=True),
        "retryInterval": Integer(),
    },
    "RequestStartTransaction": {
        "customData": _v201_custom_data(),
        "evseId": Integer(),
        "groupIdToken": _v201_id_token(),
        "idToken": _v201_id_token(required=True),
        "remoteStartId": Integer(required=True),
        "chargingProfile": _v201_charging_profile(),
    },
    "RequestStopTransaction": {
        "customData": _v201_custom_data(),
        "transactionId": String(36, required=True),
    },
    "ReserveNow": {
        "customData": _v201_custom_data(),
        "id": Integer(required=True),
        "expiryDateTime": DateTime(required=True),
        "connectorType": Enum(V201_CONNECTOR),
        "idToken": _v201_id_token(required=True),
        "evseId": Integer(),
        "groupIdToken": _v201_id_token(),
    },
    "Reset": {
        "customData": _v201_custom_data(),
        "type": Enum(V201_RESET, required=True),
        "evseId": Integer(),
    },
    "SendLocalList": {
        "customData": _v201_custom_data(),
        "localAuthorizationList": Array(_v201_authorization_data(), min_items=1),
        "versionNumber": Integer(required=True),
        "updateType": Enum(V201_UPDATE, required=True),
    },
    "SetChargingProfile": {
        "customData": _v201_custom_data(),
        "evseId": Integer(required=True),
        "chargingProfile": _v201_charging_profile(required=True),
    },
    "SetDisplayMessage": {
        "customData": _v201_custom_data(),
        "message": _v201_message_info(required=True),
    },
    "SetMonitoringBase": {
        "customData": _v201_custom_data(),
        "monitoringBase": Enum(V201_MONITORING_BASE, required=True),
    },
    "SetMonitoringLevel": {
        "customData": _v201_custom_data(),
        "severity": Integer(required=True),
    },
    "SetNetworkProfile": {
        "customData": _v201_custom_data(),
        "configurationSlot": Integer(required=True),
        "connectionData": _v201_network_connection_profile(required=True),
    },
    "SetVariableMonitoring": {
        "customData": _v201_custom_data(),
        "setMonitoringData": Array(_v201_set_monitoring_data(), min_items=1, required=True),
    },
    "SetVariables": {
        "customData": _v201_custom_data(),
        "setVariableData": Array(_v201_set_variable_data(), min_items=1, required=True),
    },
    "TriggerMessage": {
        "customData": _v201_custom_data(),
        "evse": _v201_evse(),
        "requestedMessage": Enum(V201_MESSAGE_TRIGGER, required=True),
    },
    "UnlockConnector": {
        "customData": _v201_custom_data(),
        "evseId": Integer(required=True),
        "connectorId": Integer(required=True),
    },
    "UnpublishFirmware": {
        "customData": _v201_custom_data(),
        "checksum": String(32, required=True),
    },
    "UpdateFirmware": {
        "customData": _v201_custom_data(),
        "retries": Integer(),
        "retryInterval": Integer(),
        "requestId": Integer(required=True),
        "firmware": _v201_firmware(required=True),
    },
}

# What a 2.0.1 charging station answers to each server request.
V201_CHARGER_REPLIES: dict[str, dict[str, Rule]] = {
    "CancelReservation": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_CANCEL_RESERVATION_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
    "CertificateSigned": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_CERTIFICATE_SIGNED_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
    "ChangeAvailability": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_CHANGE_AVAILABILITY_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
    "ClearCache": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_CLEAR_CACHE_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
    "ClearChargingProfile": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_CLEAR_CHARGING_PROFILE_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
    "ClearDisplayMessage": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_CLEAR_MESSAGE_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
    "ClearVariableMonitoring": {
        "customData": _v201_custom_data(),
        "clearMonitoringResult": Array(_v201_clear_monitoring_result(), min_items=1, required=True),
    },
    "CostUpdated": {
        "customData": _v201_custom_data(),
    },
    "CustomerInformation": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_CUSTOMER_INFORMATION_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
    "DataTransfer": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_DATA_TRANSFER_STATUS, required=True),
        "statusInfo": _v201_status_info(),
        "data": Anything(),
    },
    "DeleteCertificate": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_DELETE_CERTIFICATE_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
    "GetBaseReport": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_GENERIC_DEVICE_MODEL_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
    "GetChargingProfiles": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_GET_CHARGING_PROFILE_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
    "GetCompositeSchedule": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_GENERIC_STATUS, required=True),
        "statusInfo": _v201_status_info(),
        "schedule": _v201_composite_schedule(),
    },
    "GetDisplayMessages": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_GET_DISPLAY_MESSAGES_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
    "GetInstalledCertificateIds": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_GET_INSTALLED_CERTIFICATE_STATUS, required=True),
        "statusInfo": _v201_status_info(),
        "certificateHashDataChain": Array(_v201_certificate_hash_data_chain(), min_items=1),
    },
    "GetLocalListVersion": {
        "customData": _v201_custom_data(),
        "versionNumber": Integer(required=True),
    },
    "GetLog": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_LOG_STATUS, required=True),
        "statusInfo": _v201_status_info(),
        "filename": String(255),
    },
    "GetMonitoringReport": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_GENERIC_DEVICE_MODEL_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
    "GetReport": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_GENERIC_DEVICE_MODEL_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
    "GetTransactionStatus": {
        "customData": _v201_custom_data(),
        "ongoingIndicator": Boolean(),
        "messagesInQueue": Boolean(required=True),
    },
    "GetVariables": {
        "customData": _v201_custom_data(),
        "getVariableResult": Array(_v201_get_variable_result(), min_items=1, required=True),
    },
    "InstallCertificate": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_INSTALL_CERTIFICATE_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
    "PublishFirmware": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_GENERIC_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
    "RequestStartTransaction": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_REQUEST_START_STOP_STATUS, required=True),
        "statusInfo": _v201_status_info(),
        "transactionId": String(36),
    },
    "RequestStopTransaction": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_REQUEST_START_STOP_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
    "ReserveNow": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_RESERVE_NOW_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
    "Reset": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_RESET_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
    "SendLocalList": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_SEND_LOCAL_LIST_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
    "SetChargingProfile": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_CHARGING_PROFILE_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
    "SetDisplayMessage": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_DISPLAY_MESSAGE_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
    "SetMonitoringBase": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_GENERIC_DEVICE_MODEL_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
    "SetMonitoringLevel": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_GENERIC_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
    "SetNetworkProfile": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_SET_NETWORK_PROFILE_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
    "SetVariableMonitoring": {
        "customData": _v201_custom_data(),
        "setMonitoringResult": Array(_v201_set_monitoring_result(), min_items=1, required=True),
    },
    "SetVariables": {
        "customData": _v201_custom_data(),
        "setVariableResult": Array(_v201_set_variable_result(), min_items=1, required=True),
    },
    "TriggerMessage": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_TRIGGER_MESSAGE_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
    "UnlockConnector": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_UNLOCK_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
    "UnpublishFirmware": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_UNPUBLISH_FIRMWARE_STATUS, required=True),
    },
    "UpdateFirmware": {
        "customData": _v201_custom_data(),
        "status": Enum(V201_UPDATE_FIRMWARE_STATUS, required=True),
        "statusInfo": _v201_status_info(),
    },
}


# ------------------------------------------------------- Output and transcript

MAX_READINGS_SHOWN = 30  # readings of one MeterValues on its line; the rest are counted
MIN_CUT_WIDTH = 40  # columns a frame line keeps at a terminal narrower than that


_UNIT_PREFIXES = {0: "", 3: "k", 6: "M", -3: "m"}  # a unitOfMeasure's multiplier as a prefix


def _unit_of_measure(unit: Any) -> Any:
    """A sampledValue's unitOfMeasure {unit, multiplier} as one unit: "Wh", "kWh" (multiplier 3),
    "10^2 Wh"; "Wh" when it has none."""
    if type(unit) is not dict:
        return "Wh" if unit is None else unit
    name, multiplier = unit.get("unit", "Wh"), unit.get("multiplier", 0)
    if type(name) is not str or type(multiplier) is not int:
        return unit
    prefix = _UNIT_PREFIXES.get(multiplier)
    return prefix + name if prefix is not None else "10^%d %s" % (multiplier, name)


def _meter_readings(payload: dict) -> Iterator[tuple[Any, Any, Any, Any]]:
    """(measurand, value, unit, phase) of each reading, standard or FlexiCharge form; a reading
    with a unitOfMeasure (a number value) has that as its unit."""
    meter_value = payload.get("meterValue")
    if type(meter_value) is list:
        for sample in meter_value:
            sampled = sample.get("sampledValue") if type(sample) is dict else None
            if type(sampled) is list:
                for item in sampled:
                    if type(item) is dict:
                        yield (item.get("measurand", "Energy.Active.Import.Register"),
                               item.get("value"),
                               item["unit"] if "unit" in item else _unit_of_measure(
                                   item.get("unitOfMeasure")),
                               item.get("phase"))
    values = payload.get("values")
    if type(values) is dict:
        for name, item in values.items():
            if type(item) is dict:
                yield item.get("measurand", name), item.get("value"), item.get("unit"), None


def _reading_text(measurand: Any, value: Any, unit: Any, phase: Any) -> str:
    """ "Power.Active.Import 7400 W": the reading's parts that are there, each as text (else as
    JSON)."""
    return " ".join(part if type(part) is str else render_json(part)
                    for part in (measurand, value, unit, phase)
                    if part is not None and part != "")


def _reading_shown(measurand: Any, value: Any, unit: Any, phase: Any) -> str:
    if type(measurand) is str and type(value) is str and type(unit) is str and phase is None:
        return f"{measurand} {value} {unit}"  # nearly every standard reading
    return _reading_text(measurand, value, unit, phase)


def _standard_readings(payload: dict) -> Optional[list[str]]:
    """The readings of a MeterValues in the standard form, each with a text measurand, value and
    unit and no phase, as render_meter_values shows them, in one plain loop (it runs for every
    MeterValues); None for any other (render_meter_values then reads it the general way)."""
    meter_value = payload.get("meterValue")
    if type(meter_value) is not list or "values" in payload:
        return None
    shown = []
    try:
        for sample in meter_value:
            for item in sample["sampledValue"]:
                if "phase" in item:
                    return None
                measurand, value, unit = item["measurand"], item["value"], item["unit"]
                if type(measurand) is type(value) is type(unit) is str:
                    shown.append(f"{measurand} {value} {unit}")
                else:
                    return None
    except (KeyError, TypeError):  # a reading without its measurand or unit, or not an object
        return None
    return shown if 0 < len(shown) <= MAX_READINGS_SHOWN else None


def render_meter_values(payload: dict) -> str:
    """MeterValues as "measurand value unit" readings, standard or FlexiCharge form.

    Standard: meterValue[].sampledValue[] (measurand defaults to
    Energy.Active.Import.Register, unit to Wh).  FlexiCharge: a ``values``
    object of {name: {value, unit, measurand}}.  Anything else: the JSON.
    The first MAX_READINGS_SHOWN readings are shown, the rest counted.
    """
    shown = _standard_readings(payload)
    if shown is not None:
        connector, transaction = payload.get("connectorId"), payload.get("transactionId")
        if type(connector) is int and type(transaction) is int:  # nearly every MeterValues
            return f"connector {connector}, transaction {transaction}: {', '.join(shown)}"
    count = len(shown) if shown is not None else 0
    if shown is None:
        shown = []
        for reading in _meter_readings(payload):
            count += 1
            if count <= MAX_READINGS_SHOWN:
                shown.append(_reading_shown(*reading))
    if not count:
        return render_json(payload)
    if count > MAX_READINGS_SHOWN:
        shown.append("... and %d more" % (count - MAX_READINGS_SHOWN))
    transaction = payload.get("transactionId")
    where = _place(payload.get("evseId"), payload.get("connectorId"))
    if transaction is not None:
        where += ", transaction " + _scalar_text(transaction)
    return "%s: %s" % (where, ", ".join(shown))


def _place(evse: Any, connector: Any) -> str:
    """ "EVSE 1 connector 2", "connector 1" or "EVSE 1": what of the two a frame names."""
    parts = [] if evse is None else ["EVSE " + _scalar_text(evse)]
    if connector is not None or evse is None:
        parts.append("connector " + _scalar_text(connector))
    return " ".join(parts)


# TransactionEvent fields its line shows in words; any other is appended as JSON.
_TRANSACTION_EVENT_SHOWN = frozenset({"eventType", "timestamp", "triggerReason", "seqNo",
                                      "transactionInfo", "evse", "meterValue", "idToken"})
_TRANSACTION_INFO_SHOWN = ("chargingState", "stoppedReason", "remoteStartId")


def render_transaction_event(payload: dict) -> str:
    """An OCPP 2.0.1 TransactionEvent as the operator reads it, e.g. "Updated, transaction T-1,
    seqNo 3, MeterValuePeriodic, EVSE 1 connector 1, chargingState Charging: Energy.Active.Import.
    Register 3 Wh, Power.Active.Import 7400 W"; fields it does not name follow as JSON."""
    info = payload.get("transactionInfo")
    info = info if type(info) is dict else {}
    evse = payload.get("evse")
    evse = evse if type(evse) is dict else {}
    parts = [_scalar_text(payload.get("eventType")),
             "transaction " + _scalar_text(info.get("transactionId")),
             "seqNo " + _scalar_text(payload.get("seqNo")),
             _scalar_text(payload.get("triggerReason"))]
    if evse:
        parts.append(_place(evse.get("id"), evse.get("connectorId")))
    if len(info) > ("transactionId" in info):  # more than the id
        parts += ["%s %s" % (name, _scalar_text(info[name])) for name in _TRANSACTION_INFO_SHOWN
                  if name in info]
    token = payload.get("idToken")
    if type(token) is dict:
        parts.append("idToken %s (%s)" % (_show(token.get("idToken")), _scalar_text(
            token.get("type"))))
    readings = _standard_v201_readings(payload.get("meterValue")) if "values" not in payload \
        else None
    if readings is None:
        readings = [_reading_shown(*reading) for reading in itertools.islice(
            _meter_readings(payload), MAX_READINGS_SHOWN)]
    text = ", ".join(parts) + (": " + ", ".join(readings) if readings else "")
    if payload.keys() <= _TRANSACTION_EVENT_SHOWN:  # nearly every TransactionEvent
        return text
    rest = {name: value for name, value in payload.items() if name not in _TRANSACTION_EVENT_SHOWN}
    return text + " " + render_json(rest)


def _standard_v201_readings(meter_value: Any) -> Optional[list[str]]:
    """The readings of a 2.0.1 ``meterValue`` as render_transaction_event shows them, when each
    has a text measurand, a number value, a unitOfMeasure of a text unit without a multiplier (or
    none) and no phase, in one plain loop (it runs for every TransactionEvent with readings);
    None for any other (the general way then reads them)."""
    shown: list[str] = []
    if meter_value is None:
        return shown
    try:
        for sample in meter_value:
            for item in sample["sampledValue"]:
                if "phase" in item or "unit" in item:
                    return None
                measurand, value = item["measurand"], item["value"]
                unit = item["unitOfMeasure"]["unit"] if "unitOfMeasure" in item else "Wh"
                if (type(measurand) is not str or not measurand or type(unit) is not str
                        or not unit or len(item.get("unitOfMeasure") or "u") != 1):
                    return None
                if type(value) is int or type(value) is float:
                    shown.append(f"{measurand} {value!r} {unit}")
                else:
                    return None
    except (KeyError, TypeError, AttributeError):  # not quite the standard form
        return None
    return shown if len(shown) <= MAX_READINGS_SHOWN else None


# Smart charging, reservations: what a station reports, in words.  A schedule shows its first
# MAX_SCHEDULE_PERIODS_SHOWN periods, the rest counted.
MAX_SCHEDULE_PERIODS_SHOWN = 8


def _number_text(value: Any) -> str:
    """A limit or an amount as the operator reads it: 16.0 as "16", 7.5 as "7.5"."""
    if type(value) is float and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return _scalar_text(value)


def schedule_periods(schedule: Any) -> list[tuple[Any, Any, Any]]:
    """(startPeriod, limit, numberPhases or None) of a ChargingScheduleType's periods, at most
    MAX_SCHEDULE_PERIODS_SHOWN; a period that is not an object is left out."""
    periods = schedule.get("chargingSchedulePeriod") if type(schedule) is dict else None
    if type(periods) is not list:
        return []
    return [(period.get("startPeriod"), period.get("limit"), period.get("numberPhases"))
            for period in periods[:MAX_SCHEDULE_PERIODS_SHOWN] if type(period) is dict]


def schedule_text(schedule: Any) -> str:
    """A charging schedule in one phrase: "from 0 s 16 A, from 1800 s 8 A 1 phase"."""
    if type(schedule) is not dict:
        return render_json(schedule)
    unit = _scalar_text(schedule.get("chargingRateUnit"))
    shown = ["from %s s %s %s%s" % (_scalar_text(start), _number_text(limit), unit,
                                    "" if phases is None else " %s phase(s)" % _scalar_text(phases))
             for start, limit, phases in schedule_periods(schedule)]
    periods = schedule.get("chargingSchedulePeriod")
    if type(periods) is list and len(periods) > MAX_SCHEDULE_PERIODS_SHOWN:
        shown.append("... and %d more" % (len(periods) - MAX_SCHEDULE_PERIODS_SHOWN))
    return ", ".join(shown) or "no periods"


def render_charging_limit(payload: dict) -> str:
    """NotifyChargingLimit: "EMS limit on EVSE 1, gridCritical false: from 0 s 11000 W"."""
    limit = payload.get("chargingLimit")
    limit = limit if type(limit) is dict else {}
    text = "%s limit" % _scalar_text(limit.get("chargingLimitSource"))
    if payload.get("evseId") is not None:
        text += " on EVSE " + _scalar_text(payload.get("evseId"))
    if limit.get("isGridCritical") is not None:
        text += ", gridCritical %s" % render_json(limit.get("isGridCritical"))
    schedules = payload.get("chargingSchedule")
    if type(schedules) is list and schedules:
        text += ": " + "; ".join(schedule_text(schedule) for schedule in schedules[:4])
    return text


def render_ev_charging_needs(payload: dict) -> str:
    """NotifyEVChargingNeeds: "EVSE 1, AC_three_phase, departure ...: 20000 Wh, 6-32 A"."""
    needs = payload.get("chargingNeeds")
    needs = needs if type(needs) is dict else {}
    parts = ["EVSE " + _scalar_text(payload.get("evseId")),
             _scalar_text(needs.get("requestedEnergyTransfer"))]
    if needs.get("departureTime") is not None:
        parts.append("departure " + _scalar_text(needs.get("departureTime")))
    ac, dc = needs.get("acChargingParameters"), needs.get("dcChargingParameters")
    wanted = []
    if type(ac) is dict:
        wanted = ["%s Wh" % _number_text(ac.get("energyAmount")), "%s-%s A at %s V" % (
            _number_text(ac.get("evMinCurrent")), _number_text(ac.get("evMaxCurrent")),
            _number_text(ac.get("evMaxVoltage")))]
    elif type(dc) is dict:
        wanted = ["up to %s A at %s V" % (_number_text(dc.get("evMaxCurrent")),
                                          _number_text(dc.get("evMaxVoltage")))]
        if dc.get("stateOfCharge") is not None:
            wanted.append("SoC %s %%" % _scalar_text(dc.get("stateOfCharge")))
    return ", ".join(parts) + (": " + ", ".join(wanted) if wanted else "")


def render_reservation_status(payload: dict) -> str:
    """ReservationStatusUpdate: "reservation 3: Expired"."""
    return "reservation %s: %s" % (_scalar_text(payload.get("reservationId")),
                                   _scalar_text(payload.get("reservationUpdateStatus")))


def profile_text(profile: Any) -> str:
    """A ChargingProfileType in one phrase: "profile 1 TxDefaultProfile, stack 0, Relative: from
    0 s 16 A"."""
    if type(profile) is not dict:
        return render_json(profile)
    schedules = profile.get("chargingSchedule")
    schedules = schedules if type(schedules) is list else [schedules]
    return "profile %s %s, stack %s, %s: %s" % (
        _scalar_text(profile.get("id")), _scalar_text(profile.get("chargingProfilePurpose")),
        _scalar_text(profile.get("stackLevel")), _scalar_text(profile.get("chargingProfileKind")),
        "; ".join(schedule_text(schedule) for schedule in schedules[:3]))


def render_charging_profiles(payload: dict) -> str:
    """ReportChargingProfiles: "request 3, EVSE 1, CSO, tbc false: profile 1 TxDefaultProfile,
    ..."."""
    profiles = payload.get("chargingProfile")
    profiles = profiles if type(profiles) is list else []
    shown = [profile_text(profile) for profile in profiles[:4]]
    if len(profiles) > 4:
        shown.append("... and %d more" % (len(profiles) - 4))
    return "request %s, EVSE %s, %s, tbc %s: %s" % (
        _scalar_text(payload.get("requestId")), _scalar_text(payload.get("evseId")),
        _scalar_text(payload.get("chargingLimitSource")),
        render_json(payload.get("tbc", False)), "; ".join(shown))


def render_security_event(payload: dict) -> str:
    """A SecurityEventNotification (1.6 security whitepaper and 2.0.1 alike) as the operator reads
    it, e.g. "security event InvalidCentralSystemCertificate at 2026-12-03T10:00:00Z: techInfo
    "expired""; fields it does not name follow as JSON."""
    text = "security event %s at %s" % (_scalar_text(payload.get("type")),
                                         _scalar_text(payload.get("timestamp")))
    if "techInfo" in payload:
        text += ": techInfo " + render_json(payload["techInfo"])
    rest = {name: value for name, value in payload.items()
            if name not in ("type", "timestamp", "techInfo")}
    return text + (" " + render_json(rest) if rest else "")


# A charger's CALLs whose frame line shows the payload in words, not as JSON.
CALL_RENDERERS: dict[str, Callable[[dict], str]] = {
    "MeterValues": render_meter_values,
    "TransactionEvent": render_transaction_event,
    "NotifyChargingLimit": render_charging_limit,
    "NotifyEVChargingNeeds": render_ev_charging_needs,
    "ReservationStatusUpdate": render_reservation_status,
    "ReportChargingProfiles": render_charging_profiles,
    "SecurityEventNotification": render_security_event,
}


def _scalar_text(value: Any) -> str:
    """An id as the operator reads it: 1 and "1" alike; anything else as JSON."""
    return value if type(value) is str else str(value) if type(value) is int else render_json(value)


def _descriptor_that_never_waits(fd: int) -> Optional[int]:
    """A descriptor for ``fd``'s output that a write never waits on, or None.

    A regular file's writes do not wait for a reader: ``fd`` itself.  A
    pipe or a terminal is opened again, non-blocking, through /proc (Linux):
    an open file description of its own, so O_NONBLOCK does not reach the
    stdout (often also the stdin) this process shares with the shell.
    """
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):
            return fd
        if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
            return os.open("/proc/self/fd/%d" % fd, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, AttributeError):  # no /proc (macOS), no O_NONBLOCK (Windows), no reader yet
        pass
    return None


def terminal_width(stream: Any) -> int:
    """The columns of the terminal ``stream`` writes to; 0 for a file, a pipe or no stream."""
    try:
        if stream.isatty():
            return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        pass
    return 0


class OutputWriter:
    """Writes the server's output so that a blocked terminal never blocks the loop.

    The loop writes itself, to a descriptor that never waits (see
    _descriptor_that_never_waits): no thread hand-off for a file, a pipe or
    a terminal that takes the text.  What a write cannot take now (a pipe
    nobody reads, a terminal paused with Ctrl-S or ``less`` at its first
    page), and everything after it until it has flowed, is queued for the
    writer thread, which waits for the output: past ``limit`` queued
    characters, lines are dropped and counted, and the count is written as
    soon as the output flows again.  Without such a descriptor (a stream
    with no file descriptor, no /proc), every write goes through the thread.
    """

    def __init__(self, stream: Any, limit: int = 1 << 20) -> None:
        self.stream = stream
        self.limit = limit
        self._queue: collections.deque[str] = collections.deque()
        self._carry = b""  # the part of a direct write that the output did not take, written first
        self._queued = 0
        self.dropped = 0
        self._cond = threading.Condition()
        self._busy = False
        self._direct: Optional[int] = None
        try:
            self._fd: Optional[int] = stream.fileno()
            stream.flush()
            self._encoding = getattr(stream, "encoding", None) or "utf-8"
            self._direct = _descriptor_that_never_waits(self._fd)
        except (AttributeError, OSError, ValueError):
            self._fd = None  # a StringIO or the like: written with its own write()
        # The interactive console's input line (its prompt and what is typed so far), or None:
        # output is
        # written above it, and it is drawn again below.
        self.input_line: Optional[Callable[[], Optional[str]]] = None
        self.clear_line = False  # the next write starts by clearing the prompt (end_input_line)
        self._thread = threading.Thread(target=self._run, name="output-writer", daemon=True)
        self._thread.start()

    def put(self, text: str) -> None:
        """Write ``text`` now if the output takes it, else queue it for the writer thread.

        Called from one thread at a time (the loop's, or the only one before it runs)."""
        if self._direct is not None and not self._busy and not self._queue:
            self._write_now(text)  # the thread is idle, with nothing queued: nothing to overtake
            return
        with self._cond:
            if self._queued + len(text) > self.limit:
                self.dropped += text.count("\n")
                return
            self._queue.append(text)
            self._queued += len(text)
            self._cond.notify()

    def _write_now(self, text: str) -> None:
        if self.dropped or self.input_line is not None or self.clear_line:
            text = self._framed(text)
        data = text.encode(self._encoding, "backslashreplace")
        try:
            written = os.write(self._direct, data)  # type: ignore[arg-type]
        except BlockingIOError:
            written = 0
        except (OSError, ValueError):
            return  # the terminal went away; keep serving
        if written < len(data):
            with self._cond:  # the rest waits for the output on the thread, as does what follows
                self._carry = data[written:]
                self._busy = True
                self._cond.notify()

    def _framed(self, text: str) -> str:
        """``text`` after the count of dropped lines, with the console's input line around it."""
        if self.dropped:
            text = "%s !! %d line(s) of output were dropped while the output was blocked\n%s" % (
                LOCAL_CLOCK.now(), self.dropped, text)
            self.dropped = 0
        input_line = self.input_line() if self.input_line is not None else None
        if input_line is not None:
            text = "\r\x1b[K" + text + input_line  # clear the half-typed line, write, draw it again
        elif self.clear_line:  # the prompt readline drew last: cleared, and not drawn again
            text, self.clear_line = "\r\x1b[K" + text, False
        return text

    def end_input_line(self) -> None:
        """The server is stopping: the lines still to come clear the console's prompt and do not
        draw it again after them."""
        if self.input_line is not None:
            self.input_line, self.clear_line = None, True

    def drain(self, timeout: float) -> bool:
        """Wait until everything queued is written, up to ``timeout`` seconds; False if it is
        not."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._carry:
                    self._cond.wait()
                text = "".join(self._queue)
                self._queue.clear()
                self._queued = 0
                carry, self._carry = self._carry, b""
                self._busy = True
            try:
                self._write(carry, self._framed(text) if text else "")
            except (OSError, ValueError):
                pass  # the terminal went away; keep serving
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _write(self, carry: bytes, text: str) -> None:
        if self._fd is None:
            self.stream.write(text)
            self.stream.flush()
            return
        # os.write, not the stream: a blocked write must hold no lock that
        # the interpreter needs at exit.
        data = memoryview(carry + text.encode(self._encoding, "backslashreplace"))
        while data:
            data = data[os.write(self._fd, data):]


class Output:
    """The one place that prints: one line per event, escaped.

    Lines are handed to the OutputWriter in one piece: the frames' lines
    once per turn of the loop (the bus delivers them together), other lines
    within FLUSH_SECONDS (outside a running loop, at once).  ``quiet`` keeps
    warnings and errors only (and the console's answers).  Every line goes
    through printable_json, so nothing raw reaches the terminal; the values
    a charger controls are put through printable before they are put in a
    line.
    """

    FLUSH_SECONDS = 0.005

    def __init__(self, stream: Any = None, quiet: bool = False, wide: bool = False) -> None:
        self.writer = OutputWriter(stream if stream is not None else sys.stdout)
        self.quiet = quiet
        # At a terminal (unless --wide), frame lines are cut to its width; 0: whole lines.
        self.width = 0 if wide else terminal_width(self.writer.stream)
        if self.width:
            self.width = max(MIN_CUT_WIDTH, self.width)
        self._width_checked = time.monotonic()
        encoding = (getattr(self.writer.stream, "encoding", None) or "").lower().replace("-", "")
        self.ellipsis = "\u2026" if encoding == "utf8" else "..."
        self._pending: list[str] = []
        self._shown_ids: dict[str, str] = {}
        self.publish_log: Optional[Callable[[str, Optional[str], str], None]] = None
        self._bus: Optional[EventBus] = None  # its frames come before a line written directly

    def _charger(self, charger: str) -> str:
        shown = self._shown_ids.get(charger)
        if shown is None:
            if len(self._shown_ids) > 4096:
                self._shown_ids.clear()
            shown = self._shown_ids[charger] = printable(charger, 64)
        return shown

    def _write(self, charger: Optional[str], text: str) -> None:
        text = printable_json(text, 4 * MAX_SHOWN)
        if charger is None:
            self._add(f"{LOCAL_CLOCK.now()} {text}\n")
        else:
            self._add(f"{LOCAL_CLOCK.now()} {self._charger(charger)} {text}\n")

    def _add(self, line: str) -> None:
        if self._bus is not None and self._bus.frames:
            self._bus.deliver_frames()  # the frame lines published before this line come first
        pending = self._pending
        pending.append(line)
        if len(pending) == 1:
            self._flush_soon()

    def _flush_soon(self) -> None:
        try:
            # Every few milliseconds, not every turn of the loop: one write for many lines.
            asyncio.get_running_loop().call_later(self.FLUSH_SECONDS, self.flush)
        except RuntimeError:  # no running loop: before start-up or after shutdown
            self.flush()

    def flush(self) -> None:
        """Hand the lines gathered since the last flush to the writer, in one piece."""
        if self._bus is not None and self._bus.frames:
            self._bus.deliver_frames()
        if self._pending:
            lines, self._pending = "".join(self._pending), []
            self.writer.put(lines)

    def close(self, timeout: float = 1.0) -> None:
        """Write what is left, waiting at most ``timeout`` seconds for a blocked output."""
        self.flush()
        self.writer.drain(timeout)

    def subscribe_to(self, bus: "EventBus") -> None:
        """The terminal as a bus subscriber: frames (unless quiet) and log lines."""
        self._bus = bus
        if not self.quiet:
            bus.subscribe(self.on_frame, "frame", receiver=self.frame_lines)
        bus.subscribe(self.on_log, "log")
        bus.subscribe(self.on_summary, "summary")

    ARROWS = {"in": "<-", "out": "->"}

    def on_frame(self, event: "FrameEvent") -> None:
        """The frame line of a FrameEvent (see _frame_lines), written with the lines of the next
        few milliseconds."""
        was_empty = not self._pending
        self._frame_lines(iter(((event.seq, event.charger, event.at, event.direction, event.text,
                                 event.label, event.binary, event.shown, event.parsed),)))
        if was_empty:
            self._flush_soon()

    def frame_lines(self, frames: "Iterator[FrameRecord]") -> None:
        """The bus's receiver of frames: their lines (see _frame_lines), written at once, with
        those before them (the bus delivers the frames of a turn of the loop together: one write
        a turn)."""
        self._frame_lines(frames)
        self.flush()

    def _frame_lines(self, frames: "Iterator[FrameRecord]") -> None:
        """One line per frame: time, charger, direction ("<-" from the charger, "->" to it), label,
        payload; at a terminal, cut to its width (see fit).

        A frame's ``shown`` is JSON text or other text, or a payload to show
        as compact JSON; None for a charger's CALL (``parsed``), rendered
        here: MeterValues and TransactionEvent in words (CALL_RENDERERS), else
        the payload as the charger wrote
        it.  It runs for every frame, so it formats its lines in one loop
        (printable_json's and _add's common cases written in).
        """
        pending, shown_ids, arrows, clock = self._pending, self._shown_ids, self.ARROWS, LOCAL_CLOCK
        cut, milliseconds, last_millisecond, stamp = self.width, clock.milliseconds, -1, ""
        for _seq, charger, at, direction, text, label, _binary, shown, parsed in frames:
            if shown is None:  # a charger's CALL
                render = CALL_RENDERERS.get(parsed.action)  # type: ignore[union-attr]
                if render is not None:
                    shown = render(parsed.payload)  # type: ignore[union-attr]
                elif text.endswith("}]") and text.startswith(  # call_payload_text's first case
                        prefix := f'[2,"{parsed.message_id}","{parsed.action}",' if text[2] == '"'
                        else f'[2, "{parsed.message_id}", "{parsed.action}", '):  # type: ignore
                    shown = text[len(prefix):-1]
                else:
                    shown = call_payload_text(text, parsed)  # type: ignore[arg-type]
            elif type(shown) is not str:
                shown = render_json(shown)
            if len(shown) > MAX_SHOWN or not shown.isprintable():
                shown = printable_json(shown)
            millisecond = int(at * 1000)  # LOCAL_CLOCK.at(at), made once a millisecond
            if millisecond != last_millisecond:
                last_millisecond, stamp = millisecond, clock.second_text(millisecond // 1000) + \
                    milliseconds[millisecond % 1000]
            line = f"{stamp} {shown_ids.get(charger) or self._charger(charger or '')} " \
                   f"{arrows[direction]} {label} {shown}\n"
            pending.append(self.fit(line) if cut else line)

    def fit(self, line: str) -> str:
        """A frame's line cut to the terminal's width, its payload ending in an ellipsis."""
        if len(line) < self.width:  # its last column stays free: no wrap at the terminal's edge
            return line
        now = time.monotonic()
        if now >= self._width_checked + 1.0:  # a resized terminal is seen within a second
            self._width_checked = now
            self.width = terminal_width(self.writer.stream) or self.width
            if len(line) < self.width:
                return line
        return line[:self.width - 1 - len(self.ellipsis)] + self.ellipsis + "\n"

    def on_log(self, event: "Event") -> None:
        self._LEVELS[event.fields["level"]](self, event.charger, event.fields["text"])

    def on_summary(self, event: "Event") -> None:
        """A verdict, as an info line (its text is made printable where a charger wrote it)."""
        self.info(event.charger, event.fields["text"])

    def log(self, level: str, charger: Optional[str], text: str) -> None:
        """An operator line from code that holds the Output, not the server: through the bus once
        there is one (``publish_log``, CentralSystem.log), so the page, the event stream and the
        transcript get it too; printed directly before."""
        if self.publish_log is not None:
            self.publish_log(level, charger, text)
        else:
            self._LEVELS[level](self, charger, text)

    def debug(self, charger: Optional[str], text: str) -> None:
        if not self.quiet:
            self._write(charger, "   " + text)

    def info(self, charger: Optional[str], text: str) -> None:
        if not self.quiet:
            self._write(charger, "** " + text)

    def warn(self, charger: Optional[str], text: str) -> None:
        self._write(charger, "!! " + text)

    def error(self, charger: Optional[str], text: str) -> None:
        self._write(charger, "ERROR " + text)

    def notice(self, charger: Optional[str], text: str) -> None:
        """A notice of the server's own (a scenario's verdict): shown when quiet too."""
        self._write(charger, ">> " + text)

    def console(self, text: str) -> None:
        """An answer to the operator's command."""
        self._write(None, ">> " + text)

    _LEVELS = {"debug": debug, "info": info, "warn": warn, "error": error, "notice": notice}


# A verdict's fields (see charger_verdict): the "summary" event's, and its transcript record's.
# scope: "transaction" (one ended), "charger" (asked for) or "exit"; specWarnings and violations:
# rule -> count.
SUMMARY_FIELDS = ("scope", "transactionId", "text", "energyWh", "durationS", "peakW", "peakFrom",
                  "messagesIn", "messagesOut", "specWarnings", "violations", "faults",
                  "transactions")

# Bus event type -> the transcript's "event" name, and the fields it keeps.
TRANSCRIPT_EVENTS = {"connected": ("connect", ("peer", "path", "subprotocol", "version")),
                     "disconnected": ("disconnect", ("code",)),
                     "authorization": ("authorization", ("action", "idTag", "status", "rule")),
                     "fault_injected": ("fault", ("fault", "effect")),
                     "log": ("log", ("level", "text")),
                     "summary": ("summary", SUMMARY_FIELDS)}
# The operator lines the transcript keeps: not "info" (connects and disconnects have records of
# their own) nor "debug".
TRANSCRIPT_LOG_LEVELS = frozenset(("notice", "warn", "error"))


class Transcript:
    """``--log FILE``: every frame in and out, one JSON object per line.

    Records are ``{"ts", "charger", "dir": "in"|"out", "frame": <text as sent>}``
    and ``{"ts", "charger", "event": "connect"|"disconnect"|..., ...}`` (TRANSCRIPT_EVENTS;
    operator lines at TRANSCRIPT_LOG_LEVELS as ``"event": "log"``).  The file
    is appended to, and each line is flushed to the operating system as it is
    written, so a crash or kill -9 loses nothing that was already on the wire.
    """

    def __init__(self, path: str, on_failure: Callable[[str], None]) -> None:
        self.path = path
        self.on_failure = on_failure  # told, once, why the transcript stopped
        self.file: Any = open(path, "a", encoding="utf-8")

    def _write(self, record: dict) -> None:
        if self.file is None:
            return
        try:
            line = dump_json(record)
        except (ValueError, TypeError, RecursionError):  # a charger's value in an event record
            line = dump_json({key: value if isinstance(value, (str, int, type(None)))
                              else render_json(value)
                              for key, value in record.items()})
        try:
            self.file.write(encodable(line) + "\n")
            self.file.flush()
        except (OSError, ValueError) as exc:
            self.file = None  # first: the line below is a transcript event too
            self.on_failure("transcript %s stopped: %s" % (self.path, exc))

    def on_event(self, event: "Event") -> None:
        """The transcript as a bus subscriber: every frame, and connects, disconnects and
        authorizations."""
        record = transcript_record(event)
        if record is not None:
            self._write(record)

    EVENT_NAMES = ("frame",) + tuple(TRANSCRIPT_EVENTS)  # the events it records

    def start_run(self, ocpp: str) -> None:
        """The record that starts a run's part of the file (--replay-run counts them):
        ``{"ts", "charger": null, "event": "start", "ocpp"}``."""
        self._write({"ts": UTC_CLOCK.at(time.time()), "charger": None, "event": "start",
                     "ocpp": ocpp})

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def transcript_record(event: "Union[Event, StoredEvent]") -> Optional[dict]:
    """An event as a line of the --log transcript (and of GET /api/transcript), or None if it has
    none."""
    if event.type == "frame":
        fields = event.fields
        record = {"ts": UTC_CLOCK.at(event.at), "charger": event.charger,
                  "dir": fields["direction"], "frame": fields["text"]}
        if fields["binary"]:
            record["binary"] = True
        return record
    kind = TRANSCRIPT_EVENTS.get(event.type)
    if kind is None:
        return None
    fields = event.fields
    if event.type == "log" and fields["level"] not in TRANSCRIPT_LOG_LEVELS:
        return None
    record = {"ts": UTC_CLOCK.at(event.at), "charger": event.charger, "event": kind[0]}
    record.update((name, fields[name]) for name in kind[1])
    return record


# ------------------------------------------------------------------ Events
# Every happening is published once, as an Event, on the server's EventBus.
# The terminal (Output), the --log transcript, the scenario runner and the
# console's held commands subscribe to it, and so does the HTTP API's event
# history, which every event stream reads.

# Event types and their fields: the contract every subscriber builds on.
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "connected": ("peer", "path", "subprotocol", "version"),
    "disconnected": ("code", "description"),
    "ready": (),  # BootNotification accepted and, unless --no-boot-data, BootData answered
    "frame": ("direction", "text", "label", "binary"),  # every frame, in and out, as on the wire
    # a charger's CALL and the server's answer
    "call_answered": ("action", "payload", "reply", "error"),
    "reply_received": ("action", "payload", "error"),  # the charger's answer to a server CALL
    # a server CALL ended without a reply: timeout, failed
    "call_failed": ("action", "reason", "description"),
    "authorization": ("action", "idTag", "status", "rule"),
    # transactionId: a number, or a TransactionEvent's string; evseId: only a TransactionEvent's
    "transaction_started": ("transactionId", "connectorId", "idTag", "meterStart", "evseId"),
    "transaction_stopped": ("transactionId", "meterStop", "reason", "evseId", "connectorId"),
    # readings: [measurand, value, unit, phase]
    "meter_values": ("connectorId", "transactionId", "readings", "evseId"),
    # boot (the BootNotification), connector N (its status), schedule EVSE N (a composite schedule)
    "state_changed": ("field", "value"),
    "spec_problem": ("key", "text"),  # a spec warning, once per charger and problem
    "file_received": ("name", "size", "peer"),  # an upload to the file server, stored under name
    "fault_injected": ("fault", "effect"),  # a fault set on purpose fired (docs/faults.md)
    # A line for the operator, about a charger or the server (charger null): its level is debug,
    # info ("**"), warn ("!!"), error ("ERROR") or notice (">>", the server's own, e.g. a verdict).
    "log": ("level", "text"),
    # A verdict: a transaction ended, or the server stops (one per charge point); SUMMARY_FIELDS.
    "summary": SUMMARY_FIELDS,
}


class Event:
    """One happening: a sequence number, its type, the charge point id, its time (``at``,
    seconds since the epoch) and its fields.

    ``session`` is the ChargerSession it happened on (None for the server's
    own), for in-process subscribers; it is not part of the event's data.
    """

    __slots__ = ("seq", "type", "charger", "_fields", "session", "at")

    def __init__(self, seq: int, type_: str, charger: Optional[str], fields: dict[str, Any],
                 session: Optional["ChargerSession"]) -> None:
        self.seq, self.type, self.charger = seq, type_, charger
        self._fields, self.session = fields, session
        self.at = time.time()

    @property
    def fields(self) -> dict[str, Any]:
        """The event's data: see EVENT_FIELDS."""
        return self._fields


class FrameEvent(Event):
    """A "frame" event: one frame in or out, as on the wire.  It is published for every frame, so
    its fields are attributes; ``fields`` makes the dict of the others.

    ``shown`` is what the terminal shows of it after ``label``, or None for
    a CALL from the charger, which the terminal renders from ``parsed``.
    """

    __slots__ = ("direction", "text", "label", "shown", "binary", "parsed")

    def __init__(self, charger: str, session: Optional["ChargerSession"], direction: str, text: str,
                 label: str, shown: Any, binary: bool = False,
                 parsed: Optional[Frame] = None) -> None:
        # Event's attributes are set here, not by its __init__: this runs for every frame.
        self.seq, self.type, self.charger, self.session = 0, "frame", charger, session
        self.at = time.time()
        self.direction, self.text, self.label = direction, text, label
        self.shown, self.binary, self.parsed = shown, binary, parsed

    @property  # type: ignore[override]
    def fields(self) -> dict[str, Any]:
        return {"direction": self.direction, "text": self.text, "label": self.label,
                "binary": self.binary}


# A frame as the bus hands it to frame receivers: (seq, charger, at, direction, text, label, binary,
# shown, parsed), FrameEvent's fields in a plain tuple; its first seven are what the history keeps.
FrameRecord = tuple[int, str, float, str, str, str, bool, Any, Optional[Frame]]
# A frame subscriber's receiver: it takes the frames published since it was last called, in order,
# from an iterator (see EventBus.deliver_frames).
FrameReceiver = Callable[[Iterator[FrameRecord]], None]


class EventBus:
    """Delivers each published Event to every subscriber, in the loop, in order.

    A subscriber that raises is reported (once per subscriber and kind of
    error) and keeps its subscription, so it can break neither the engine nor
    another subscriber, and one odd event does not silence the terminal.  A
    subscriber that may be slow (a remote reader) must queue the events it
    gets, not wait.

    Frames, the most frequent events, are gathered while every frame
    subscriber has a receiver (see subscribe): each is a tuple appended to
    ``frames``, and the receivers get them together once per turn of the
    loop (``deliver_frames``), or before any other event, so that every
    subscriber still sees every event in the order published.
    """

    def __init__(self, on_error: Callable[[Callable[[Event], None], Exception], None]) -> None:
        # Event type -> its subscribers, as tuples that subscribe and unsubscribe
        # replace (never change), so publish can loop over one while a
        # subscriber unsubscribes itself.
        self.routes: dict[str, tuple[Callable[[Event], None], ...]] = {
            name: () for name in EVENT_FIELDS}
        self.sequence = 0
        self.on_error = on_error
        self._receivers: dict[Callable[[Event], None], FrameReceiver] = {}
        # The frame subscribers' receivers, in order, while every one has one; else None.
        self.frame_receivers: Optional[tuple[FrameReceiver, ...]] = ()
        self.frames: list[FrameRecord] = []  # published, not yet delivered to the receivers
        self.frame_bytes = 0  # the characters of their texts

    def subscribe(self, subscriber: Callable[[Event], None], *types: str,
                  receiver: Optional[FrameReceiver] = None) -> Callable[[Event], None]:
        """Deliver events of ``types`` (every type when none is named) to ``subscriber``.

        ``receiver`` is the subscriber's way to take frames as FrameRecords,
        several at a time (see publish_frame): while every frame subscriber
        has one, no FrameEvent is built.
        """
        self.deliver_frames()  # to the subscribers they were published to
        if receiver is not None:
            self._receivers[subscriber] = receiver
        for name in types or tuple(self.routes):
            self.routes[name] += (subscriber,)
        self._frame_route_changed()
        return subscriber

    def unsubscribe(self, subscriber: Callable[[Event], None]) -> None:
        self.deliver_frames()
        for name, subscribers in self.routes.items():
            self.routes[name] = tuple(other for other in subscribers if other != subscriber)
        self._receivers.pop(subscriber, None)
        self._frame_route_changed()

    def _frame_route_changed(self) -> None:
        receivers = tuple(self._receivers.get(subscriber) for subscriber in self.routes["frame"])
        self.frame_receivers = None if None in receivers else receivers

    def publish_frame(self, charger: str, session: Optional["ChargerSession"], direction: str,
                      text: str, label: str, shown: Any, binary: bool = False,
                      parsed: Optional[Frame] = None) -> None:
        """Publish a "frame" event (its fields: see FrameEvent).  It runs for every frame: while
        every frame subscriber has a receiver, it only numbers the frame and gathers it for them
        (delivered at the end of this turn of the loop at the latest)."""
        frames = self.frames
        if self.frame_receivers:
            self.sequence += 1
            frames.append((self.sequence, charger, time.time(), direction, text, label, binary,
                           shown, parsed))
            self.frame_bytes += len(text)
            if len(frames) == 1:
                try:
                    asyncio.get_running_loop().call_soon(self.deliver_frames)
                except RuntimeError:  # no running loop: before start-up or after shutdown
                    self.deliver_frames()
            elif self.frame_bytes > MAX_GATHERED_FRAMES:  # large frames: their memory, bounded
                self.deliver_frames()
        elif self.frame_receivers is None:
            self.deliver(FrameEvent(charger, session, direction, text, label, shown, binary,
                                    parsed))

    def deliver_frames(self) -> None:
        """Hand the frames gathered so far to the frame receivers, in order.  A receiver that
        raises on one frame is reported and goes on with the next."""
        frames = self.frames
        if not frames:
            return
        self.frames, self.frame_bytes = [], 0
        for receiver in self.frame_receivers or ():
            remaining = iter(frames)
            while True:
                try:
                    receiver(remaining)
                    break
                except Exception as exc:  # as deliver does
                    self.on_error(receiver, exc)

    def publish(self, type_: str, charger: Optional[str],
                session: Optional["ChargerSession"] = None, **fields: Any) -> None:
        """Build an event of ``type_`` with ``fields`` and deliver it."""
        if self.routes[type_]:
            self.deliver(Event(0, type_, charger, fields, session))

    def deliver(self, event: Event) -> None:
        """Number an event and hand it to its subscribers, in order, after the frames gathered
        before it."""
        if self.frames:
            self.deliver_frames()
        self.sequence += 1
        event.seq = self.sequence
        for subscriber in self.routes[event.type]:
            try:
                subscriber(event)
            except Exception as exc:  # reported; the others still get the event, and the next one
                self.on_error(subscriber, exc)


# ------------------------------------------------------------ Charger state
# What the server knows of each charge point, kept across its reconnects.

SPEC_WARNINGS_KEPT = 20  # texts of a charge point's latest spec warnings, listed on the page
# Distinct rules (spec problems and behaviour checks) a charge point's verdict counts; past them,
# further rules are counted together as "other".
VERDICT_RULES_KEPT = 100
# A power worked out from the energy between two readings spans at least this many seconds (by
# the server's clock): readings a charger sends in a burst say nothing of its power.
DERIVED_POWER_SECONDS = 1.0


class Latest(list):
    """A list that keeps its latest ``maxlen`` items, as a deque with a maxlen does, at a list's
    size: an empty deque is 760 bytes, and every charge point has some."""

    __slots__ = ("maxlen",)

    def __init__(self, maxlen: int) -> None:
        super().__init__()
        self.maxlen = maxlen

    def append(self, item: Any) -> None:
        list.append(self, item)
        if len(self) > self.maxlen:
            del self[0]


class ChargerTally:
    """What a charge point's verdict counts over the run, across its reconnects: frames in and
    out, faults injected, and each spec problem and behaviour-check violation each time it is met
    (``rules``: warn-once key -> count, made at the first; at most VERDICT_RULES_KEPT keys).

    Counting costs an integer increment per frame, and a dict increment per problem met.
    """

    __slots__ = ("messages_in", "messages_out", "faults", "rules", "since", "transactions",
                 "energy", "peak", "last")

    OTHER_SPEC, OTHER_CHECK = ("other",), ("check", "other")  # the keys past VERDICT_RULES_KEPT

    def __init__(self) -> None:
        self.messages_in = self.messages_out = self.faults = 0
        self.rules: Optional[dict[tuple, int]] = None
        self.since = time.monotonic()
        self.transactions = 0  # ended
        self.energy = 0.0  # Wh, of the transactions ended whose energy is known
        self.peak: Optional[tuple[float, str]] = None  # the highest peak (W) and where it is from
        self.last: Optional[dict] = None  # the verdict of the latest transaction that ended

    def count(self, key: tuple) -> None:
        """One more of the spec problem or violation (``("check", rule)``) of warn-once ``key``."""
        rules = self.rules
        if rules is None:
            rules = self.rules = {}
        if key in rules:
            rules[key] += 1
        elif len(rules) < VERDICT_RULES_KEPT:
            rules[key] = 1
        else:
            other = self.OTHER_CHECK if key[0] == "check" else self.OTHER_SPEC
            rules[other] = rules.get(other, 0) + 1

    def snapshot(self) -> tuple[int, int, int, dict[tuple, int]]:
        """The counts now, for a transaction's verdict to count from."""
        return self.messages_in, self.messages_out, self.faults, dict(self.rules or {})


class Transaction:
    """An open transaction: one the server numbered in its StartTransaction.conf, or one a
    TransactionEvent Started named (its id is then the station's string, and it is on an EVSE).

    For its verdict it keeps what its readings say (see note_reading): the first and the last
    energy register reading (Wh), the highest Power.Active.Import reading (W), the highest power
    worked out from the energy between two readings, and the charge point's tally when it opened.
    """

    __slots__ = ("transaction_id", "connector_id", "id_tag", "meter_start", "started", "evse_id",
                 "tally_start", "energy_first", "energy_last", "energy_base", "energy_at",
                 "peak_power", "peak_derived")

    def __init__(self, transaction_id: "Union[int, str]", connector_id: Optional[int],
                 id_tag: Any, meter_start: Any, evse_id: Optional[int] = None) -> None:
        self.transaction_id = transaction_id
        self.connector_id = connector_id
        self.id_tag = id_tag
        self.meter_start = meter_start
        self.started = time.monotonic()
        self.evse_id = evse_id
        self.tally_start: Optional[tuple] = None  # ChargerTally.snapshot() when it opened
        self.energy_first: Optional[float] = None
        self.energy_last: Optional[float] = None
        self.energy_base = meter_start if type(meter_start) in (int, float) else None
        self.energy_at = self.started
        self.peak_power: Optional[float] = None
        self.peak_derived: Optional[float] = None

    def note_reading(self, energy: Optional[float], power: Optional[float]) -> None:
        """A MeterValues of it, as chart_point reads it (energy Wh, power W): the peak power, and
        the power the energy implies over at least DERIVED_POWER_SECONDS since the last base."""
        if power is not None and (self.peak_power is None or power > self.peak_power):
            self.peak_power = power
        if energy is None:
            return
        if self.energy_first is None:
            self.energy_first = energy
        self.energy_last = energy
        now = time.monotonic()
        elapsed = now - self.energy_at
        if self.energy_base is None:
            self.energy_base, self.energy_at = energy, now
        elif elapsed >= DERIVED_POWER_SECONDS and elapsed > 0:
            derived = (energy - self.energy_base) * 3600 / elapsed
            if self.peak_derived is None or derived > self.peak_derived:
                self.peak_derived = derived
            self.energy_base, self.energy_at = energy, now

    def place(self) -> str:
        """Where it runs, as the operator reads it: "connector 1", or "EVSE 1 connector 2"."""
        return _place(self.evse_id, self.connector_id)


def connector_label(key: Any) -> str:
    """A key of ChargerState.connectors as the listings show it: "2", "1/2" or "?" (-1: none)."""
    if type(key) is tuple:
        return "/".join(str(part) if part >= 0 else "?" for part in key)
    return str(key) if key >= 0 else "?"


def boot_identity(info: dict) -> tuple[Any, Any, Any, Any]:
    """(vendor, model, serial number, firmware version) of a BootNotification, 1.6's fields or
    2.0.1's chargingStation; "?" and "-" where it has none."""
    station = info.get("chargingStation")
    if type(station) is dict:
        return (station.get("vendorName", "?"), station.get("model", "?"),
                station.get("serialNumber", "-"), station.get("firmwareVersion", "-"))
    return (info.get("chargePointVendor", "?"), info.get("chargePointModel", "?"),
            info.get("chargePointSerialNumber", "-"), info.get("firmwareVersion", "-"))


class ChargerState:
    """What the server knows of one charge point, by its id, across reconnects.

    OCPP transactions outlive websocket connections: a charger that
    reconnects mid-transaction still has it open.  Every table is bounded,
    whatever the charger sends.
    """

    # what a 2.0.1 station reported of its variables: made on its first report (a class default
    # until then, so that a station that never reports carries nothing)
    device_model: Optional["DeviceModel"] = None
    # the hash data of the certificates it took from this server (InstallCertificate,
    # CertificateSigned), the latest CERTIFICATES_TAKEN_KEPT: made on the first
    certificates_taken: Optional["Latest"] = None
    # Tables most charge points never fill, empty tuples (class defaults) until the first entry:
    # 10,000 connected chargers carry nothing for them.
    # (action, idTag, status, rule) of the latest 5 authorizations (a Latest)
    authorizations: "Union[Latest, tuple]" = ()
    # the hash data its last GetInstalledCertificateIds.conf listed (a list once it has)
    certificate_ids: "Union[list[dict], tuple]" = ()
    # its latest SPEC_WARNINGS_KEPT spec warnings' texts, for the page's list (a Latest; the
    # spec_warnings attribute counts them all)
    spec_texts: "Union[Latest, tuple]" = ()

    __slots__ = ("charger_id", "connected", "dialect", "version", "spec_warnings", "boot_info",
                 "boot_status", "connectors", "transactions", "last_meter_values", "key_rotated",
                 "requests_followed", "history", "tally", "smart_charging",
                 # the class defaults above, made on their first entry (a dictionary then)
                 "__dict__")

    def __init__(self, charger_id: str) -> None:
        self.charger_id = charger_id
        self.connected = False
        self.dialect: Optional[str] = None  # of its last connection
        self.version: Optional[str] = None  # the OCPP version of its last connection
        self.spec_warnings = 0
        self.boot_info: Optional[dict] = None
        self.boot_status: Optional[str] = None
        # connector -> its status; the key of an EVSE's connector is (EVSE, connector)
        self.connectors: dict[Any, str] = {}
        # the open ones, by id, oldest first
        self.transactions: dict[Union[int, str], Transaction] = {}
        self.last_meter_values: Optional[dict] = None
        self.key_rotated: Optional[str] = None  # when the server took its new AuthorizationKey
        # (CALL, requestId) -> its statuses so far (2.0.1 firmware and logs), once there is one
        self.requests_followed: Optional[collections.OrderedDict] = None
        self.history = ChargerHistory()  # what the behaviour checks remember since its last boot
        self.tally = ChargerTally()  # what its verdict counts (see charger_verdict)
        self.smart_charging: Optional[SmartCharging] = None  # made on its first schedule

    def set_connector(self, connector: Any, status: str) -> bool:
        """Record a connector's status (``connector``: its number, or (EVSE, connector)); False
        when the table is full and the connector is new."""
        key = connector if connector is not None else -1
        if key not in self.connectors and len(self.connectors) >= MAX_CONNECTORS:
            return False
        self.connectors[key] = status
        return True

    def open_transaction(self, transaction: Transaction) -> Optional[Transaction]:
        """Record an open transaction; the oldest one it had to forget to stay bounded, if any."""
        messages_in, messages_out, faults, rules = self.tally.snapshot()
        # counted from the message that opens it (StartTransaction, TransactionEvent) on
        transaction.tally_start = (messages_in - 1, messages_out, faults, rules)
        self.transactions[transaction.transaction_id] = transaction
        if len(self.transactions) > MAX_OPEN_TRANSACTIONS:
            return self.transactions.pop(next(iter(self.transactions)))
        return None

    def close_transaction(self, transaction_id: "Union[int, str, None]") -> Optional[Transaction]:
        return self.transactions.pop(transaction_id, None) if transaction_id is not None else None

    def open_transactions_text(self) -> str:
        if not self.transactions:
            return " (none is open)"
        return " (open: %s)" % ", ".join(printable(str(number), 40) for number in self.transactions)

    def connector_statuses(self) -> list[tuple[str, str]]:
        """(connector, status) pairs in order, a connector as "2", "1/2" (EVSE 1's connector 2)
        or "?" (no number)."""
        return [(connector_label(key), status) for key, status in sorted(
            self.connectors.items(), key=lambda item: (type(item[0]) is tuple, item[0]))]

    def describe(self) -> list[str]:
        """The lines of the console's `chargers` listing about this charge point's state."""
        lines = []
        if self.boot_info is None:
            lines.append("  boot: no BootNotification yet")
        else:
            lines.append("  boot: %s  %s %s  serial %s  firmware %s" % tuple(
                printable(value if isinstance(value, str) else render_json(value), 40)
                for value in (self.boot_status,) + boot_identity(self.boot_info)))
        if self.connectors:
            lines.append("  connectors: " + ", ".join(
                "%s %s" % (label, printable(status, 60))
                for label, status in self.connector_statuses()))
        for tx in self.transactions.values():
            lines.append("  transaction %s on %s, idTag %s, meterStart %s, %d s old" % (
                printable(str(tx.transaction_id), 40), tx.place(), _show(tx.id_tag), tx.meter_start,
                time.monotonic() - tx.started))
        if not self.transactions:
            lines.append("  no open transaction")
        if self.last_meter_values is not None:
            lines.append("  last meter values: " + printable(
                render_meter_values(self.last_meter_values), MAX_SHOWN))
        for action, id_tag, status, rule in self.authorizations:
            lines.append("  %s idTag %s: %s (%s)" % (action, id_tag, status, rule))
        if self.key_rotated is not None:
            lines.append("  AuthorizationKey: rotated at %s; only the new key lets it in"
                         % self.key_rotated)
        for (request, request_id), statuses in (self.requests_followed or {}).items():
            lines.append("  %s request %s: %s" % (request, printable(request_id, 40),
                                                  printable(", ".join(statuses), 400)))
        return lines


# A 2.0.1 station's smart charging, as it reported it: ChargerState.smart_charging, made on the
# first composite schedule.  (Its ReportChargingProfiles are assembled as the Notify... messages
# are: NOTIFY_KINDS.)
SCHEDULES_KEPT = 4  # composite schedules per station (the latest EVSEs asked about)
SCHEDULE_PERIODS_KEPT = 24  # periods of one composite schedule kept (and drawn)


class SmartCharging:
    """What a 2.0.1 station reported of its charging schedules, bounded: the latest composite
    schedule of each EVSE asked about."""

    __slots__ = ("schedules",)

    def __init__(self) -> None:
        self.schedules: collections.OrderedDict[Any, dict] = collections.OrderedDict()

    def keep_schedule(self, schedule: dict) -> dict:
        """The record of a composite schedule (evseId, scheduleStart, duration, chargingRateUnit,
        periods [startPeriod, limit, numberPhases]), kept as its EVSE's latest."""
        periods = schedule.get("chargingSchedulePeriod")
        record = {"evseId": schedule.get("evseId"), "scheduleStart": schedule.get("scheduleStart"),
                  "duration": schedule.get("duration"),
                  "chargingRateUnit": schedule.get("chargingRateUnit"),
                  "periods": [[period.get("startPeriod"), period.get("limit"),
                               period.get("numberPhases")]
                              for period in (periods if type(periods) is list else [])
                              [:SCHEDULE_PERIODS_KEPT] if type(period) is dict]}
        key = record["evseId"] if type(record["evseId"]) is int else -1
        self.schedules.pop(key, None)
        self.schedules[key] = record
        while len(self.schedules) > SCHEDULES_KEPT:
            self.schedules.popitem(last=False)
        return record
# ---- the device model of a 2.0.1 station
# What a station reported of its variables (NotifyReport, GetVariables results, accepted
# SetVariables) and the Notify... messages it is sending in parts (tbc, seqNo), by requestId.

MAX_DEVICE_VARIABLES = 1000  # variable attributes kept per station; one line when reached
MAX_VARIABLE_VALUE = 2500  # characters of a value kept (the longest NotifyReport allows)
MAX_NOTIFY_ITEMS = 1000  # lines (or texts) and parts of one Notify... message kept to show it
MAX_NOTIFY_SEQUENCES = 4  # Notify... sequences in progress per station; the oldest goes first
MAX_REPORT_REQUESTS = 32  # requestIds of the report requests a station accepted, kept to match
FORGOTTEN_QUIET_SECONDS = 10.0  # after a "forgotten" line, the next ones are counted this long
ATTRIBUTE_TYPES = ("Actual", "Target", "MinSet", "MaxSet")  # AttributeEnumType

# (component name, component instance, EVSE id, connector id, variable name, variable instance,
# attributeType): one variable attribute; None where it has no such part.
VariableKey = tuple


def variable_key(component: Any, variable: Any, attribute_type: Any = None
                 ) -> Optional[VariableKey]:
    """The key of a ComponentType, a VariableType and an attributeType (Actual when absent) as a
    station or the operator sent them; None when the names are not text."""
    if type(component) is not dict or type(variable) is not dict:
        return None
    evse = component.get("evse")
    evse = evse if type(evse) is dict else {}
    parts = (component.get("name"), component.get("instance"), evse.get("id"),
             evse.get("connectorId"), variable.get("name"), variable.get("instance"),
             "Actual" if attribute_type is None else attribute_type)
    if not (type(parts[0]) is str and type(parts[4]) is str and type(parts[6]) is str):
        return None
    return tuple(part if part is None or type(part) in (str, int) else render_json(part)
                 for part in parts)


def variable_name(key: VariableKey) -> str:
    """A variable attribute as the console spells it: Component[instance]@evse/connector
    .Variable[instance]/Type (the parts it has; /Actual left out), made printable."""
    component, component_instance, evse, connector, variable, variable_instance, kind = key
    text = component + ("[%s]" % component_instance if component_instance is not None else "")
    if evse is not None:
        text += "@%s" % evse + ("/%s" % connector if connector is not None else "")
    text += "." + variable + ("[%s]" % variable_instance if variable_instance is not None else "")
    return printable(text + ("/" + kind if kind != "Actual" else ""), 200)


def component_json(key: VariableKey) -> tuple[dict, dict]:
    """The ComponentType and VariableType of a key, as OCPP sends them."""
    component: dict = {"name": key[0]}
    if key[1] is not None:
        component["instance"] = key[1]
    if key[2] is not None:
        component["evse"] = {"id": key[2]}
        if key[3] is not None:
            component["evse"]["connectorId"] = key[3]
    variable: dict = {"name": key[4]}
    if key[5] is not None:
        variable["instance"] = key[5]
    return component, variable


class DeviceModel:
    """A 2.0.1 station's variables as it reported them, and its Notify... sequences in progress.

    ``variables``: key -> [value, mutability, dataType, unit, source], at most
    MAX_DEVICE_VARIABLES; ``sequences``: (action, requestId) -> NotifySequence;
    ``requested``: the (action, requestId) the station accepted a request for, latest last;
    ``finished``: the (action, requestId) whose last part came; ``forgotten``: the sequences
    forgotten since the last line that said one (counted, said at once: _forget_oldest), and
    ``forgotten_at`` when that line was said.
    """

    __slots__ = ("variables", "full", "sequences", "requested", "finished", "forgotten",
                 "forgotten_at")

    def __init__(self) -> None:
        self.variables: dict[VariableKey, list] = {}
        self.full = False  # the cap was reached (and said)
        self.sequences: dict[tuple[str, Any], NotifySequence] = {}
        self.requested: Latest = Latest(MAX_REPORT_REQUESTS)
        self.finished: Latest = Latest(MAX_REPORT_REQUESTS)
        self.forgotten = 0
        self.forgotten_at = 0.0

    def record(self, key: VariableKey, value: Any, source: str, mutability: Any = None,
               data_type: Any = None, unit: Any = None) -> bool:
        """Keep an attribute's value (None: not reported), keeping what is known of it when a
        part is None; False when the model is full and the attribute is new."""
        row = self.variables.get(key)
        if row is None:
            if len(self.variables) >= MAX_DEVICE_VARIABLES:
                return False
            row = self.variables[key] = [None, None, None, None, source]
        if value is not None:
            row[0] = (value if type(value) is str else render_json(value))[:MAX_VARIABLE_VALUE]
        for index, part in ((1, mutability), (2, data_type), (3, unit)):
            if type(part) is str:
                row[index] = part[:50]
        row[4] = source
        return True

    def matching(self, query: str) -> list[tuple[str, VariableKey, list]]:
        """(name, key, row) of the attributes whose name contains ``query`` (any case), by
        name."""
        lower = query.lower()
        found = [(variable_name(key), key, row) for key, row in self.variables.items()]
        return sorted((item for item in found if lower in item[0].lower()),
                      key=lambda item: item[0])


def device_model(state: "ChargerState") -> DeviceModel:
    """The station's device model, made on its first report."""
    if state.device_model is None:
        state.device_model = DeviceModel()
    return state.device_model


def variable_line(name: str, row: list) -> str:
    """One attribute as `variables` lists it: name = value (dataType unit, mutability; source)."""
    about = " ".join(part for part in (row[2], row[3]) if part)
    about = ", ".join(part for part in (about, row[1]) if part)
    value = "(no value)" if row[0] is None else printable(row[0], 200)
    return "  %s = %s  (%s%s)" % (name, value, printable(about + "; " if about else ""), row[4])


class NotifySequence:
    """The parts of one Notify... message sent in parts (one action, one requestId) so far.

    ``parts``: seqNo -> that part's pieces (what shows it: lines, or its text), at most
    MAX_NOTIFY_ITEMS parts and pieces in all (``dropped`` counts the pieces not kept);
    ``received`` counts the parts and ``entries`` their entries; ``told``: what was said of it
    already ("repeat", "cap"), so that each is said once.
    """

    __slots__ = ("parts", "received", "entries", "pieces", "dropped", "told")

    def __init__(self) -> None:
        self.parts: dict[int, list[str]] = {}
        self.received = self.entries = self.pieces = self.dropped = 0
        self.told: set = set()

    def add(self, seq_no: int, entries: int, pieces: list[str]) -> bool:
        """Keep a part's pieces under its seqNo; False when that seqNo came already."""
        if seq_no in self.parts:
            return False
        self.received += 1
        self.entries += entries
        if len(self.parts) >= MAX_NOTIFY_ITEMS:
            self.dropped += len(pieces) or 1
            return True
        kept = self.parts[seq_no] = pieces[:max(0, MAX_NOTIFY_ITEMS - self.pieces)]
        self.pieces += len(kept)
        self.dropped += len(pieces) - len(kept)
        return True

    def missing(self) -> tuple[int, list[int]]:
        """How many seqNos below the highest never came (the first is 0), and the first 10."""
        highest = max(self.parts, default=-1)
        first = [seq_no for seq_no in range(min(highest, len(self.parts) + 10))
                 if seq_no not in self.parts][:10]
        return highest + 1 - len(self.parts), first

    def in_order(self) -> list[str]:
        """Every part's pieces, in seqNo order."""
        return [piece for seq_no in sorted(self.parts) for piece in self.parts[seq_no]]


# The live page's charts, kept on the server: a page opened mid-session draws
# each open transaction from its first reading.

CHARTS_KEPT = 10  # charts: the page's, and the open transactions whose readings the server keeps
CHART_POINTS = 2000  # readings per chart; past that every other one is dropped (the chart thins)
CHART_MEASURANDS = {"Energy.Active.Import.Register": 0, "Power.Active.Import": 1, "SoC": 2}


def _chart_number(value: Any, unit: Any) -> Optional[float]:
    """A reading's value as a finite number (kWh and kW as Wh and W), else None."""
    try:
        number = float(value) if type(value) in (str, int, float) else math.nan
    except (ValueError, OverflowError):
        return None
    if number - number != 0:  # NaN or infinite
        return None
    return number * 1000 if type(unit) is str and unit[:1] == "k" else number


def chart_point(payload: dict) -> tuple[Optional[float], Optional[float], Optional[float]]:
    """(energy Wh, power W, state of charge %) of a MeterValues, as the page charts it: the first
    reading of each measurand (a reading without one is energy), None where it has none."""
    point: list[Optional[float]] = [None, None, None]
    if "values" not in payload:  # the standard form, in one plain loop (it runs for every reading)
        try:
            for sample in payload["meterValue"]:
                for item in sample["sampledValue"]:
                    measurand = item.get("measurand", "Energy.Active.Import.Register")
                    if type(measurand) is not str or not measurand:
                        raise TypeError  # null, empty or not text: the general way's
                    lane = CHART_MEASURANDS.get(measurand)
                    if lane is not None and point[lane] is None:
                        point[lane] = _chart_number(item.get("value"), item["unit"] if "unit" in
                                                    item else _unit_of_measure(
                                                        item.get("unitOfMeasure")))
            return point[0], point[1], point[2]
        except (KeyError, TypeError, AttributeError):  # not quite the standard form
            point = [None, None, None]
    for measurand, value, unit, _ in _meter_readings(payload):
        lane = CHART_MEASURANDS.get(measurand or "Energy.Active.Import.Register") \
            if measurand is None or type(measurand) is str else None
        if lane is not None and point[lane] is None:
            point[lane] = _chart_number(value, unit)
    return point[0], point[1], point[2]


class ChartReadings:
    """The meter readings of the latest CHARTS_KEPT open transactions (of all charge points), kept
    whether or not a page watches, so that a page opened late charts them from the first reading.

    A MeterValues of an open transaction appends one small tuple, (time in ms, energy, power,
    soc); past CHART_POINTS readings every other one is dropped.  A transaction's readings go when
    it closes, or when CHARTS_KEPT newer transactions have readings.
    """

    def __init__(self) -> None:
        # (charge point id, transaction id) -> (connector id, readings), oldest first
        self.charts: collections.OrderedDict[tuple[str, int], tuple[Any, list[tuple]]] = \
            collections.OrderedDict()

    def add(self, charger_id: str, transaction: Transaction, payload: dict,
            point: Optional[tuple] = None) -> None:
        """Chart a MeterValues of ``transaction`` (``point``: its chart_point, if made already)."""
        key = (charger_id, transaction.transaction_id)
        chart = self.charts.get(key)
        if chart is None:
            chart = self.charts[key] = (transaction.connector_id, [])
            if len(self.charts) > CHARTS_KEPT:
                self.charts.popitem(last=False)
        readings = chart[1]
        readings.append((int(time.time() * 1000),) + (point or chart_point(payload)))
        if len(readings) > CHART_POINTS:
            del readings[1::2]

    def drop(self, charger_id: str, transaction_id: int) -> None:
        self.charts.pop((charger_id, transaction_id), None)

    def records(self, states: dict[str, ChargerState]) -> list[dict]:
        """The charts of transactions still open, oldest first, as the page's state carries them."""
        return [{"charger": charger_id, "transactionId": transaction_id, "connectorId": connector,
                 "points": readings}
                for (charger_id, transaction_id), (connector, readings) in self.charts.items()
                if transaction_id in getattr(states.get(charger_id), "transactions", ())]


# Verdicts: what a charge point did, summed up when a transaction ends, on `summary` (and GET
# /api/chargers/{id}/summary) and at exit; published as "summary" events (SUMMARY_FIELDS).

VERDICT_RULES_SHOWN = 5  # rules a verdict's line names per kind; the rest are "N more"


def _rule_name(key: tuple) -> str:
    """A warn-once key as a verdict names it: a check's rule, "Action.field" for a field's spec
    problem, else the problem's own name ("id-reuse")."""
    if key[0] == "check":
        return printable(str(key[1]), 60)
    if len(key) == 3 and key[1]:
        return printable("%s.%s" % (key[0], key[1]), 80)
    return printable(str(key[0]), 80)


def _rule_counts(rules: Optional[dict[tuple, int]], since: dict[tuple, int]
                 ) -> tuple[dict[str, int], dict[str, int]]:
    """(spec warnings, behaviour-check violations) by rule name, counted since ``since``."""
    spec: dict[str, int] = {}
    checks: dict[str, int] = {}
    for key, count in (rules or {}).items():
        count -= since.get(key, 0)
        if count > 0:
            table = checks if key[0] == "check" else spec
            name = _rule_name(key)
            table[name] = table.get(name, 0) + count
    return spec, checks


def _quantity_text(value: float, unit: str) -> str:
    """"350 Wh", "4.2 kWh"; "1.7e+305 kWh" and "inf Wh" for readings near the float's limits."""
    if not math.isfinite(value):
        return "%g %s" % (value, unit)
    if abs(value) < 1000:
        return "%d %s" % (round(value), unit)
    kilo = value / 1000
    return ("%.1f k%s" if abs(kilo) < 1e9 else "%.3g k%s") % (kilo, unit)


def _energy_text(wh: float) -> str:
    return _quantity_text(wh, "Wh")


def _power_text(watts: float) -> str:
    return _quantity_text(watts, "W")


def _duration_text(seconds: float) -> str:
    """12 min 3 s, 1 h 2 min, 4 s."""
    seconds = int(seconds)
    if seconds < 60:
        return "%d s" % seconds
    if seconds < 3600:
        return "%d min %d s" % divmod(seconds, 60)
    return "%d h %d min" % (seconds // 3600, seconds % 3600 // 60)


def _counted_text(counts: dict[str, int], noun: str) -> str:
    """"2 spec warnings (MeterValues.meterValue[].timestamp x2)": the total and the commonest."""
    total = sum(counts.values())
    text = "%d %s%s" % (total, noun, "" if total == 1 else "s")
    if not counts:
        return text
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    named = ["%s x%d" % item for item in ranked[:VERDICT_RULES_SHOWN]]
    if len(ranked) > VERDICT_RULES_SHOWN:
        named.append("%d more" % (len(ranked) - VERDICT_RULES_SHOWN))
    return "%s (%s)" % (text, ", ".join(named))


def _tally_record(tally: ChargerTally, since: tuple) -> dict[str, Any]:
    """The counted part of a verdict, since the snapshot ``since``: its fields, and "text"."""
    spec, checks = _rule_counts(tally.rules, since[3])
    faults = tally.faults - since[2]
    record: dict[str, Any] = {"messagesIn": tally.messages_in - since[0],
                              "messagesOut": tally.messages_out - since[1],
                              "specWarnings": spec, "violations": checks, "faults": faults}
    record["text"] = "%d messages in, %d out; %s; %s; %d fault%s injected" % (
        record["messagesIn"], record["messagesOut"], _counted_text(spec, "spec warning"),
        _counted_text(checks, "behaviour-check violation"), faults, "" if faults == 1 else "s")
    return record


def _json_number(value: Optional[float]) -> Optional[float]:
    """A verdict's number: whole ones as ints (4200, not 4200.0), others to 0.1; None for none
    and for one past the float's range (JSON has no infinity)."""
    if value is None or not math.isfinite(value):
        return None
    return int(value) if float(value).is_integer() else round(value, 1)


def _verdict(scope: str, transaction_id: Any, text: str, energy: Optional[float],
             duration: float, peak: Optional[tuple[float, str]], counted: dict[str, Any],
             transactions: Optional[int]) -> dict[str, Any]:
    """A verdict's record, its fields in SUMMARY_FIELDS' order."""
    return {"scope": scope, "transactionId": transaction_id, "text": text + "; " + counted["text"],
            "energyWh": _json_number(energy), "durationS": round(duration, 1),
            "peakW": _json_number(peak[0]) if peak else None, "peakFrom": peak[1] if peak else None,
            "messagesIn": counted["messagesIn"], "messagesOut": counted["messagesOut"],
            "specWarnings": counted["specWarnings"], "violations": counted["violations"],
            "faults": counted["faults"], "transactions": transactions}


def _transaction_energy(transaction: Transaction, meter_stop: Any) -> Optional[float]:
    """Wh delivered: meterStop (or the last register reading) less meterStart (or the first)."""
    start = transaction.meter_start if type(transaction.meter_start) in (int, float) \
        else transaction.energy_first
    stop = meter_stop if type(meter_stop) in (int, float) else transaction.energy_last
    return None if start is None or stop is None else stop - start


def _transaction_peak(transaction: Transaction) -> Optional[tuple[float, str]]:
    """The highest power (W) and where it is from: the Power.Active.Import readings, else the
    energy over time between readings."""
    if transaction.peak_power is not None:
        return transaction.peak_power, "Power.Active.Import"
    if transaction.peak_derived is not None:
        return transaction.peak_derived, "energy over time"
    return None


def _peak_text(peak: Optional[tuple[float, str]]) -> str:
    if peak is None:
        return "peak power unknown"
    return "peak %s%s" % (_power_text(peak[0]),
                          " (from energy over time)" if peak[1] == "energy over time" else "")


def transaction_verdict(state: ChargerState, transaction: Transaction,
                        meter_stop: Any) -> dict[str, Any]:
    """The verdict of a transaction that ended (``meter_stop``: its meterStop in Wh, if known),
    counted since it opened; added to the charge point's totals."""
    energy = _transaction_energy(transaction, meter_stop)
    peak = _transaction_peak(transaction)
    duration = time.monotonic() - transaction.started
    text = "transaction %s ended: %s in %s, %s" % (
        printable(str(transaction.transaction_id), 40),
        _energy_text(energy) if energy is not None else "energy unknown",
        _duration_text(duration), _peak_text(peak))
    tally = state.tally
    record = _verdict("transaction", transaction.transaction_id, text, energy, duration, peak,
                      _tally_record(tally, transaction.tally_start or (0, 0, 0, {})), None)
    tally.transactions += 1
    if energy is not None:
        tally.energy += energy
    if peak is not None and (tally.peak is None or peak[0] > tally.peak[0]):
        tally.peak = peak
    tally.last = record
    return record


def charger_verdict(state: ChargerState, scope: str = "charger") -> dict[str, Any]:
    """A charge point's verdict over the run so far (``scope`` "exit": the server is stopping)."""
    tally = state.tally
    ended = tally.transactions
    text = "%s: %d transaction%s ended" % ("at exit" if scope == "exit" else "summary", ended,
                                          "" if ended == 1 else "s")
    if ended:
        text += " (%s, %s)" % (_energy_text(tally.energy), _peak_text(tally.peak))
    if state.transactions:
        text += ", %d open" % len(state.transactions)
    duration = time.monotonic() - tally.since
    counted = _tally_record(tally, (0, 0, 0, {}))
    counted["text"] += "; first connected %s ago" % _duration_text(duration)
    return _verdict(scope, None, text, tally.energy if ended else None, duration, tally.peak,
                    counted, ended)


# ---------------------------------------------------------- Protocol engine
# One ChargerSession per connection: frames in, replies and CALLs out, every
# happening published on the EventBus.


LaterMade = tuple[dict, Optional[Callable[[], None]]]  # a LaterReply's reply, and what follows it
_LATER_REPLIES: "set[asyncio.Future]" = set()  # the LaterReply tasks in flight


class LaterReply:
    """What a charger-action handler returns when its reply needs I/O first (SignCertificate's
    openssl check): ``making``, awaited for the reply payload and what to run once that reply is
    sent (or None).  The session goes on reading the charger's frames meanwhile."""

    __slots__ = ("making",)

    def __init__(self, making: "collections.abc.Awaitable[LaterMade]") -> None:
        self.making = making

    def start(self, session: "ChargerSession", frame: "Frame", label: str,
              fault: Optional["FiredReply"]) -> None:
        """Answer ``frame`` once the reply is made, as ChargerCalls.on_call would have (with the
        reply fault that fired on it, if any)."""
        session.replies_withheld += 1
        task = asyncio.ensure_future(self._answer(session, frame, label, fault))
        _LATER_REPLIES.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(_LATER_REPLIES.discard)

    async def _answer(self, session: "ChargerSession", frame: "Frame", label: str,
                      fault: Optional["FiredReply"]) -> None:
        try:
            reply, then = await self.making
        except Exception as exc:  # a bug of ours: the charger still gets its answer
            session.log("error", "handler for %s failed: %s: %s" % (label, type(exc).__name__, exc))
            reply, then = None, None
        finally:
            session.replies_withheld -= 1
        if session.closed:
            return
        if reply is None:
            text, follow = self._internal_error(session, frame, label), []
        else:
            text, follow = session.charger_calls.reply_and_what_follows(frame, label, fault, reply)
        try:
            if text is not None:
                await session.websocket.send(text)
        except websockets.ConnectionClosed:
            return
        for callback in follow + ([then] if then is not None else []):
            callback()

    @staticmethod
    def _internal_error(session: "ChargerSession", frame: "Frame", label: str) -> str:
        description = "the mock server failed to handle %s" % frame.action
        session.bus.publish("call_answered", session.charger_id, session, action=frame.action,
                            payload=frame.payload, reply=None, error=INTERNAL_ERROR)
        return session.answer(build_call_error(frame.message_id, INTERNAL_ERROR, description),
                              label + " CALLERROR", INTERNAL_ERROR + " " + description)


class CallOutcome:
    """How a server CALL ended: "result", "error", "timeout" or "failed"."""

    __slots__ = ("kind", "payload", "error_code", "error_description")

    def __init__(self, kind: str, payload: Any = None, error_code: str = "",
                 error_description: str = "") -> None:
        self.kind = kind
        self.payload = payload
        self.error_code = error_code
        self.error_description = error_description


class PendingCall:
    """A CALL the server sends or has queued for one charger.

    ``payload`` is in standard 1.6 spelling; the dialect of the connection is
    applied when it is sent.  ``raw_text``, for a CALL the operator typed with
    ``raw``, is sent as typed instead (its id and action read from it).
    ``outcome`` resolves to a CallOutcome, and ``on_done`` (if any) is called
    with it.
    """

    __slots__ = ("action", "payload", "message_id", "raw_text", "outcome", "on_done", "sent_at")

    def __init__(self, action: str, payload: Any,
                 on_done: Optional[Callable[[CallOutcome], None]] = None,
                 message_id: Optional[str] = None, raw_text: Optional[str] = None) -> None:
        self.action = action
        self.payload = payload
        self.message_id = message_id if message_id is not None else str(uuid.uuid4())
        self.raw_text = raw_text
        self.outcome: asyncio.Future[CallOutcome] = asyncio.get_running_loop().create_future()
        self.on_done = on_done
        self.sent_at = 0.0

    def finish(self, outcome: CallOutcome) -> None:
        if not self.outcome.done():
            self.outcome.set_result(outcome)
            if self.on_done is not None:
                self.on_done(outcome)


# What a per-connection set is until something is put in it: most connections never warn.
_NOTHING_YET: frozenset = frozenset()


class WarnOnce:
    """A connection's warn-once table: each mistake is reported once, and the table is bounded.

    Keys name a mistake (an action, a field, a rule).  At most
    MAX_WARNINGS_PER_CHARGER keys are kept; after that, one line says that
    the rest are suppressed.
    """

    __slots__ = ("session", "warned", "suppressed")

    def __init__(self, session: "ChargerSession") -> None:
        self.session = session
        # the keys reported (a set from the first warning on: most connections never warn)
        self.warned: Union[set, frozenset] = _NOTHING_YET
        self.suppressed = 0

    def __call__(self, key: tuple, text: "Union[str, Callable[[], str]]",
                 spec: bool = False) -> None:
        """Warn once per ``key``; ``spec``: it is a spec warning (counted for --strict scenarios).

        ``text`` may be a function that makes the text: it runs only when the
        warning is printed, so a charger that repeats a mistake on every frame
        costs a set lookup, not a format.
        """
        if spec:
            self.session.state.tally.count(key)
        if key in self.warned:
            return
        if len(self.warned) >= MAX_WARNINGS_PER_CHARGER:
            self.suppressed += 1
            if self.suppressed == 1:
                self.session.log("warn",
                                 "%d distinct warnings about this charger so far; further ones are "
                                 "suppressed until it reconnects" % len(self.warned))
            return
        if not self.warned:
            self.warned = set()
        self.warned.add(key)
        text = text if isinstance(text, str) else text()
        if spec:
            self.session.system.count_spec_warning(self.session.state, text)
            self.session.bus.publish("spec_problem", self.session.charger_id, self.session,
                                     key=[str(part)[:200] for part in key], text=text)
        self.session.log("warn", text)

    def spec_problems(self, action: str, problems: list[Problem]) -> None:
        """One warning per action and problem (the field and the rule)."""
        for problem in problems:
            self((action,) + problem.key,
                 lambda problem=problem: "spec: %s.%s (%s; answered anyway, "
                 "--strict rejects it)" % (action, problem, self.session.version.rpc.code(
                     problem.code)), spec=True)


class CallIds:
    """The ids of a charger's recent CALLs: over-long ones and reused ones are reported."""

    __slots__ = ("session", "recent")

    def __init__(self, session: "ChargerSession") -> None:
        self.session = session
        # the ids as a dictionary's keys (values None): for text keys a dictionary is a third to
        # a half the size of a set on Python 3.11 (184 bytes for 5 ids, not 728; 26 KB for the
        # whole RECENT_CALL_IDS, not 33 KB)
        self.recent: dict[str, None] = {}

    def check(self, message_id: str) -> None:
        """Lint the id of a charger's CALL; CallRefused for an over-long one in --strict."""
        session = self.session
        if len(message_id) > MAX_MESSAGE_ID_LENGTH:
            text = "message id is %d characters, OCPP-J allows %d" % (len(message_id),
                                                                      MAX_MESSAGE_ID_LENGTH)
            if session.strict:
                raise CallRefused(FORMATION_VIOLATION, text)
            session.warn_once(("id-length",), "spec: " + text, spec=True)
            # Remember a digest, not the id: ids may be as long as a frame.
            message_id = hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()
        if message_id in self.recent:
            # The FlexiCharge charger reuses one id for every CALL.  The server
            # answers CALLs in order, so the reply is still unambiguous.
            session.warn_once(("id-reuse",),
                              lambda: "spec: message id %s reused; OCPP-J wants a new id for "
                              "every CALL" % _show(message_id), spec=True)
        else:
            if len(self.recent) == RECENT_CALL_IDS:
                self.recent.clear()  # remember the last 1 to 1,000 ids, at a dictionary's cost
            self.recent[message_id] = None


class CallQueue:
    """The server's CALLs to one charger, one outstanding at a time.

    OCPP-J allows one outstanding CALL per direction (section 4.1.1): the
    others wait here and are sent one at a time, each given ``timeout``
    seconds for its reply; a reply (ServerCalls) resolves the outstanding
    call at once.  A task runs only while calls are being sent, and a timer
    stands for the wait for a reply: a fleet's BootData calls all awaiting
    their replies at once cost a timer each, not a task and its frames.
    What it needs of the connection it is given: ``send`` puts a call on the
    wire; ``failed(call, reason, description, line)`` reports one that ended
    without a reply ("timeout" or "failed", and the operator's line);
    ``log(level, text)`` says one was queued.
    """

    __slots__ = ("charger_id", "timeout", "_send", "_failed", "_log", "calls", "outstanding",
                 "_timed_out", "closed", "_sender", "_timer")

    def __init__(self, charger_id: str, timeout: float,
                 send: Callable[[PendingCall], Awaitable[None]],
                 failed: Callable[[PendingCall, str, str, str], None],
                 log: Callable[[str, str], None]) -> None:
        self.charger_id = charger_id
        self.timeout = timeout
        self._send, self._failed, self._log = send, failed, log
        self.calls: list[PendingCall] = []  # a few at most: a list is smaller than a deque
        self.outstanding: Optional[PendingCall] = None
        # message id -> action of the latest calls that timed out (made at the first timeout)
        self._timed_out: Optional[collections.OrderedDict[str, str]] = None
        self.closed = False
        self._sender: Optional[asyncio.Future] = None  # the task sending calls, while one is
        self._timer: Optional[asyncio.TimerHandle] = None  # the outstanding call's timeout

    def call(self, action: str, payload: Any,
             on_done: Optional[Callable[[CallOutcome], None]] = None
             ) -> PendingCall:
        """Queue a CALL; it is sent when the ones before it are done."""
        return self._enqueue(PendingCall(action, payload, on_done))

    def send_raw(self, text: str) -> PendingCall:
        """Queue a frame typed by the operator, sent as is, in order with the CALLs.

        A raw CALL is still the server's CALL: its reply is matched, linted
        and shown like any other.
        """
        try:
            frame: Optional[Frame] = parse_frame(text)
        except FrameError:
            frame = None
        if frame is not None and frame.kind == CALL:
            return self._enqueue(PendingCall(frame.action or "raw", frame.payload,
                                             message_id=frame.message_id, raw_text=text))
        return self._enqueue(PendingCall("raw", None, raw_text=text))

    def _enqueue(self, call: PendingCall) -> PendingCall:
        if self.closed:
            call.finish(CallOutcome("failed", error_description="%s is disconnected"
                                    % printable(self.charger_id)))
            return call
        ahead = self.pending()
        if ahead and call.action != "raw":
            self._log("info", "%s queued behind %s%s (one outstanding CALL per charger)" % (
                printable(call.action), printable(ahead[0].action),
                " and %d more" % (len(ahead) - 1) if len(ahead) > 1 else ""))
        self.calls.append(call)
        self._send_queued()
        return call

    def drop(self, call: PendingCall, why: str) -> bool:
        """Take a call that has not been sent yet off the queue (it fails with ``why``); False if it
        was sent."""
        if call not in self.calls:
            return False
        self.calls.remove(call)
        call.finish(CallOutcome("failed", error_description=why))
        return True

    def pending(self) -> list[PendingCall]:
        """The outstanding call, then the queued ones, in order."""
        return ([self.outstanding] if self.outstanding is not None else []) + list(self.calls)

    def _send_queued(self) -> None:
        """Start sending the queued calls, unless a call is being sent or awaits its reply."""
        if self.calls and self._sender is None and self.outstanding is None and not self.closed:
            self._sender = asyncio.ensure_future(self._send_calls())

    async def _send_calls(self) -> None:
        """Send the queued calls in order until one awaits its reply (its timer set) or none is
        left."""
        try:
            while self.calls and self.outstanding is None:
                call = self.calls.pop(0)
                if call.action == "raw":  # not a CALL: nothing to wait for
                    await self._send(call)
                    call.finish(CallOutcome("result"))
                    continue
                self.outstanding = call
                call.sent_at = time.monotonic()
                try:
                    await self._send(call)
                except BaseException:
                    if self.outstanding is call:
                        self.outstanding = None
                    raise
                if self.outstanding is call:  # not answered while it was being sent
                    self._timer = asyncio.get_running_loop().call_later(
                        self.timeout, self._expired, call)
        finally:
            self._sender = None

    def _expired(self, call: PendingCall) -> None:
        """The outstanding ``call`` had no reply within ``timeout`` seconds: on to the next."""
        self._timer = None
        if self.outstanding is not call:
            return
        timeout = self.timeout
        line = "no reply to %s within %g s; moving on" % (printable(call.action), timeout)
        self._failed(call, "timeout", "no reply within %g s" % timeout, line)
        if self._timed_out is None:
            self._timed_out = collections.OrderedDict()
        self._timed_out[call.message_id] = printable(call.action)
        if len(self._timed_out) > 100:
            self._timed_out.popitem(last=False)
        self.resolve(call, CallOutcome("timeout"))

    def stop(self) -> None:
        """The connection is closing: sending stops where it is (fail_pending follows)."""
        if self._sender is not None:
            self._sender.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def resolve(self, call: PendingCall, outcome: CallOutcome) -> None:
        """End a call now (the next command is not "queued behind" an answered one), and send the
        next."""
        if self.outstanding is call:
            self.outstanding = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        call.finish(outcome)
        self._send_queued()

    def late(self, message_id: str) -> Optional[str]:
        """The action of the timed-out call ``message_id`` answers late, if any (asked once)."""
        return self._timed_out.pop(message_id, None) if self._timed_out else None

    def fail_pending(self, reason: str) -> None:
        """The connection is gone: every call still pending fails, with ``reason``."""
        self.closed = True
        self.stop()
        pending = self.pending()
        self.calls.clear()
        self.outstanding = None
        for call in pending:
            if call.action != "raw" and not call.outcome.done():
                line = "%s failed: %s" % (printable(call.action), reason)
                self._failed(call, "failed", reason, line)
            call.finish(CallOutcome("failed", error_description=reason))


class ServerCalls:
    """A connection's side of the server's CALLs: sends them for its CallQueue, reports those that
    end without a reply, and reads the charger's replies (matched to the queue's outstanding call,
    shown, linted, published as "reply_received", followed up by SERVER_CALL_RESULT_HANDLERS)."""

    __slots__ = ("session",)

    def __init__(self, session: "ChargerSession") -> None:
        self.session = session

    async def send(self, call: PendingCall) -> None:
        """Send one of the server's CALLs (for the CallQueue): as typed for ``raw``, else in the
        connection's dialect, noting the ids it gives out."""
        session = self.session
        if call.raw_text is not None:
            label = "(raw)" if call.action == "raw" else "(raw) " + printable(call.action)
            await session.send_text(call.raw_text, label, call.raw_text)
            return
        payload = call.payload
        if session.state.boot_status == "Rejected":
            session.warn_once(("boot-rejected",), lambda: "its boot is Rejected: a central system "
                              "should send it nothing until it accepts one (OCPP 1.6 section 4.2, "
                              "2.0.1 B03); %s sent anyway" % call.action)
        if call.action in session.version.checks.requested:
            note_requested(session, call.action, payload)
        if session.dialect == DIALECT_FLEXICHARGE:
            payload = to_flexicharge_payload(call.action, payload)
        payload_json = dump_json(payload)
        await session.send_text(build_call(call.message_id, call.action, payload_json), call.action,
                                payload_json)

    def failed(self, call: PendingCall, reason: str, description: str, line: str) -> None:
        """A server CALL ended without a reply: the operator's ``line``, and "call_failed"."""
        session = self.session
        session.log("warn", line)
        session.bus.publish("call_failed", session.charger_id, session, action=call.action,
                            reason=reason, description=description)

    def on_reply(self, frame: Frame) -> None:
        """A CALLRESULT or CALLERROR from the charger."""
        call = self.session.queue.outstanding
        if call is None or frame.message_id != call.message_id:
            self._on_unexpected(frame)
            return
        self._hint_dialect(frame)
        if frame.flexicharge_result:
            self._use_flexicharge_dialect()
            if frame.action != call.action:
                self.session.warn_once(("reply-action", call.action),
                                       lambda: "answered %s with a reply naming %s"
                                       % (call.action, _show(frame.action)))
        if frame.kind == CALLRESULT:
            self._on_result(frame, call)
        else:
            self._on_error(frame, call)

    def _hint_dialect(self, frame: Frame) -> None:
        """A --dialect the charger's replies say is not its own: say so once (the replies alone are
        not wrong)."""
        session, forced = self.session, self.session.system.options.dialect
        if (forced == DIALECT_FLEXICHARGE and frame.kind == CALLRESULT
            and not frame.flexicharge_result):
            session.warn_once(("dialect-hint",),
                              "answers with standard 3-element replies although --dialect "
                              "flexicharge: it may not read the FlexiCharge spellings sent to it "
                              "(transactionID, "
                              "epoch expiryDate) and reject them; try --dialect auto")
        elif forced == session.version.dialects[0] and frame.flexicharge_result:
            session.warn_once(("dialect-hint",),
                              "answers with FlexiCharge 4-element replies although --dialect "
                              "ocpp1.6: it may expect the FlexiCharge spellings (transactionID); "
                              "try --dialect auto")

    def _use_flexicharge_dialect(self) -> None:
        """A 4-element reply: the charger speaks the FlexiCharge dialect (with --dialect auto,
        answer in kind)."""
        session = self.session
        if session.dialect != DIALECT_FLEXICHARGE and session.system.options.dialect == "auto" \
                and DIALECT_FLEXICHARGE in session.version.dialects:
            session.dialect = session.state.dialect = DIALECT_FLEXICHARGE
            session.log("info",
                        "speaks the FlexiCharge dialect (4-element replies); answering in kind")

    def on_malformed_reply(self, reply_id: str, description: str) -> bool:
        """A reply too broken to parse: if it names the outstanding call, that call fails now."""
        call = self.session.queue.outstanding
        if call is None or reply_id != call.message_id:
            return False
        self.failed(call, "failed", "malformed reply: " + description,
                    "malformed reply to %s: %s" % (printable(call.action), description))
        outcome = CallOutcome("failed", error_description="malformed reply: " + description)
        self.session.queue.resolve(call, outcome)
        return True

    def _on_unexpected(self, frame: Frame) -> None:
        late = self.session.queue.late(frame.message_id)
        self.session.frame_in("(reply)", frame.payload if frame.kind == CALLRESULT else
                              [frame.error_code, frame.error_description, frame.error_details])
        if late is not None:
            self.session.log("warn", "late reply to %s, which had already timed out" % late)
        else:
            self.session.log("warn",
                             "reply to message id %s, which the server never sent or "
                             "already has an "
                             "answer for" % _show(frame.message_id))

    def _on_result(self, frame: Frame, call: PendingCall) -> None:
        session = self.session
        label = printable(call.action)
        session.frame_in(label + ".conf", frame.payload)
        rules = session.version.charger_reply_rules.get(call.action)
        if rules is not None:
            problems = lint_payload(rules, frame.payload)
            if problems:
                session.warn_once.spec_problems(label + ".conf", problems)
        session.bus.publish("reply_received", session.charger_id, session, action=call.action,
                            payload=frame.payload, error=None)
        follow_up = session.version.result_handlers.get(call.action)
        if follow_up is not None and isinstance(frame.payload, dict):
            follow_up(session, call.payload, frame.payload)
        self.session.queue.resolve(call, CallOutcome("result", frame.payload))

    def _on_error(self, frame: Frame, call: PendingCall) -> None:
        """A CALLERROR, whatever JSON types its fields have."""
        session = self.session
        code, description, details = frame.error_code, frame.error_description, frame.error_details
        code_text = code if isinstance(code, str) else render_json(code)
        description_text = description if isinstance(description, str) else render_json(description)
        session.frame_in(printable(call.action) + " CALLERROR", "%s %s %s" % (
            printable(code_text), printable(description_text, 400), render_json(details)))
        self._check_error_code(code, code_text)
        for name, value, wanted in (("description", description, str), ("details", details, dict)):
            if not isinstance(value, wanted):
                session.warn_once(("error-" + name,), "spec: CALLERROR %s must be %s, got %s" % (
                    name, "a string" if wanted is str else "an object", _json_type(value)),
                                  spec=True)
        session.bus.publish("reply_received", session.charger_id, session, action=call.action,
                            payload=details, error=code_text)
        self.session.queue.resolve(call, CallOutcome("error", details, code_text, description_text))

    def _check_error_code(self, code: Any, code_text: str) -> None:
        """A CALLERROR code that is not the version's: a spec warning (another version's spelling
        of one of its codes is named as such)."""
        session = self.session
        rpc = session.version.rpc
        if isinstance(code, str) and code in rpc.error_codes:
            return
        if isinstance(code, str) and rpc.code(code) in rpc.error_codes:
            session.warn_once(("error-code", code), lambda: "spec: CALLERROR code %s is the old "
                              "spelling; OCPP %s calls it %s" % (code, rpc.version, rpc.code(code)),
                              spec=True)
            return
        session.warn_once(("error-code", code_text[:50]),
                          lambda: "spec: CALLERROR code %s is not an "
                          "OCPP %s error code" % (_show(code), rpc.version), spec=True)


class ChargingFlow:
    """What happens on its own on a connection: BootData after an accepted boot, then
    --auto-start-after and --auto-stop-after.  Timers end with the connection."""

    __slots__ = ("session", "boot_data_call", "auto_started", "_timers")

    def __init__(self, session: "ChargerSession") -> None:
        self.session = session
        self.boot_data_call: Optional[PendingCall] = None  # the BootData CALL, until it ends
        self.auto_started = False
        self._timers: Optional[list[asyncio.TimerHandle]] = None  # made by the first timer

    def later(self, delay: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` after ``delay`` seconds unless the charger is gone by then."""
        def run() -> None:
            if not self.session.closed:
                callback()
        if self._timers is None:
            self._timers = []
        self._timers.append(asyncio.get_running_loop().call_later(delay, run))

    def cancel(self) -> None:
        for timer in self._timers or ():
            timer.cancel()

    def boot_accepted(self) -> None:
        """After an accepted BootNotification: send BootData, or the handshake is complete.

        A charger that boots again while its BootData is still unanswered
        does not get a second one queued.
        """
        session = self.session
        if not session.system.options.boot_data or \
                DIALECT_FLEXICHARGE not in session.version.dialects:  # BootData is FlexiCharge's
            self.handshake_complete()
        elif self.boot_data_call is None or self.boot_data_call.outcome.done():
            self.boot_data_call = session.call("DataTransfer", boot_data_payload(session.system),
                                               on_done=self._boot_data_done)

    def _boot_data_done(self, outcome: CallOutcome) -> None:
        """BootData ended: answered (the handshake is complete), or not; it is not kept."""
        self.boot_data_call = None
        if outcome.kind in ("result", "error"):
            self.handshake_complete()

    def handshake_complete(self) -> None:
        session = self.session
        session.bus.publish("ready", session.charger_id, session)
        delay = session.system.options.auto_start_after
        if delay is not None and not self.auto_started:
            self.auto_started = True
            session.log("info", "handshake complete; %s in %g s (--auto-start-after)"
                        % (session.version.remote_start, delay))
            self.later(delay, self.start_remotely)
        elif delay is None and not session.system.options.script:
            several = len(session.system.sessions) > 1
            session.log("info", "ready: type %sstartRemote"
                        % ("@%s " % printable(session.charger_id) if several else ""))

    def transaction_started(self, transaction: Transaction) -> None:
        session = self.session
        delay = session.system.options.auto_stop_after
        if delay is None:
            return
        session.log("info", "%s for transaction %s in %g s (--auto-stop-after)"
                    % (session.version.remote_stop, printable(str(transaction.transaction_id), 40),
                       delay))

        def stop() -> None:
            if session.state.transactions.get(transaction.transaction_id) is transaction:
                session.call(session.version.remote_stop,
                             {"transactionId": transaction.transaction_id})
        self.later(delay, stop)

    def start_remotely(self) -> None:
        """--auto-start-after: the version's remote start, with its default payload."""
        session = self.session
        action = session.version.remote_start
        try:
            payload = bare_payload(session.version, action, session.system, session)
        except (CommandError, KeyError) as exc:
            session.log("warn", "%s not sent (--auto-start-after): %s" % (action, exc))
            return
        session.call(action, payload)


# printable already: no need to escape them
ACTION_LABELS = {action: action for table in (CHARGER_REQUESTS, V201_CHARGER_REQUESTS)
                 for action in table}


class ChargerCalls:
    """A connection's side of the charger's CALLs: each checked, handled and answered (or
    refused with a CALLERROR), with the reply fault that fires on it, if any (a FiredReply, whose
    hooks run in place of the handler and on the reply)."""

    __slots__ = ("session",)

    def __init__(self, session: "ChargerSession") -> None:
        self.session = session

    def on_call(self, frame: Frame) -> Optional[str]:
        """The answer to a charger's CALL: its handler's reply, or a CALLERROR."""
        session = self.session
        action, payload, message_id = frame.action, frame.payload, frame.message_id
        label = ACTION_LABELS.get(action) or printable(action)
        session.frame_in(label, None, frame)
        fault = session.system.faults.fire(session, action) if session.reply_faults else None
        try:
            session.call_ids.check(message_id)
            # _handler's common case first: a known action, without --strict's boot check
            handler = (not session.strict and session.version.handlers.get(action)) or \
                self._handler(action, payload)
            rules = session.version.charger_request_rules[action]
            if not rules.valid(payload):  # nearly every payload is: lint_payload's test, inline
                self._check_payload(action, rules, payload)
            if session.state.boot_status in ("Pending", "Rejected"):
                check_call_allowed(session, action, payload)
            if action in session.version.checks.on_call:  # the version's, before any fault
                session.version.checks.on_call[action](session, payload)
            if session.replies_withheld:
                check_failed(session, "two-calls",
                             "sent %s while its previous CALL still awaited its reply" % label)
            if fault is not None and fault.refuses:
                return fault.refuse(session, label, payload, message_id)
            try:
                reply = fault.run(session, handler, payload) if fault else handler(session, payload)
            except CallRefused:  # a handler's own refusal (a replay's recorded CALLERROR)
                raise
            except Exception as exc:
                session.log("error", "handler for %s failed: %s: %s"
                            % (label, type(exc).__name__, exc))
                raise CallRefused(INTERNAL_ERROR, "the mock server failed to handle %s"
                                  % action) from None
        except CallRefused as refusal:
            return self._refused(refusal, action, payload, label, message_id)
        if type(reply) is LaterReply:
            reply.start(session, frame, label, fault)
            return None
        return self.reply_text(frame, label, fault, reply)

    def reply_text(self, frame: Frame, label: str, fault: Optional["FiredReply"], reply: dict
                   ) -> Optional[str]:
        """The CALLRESULT that answers ``frame`` with the handler's ``reply``, as the ``fault``
        (if any) has it; None when the fault sends it itself, later, or not at all."""
        session, action, message_id = self.session, frame.action, frame.message_id
        if fault is not None:
            reply = fault.change(session, reply)
        if session.bus.routes["call_answered"]:
            session.bus.publish("call_answered", session.charger_id, session, action=action,
                                payload=frame.payload, reply=reply, error=None)
        reply_json = "{}" if reply == {} else dump_json(reply)
        reply_action = action if session.dialect == DIALECT_FLEXICHARGE else None
        text = build_call_result(message_id, reply_json, reply_action)
        if fault is not None:
            return fault.send(session, text, label, reply_json, message_id)
        if len(text) <= MIN_REPLY_LIMIT:  # session.answer's common case
            return session.publish_out(text, label + ".conf", reply_json)
        return session.answer(text, label + ".conf", reply_json)

    def reply_and_what_follows(self, frame: Frame, label: str, fault: Optional["FiredReply"],
                               reply: dict) -> tuple[Optional[str], list[Callable[[], None]]]:
        """reply_text for a LaterReply's reply, and what its fault would run once it is sent."""
        session = self.session
        held, session.after_reply_calls = session.after_reply_calls, []
        try:
            return self.reply_text(frame, label, fault, reply), session.after_reply_calls
        finally:
            session.after_reply_calls = held

    def _refused(self, refusal: CallRefused, action: str, payload: Any, label: str,
                 message_id: str) -> Optional[str]:
        """A CALL answered with the CALLERROR ``refusal`` names."""
        session = self.session
        code = session.version.rpc.code(refusal.code)
        shown = code + " " + printable(refusal.description, 400)
        session.log("warn", "%s answered with %s: %s" % (label, code,
                                                         printable(refusal.description, 400)))
        session.after_reply_calls.clear()
        session.bus.publish("call_answered", session.charger_id, session, action=action,
                            payload=payload, reply=None, error=code)
        text = build_call_error(message_id, code, refusal.description, refusal.details)
        return session.answer(text, label + " CALLERROR", shown)

    def _handler(self, action: str, payload: dict) -> Callable[["ChargerSession", dict], dict]:
        """The handler of a charger's CALL; CallRefused when there is none or it may not be
        called now."""
        session = self.session
        if session.strict and action != "BootNotification" \
                and session.state.boot_status != "Accepted" \
                and not asked_for(session.state.history, action, payload):  # B02
            raise CallRefused(SECURITY_ERROR,
                              "%s before BootNotification was accepted (--strict)" % action)
        version = session.version
        handler = version.handlers.get(action)
        if handler is not None:
            return handler
        if action in version.server_requests:
            raise CallRefused(NOT_SUPPORTED,
                              "%s is sent by the central system, not by a charger" % action)
        close = difflib.get_close_matches(action[:100], version.handlers, n=1)
        raise CallRefused(NOT_IMPLEMENTED, "unknown action %s%s" % (
            printable(action, 60), " (did you mean %s?)" % close[0] if close else ""))

    def _check_payload(self, action: str, rules: Object, payload: dict) -> None:
        """Lint a CALL's payload: CallRefused in --strict, else one warning per problem."""
        session = self.session
        problems = lint_payload(rules, payload)
        if problems and session.strict:
            first = problems[0]
            session.system.count_spec_warning(session.state)
            session.state.tally.count((action,) + first.key)
            raise CallRefused(first.code, "%s: %s" % (action, first))
        if problems:
            session.warn_once.spec_problems(action, problems)


# A ChargerSession's attributes: one per connection, as slots, not a dictionary (on Python 3.9 and
# 3.10 a dictionary of these 23 is about 1 KB).  A new attribute is added here, or it raises.
_SESSION_SLOTS = ("system", "bus", "websocket", "charger_id", "peer", "subprotocol", "version",
                  "state", "dialect", "strict", "charger_calls", "server_calls", "queue", "flow",
                  "warn_once", "closed", "after_reply_calls", "call_ids", "_incoming",
                  "replies_withheld", "reply_faults", "fault_frames", "held_replies")


class ChargerSession:
    """One charger's connection, as a protocol engine: frames in, replies and CALLs out.

    Every happening is published on the system's EventBus.  The charger's CALLs are answered by
    ``charger_calls``; the server's own go through ``queue`` (a CallQueue) and ``server_calls``;
    what happens on its own (BootData, automation) is ``flow``; what the server knows of the charge
    point is ``state`` (it outlives the connection).  Faults act through ``reply_faults`` (the
    FaultTable's index), ``fault_frames`` and ``held_replies``: with none in force, one check each.
    """

    __slots__ = _SESSION_SLOTS

    def __init__(self, system: "CentralSystem", websocket: Any, charger_id: str, peer: str,
                 subprotocol: Optional[str]) -> None:
        self.system = system
        self.bus = system.bus
        self.websocket = websocket
        self.charger_id = charger_id
        self.peer = peer
        self.subprotocol = subprotocol
        # the version its subprotocol names; --ocpp's for a charger that offered none
        self.version: OcppVersion = VERSION_OF_SUBPROTOCOL.get(subprotocol or "",
                                                              system.default_version)
        self.state = system.state_for(charger_id)
        dialects = self.version.dialects
        self.dialect = system.options.dialect if system.options.dialect in dialects else dialects[0]
        self.state.dialect = self.dialect
        self.state.version = self.version.name
        self.strict = system.options.strict
        self.charger_calls = ChargerCalls(self)
        self.server_calls = ServerCalls(self)
        self.queue = CallQueue(charger_id, system.options.call_timeout, self.server_calls.send,
                               self.server_calls.failed, self.log)
        self.flow = ChargingFlow(self)
        self.warn_once = WarnOnce(self)
        self.closed = False
        self.after_reply_calls: list[Callable[[], None]] = []  # run once the reply is sent
        self.call_ids = CallIds(self)
        # the frame being handled, and whether it was binary
        self._incoming: tuple[str, bool] = ("", False)
        self.replies_withheld = 0  # replies to its CALLs not sent yet (LaterReply, delay=)
        self.reply_faults = system.faults.reply_faults  # the reply faults in force, by action
        self.fault_frames: dict[Any, int] = {}  # disconnect after=N: frames counted, by fault
        self.held_replies: Optional[HeldReplies] = None  # made when a delay fault first holds one

    def call(self, action: str, payload: Any,
             on_done: Optional[Callable[[CallOutcome], None]] = None
             ) -> PendingCall:
        """Queue a CALL to this charger (see CallQueue), noting the ids it gives out."""
        if isinstance(payload, dict):
            self.system.note_given_ids(action, payload)
        return self.queue.call(action, payload, on_done)

    # -- receiving

    async def serve(self) -> None:
        """Answer the charger until it disconnects, then fail what is pending."""
        turn_ends = time.monotonic() + TURN_SECONDS
        try:
            while True:  # not async for: its generator would cost every connection 250 bytes
                message = await self.websocket.recv()
                try:
                    reply = self.on_message(message)
                except Exception as exc:  # a bug of ours must not cost the charger its connection
                    self.log("error", "internal error while handling a frame: %s: %s"
                             % (type(exc).__name__, exc))
                    reply = None
                if reply is not None:
                    if not send_at_once(self.websocket, reply):
                        await self.websocket.send(reply)
                    if self.after_reply_calls:
                        self._run_after_reply()
                # Buffered frames are read without suspending: after its
                # time slice, give the other chargers, the console and the
                # signal handlers their turn, or one flooding charger starves
                # them.
                if time.monotonic() >= turn_ends:
                    await asyncio.sleep(0)
                    turn_ends = time.monotonic() + TURN_SECONDS
        except websockets.ConnectionClosed:
            pass
        except UnicodeDecodeError:
            await close_invalid_utf8(self.websocket)
        finally:
            self.closed = True
            self.queue.stop()
            self.flow.cancel()
            if self.held_replies is not None:
                self.held_replies.cancel()
            self.queue.fail_pending("%s disconnected" % printable(self.charger_id))

    def _run_after_reply(self) -> None:
        callbacks, self.after_reply_calls = self.after_reply_calls, []
        for callback in callbacks:
            callback()

    def on_message(self, message: Any) -> Optional[str]:
        """Handle one frame from the charger; the text to answer it with, if any.

        Each frame is published exactly once, as a "frame" event, by
        frame_in, once it is known what it is.
        """
        if self.fault_frames:
            self.system.faults.frame_in(self)
        if isinstance(message, bytes):
            self._incoming = (message.decode("utf-8", "backslashreplace"), True)
            size, why = len(message), "OCPP-J uses text frames" if self.strict else None
            try:
                message = message.decode("utf-8")
            except UnicodeDecodeError:
                why = "not UTF-8, and OCPP-J uses text frames"
            if why is not None:
                self.frame_in("(binary frame)", printable(self._incoming[0], MAX_SHOWN))
                self.log("warn", "binary frame of %d bytes ignored: %s" % (size, why))
                return None
            self.warn_once(("binary",),
                           "sent a binary frame; OCPP-J uses text frames (handled as text)")
        else:
            self._incoming = (message, False)
        try:
            frame = parse_frame(message)
        except FrameError as exc:
            return self.on_bad_frame(message, exc)
        if frame.kind == CALL:
            return self.charger_calls.on_call(frame)
        self.server_calls.on_reply(frame)
        return None

    def on_bad_frame(self, message: str, exc: FrameError) -> Optional[str]:
        """A frame that is not usable OCPP-J: the CALLERROR OCPP-J calls for, or a log line."""
        self.frame_in("(bad frame)", printable(message, MAX_SHOWN))
        if exc.reply_id is not None and self.server_calls.on_malformed_reply(
                exc.reply_id, exc.description):
            return None
        message_id, code, rpc = exc.message_id, exc.code, self.version.rpc
        if (message_id is None or code is None) and exc.rpc_error and rpc.answers_unreadable:
            message_id, code = message_id or "-1", exc.rpc_error
        if message_id is None or code is None:
            self.log("warn", "%s; frame ignored" % exc.description)
            return None
        code = rpc.code(code)
        reply = build_call_error(message_id, code, exc.description)
        if self.over_reply_limit(reply, "CALLERROR"):
            return None
        self.log("warn", "%s; answered %s" % (exc.description, code))
        return self.publish_out(reply, "CALLERROR", code + " " + exc.description)

    def answer(self, text: str, label: str, shown: Any) -> Optional[str]:
        """The answer to the frame being handled, published; the caller sends what it returns.

        None, and a line, when the answer would be larger than the frame or
        MIN_REPLY_LIMIT bytes, whichever is more (a message id thousands of
        characters long): what a charger sends is never amplified.
        """
        if len(text) > MIN_REPLY_LIMIT and self.over_reply_limit(text, label):  # rarely long
            return None
        return self.publish_out(text, label, shown)

    def over_reply_limit(self, text: str, label: str) -> bool:
        """True, and a line, when ``text`` may not answer the frame being handled (see answer)."""
        if len(text) <= MIN_REPLY_LIMIT or len(text) < len(self._incoming[0]):  # nearly always
            return False
        size, frame_size = _utf8_size(encodable(text)), _utf8_size(self._incoming[0])
        if size <= max(MIN_REPLY_LIMIT, frame_size):
            return False
        self.log("warn",
                 "%s not sent: its %d bytes would answer a frame of %d bytes (answers are at "
                 "most the frame or %d bytes)" % (label, size, frame_size, MIN_REPLY_LIMIT))
        return True

    def publish_out(self, text: str, label: str, shown: Any) -> str:
        """Publish a frame for the charger, made encodable; the caller sends the ``text`` it
        returns.

        Every frame the server sends passes here.
        """
        if not text.isascii():
            text = encodable(text)
        self.state.tally.messages_out += 1
        self.bus.publish_frame(self.charger_id, self, "out", text, label, shown)
        return text

    def frame_in(self, label: str, shown: Any, parsed: Optional[Frame] = None) -> None:
        """Publish the frame being handled, with what the terminal shows of it (see FrameEvent:
        None and the ``parsed`` CALL, which the terminal renders only when it prints it)."""
        text, binary = self._incoming
        self.state.tally.messages_in += 1
        self.bus.publish_frame(self.charger_id, self, "in", text, label, shown, binary, parsed)

    def log(self, level: str, text: str) -> None:
        """A line about this charger for the operator, at a level of EVENT_FIELDS["log"]."""
        self.bus.publish("log", self.charger_id, self, level=level, text=text)

    async def send_text(self, text: str, label: str, shown: Any) -> None:
        """Send one frame to the charger, published first."""
        await self.websocket.send(self.publish_out(text, label, shown))

    def after_reply(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the reply to the current CALL has been sent."""
        self.after_reply_calls.append(callback)


# --------------------------------------------------------- Behaviour checks
# What a good charger does, checked as it talks: each violation is reported
# like a spec warning (once per charger and rule, naming the rule) and fails
# a --strict scenario run; it never changes a reply.  A charge point's
# history starts again at each BootNotification; a message a TriggerMessage
# asked for is exempt from the timing rules.

# OCPP 1.6 section 4.9: the status each connector status may change to.
_STATUS_CHANGES = {
    "Available": ("Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Reserved",
                  "Unavailable", "Faulted"),
    "Preparing": ("Available", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing", "Faulted"),
    "Charging": ("Available", "SuspendedEV", "SuspendedEVSE", "Finishing", "Unavailable",
                 "Faulted"),
    "SuspendedEV": ("Available", "Charging", "SuspendedEVSE", "Finishing", "Unavailable",
                    "Faulted"),
    "SuspendedEVSE": ("Available", "Charging", "SuspendedEV", "Finishing", "Unavailable",
                      "Faulted"),
    "Finishing": ("Available", "Preparing", "Unavailable", "Faulted"),
    "Reserved": ("Available", "Preparing", "Unavailable", "Faulted"),
    "Unavailable": ("Available", "Preparing", "Charging", "SuspendedEV", "SuspendedEVSE",
                    "Faulted"),
    "Faulted": ("Available", "Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing",
                "Reserved", "Unavailable"),
}
TIMING_TOLERANCE = 0.1  # a charger may be this much of an interval early (clocks, scheduling) ...
TIMING_SLACK = 1.0  # ... and at least this many seconds


class ChargerHistory:
    """What the checks remember of a charge point since its last BootNotification."""

    __slots__ = ("booted_at", "boot_interval", "boot_status", "heartbeat_at", "heartbeat_interval",
                 "triggered_messages", "energy", "transaction_times", "transaction_events",
                 "statuses", "requested")

    def __init__(self) -> None:
        self.booted_at = 0.0  # monotonic time of its last BootNotification
        self.boot_interval = 0  # the interval that BootNotification's reply gave
        self.boot_status: Optional[str] = None
        self.heartbeat_at = 0.0
        # as BootNotification.conf or an accepted ChangeConfiguration set it
        self.heartbeat_interval = 0
        # messages a TriggerMessage asked for, not yet sent (a set once one is: see triggered)
        self.triggered_messages: Union[set, frozenset] = _NOTHING_YET
        # (transaction, phase) -> its last register reading, Wh (None until its first reading)
        self.energy: Optional[dict[tuple[int, Any], float]] = None
        # transaction -> the timestamp of its last message (None until its first)
        self.transaction_times: Optional[dict[int, str]] = None
        # 2.0.1: the station's transactions as its TransactionEvents tell them, kept across its
        # boots (a transaction outlives them); None until its first TransactionEvent
        self.transaction_events: Optional[TransactionEvents] = None
        # 2.0.1: (EVSE, connector) -> the status last reported since this boot or connection
        self.statuses: Optional[dict[tuple[Any, Any], Any]] = None
        # (action, requestId) of the messages the server's requests asked for (None until one)
        self.requested: Optional[dict[tuple[str, Any], None]] = None

    @property
    def triggered(self) -> set:
        """The messages a TriggerMessage asked for, not yet sent, to add to (the set is made then:
        most chargers are never sent one)."""
        if self.triggered_messages is _NOTHING_YET:
            self.triggered_messages = set()
        return self.triggered_messages  # type: ignore[return-value]


def check_failed(session: "ChargerSession", rule: str,
                 text: "Union[str, Callable[[], str]]") -> None:
    """A behaviour check failed: one warning per charger and rule, counted like a spec warning.

    ``text`` may be a function that makes it, as for WarnOnce: a check that
    fails on every message (an early Heartbeat) then costs a set lookup."""
    if ("check", rule) in session.warn_once.warned:  # reported already: nothing to make
        session.state.tally.count(("check", rule))
        return
    session.warn_once(("check", rule), lambda: "check %s: %s" % (
        rule, text if isinstance(text, str) else text()), spec=True)


def _timed_early(last: float, interval: float, now: float) -> bool:
    return bool(last and interval
                and now - last < interval - max(TIMING_SLACK, interval * TIMING_TOLERANCE))


def check_boot(session: "ChargerSession", status: str, interval: int) -> None:
    """Boot retries while Pending or Rejected come no faster than the interval given; then the
    history starts again."""
    history, now = session.state.history, time.monotonic()
    if history.boot_status in ("Pending", "Rejected") and _timed_early(
            history.booted_at, history.boot_interval, now):
        check_failed(session, "boot-retry",
                     "BootNotification again after %.1f s while %s; the interval given was "
                     "%d s" % (now - history.booted_at, history.boot_status, history.boot_interval))
    fresh = session.state.history = ChargerHistory()  # the history starts again
    fresh.booted_at, fresh.boot_interval, fresh.boot_status = now, interval, status
    fresh.heartbeat_interval = interval if status == "Accepted" else 0
    # but not what outlives a boot: its transactions, and what the server asked it for
    fresh.transaction_events, fresh.requested = history.transaction_events, history.requested


def asked_for(history: "ChargerHistory", action: str, payload: Any) -> bool:
    """Did the server ask for this CALL of the charger's: a triggered message, or what one of its
    requests makes the charger send, by the request's requestId (BehaviourChecks.requested)?"""
    return action in history.triggered_messages or bool(
        history.requested and type(payload) is dict
        and (action, _request_id(payload)) in history.requested)


def check_call_allowed(session: "ChargerSession", action: str, payload: Any = None) -> None:
    """No CALL but BootNotification before the boot is Accepted (OCPP 1.6 section 4.2, 2.0.1
    B02), but for what the server asked for: a triggered message, or what one of its requests
    makes the charger send (the version's BehaviourChecks.requested)."""
    status, history = session.state.boot_status, session.state.history
    if action != "BootNotification" and status in ("Pending", "Rejected") and not asked_for(
            history, action, payload):
        check_failed(session, "call-before-boot", "sent %s while its boot is %s"
                     % (printable(action), status))


def check_heartbeat(session: "ChargerSession") -> None:
    history, now = session.state.history, time.monotonic()
    if "Heartbeat" in history.triggered_messages:
        history.triggered_messages.discard("Heartbeat")
    elif ("check", "heartbeat-interval") not in session.warn_once.warned and _timed_early(
            history.heartbeat_at, history.heartbeat_interval, now):  # told once: not timed again
        last, interval = history.heartbeat_at, history.heartbeat_interval
        check_failed(session, "heartbeat-interval",
                     lambda: "Heartbeat %.1f s after the last; the interval set is %d s"
                     % (now - last, interval))
    history.heartbeat_at = now


def check_status_change(session: "ChargerSession", connector: Optional[int], status: str) -> None:
    previous = session.state.connectors.get(connector if connector is not None else -1)
    previous = previous.split(" (")[0] if previous else None
    allowed = _STATUS_CHANGES.get(previous or "")
    if (allowed is not None and status != previous and status in _STATUS_CHANGES
        and status not in allowed):
        check_failed(session, "status-transition",
                     "connector %s went from %s to %s, which the OCPP 1.6 status "
                     "diagram does not allow" % (connector, previous, printable(status)))


def check_transaction_message(session: "ChargerSession", transaction_id: Optional[int],
                              timestamp: Any, action: str) -> None:
    """Queued transaction messages arrive in order, with their original timestamps."""
    if transaction_id is None or not isinstance(timestamp, str):
        return
    history = session.state.history
    times = history.transaction_times
    if times is None:
        times = history.transaction_times = {}
    last = times.get(transaction_id)
    if last is not None and timestamp < last:  # ISO-8601 UTC text sorts as time does
        check_failed(session, "transaction-order",
                     "%s for transaction %s is stamped %s, before the message that "
                     "came first (%s)"
                     % (action, printable(str(transaction_id), 40), printable(timestamp, 40),
                        printable(last, 40)))
    if len(times) < MAX_OPEN_TRANSACTIONS or transaction_id in times:
        times[transaction_id] = max(timestamp, last or "")


def _register_readings(payload: dict) -> list[tuple[Any, Any, Any]]:
    """(value, unit, phase) of each Energy.Active.Import.Register reading of a MeterValues, as
    _meter_readings reads them; the standard form in one plain loop (it runs for every
    MeterValues)."""
    register = "Energy.Active.Import.Register"
    if "values" not in payload:
        try:
            return [(item["value"], item.get("unit", "Wh"), item.get("phase"))
                    for sample in payload["meterValue"] for item in sample["sampledValue"]
                    if item.get("measurand", register) == register]
        except (KeyError, TypeError, AttributeError):  # not quite the standard form
            pass
    return [(value, unit, phase) for measurand, value, unit, phase in _meter_readings(payload)
            if measurand == register]


def check_energy(session: "ChargerSession", payload: dict) -> None:
    """Energy.Active.Import.Register never decreases within a transaction (Wh and kWh alike)."""
    transaction_id = as_int(payload.get("transactionId"))
    if transaction_id is None:
        return
    history = session.state.history
    energy = history.energy
    if energy is None:
        energy = history.energy = {}
    for value, unit, phase in _register_readings(payload):
        try:
            reading = float(value) if unit != "kWh" else float(value) * 1000
        except (TypeError, ValueError):
            continue
        key = (transaction_id, phase)
        if reading < energy.get(key, reading):
            check_failed(session, "energy-decreases",
                         "Energy.Active.Import.Register of transaction %d fell from "
                         "%g Wh to %g Wh" % (transaction_id, energy[key], reading))
        if len(energy) < 4 * MAX_OPEN_TRANSACTIONS or key in energy:
            energy[key] = reading


def check_lost_transaction(session: "ChargerSession", connector: Optional[int]) -> None:
    """A StartTransaction on a connector whose transaction was never stopped: that one was lost."""
    for transaction in session.state.transactions.values():
        if transaction.connector_id == connector:
            check_failed(session, "transaction-lost",
                         "a new transaction on connector %s while transaction %s "
                         "there was never stopped" % (connector, transaction.transaction_id))
            return


# OCPP 2.0.1: a station's transactions as its TransactionEvents tell them (seqNo, eventType, meter,
# the offline flag), its connector statuses against them, and what the server's requests let it
# send while Pending.  A version's BehaviourChecks run on each CALL before it is answered, whatever
# a fault does to the reply; a retry (the same seqNo and timestamp again) is not a repeat.

MAX_TRACKED_TRANSACTIONS = 2 * MAX_OPEN_TRANSACTIONS  # followed per station, ended ones too
MAX_MISSING_SEQ_NOS = 64  # seqNos of one transaction kept as missing, to tell a late one
MAX_REQUESTED = 64  # server requests per station whose messages may come while Pending
MAX_METER_PHASES = 8  # phases of one transaction whose energy register is followed
_STARTED, _UPDATED, _ENDED = 1, 2, 4
_EVENT_BITS = {"Started": _STARTED, "Updated": _UPDATED, "Ended": _ENDED}
_EV_CONNECTED = ("EVConnected", "Charging", "SuspendedEV", "SuspendedEVSE")  # chargingStates


class BehaviourChecks:
    """One version's checks beyond those its handlers run: ``on_call`` (action -> check(session,
    payload), run on each of the charger's CALLs of that action before it is answered) and
    ``requested`` (a server request -> the charger's CALL it asks for, by the same requestId, which
    may then come while the boot is Pending)."""

    __slots__ = ("on_call", "requested")

    def __init__(self, on_call: dict[str, Callable[["ChargerSession", Any], None]],
                 requested: dict[str, str]) -> None:
        self.on_call = on_call
        self.requested = requested


class TransactionRecord:
    """One transaction as its TransactionEvents tell it."""

    __slots__ = ("seen", "next_seq_no", "last", "evse", "missing", "energy", "told_dropped",
                 "charging_state")

    def __init__(self, evse: Any) -> None:
        self.seen = 0  # the event types seen, as _EVENT_BITS
        self.next_seq_no: Optional[int] = None  # one past the highest seqNo seen
        self.last: Optional[tuple[Any, Any]] = None  # (seqNo, timestamp) of the last event
        self.evse = evse  # its EVSE id, as its events name it
        self.missing: Optional[set[int]] = None  # seqNos skipped that have not arrived (yet)
        self.energy: Optional[dict[Any, float]] = None  # phase -> its last register, Wh
        self.told_dropped = False  # said that a gap of offline events may be a full queue's
        self.charging_state: Any = None  # the last transactionInfo.chargingState it gave


class TransactionEvents:
    """What the 2.0.1 checks follow of one station's transactions (at most
    MAX_TRACKED_TRANSACTIONS, the oldest forgotten first), across its boots and connections."""

    __slots__ = ("transactions", "went_away", "outage")

    def __init__(self) -> None:
        self.transactions: dict[str, TransactionRecord] = {}
        self.went_away: Optional[str] = None  # UTC, when its last connection ended (and slack)
        # (from, to), UTC: an event stamped in between happened while it was not connected
        self.outage: Optional[tuple[str, str]] = None

    def record(self, transaction_id: str, evse: Any) -> TransactionRecord:
        record = self.transactions.get(transaction_id)
        if record is None:
            if len(self.transactions) >= MAX_TRACKED_TRANSACTIONS:
                del self.transactions[next(iter(self.transactions))]
            record = self.transactions[transaction_id] = TransactionRecord(evse)
        return record

    def charging_on(self, evse: int) -> Optional[tuple[str, str]]:
        """(transaction, chargingState) of a transaction that runs on ``evse`` (started or updated,
        not ended) with an EV connected by its last chargingState, if any: a transaction may
        start before the cable is plugged in, and go on after it is unplugged (TxStartPoint,
        TxStopPoint), not while an EV is connected."""
        for transaction_id, record in self.transactions.items():
            if record.evse == evse and record.charging_state in _EV_CONNECTED and record.seen & (
                    _STARTED | _UPDATED) and not record.seen & _ENDED:
                return transaction_id, record.charging_state
        return None


def connection_ended(state: "ChargerState") -> None:
    """A station's connection ended: what it stamps from a moment later on happened offline."""
    events = state.history.transaction_events
    if events is not None:
        events.went_away = UTC_CLOCK.at(time.time() + TIMING_SLACK)


def connection_started(state: "ChargerState") -> None:
    """A station connected again: the time it was away is an outage, for the offline flag; the
    statuses it reports now are news (as after a boot)."""
    state.history.statuses = None
    events = state.history.transaction_events
    if events is not None and events.went_away is not None:
        events.outage = (events.went_away, UTC_CLOCK.at(time.time() - TIMING_SLACK))
        events.went_away = None


def _request_id(payload: dict) -> Any:
    """A payload's requestId, if it is one a set can hold (an int or a string), else None."""
    request_id = payload.get("requestId")
    return request_id if type(request_id) in (int, str) else None


def note_requested(session: "ChargerSession", action: str, payload: Any) -> None:
    """The server sends ``action``: the message it asks for may come while the boot is Pending
    (kept across boots, at most MAX_REQUESTED, the oldest forgotten first)."""
    asked = session.version.checks.requested.get(action)
    if asked is None or type(payload) is not dict:
        return
    history = session.state.history
    if history.requested is None:
        history.requested = {}
    elif len(history.requested) >= MAX_REQUESTED:
        del history.requested[next(iter(history.requested))]
    history.requested[(asked, _request_id(payload))] = None


def check_transaction_event(session: "ChargerSession", payload: Any) -> None:
    """A TransactionEvent: Started first and once, nothing after Ended, seqNo without repeats or
    gaps, the offline flag on what happened offline, the register never decreasing."""
    info = payload.get("transactionInfo") if type(payload) is dict else None
    transaction_id = info.get("transactionId") if type(info) is dict else None
    if type(transaction_id) is not str:
        return
    history = session.state.history
    if history.transaction_events is None:
        history.transaction_events = TransactionEvents()
    evse = payload.get("evse")
    record = history.transaction_events.record(
        transaction_id, as_int(evse.get("id")) if type(evse) is dict else None)
    seq_no, stamp = payload.get("seqNo"), payload.get("timestamp")
    if record.last == (seq_no, stamp) and type(stamp) is str:  # a retry: checked already
        return
    record.last = (seq_no, stamp) if type(stamp) is str else None
    if type(info.get("chargingState")) is str:
        record.charging_state = info["chargingState"]
    _check_event_type(session, record, transaction_id, payload.get("eventType"))
    in_order = type(seq_no) is not int or _check_seq_no(
        session, record, transaction_id, seq_no, payload.get("offline") is True)
    if type(stamp) is str:
        _check_offline_flag(session, history.transaction_events, transaction_id, stamp,
                            payload.get("offline") is True)
        check_transaction_message(session, transaction_id, stamp,  # type: ignore[arg-type]
                                  "TransactionEvent")
    if in_order:  # a late one's reading is older: the order is its fault, not the meter's
        _check_event_energy(session, record, transaction_id, payload)


def _check_event_type(session: "ChargerSession", record: TransactionRecord, transaction_id: str,
                      event_type: Any) -> None:
    bit = _EVENT_BITS.get(event_type) if type(event_type) is str else None
    if bit is None:
        return
    if bit == _STARTED and record.seen & _STARTED:
        check_failed(session, "started-twice", lambda: "transaction %s: a second "
                     "TransactionEvent Started (one per transaction)" % printable(transaction_id))
    elif bit == _STARTED and record.seen:
        check_failed(session, "transaction-event-order", lambda: "transaction %s: Started came "
                     "after its Updated or Ended (Started, then Updated, then Ended)"
                     % printable(transaction_id))
    elif record.seen & _ENDED:
        check_failed(session, "transaction-event-order", lambda: "transaction %s: %s after its "
                     "Ended (Started, then Updated, then Ended)"
                     % (printable(transaction_id), event_type))
    record.seen |= bit


def _check_seq_no(session: "ChargerSession", record: TransactionRecord, transaction_id: str,
                  seq_no: int, offline: bool) -> bool:
    """seqNo without repeats or gaps; False for one that came after a later one."""
    expected = record.next_seq_no
    record.next_seq_no = max(expected or 0, seq_no + 1)
    if expected is None or seq_no == expected:
        return True
    if seq_no > expected:
        _seq_no_gap(session, record, transaction_id, expected, seq_no, offline)
        return True
    if record.missing and seq_no in record.missing:
        record.missing.discard(seq_no)
        check_failed(session, "transaction-order", lambda: "transaction %s: seqNo %d came after "
                     "seqNo %d (a station sends its offline queue in order)"
                     % (printable(transaction_id), seq_no, expected - 1))
    else:
        check_failed(session, "seqno-repeated", lambda: "transaction %s: seqNo %d again (each "
                     "TransactionEvent of a transaction has the next one)"
                     % (printable(transaction_id), seq_no))
    return False


def _seq_no_gap(session: "ChargerSession", record: TransactionRecord, transaction_id: str,
                expected: int, seq_no: int, offline: bool) -> None:
    """seqNo ``expected`` to ``seq_no`` - 1 never arrived: told, and a fault only when online."""
    if record.missing is None:
        record.missing = set()
    for missing in range(expected, min(seq_no, expected + MAX_MISSING_SEQ_NOS)):
        if len(record.missing) < MAX_MISSING_SEQ_NOS:
            record.missing.add(missing)
    gap = "seqNo %d" % expected if seq_no == expected + 1 else "seqNo %d to %d" % (
        expected, seq_no - 1)
    if not offline:
        check_failed(session, "seqno-gap", lambda: "transaction %s: %s never arrived, and the "
                     "event after it was sent online (only Updated events of a full offline "
                     "queue may be dropped)" % (printable(transaction_id), gap))
    elif not record.told_dropped:
        record.told_dropped = True
        session.log("info", "transaction %s: %s never arrived; the events around it happened "
                    "offline: a station whose offline queue is full may drop Updated events "
                    "(OCPP 2.0.1 E04), which is not a fault" % (printable(transaction_id), gap))


def _check_offline_flag(session: "ChargerSession", events: TransactionEvents, transaction_id: str,
                        stamp: str, offline: bool) -> None:
    outage = events.outage
    if outage is not None and not offline and outage[0] < stamp < outage[1]:
        check_failed(session, "offline-flag", lambda: "transaction %s: an event stamped %s, while "
                     "it was not connected (%s to %s), came without offline true"
                     % (printable(transaction_id), printable(stamp, 40), outage[0], outage[1]))


def _check_event_energy(session: "ChargerSession", record: TransactionRecord,
                        transaction_id: str, payload: dict) -> None:
    """Energy.Active.Import.Register never decreases within a transaction, per phase."""
    if "meterValue" not in payload:
        return
    for measurand, value, unit, phase in _meter_readings(payload):
        if measurand != "Energy.Active.Import.Register" or type(phase) not in (str, type(None)):
            continue
        reading = _chart_number(value, unit)
        if reading is None:
            continue
        if record.energy is None:
            record.energy = {}
        last = record.energy.get(phase, reading)
        if reading < last:
            check_failed(session, "energy-decreases", "Energy.Active.Import.Register of "
                         "transaction %s fell from %g Wh to %g Wh"
                         % (printable(transaction_id), last, reading))
        if len(record.energy) < MAX_METER_PHASES or phase in record.energy:
            record.energy[phase] = reading


def check_station_status(session: "ChargerSession", payload: Any) -> None:
    """A 2.0.1 StatusNotification: no status twice in a row for a connector on one connection
    (unless triggered), and no Available on an EVSE while a transaction runs there with an EV
    connected."""
    status = payload.get("connectorStatus") if type(payload) is dict else None
    evse, connector = payload.get("evseId"), payload.get("connectorId")
    if type(status) is not str or type(evse) is not int or type(connector) is not int:
        return
    history = session.state.history
    if history.statuses is None:
        history.statuses = {}
    if history.statuses.get((evse, connector)) != status:
        if len(history.statuses) < MAX_CONNECTORS or (evse, connector) in history.statuses:
            history.statuses[(evse, connector)] = status
    elif "StatusNotification" in history.triggered_messages:
        history.triggered_messages.discard("StatusNotification")
    else:
        check_failed(session, "status-repeated", lambda: "EVSE %d connector %d reported %s "
                     "again (a StatusNotification says a change, or answers a TriggerMessage)"
                     % (evse, connector, printable(status)))
    charging = history.transaction_events.charging_on(evse) \
        if history.transaction_events is not None and status == "Available" else None
    if charging is not None:
        check_failed(session, "status-contradicts-transaction", lambda: "EVSE %d connector %d "
                     "reported Available while transaction %s runs there with an EV connected "
                     "(chargingState %s, not Ended)"
                     % (evse, connector, printable(charging[0]), printable(charging[1])))


NO_MORE_CHECKS = BehaviourChecks({}, {})  # 1.6: its handlers run its checks
V201_BEHAVIOUR_CHECKS = BehaviourChecks(
    {"TransactionEvent": check_transaction_event, "StatusNotification": check_station_status},
    {"GetBaseReport": "NotifyReport", "GetReport": "NotifyReport",
     "GetMonitoringReport": "NotifyMonitoringReport", "GetLog": "LogStatusNotification",
     "UpdateFirmware": "FirmwareStatusNotification",
     "PublishFirmware": "PublishFirmwareStatusNotification",
     "CustomerInformation": "NotifyCustomerInformation",
     "GetDisplayMessages": "NotifyDisplayMessages",
     "GetChargingProfiles": "ReportChargingProfiles"})


# -------------------------------------------------- Charger-initiated actions
# One handler per action a charger may send.  A handler gets the session and
# the payload (always a dict, possibly off-spec: read it defensively) and
# returns the reply payload, which validates against the official 1.6
# response schema.  CHARGER_ACTION_HANDLERS below maps action names to them.


# ASCII digits only: int() also takes "²" and "١"
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]{1,18}\Z")


def as_int(value: Any) -> Optional[int]:
    """``value`` as an int when it is one or spells one ("1", the FlexiCharge way), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if _INTEGER_TEXT.match(text):
            return int(text)
    return None


class AuthorizationRules:
    """How the server answers idTags: ``--tag``, ``--tags``, ``--unknown-tags``,
    ``--concurrent-tx``.

    ``tags`` maps an idTag to its idTagInfo and the rule that set it (the
    command-line flag or the file), so every answer can say which rule gave it.
    """

    DEFAULT_RULE = "default: every idTag is Accepted"

    def __init__(self, tags: Optional[dict[str, tuple[dict, str]]] = None,
                 unknown: str = "Accepted", concurrent_tx: bool = False) -> None:
        self.tags = tags or {}
        self.unknown = unknown
        self.concurrent_tx = concurrent_tx

    def decide(self, system: "CentralSystem", state: "ChargerState", id_tag: Any,
               connector: Optional[int] = None, own: Any = None) -> tuple[dict, str]:
        """The idTagInfo for ``id_tag`` (used on ``connector``, if starting; for transaction
        ``own``, if a TransactionEvent names one) and the rule that answered.  Its status may be
        one of TAG_RULE_STATUSES."""
        if self.concurrent_tx and isinstance(id_tag, str):
            for other in system.states.values():
                for open_transaction in other.transactions.values():
                    if open_transaction.id_tag == id_tag and not (other is state and (
                            open_transaction.connector_id == connector if own is None
                            else open_transaction.transaction_id == own)):
                        return {"status": "ConcurrentTx"}, (
                            "--concurrent-tx: transaction %s on %s %s" % (
                                printable(str(open_transaction.transaction_id), 40),
                                printable(other.charger_id), open_transaction.place()))
        known = self.tags.get(id_tag) if isinstance(id_tag, str) else None
        if known is not None:
            return dict(known[0]), known[1]
        if self.unknown != "Accepted" or self.tags:
            return {"status": self.unknown}, "--unknown-tags %s" % self.unknown
        return {"status": "Accepted"}, self.DEFAULT_RULE


# The statuses a rule may give that only OCPP 2.0.1's idTokenInfo has, and the idTagInfo status
# a 1.6 charger gets instead (every 1.6 status is a 2.0.1 status too).
ID_TOKEN_ONLY_STATUSES = {"NoCredit": "Blocked", "NotAllowedTypeEVSE": "Invalid",
                          "NotAtThisLocation": "Invalid", "NotAtThisTime": "Blocked",
                          "Unknown": "Invalid"}
TAG_RULE_STATUSES = AUTHORIZATION_STATUS + tuple(ID_TOKEN_ONLY_STATUSES)
# A --tags rule: an idTagInfo whose status may also be one only idTokenInfo has.
TAG_RULE = Object({"expiryDate": DateTime(), "parentIdTag": String(20),
                   "status": Enum(TAG_RULE_STATUSES, required=True)})


def id_tag_info(session: "ChargerSession", id_tag: Any, action: str,
                connector: Optional[int] = None) -> dict:
    """The idTagInfo the server answers for ``id_tag`` in ``action``, by the authorization rules
    (a status only idTokenInfo has becomes its ID_TOKEN_ONLY_STATUSES one)."""
    system = session.system
    info, rule = system.authorization.decide(system, session.state, id_tag, connector)
    if info["status"] in ID_TOKEN_ONLY_STATUSES:
        given = info["status"]
        info["status"] = ID_TOKEN_ONLY_STATUSES[given]
        rule = "%s; %s answered as %s, an idTagInfo status" % (rule, given, info["status"])
    authorization_decided(session, action, id_tag, info["status"], rule)
    return info


def authorization_decided(session: "ChargerSession", action: str, id_tag: Any, status: str,
                          rule: str) -> None:
    """Remember, show and publish what the rules answered for ``id_tag`` in ``action``."""
    state = session.state
    if type(state.authorizations) is tuple:  # its first
        state.authorizations = Latest(5)
    state.authorizations.append((action, _show(id_tag), status, rule))
    if rule != AuthorizationRules.DEFAULT_RULE:
        session.log("info", "%s idTag %s: %s (%s)" % (action, _show(id_tag), status, rule))
    session.bus.publish("authorization", session.charger_id, session, action=action, idTag=id_tag,
                        status=status, rule=rule)


def handle_authorize(session: "ChargerSession", payload: dict) -> dict:
    return {"idTagInfo": id_tag_info(session, payload.get("idTag"), "Authorize")}


def handle_boot_notification(session: "ChargerSession", payload: dict) -> dict:
    options = session.system.options
    return answer_boot(session, payload, options.boot_status, options.heartbeat_interval)


def answer_boot(session: "ChargerSession", payload: dict, status: str, interval: Any) -> dict:
    """BootNotification answered with ``status`` and ``interval`` (--boot-status, or a fault's):
    the server's state follows, and an accepted boot gets its BootData."""
    session.state.boot_info = payload
    session.state.boot_status = status
    session.bus.publish("state_changed", session.charger_id, session, field="boot",
                        value={"status": status, "info": payload})
    if status == "Accepted":
        session.after_reply(session.flow.boot_accepted)
    check_boot(session, status, as_int(interval) or 0)
    return {"status": status, "currentTime": UTC_CLOCK.now(), "interval": interval}


def handle_data_transfer(session: "ChargerSession", payload: dict) -> dict:
    return {"status": "Accepted"}


def handle_heartbeat(session: "ChargerSession", payload: dict) -> dict:
    check_heartbeat(session)
    return {"currentTime": UTC_CLOCK.now()}


def note_transaction_readings(session: "ChargerSession", transaction: Transaction,
                              payload: dict) -> None:
    """A MeterValues (or a TransactionEvent's meterValue) of an open transaction: read once, for
    its verdict (Transaction.note_reading) and its chart."""
    point = chart_point(payload)
    transaction.note_reading(point[0], point[1])
    charts = session.system.charts
    if charts is not None:
        charts.add(session.charger_id, transaction, payload, point)


def publish_transaction_verdict(session: "ChargerSession", transaction: Transaction,
                                meter_stop: Any) -> None:
    """A transaction ended: its verdict, published as a "summary" event once the reply is sent
    (so that the reply is counted)."""
    def publish() -> None:
        record = transaction_verdict(session.state, transaction, meter_stop)
        session.bus.publish("summary", session.charger_id, session, **record)
    session.after_reply(publish)


def handle_meter_values(session: "ChargerSession", payload: dict) -> dict:
    state = session.state
    state.last_meter_values = payload  # rendered when the operator asks
    check_energy(session, payload)
    transaction_id = as_int(payload.get("transactionId"))
    sample = payload.get("meterValue")
    if type(sample) is list and sample and type(sample[0]) is dict:
        check_transaction_message(session, transaction_id, sample[0].get("timestamp"),
                                  "MeterValues")
    transaction = state.transactions.get(transaction_id)  # type: ignore[arg-type]
    if transaction is not None:
        note_transaction_readings(session, transaction, payload)
    if session.bus.routes["meter_values"]:
        session.bus.publish("meter_values", session.charger_id, session,
                            connectorId=payload.get("connectorId"),
                            transactionId=payload.get("transactionId"),
                            readings=[list(reading) for reading in _meter_readings(payload)])
    return {}


def handle_start_transaction(session: "ChargerSession", payload: dict) -> dict:
    transaction_id = next(session.system.transaction_ids)
    # The FlexiCharge charger sends id_tag instead of idTag.
    id_tag = payload.get("idTag", payload.get("id_tag"))
    connector = as_int(payload.get("connectorId"))
    info = id_tag_info(session, id_tag, "StartTransaction", connector)
    check_lost_transaction(session, connector)
    check_transaction_message(session, transaction_id, payload.get("timestamp"), "StartTransaction")
    transaction = Transaction(transaction_id, connector, id_tag, as_int(payload.get("meterStart")))
    forgotten = session.state.open_transaction(transaction)
    if forgotten is not None:
        session.warn_once(("transactions-cap",),
                          "more than %d open transactions; forgetting the oldest (%d)"
                          % (MAX_OPEN_TRANSACTIONS, forgotten.transaction_id))
    session.after_reply(lambda: session.flow.transaction_started(transaction))
    session.bus.publish("transaction_started", session.charger_id, session,
                        transactionId=transaction_id, connectorId=connector, idTag=id_tag,
                        meterStart=transaction.meter_start)
    return {"transactionId": transaction_id, "idTagInfo": info}


def handle_status_notification(session: "ChargerSession", payload: dict) -> dict:
    connector = as_int(payload.get("connectorId"))
    status = payload.get("status")
    error_code = payload.get("errorCode")
    if isinstance(status, str):
        check_status_change(session, connector, status)
        if isinstance(error_code, str) and error_code not in ("", "NoError"):
            status = "%s (%s)" % (status, error_code)
        if not session.state.set_connector(connector, status):
            session.warn_once(("connectors-cap",),
                              "more than %d connectors; the statuses of others are not kept"
                              % MAX_CONNECTORS)
        elif session.bus.routes["state_changed"]:
            session.bus.publish("state_changed", session.charger_id, session, field="connector %s"
                                % connector, value=status)
    return {}


def handle_stop_transaction(session: "ChargerSession", payload: dict) -> dict:
    transaction_id = as_int(payload.get("transactionId"))
    state = session.state
    check_transaction_message(session, transaction_id, payload.get("timestamp"), "StopTransaction")
    transaction = state.transactions.get(transaction_id) if transaction_id is not None else None
    meter_stop = as_int(payload.get("meterStop"))
    if transaction is not None and transaction.meter_start is not None and meter_stop is not None \
            and meter_stop < transaction.meter_start:
        check_failed(session, "meter-stop",
                     "transaction %d: meterStop %d is below its meterStart %d"
                     % (transaction_id, meter_stop, transaction.meter_start))
    closed = state.close_transaction(transaction_id)
    if closed is None:
        session.log("warn", "StopTransaction names transaction %s, which is not open here%s"
                    % (_show(payload.get("transactionId")), state.open_transactions_text()))
    else:
        if session.system.charts is not None:
            session.system.charts.drop(session.charger_id, transaction_id)
        session.bus.publish("transaction_stopped", session.charger_id, session,
                            transactionId=transaction_id, meterStop=payload.get("meterStop"),
                            reason=payload.get("reason"))
        publish_transaction_verdict(session, closed, meter_stop)
    reply: dict = {}
    if payload.get("idTag") is not None:
        reply["idTagInfo"] = id_tag_info(session, payload.get("idTag"), "StopTransaction")
    return reply


def handle_notification(session: "ChargerSession", payload: dict) -> dict:
    """Diagnostics, firmware, log and security notifications: an empty conf."""
    return {}


def handle_sign_certificate(session: "ChargerSession", payload: dict) -> "Union[dict, LaterReply]":
    """Accept a PEM CSR for this charger only; sign it (--ca-cert) or save it for the operator (see
    CertificateSigning)."""
    return session.system.signing.answer(session, payload.get("csr"))


CHARGER_ACTION_HANDLERS: dict[str, Callable[["ChargerSession", dict], dict]] = {
    "Authorize": handle_authorize,
    "BootNotification": handle_boot_notification,
    "DataTransfer": handle_data_transfer,
    "DiagnosticsStatusNotification": handle_notification,
    "FirmwareStatusNotification": handle_notification,
    "Heartbeat": handle_heartbeat,
    "MeterValues": handle_meter_values,
    "StartTransaction": handle_start_transaction,
    "StatusNotification": handle_status_notification,
    "StopTransaction": handle_stop_transaction,
    "SecurityEventNotification": handle_notification,
    "SignCertificate": handle_sign_certificate,
    "LogStatusNotification": handle_notification,
    "SignedFirmwareStatusNotification": handle_notification,
}


# The same for an OCPP 2.0.1 charging station: its replies validate against the official 2.0.1
# response schemas.  Where a 2.0.1 message is a 1.6 one (BootNotification, Heartbeat,
# DataTransfer, the notifications) the 1.6 handler answers it.  An idToken is authorized by its
# idToken string, whatever its type; transactions are the station's, named by its string id.

NO_V2G_PKI = {"reasonCode": "NoV2GPKI",
              "additionalInfo": "this mock CSMS has no ISO 15118 (V2G) PKI to ask"}


def id_token_of(id_token: Any) -> Any:
    """The idToken string an IdTokenType carries (what the rules match), else None."""
    return id_token.get("idToken") if type(id_token) is dict else None


def id_token_info(session: "ChargerSession", id_token: Any, action: str, own: Any = None) -> dict:
    """The idTokenInfo the server answers for an IdTokenType in ``action`` (of transaction
    ``own``, if any), by the authorization rules; a --tags rule's expiryDate and parentIdTag
    become cacheExpiryDateTime and a Central groupIdToken."""
    system = session.system
    token = id_token_of(id_token)
    info, rule = system.authorization.decide(system, session.state, token, own=own)
    authorization_decided(session, action, token, info["status"], rule)
    answer = {"status": info["status"]}
    if "expiryDate" in info:
        answer["cacheExpiryDateTime"] = info["expiryDate"]
    if "parentIdTag" in info:
        answer["groupIdToken"] = {"idToken": info["parentIdTag"], "type": "Central"}
    return answer


def handle_v201_authorize(session: "ChargerSession", payload: dict) -> dict:
    return {"idTokenInfo": id_token_info(session, payload.get("idToken"), "Authorize")}


def _evse_key(evse: Optional[int], connector: Optional[int]) -> tuple[int, int]:
    """The ChargerState.connectors key of an EVSE's connector (-1 for a number it lacks)."""
    return (evse if evse is not None else -1, connector if connector is not None else -1)


def handle_v201_status_notification(session: "ChargerSession", payload: dict) -> dict:
    """connectorStatus of the connector evseId/connectorId, kept per EVSE and connector."""
    status = payload.get("connectorStatus")
    if isinstance(status, str):
        key = _evse_key(as_int(payload.get("evseId")), as_int(payload.get("connectorId")))
        if not session.state.set_connector(key, status):
            session.warn_once(("connectors-cap",),
                              "more than %d connectors; the statuses of others are not kept"
                              % MAX_CONNECTORS)
        elif session.bus.routes["state_changed"]:
            session.bus.publish("state_changed", session.charger_id, session,
                                field="connector %s" % connector_label(key), value=status)
    return {}


def _evse_of(payload: dict) -> tuple[Optional[int], Optional[int]]:
    """(EVSE id, connector id) of a TransactionEvent's evse, None where it has none."""
    evse = payload.get("evse")
    if type(evse) is not dict:
        return None, None
    return as_int(evse.get("id")), as_int(evse.get("connectorId"))


def _energy_register(payload: dict) -> Optional[float]:
    """The first Energy.Active.Import.Register reading (no phase) of a payload's meterValue, in
    Wh (an int when whole), else None: a 2.0.1 transaction's meterStart and meterStop."""
    for measurand, value, unit, phase in _meter_readings(payload):
        if measurand == "Energy.Active.Import.Register" and phase is None:
            number = _chart_number(value, unit)
            if number is not None:
                return int(number) if number.is_integer() else number
    return None


def record_meter_values(session: "ChargerSession", readings: dict,
                        transaction: Optional[Transaction]) -> None:
    """A station's meter values (``readings``: evseId, connectorId, transactionId, meterValue):
    kept as its last, charted with ``transaction``'s, published as a meter_values event."""
    session.state.last_meter_values = readings  # rendered when the operator asks
    if transaction is not None:
        note_transaction_readings(session, transaction, readings)
    if session.bus.routes["meter_values"]:
        session.bus.publish("meter_values", session.charger_id, session,
                            evseId=readings["evseId"], connectorId=readings["connectorId"],
                            transactionId=readings["transactionId"],
                            readings=[list(reading) for reading in _meter_readings(readings)])


def handle_v201_meter_values(session: "ChargerSession", payload: dict) -> dict:
    """Meter values of an EVSE outside a transaction (evseId 0: the main meter)."""
    record_meter_values(session, {"evseId": payload.get("evseId"), "connectorId": None,
                                  "transactionId": None, "meterValue": payload.get("meterValue")},
                        None)
    return {}


def _transaction_id_of(payload: dict) -> Optional[str]:
    """transactionInfo.transactionId of a TransactionEvent (a number sent for it as its text)."""
    info = payload.get("transactionInfo")
    transaction_id = info.get("transactionId") if type(info) is dict else None
    if type(transaction_id) is int:
        return str(transaction_id)
    return transaction_id if type(transaction_id) is str and transaction_id else None


def _open_station_transaction(session: "ChargerSession", payload: dict,
                              transaction_id: str) -> Transaction:
    """Record a transaction a TransactionEvent names as open, and publish transaction_started."""
    evse, connector = _evse_of(payload)
    transaction = Transaction(transaction_id, connector, id_token_of(payload.get("idToken")),
                              _energy_register(payload), evse)
    forgotten = session.state.open_transaction(transaction)
    if forgotten is not None:
        session.warn_once(("transactions-cap",),
                          "more than %d open transactions; forgetting the oldest (%s)"
                          % (MAX_OPEN_TRANSACTIONS, printable(str(forgotten.transaction_id))))
    if payload.get("eventType") != "Started":  # one line per connection: the first of a burst
        session.warn_once(("transaction-not-open",), "TransactionEvent %s names transaction %s, "
                          "which was not open here; it is now (further ones opened quietly)"
                          % (_show(payload.get("eventType")), _show(transaction_id)))
    session.after_reply(lambda: session.flow.transaction_started(transaction))
    session.bus.publish("transaction_started", session.charger_id, session,
                        transactionId=transaction_id, evseId=evse, connectorId=connector,
                        idTag=transaction.id_tag, meterStart=transaction.meter_start)
    return transaction


def _close_station_transaction(session: "ChargerSession", payload: dict,
                               transaction_id: str) -> None:
    """TransactionEvent Ended: the transaction is closed, and transaction_stopped published."""
    state = session.state
    transaction = state.close_transaction(transaction_id)
    if transaction is None:
        session.log("warn", "TransactionEvent Ended names transaction %s, which is not open here%s"
                    % (_show(transaction_id), state.open_transactions_text()))
        return
    if session.system.charts is not None:
        session.system.charts.drop(session.charger_id, transaction_id)
    info = payload["transactionInfo"]
    meter_stop = _energy_register(payload)
    session.bus.publish("transaction_stopped", session.charger_id, session,
                        transactionId=transaction_id, evseId=transaction.evse_id,
                        connectorId=transaction.connector_id,
                        meterStop=meter_stop, reason=info.get("stoppedReason"))
    publish_transaction_verdict(session, transaction, meter_stop)


def handle_v201_transaction_event(session: "ChargerSession", payload: dict) -> dict:
    """Started opens the station's transaction (an Updated of one not open opens it too), its
    meter values are kept and charted, Ended closes it; an idToken is answered its idTokenInfo."""
    transaction_id = _transaction_id_of(payload)
    reply: dict = {}
    if "idToken" in payload:
        reply["idTokenInfo"] = id_token_info(session, payload["idToken"], "TransactionEvent",
                                             transaction_id)
    if transaction_id is None:
        session.warn_once(("transaction-event-id",), "TransactionEvent without a "
                          "transactionInfo.transactionId: answered, not recorded")
        return reply
    event_type = payload.get("eventType")
    transaction = session.state.transactions.get(transaction_id)
    if transaction is None and event_type in ("Started", "Updated"):
        transaction = _open_station_transaction(session, payload, transaction_id)
    elif transaction is not None and transaction.id_tag is None:
        transaction.id_tag = id_token_of(payload.get("idToken"))  # authorized later
    if "meterValue" in payload:
        evse, connector = (transaction.evse_id, transaction.connector_id) \
            if transaction is not None else _evse_of(payload)
        record_meter_values(session, {"evseId": evse, "connectorId": connector,
                                      "transactionId": transaction_id,
                                      "meterValue": payload["meterValue"]}, transaction)
    if event_type == "Ended":
        _close_station_transaction(session, payload, transaction_id)
    return reply


def handle_v201_sign_certificate(session: "ChargerSession",
                                 payload: dict) -> "Union[dict, LaterReply]":
    """A CSR as SignCertificate in 1.6, the same checks and signing, by its certificateType's CN
    rule (CSR_RULES: ChargingStationCertificate, the default, must be the station's id;
    V2GCertificate names the SECC); CertificateSigned then names the type."""
    kind = payload.get("certificateType", "ChargingStationCertificate")
    if not isinstance(kind, str) or kind not in CSR_RULES:  # off-spec: answered, not signed
        session.log("warn", "SignCertificate for a %s: answered Rejected" % _show(kind))
        return {"status": "Rejected"}
    return session.system.signing.answer(session, payload.get("csr"), kind)


def handle_no_v2g_pki(session: "ChargerSession", payload: dict) -> dict:
    """Get15118EVCertificate and GetCertificateStatus: Failed, as no V2G PKI is behind this
    server; one line per connection says so."""
    session.warn_once(("no-v2g-pki",), "an ISO 15118 certificate request is answered Failed: %s"
                      % NO_V2G_PKI["additionalInfo"])
    return {"status": "Failed", "statusInfo": dict(NO_V2G_PKI)}


def handle_get_15118_ev_certificate(session: "ChargerSession", payload: dict) -> dict:
    return dict(handle_no_v2g_pki(session, payload), exiResponse="")


MAX_REQUESTS_FOLLOWED = 20  # requestIds whose firmware and log statuses a station's state keeps
MAX_STATUSES_FOLLOWED = 10  # statuses kept per requestId (its latest)


def follow_request_status(session: "ChargerSession", request: str, payload: dict) -> list[str]:
    """Add a status notification's status to those of its requestId (of ``request``, the CALL it
    follows up) and show them so far in one line, e.g. "UpdateFirmware request 3: Downloading,
    Downloaded, Installing, Installed"; the statuses so far.  Bounded: MAX_REQUESTS_FOLLOWED
    requestIds a station (the oldest forgotten), MAX_STATUSES_FOLLOWED statuses each."""
    followed = session.state.requests_followed
    if followed is None:
        followed = session.state.requests_followed = collections.OrderedDict()
    key = (request, _scalar_text(payload.get("requestId", "none")))
    statuses = followed.pop(key, [])
    statuses = (statuses + [_scalar_text(payload.get("status"))])[-MAX_STATUSES_FOLLOWED:]
    followed[key] = statuses
    if len(followed) > MAX_REQUESTS_FOLLOWED:
        followed.popitem(last=False)
    session.log("info", "%s request %s: %s" % (request, printable(key[1], 40),
                                               printable(", ".join(statuses), 400)))
    return statuses


def handle_v201_firmware_status(session: "ChargerSession", payload: dict) -> dict:
    """FirmwareStatusNotification: followed per requestId (follow_request_status)."""
    follow_request_status(session, "UpdateFirmware", payload)
    return {}


def handle_v201_log_status(session: "ChargerSession", payload: dict) -> dict:
    """LogStatusNotification: followed per requestId; at Uploaded, the newest file in the station's
    folder of the file server is named."""
    follow_request_status(session, "GetLog", payload)
    if payload.get("status") == "Uploaded" and session.system.http is not None:
        session.log("info", "GetLog request %s: the log uploaded: %s" % (
            printable(_scalar_text(payload.get("requestId", "none")), 40),
            newest_upload(session.system.http.files, session.charger_id)))
    return {}


def handle_accepted(session: "ChargerSession", payload: dict) -> dict:
    """NotifyEVChargingNeeds and NotifyEVChargingSchedule: Accepted."""
    return {"status": "Accepted"}


def smart_charging_of(state: ChargerState) -> SmartCharging:
    """The station's SmartCharging, made on first use."""
    if state.smart_charging is None:
        state.smart_charging = SmartCharging()
    return state.smart_charging


# ---- Notify... messages in parts (tbc, seqNo) for a request's requestId: NotifyReport,
# NotifyMonitoringReport, NotifyDisplayMessages, NotifyCustomerInformation and
# ReportChargingProfiles (NOTIFY_KINDS)

MAX_NOTIFY_LINES = 20  # lines that show one assembled Notify... message; then "... N more"


class NotifyKind:
    """How a Notify... message sent in parts is assembled and shown: ``field`` holds each part's
    entries (a list, or a text), ``noun`` names one in the summary; ``show(entries, part)`` makes
    a part's pieces (``part``: its whole payload), kept in seqNo order, and ``whole(pieces)`` the
    lines of them all (the pieces themselves by default; ``note`` ends the summary when there are
    none); ``keep(session, entries)`` keeps a new part's entries (None: nothing)."""

    __slots__ = ("field", "noun", "show", "keep", "note", "whole")

    def __init__(self, field: str, noun: str, show: Callable[[list, dict], list[str]],
                 keep: Optional[Callable[["ChargerSession", list], None]] = None,
                 note: str = "", whole: Callable[[list[str]], list[str]] = list) -> None:
        self.field, self.noun, self.show, self.keep = field, noun, show, keep
        self.note, self.whole = note, whole


def _text_of(value: Any, limit: int = MAX_SHOWN_VALUE) -> str:
    """A charger's value in a line: its text as it is if it is text, else its JSON."""
    return printable(value if type(value) is str else render_json(value), limit)


def _entry_name(entry: dict) -> str:
    """Component.Variable of a station's entry (ReportDataType, MonitoringDataType)."""
    key = variable_key(entry.get("component"), entry.get("variable"))
    return variable_name(key) if key is not None else "(a component or variable without a name)"


def device_model_full(session: "ChargerSession", model: DeviceModel) -> None:
    """The cap is reached: said once per station."""
    if not model.full:
        model.full = True
        session.log("warn", "more than %d variable attributes reported; the others are not kept"
                    % MAX_DEVICE_VARIABLES)


def keep_report_data(session: "ChargerSession", entries: list) -> None:
    """A NotifyReport part's ReportDataType entries, kept in the station's device model."""
    model = device_model(session.state)
    for entry in entries:
        attributes = entry.get("variableAttribute") if type(entry) is dict else None
        if type(attributes) is not list:
            continue
        about = entry.get("variableCharacteristics")
        about = about if type(about) is dict else {}
        for attribute in attributes:
            if type(attribute) is not dict:
                continue
            key = variable_key(entry.get("component"), entry.get("variable"),
                               attribute.get("type"))
            if key is not None and not model.record(
                    key, attribute.get("value"), "NotifyReport", attribute.get("mutability"),
                    about.get("dataType"), about.get("unit")):
                device_model_full(session, model)


def show_monitors(entries: list, part: dict) -> list[str]:
    """NotifyMonitoringReport's MonitoringDataType entries: a line per monitor."""
    lines = []
    for entry in entries:
        monitors = entry.get("variableMonitoring") if type(entry) is dict else None
        for monitor in monitors if type(monitors) is list else []:
            if type(monitor) is dict:
                lines.append("monitor %s on %s: %s %s, severity %s%s" % (
                    _text_of(monitor.get("id")), _entry_name(entry), _text_of(monitor.get("type")),
                    _text_of(monitor.get("value")), _text_of(monitor.get("severity")),
                    ", in transactions only" if monitor.get("transaction") is True else ""))
    return lines


def show_display_messages(entries: list, part: dict) -> list[str]:
    """NotifyDisplayMessages' MessageInfoType entries: a line per message, its text as JSON."""
    lines = []
    for entry in entries:
        if type(entry) is dict:
            message = entry.get("message")
            content = message.get("content") if type(message) is dict else None
            about = ", ".join(_text_of(entry[name]) for name in ("priority", "state")
                              if name in entry)
            lines.append("message %s (%s): %s" % (_text_of(entry.get("id")), about,
                                                 printable_json(render_json(content), 400)))
    return lines


def show_reported_profiles(entries: list, part: dict) -> list[str]:
    """ReportChargingProfiles' ChargingProfileType entries: a line per profile, with the EVSE and
    the chargingLimitSource of its part, made printable."""
    return [printable("EVSE %s, %s: %s" % (_scalar_text(part.get("evseId")),
                                           _scalar_text(part.get("chargingLimitSource")),
                                           profile_text(profile)), MAX_SHOWN)
            for profile in entries]


MAX_CUSTOMER_TEXT = 512  # characters of a NotifyCustomerInformation part kept (its schema's limit)


def customer_data_text(pieces: list[str]) -> list[str]:
    """NotifyCustomerInformation's data, its parts joined, as one JSON text."""
    return [printable_json(render_json("".join(pieces)), MAX_SHOWN)]


# Notify... action -> how its parts are assembled and shown.
NOTIFY_KINDS: dict[str, NotifyKind] = {
    "NotifyReport": NotifyKind("reportData", "variable", lambda entries, part: [],
                               keep_report_data, " (`variables` lists what is kept)"),
    "NotifyMonitoringReport": NotifyKind("monitor", "monitored variable", show_monitors),
    "NotifyDisplayMessages": NotifyKind("messageInfo", "message", show_display_messages),
    "NotifyCustomerInformation": NotifyKind(
        "data", "text", lambda entries, part: [entry[:MAX_CUSTOMER_TEXT] for entry in entries
                                               if type(entry) is str], whole=customer_data_text),
    "ReportChargingProfiles": NotifyKind("chargingProfile", "profile", show_reported_profiles),
}


def _counted(count: int, noun: str) -> str:
    return "%d %s%s" % (count, noun, "" if count == 1 else "s")


def _notify_sequence(session: "ChargerSession", model: DeviceModel,
                     key: tuple[str, Any]) -> Optional[NotifySequence]:
    """The sequence a part belongs to, begun if need be; None for a part after its last."""
    sequence = model.sequences.get(key)
    if sequence is not None:
        return sequence
    action, request_id = key
    if key in model.finished:
        session.warn_once(("notify-after-last",) + key, "%s requestId %s: a part after the last "
                          "one (tbc false); ignored" % (action, _show(request_id)))
        return None
    if key not in model.requested:
        session.warn_once(("notify-unrequested", action), "%s requestId %s answers no request "
                          "this server sent and the station accepted; kept anyway"
                          % (action, _show(request_id)))
    if len(model.sequences) >= MAX_NOTIFY_SEQUENCES:
        _forget_oldest(session, model)
    sequence = model.sequences[key] = NotifySequence()
    return sequence


def _say_forgotten(session: "ChargerSession", model: DeviceModel) -> None:
    """How many sequences were forgotten, unsaid, since the line that said one."""
    if model.forgotten > 1:
        session.log("warn", "%d more Notify... requestIds still coming (tbc true) were forgotten "
                    "since: at most %d are assembled at a time"
                    % (model.forgotten - 1, MAX_NOTIFY_SEQUENCES))
    model.forgotten = 0


def _forget_oldest(session: "ChargerSession", model: DeviceModel) -> None:
    """Forget the oldest sequence in progress: said in a line, unless one was said less than
    FORGOTTEN_QUIET_SECONDS ago; then counted, and the count said at the next last part, or
    with the next line."""
    old_action, old_id = next(iter(model.sequences))
    del model.sequences[(old_action, old_id)]
    now = time.monotonic()
    if model.forgotten and now - model.forgotten_at < FORGOTTEN_QUIET_SECONDS:
        model.forgotten += 1
        return
    _say_forgotten(session, model)
    session.log("warn", "%s requestId %s was still coming (tbc true); forgotten: at most %d "
                "are assembled at a time (more forgotten in the next %d s are counted)" % (
                    old_action, _show(old_id), MAX_NOTIFY_SEQUENCES, FORGOTTEN_QUIET_SECONDS))
    model.forgotten, model.forgotten_at = 1, now


def _notify_finished(session: "ChargerSession", model: DeviceModel, key: tuple[str, Any],
                     sequence: NotifySequence) -> None:
    """The last part came: forgotten sequences not yet said are counted, a gap is said, and the
    whole shown."""
    action, request_id = key
    del model.sequences[key]
    if model.forgotten:
        _say_forgotten(session, model)
    model.finished.append(key)
    count, first = sequence.missing()
    if count:
        session.log("warn", "%s requestId %s: %d part(s) never came (seqNo %s)" % (
            action, _show(request_id), count, ", ".join(map(str, first))
            + (", ..." if count > len(first) else "")))
    kind = NOTIFY_KINDS[action]
    lines = kind.whole(sequence.in_order())
    session.log("info", "%s requestId %s: %s, %s%s" % (
        action, _show(request_id), _counted(sequence.received, "part"),
        _counted(sequence.entries, kind.noun), ":" if lines else kind.note))
    for line in lines[:MAX_NOTIFY_LINES]:
        session.log("info", "  " + line)
    if len(lines) > MAX_NOTIFY_LINES:
        session.log("info", "  ... and %d more" % (len(lines) - MAX_NOTIFY_LINES))


def handle_notify_part(session: "ChargerSession", action: str, payload: dict) -> dict:
    """One part of a Notify... message (NOTIFY_KINDS): kept in seqNo order; a repeated part is
    said once and ignored; the whole is shown when the last part (tbc false or absent) comes."""
    kind = NOTIFY_KINDS[action]
    entries = payload.get(kind.field)
    entries = [entries] if type(entries) is str else entries if type(entries) is list else []
    request_id = payload.get("requestId")
    key = (action, request_id if type(request_id) in (int, str) else render_json(request_id))
    model = device_model(session.state)
    sequence = _notify_sequence(session, model, key)
    if sequence is None:
        return {}
    seq_no = as_int(payload.get("seqNo"))
    if seq_no is None or seq_no < 0:
        seq_no = max(sequence.parts, default=-1) + 1
    if not sequence.add(seq_no, len(entries), kind.show(entries, payload)):
        if "repeat" not in sequence.told:
            sequence.told.add("repeat")
            session.log("warn", "%s requestId %s: part seqNo %d came again; the repeat is "
                        "ignored" % (action, _show(request_id), seq_no))
    elif kind.keep is not None:
        kind.keep(session, entries)
    if sequence.dropped and "cap" not in sequence.told:
        sequence.told.add("cap")
        session.log("warn", "%s requestId %s: over %d lines or parts; the others are not "
                    "shown" % (action, _show(request_id), MAX_NOTIFY_ITEMS))
    if payload.get("tbc") is not True:
        _notify_finished(session, model, key, sequence)
    return {}


def notify_handler(action: str) -> Callable[["ChargerSession", dict], dict]:
    """The handler of a Notify... action of NOTIFY_KINDS."""
    return lambda session, payload: handle_notify_part(session, action, payload)


V201_CHARGER_ACTION_HANDLERS: dict[str, Callable[["ChargerSession", dict], Any]] = {
    "Authorize": handle_v201_authorize,
    "BootNotification": handle_boot_notification,
    "ClearedChargingLimit": handle_notification,
    "DataTransfer": handle_data_transfer,
    "FirmwareStatusNotification": handle_v201_firmware_status,
    "Get15118EVCertificate": handle_get_15118_ev_certificate,
    "GetCertificateStatus": handle_no_v2g_pki,
    "Heartbeat": handle_heartbeat,
    "LogStatusNotification": handle_v201_log_status,
    "MeterValues": handle_v201_meter_values,
    "NotifyChargingLimit": handle_notification,
    "NotifyCustomerInformation": notify_handler("NotifyCustomerInformation"),
    "NotifyDisplayMessages": notify_handler("NotifyDisplayMessages"),
    "NotifyEVChargingNeeds": handle_accepted,
    "NotifyEVChargingSchedule": handle_accepted,
    "NotifyEvent": handle_notification,
    "NotifyMonitoringReport": notify_handler("NotifyMonitoringReport"),
    "NotifyReport": notify_handler("NotifyReport"),
    "PublishFirmwareStatusNotification": handle_notification,
    "ReportChargingProfiles": notify_handler("ReportChargingProfiles"),
    "ReservationStatusUpdate": handle_notification,
    "SecurityEventNotification": handle_notification,
    "SignCertificate": handle_v201_sign_certificate,
    "StatusNotification": handle_v201_status_notification,
    "TransactionEvent": handle_v201_transaction_event,
}


# --------------------------------------------------- Server-initiated actions
# The payload each console command sends when typed bare; key=value
# arguments and a JSON object override it (see build_payload).


class CommandError(Exception):
    """A console command that cannot be carried out; the message says why."""


class NoChargerYet(CommandError):
    """A charger command typed while no charger is connected: it is held."""


class TransactionNeeded(str):
    """A default's transactionId when the charger has no open transaction, or several: the text
    of the CommandError that build_payload raises unless the command's arguments give one."""


def _open_transaction_id(session: Optional["ChargerSession"], action: str,
                         word: str = "stopRemote") -> Any:
    """The id of the charger's one open transaction (an int in 1.6, a string in 2.0.1): what
    ``action`` names when typed bare.  TransactionNeeded when none or several are open, saying
    what to type (``word``, e.g. stopRemote, with the transactionId)."""
    transactions = list(session.state.transactions.values()) if session is not None else []
    if len(transactions) == 1:
        return transactions[0].transaction_id
    if not transactions:
        return TransactionNeeded("no transaction is open%s; give one: %s transactionId=N" % (
            " on " + printable(session.charger_id) if session else "", action))
    return TransactionNeeded(
        "%s has %d open transactions (%s): say which, e.g. %s transactionId=%s"
        % (printable(session.charger_id), len(transactions), ", ".join(
            "%s on %s" % (printable(str(tx.transaction_id), 40), tx.place())
            for tx in transactions), word, printable(str(transactions[-1].transaction_id), 40)))


def bare_payload(version: "OcppVersion", action: str, system: "CentralSystem",
                 session: Optional["ChargerSession"]) -> dict:
    """What ``action`` sends typed bare; CommandError when its default needs what is not there (an
    open transaction, for one)."""
    payload = version.defaults[action](system, session)
    if type(payload.get("transactionId")) is TransactionNeeded:
        raise CommandError(payload["transactionId"])
    return payload


def boot_data_payload(system: "CentralSystem") -> dict:
    """The FlexiCharge BootData DataTransfer; ``data`` carries both id keys it has read."""
    options = system.options
    data = {"chargerId": options.flexicharge_id, "connectorID": options.flexicharge_id,
            "chargingPrice": options.charging_price}
    return {"vendorId": FLEXICHARGE_VENDOR_ID, "messageId": "BootData", "data": dump_json(data)}


def _in_one_hour() -> str:
    return iso_utc(utc_now() + datetime.timedelta(hours=1))


# A self-signed root certificate (EC P-256; its key is not shipped) that the security commands send
# bare, so that InstallCertificate, DeleteCertificate and the rest are schema-valid as typed.
DEMO_CERTIFICATE = """-----BEGIN CERTIFICATE-----
MIIB1zCCAX2gAwIBAgIUCUPKDgVdiXPbrIn2/Es5gNzRcWMwCgYIKoZIzj0EAwIw
QDEjMCEGA1UEAwwaT0NQUCBNb2NrIFNlcnZlciBkZW1vIHJvb3QxGTAXBgNVBAoM
EE9DUFAgTW9jayBTZXJ2ZXIwIBcNMjYxMTI1MjMwNDQ2WhgPMjEyNjExMDEyMzA0
NDZaMEAxIzAhBgNVBAMMGk9DUFAgTW9jayBTZXJ2ZXIgZGVtbyByb290MRkwFwYD
VQQKDBBPQ1BQIE1vY2sgU2VydmVyMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
pduOZFIpUgNQ3HMaiIXi6TrlS187jADv7P0ozWTS7QsMdOJ4Za5Relvwu584ValO
t6D/1VwJtxhAmu96d00NwqNTMFEwHQYDVR0OBBYEFFgxVTfJI/qlvzwWXiZY9jB3
+CcjMB8GA1UdIwQYMBaAFFgxVTfJI/qlvzwWXiZY9jB3+CcjMA8GA1UdEwEB/wQF
MAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgMTi1veuqaH2uX+AgH8pKe7EFXMqee2ft
G63aftl59WICIQCD1fZmhMz5Qj1UNNhMij1gErmzsY8/aEzbBtu/wXW+WQ==
-----END CERTIFICATE-----
"""


def _der_element(der: bytes, offset: int) -> tuple[int, int, int]:
    """The DER element at ``offset``: its tag, where its content starts, and where it ends."""
    tag, length = der[offset], der[offset + 1]
    start = offset + 2
    if length & 0x80:
        count = length & 0x7F
        length, start = int.from_bytes(der[start:start + count], "big"), start + count
    if start + length > len(der):
        raise ValueError("a DER element runs past the end")
    return tag, start, start + length


_PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\s*", re.S)


def _certificate_fields(pem: str) -> tuple[bytes, bytes, bytes, bytes]:
    """The DER issuer name, subject name, public key (the BIT STRING's bits) and serial number
    bytes of one PEM certificate, read with the standard library; ValueError for text that is not
    one."""
    try:
        body = "".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))
        der = base64.b64decode(body, validate=True)
        _, tbs_start, _ = _der_element(der, 0)  # Certificate
        _, position, _ = _der_element(der, tbs_start)  # tbsCertificate's content
        tag, start, end = _der_element(der, position)
        if tag == 0xA0:  # [0] version
            tag, start, end = _der_element(der, end)
        serial = der[start:end].lstrip(b"\0") or b"\0"
        _, _, position = _der_element(der, end)  # signature algorithm
        _, _, issuer_end = _der_element(der, position)
        issuer = der[position:issuer_end]
        _, _, position = _der_element(der, issuer_end)  # validity
        _, _, subject_end = _der_element(der, position)  # subject
        subject = der[position:subject_end]
        _, key_info, _ = _der_element(der, subject_end)  # subjectPublicKeyInfo
        _, _, key_at = _der_element(der, key_info)  # its algorithm
        _, key_start, key_end = _der_element(der, key_at)  # the key, a BIT STRING
    except (IndexError, ValueError, binascii.Error) as exc:
        raise ValueError("not a PEM certificate (%s)" % exc) from None
    return issuer, subject, der[key_start + 1:key_end], serial


def certificate_hash_data(pem: str, issuer: Optional[str] = None) -> dict:
    """The OCPP CertificateHashDataType of a PEM certificate (the first of ``pem``), read with the
    standard library.

    issuerNameHash is the SHA-256 of its issuer's DER name; issuerKeyHash, of its issuer's public
    key: that of ``issuer``, else of the next certificate in ``pem`` (a chain, leaf first), else
    its own when it is self-signed (its issuer is its subject).  serialNumber is hex without
    leading zeroes (OCPP 2.0.1).  ValueError for text that is not a certificate, or one whose
    issuer's key is not at hand.
    """
    blocks = _PEM_CERTIFICATE.findall(pem) or [pem]
    issuer_name, subject, key, serial = _certificate_fields(blocks[0])
    if issuer is None and len(blocks) > 1:
        issuer = blocks[1]
    if issuer is not None:
        _, issuer_subject, key, _ = _certificate_fields(issuer)
        if issuer_subject != issuer_name:
            raise ValueError("the issuer certificate given is not the one that signed it")
    elif issuer_name != subject:
        raise ValueError("it is not self-signed, and its issuer's certificate is not given")
    return {"hashAlgorithm": "SHA256", "issuerNameHash": hashlib.sha256(issuer_name).hexdigest(),
            "issuerKeyHash": hashlib.sha256(key).hexdigest(),
            "serialNumber": serial.hex().lstrip("0") or "0"}


def _installed_certificate(session: Optional["ChargerSession"]) -> dict:
    """DeleteCertificate's default: the first certificate the charger listed, else the demo root."""
    listed = session.state.certificate_ids if session is not None else []
    return listed[0] if listed else certificate_hash_data(DEMO_CERTIFICATE)


# The defaults both versions send alike, one function each, shared by both tables.

def _no_fields(system: "CentralSystem", session: Optional["ChargerSession"]) -> dict:
    return {}


def _last_reservation(system: "CentralSystem", session: Optional["ChargerSession"]) -> dict:
    """CancelReservation: the reservation the server made last."""
    return {"reservationId": system.last_reservation_id or 1}


def _status_notification_trigger(system: "CentralSystem",
                                 session: Optional["ChargerSession"]) -> dict:
    return {"requestedMessage": "StatusNotification"}


def _firmware_location(system: "CentralSystem", session: Optional["ChargerSession"]) -> str:
    """firmware.bin on the file server (a placeholder URL without the HTTP port)."""
    return file_location(system, session, "firmware.bin") or "http://127.0.0.1/firmware.bin"


def _signed_chain(system: "CentralSystem", session: Optional["ChargerSession"]) -> dict:
    """CertificateSigned: the chain signed for the charger last, else the demo root."""
    return {"certificateChain": system.last_signed_chain.get(session.charger_id if session else "",
                                                             DEMO_CERTIFICATE)}


# UpdateFirmware's and SignedUpdateFirmware's signature without --ca-cert/--ca-key: the SHA-256 of
# the text "firmware.bin", base64 (with DEMO_CERTIFICATE as the signing certificate).
PLACEHOLDER_FIRMWARE_SIGNATURE = base64.b64encode(
    hashlib.sha256(b"firmware.bin").digest()).decode("ascii")


def _signed_firmware(system: "CentralSystem", session: Optional["ChargerSession"]) -> dict:
    """The FirmwareType of UpdateFirmware (2.0.1) and SignedUpdateFirmware (1.6): firmware.bin on
    the file server, retrieved now; with --ca-cert/--ca-key signed for real (firmware_signature),
    else a placeholder signature and the demo root as its signing certificate."""
    signed = firmware_signature(system, session)
    certificate, signature = signed if signed is not None else (
        DEMO_CERTIFICATE, PLACEHOLDER_FIRMWARE_SIGNATURE)
    return {"location": _firmware_location(system, session), "retrieveDateTime": UTC_CLOCK.now(),
            "signingCertificate": certificate, "signature": signature}


def _delete_installed_certificate(system: "CentralSystem",
                                  session: Optional["ChargerSession"]) -> dict:
    return {"certificateHashData": _installed_certificate(session)}


def _get_log(system: "CentralSystem", session: Optional["ChargerSession"]) -> dict:
    """GetLog (the 1.6 security whitepaper's and 2.0.1's): the diagnostics log, uploaded to the
    file server."""
    return {"log": {"remoteLocation": file_location(system, session) or "ftp://127.0.0.1/logs/"},
            "logType": "DiagnosticsLog", "requestId": system.next_request_id}


RESERVATION_MINUTES = 5  # a 2.0.1 ReserveNow's expiry, typed bare: this many minutes ahead
BARE_HEARTBEAT_INTERVAL = "60"  # what ChangeConfiguration and SetVariables set HeartbeatInterval to


def _tx_default_profile(id_field: str, schedule: Callable[[dict], Any]) -> dict:
    """SetChargingProfile's bare profile: TxDefaultProfile 1, relative, 16 A from the start; the
    version names its id ``id_field`` and wraps the schedule with ``schedule``."""
    return {id_field: 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Relative", "chargingSchedule": schedule(
                {"chargingRateUnit": "A",
                 "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}]})}


SERVER_ACTION_DEFAULTS: dict[str, Callable[["CentralSystem", Optional["ChargerSession"]], dict]] = {
    "CancelReservation": _last_reservation,
    "ChangeAvailability": lambda system, session: {"connectorId": 0, "type": "Operative"},
    "ChangeConfiguration": lambda system, session: {"key": "HeartbeatInterval",
                                                    "value": BARE_HEARTBEAT_INTERVAL},
    "ClearCache": _no_fields,
    "ClearChargingProfile": _no_fields,
    "DataTransfer": lambda system, session: boot_data_payload(system),
    "GetCompositeSchedule": lambda system, session: {"connectorId": 1, "duration": 3600},
    "GetConfiguration": _no_fields,
    "GetDiagnostics": lambda system, session: {
        "location": file_location(system, session) or "ftp://127.0.0.1/diagnostics/"},
    "GetLocalListVersion": _no_fields,
    "RemoteStartTransaction": lambda system, session: {
        "connectorId": 1, "idTag": system.options.id_tag},
    "RemoteStopTransaction": lambda system, session: {
        "transactionId": _open_transaction_id(session, "RemoteStopTransaction")},
    "ReserveNow": lambda system, session: {
        "connectorId": 1, "expiryDate": _in_one_hour(), "idTag": system.options.id_tag,
        "reservationId": system.peek_reservation_id()},
    "Reset": lambda system, session: {"type": "Soft"},
    "SendLocalList": lambda system, session: {
        "listVersion": 1, "updateType": "Full",
        "localAuthorizationList": [{"idTag": system.options.id_tag,
                                    "idTagInfo": {"status": "Accepted"}}]},
    "SetChargingProfile": lambda system, session: {
        "connectorId": 1,
        "csChargingProfiles": _tx_default_profile("chargingProfileId", lambda schedule: schedule)},
    "TriggerMessage": _status_notification_trigger,
    "UnlockConnector": lambda system, session: {"connectorId": 1},
    "UpdateFirmware": lambda system, session: {
        "location": _firmware_location(system, session), "retrieveDate": UTC_CLOCK.now()},
    # The OCPP 1.6 security whitepaper's.
    "CertificateSigned": _signed_chain,
    "DeleteCertificate": _delete_installed_certificate,
    "ExtendedTriggerMessage": _status_notification_trigger,
    "GetInstalledCertificateIds": lambda system, session: {
        "certificateType": "CentralSystemRootCertificate"},
    "GetLog": _get_log,
    "InstallCertificate": lambda system, session: {
        "certificateType": "CentralSystemRootCertificate", "certificate": DEMO_CERTIFICATE},
    "SignedUpdateFirmware": lambda system, session: {
        "requestId": system.next_request_id, "firmware": _signed_firmware(system, session)},
}


def _id_token(system: "CentralSystem") -> dict:
    """A 2.0.1 IdTokenType of --id-tag: an RFID card's (ISO14443)."""
    return {"idToken": system.options.id_tag, "type": "ISO14443"}


def _own_connection_data(system: "CentralSystem", session: Optional["ChargerSession"]) -> dict:
    """SetNetworkProfile's bare connectionData: this server, at the address, scheme and URL path
    the station reached it by (a 2.0.1 station appends its own id), with the security profile
    that this server's flags give (1 basic auth, 2 TLS, 3 TLS with client certificates); with
    --tls-port, its wss:// listener, the way up from profile 1.
    Nothing that could repoint a station elsewhere: another CSMS is named with
    connectionData.ocppCsmsUrl=..."""
    options = system.options
    host, prefix = options.host, "/"
    if session is not None:
        local = session.websocket.local_address
        host = local[0] if local else host
        prefix = urllib.parse.urlsplit(request_path(session.websocket)).path.rsplit("/", 1)[0] + "/"
    host = "[%s]" % host if ":" in host else host
    url = "%s://%s:%d%s" % ("wss" if options.certfile else "ws", host,
                            system.port if options.tls_port is None else system.tls_port, prefix)
    profile = 3 if options.client_ca else 2 if options.certfile else 1
    return {"ocppVersion": "OCPP20", "ocppTransport": "JSON", "ocppCsmsUrl": url,
            "messageTimeout": 30, "securityProfile": profile, "ocppInterface": "Wired0"}


def _heartbeat_variable() -> dict:
    """The 2.0.1 component and variable of the heartbeat interval, which GetVariables, GetReport
    and SetVariables name bare (a new dict each time: key=value arguments fill it in place)."""
    return {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}


def _request_id_only(system: "CentralSystem", session: Optional["ChargerSession"]) -> dict:
    return {"requestId": system.next_request_id}


# PublishFirmware's and UnpublishFirmware's checksum, bare: the MD5 of the text "firmware.bin"
BARE_FIRMWARE_CHECKSUM = "df69d20220cb1ff43f7c2cffbd2ccd8a"
BARE_DATA_TRANSFER_VENDOR_ID = "OcppMockServer"  # a vendor the station does not know

# The 2.0.1 CSMS-initiated messages (blocks A to P, and DataTransfer) as typed bare.
V201_SERVER_ACTION_DEFAULTS: dict[str, Callable[["CentralSystem", Optional["ChargerSession"]],
                                                dict]] = {
    "GetBaseReport": lambda system, session: {"requestId": system.next_request_id,
                                              "reportBase": "ConfigurationInventory"},
    "GetReport": lambda system, session: {"requestId": system.next_request_id,
                                          "componentVariable": [_heartbeat_variable()]},
    "GetVariables": lambda system, session: {"getVariableData": [_heartbeat_variable()]},
    "SetVariables": lambda system, session: {"setVariableData": [
        dict(_heartbeat_variable(), attributeValue=BARE_HEARTBEAT_INTERVAL)]},
    "SetNetworkProfile": lambda system, session: {
        "configurationSlot": 1, "connectionData": _own_connection_data(system, session)},
    "Reset": lambda system, session: {"type": "OnIdle"},
    "ClearCache": _no_fields,
    "SendLocalList": lambda system, session: {
        "versionNumber": 1, "updateType": "Full",
        "localAuthorizationList": [{"idToken": _id_token(system),
                                    "idTokenInfo": {"status": "Accepted"}}]},
    "GetLocalListVersion": _no_fields,
    "GetTransactionStatus": _no_fields,
    "RequestStartTransaction": lambda system, session: {
        "idToken": _id_token(system), "remoteStartId": system.next_remote_start_id, "evseId": 1},
    "RequestStopTransaction": lambda system, session: {
        "transactionId": _open_transaction_id(session, "RequestStopTransaction")},
    "TriggerMessage": _status_notification_trigger,
    "UnlockConnector": lambda system, session: {"evseId": 1, "connectorId": 1},
    "ChangeAvailability": lambda system, session: {"operationalStatus": "Operative"},
    "ReserveNow": lambda system, session: {
        "id": system.peek_reservation_id(), "expiryDateTime": iso_utc(
            utc_now() + datetime.timedelta(minutes=RESERVATION_MINUTES)),
        "idToken": _id_token(system), "evseId": 1},
    "CancelReservation": _last_reservation,
    "CostUpdated": lambda system, session: {
        "totalCost": 0.0, "transactionId": _open_transaction_id(session, "CostUpdated",
                                                                "CostUpdated")},
    "SetChargingProfile": lambda system, session: {
        "evseId": 1,
        "chargingProfile": _tx_default_profile("id", lambda schedule: [dict(schedule, id=1)])},
    "GetChargingProfiles": lambda system, session: {"requestId": system.next_request_id,
                                                    "chargingProfile": {}},
    "ClearChargingProfile": _no_fields,
    "GetCompositeSchedule": lambda system, session: {"evseId": 1, "duration": 3600},
    "UpdateFirmware": lambda system, session: {
        "requestId": system.next_request_id, "firmware": _signed_firmware(system, session)},
    "PublishFirmware": lambda system, session: {
        "location": _firmware_location(system, session), "checksum": BARE_FIRMWARE_CHECKSUM,
        "requestId": system.next_request_id},
    "UnpublishFirmware": lambda system, session: {"checksum": BARE_FIRMWARE_CHECKSUM},
    "CertificateSigned": _signed_chain,
    "InstallCertificate": lambda system, session: {
        "certificateType": "CSMSRootCertificate", "certificate": DEMO_CERTIFICATE},
    "DeleteCertificate": _delete_installed_certificate,
    "GetInstalledCertificateIds": _no_fields,
    "GetLog": _get_log,
    "GetMonitoringReport": _request_id_only,
    "SetMonitoringBase": lambda system, session: {"monitoringBase": "All"},
    "SetMonitoringLevel": lambda system, session: {"severity": 8},
    "SetVariableMonitoring": lambda system, session: {"setMonitoringData": [{
        "value": 1, "type": "Delta", "severity": 8,
        "component": {"name": "EVSE", "evse": {"id": 1}},
        "variable": {"name": "AvailabilityState"}}]},
    "ClearVariableMonitoring": lambda system, session: {"id": [1]},
    "CustomerInformation": lambda system, session: {
        "requestId": system.next_request_id, "report": True, "clear": False,
        "idToken": _id_token(system)},
    "SetDisplayMessage": lambda system, session: {"message": {
        "id": 1, "priority": "NormalCycle",
        "message": {"format": "UTF8", "content": "Hello from the OCPP Mock Server"}}},
    "GetDisplayMessages": _request_id_only,
    "ClearDisplayMessage": lambda system, session: {"id": 1},
    "DataTransfer": lambda system, session: {"vendorId": BARE_DATA_TRANSFER_VENDOR_ID},
}


# Smart charging, reservations, local list and cost on a 2.0.1 station: what the replies say, in
# words (the reply's own line shows its JSON).


def _status_said(reply: dict) -> str:
    """A reply's status, with its statusInfo's reasonCode when it gives one."""
    info = reply.get("statusInfo")
    reason = info.get("reasonCode") if type(info) is dict else None
    return _scalar_text(reply.get("status")) + (" (%s)" % _show(reason) if reason else "")


def _schedule_rows(record: dict) -> list[str]:
    """A kept composite schedule as the rows of a small table: start offset, limit, unit,
    phases."""
    unit = _scalar_text(record["chargingRateUnit"])
    rows = ["  %8s  %10s  %s" % ("start", "limit", "phases")]
    rows += ["  %6s s  %10s  %s" % (_scalar_text(start), "%s %s" % (_number_text(limit), unit),
                                    "-" if phases is None else _scalar_text(phases))
             for start, limit, phases in record["periods"]]
    return rows


def composite_schedule_received(session: "ChargerSession", request: dict, reply: dict) -> None:
    """GetCompositeSchedule: an Accepted schedule kept as its EVSE's latest (the page draws it)
    and shown as a small table; else the status."""
    schedule = reply.get("schedule")
    if reply.get("status") != "Accepted" or type(schedule) is not dict:
        session.log("info", "composite schedule of EVSE %s: %s" % (
            _scalar_text(request.get("evseId")), _status_said(reply)))
        return
    record = smart_charging_of(session.state).keep_schedule(schedule)
    session.log("info", "composite schedule of EVSE %s from %s, %s s, in %s:" % tuple(
        _scalar_text(record[name]) for name in ("evseId", "scheduleStart", "duration",
                                                "chargingRateUnit")))
    for row in _schedule_rows(record):
        session.log("info", row)
    periods = schedule.get("chargingSchedulePeriod")
    dropped = (sum(type(period) is dict for period in periods) if type(periods) is list else 0) \
        - len(record["periods"])
    if dropped > 0:
        session.log("info", "  ... and %d more (at most %d periods are kept and shown)"
                    % (dropped, SCHEDULE_PERIODS_KEPT))
    if session.bus.routes["state_changed"]:
        session.bus.publish("state_changed", session.charger_id, session,
                            field="schedule EVSE %s" % _scalar_text(record["evseId"]),
                            value=record)


def reservation_made(session: "ChargerSession", request: dict, reply: dict) -> None:
    token = request.get("idToken")
    session.log("info", "reservation %s on EVSE %s for idToken %s until %s: %s" % (
        _scalar_text(request.get("id")), _scalar_text(request.get("evseId", "any")),
        _show(token.get("idToken") if type(token) is dict else token),
        _scalar_text(request.get("expiryDateTime")), _status_said(reply)))


def reservation_cancelled(session: "ChargerSession", request: dict, reply: dict) -> None:
    session.log("info", "reservation %s cancelled: %s" % (
        _scalar_text(request.get("reservationId")), _status_said(reply)))


def local_list_sent(session: "ChargerSession", request: dict, reply: dict) -> None:
    entries = request.get("localAuthorizationList")
    count = len(entries) if type(entries) is list else 0
    session.log("info", "local list version %s (%s, %d %s): %s" % (
        _scalar_text(request.get("versionNumber")), _scalar_text(request.get("updateType")),
        count, "entry" if count == 1 else "entries", _status_said(reply)))


def local_list_version_reported(session: "ChargerSession", request: dict, reply: dict) -> None:
    version = reply.get("versionNumber")
    session.log("info", "local list version on the station: %s%s" % (
        _scalar_text(version), " (no list)" if version == 0 else ""))


def cost_updated(session: "ChargerSession", request: dict, reply: dict) -> None:
    session.log("info", "total cost %s of transaction %s: taken by the station" % (
        _number_text(request.get("totalCost")), _scalar_text(request.get("transactionId"))))


def _keep_certificate_ids(session: "ChargerSession", listed: Any) -> None:
    """Keep the hash data a charger listed (at most 100): DeleteCertificate defaults to the
    first."""
    if isinstance(listed, list):
        session.state.certificate_ids = [item for item in listed[:100] if isinstance(item, dict)]


def remember_certificate_ids(session: "ChargerSession", request: dict, reply: dict) -> None:
    """GetInstalledCertificateIds.conf: DeleteCertificate defaults to the first certificate
    listed."""
    _keep_certificate_ids(session, reply.get("certificateHashData"))


def configuration_changed(session: "ChargerSession", request: dict, reply: dict) -> None:
    """ChangeConfiguration, accepted: a new HeartbeatInterval sets the heartbeat check's interval; a
    new AuthorizationKey is the only one that lets the charger in from its next connection."""
    if reply.get("status") not in ("Accepted", "RebootRequired"):
        return
    if request.get("key") == "HeartbeatInterval":
        interval = as_int(request.get("value"))
        if interval is not None:
            session.state.history.heartbeat_interval = interval
        return
    if request.get("key") != "AuthorizationKey":
        return
    value = request.get("value")
    if not isinstance(value, str) or session.system.access is None:
        return
    forms = session.system.access.rotate(session.charger_id, value)
    session.state.key_rotated = UTC_CLOCK.now()
    session.log("info",
                "AuthorizationKey rotated: from its next connection on, %s must log in with "
                "the new key "
                "(%s); the old one gets 401" % (printable(session.charger_id), forms))


def message_triggered(session: "ChargerSession", request: dict, reply: dict) -> None:
    """TriggerMessage, accepted: the message it asks for is exempt from the timing checks once."""
    if reply.get("status") == "Accepted" and isinstance(request.get("requestedMessage"), str):
        session.state.history.triggered.add(request["requestedMessage"])


def certificate_installed(session: "ChargerSession", request: dict, reply: dict) -> None:
    """InstallCertificate or CertificateSigned, accepted: the certificate's hash data (computed
    from it and its issuer: certificate_hash_data) is shown and put first in the charger's list,
    so that DeleteCertificate typed bare deletes it."""
    if reply.get("status") != "Accepted":
        return
    pem = request.get("certificate", request.get("certificateChain"))
    try:
        hash_data = certificate_hash_data(pem if isinstance(pem, str) else "")
    except ValueError as exc:
        session.log("info", "the certificate it took has no hash data here: %s" % exc)
        return
    listed = session.state.certificate_ids
    session.state.certificate_ids = [hash_data] + [item for item in listed[:99]
                                                   if item != hash_data]
    session.log("info", "certificate taken: serialNumber %s, issuerNameHash %s...; "
                "DeleteCertificate typed bare deletes it" % (
                    hash_data["serialNumber"], hash_data["issuerNameHash"][:16]))
    if session.state.certificates_taken is None:
        session.state.certificates_taken = Latest(CERTIFICATES_TAKEN_KEPT)
    if _certificate_identity(hash_data) not in session.state.certificates_taken:
        session.state.certificates_taken.append(_certificate_identity(hash_data))


# What the server does when a charger answers one of its CALLs with a CALLRESULT, beyond showing it.
SERVER_CALL_RESULT_HANDLERS: dict[str, Callable[["ChargerSession", dict, dict], None]] = {
    "ChangeConfiguration": configuration_changed,
    "TriggerMessage": message_triggered,
    "ExtendedTriggerMessage": message_triggered,
    "GetInstalledCertificateIds": remember_certificate_ids,
    "InstallCertificate": certificate_installed,
    "CertificateSigned": certificate_installed,
}


def remember_certificate_chain_ids(session: "ChargerSession", request: dict, reply: dict) -> None:
    """A 2.0.1 GetInstalledCertificateIdsResponse: its chains' own certificates, for
    DeleteCertificate."""
    chains = reply.get("certificateHashDataChain")
    if isinstance(chains, list):
        _keep_certificate_ids(session, [chain.get("certificateHashData") for chain in chains[:100]
                                        if isinstance(chain, dict)])


def heartbeat_interval_set(session: "ChargerSession", value: Any) -> None:
    """An accepted OCPPCommCtrlr.HeartbeatInterval sets the heartbeat check's interval."""
    interval = as_int(value)
    if interval is not None:
        session.state.history.heartbeat_interval = interval


def basic_auth_password_set(session: "ChargerSession", value: Any) -> None:
    """An accepted SecurityCtrlr.BasicAuthPassword is the only password that lets the station in
    from its next connection on (OCPP 2.0.1 A01); the old one gets 401."""
    access = session.system.access
    if not isinstance(value, str) or access is None:
        return
    access.set_password(session.charger_id, value)
    session.state.key_rotated = UTC_CLOCK.now()
    session.log("info", "BasicAuthPassword set: from its next connection on, %s must log in with "
                "the new password; the old one gets 401" % printable(session.charger_id))


def security_profile_set(session: "ChargerSession", value: Any) -> None:
    """An accepted raise of SecurityCtrlr.SecurityProfile: from its next connection on, the station
    is refused at lower profiles (HTTP 403); a lower value changes nothing (A05: never lowered)."""
    access, profile = session.system.access, as_int(value)
    if access is None or profile is None or not 1 <= profile <= 3:
        session.log("warn", "SecurityProfile %s accepted: not a profile (1 to 3); nothing changed"
                    % _show(value))
        return
    before = access.raise_profile(session.charger_id, profile)
    if before is None:
        session.log("warn", "SecurityProfile %d accepted: not higher than the profile it had, so "
                    "nothing changed (a security profile is never lowered, OCPP 2.0.1 A05)"
                    % profile)
        return
    session.log("info", "SecurityProfile raised from %d to %d: from its next connection on, %s "
                "must connect with %s; lower profiles get 403%s" % (
                    before, profile, printable(session.charger_id),
                    SECURITY_PROFILE_NAMES[profile], _profile_hint(session.system, profile)))


def _profile_hint(system: "CentralSystem", profile: int) -> str:
    """Where a station raised to ``profile`` can connect to this server, or that it cannot."""
    tls_url = system.tls_url or (system.url if system.url.startswith("wss:") else None)
    if tls_url is None:
        return " (this server has no wss:// listener: give --certfile, and --tls-port to keep ws://)"
    if profile == 3 and not system.options.client_ca:
        return " (this server asks for no client certificate: give --client-ca)"
    return " (%s)" % tls_url


# What an accepted SetVariables of an actual value does beyond showing it, by (component name,
# variable name): fn(session, attributeValue as sent).
ACCEPTED_VARIABLE_EFFECTS: dict[tuple[str, str], Callable[["ChargerSession", Any], None]] = {
    ("OCPPCommCtrlr", "HeartbeatInterval"): heartbeat_interval_set,
    ("SecurityCtrlr", "BasicAuthPassword"): basic_auth_password_set,
    ("SecurityCtrlr", "SecurityProfile"): security_profile_set,
}


def _variable_effect(data: Any) -> Optional[Callable[["ChargerSession", Any], None]]:
    """The effect of a SetVariableData (as sent: the operator's JSON may be anything) that sets an
    actual value, if ACCEPTED_VARIABLE_EFFECTS names its component and variable."""
    if not isinstance(data, dict) or data.get("attributeType", "Actual") != "Actual":
        return None
    component, variable = data.get("component"), data.get("variable")
    if not isinstance(component, dict) or not isinstance(variable, dict):
        return None
    key = (component.get("name"), variable.get("name"))
    return ACCEPTED_VARIABLE_EFFECTS.get(key) if all(isinstance(n, str) for n in key) else None


def variables_set(session: "ChargerSession", request: dict, reply: dict) -> None:
    """SetVariables: each accepted variable that ACCEPTED_VARIABLE_EFFECTS names takes effect (the
    results come in the order of the request's); each result is shown and each accepted value kept
    in the station's device model (variables_reported)."""
    asked, results = request.get("setVariableData"), reply.get("setVariableResult")
    if not isinstance(asked, list) or not isinstance(results, list):
        return
    for data, result in zip(asked, results):
        effect = _variable_effect(data)
        if (effect is not None and isinstance(result, dict)
                and result.get("attributeStatus") in ("Accepted", "RebootRequired")):
            effect(session, data.get("attributeValue"))
    variables_reported(session, asked, results)


# ---- the device model: what the server keeps of a 2.0.1 station's variables and reports

MAX_RESULT_LINES = 20  # lines of GetVariables or SetVariables results; then "... N more"


def _result_text(result: dict, status_field: str) -> str:
    """A result's status, and its statusInfo's reasonCode and additionalInfo if it has one."""
    text = _text_of(result.get(status_field))
    info = result.get(status_field + "Info")
    if type(info) is dict:
        text += " (%s)" % ": ".join(_text_of(info[name])
                                    for name in ("reasonCode", "additionalInfo") if name in info)
    return text


def _result_lines(session: "ChargerSession", lines: list[str]) -> None:
    for line in lines[:MAX_RESULT_LINES]:
        session.log("info", line)
    if len(lines) > MAX_RESULT_LINES:
        session.log("info", "... and %d more results" % (len(lines) - MAX_RESULT_LINES))


def variables_reported(session: "ChargerSession", asked: list, results: list) -> None:
    """SetVariables' results, a line each; an accepted value is kept in the device model."""
    model, lines = device_model(session.state), []
    for data, result in zip(asked, results):
        if type(data) is not dict or type(result) is not dict:
            continue
        key = variable_key(data.get("component"), data.get("variable"), data.get("attributeType"))
        name = variable_name(key) if key is not None else _text_of(data)
        status = result.get("attributeStatus")
        if key is not None and status in ("Accepted", "RebootRequired") and not model.record(
                key, data.get("attributeValue"), "SetVariables" + (
                    " (RebootRequired)" if status == "RebootRequired" else "")):
            device_model_full(session, model)
        lines.append("SetVariables %s=%s: %s" % (name, _text_of(data.get("attributeValue")),
                                                  _result_text(result, "attributeStatus")))
    _result_lines(session, lines)


def variables_got(session: "ChargerSession", request: dict, reply: dict) -> None:
    """GetVariables: each result on a line; an accepted value is kept in the device model."""
    results = reply.get("getVariableResult")
    if type(results) is not list:
        return
    model, lines = device_model(session.state), []
    for result in results:
        if type(result) is not dict:
            continue
        key = variable_key(result.get("component"), result.get("variable"),
                           result.get("attributeType"))
        name = variable_name(key) if key is not None else _text_of(result)
        if key is not None and result.get("attributeStatus") == "Accepted" and not model.record(
                key, result.get("attributeValue"), "GetVariables"):
            device_model_full(session, model)
        value = " = " + _text_of(result["attributeValue"], 200) \
            if "attributeValue" in result else ""
        lines.append("GetVariables %s: %s%s" % (name, _result_text(result, "attributeStatus"),
                                                value))
    _result_lines(session, lines)


def report_expected(notify_action: str) -> Callable[["ChargerSession", dict, dict], None]:
    """The result handler of a report request: accepted, its requestId's ``notify_action`` parts
    are expected (that they may come while the boot is Pending, OCPP 2.0.1 B02, is the version's
    BehaviourChecks.requested: asked_for)."""

    def expect(session: "ChargerSession", request: dict, reply: dict) -> None:
        request_id = request.get("requestId")
        if reply.get("status") != "Accepted" or type(request_id) is not int:
            return
        model, key = device_model(session.state), (notify_action, request_id)
        if key in model.finished:
            model.finished.remove(key)
        model.requested.append(key)

    return expect


# The report requests, and the Notify... message each one's accepted requestId is answered with.
V201_REPORT_RESULT_HANDLERS: dict[str, Callable[["ChargerSession", dict, dict], None]] = {
    "GetBaseReport": report_expected("NotifyReport"),
    "GetReport": report_expected("NotifyReport"),
    "GetMonitoringReport": report_expected("NotifyMonitoringReport"),
    "GetDisplayMessages": report_expected("NotifyDisplayMessages"),
    "CustomerInformation": report_expected("NotifyCustomerInformation"),
    "GetVariables": variables_got,
    "GetChargingProfiles": report_expected("ReportChargingProfiles"),
}


def firmware_sent(session: "ChargerSession", request: dict, reply: dict) -> None:
    """UpdateFirmware answered: one line when its signature was the placeholder (no --ca-cert/
    --ca-key), which a station that checks signatures refuses."""
    firmware = request.get("firmware")
    if isinstance(firmware, dict) and firmware.get("signature") == PLACEHOLDER_FIRMWARE_SIGNATURE:
        session.log("info", "UpdateFirmware: its signature and signingCertificate are "
                    "placeholders (no --ca-cert/--ca-key, or no firmware.bin in the station's "
                    "folder): a station that checks them reports InvalidSignature")


# ---- the other 2.0.1 flows' results in words: display messages, monitoring, customer
# information, installed certificates, cleared profiles, transaction status (the reply's own
# line shows its JSON)

MAX_CERTIFICATES_LISTED = 10  # certificates of one GetInstalledCertificateIds shown, then a count
CERTIFICATES_TAKEN_KEPT = 20  # hash data kept per station of the certificates it took from us

ResultHandler = Callable[["ChargerSession", dict, dict], None]


def status_line(subject: Callable[[dict], str]) -> ResultHandler:
    """The result handler that says ``subject(request)`` and the reply's status in one line."""

    def say(session: "ChargerSession", request: dict, reply: dict) -> None:
        session.log("info", "%s: %s" % (subject(request), _status_said(reply)))

    return say


def both(first: ResultHandler, second: ResultHandler) -> ResultHandler:
    """The result handler that runs ``first``, then ``second``."""

    def run(session: "ChargerSession", request: dict, reply: dict) -> None:
        first(session, request, reply)
        second(session, request, reply)

    return run


def _field(value: Any, name: str) -> Any:
    return value.get(name) if type(value) is dict else None


def _display_message_set(request: dict) -> str:
    message = request.get("message")
    return "set display message %s (%s, %s)" % (
        _scalar_text(_field(message, "id")), _text_of(_field(message, "priority"), 40),
        _show(_field(_field(message, "message"), "content")))


def _profiles_cleared(request: dict) -> str:
    if "chargingProfileId" in request:
        return "clear charging profile %s" % _scalar_text(request["chargingProfileId"])
    criteria = request.get("chargingProfileCriteria")
    if type(criteria) is not dict or not criteria:
        return "clear all charging profiles"
    return "clear charging profiles with %s" % ", ".join(
        "%s %s" % (printable(name, 40), _text_of(value, 40))
        for name, value in list(criteria.items())[:4])


def _customer_information_asked(request: dict) -> str:
    asked = [name for name in ("report", "clear") if request.get(name) is True]
    return "customer information request %s (%s)" % (
        _scalar_text(request.get("requestId")),
        " and ".join(asked) if asked else "neither report nor clear")


def _monitor_result_name(result: dict) -> str:
    key = variable_key(result.get("component"), result.get("variable"))
    return variable_name(key) if key is not None else _text_of(result, 80)


def monitors_set(session: "ChargerSession", request: dict, reply: dict) -> None:
    """SetVariableMonitoring: each result on a line (at most MAX_RESULT_LINES)."""
    results = reply.get("setMonitoringResult")
    _result_lines(session, ["SetVariableMonitoring %s (%s, severity %s): %s%s" % (
        _monitor_result_name(result), _text_of(result.get("type"), 40),
        _scalar_text(result.get("severity")), _result_text(result, "status"),
        ", monitor id %s" % _scalar_text(result["id"]) if "id" in result else "")
        for result in (results if type(results) is list else []) if type(result) is dict])


def monitors_cleared(session: "ChargerSession", request: dict, reply: dict) -> None:
    """ClearVariableMonitoring: each result on a line (at most MAX_RESULT_LINES)."""
    results = reply.get("clearMonitoringResult")
    _result_lines(session, ["ClearVariableMonitoring monitor %s: %s" % (
        _scalar_text(result.get("id")), _result_text(result, "status"))
        for result in (results if type(results) is list else []) if type(result) is dict])


def transaction_status_got(session: "ChargerSession", request: dict, reply: dict) -> None:
    """GetTransactionStatus: whether the transaction is ongoing, and whether messages are
    queued."""
    ongoing = {True: "ongoing", False: "not ongoing"}.get(reply.get("ongoingIndicator"))
    session.log("info", "%s: %s%s" % (
        "transaction " + _show(request["transactionId"]) if "transactionId" in request
        else "all transactions",
        ongoing + ", " if ongoing else "",
        "messages still queued" if reply.get("messagesInQueue") is True
        else "no messages queued"))


def _certificate_identity(hash_data: Any) -> tuple:
    """What names a certificate in CertificateHashDataType: issuer name and key hashes and
    serialNumber, in lower case, the serial without leading zeroes."""
    return tuple(str(_field(hash_data, name)).lower().lstrip("0" if name == "serialNumber" else "")
                 for name in ("hashAlgorithm", "issuerNameHash", "issuerKeyHash", "serialNumber"))


def _certificate_line(chain: dict, taken: Any) -> str:
    hash_data = chain.get("certificateHashData")
    return "  %s serialNumber %s%s" % (
        _text_of(chain.get("certificateType"), 40), _text_of(_field(hash_data, "serialNumber"), 40),
        " (installed or signed by this server)"
        if taken and _certificate_identity(hash_data) in taken else "")


def certificates_listed(session: "ChargerSession", request: dict, reply: dict) -> None:
    """GetInstalledCertificateIds: the status, then each certificate's type and serialNumber (at
    most MAX_CERTIFICATES_LISTED), and which ones the station took from this server; its list is
    kept for DeleteCertificate (remember_certificate_chain_ids)."""
    chains = reply.get("certificateHashDataChain")
    chains = [chain for chain in chains if type(chain) is dict] if type(chains) is list else []
    session.log("info", "installed certificates: %s, %s%s" % (
        _status_said(reply), _counted(len(chains), "certificate"), ":" if chains else ""))
    taken = session.state.certificates_taken
    for chain in chains[:MAX_CERTIFICATES_LISTED]:
        session.log("info", _certificate_line(chain, taken))
    if len(chains) > MAX_CERTIFICATES_LISTED:
        session.log("info", "  ... and %d more" % (len(chains) - MAX_CERTIFICATES_LISTED))
    remember_certificate_chain_ids(session, request, reply)


# What the server remembers from a 2.0.1 station's CALLRESULTs: the certificates it listed (for
# DeleteCertificate), an accepted heartbeat interval, a triggered message.
V201_SERVER_CALL_RESULT_HANDLERS: dict[str, Callable[["ChargerSession", dict, dict], None]] = {
    "GetInstalledCertificateIds": certificates_listed,
    "SetVariables": variables_set,
    "TriggerMessage": message_triggered,
    "GetCompositeSchedule": composite_schedule_received,
    "ReserveNow": reservation_made,
    "CancelReservation": reservation_cancelled,
    "SendLocalList": local_list_sent,
    "GetLocalListVersion": local_list_version_reported,
    "CostUpdated": cost_updated,
    **V201_REPORT_RESULT_HANDLERS,
    "UpdateFirmware": firmware_sent,
    "InstallCertificate": certificate_installed,
    "CertificateSigned": certificate_installed,
    "SetDisplayMessage": status_line(_display_message_set),
    "ClearDisplayMessage": status_line(
        lambda request: "clear display message %s" % _scalar_text(request.get("id"))),
    "SetVariableMonitoring": monitors_set,
    "ClearVariableMonitoring": monitors_cleared,
    "SetMonitoringBase": status_line(
        lambda request: "set monitoring base %s" % _text_of(request.get("monitoringBase"), 40)),
    "SetMonitoringLevel": status_line(
        lambda request: "set monitoring level %s (events of severity 0 to %s reported)"
        % ((_scalar_text(request.get("severity")),) * 2)),
    "CustomerInformation": both(V201_REPORT_RESULT_HANDLERS["CustomerInformation"],
                                status_line(_customer_information_asked)),
    "ClearChargingProfile": status_line(_profiles_cleared),
    "GetTransactionStatus": transaction_status_got,
}

# Key spellings the FlexiCharge charger reads in the server's CALLs (it raises
# on transactionId, for one).  Actions not listed keep the standard spelling.
FLEXICHARGE_KEY_SPELLINGS: dict[str, dict[str, str]] = {
    "RemoteStopTransaction": {"transactionId": "transactionID"},
    "ReserveNow": {"connectorId": "connectorID", "reservationId": "reservationID"},
    "CancelReservation": {"reservationId": "reservationID"},
}


def to_flexicharge_payload(action: str, payload: dict) -> dict:
    """``payload`` as the FlexiCharge charger reads ``action``.

    It renames the keys of FLEXICHARGE_KEY_SPELLINGS and, for ReserveNow,
    sends expiryDate as epoch seconds, which is what that charger parses.
    """
    spellings = FLEXICHARGE_KEY_SPELLINGS.get(action)
    if spellings is None:
        return payload
    converted = {spellings.get(key, key): value for key, value in payload.items()}
    if action == "ReserveNow" and isinstance(converted.get("expiryDate"), str):
        try:
            moment = datetime.datetime.fromisoformat(converted["expiryDate"].replace("Z", "+00:00"))
            converted["expiryDate"] = int(moment.timestamp())
        except ValueError:
            pass  # an operator's own value, sent as typed
    return converted


class OcppVersion:
    """One OCPP version as the engine reads it: every table that differs between versions.

    ``charger_requests``, ``server_requests`` and ``charger_replies`` are the
    field rules (action -> field -> Rule) of the CALLs a charger sends, of
    those the server sends and of the charger's replies to them, also
    compiled into Objects (``*_rules``); ``handlers`` answer the charger's
    CALLs, ``defaults`` make the payload of a command typed bare,
    ``result_handlers`` follow the charger's CALLRESULTs up; ``rpc`` holds the
    OCPP-J rules (error codes, unreadable frames, identities). ``remote_start``
    and ``remote_stop`` are the actions startRemote and stopRemote send;
    ``dialects`` the spellings a charger of this version may speak, the first
    one standard. ``checks`` are its BehaviourChecks beyond those its handlers run.
    """

    def __init__(self, rpc: RpcRules, charger_requests: dict[str, dict[str, Rule]],
                 server_requests: dict[str, dict[str, Rule]],
                 charger_replies: dict[str, dict[str, Rule]],
                 handlers: dict[str, Callable[["ChargerSession", dict], Any]],
                 defaults: dict[str, Callable[["CentralSystem", Optional["ChargerSession"]], dict]],
                 result_handlers: dict[str, Callable[["ChargerSession", dict, dict], None]],
                 remote_start: str, remote_stop: str, dialects: tuple[str, ...],
                 checks: BehaviourChecks = NO_MORE_CHECKS) -> None:
        self.rpc = rpc
        self.name = rpc.version
        self.subprotocol = rpc.subprotocol
        self.charger_requests = charger_requests
        self.server_requests = server_requests
        self.charger_replies = charger_replies
        self.charger_request_rules = _compiled(charger_requests)
        self.server_request_rules = _compiled(server_requests)
        self.charger_reply_rules = _compiled(charger_replies)
        self.handlers = handlers
        self.defaults = defaults
        self.result_handlers = result_handlers
        self.remote_start = remote_start
        self.remote_stop = remote_stop
        self.dialects = dialects
        self.checks = checks

    def __repr__(self) -> str:
        return "<OCPP %s>" % self.name


def _compiled(tables: dict[str, dict[str, Rule]]) -> dict[str, Object]:
    """Each action's fields as the Object rule of its whole payload, compiled once."""
    return {action: Object(fields) for action, fields in tables.items()}


OCPP16 = OcppVersion(RPC_16, CHARGER_REQUESTS, SERVER_REQUESTS, CHARGER_REPLIES,
                     CHARGER_ACTION_HANDLERS, SERVER_ACTION_DEFAULTS, SERVER_CALL_RESULT_HANDLERS,
                     "RemoteStartTransaction", "RemoteStopTransaction",
                     (DIALECT_OCPP16, DIALECT_FLEXICHARGE))
OCPP201 = OcppVersion(RPC_201, V201_CHARGER_REQUESTS, V201_SERVER_REQUESTS, V201_CHARGER_REPLIES,
                      V201_CHARGER_ACTION_HANDLERS, V201_SERVER_ACTION_DEFAULTS,
                      V201_SERVER_CALL_RESULT_HANDLERS, "RequestStartTransaction",
                      "RequestStopTransaction", (DIALECT_OCPP201,), V201_BEHAVIOUR_CHECKS)
VERSIONS = {version.name: version for version in (OCPP16, OCPP201)}
DEFAULT_VERSION = OCPP16  # what --ocpp is by default, and what a command speaks with no charger
VERSION_OF_SUBPROTOCOL = {version.subprotocol: version for version in VERSIONS.values()}
# Every action of any version, for what is named before a charger says its version (faults,
# labels, completion of words).
ALL_CHARGER_ACTIONS = tuple(dict.fromkeys(
    action for version in VERSIONS.values() for action in version.charger_requests))
ALL_SERVER_ACTIONS = tuple(dict.fromkeys(
    action for version in VERSIONS.values() for action in version.defaults))


# -------------------------------------------------------- Certificate signing
# SignCertificate, end to end.  The CSR is read here, before the reply: its
# subject CN must be the charge point id of the connection that sent it.  The
# standard library can neither verify nor sign, so the openssl command-line
# tool does, in a subprocess the event loop does not wait for.

MAX_CSR_CHARACTERS = 5500  # the csr field's limit in the security whitepaper's schema
MAX_SAVED_CSRS = 100  # CSRs one run saves (with --ca-cert, their chains too); then Rejected
OPENSSL_SECONDS = 10.0  # one openssl command may take this long; it is then stopped
OPENSSL_AT_ONCE = 4  # openssl commands running at once; the others wait their turn

_COMMON_NAME_OID = b"\x06\x03\x55\x04\x03"  # 2.5.4.3, in DER
# UTF8String, PrintableString, IA5String, T61String, BMPString, UniversalString
_DER_TEXT_ENCODINGS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1",
                       0x1E: "utf-16-be", 0x1C: "utf-32-be"}
_PEM_CERTIFICATE_REQUEST = re.compile(r"-----BEGIN (?:NEW )?CERTIFICATE REQUEST-----(.*?)"
                                      r"-----END (?:NEW )?CERTIFICATE REQUEST-----", re.S)


def _der_elements(der: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """The DER elements one after another from ``start`` to ``end``: (tag, content start, end)."""
    while start < end:
        tag, content, start = _der_element(der, start)
        if start > end:
            raise ValueError("a DER element runs past the one that holds it")
        yield tag, content, start


def _common_names(der: bytes, start: int, end: int) -> list[str]:
    """The commonName values of the DER Name whose content runs from ``start`` to ``end``."""
    names: list[str] = []
    for _, rdn_start, rdn_end in _der_elements(der, start, end):  # each RelativeDistinguishedName
        for _, pair_start, pair_end in _der_elements(der, rdn_start, rdn_end):  # its attributes
            _, _, type_end = _der_element(der, pair_start)
            if der[pair_start:type_end] == _COMMON_NAME_OID:
                tag, value_start, value_end = _der_element(der, type_end)
                if tag not in _DER_TEXT_ENCODINGS or value_end != pair_end:
                    raise ValueError("a CN that is not an ASN.1 string")
                names.append(der[value_start:value_end].decode(_DER_TEXT_ENCODINGS[tag]))
    return names


def read_certificate_request(text: str) -> tuple[bytes, list[str]]:
    """The DER of the one PEM certificate request (PKCS #10) in ``text``, and its subject's common
    names, read with the standard library; ValueError says why it is not one."""
    blocks = _PEM_CERTIFICATE_REQUEST.findall(text)
    if len(blocks) != 1:
        raise ValueError("%d PEM certificate requests in it, not one" % len(blocks))
    try:
        der = base64.b64decode("".join(blocks[0].split()), validate=True)
        tag, request_start, request_end = _der_element(der, 0)  # CertificationRequest
        if tag != 0x30 or request_end != len(der):
            raise ValueError("its DER is not one SEQUENCE")
        _, info_start, info_end = _der_element(der, request_start)  # certificationRequestInfo
        _, _, subject_at = _der_element(der, info_start)  # version
        tag, subject_start, subject_end = _der_element(der, subject_at)
        if tag != 0x30 or subject_end > info_end:
            raise ValueError("it has no subject name")
        return der, _common_names(der, subject_start, subject_end)
    except (IndexError, binascii.Error) as exc:
        raise ValueError("its DER does not parse (%s)" % exc) from None


def pem_certificate_request(der: bytes) -> str:
    """A certificate request's DER as PEM, 64 characters a line: what is saved and signed is exactly
    what was read, whatever else the charger's text held."""
    body = base64.b64encode(der).decode("ascii")
    lines = "\n".join(body[at:at + 64] for at in range(0, len(body), 64))
    return "-----BEGIN CERTIFICATE REQUEST-----\n%s\n-----END CERTIFICATE REQUEST-----\n" % lines


def csr_mismatch(session: "ChargerSession", names: list[str]) -> Optional[str]:
    """Why a CSR whose subject has the common names ``names`` is not for this connection's charger:
    its only CN must be the charge point id, which under profile 3 (--client-ca) the client
    certificate proved too (on a wss:// connection: --tls-port serves ws:// beside it).  None
    when it is."""
    shown = ", ".join(map(_show, names)) or "missing"
    if names != [session.charger_id]:
        return "the CSR's CN is %s, not %s, the charge point id of this connection" % (
            shown, _show(session.charger_id))
    transport = getattr(session.websocket, "transport", None)
    if session.system.options.client_ca and transport is not None \
            and transport.get_extra_info("ssl_object") is not None:
        certificate = (transport.get_extra_info("peercert") if transport else None) or {}
        proved = [value for entry in certificate.get("subject", ()) for key, value in entry
                  if key == "commonName"]
        if proved != names:
            return "the CSR's CN is %s, not %s, the CN of this connection's client certificate" % (
                shown, ", ".join(map(_show, proved)) or "missing")
    return None


def v2g_csr_mismatch(session: "ChargerSession", names: list[str]) -> Optional[str]:
    """The rule for a 2.0.1 V2GCertificate CSR: the certificate is the station's ISO 15118 SECC
    one, whose CN names the SECC (ISO 15118-2: commonly its EVSEID), not the station, so it is not
    compared with the charge point id.  It must have exactly one non-empty CN; one line says that
    this server cannot check that CN (it knows no EVSEIDs).  None when it may be signed."""
    if len(names) != 1 or not names[0].strip():
        return "the V2GCertificate CSR's CN is %s: it must have exactly one, naming the SECC" % (
            ", ".join(map(_show, names)) or "missing")
    session.log("warn", "SignCertificate V2GCertificate: its CN %s names the SECC, not the "
                "station; this server knows no EVSEIDs and cannot check it (and has no V2G PKI: "
                "with --ca-cert that CA signs it)" % _show(names[0]))
    return None


# The CN rule of each 2.0.1 certificateType a CSR may be for (1.6's has none: csr_mismatch).
CSR_RULES: dict[str, Callable[["ChargerSession", list[str]], Optional[str]]] = {
    "ChargingStationCertificate": csr_mismatch,
    "V2GCertificate": v2g_csr_mismatch,
}


async def run_openssl(arguments: list[str], given: bytes = b"") -> tuple[int, bytes, str]:
    """Run the ``openssl`` command with ``given`` on its standard input: its exit status, its output
    and what it said on stderr.  RuntimeError when it cannot run or takes over OPENSSL_SECONDS."""
    try:
        process = await asyncio.create_subprocess_exec(
            "openssl", *arguments, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        raise RuntimeError("cannot run openssl: %s" % (exc.strerror or exc)) from None
    try:
        output, said = await asyncio.wait_for(process.communicate(given), OPENSSL_SECONDS)
    except asyncio.TimeoutError:
        raise RuntimeError("openssl %s took over %g s and was stopped" % (
            arguments[0], OPENSSL_SECONDS)) from None
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    return process.returncode, output, printable(said.decode("utf-8", "replace").strip(), 400)


async def verify_csr_signature(pem: str) -> None:
    """Check a certificate request's own signature with ``openssl req -verify`` (1.1.1 says "verify
    failure" and exits 0, 3.x exits 1); RuntimeError with openssl's words when it is not good."""
    code, _, said = await run_openssl(["req", "-verify", "-noout"], pem.encode("ascii"))
    if code != 0 or "verify OK" not in said or "failure" in said:
        raise RuntimeError("openssl req -verify finds its signature bad: %s" % (
            said or "exit %d" % code))


async def sign_csr(csr_path: str, ca_cert: str, ca_key: str, days: int = 365) -> str:
    """The chain (the new certificate, then the CA's) for a CSR file, signed by ``openssl x509
    -req`` with options OpenSSL 1.1.1 and 3.x share.  The certificate is the one openssl wrote for
    this file (saved next to it, as .pem); RuntimeError with openssl's own words when it fails."""
    out_path = csr_path[:-len(".csr")] + ".pem" if csr_path.endswith(".csr") else csr_path + ".pem"
    code, output, said = await run_openssl([
        "x509", "-req", "-in", csr_path, "-CA", ca_cert, "-CAkey", ca_key,
        "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", str(days), "-sha256"])
    certificate = output.decode("ascii", "replace").strip()
    if code != 0 or not certificate.startswith("-----BEGIN CERTIFICATE-----"):
        raise RuntimeError("openssl x509 -req failed: %s" % (said or "exit %d" % code))
    with open(out_path, "w", encoding="utf-8") as signed:
        signed.write(certificate + "\n")
    with open(ca_cert, encoding="utf-8") as ca:
        return certificate + "\n" + ca.read().strip() + "\n"


class CertificateSigning:
    """What happens to a charger's CSR.  SignCertificate is answered Rejected, with one line and
    nothing saved, for a CSR that is not one PEM certificate request whose only CN is the charger's
    (see csr_mismatch), and past MAX_SAVED_CSRS.  Otherwise the CSR is saved under a name no other
    file has; with --ca-cert/--ca-key, openssl checks its signature before the reply, signs it once
    Accepted is sent, and CertificateSigned carries the chain made from it; without them, the line
    shown says how to send the chain once the operator has signed it."""

    def __init__(self, system: "CentralSystem", ca_cert: Optional[str],
                 ca_key: Optional[str]) -> None:
        self.system = system
        self.ca_cert, self.ca_key = ca_cert, ca_key
        self._folder: Optional[str] = None
        self.tasks: set = set()
        self.saved = 0  # CSRs this run saved, or is verifying to save (MAX_SAVED_CSRS)
        self.sequence = 0  # numbers the saved CSRs, so that no two share a name
        self.verifying: set = set()  # sessions whose CSR openssl is verifying: one at a time each
        self._openssl_turns: Optional[asyncio.Semaphore] = None  # made in the loop (Python 3.9)
        # (firmware path, size, time) -> (signingCertificate, signature): firmware_signature
        self.firmware_signatures: dict[tuple[str, int, int], tuple[str, str]] = {}

    def folder(self) -> str:
        """Where CSRs and signed chains go: the files folder when there is one, else a temporary
        folder."""
        if self.system.http is not None:
            return self.system.http.files.root
        if self._folder is None:
            self._folder = tempfile.mkdtemp(prefix="ocpp-mock-csr-")
        return self._folder

    def answer(self, session: "ChargerSession", csr: Any,
               kind: Optional[str] = None) -> "Union[dict, LaterReply]":
        """SignCertificate.conf for ``csr``: Rejected with one line saying why; Accepted once it is
        saved (no CA); with --ca-cert, a LaterReply that has openssl verify it first.  ``kind`` is
        2.0.1's certificateType (CSR_RULES; CertificateSigned then names it), None for 1.6."""
        try:
            pem = pem_certificate_request(self._vetted(session, csr, kind))
            if self.ca_cert is None or self.ca_key is None:
                self._save_for_operator(session, pem, kind)
                return {"status": "Accepted"}
        except (OSError, ValueError) as refusal:
            session.log("error" if isinstance(refusal, OSError) else "warn",
                        "SignCertificate: %s; answered Rejected, nothing signed" % refusal)
            return {"status": "Rejected"}
        self.saved += 1
        self.verifying.add(session)
        return LaterReply(self._verified(session, pem, kind))

    def _vetted(self, session: "ChargerSession", csr: Any, kind: Optional[str]) -> bytes:
        """The DER of ``csr`` if it may be saved and signed for this connection; else ValueError."""
        if not isinstance(csr, str) or len(csr) > MAX_CSR_CHARACTERS:
            raise ValueError("the csr is not text of at most %d characters" % MAX_CSR_CHARACTERS)
        try:
            der, names = read_certificate_request(csr)
        except ValueError as exc:
            raise ValueError("the csr is not a PEM certificate request (%s)" % exc) from None
        mismatch = CSR_RULES.get(kind or "", csr_mismatch)(session, names)
        if mismatch is not None:
            raise ValueError(mismatch)
        if session in self.verifying:
            raise ValueError("its previous CSR is still being verified")
        if self.saved >= MAX_SAVED_CSRS:
            raise ValueError("this run has saved %d CSRs, its bound; restart the server for more"
                             % self.saved)
        return der

    def _save(self, session: "ChargerSession", pem: str) -> str:
        """Write a CSR to a new file named after the charger, the time and a number (never over
        another file); its path."""
        name = "".join(character if character.isalnum() or character in "-_." else "_"
                       for character in session.charger_id)[:64] or "charger"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for _ in range(1000):
            self.sequence += 1
            path = os.path.join(self.folder(), "%s-%s-%d.csr" % (name, stamp, self.sequence))
            try:
                with open(path, "x", encoding="utf-8") as csr_file:
                    csr_file.write(pem)
                return path
            except FileExistsError:
                continue
        raise OSError("no free file name for the CSR in %s" % self.folder())

    def _save_for_operator(self, session: "ChargerSession", pem: str, kind: Optional[str]) -> None:
        csr_path = self._save(session, pem)
        self.saved += 1
        chain_path = csr_path[:-len(".csr")] + "-chain.pem"
        session.log("info", "SignCertificate: the CSR is saved in %s; sign it (no --ca-cert/"
                    "--ca-key), put the chain in %s and type: @%s CertificateSigned "
                    "certificateChain=@%s%s" % (
                        csr_path, chain_path, printable(session.charger_id), chain_path,
                        " certificateType=" + kind if kind else ""))

    async def _verified(self, session: "ChargerSession", pem: str, kind: Optional[str]
                        ) -> LaterMade:
        """Accepted, and the signing to start once it is sent, when openssl finds the CSR's
        signature good and it is saved; else Rejected, with one line."""
        try:
            async with self._turns():
                await verify_csr_signature(pem)
            csr_path = self._save(session, pem)
        except (OSError, RuntimeError) as exc:
            self.saved -= 1
            session.log("error" if isinstance(exc, OSError) else "warn",
                        "SignCertificate: %s; answered Rejected, nothing signed" % exc)
            return {"status": "Rejected"}, None
        finally:
            self.verifying.discard(session)
        return {"status": "Accepted"}, lambda: self.start(session, csr_path, kind)

    def _turns(self) -> asyncio.Semaphore:
        """OPENSSL_AT_ONCE turns at running openssl."""
        if self._openssl_turns is None:
            self._openssl_turns = asyncio.Semaphore(OPENSSL_AT_ONCE)
        return self._openssl_turns

    def start(self, session: "ChargerSession", csr_path: str, kind: Optional[str] = None) -> None:
        """Sign the CSR saved in ``csr_path`` and send the chain to ``session``'s charger (as
        certificateType ``kind``, if given)."""
        task = asyncio.ensure_future(self._sign(session, csr_path, kind))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _sign(self, session: "ChargerSession", csr_path: str, kind: Optional[str]) -> None:
        assert self.ca_cert is not None and self.ca_key is not None
        try:
            async with self._turns():
                chain = await sign_csr(csr_path, self.ca_cert, self.ca_key)
        except (OSError, RuntimeError) as exc:
            session.log("error", "SignCertificate: could not sign the CSR in %s: %s"
                        % (csr_path, exc))
            return
        self.system.last_signed_chain[session.charger_id] = chain
        session.log("info", "SignCertificate: signed the CSR in %s with --ca-cert; sending "
                    "CertificateSigned" % csr_path)
        if not session.closed:
            session.call("CertificateSigned", dict({"certificateChain": chain},
                                                   **({"certificateType": kind} if kind else {})))


MAX_FIRMWARE_SIGNATURES = 100  # firmware signatures one run keeps (by file, size and time)


def firmware_signature(system: "CentralSystem", session: Optional["ChargerSession"]
                       ) -> Optional[tuple[str, str]]:
    """With --ca-cert/--ca-key: (signingCertificate, signature) of the firmware.bin in the station's
    folder of the files folder: the CA's certificate and its SHA-256 signature of the file, base64
    (``openssl dgst -sha256 -sign``, checked with ``openssl dgst -verify``).  Signed once per
    version of the file (its size and time), in a short openssl run the loop waits for, as it
    happens only when the operator sends the command.  None without a CA, a station, the file
    server or the file, or when openssl fails (one line says why)."""
    options = system.options
    if options.ca_cert is None or options.ca_key is None or session is None \
            or system.http is None:
        return None
    signing, files = system.signing, system.http.files
    path = os.path.join(files.root, files.charger_folder(session.charger_id), "firmware.bin")
    try:
        info = os.stat(path)
        with open(options.ca_cert, encoding="utf-8") as ca:
            certificate = _PEM_CERTIFICATE.search(ca.read())
    except (OSError, UnicodeDecodeError):
        return None
    key = (path, info.st_size, info.st_mtime_ns)
    if key not in signing.firmware_signatures:
        signature = _openssl_signature(system, session, path, options.ca_key)
        if signature is None or certificate is None:
            return None
        if len(signature) > 800 or len(certificate.group(0)) > 5500:  # the schemas' maxLength
            session.log("warn", "UpdateFirmware: the signature (%d characters) or --ca-cert's "
                        "certificate (%d) is longer than the schema allows (800, 5500); sent "
                        "with placeholders" % (len(signature), len(certificate.group(0))))
            return None
        if len(signing.firmware_signatures) >= MAX_FIRMWARE_SIGNATURES:
            signing.firmware_signatures.clear()
        signing.firmware_signatures[key] = (certificate.group(0).strip() + "\n", signature)
    return signing.firmware_signatures[key]


def _openssl_signature(system: "CentralSystem", session: "ChargerSession", path: str,
                       ca_key: str) -> Optional[str]:
    """``openssl dgst -sha256 -sign ca_key path``, base64; None (and one line) when it fails."""
    try:
        done = subprocess.run(["openssl", "dgst", "-sha256", "-sign", ca_key, path],
                              capture_output=True, timeout=OPENSSL_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        session.log("warn", "UpdateFirmware: cannot sign %s: %s; sent with placeholders" % (
            path, exc))
        return None
    if done.returncode != 0 or not done.stdout:
        session.log("warn", "UpdateFirmware: openssl dgst could not sign %s: %s; sent with "
                    "placeholders" % (path, printable(done.stderr.decode("utf-8", "replace"), 300)))
        return None
    return base64.b64encode(done.stdout).decode("ascii")


# ---------------------------------------------------------- Fault injection
# Faults set on purpose, so that a charger's unhappy paths can be tested:
# one vocabulary for --fault, the console's `fault`, scripts and
# /api/faults (see docs/faults.md).  Every fault that fires is one
# "!! FAULT" line and a transcript record, so that nobody mistakes it for a
# bug of the server.  Each kind of fault parses its own words (FAULT_KINDS);
# a reply fault that fires is a FiredReply, which the engine calls before
# the handler and on the reply; the FaultTable indexes the faults in force,
# so that a frame never scans them.

FAULT_USAGE = ("fault <Action> [status=S[,S...]] [payload={json}] [error=CODE] [delay=SECONDS] "
               "[drop] [twice] "
               "[wrong-id] [times=N] [field=value ...] | fault disconnect [code=N] [after=FRAMES] "
               "[in=SECONDS] | "
               "fault offline SECONDS [silent] | fault handshake 401|403|404|503 for=SECONDS | "
               "fault pings | "
               "fault clear [what]")
REPLY_FAULT_FLAGS = ("drop", "twice", "wrong-id")
# codes no close frame may carry: the connection is cut instead
CUT_CLOSE_CODES = (1005, 1006, 1015)
MAX_FAULTS = 1000  # faults in force at once, however they were set
MAX_HELD_REPLIES = 1000  # replies delay faults hold back per connection; past it, no delay
MAX_HELD_CHARACTERS = 1 << 20  # characters those held replies may have between them


def _fault_number(word: str, text: str, low: float, high: float,
                  kind: Callable[[str], Any] = float) -> Any:
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise CommandError("fault: %s=%s must be a number from %g to %g" % (word, text, low, high))
    return value


class Fault:
    """A fault in force, parsed from its words by its kind's ``parse`` (see FAULT_KINDS).

    ``target`` is a charge point id, or None for every charger.  Faults of
    the connection act when a charger connects (``session_started``);
    outages (``refuses_upgrades``) answer its upgrades until ``until``.
    """

    kind = ""
    action = ""  # the charger's CALL whose reply it changes (reply faults)
    times: Optional[int] = None  # replies it still changes (None: until cleared)
    refuses_upgrades = False
    status = 503  # the HTTP status an outage refuses upgrades with (0: cut, no answer)
    seconds: Optional[float] = None  # disconnect in, offline or handshake refusals for, seconds

    def __init__(self, text: str, target: Optional[str]) -> None:
        self.text, self.target = text, target
        self.until = 0.0  # outages: refusals end then (monotonic)

    @classmethod
    def parse(cls, text: str, target: Optional[str], words: list[str]) -> "Fault":
        """The fault ``words`` (its kind first) say; CommandError says what is wrong."""
        raise NotImplementedError

    def __str__(self) -> str:
        return ("@%s " % self.target if self.target else "") + "fault " + self.text

    def applies_to(self, charger_id: str) -> bool:
        return self.target is None or self.target == charger_id

    def kept(self) -> bool:
        """Whether it stays in force once set (a disconnect of every charger, now, does not)."""
        return True

    def left(self, now: float) -> str:
        """What is left of it, for the listing."""
        if self.refuses_upgrades:
            return " (%.0f s left)" % max(0.0, self.until - now)
        return " (%d more)" % self.times if self.times is not None else ""

    def session_started(self, table: "FaultTable", session: "ChargerSession") -> None:
        """A charger it applies to is connected (it connected, or the fault was set now)."""


class PingsFault(Fault):
    """``pings``: the server stops answering the charger's websocket pings."""

    kind = "pings"

    @classmethod
    def parse(cls, text: str, target: Optional[str], words: list[str]) -> Fault:
        if words[1:]:
            raise CommandError("usage: fault pings (the server stops answering the charger's "
                               "pings; fault clear pings)")
        return cls(text, target)

    def session_started(self, table: "FaultTable", session: "ChargerSession") -> None:
        answer_pings(session.websocket, False)
        table.fired(session, session.charger_id, self, "its pings go unanswered")


class OfflineFault(Fault):
    """``offline SECONDS [silent]``: chargers are closed (1001), their upgrades refused (503 or
    cut)."""

    kind = "offline"
    refuses_upgrades = True

    @classmethod
    def parse(cls, text: str, target: Optional[str], words: list[str]) -> Fault:
        rest = words[1:]
        if not rest:
            raise CommandError("usage: fault offline SECONDS [silent], e.g. fault offline 30")
        fault = cls(text, target)
        fault.seconds = _fault_number("offline", rest[0], 0.1, 86400)
        if rest[1:] not in ([], ["silent"]):
            raise CommandError("usage: fault offline SECONDS [silent]")
        fault.status = 0 if rest[1:] else 503
        return fault

    def session_started(self, table: "FaultTable", session: "ChargerSession") -> None:
        table.cut(session, self, 1001,
                  "the central system went away for %g s" % (self.seconds or 0))


class HandshakeFault(Fault):
    """``handshake STATUS for=SECONDS``: upgrades are refused with that HTTP status."""

    kind = "handshake"
    refuses_upgrades = True

    @classmethod
    def parse(cls, text: str, target: Optional[str], words: list[str]) -> Fault:
        rest = words[1:]
        if len(rest) != 2 or rest[0] not in ("401", "403", "404", "503") \
                or not rest[1].startswith("for="):
            raise CommandError("usage: fault handshake 401|403|404|503 for=SECONDS, e.g. "
                               "fault handshake 503 for=20")
        fault = cls(text, target)
        fault.status = int(rest[0])
        fault.seconds = _fault_number("for", rest[1][4:], 0.1, 86400)
        return fault


class DisconnectFault(Fault):
    """``disconnect [code=N] [after=FRAMES] [in=SECONDS]``: the server closes the connection."""

    kind = "disconnect"
    code = 1000
    after: Optional[int] = None  # disconnect after this many more frames from the charger

    @classmethod
    def parse(cls, text: str, target: Optional[str], words: list[str]) -> Fault:
        fault = cls(text, target)
        for argument in words[1:]:
            name, _, value = argument.partition("=")
            if name == "code":
                fault.code = _fault_number("code", value, 1000, 4999, int)
            elif name == "after":
                fault.after = _fault_number("after", value, 1, 10 ** 6, int)
            elif name == "in":
                fault.seconds = _fault_number("in", value, 0.001, 86400)
            else:
                raise CommandError("fault disconnect takes code=, after= and in=, not %r"
                                   % argument)
        return fault

    def kept(self) -> bool:
        return not (self.target is None and self.after is None and self.seconds is None)

    def session_started(self, table: "FaultTable", session: "ChargerSession") -> None:
        if self.after is not None:
            session.fault_frames[self] = 0  # counted by FaultTable.frame_in
        elif self.seconds is not None:
            asyncio.get_running_loop().call_later(self.seconds, self._due, table, session)
        else:
            table.disconnect(session, self)

    def _due(self, table: "FaultTable", session: "ChargerSession") -> None:
        if self in table.faults and not session.closed:
            table.disconnect(session, self)


class ReplyFault(Fault):
    """``<Action> ...``: what the charger gets in reply to its CALL of that action (FiredReply)."""

    kind = "reply"

    def __init__(self, text: str, target: Optional[str], action: str) -> None:
        super().__init__(text, target)
        self.action = action
        self.statuses: list[Any] = []  # the status of each successive reply, in turn
        self.fields: dict[str, Any] = {}  # more fields of the reply
        self.payload: Optional[dict] = None  # the whole reply instead
        self.error: Optional[str] = None
        self.delay = 0.0
        self.flags: tuple[str, ...] = ()
        self.refuses = False  # error= or drop: the handler does not run
        self.used = 0  # replies it has changed
        self.serial = 0  # its place among the faults set (FaultTable)

    @classmethod
    def parse(cls, text: str, target: Optional[str], words: list[str]) -> Fault:
        lower = words[0].lower()
        action = next((name for name in ALL_CHARGER_ACTIONS if name.lower() == lower), None)
        if action is None:
            close = difflib.get_close_matches(words[0], [*ALL_CHARGER_ACTIONS, *FAULT_KINDS],
                                              n=1)
            raise CommandError("fault: %r is not an action a charger sends nor a kind of fault%s; "
                               "usage: %s" % (words[0], "; did you mean %s?" % close[0]
                                              if close else "", FAULT_USAGE))
        fault = cls(text, target, action)
        for argument in words[1:]:
            fault._take(argument)
        if fault.statuses and fault.times is None:
            fault.times = len(fault.statuses)
        if not (fault.statuses or fault.fields or fault.payload is not None or fault.error
                or fault.delay or fault.flags):
            raise CommandError("fault %s: say what to do to its reply (status=, payload=, error=, "
                               "delay=, drop, twice, wrong-id, or a field=value)" % action)
        fault.refuses = fault.error is not None or "drop" in fault.flags
        return fault

    def _take(self, argument: str) -> None:
        """One of its words: a flag or key=value."""
        name, equals, value = argument.partition("=")
        if not equals:
            if name not in REPLY_FAULT_FLAGS:
                raise CommandError("fault %s: %r is not one of %s, nor key=value" % (
                    self.action, name, ", ".join(REPLY_FAULT_FLAGS)))
            self.flags += (name,)
        elif name == "status":
            self.statuses = [parse_console_value(status) for status in value.split(",")]
        elif name == "payload":  # the whole reply, as given
            self.payload = _parse_json_payload("fault " + self.action, value)
        elif name == "error":
            if value not in ALL_ERROR_CODES:
                raise CommandError("fault %s: error=%s is not an OCPP error code (%s)" % (
                    self.action, value, ", ".join(sorted(ALL_ERROR_CODES))))
            self.error = value  # as typed: each version's spelling is chosen as it fires
        elif name == "delay":
            self.delay = _fault_number("delay", value, 0.001, 3600)
        elif name == "times":
            self.times = _fault_number("times", value, 1, 10 ** 6, int)
        else:
            self.fields[name] = parse_console_value(value)  # improper data on purpose is allowed


# The kinds of fault by their first word; any other first word names an action (a reply fault).
FAULT_KINDS: dict[str, "type[Fault]"] = {"disconnect": DisconnectFault, "offline": OfflineFault,
                                         "handshake": HandshakeFault, "pings": PingsFault}


def parse_fault(text: str, target: Optional[str] = None) -> Fault:
    """A fault from its words (see FAULT_USAGE); CommandError says what is wrong."""
    words = text.split()
    if not words:
        raise CommandError("usage: " + FAULT_USAGE)
    return FAULT_KINDS.get(words[0].lower(), ReplyFault).parse(text, target, words)


# The replies whose status= is that of an authorization: 1.6's idTagInfo, 2.0.1's idTokenInfo.
ID_INFO_KEYS = ("idTagInfo", "idTokenInfo")


def fault_error_code(rpc: RpcRules, typed: Any) -> tuple[Any, str]:
    """The code an error= fault sends a charger of ``rpc``'s version for the code ``typed`` (any
    version's), and what its FAULT line adds: the version's spelling of a code it spells otherwise
    (FormationViolation is FormatViolation in 2.0.1), GenericError for one it lacks."""
    if typed is None:
        return None, ""
    code = rpc.code(internal_error_code(typed))
    if code not in rpc.error_codes:
        return GENERIC_ERROR, " (%s is not an OCPP %s error code: GenericError instead)" % (
            typed, rpc.version)
    return code, "" if code == typed else " (OCPP %s spells %s so)" % (rpc.version, typed)


class FiredReply:
    """A reply fault firing on one CALL, and the engine's hooks: ``refuse`` (if ``refuses``) or
    ``run`` in place of the handler; ``change`` with its reply, then ``send`` with the text."""

    __slots__ = ("table", "fault", "status", "refuses")

    def __init__(self, table: "FaultTable", fault: ReplyFault, status: Any) -> None:
        self.table, self.fault, self.status = table, fault, status  # status: this reply's status=
        self.refuses = fault.refuses

    def refuse(self, session: "ChargerSession", label: str, payload: Any, message_id: str
               ) -> Optional[str]:
        """error=CODE or drop: the handler does not run; the CALLERROR, or nothing, goes back."""
        fault = self.fault
        code, note = fault_error_code(session.version.rpc, fault.error)
        session.bus.publish("call_answered", session.charger_id, session, action=fault.action,
                            payload=payload, reply=None, error=code)
        if fault.error is None:
            self.table.fired(session, session.charger_id, fault,
                             "no reply to %s %s" % (label, _show(message_id)))
            return None
        self.table.fired(session, session.charger_id, fault,
                         "answered with CALLERROR %s%s" % (code, note))
        return session.answer(build_call_error(message_id, code, "fault injected"),
                              label + " CALLERROR", code + " fault injected")

    def run(self, session: "ChargerSession", handler: Callable[["ChargerSession", dict], Any],
            payload: Any) -> Any:
        """The handler, run: a BootNotification answered Pending or Rejected, or with another
        interval, by the fault is so for the server too."""
        fault, status = self.fault, self.status
        if fault.action == "BootNotification" and (status is not None or fault.fields):
            options = session.system.options
            return answer_boot(session, payload, status or options.boot_status,
                               fault.fields.get("interval", options.heartbeat_interval))
        return handler(session, payload)

    def change(self, session: "ChargerSession", reply: dict) -> dict:
        """The handler's reply as the fault has it: status= (idTagInfo's for an idTag reply) and
        field=value set, or payload= instead."""
        fault, status = self.fault, self.status
        if status is None and not fault.fields and fault.payload is None:
            return reply
        reply = dict(fault.payload) if fault.payload is not None else dict(reply)
        if status is not None:
            info = next((key for key in ID_INFO_KEYS if isinstance(reply.get(key), dict)), None)
            if info is not None:
                reply[info] = dict(reply[info], status=status)
            else:
                reply["status"] = status
        reply.update(fault.fields)
        self.table.fired(session, session.charger_id, fault,
                         "reply changed to %s" % render_json(reply))
        return reply

    def send(self, session: "ChargerSession", text: str, label: str, shown: str, message_id: str
             ) -> Optional[str]:
        """The reply ``text`` goes out: later (delay=), twice, or under another id (wrong-id)."""
        fault = self.fault
        if not (fault.delay or fault.flags):
            return session.answer(text, label + ".conf", shown)
        wrong_id = "wrong-id" in fault.flags
        if wrong_id:
            text = text.replace(_json_string(message_id), _json_string(message_id + "-wrong"), 1)
        copies = 2 if "twice" in fault.flags else 1
        self.table.fired(session, session.charger_id, fault, "reply %s%s%s" % (
            "sent twice" if copies == 2 else "sent",
            " after %g s" % fault.delay if fault.delay else "",
            " with message id %s" % _show(message_id + "-wrong") if wrong_id else ""))
        if not fault.delay:
            session.after_reply(lambda: asyncio.ensure_future(
                session.send_text(text, label + ".conf", shown)))
            return session.answer(text, label + ".conf", shown)
        if session.held_replies is None:
            session.held_replies = HeldReplies(session)
        session.held_replies.hold(fault.delay, text, label + ".conf", shown, copies)
        return None


class HeldReplies:
    """The replies delay faults hold back on one connection, bounded: at most MAX_HELD_REPLIES,
    with MAX_HELD_CHARACTERS between them.  Past the bound a delay fault lets CALLs by, answered
    at once (FaultTable.fire), with one line until the held replies have gone out."""

    def __init__(self, session: "ChargerSession") -> None:
        self.session = session
        self.timers: dict[asyncio.TimerHandle, int] = {}  # each held reply's timer: its characters
        self.characters = 0
        self.let_by = 0  # CALLs answered without their delay since the bound was reached

    def full(self) -> bool:
        return len(self.timers) >= MAX_HELD_REPLIES or self.characters >= MAX_HELD_CHARACTERS

    def pass_by(self, fault: ReplyFault) -> None:
        """A CALL ``fault`` would delay is answered at once: said once per burst."""
        self.let_by += 1
        if self.let_by == 1:
            self.session.log("warn", "%d replies (%d characters) are held back by delay faults, "
                             "the most one connection may have (%d replies or %d characters): "
                             "CALLs that %s would delay are answered at once, without the delay, "
                             "until those have gone out" % (
                                 len(self.timers), self.characters, MAX_HELD_REPLIES,
                                 MAX_HELD_CHARACTERS, fault))

    def hold(self, delay: float, text: str, label: str, shown: str, copies: int) -> None:
        """Send ``text`` (``copies`` times) ``delay`` seconds from now, unless the charger is
        gone by then."""
        size = len(text) + len(shown)

        def send_later() -> None:
            self.characters -= self.timers.pop(handle, 0)
            self.session.replies_withheld -= 1
            if not self.timers:
                self.let_by = 0  # the burst is over
            if not self.session.closed:
                for _ in range(copies):
                    asyncio.ensure_future(self.session.send_text(text, label, shown))
        handle = asyncio.get_running_loop().call_later(delay, send_later)
        self.timers[handle] = size
        self.characters += size
        self.session.replies_withheld += 1

    def cancel(self) -> None:
        """The connection is gone: nothing held is sent, and nothing is kept for it."""
        for handle in self.timers:
            handle.cancel()
        self.session.replies_withheld -= len(self.timers)
        self.timers.clear()
        self.characters = 0


class FaultTable:
    """The faults in force (at most MAX_FAULTS), indexed so that a frame never scans them: reply
    faults by action and target, the others apart, for connections and upgrades."""

    def __init__(self, system: "CentralSystem") -> None:
        self.system = system
        self.faults: dict[Fault, None] = {}  # every fault in force, in the order set
        self.connection_faults: dict[Fault, None] = {}  # those that are not reply faults
        # Reply faults by action, then target (None: every charger), each list in the order set.
        # Sessions hold this very dict (ChargerSession.reply_faults): it is emptied, not replaced.
        self.reply_faults: dict[str, dict[Optional[str], list[ReplyFault]]] = {}
        self._serials = itertools.count()

    def add(self, fault: Fault) -> str:
        """Put a fault in force (a disconnect or offline acts at once on the chargers connected);
        CommandError when MAX_FAULTS are in force already."""
        if fault.kept():
            if len(self.faults) >= MAX_FAULTS:
                raise CommandError("fault: %d faults are in force, the most there may be "
                                   "(fault clear some first)" % len(self.faults))
            if isinstance(fault, ReplyFault):
                fault.serial = next(self._serials)
            self._keep(fault)
        if fault.refuses_upgrades:
            fault.until = time.monotonic() + (fault.seconds or 0)
        for session in list(self.system.sessions.values()):
            if fault.applies_to(session.charger_id):
                fault.session_started(self, session)
        return "in force: %s" % fault

    def _keep(self, fault: Fault) -> None:
        self.faults[fault] = None
        if isinstance(fault, ReplyFault):
            by_target = self.reply_faults.setdefault(fault.action, {})
            by_target.setdefault(fault.target, []).append(fault)
        else:
            self.connection_faults[fault] = None

    def remove(self, fault: Fault) -> None:
        if fault not in self.faults:
            return
        del self.faults[fault]
        self.connection_faults.pop(fault, None)
        by_target = self.reply_faults.get(fault.action)
        if by_target is not None and fault in by_target.get(fault.target, ()):
            by_target[fault.target].remove(fault)
            if not by_target[fault.target]:
                del by_target[fault.target]
            if not by_target:
                del self.reply_faults[fault.action]

    def clear(self, what: str = "", target: Optional[str] = None) -> str:
        kept = [fault for fault in self.faults if not (
            (target is None or fault.target == target)
            and what.lower() in ("", fault.kind, fault.action.lower()))]
        cleared = len(self.faults) - len(kept)
        self.faults.clear()
        self.connection_faults.clear()
        self.reply_faults.clear()
        for fault in kept:
            self._keep(fault)
        for session in self.system.sessions.values():
            if not any(fault.kind == "pings" and fault.applies_to(session.charger_id)
                       for fault in self.connection_faults):
                answer_pings(session.websocket, True)
        return "%d fault(s) cleared" % cleared

    def listing(self) -> list[str]:
        now = time.monotonic()
        return [str(fault) + fault.left(now) for fault in self.faults] or ["no faults in force"]

    def fired(self, session: Optional["ChargerSession"], charger_id: str, fault: Fault,
              effect: str) -> None:
        """Say so, marked, in the output and the transcript; counted for the charge point's
        verdict."""
        state = self.system.states.get(charger_id)
        if state is not None:
            state.tally.faults += 1
        self.system.bus.publish("fault_injected", charger_id, session, fault=str(fault),
                                effect=effect)
        self.system.bus.publish("log", charger_id, session, level="warn",
                                text="FAULT injected (%s): %s" % (fault, effect))

    # -- replies

    def fire(self, session: "ChargerSession", action: str) -> Optional[FiredReply]:
        """The reply fault that fires on this CALL, if any: of those for this charger (by its
        id, or for every charger), the first set."""
        by_target = self.reply_faults.get(action)
        if by_target is None:
            return None
        mine, every = by_target.get(session.charger_id), by_target.get(None)
        if mine and not (every and every[0].serial < mine[0].serial):
            fault = mine[0]
        elif every:
            fault = every[0]
        else:
            return None
        if fault.delay and session.held_replies is not None and session.held_replies.full():
            session.held_replies.pass_by(fault)
            return None
        statuses = fault.statuses
        status = statuses[min(fault.used, len(statuses) - 1)] if statuses else None
        fault.used += 1
        if fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                self.remove(fault)
        return FiredReply(self, fault, status)

    # -- the connection

    def session_started(self, session: "ChargerSession") -> None:
        """A connection opened: faults of the connection start counting or fire."""
        for fault in list(self.connection_faults):
            if fault.applies_to(session.charger_id):
                fault.session_started(self, session)

    def frame_in(self, session: "ChargerSession") -> None:
        """A frame from a charger with a disconnect after N frames in force: counted."""
        counted = session.fault_frames
        for fault in list(counted):
            if fault not in self.faults:  # cleared since
                del counted[fault]
                continue
            counted[fault] += 1
            if counted[fault] >= (fault.after or 0):
                del counted[fault]
                self.disconnect(session, fault)

    def disconnect(self, session: "ChargerSession", fault: DisconnectFault) -> None:
        """A disconnect fault fires: one for a named charger is then done; one for every charger
        (after=, in=) stays for the others, and for those that connect later, until cleared."""
        if fault.target is not None:
            self.remove(fault)
        if fault.code in CUT_CLOSE_CODES:
            effect = "connection cut without a close frame (%d)" % fault.code
        else:
            effect = "connection closed with code %d" % fault.code
        self.cut(session, fault, fault.code, effect)

    def cut(self, session: "ChargerSession", fault: Fault, code: int, effect: str) -> None:
        self.fired(session, session.charger_id, fault, effect)
        if code in CUT_CLOSE_CODES:
            session.websocket.transport.abort()
        else:
            asyncio.ensure_future(close_within(session.websocket, code, "fault injected",
                                               CLOSE_TIMEOUT))

    def upgrade_refusal(self, charger_id: str) -> Optional[tuple[int, str]]:
        """Offline and handshake faults: the HTTP status that refuses this upgrade (0: cut, no
        answer)."""
        now = time.monotonic()
        for fault in list(self.connection_faults):
            if not fault.refuses_upgrades:
                continue
            if fault.until <= now:
                self.remove(fault)
            elif fault.applies_to(charger_id):
                self.fired(None, charger_id, fault, "upgrade refused (%s)" % (
                    "cut without an answer" if not fault.status else "HTTP %d" % fault.status))
                return fault.status, "fault injected: %s" % fault
        return None


# --------------------------------------------------------- Command language
# One language for every way in: the console, scenario scripts and the HTTP
# API.  parse_command checks what a line says by itself; build_payload and
# Console.run do what depends on the run.

CONSOLE_ACTIONS = {action.lower(): action for action in ALL_SERVER_ACTIONS}
VersionOf = Callable[[Optional[str]], OcppVersion]  # a command's @target -> the version it speaks


def default_version_of(target: Optional[str]) -> OcppVersion:
    """The version of a command named where no charger says its own (the default of --ocpp)."""
    return DEFAULT_VERSION


def console_action(word: str, version: OcppVersion) -> Optional[str]:
    """The server action a typed word names in ``version`` (any case, startRemote/stopRemote
    too), or None."""
    lower = word.lower()
    row = typed_word(lower)
    if row is not None:
        return getattr(version, row.action) if row.action is not None else None
    return CONSOLE_ACTIONS.get(lower)


def version_action(word: str, version: OcppVersion) -> str:
    """The action ``word`` names, which ``version`` must have; CommandError otherwise."""
    action = console_action(word, version)
    if action is None:
        raise CommandError("unknown command %r; %stype help for the list"
                           % (word, _did_you_mean(word)))
    if action not in version.defaults:
        raise CommandError("%s is not an OCPP %s action (help actions lists them)"
                           % (action, version.name))
    return action


def parse_console_value(text: str) -> Any:
    """A key=value value: JSON when it parses (30, true, {...}), else the text."""
    try:
        return loads_strict(text)
    except (ValueError, RecursionError):
        return text


def _field_rule(rules: Object, path: list[str]) -> Optional[Rule]:
    rule: Optional[Rule] = rules
    for name in path:
        if isinstance(rule, Array):  # a path through a list of objects names its item's fields
            rule = rule.items
        rule = rule.fields.get(name) if isinstance(rule, Object) else None
    return rule


def _coerce(rule: Optional[Rule], value: Any) -> Any:
    """Fit a typed value to its field: 30 for a string field is sent as "30"."""
    if isinstance(rule, String) and isinstance(value, (int, float, bool)):
        return dump_json(value)
    if isinstance(rule, (Integer, Decimal)) and isinstance(value, str):
        number = parse_console_value(value)
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            return number
    return value


class Command:
    """One line of the command language, parsed and checked as far as the line alone allows.

    ``word`` is "call" for a server action (``action`` names it; ``payload``
    is a typed JSON payload, else ``overrides`` are the key=value pairs, as
    (path, value)), or one of help, chargers, use, raw, echo, quit; ``text``
    is the rest of the line for those.  ``target`` is the charger of ``@id``.
    """

    __slots__ = ("line", "word", "target", "action", "payload", "overrides", "text")

    def __init__(self, line: str, word: str, target: Optional[str] = None,
                 action: Optional[str] = None, payload: Optional[dict] = None,
                 overrides: Optional[list[tuple[list[str], Any]]] = None, text: str = "") -> None:
        self.line = line
        self.word = word
        self.target = target
        self.action = action
        self.payload = payload
        self.overrides = overrides or []
        self.text = text


def parse_command(line: str, files_from: Optional[str] = None,
                  version_of: VersionOf = default_version_of) -> Command:
    """Parse one line of the command language; CommandError says what is wrong with it.

    Used by the console, the scenario checker and the scenario runner alike,
    so a line is valid or not the same way everywhere.  Checked here: the
    word, the action, field names, and each value against its field's rule.
    Checked when it runs: what depends on the run (an open transaction, a
    connected charger, required fields the defaults do not fill).

    ``key=@path`` reads the value from a file, relative to ``files_from``
    (the console's current folder, a script's own folder); None refuses it
    (the HTTP API).  ``key=@@text`` is the literal ``@text``.  ``version_of``
    names the OCPP version of the charger the line is for (its @target, or
    the one it would go to), whose actions and fields it is checked against.
    """
    line = line.strip()
    target: Optional[str] = None
    if line.startswith("@"):
        target, _, line = line[1:].partition(" ")
        line = line.strip()
        if not target or not line:
            raise CommandError("usage: @<chargerId> <command>, e.g. @CP-1 Reset")
    word, _, rest = line.partition(" ")
    rest, lower = rest.strip(), word.lower()
    row = typed_word(lower)
    if row is not None and row.expand is not None:
        return _expanded_command(line, row, rest, target, version_of(target))
    if row is not None and row.action is None:
        if row.check is not None:
            row.check(rest, target)
        return Command(line, row.word, target, text=rest)
    version = version_of(target)
    action = version_action(word, version)
    if rest.startswith("{"):
        return Command(line, "call", target, action, payload=_parse_json_payload(action, rest))
    rules = version.server_request_rules[action]
    return Command(line, "call", target, action,
                   overrides=[_parse_override(action, rules, argument, files_from)
                              for argument in rest.split()])


def _expanded_command(line: str, row: "CommandWord", rest: str, target: Optional[str],
                      version: OcppVersion) -> Command:
    """A short form (set, get) as the call it stands for, checked against its schema (that of
    a version that has it, if ``version`` has not: the charger it goes to is known when it
    runs, and build_payload refuses it there)."""
    action, payload = row.expand(rest)  # type: ignore[misc]
    if action not in version.defaults:
        version = next(other for other in VERSIONS.values() if action in other.defaults)
    problems = lint_payload(version.server_request_rules[action], payload)
    if problems:
        raise PayloadRefused(action, problems[:1])
    return Command(line, "call", target, action, payload=payload)


def _did_you_mean(word: str) -> str:
    """"did you mean X? " for the typed word or action closest to ``word`` (any case), else ""."""
    choices = typed_names() + list(ALL_SERVER_ACTIONS)
    by_lower = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5) or [
        by_lower[match]
        for match in difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.5)]
    if not close:
        return ""
    kind = " (an OCPP command)" if close[0] in ALL_SERVER_ACTIONS else ""
    return "did you mean %s%s? " % (close[0], kind)


def _parse_json_payload(action: str, text: str) -> dict:
    try:
        payload = loads_strict(text)
    except (ValueError, RecursionError) as exc:
        raise CommandError("%s: the JSON payload does not parse: %s" % (action, exc)) from None
    if not isinstance(payload, dict):
        raise CommandError("%s: a JSON payload must be an object" % action)
    return payload


def _value_from_file(action: str, key: str, path: str, files_from: Optional[str]) -> str:
    """The text of ``key=@path`` (a PEM certificate, say); CommandError when it cannot be read."""
    if files_from is None:
        raise CommandError("%s: %s=@%s reads a file, which only the console and scripts may do (@@ "
                           "for a literal "
                           "@)" % (action, key, path))
    full = os.path.join(files_from, os.path.expanduser(path))
    try:
        with open(full, encoding="utf-8") as value_file:
            text = value_file.read(MAX_FILE_VALUE + 1)
    except OSError as exc:
        raise CommandError("%s: cannot read %s=@%s (%s): %s"
                           % (action, key, path, full, exc.strerror or exc)) from None
    except UnicodeDecodeError:
        raise CommandError("%s: %s=@%s is not UTF-8 text" % (action, key, path)) from None
    if len(text) > MAX_FILE_VALUE:
        raise CommandError("%s: %s=@%s is over %d characters" % (action, key, path, MAX_FILE_VALUE))
    return text


class PayloadRefused(CommandError):
    """A command whose payload would break its OCPP schema: not sent.  ``problems`` are all of them;
    the message names the first and how to send it anyway."""

    def __init__(self, action: str, problems: list[Problem]) -> None:
        super().__init__("%s not sent: %s (send it anyway with %s {json} or raw)"
                         % (action, problems[0], action))
        self.problems = problems


def _parse_override(action: str, rules: Object, argument: str,
                    files_from: Optional[str] = None) -> tuple[list[str], Any]:
    """One key=value of a command: the field's path and its value, typed to the field and
    checked."""
    key, equals, text = argument.partition("=")
    if not equals or not key:
        raise CommandError("%s: expected key=value, got %r (help %s lists the fields)"
                           % (action, argument, action))
    from_file = text.startswith("@") and not text.startswith("@@")
    if text.startswith("@"):
        text = text[1:] if not from_file else _value_from_file(action, key, text[1:], files_from)
    path = key.split(".")
    rule = _field_rule(rules, path)
    problems: list[Problem] = []
    if rule is None:
        parent = _field_rule(rules, path[:-1])
        if isinstance(parent, Object):
            problems.append(Problem(key, "is not a field of this message", FORMATION_VIOLATION,
                                    lambda: parent.suggest(path[-1])))
        else:
            problems.append(Problem(key, "is not a field of this message (%s is not an object)"
                                    % ".".join(path[:-1]), FORMATION_VIOLATION))
        value = text
    else:
        value = text if from_file and isinstance(rule, String) else _coerce(
            rule, parse_console_value(text.strip()))
        if not rule.valid(value):
            rule.check(value, key, problems)
    if problems:
        raise PayloadRefused(action, problems[:1])
    return path, value


def build_payload(system: "CentralSystem", session: Optional[ChargerSession],
                  command: Command) -> dict:
    """The payload a call command sends: its JSON as typed, or the defaults with its key=value
    overrides."""
    action = command.action or ""
    if command.payload is not None:
        if session is not None and action not in session.version.defaults:  # set, get on 1.6
            raise CommandError("%s is not an OCPP %s action" % (action, session.version.name))
        return command.payload
    version = session.version if session is not None else system.default_version
    if action not in version.defaults:
        raise CommandError("%s is not an OCPP %s action" % (action, version.name))
    try:
        payload = version.defaults[action](system, session)
        missing_default: Optional[CommandError] = None
    except CommandError as exc:  # e.g. no open transaction: the arguments may supply it
        if not command.overrides:
            raise
        payload, missing_default = {}, exc
    for path, value in command.overrides:
        target = payload
        for name in path[:-1]:
            target = target.setdefault(name, {})
            if isinstance(target, list) and len(target) == 1:  # the one item of a default list
                target = target[0]
            if not isinstance(target, dict):
                raise CommandError("%s: %s is not an object (or a list of one)" % (action, name))
        target[path[-1]] = value
    if type(payload.get("transactionId")) is TransactionNeeded:  # no argument gave one
        raise CommandError(payload["transactionId"])
    problems = lint_payload(version.server_request_rules[action], payload)
    if problems and missing_default is not None:
        raise missing_default
    if problems:
        raise PayloadRefused(action, problems)
    return payload


def run_fault_command(system: "CentralSystem", command: Command) -> list[str]:
    """`fault ...`, `fault clear [what]` and `faults`, from the console, a script or the API."""
    if command.word == "faults":
        return system.faults.listing()
    words = command.text.split()
    if words[:1] == ["clear"]:
        return [system.faults.clear(" ".join(words[1:]), command.target)]
    return [system.faults.add(parse_fault(command.text, command.target))]


# The words of the language.  A handler gets the host that runs the line:
# the Console (every word), or the ScenarioRunner (the words a script may
# use: it has ``system`` and ``target_session`` too), the command, and the
# CommandOutcome to fill.

def _run_call(host: Any, command: Command, outcome: "CommandOutcome") -> None:
    session = host.target_session(command.target)
    outcome.call = session.call(command.action or "", build_payload(host.system, session, command))


def _run_raw(host: Any, command: Command, outcome: "CommandOutcome") -> None:
    outcome.call = host.target_session(command.target).queue.send_raw(command.text)


def _run_fault(host: Any, command: Command, outcome: "CommandOutcome") -> None:
    outcome.lines.extend(run_fault_command(host.system, command))


def _run_echo(host: Any, command: Command, outcome: "CommandOutcome") -> None:
    outcome.lines.append(command.text)


def _run_quit(host: Any, command: Command, outcome: "CommandOutcome") -> None:
    outcome.lines.append("stopping")
    host.system.stop()


def summary_lines(system: "CentralSystem", charger_id: Optional[str]) -> list[str]:
    """`summary`: the verdict so far of ``charger_id``, or of every charge point seen (and the
    verdict of the latest transaction that ended, if any); CommandError for one never seen."""
    states = system.states
    if charger_id is not None and charger_id not in states:
        raise CommandError("no charge point %s has connected (seen: %s)" % (
            _show(charger_id), ", ".join(map(_show, list(states)[:20])) or "none"))
    chosen = [states[charger_id]] if charger_id is not None else list(states.values())
    lines = [] if chosen else ["no charger has connected yet"]
    for state in chosen:
        lines.append("%s %s" % (printable(state.charger_id), charger_verdict(state)["text"]))
        if state.tally.last is not None:
            lines.append("  latest " + state.tally.last["text"])
    return lines


def _run_summary(host: Any, command: Command, outcome: "CommandOutcome") -> None:
    named = command.text[1:] if command.text.startswith("@") else command.text
    outcome.lines.extend(summary_lines(host.system, named or command.target))


def _check_summary(rest: str, target: Optional[str]) -> None:
    if len(rest.split()) > 1:
        raise CommandError("usage: summary [@<chargerId>] (every charge point without one)")


def _check_help(rest: str, target: Optional[str]) -> None:
    lower = rest.lower()
    if not rest or lower in CONSOLE_ACTIONS or typed_word(lower) or lower in HELP_TOPICS:
        return
    choices = {**CONSOLE_ACTIONS, **{topic: topic for topic in HELP_TOPICS}}
    close = difflib.get_close_matches(lower, list(choices), n=1)
    raise CommandError("no action %r%s" % (rest, "; did you mean %s?" % choices[close[0]] if close
                                          else " (topics: %s)" % ", ".join(HELP_TOPICS)))


def _check_raw(rest: str, target: Optional[str]) -> None:
    if not rest:
        raise CommandError('usage: raw <frame>, e.g. raw [2,"1","Reset",{"type":"Soft"}]')


def _check_fault(rest: str, target: Optional[str]) -> None:
    if rest.split()[:1] != ["clear"]:
        parse_fault(rest, target)  # checked now: a script with a bad fault is invalid at once


def _check_held(rest: str, target: Optional[str]) -> None:
    if rest not in ("", "clear"):
        raise CommandError("usage: held (list them) or held clear (drop them)")


# ---- set, get and variables: a 2.0.1 station's variables in short spellings
# Component[instance]@evse/connector.Variable[instance]/attributeType: every part but the two
# names may be left out (attributeType Actual); set takes =value (a "JSON string" for spaces).

_VARIABLE_SPEC = re.compile(
    r"(?P<component>[^\s\[\]@./=\"]+)(?:\[(?P<component_instance>[^\]]*)\])?"
    r"(?:@(?P<evse>\d+)(?:/(?P<connector>\d+))?)?"
    r"\.(?P<variable>[^\s\[\]@./=\"]+)(?:\[(?P<variable_instance>[^\]]*)\])?"
    r"(?:/(?P<type>[A-Za-z]+))?")
_SHORT_TOKEN = re.compile(r'(?:[^\s"\[]+|\[[^\]]*\]|"(?:[^"\\]|\\.)*")+')
VARIABLE_SPELLING = "Component[instance]@evse/connector.Variable[instance]/Type"


def _short_tokens(rest: str, usage: str) -> list[str]:
    """The space-separated arguments of set or get ("..." and [...] may hold spaces)."""
    tokens = _SHORT_TOKEN.findall(rest)
    if not tokens or _SHORT_TOKEN.sub("", rest).strip():
        raise CommandError("usage: %s (%s); help set says more" % (usage, VARIABLE_SPELLING))
    return tokens


def _variable_spec(word: str, text: str) -> dict:
    """The component, variable and attributeType (when not Actual) a short spelling names."""
    match = _VARIABLE_SPEC.fullmatch(text)
    if match is None:
        raise CommandError("%s: %r is not %s (only the two names are needed: "
                           "OCPPCommCtrlr.HeartbeatInterval)" % (word, text, VARIABLE_SPELLING))
    parts = match.groupdict()
    component: dict = {"name": parts["component"]}
    if parts["component_instance"] is not None:
        component["instance"] = parts["component_instance"]
    if parts["evse"] is not None:
        component["evse"] = {"id": int(parts["evse"])}
        if parts["connector"] is not None:
            component["evse"]["connectorId"] = int(parts["connector"])
    variable: dict = {"name": parts["variable"]}
    if parts["variable_instance"] is not None:
        variable["instance"] = parts["variable_instance"]
    data = {"component": component, "variable": variable}
    if parts["type"] is not None:
        kind = {name.lower(): name for name in ATTRIBUTE_TYPES}.get(parts["type"].lower())
        if kind is None:
            raise CommandError("%s: attributeType %r is none of %s"
                               % (word, parts["type"], ", ".join(ATTRIBUTE_TYPES)))
        if kind != "Actual":
            data["attributeType"] = kind
    return data


def _setting(text: str) -> dict:
    """One Component.Variable=value of set, as SetVariableData."""
    spec, equals, value = text.partition("=")
    while equals and spec.count("[") > spec.count("]"):  # an "=" inside an [instance]
        more, equals, value = value.partition("=")
        spec += "=" + more
    if not equals:
        raise CommandError("set: %r has no =value (set Component.Variable=value)" % text)
    if value.startswith('"'):
        value = parse_console_value(value)
        if not isinstance(value, str):
            raise CommandError("set: a quoted value must be one JSON string")
    return dict(_variable_spec("set", spec), attributeValue=value)


def expand_set(rest: str) -> tuple[str, dict]:
    """`set A.B=1 C.D=x`: SetVariables of each, in order."""
    tokens = _short_tokens(rest, "set Component.Variable=value ...")
    return "SetVariables", {"setVariableData": [_setting(token) for token in tokens]}


def expand_get(rest: str) -> tuple[str, dict]:
    """`get A.B C.D`: GetVariables of each, in order."""
    tokens = _short_tokens(rest, "get Component.Variable ...")
    return "GetVariables", {"getVariableData": [_variable_spec("get", token) for token in tokens]}


def _listed_state(host: Any, target: Optional[str]) -> ChargerState:
    """The charge point `variables` lists: @target's (connected or not), else the one commands
    go to."""
    states = host.system.states
    if target is not None and target in states:
        return states[target]
    try:
        return host.target_session(target).state
    except NoChargerYet:
        raise CommandError("no charger is connected yet: say which, e.g. @CP-1 variables") \
            from None


MAX_VARIABLES_LISTED = 50  # lines `variables` lists; then "... and N more: narrow it"


def device_model_lines(state: ChargerState, query: str) -> list[str]:
    """`variables [query]`: the attributes kept whose name contains ``query``, a line each (at
    most MAX_VARIABLES_LISTED, then how many more)."""
    model = state.device_model
    name = printable(state.charger_id)
    if model is None or not model.variables:
        return ["%s has reported no variables (GetBaseReport, GetReport or GetVariables asks; "
                "a 2.0.1 station's)" % name]
    found = model.matching(query)
    lines = ["%s: %s kept%s%s" % (
        name, _counted(len(model.variables), "variable attribute"),
        ", %d match %s" % (len(found), _show(query)) if query else "",
        " (the cap of %d was reached)" % MAX_DEVICE_VARIABLES if model.full else "")]
    lines += [variable_line(text, row) for text, _, row in found[:MAX_VARIABLES_LISTED]]
    if len(found) > MAX_VARIABLES_LISTED:
        lines.append("... and %d more: narrow it with variables TEXT"
                     % (len(found) - MAX_VARIABLES_LISTED))
    return lines


def _run_variables(host: Any, command: Command, outcome: "CommandOutcome") -> None:
    outcome.lines.extend(device_model_lines(_listed_state(host, command.target), command.text))


WordHandler = Callable[[Any, Command, "CommandOutcome"], None]


class CommandWord:
    """One row of COMMAND_WORDS: a word of the command language (or, with no ``names``, a form
    shown by `help`), and everything the parser, the script checker, Tab completion, `help` and
    dispatch know about it.

    ``names`` are what may be typed (any case); ``word`` is the Command.word it parses into
    ("call" for an action); ``action`` the OcppVersion attribute naming the server action a
    shortcut such as startRemote sends (remote_start).
    ``usage``, ``summary`` and ``example`` make its help row, shown under ``topic`` and, with
    ``overview``, in plain `help`.  ``scripts``: a scenario script may use it.  ``check(rest,
    target)`` raises CommandError for arguments that cannot work; ``run(host, command, outcome)``
    does it; ``complete(charger_ids)`` lists what Tab may complete its argument to.
    ``expand(rest)``: the word is a short form of a server action, (action, payload) (set).
    """

    __slots__ = ("names", "word", "action", "usage", "summary", "example", "topic", "overview",
                 "scripts", "check", "run", "complete", "expand")

    def __init__(self, names: tuple[str, ...], usage: str, summary: str, example: str,
                 topic: str, *, word: str = "", action: Optional[str] = None,
                 overview: bool = False, scripts: bool = False,
                 check: Optional[Callable[[str, Optional[str]], None]] = None,
                 run: Optional[WordHandler] = None,
                 complete: Optional[Callable[[list[str]], list[str]]] = None,
                 expand: Optional[Callable[[str], tuple[str, dict]]] = None) -> None:
        self.names, self.usage, self.summary, self.example = names, usage, summary, example
        self.expand = expand
        self.topic, self.overview, self.scripts = topic, overview, scripts
        self.word = word or (names[0].lower() if names else "")
        self.action, self.check, self.run, self.complete = action, check, run, complete


def _lines_of(method: str) -> WordHandler:
    """A handler adding what ``host.<method>(command.text)`` returns (a console word's answer)."""
    return lambda host, command, outcome: outcome.lines.extend(getattr(host, method)(command.text))


def _charger_lines(host: Any, command: Command, outcome: "CommandOutcome") -> None:
    outcome.lines.extend(host.charger_lines())


COMMAND_WORDS: tuple[CommandWord, ...] = (
    CommandWord(("help",), "help [Action]", "this overview, or one action's fields",
                "help ReserveNow", "console", overview=True, check=_check_help,
                run=_lines_of("help_lines"),
                complete=lambda ids: list(HELP_TOPICS) + list(ALL_SERVER_ACTIONS)),
    CommandWord(("chargers",), "chargers", "connected chargers and their state", "chargers",
                "console", overview=True, run=_charger_lines),
    CommandWord(("startRemote",), "startRemote", "RemoteStart/RequestStartTransaction",
                "startRemote", "actions", word="call", action="remote_start",
                overview=True, scripts=True, run=_run_call),
    CommandWord(("stopRemote",), "stopRemote", "stop the open transaction remotely",
                "stopRemote", "actions", word="call", action="remote_stop",
                overview=True, scripts=True, run=_run_call),
    CommandWord((), "<Action> [key=value ...]", "any central-system action", "Reset type=Hard",
                "actions", word="call", overview=True, scripts=True, run=_run_call),
    CommandWord((), "<Action> key=@file", "the value is the file's text; @@ for a literal @",
                "InstallCertificate certificate=@ca.pem", "actions"),
    CommandWord((), "<Action> {json}", "send exactly this payload",
                'DataTransfer {"vendorId":"x"}', "actions"),
    CommandWord((), "@<chargerId> <command>", "send to that charger", "@CP-1 Reset type=Hard",
                "actions", overview=True),
    CommandWord(("use",), "use <chargerId>", "send to that charger from now on", "use CP-1",
                "console", overview=True, run=_lines_of("use"), complete=lambda ids: ids),
    CommandWord(("raw",), "raw <json>", "send any frame as typed",
                'raw [2,"x","Reset",{"type":"Nope"}]', "actions", overview=True, scripts=True,
                check=_check_raw, run=_run_raw),
    CommandWord(("held",), "held | held clear", "commands waiting for a charger; drop them",
                "held", "console", check=_check_held, run=_lines_of("held_lines"),
                complete=lambda ids: ["clear"]),
    CommandWord(("echo",), "echo <text>", "print the text: a mark in the output and the log",
                "echo start of test 3", "console", scripts=True, run=_run_echo),
    CommandWord(("fault",), "fault <what>", "inject a fault: a reply, a disconnect, an outage",
                "fault BootNotification status=Pending times=2", "faults", scripts=True,
                check=_check_fault, run=_run_fault,
                complete=lambda ids: ["clear", "disconnect", "offline", "handshake", "pings",
                                      *ALL_CHARGER_ACTIONS]),
    CommandWord(("faults",), "faults | fault clear", "the faults in force; clear them",
                "fault clear", "faults", scripts=True, run=_run_fault),
    CommandWord(("quit", "exit"), "quit | exit", "stop the server", "quit", "console",
                overview=True, run=_run_quit),
    CommandWord(("variables",), "variables [text]",
                "a 2.0.1 station's variables as reported, searched (any case)",
                "variables heartbeat", "actions", run=_run_variables),
    CommandWord(("set",), "set C.V=value ...", "SetVariables (2.0.1), a line per result",
                "set TxCtrlr.EVConnectionTimeOut=90", "actions", word="call", scripts=True,
                run=_run_call, expand=expand_set),
    CommandWord(("get",), "get C.V ...", "GetVariables (2.0.1), a line per result",
                "get OCPPCommCtrlr.HeartbeatInterval", "actions", word="call", scripts=True,
                run=_run_call, expand=expand_get),
    CommandWord(("summary",), "summary [@chargerId]",
                "each charger's verdict: energy, peak power, messages, warnings, faults",
                "summary @CP-1", "console", overview=True, scripts=True, check=_check_summary,
                run=_run_summary, complete=lambda ids: ["@" + charger_id for charger_id in ids]),
)


# The look-ups ask COMMAND_WORDS itself (a few rows, read only when a line is typed): there is
# no second list of words to keep in step.


def typed_word(name: str) -> Optional[CommandWord]:
    """The row of COMMAND_WORDS whose word ``name`` is (any case), or None."""
    lower = name.lower()
    return next((row for row in COMMAND_WORDS if lower in (typed.lower() for typed in row.names)),
                None)


def typed_names(scripts_only: bool = False) -> list[str]:
    """Every word that may be typed (for a script only: the words a script may use), as spelt."""
    return [name for row in COMMAND_WORDS if row.scripts or not scripts_only for name in row.names]


def word_handler(word: str) -> WordHandler:
    """The handler of a parsed Command.word."""
    return next(row.run for row in COMMAND_WORDS if row.word == word and row.run is not None)


def script_may_use(word: str) -> bool:
    return any(row.scripts for row in COMMAND_WORDS if row.word == word)


# `help <topic>`: what a topic says besides its rows of COMMAND_WORDS, a paragraph a string.
HELP_TOPICS: dict[str, list[str]] = {
    "console": [
        "Tab completes words, actions, fields, values and charger ids; Up recalls earlier lines. "
        "A command for a charger typed while none is ready is held (`held` lists them) and runs "
        "when one has booted, unless --hold-for seconds pass first."],
    "actions": [
        "Values are JSON when they parse, else text; dotted keys reach nested fields. A command "
        "that would break its OCPP schema is not sent: the JSON form or raw sends it anyway. "
        "help <Action> lists its fields and what it sends bare.",
        *("actions (OCPP %s): %s" % (version.name, " ".join(version.defaults))
          for version in VERSIONS.values()),
        "A 2.0.1 station's variables (C.V above): %s, only the two names needed, e.g. "
        "OCPPCommCtrlr.HeartbeatInterval, EVSE@1.Power/MaxSet, Controller[main].Name; set "
        "takes several, a value with spaces as \"a b\"; the JSON form sends anything else. "
        "`variables` lists what NotifyReport, GetVariables and accepted SetVariables told, "
        "`@CS-1 variables` a station that has gone." % VARIABLE_SPELLING],
    "faults": [
        "Faults are set on purpose, to test a charger's unhappy paths (docs/faults.md). The forms:",
        *("  " + form for form in FAULT_USAGE.split(" | "))],
    "security": [
        "The security whitepaper's actions work like the others: CertificateSigned, "
        "DeleteCertificate, ExtendedTriggerMessage, GetInstalledCertificateIds, GetLog, "
        "InstallCertificate, SignedUpdateFirmware. Typed bare they send a demo root certificate; "
        "give yours with key=@file, e.g. InstallCertificate certificate=@ca.pem.",
        "A charger's SignCertificate is signed with --ca-cert and --ca-key, or its CSR is saved "
        "and the line to type once you have signed it is printed. Who may connect: --basic-auth, "
        "--certfile, --client-ca, --charger-ids (docs/guide.md, section 10)."],
}


# ------------------------------------------------------------------ Console
# Lines typed at the server's terminal.  A reader thread blocks on stdin and
# hands each line to the event loop, which never waits for the keyboard.

MAX_INPUT_LINE = 1 << 20  # bytes of one console line; a longer one is dropped


def input_lines(stream: Any) -> Iterator[Union[bytes, str]]:
    """The lines of the console's input, as bytes (decoded by the caller, one line at a time).

    A real file descriptor is read with os.read, not through sys.stdin: a
    thread blocked in a buffered read holds a lock the interpreter needs at
    exit.  Other streams (a StringIO) are iterated as they are.
    """
    try:
        descriptor = stream.fileno()
    except (AttributeError, OSError, ValueError):
        yield from stream
        return
    pending = b""
    while True:
        chunk = os.read(descriptor, 65536)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            yield line + b"\n"
        if len(pending) > MAX_INPUT_LINE:
            pending = b""
            yield "# (an input line over %d bytes was dropped)\n" % MAX_INPUT_LINE
    if pending:
        yield pending


MAX_HELD_COMMANDS = 100  # charger commands held at once while no charger is ready; more are refused
HELD_LISTED = 10  # held commands listed with each one held; past that, their count
HELD_EXPIRY_BURST = 0.5  # seconds: held commands due this close together expire in one line
DEFAULT_HOLD_FOR = 60.0  # --hold-for: seconds a held command waits for a charger


class HeldCommands:
    """Charger commands typed while no charger was ready (the console's, never the API's).

    They all run, in order, once a charger has finished its handshake (the
    one `use` named, if any); each is dropped, with a line, once --hold-for
    seconds pass first.  One timer at most, and only while something is
    held: nothing costs anything when nothing is held.
    """

    def __init__(self, console: "Console") -> None:
        self.console = console
        self.system = console.system
        self.commands: list[tuple[str, float]] = []  # (line, deadline on the loop's clock)
        self.timer: Optional[asyncio.TimerHandle] = None

    def add(self, line: str) -> list[str]:
        """Hold ``line``; the listing of everything held now.  CommandError when
        MAX_HELD_COMMANDS are held already."""
        if len(self.commands) >= MAX_HELD_COMMANDS:
            raise CommandError("%d commands are held already; %r is not (held lists them, held "
                               "clear drops them)" % (len(self.commands), line))
        if not self.commands:
            self.system.bus.subscribe(self.on_ready, "ready")
        loop = asyncio.get_running_loop()
        self.commands.append((line, loop.time() + self.system.options.hold_for))
        if self.timer is None:
            self.timer = loop.call_at(self.commands[0][1] + HELD_EXPIRY_BURST, self.expire)
        return self.listing()

    def listing(self) -> list[str]:
        now = asyncio.get_running_loop().time()
        return ["held: %s  (%.0f s left)" % (line, max(0.0, deadline - now))
                for line, deadline in self.commands]

    def clear(self) -> list[str]:
        dropped = self.take()
        if not dropped:
            return ["no commands are held"]
        return ["dropped %d held command%s: %s" % (len(dropped), "" if len(dropped) == 1 else "s",
                                                   ", ".join(dropped))]

    def take(self) -> list[str]:
        """Every held line, held no more."""
        lines = [line for line, _ in self.commands]
        self.commands = []
        self.system.bus.unsubscribe(self.on_ready)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        return lines

    def on_ready(self, event: Event) -> None:
        """Run the held commands once a charger has finished its handshake ("ready"): the one `use`
        named, if any, else the first."""
        named = self.console.default_charger
        if named is not None and event.charger != named:
            return  # held for the charger `use` named: keep them until it is ready
        for line in self.take():
            self.console.out.console("running held command: " + line)
            self.console.execute(line)

    def expire(self) -> None:
        """Drop the held commands whose time is up, one line for them all: the timer waits
        HELD_EXPIRY_BURST past the first one's time, so that those typed together go together."""
        self.timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        expired = [line for line, deadline in self.commands if deadline <= now]
        self.commands = [(line, deadline) for line, deadline in self.commands if deadline > now]
        if self.commands:
            self.timer = loop.call_at(self.commands[0][1] + HELD_EXPIRY_BURST, self.expire)
        else:
            self.system.bus.unsubscribe(self.on_ready)
        if expired:
            self.system.log("warn", None, "no charger booted within --hold-for %g s: %d held "
                            "command%s dropped, not sent: %s" % (
                                self.system.options.hold_for, len(expired),
                                "" if len(expired) == 1 else "s", ", ".join(expired)))


CONSOLE_LINE_PREFIX = len("12:34:56.789 >> ")  # what the terminal shows before a console answer
MIN_HELP_WIDTH = 30  # columns: `help` wraps no narrower, however narrow the terminal


def console_width(out: Output) -> Optional[int]:
    """The columns a console answer may fill at a terminal, after the time and ``>>``; None (no
    limit) when the output is not a terminal: files and pipes keep whole lines."""
    try:
        at_terminal = out.writer.stream.isatty()
    except (AttributeError, OSError, ValueError):
        return None
    if not at_terminal:
        return None
    return max(MIN_HELP_WIDTH, shutil.get_terminal_size().columns - CONSOLE_LINE_PREFIX)


def wrap_words(text: str, width: Optional[int], indent: str = "  ") -> list[str]:
    """``text`` in lines of at most ``width`` (None: one line), broken between words only; the lines
    after the first start with ``indent``."""
    if width is None:
        return [text]
    lead = text[:len(text) - len(text.lstrip())]
    return textwrap.wrap(text, width, initial_indent=lead, subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False) or [""]


def wrap_json(text: str, width: Optional[int], indent: str = "  ") -> list[str]:
    """A line ending in JSON, broken after its commas (never inside a name or a value) to fit
    ``width``."""
    if width is None or len(text) <= width:
        return [text]
    lines = [""]
    for part in re.split(r"(?<=,)", text):
        if lines[-1].strip() and len(lines[-1]) + len(part) > width:
            lines.append(indent)
        lines[-1] += part
    return lines


def help_rows(rows: list[CommandWord], width: Optional[int], examples: bool = True) -> list[str]:
    """Help rows as columns: usage, summary, example, one line each where they fit ``width``;
    else the summary (and below it the example, with ``examples``) wrapped under its column."""
    column = max(len(row.usage) for row in rows) + 2
    lines = ["%s%s   e.g. %s" % (row.usage.ljust(column), row.summary, row.example) for row in rows]
    if width is None or max(map(len, lines)) <= width:
        return lines
    column, lines = min(column, width // 2), []
    for row in rows:
        body = wrap_words(row.summary, width - column, "")
        if examples:
            body += wrap_words("e.g. " + row.example, width - column, "     ")
        if len(row.usage) + 2 > column:
            lines.append(row.usage)
        else:
            lines.append(row.usage.ljust(column) + body.pop(0))
        lines.extend(" " * column + part for part in body)
    return lines


def help_overview(width: Optional[int], version: OcppVersion = DEFAULT_VERSION) -> list[str]:
    """Plain `help`: the everyday words, ``version``'s actions and the topics (24 lines at 80
    columns)."""
    return (help_rows([row for row in COMMAND_WORDS if row.overview], width, examples=False)
            + wrap_words("actions: " + " ".join(version.defaults), width)
            + wrap_words("more: help %s, or help <Action> for its fields"
                         % " | ".join(HELP_TOPICS), width))


def help_topic(topic: str, width: Optional[int]) -> list[str]:
    """`help <topic>`: the topic's rows of COMMAND_WORDS (for scripts: every word a script may
    use), then its notes."""
    rows = [row for row in COMMAND_WORDS
            if row.topic == topic or (topic == "scripts" and row.scripts)]
    lines = help_rows(rows, width) if rows else []
    for paragraph in HELP_TOPICS[topic]:
        lines += wrap_words(paragraph, width, "    " if paragraph.startswith(" ") else "  ")
    return lines


class Console:
    """The operator's command language; ``execute`` runs one line."""

    def __init__(self, system: "CentralSystem") -> None:
        self.system = system
        self.out = system.out
        self.default_charger: Optional[str] = None
        self.held = HeldCommands(self)  # charger commands typed before any charger was ready

    def start_reader(self, loop: asyncio.AbstractEventLoop, stream: Any = None) -> threading.Thread:
        """Read lines on a daemon thread and run them on ``loop``; EOF ends the console.

        At a terminal, with the standard library's readline, the console edits
        and completes (see InteractiveInput); piped input is read as it is.
        """
        if stream is None and interactive_terminal():
            return InteractiveInput(self, loop).start()
        stream = stream if stream is not None else sys.stdin

        def read_lines() -> None:
            try:
                for number, line in enumerate(input_lines(stream), 1):
                    if isinstance(line, bytes):
                        try:
                            line = line.decode("utf-8")
                        except UnicodeDecodeError as exc:
                            loop.call_soon_threadsafe(self.out.console,
                                                      "input line %d is not UTF-8 text (byte "
                                                      "0x%02x at %d); ignored"
                                                      % (number, line[exc.start], exc.start))
                            continue
                    loop.call_soon_threadsafe(self.execute, line)
                loop.call_soon_threadsafe(self.on_end_of_input)
            except (OSError, ValueError):
                pass  # stdin was closed under us
            except RuntimeError:
                pass  # the event loop has closed: the server is stopping

        thread = threading.Thread(target=read_lines, name="console-stdin", daemon=True)
        thread.start()
        return thread

    def on_end_of_input(self) -> None:
        self.system.log("notice", None,
                        "console input ended; the server keeps serving until Ctrl-C or SIGTERM")

    def execute(self, line: str) -> None:
        """Run one console line and print its outcome; problems are one line, never raised."""
        outcome = self.run(line)
        for text in outcome.lines:
            self.out.console(text)

    def run(self, line: str, hold: bool = True, files: bool = True) -> "CommandOutcome":
        """Run one line of the command language: what the console, and the API, answer with.

        A charger command typed before any charger is connected is held
        until one has booted; with ``hold`` False (the API) it is refused
        instead, so that a caller who retries does not send it twice.
        ``files`` False (the API) refuses key=@path values.
        """
        line = line.strip()
        outcome = CommandOutcome()
        if not line or line.startswith("#"):
            return outcome
        try:
            self._run(parse_command(line, os.getcwd() if files else None, self.version_of),
                      outcome)
        except NoChargerYet:
            if not hold:
                outcome.fail("no charger is connected yet (point one at %s)" % self.system.url,
                             held=True)
                return outcome
            self.hold(line, outcome)
        except CommandError as exc:
            outcome.fail(str(exc))
        except Exception as exc:  # a console bug must not stop the server
            self.system.log("error", None, "console command %r failed: %s: %s"
                            % (line, type(exc).__name__, exc))
            outcome.ok = False
        return outcome

    def _run(self, command: Command, outcome: "CommandOutcome") -> None:
        word_handler(command.word)(self, command, outcome)

    def hold(self, line: str, outcome: "CommandOutcome") -> None:
        """Hold a charger command until a charger has booted; the answer lists all held (up to
        HELD_LISTED of them: `held` lists more)."""
        try:
            listing = self.held.add(line)
        except CommandError as exc:
            outcome.fail(str(exc))
            return
        if len(listing) > HELD_LISTED:
            listing = ["%d commands are held (held lists them, held clear drops them)"
                       % len(listing)]
        waited = "%s is not connected yet" % self.default_charger if self.default_charger else \
            "no charger is connected yet"
        outcome.fail("%s; %r will run once %s has booted (point it at %s)" % (
            waited, line, "it" if self.default_charger else "one", self.system.url), held=True)
        outcome.lines.extend(listing)

    def version_of(self, target: Optional[str]) -> OcppVersion:
        """The OCPP version of the charger a command for ``target`` goes to (--ocpp's while there
        is none)."""
        try:
            return self.target_session(target).version
        except CommandError:
            return self.system.default_version

    def target_session(self, target: Optional[str]) -> ChargerSession:
        sessions = self.system.sessions
        name = target or self.default_charger
        if name is not None:
            session = sessions.get(name)
            if session is None and target is None:
                raise NoChargerYet()  # the charger `use` named: the command waits for it
            if session is None:
                known = ("connected: " + ", ".join(sessions) if sessions
                         else "no charger is connected")
                raise CommandError("no charger %r is connected (%s)" % (name, known))
            return session
        if len(sessions) == 1:
            return next(iter(sessions.values()))
        if not sessions:
            raise NoChargerYet()
        raise CommandError("%d chargers are connected (%s): say which, e.g. @%s <command>, or "
                           "use <chargerId>"
                           % (len(sessions), ", ".join(sessions), next(iter(sessions))))

    def use(self, charger_id: str) -> list[str]:
        if not charger_id:
            raise CommandError("usage: use <chargerId> (connected: %s)"
                               % (", ".join(self.system.sessions) or "none"))
        self.default_charger = charger_id
        lines = ["commands now go to %s" % charger_id]
        if charger_id not in self.system.sessions:
            lines.insert(0, "%s is not connected now; commands will go to it once it is"
                         % charger_id)
        return lines

    def charger_lines(self) -> list[str]:
        """The `chargers` listing: every connected charger, and those away with open
        transactions."""
        sessions = self.system.sessions
        lines = [] if sessions else ["no charger connected; point one at %s" % self.system.url]
        for session in sessions.values():
            lines.append("%s  (%s, OCPP %s, dialect %s, subprotocol %s)" % (
                printable(session.charger_id), session.peer, session.version.name, session.dialect,
                printable(session.subprotocol or "none")))
            lines.extend(session.state.describe())
            if self.system.http is not None:
                files = self.system.http.files
                lines.append("  files: %s" % printable(os.path.join(
                    files.root, files.charger_folder(session.charger_id), "")))
            outstanding = session.queue.outstanding
            if outstanding is not None:
                lines.append("  outstanding: %s for %.0f s, %d queued" % (
                    printable(outstanding.action), time.monotonic() - outstanding.sent_at,
                    len(session.queue.calls)))
        for state in self.system.states.values():
            if not state.connected and state.transactions:  # they go on while it is away
                lines.append("%s  (disconnected)" % printable(state.charger_id))
                lines.extend(state.describe())
        return lines

    def held_lines(self, text: str) -> list[str]:
        """`held`: the held commands, one line each; `held clear`: drop them."""
        if text == "clear":
            return self.held.clear()
        return self.held.listing() or ["no commands are held"]

    def help_lines(self, topic: str) -> list[str]:
        """`help`: the overview; `help <topic>` (or a word of it); `help <Action>`: its fields
        and what it sends bare."""
        width = console_width(self.out)
        lower = topic.lower()
        row = typed_word(lower)
        version = self.version_of(None)
        if not topic:
            return help_overview(width, version)
        if lower in HELP_TOPICS or (row is not None and row.action is None):
            return help_topic(lower if lower in HELP_TOPICS else row.topic, width)
        action = version_action(topic, version)
        sessions = self.system.sessions
        session = sessions.get(self.default_charger or "") or (next(iter(sessions.values()))
                                                               if len(sessions) == 1 else None)
        try:
            defaults = dump_json(bare_payload(version, action, self.system, session))
        except CommandError as exc:
            defaults = "none (%s)" % exc
        lines = ["%s  (OCPP %s; reply: %s.conf)" % (action, version.name, action)]
        for name, rule in version.server_requests[action].items():
            field = "  %s%s: %s" % (name, "" if rule.required else " (optional)", rule.describe())
            lines += wrap_words(field, width, "      ")
        return lines + wrap_json("  sent bare: " + defaults, width, "    ")


def fault_command(text: str) -> Command:
    """A fault as --fault and /api/faults take it: ``[@id] [fault] <what>``; CommandError if it is
    not one."""
    target, _, rest = text.strip().partition(" ") if text.strip().startswith("@") else (
        "", "", text.strip())
    if rest.split()[:1] != ["fault"]:
        rest = "fault " + rest
    command = parse_command((target + " " + rest).strip())
    if command.word != "fault" or command.text.split()[:1] == ["clear"]:
        raise CommandError("%r is not a fault (usage: %s)" % (text, FAULT_USAGE))
    return command


def interactive_terminal() -> bool:
    """True when a person types at a terminal and readline is there to edit the lines."""
    try:
        import readline  # noqa: F401  (not on every platform: Windows has none)
    except ImportError:
        return False
    return sys.stdin.isatty() and sys.stdout.isatty()


CONSOLE_PROMPT = "ocpp> "
PROMPT_WAIT = 1.0  # seconds the next prompt waits for the answer to the line before it
HISTORY_FILE = os.path.join(os.path.expanduser("~"), ".ocpp_mock_history")


class InteractiveInput:
    """The console at a terminal: readline's editing (Emacs keys), history across runs
    (HISTORY_FILE), a prompt, Tab completion of words, actions, fields, enum values and charger ids,
    and output written above the line being typed.  input() blocks its own thread, never the
    loop."""

    def __init__(self, console: "Console", loop: asyncio.AbstractEventLoop) -> None:
        import readline
        self.readline = readline
        self.console = console
        self.loop = loop
        self.reading = False
        self.charger_ids: list[str] = []  # a copy the completer (on the input thread) may read

    def start(self) -> threading.Thread:
        readline = self.readline
        try:
            readline.read_history_file(HISTORY_FILE)
        except (OSError, ValueError):
            pass  # the first run, or an unreadable file: no history yet
        readline.set_history_length(1000)
        readline.set_completer_delims(" \t")
        readline.set_completer(self.complete)
        readline.parse_and_bind("bind ^I rl_complete" if "libedit" in (readline.__doc__ or "")
                                else "tab: complete")
        self.console.out.writer.input_line = self.input_line
        self.console.system.bus.subscribe(self.on_charger, "connected", "disconnected")
        thread = threading.Thread(target=self.read_lines, name="console-readline", daemon=True)
        thread.start()
        return thread

    def on_charger(self, event: Event) -> None:
        self.charger_ids = list(self.console.system.sessions)

    def input_line(self) -> Optional[str]:
        """What the terminal shows of the input line now (None while nobody is typing)."""
        return CONSOLE_PROMPT + self.readline.get_line_buffer() if self.reading else None

    def hand_over(self, line: str) -> bool:
        """Run ``line`` on the loop and wait (a moment at most) until it has run, so that the next
        prompt comes after its answer, and none at all once it has stopped the server; False when
        no more lines are to be read."""
        done = threading.Event()

        def run_line() -> None:
            try:
                self.console.execute(line)
            finally:
                done.set()
        try:
            self.loop.call_soon_threadsafe(run_line)
        except RuntimeError:
            return False  # the loop has closed: the server is stopping
        done.wait(PROMPT_WAIT)
        return not self.console.system.stopped.is_set()

    def read_lines(self) -> None:
        while True:
            try:
                self.reading = True
                line = input(CONSOLE_PROMPT)
            except EOFError:
                self.loop.call_soon_threadsafe(self.console.on_end_of_input)
                return
            except (OSError, ValueError, RuntimeError):
                return  # the terminal or the loop has gone: the server is stopping
            finally:
                self.reading = False
            if line.strip():
                self.remember()
            if not self.hand_over(line):
                return

    def remember(self) -> None:
        """Add the line just typed to HISTORY_FILE (made on the first line), for the next run."""
        try:
            if os.path.exists(HISTORY_FILE):
                self.readline.append_history_file(1, HISTORY_FILE)
            else:
                self.readline.write_history_file(HISTORY_FILE)
        except OSError:
            pass  # a read-only home: history for this run only

    def complete(self, text: str, state: int) -> Optional[str]:
        """readline's completer: the ``state``-th completion of ``text`` where the cursor is."""
        try:
            before = self.readline.get_line_buffer()[:self.readline.get_begidx()]
            matches = self.completions(before.split(), text)
        except Exception:  # a completer must never raise into readline
            matches = []
        return matches[state] if state < len(matches) else None

    def completions(self, before: list[str], text: str) -> list[str]:
        target = None
        if before and before[0].startswith("@"):
            target, before = before[0][1:], before[1:]
        console = self.console
        if not before:  # the first word: a command, an action, or @<charger id>
            if text.startswith("@"):
                return ["@" + name + " " for name in self.charger_ids
                        if ("@" + name).startswith(text)]
            versions = {session.version for session in console.system.sessions.values()} or {
                console.system.default_version}
            actions = [action for version in versions for action in version.defaults]
            return self.words_from(typed_names() + actions, text)
        row = typed_word(before[0])
        if row is not None and row.action is None:  # a word's argument: its row's completions
            if row.complete is None or len(before) > 1:
                return []
            return self.words_from(row.complete(self.charger_ids), text)
        version = console.version_of(target)
        action = console_action(before[0], version)
        if action is None or action not in version.server_requests:
            return []
        fields = version.server_requests[action]
        name, equals, value = text.partition("=")
        if not equals:  # a field: key=value pairs, with an enum's values or the default's
            defaults = self._defaults(version, action)
            matches = []
            for field, rule in fields.items():
                if field.startswith(name):
                    values = rule.values if isinstance(rule, Enum) else (
                        [defaults[field]] if field in defaults
                        and not isinstance(defaults[field], (dict, list))
                        else [])
                    matches += ["%s=%s" % (field, _scalar_text(item))
                                for item in values] or [field + "="]
            return matches
        rule = fields.get(name)
        if isinstance(rule, Enum):
            return ["%s=%s" % (name, item) for item in rule.values if item.startswith(value)]
        return []

    @staticmethod
    def words_from(words: list[str], text: str) -> list[str]:
        """The ``words`` that start with ``text`` (any case), sorted, each with a space after it."""
        return sorted({word + " " for word in words if word.lower().startswith(text.lower())})

    def _defaults(self, version: OcppVersion, action: str) -> dict:
        try:
            return version.defaults[action](self.console.system, None)
        except CommandError:
            return {}


class CommandOutcome:
    """What running a command came to: ok or not, the lines to show, the CALL it queued (if any).

    ``held``: no charger was connected, so the line waits for one (at the console) or was refused
    (the API).
    """

    __slots__ = ("ok", "lines", "call", "held")

    def __init__(self) -> None:
        self.ok = True
        self.lines: list[str] = []
        self.call: Optional[PendingCall] = None
        self.held = False

    def fail(self, text: str, held: bool = False) -> None:
        self.ok = False
        self.held = held
        self.lines.append(text)


# ---------------------------------------------------------- Scenario scripts
# --script FILE runs a charger's CI test against the first charger that
# connects, then exits 0 (every step passed), 1 (a step failed or timed out)
# or 2 (the script is invalid: checked before the server listens).

SCENARIO_DEFAULT_WITHIN = 30.0
_INLINE_COMMENT = re.compile(r"\s+#.*$")  # "wait X   # why": a # after white space starts a comment
SCENARIO_EVENTS_KEPT = 10000  # charger messages not yet consumed by a wait step
SCENARIO_PROBLEMS_KEPT = 100  # spec warnings and behaviour checks a scenario keeps for its report


class ScriptError(Exception):
    """An invalid scenario script: ``line`` says where."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


class StepFailed(Exception):
    """A scenario step that did not hold; the message says what arrived instead."""


class Step:
    """One line of a scenario: ``parse`` reads its words (ScriptError if wrong), ``run`` does it.

    Each kind of step is a subclass, named in SCENARIO_STEPS by its first
    word; ``line`` is its line number (0 for the implicit first step) and
    ``text`` the line as written.
    """

    usage = ""
    connects = False  # waits for the charger itself: no implicit ``charger`` step before it

    def __init__(self, line: int, text: str, folder: str = ".",
                 version: OcppVersion = DEFAULT_VERSION) -> None:
        self.line = line
        self.text = text
        self.folder = folder  # the script's own: key=@path values are read relative to it
        self.version = version  # whose actions and fields its commands are checked against

    def parse(self, tokens: list[str]) -> None:
        raise NotImplementedError

    async def run(self, runner: "ScenarioRunner") -> None:
        raise NotImplementedError

    def fail_usage(self) -> ScriptError:
        return ScriptError(self.line, "usage: " + self.usage)


class ChargerStep(Step):
    """``charger [<id>] [within S]``: wait for that charger (or the first) to connect."""

    usage = "charger [<id>] [within S]"
    connects = True

    def parse(self, tokens: list[str]) -> None:
        self.within = _within(tokens, self.line)
        if len(tokens) > 1:
            raise self.fail_usage()
        self.charger_id = tokens[0] if tokens else None

    async def run(self, runner: "ScenarioRunner") -> None:
        runner.session = await runner.wait_connect(self.charger_id, self.within)
        runner.charger_id = runner.session.charger_id


class WaitStep(Step):
    """``wait <Action>[.conf] [key=value ...] [xN] [within S]``: consume the charger's CALLs (or
    replies) of that action, those with these fields only (dotted keys for nested ones, e.g.
    ``wait TransactionEvent eventType=Ended``); the others stay for later steps."""

    usage = "wait <Action>[.conf] [key=value ...] [xN] [within S]"

    def parse(self, tokens: list[str]) -> None:
        self.within = _within(tokens, self.line)
        self.count = 1
        if len(tokens) >= 2 and re.fullmatch(r"[xX]\d+", tokens[-1]):
            self.count = int(tokens.pop()[1:])
        if not tokens or self.count < 1 or any(
                "=" not in token or token.startswith("=") for token in tokens[1:]):
            raise self.fail_usage()
        self.kind, self.action = _wait_target(tokens[0], self.line, self.version)
        self.fields = [tuple(token.partition("=")[::2]) for token in tokens[1:]]
        rules = (self.version.charger_request_rules if self.kind == "call"
                 else self.version.charger_reply_rules).get(self.action)
        for path, _ in self.fields:
            _check_wait_field(rules, path, self.line, tokens[0])

    async def run(self, runner: "ScenarioRunner") -> None:
        await runner.wait_for(self.kind, self.action, self.count,
                              SCENARIO_DEFAULT_WITHIN if self.within is None else self.within,
                              self.fields)


class ExpectStep(Step):
    """``expect key=value ...``: fields of the last message a command or a wait step got."""

    usage = "expect key=value ... (dotted keys for nested fields)"

    def parse(self, tokens: list[str]) -> None:
        if not tokens or any("=" not in token or token.startswith("=") for token in tokens):
            raise self.fail_usage()
        self.checks = [tuple(token.partition("=")[::2]) for token in tokens]

    async def run(self, runner: "ScenarioRunner") -> None:
        runner.expect(self.checks)


class SleepStep(Step):
    """``sleep S``: wait that long."""

    usage = "sleep S"

    def parse(self, tokens: list[str]) -> None:
        if len(tokens) != 1:
            raise self.fail_usage()
        self.seconds = _seconds(tokens[0], self.line)

    async def run(self, runner: "ScenarioRunner") -> None:
        await asyncio.sleep(self.seconds)


class DisconnectStep(Step):
    """``disconnect``: close the charger's connection (1000)."""

    usage = "disconnect"

    def parse(self, tokens: list[str]) -> None:
        if tokens:
            raise ScriptError(self.line, "disconnect takes no arguments")

    async def run(self, runner: "ScenarioRunner") -> None:
        await runner.current_session().websocket.close(1000, "scenario: disconnect")


class ExpectReconnectStep(Step):
    """``expect-reconnect [within S]``: the same charger connects again."""

    usage = "expect-reconnect [within S]"

    def parse(self, tokens: list[str]) -> None:
        self.within = _within(tokens, self.line)
        if tokens:
            raise self.fail_usage()

    async def run(self, runner: "ScenarioRunner") -> None:
        within = SCENARIO_DEFAULT_WITHIN if self.within is None else self.within
        runner.session = await runner.wait_connect(runner.charger_id, within, after=runner.session)


class CommandStep(Step):
    """Any line of the command language a script may send (an action, startRemote, raw, echo)."""

    def parse(self, tokens: list[str]) -> None:
        self.command = script_command(self.text, self.line, self.folder, self.version)

    async def run(self, runner: "ScenarioRunner") -> None:
        await runner.send_command(self.command)


SCENARIO_STEPS: dict[str, type] = {
    "charger": ChargerStep,
    "wait": WaitStep,
    "expect": ExpectStep,
    "sleep": SleepStep,
    "disconnect": DisconnectStep,
    "expect-reconnect": ExpectReconnectStep,
}


def _seconds(text: str, line: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ScriptError(line, "expected seconds, got %r" % text) from None
    if not 0 <= value <= 86400:
        raise ScriptError(line, "seconds must be 0 to 86400, got %r" % text)
    return value


def _within(tokens: list[str], line: int) -> Optional[float]:
    """Parse a trailing "within S" off ``tokens`` (in place); None when there is none."""
    if len(tokens) >= 2 and tokens[-2].lower() == "within":
        seconds = _seconds(tokens[-1], line)
        del tokens[-2:]
        return seconds
    return None


def _wait_target(name: str, line: int, version: OcppVersion) -> tuple[str, str]:
    """("call", Action) for a charger's CALL, ("reply", Action) for its answer to Action
    (Action.conf)."""
    if name.lower().endswith(".conf"):
        action = console_action(name[:-5], version)
        if action is None:
            raise ScriptError(line, "no server action %r to wait for the reply to" % name[:-5])
        return "reply", action
    action = next((known for known in ALL_CHARGER_ACTIONS if known.lower() == name.lower()),
                  None)
    if action is None:
        close = difflib.get_close_matches(name, list(ALL_CHARGER_ACTIONS), n=1)
        raise ScriptError(line, "a charger does not send %r%s"
                          % (name, "; did you mean %s?" % close[0]
                                                                 if close else ""))
    return "call", action


def _check_wait_field(rules: Optional[Object], path: str, line: int, label: str) -> None:
    """A wait step's dotted key must name a field of its message, as far as closed objects go (a
    list index, an open object or a message of another version is not checked)."""
    rule: Optional[Rule] = rules
    for name in path.split("."):
        if rule is None or type(rule) is not Object:
            return
        if name not in rule.fields:
            raise ScriptError(line, "%s has no field %s (%s)" % (label, path, rule.suggest(name)))
        rule = rule.fields[name]


def parse_scenario(text: str, folder: str = ".",
                   version: OcppVersion = DEFAULT_VERSION) -> list[Step]:
    """Check a whole scenario script (its key=@path values relative to ``folder``, its commands
    against ``version``: --ocpp); ScriptError names the first bad line."""
    steps: list[Step] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = _INLINE_COMMENT.sub("", raw).strip()
        if not line or line.startswith("#"):
            continue
        step = SCENARIO_STEPS.get(line.split()[0].lower(), CommandStep)(number, line, folder,
                                                                        version)
        step.parse(line.split()[1:])
        if isinstance(step, ChargerStep) and steps:
            raise ScriptError(number, "a charger line must come before every step")
        steps.append(step)
    if not steps:
        raise ScriptError(0, "the script has no steps")
    return steps


SCENARIO_WORDS = tuple(SCENARIO_STEPS)
HELP_TOPICS["scripts"] = [
    "--script FILE runs these, one a line, against the first charger that connects, and the "
    "steps %s; it exits 0 (passed), 1 (failed) or 2 (invalid script). Several --script FILEs, or "
    "a FOLDER of them, run one after another; --junit FILE writes a JUnit report. See docs/ci.md."
    % ", ".join(SCENARIO_WORDS)]


def script_command(line: str, number: int, folder: str = ".",
                   version: OcppVersion = DEFAULT_VERSION) -> Command:
    """A command step, parsed by the console's own parser; ScriptError if a script cannot run it."""
    word = line.split()[0]
    if console_action(word, version) is None and typed_word(word) is None and word[:1] != "@":
        choices = [*ALL_SERVER_ACTIONS, *SCENARIO_WORDS, *typed_names(scripts_only=True)]
        close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
        raise ScriptError(number, "unknown step %r%s"
                          % (word, "; did you mean %s?" % close[0] if close else ""))
    try:
        command = parse_command(line, folder, lambda target: version)
    except CommandError as exc:
        raise ScriptError(number, str(exc)) from None
    if not script_may_use(command.word) or command.target is not None:
        raise ScriptError(number, "%s is for the interactive console, not for scripts" % word)
    return command


def field_at(payload: Any, path: str) -> tuple[bool, Any]:
    """(True, value) at a dotted path (list indices as numbers), or (False, None)."""
    value = payload
    for name in path.split("."):
        if isinstance(value, dict) and name in value:
            value = value[name]
        elif isinstance(value, list) and name.isdigit() and int(name) < len(value):
            value = value[int(name)]
        else:
            return False, None
    return True, value


def expected_matches(actual: Any, text: str) -> bool:
    """Does ``actual`` equal an expect value (read as JSON when it parses, else as text)?"""
    if isinstance(actual, str):
        return actual == text or actual == parse_console_value(text)
    expected = parse_console_value(text)
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected
    return actual == expected


def _has_fields(payload: Any, fields: Sequence[tuple[str, str]]) -> bool:
    """Has ``payload`` each (dotted path, expected value) of a wait step?"""
    for path, text in fields:
        found, actual = field_at(payload, path)
        if not found or not expected_matches(actual, text):
            return False
    return True


class ScenarioObserver:
    """What a scenario's report shows beyond its steps, taken from the bus while it runs: the texts
    of its spec warnings and failed behaviour checks (the first SCENARIO_PROBLEMS_KEPT) and, with
    --junit, its charger's latest frames (JUNIT_FRAMES_SHOWN)."""

    def __init__(self, runner: "ScenarioRunner") -> None:
        self.runner = runner
        self.bus = runner.system.bus
        self.problems: list[str] = []
        self.recent: collections.deque[str] = collections.deque(maxlen=JUNIT_FRAMES_SHOWN)
        self.bus.subscribe(self.on_problem, "spec_problem")
        if runner.system.options.junit:  # no work per frame without it
            self.bus.subscribe(self.on_frame, "frame", receiver=self.on_frames)

    def close(self) -> None:
        self.bus.unsubscribe(self.on_problem)
        self.bus.unsubscribe(self.on_frame)

    def on_problem(self, event: Event) -> None:
        if len(self.problems) < SCENARIO_PROBLEMS_KEPT:
            self.problems.append("%s %s" % (event.charger, event.fields["text"]))

    def on_frame(self, event: Event) -> None:
        """A frame as an Event (while some frame subscriber takes no FrameRecords)."""
        self.keep_frame(event.charger, event.at, event.fields["direction"], event.fields["text"])

    def on_frames(self, records: Iterator[FrameRecord]) -> None:
        for record in records:
            self.keep_frame(record[1], record[2], record[3], record[4])

    def keep_frame(self, charger: str, at: float, direction: str, text: str) -> None:
        """The script's charger's latest frames (any charger's before it is known), cut short."""
        if self.runner.charger_id in (None, charger):
            self.recent.append("%s %s %s %s" % (UTC_CLOCK.at(at), charger,
                                                "<-" if direction == "in" else "->",
                                                text[:JUNIT_FRAME_CHARS]))


class ScenarioRunner:
    """Runs the steps of a parsed script against one charger; ``run`` returns the exit status."""

    def __init__(self, system: "CentralSystem", steps: list[Step], name: str,
                 path: str = "") -> None:
        self.system = system
        self.out = system.out
        self.steps = steps
        self.name = name
        self.path = path or name  # the script's file as given: a report's file attribute
        # What the run did, for its report (scenario_suite): each step run, its seconds and why
        # it failed (None: it passed); the number of spec warnings of the run (their texts are
        # in ``observed``), and the frames just before a failure (--junit only).
        self.outcomes: list[tuple[Step, float, Optional[str]]] = []
        self.warnings = 0
        self.started_at = time.time()
        self.seconds = 0.0
        self.observed = ScenarioObserver(self)
        self.frames_at_failure: list[str] = []
        self.charger_id: Optional[str] = None
        self.session: Optional[ChargerSession] = None
        self.events: collections.deque[tuple[str, ChargerSession,
                                 dict]] = collections.deque(maxlen=SCENARIO_EVENTS_KEPT)
        self.arrived = asyncio.Event()
        # What `expect` checks: a label, the payload, and the server's reply to it (for a charger's
        # CALL).
        self.last: Optional[tuple[str, Any, Any]] = None
        system.bus.subscribe(self.on_event, "call_answered", "reply_received", "connected",
                             "disconnected", "ready")

    def close(self) -> None:
        """Stop following the bus: the run is over (the next script has a runner of its own)."""
        self.system.bus.unsubscribe(self.on_event)
        self.observed.close()

    # What wait steps consume: a charger's CALLs (with the server's answer) and its replies.
    KINDS = {"call_answered": "call", "reply_received": "reply"}

    def on_event(self, event: Event) -> None:
        kind = self.KINDS.get(event.type)
        if kind is not None:
            self.events.append((kind, event.session, event.fields))
        self.arrived.set()  # a connect, disconnect or ready wakes the waits too

    async def run(self) -> int:
        """Run every step (up to the first that fails); the exit status: 0 passed, 1 failed."""
        started = time.monotonic()
        self.started_at = time.time()
        warnings_before = self.system.spec_warnings
        failed = await self.run_steps()
        self.seconds = time.monotonic() - started
        self.warnings = self.system.spec_warnings - warnings_before
        if failed is not None:
            self.frames_at_failure = list(self.observed.recent)
        return scenario_verdict(self, failed)

    async def run_steps(self) -> Optional[Step]:
        """Run the steps in order, each recorded in ``outcomes``; the one that failed, if any."""
        steps = self.steps
        if not steps[0].connects:
            first = ChargerStep(0, "charger")
            first.parse([])
            steps = [first] + steps
        for step in steps:
            step_started = time.monotonic()
            try:
                await step.run(self)
            except StepFailed as exc:
                self.outcomes.append((step, time.monotonic() - step_started, str(exc)))
                self.system.log("warn", None, "%s:%d FAILED %s: %s"
                                % (self.name, step.line, step.text, exc))
                return step
            self.outcomes.append((step, time.monotonic() - step_started, None))
            if step.line:
                self.system.log("notice", None, "%s:%d ok  %s (%.2f s)" % (
                    self.name, step.line, step.text, self.outcomes[-1][1]))
        return None

    def target_session(self, target: Optional[str]) -> ChargerSession:
        """The charger a command word acts on: the script's own (a script names no other)."""
        return self.current_session()

    def current_session(self) -> ChargerSession:
        session = self.session
        if session is None or session.closed:
            raise StepFailed("%s is not connected" % self.charger_id)
        return session

    async def wait_connect(self, charger_id: Optional[str], within: Optional[float],
                           after: Optional[ChargerSession] = None) -> ChargerSession:
        """The charger's session, connected now or within the time (a new one, ``after`` one)."""
        within = SCENARIO_DEFAULT_WITHIN if within is None else within
        deadline = time.monotonic() + within
        while True:
            for session in list(self.system.sessions.values()):
                if session is not after and not session.closed and charger_id in (
                    None, session.charger_id):
                    return session
            left = deadline - time.monotonic()
            if left <= 0:
                who = "charger %s" % charger_id if charger_id else "a charger"
                raise StepFailed("%s did not connect within %g s" % (who, within))
            await self.next_event(left)

    async def wait_for(self, kind: str, action: str, count: int, within: float,
                       fields: Sequence[tuple[str, str]] = ()) -> None:
        """Consume ``count`` of the charger's messages of ``action`` (CALLs, or replies for
        .conf) that have the ``fields`` (dotted path, expected value) given; others stay."""
        label = " ".join([action + (".conf" if kind == "reply" else "")]
                         + ["%s=%s" % field for field in fields])
        deadline = time.monotonic() + within
        seen = 0
        while True:
            for event in list(self.events):
                details = event[2]
                if (self._of(event, kind, action) and (
                        _has_fields(details["payload"], fields)
                        or (kind == "reply" and details.get("error")))):
                    self.events.remove(event)
                    if details.get("error"):
                        raise StepFailed("%s was answered with CALLERROR %s"
                                         % (label, details["error"]))
                    seen += 1
                    self.last = (label, details["payload"], details.get("reply"))
                    if seen == count:
                        return
            left = deadline - time.monotonic()
            if left <= 0:
                raise StepFailed("expected %s x%d within %g s, %d arrived%s"
                                 % (label, count, within, seen,
                                    self._unmatched(kind, action, fields)))
            await self.next_event(left)

    def _of(self, event: tuple[str, ChargerSession, dict], kind: str, action: str) -> bool:
        """Is a kept message one of the script's charger's ``action`` (a CALL, or a reply)?"""
        event_kind, session, details = event
        return (event_kind == kind and session.charger_id == self.charger_id
                and details["action"] == action)

    def _unmatched(self, kind: str, action: str, fields: Sequence[tuple[str, str]]) -> str:
        """What a wait with fields got instead: the latest message of its action, those fields."""
        others = [event[2]["payload"] for event in self.events if self._of(event, kind, action)]
        if not fields or not others:
            return ""
        found = []
        for path, _ in fields:
            has, value = field_at(others[-1], path)
            found.append("%s=%s" % (path, dump_json(value) if has else "(none)"))
        return "; %d other%s, the latest with %s" % (len(others), "s" if len(others) > 1 else "",
                                                     " ".join(found))

    async def next_event(self, timeout: float) -> None:
        """Wait until a session event arrives, or ``timeout`` seconds pass."""
        self.arrived.clear()
        try:
            await asyncio.wait_for(self.arrived.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def expect(self, checks: list[tuple[str, str]]) -> None:
        if self.last is None:
            raise StepFailed("nothing to check yet: expect follows a command or a wait")
        label, payload, reply = self.last
        for path, text in checks:
            found, actual = field_at(payload, path)
            if not found and reply is not None:
                found, actual = field_at(reply, path)
            if not found:
                raise StepFailed("%s has no field %s: %s" % (label, path, dump_json(payload)))
            if not expected_matches(actual, text):
                raise StepFailed("expected %s=%s in %s, got %s"
                                 % (path, text, label, dump_json(actual)))

    async def send_command(self, command: Command) -> None:
        session = self.current_session()
        if command.word != "call":  # raw, echo, fault, faults: as the console runs them
            outcome = CommandOutcome()
            try:
                word_handler(command.word)(self, command, outcome)
            except CommandError as exc:  # MAX_FAULTS in force already, say
                raise StepFailed(str(exc)) from None
            for text in outcome.lines:
                self.out.console(text)
            return
        action = command.action or ""
        try:
            payload = build_payload(self.system, session, command)
        except CommandError as exc:
            raise StepFailed(str(exc)) from None
        outcome = await session.call(action, payload).outcome
        if outcome.kind == "result":
            self.last = (action + ".conf", outcome.payload, None)
        elif outcome.kind == "error":
            raise StepFailed("%s was answered with CALLERROR %s %s" % (action, outcome.error_code,
                                                                     outcome.error_description))
        elif outcome.kind == "timeout":
            raise StepFailed("no reply to %s within %g s"
                             % (action, self.system.options.call_timeout))
        else:
            raise StepFailed("%s failed: %s" % (action, outcome.error_description))


def scenario_verdict(runner: ScenarioRunner, failed: Optional[Step]) -> int:
    """A scenario run's last line (``failed``: the step that failed, if any); its exit status."""
    passed = sum(1 for step, _, failure in runner.outcomes if step.line and failure is None)
    elapsed, warnings = runner.seconds, runner.warnings
    strict_failure = failed is None and runner.system.options.strict and warnings > 0
    if strict_failure:
        runner.system.log("warn", None, "--strict: %d spec warning(s) about the charger's "
                          "frames fail the run" % warnings)
    total = len(runner.steps)
    if failed is None and not strict_failure:
        runner.system.log("notice", None, "scenario %s: PASS, %d of %d steps passed in %.1f s, "
                          "%d spec warning(s)" % (runner.name, passed, total, elapsed, warnings))
        return 0
    where = "line %d" % failed.line if failed is not None and failed.line else (
        "waiting for a charger" if failed is not None else "--strict")
    not_run = total - passed - (1 if failed and failed.line else 0)
    runner.system.log("notice", None, "scenario %s: FAIL at %s, %d of %d steps passed "
                      "(%d not run) in %.1f s, %d spec warning(s)"
                      % (runner.name, where, passed, total, not_run, elapsed, warnings))
    return 1


# ---- JUnit reports
# --junit FILE: what a --script run did (and a --replay run), as the JUnit XML that Jenkins,
# GitLab and GitHub test reporters read: a <testsuite> per scenario, a <testcase> per step.

JUNIT_FRAMES_SHOWN = 20  # frames of the script's charger a failed step's system-out shows
JUNIT_FRAME_CHARS = 1000  # characters of each of them
JUNIT_OUTPUT_CHARS = 20000  # characters of one failure body or system-out
JUNIT_LINE_CHARS = 1000  # characters of a name or a failure's one line
# What XML 1.0 cannot carry at all, even escaped: C0 controls but tab and newlines, lone
# surrogates, U+FFFE and U+FFFF.
_XML_FORBIDDEN = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: Any, limit: int = JUNIT_OUTPUT_CHARS) -> str:
    """``text`` as XML 1.0 can carry it: at most ``limit`` characters (the cut said), each
    character XML forbids written as an escape (\\x1b, \\ud800)."""
    text = str(text)
    if len(text) > limit:
        text = "%s...[%d more characters]" % (text[:limit], len(text) - limit)
    return _XML_FORBIDDEN.sub(lambda match: "\\x%02x" % ord(match.group()) if ord(
        match.group()) < 0x100 else "\\u%04x" % ord(match.group()), text)


def xml_line(text: Any) -> str:
    """A name or a one-line message: XML-safe, on one line, at most JUNIT_LINE_CHARS."""
    return xml_text(" ".join(str(text).splitlines()), JUNIT_LINE_CHARS)


def junit_timestamp(text: Any) -> str:
    """An ISO 8601 time as the Ant JUnit schema spells a timestamp: UTC, to the second, no zone
    (a time without a zone is taken as UTC; text that is no time at all, as now)."""
    try:
        moment = datetime.datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        moment = utc_now()
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def write_junit(path: str, suites: list[dict]) -> None:
    """Write ``suites`` as one JUnit XML report at ``path``, atomically (a temporary file beside
    it, renamed over it); OSError if it cannot.

    A suite is ``{"name", "timestamp" (ISO 8601), "cases": [{"name", "seconds", "failure" (one
    line; None: passed), "details" (longer text: the failure's body and the case's
    system-out)}]}``; optional: a suite's ``seconds`` (else its cases' sum), a case's ``file``
    and ``line`` (where it is written), ``skipped`` (why it did not run) and ``error`` (one line:
    it could not run).  Every text is made XML-safe and cut to a bound.
    """
    from xml.etree import ElementTree

    root = ElementTree.Element("testsuites", name="ocpp_mock_server")
    totals: collections.Counter = collections.Counter()
    for index, suite in enumerate(suites):
        element, counts = _junit_suite(ElementTree, suite, index)
        root.append(element)
        totals.update(counts)
    _junit_counts(root, totals)
    ElementTree.indent(root)
    replace_file(path, ElementTree.tostring(root, encoding="utf-8", xml_declaration=True))


def _junit_suite(tree: Any, suite: dict, index: int) -> tuple[Any, collections.Counter]:
    """One <testsuite> and its counts."""
    name = xml_line(suite["name"])
    element = tree.Element("testsuite", name=name, id=str(index),
                           timestamp=junit_timestamp(suite.get("timestamp", "")),
                           hostname=xml_line(socket.gethostname()))
    counts: collections.Counter = collections.Counter()
    for case in suite["cases"]:
        element.append(_junit_case(tree, case, name, counts))
    seconds = suite.get("seconds")
    counts["time"] = sum(case["seconds"] for case in suite["cases"]) if seconds is None else seconds
    _junit_counts(element, counts)
    return element, counts


def _junit_case(tree: Any, case: dict, classname: str, counts: collections.Counter) -> Any:
    """One <testcase>, counted in ``counts``: a <failure>, <error> or <skipped> in it when it did
    not pass, and its details as <system-out>."""
    element = tree.Element("testcase", name=xml_line(case["name"]), classname=classname,
                           time="%.3f" % case["seconds"])
    if case.get("file"):
        element.set("file", xml_line(case["file"]))
    if case.get("line"):
        element.set("line", str(int(case["line"])))
    counts["tests"] += 1
    details = case.get("details") or ""
    for kind, count in (("error", "errors"), ("failure", "failures"), ("skipped", "skipped")):
        if case.get(kind) is not None:
            counts[count] += 1
            line = xml_line(case[kind])
            outcome = tree.SubElement(element, kind, message=line)
            if kind != "skipped":
                outcome.set("type", kind)
                # GitLab shows the body, not the message: the line comes first in it too
                outcome.text = xml_text(line + ("\n\n" + details if details else ""))
            break
    if details:
        tree.SubElement(element, "system-out").text = xml_text(details)
    return element


def _junit_counts(element: Any, counts: collections.Counter) -> None:
    for name in ("tests", "failures", "errors", "skipped"):
        element.set(name, str(counts[name]))
    element.set("time", "%.3f" % counts["time"])


def replace_file(path: str, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it to ``path``: a reader
    sees the old file or the whole new one, never half of it."""
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                                         prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(temporary, 0o644)  # mkstemp's 0600: a report is for others to read
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def junit_path_problem(path: str) -> Optional[str]:
    """Why a --junit report could not be written at ``path`` (checked before the run by making a
    file beside it), or None."""
    if os.path.isdir(path):
        return "it is a folder"
    try:
        handle, temporary = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                                             prefix="." + os.path.basename(path) + ".")
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(handle)
    os.remove(temporary)
    return None


def scenario_suite(runner: ScenarioRunner, crash: Optional[str] = None) -> dict:
    """A finished scenario run as a suite of a JUnit report (see write_junit): a case per step (the
    steps after a failed one skipped), and under --strict a failed case per spec warning or
    behaviour check of the run; ``crash``: why the run stopped, a bug of ours (an error case)."""
    cases = [_step_case(runner, step, seconds, failure)
             for step, seconds, failure in runner.outcomes if step.line or failure is not None]
    ran = {id(step) for step, _, _ in runner.outcomes}
    cases += [unrun_case(runner.path, step, "not run: an earlier step failed" if crash is None
                         else "not run") for step in runner.steps if id(step) not in ran]
    if crash is not None:
        cases.append({"name": "the scenario runner", "seconds": 0.0, "failure": None,
                      "details": "", "error": "the scenario stopped: " + crash})
    if runner.system.options.strict:
        cases += _strict_cases(runner)
    started = datetime.datetime.fromtimestamp(runner.started_at, datetime.timezone.utc)
    return {"name": runner.name, "timestamp": started.isoformat(timespec="seconds"),
            "seconds": runner.seconds, "cases": cases}


def unrun_suite(path: str, steps: list[Step]) -> dict:
    """A script the run did not get to (the server stopped first) as a suite of skipped cases."""
    return {"name": os.path.basename(path), "timestamp": utc_now().isoformat(timespec="seconds"),
            "seconds": 0.0, "cases": [unrun_case(path, step, "not run: the server stopped first")
                                      for step in steps]}


def unrun_case(path: str, step: Step, why: str) -> dict:
    return {"name": "line %d: %s" % (step.line, step.text), "seconds": 0.0, "failure": None,
            "details": "", "file": path, "line": step.line, "skipped": why}


def _step_case(runner: ScenarioRunner, step: Step, seconds: float,
               failure: Optional[str]) -> dict:
    """A step that ran as a case: a failed one says the line, what was expected and what came,
    and shows the frames just before it."""
    case = {"name": "line %d: %s" % (step.line, step.text) if step.line
            else "charger (waiting for a charger to connect)", "seconds": seconds,
            "failure": None, "details": "", "file": runner.path, "line": step.line}
    if failure is not None:
        case["failure"] = "%s:%d %s: %s" % (runner.name, step.line, step.text, failure)
        frames = runner.frames_at_failure
        case["details"] = "%s line %d: %s\n%s\n\n%s" % (
            runner.path, step.line, step.text, failure,
            "the %d latest frames before it (UTC; <- from the charger, -> to it):\n%s"
            % (len(frames), "\n".join(frames)) if frames else "no frames before it")
    return case


def _strict_cases(runner: ScenarioRunner) -> list[dict]:
    """--strict: each spec warning and failed behaviour check of the run, a failed case."""
    if not runner.warnings:
        return []
    cases = [{"name": "--strict %d: %s" % (number, text), "seconds": 0.0,
              "failure": "--strict: " + text, "details": ""}
             for number, text in enumerate(runner.observed.problems, 1)]
    unlisted = runner.warnings - len(runner.observed.problems)
    if unlisted > 0:
        cases.append({"name": "--strict: %d more spec warning(s)" % unlisted, "seconds": 0.0,
                      "failure": "--strict: %d more spec warning(s) (the console shows each)"
                      % unlisted, "details": ""})
    return cases


# ------------------------------------------------------------------ Replay
# --replay FILE plays the central system's side of a --log transcript again against whatever
# charger connects, and compares what the charger sends now with what it sent then; it exits 0
# (the same), 1 (different) or 2 (the transcript is unusable: checked before the server listens).
# The engine is the usual one: the replay answers the charger's CALLs through the version's
# handlers (wrapped, per session), sends the recorded CALLs through the CallQueue, and sets the
# recorded faults again in the FaultTable.  See docs/ci.md, "Replaying a recorded session".

REPLAY_DEFAULT_TOLERANCE = 5.0  # percent a meter reading may differ from the recorded one
# A replay ends when no charger has sent a compared message this long (--replay-timeout's default).
REPLAY_QUIET_SECONDS = 10.0
REPLAY_CONNECT_SECONDS = 30.0  # how long a replay waits for the first charger to connect
REPLAY_MAX_RECORDS = 1_000_000  # transcript lines read; a longer transcript is unusable
REPLAY_EXTRA_KEPT = 1000  # messages and frames kept per charger beyond those recorded
REPLAY_DIFFERENCES_SHOWN = 20  # difference lines printed per charger (all are in the result)
REPLAY_FRAMES_AROUND = 3  # frames before and after a difference in its details
TRANSCRIPT_START = "start"  # the record a --log file gets when a run starts to write it
# Fields whose values change from run to run by nature (names, at any depth).
REPLAY_VOLATILE_FIELDS = frozenset(("timestamp", "currentTime", "transactionId", "transactionID",
                                    "firmwareVersion", "expiryDate"))
# Fields read as meter readings: equal within --replay-tolerance.
REPLAY_METER_FIELDS = frozenset(("meterStart", "meterStop"))
REPLAY_METER_CONTAINERS = frozenset(("meterValue", "sampledValue", "values", "transactionData"))
# The fields a difference line names a message by, when it has them.
REPLAY_SUMMARY_FIELDS = ("status", "eventType", "triggerReason", "chargingState", "reason",
                         "connectorStatus", "errorCode")
_ISO_DATE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


class TranscriptUnusable(Exception):
    """A transcript --replay cannot play: the message is the one line that says why."""


class RecordedMessage:
    """A message of a recorded (or live) session: a charger's CALL ("call") or its reply to a
    server CALL ("reply"), with the frame number it had and, for a CALL, the server's answer."""

    __slots__ = ("frame", "kind", "action", "payload", "error", "answer", "at", "stream",
                 "seconds")

    def __init__(self, frame: int, kind: str, action: str, payload: Any, at: float,
                 error: Optional[str] = None) -> None:
        self.frame, self.kind, self.action, self.payload = frame, kind, action, payload
        self.error = error
        self.answer: Any = None  # the server's answer to a CALL: a payload, or ("error", code, why)
        self.at = at
        self.stream = ""
        self.seconds = 0.0  # since the message before it (a live one's, for its JUnit case)

    @property
    def key(self) -> str:
        """What anchors and answers count it by: its action, ".conf" for a reply."""
        return self.action + (".conf" if self.kind == "reply" else "")


class PlanItem:
    """What the server did on its own in the recording: a CALL (``action``, ``payload``) or a fault
    set (``fault``), done now right after the charger's ``anchor`` = (key, ordinal) message, or
    ``delay`` seconds after it connects when no charger message came before."""

    __slots__ = ("action", "payload", "fault", "anchor", "delay", "at")

    def __init__(self, action: str, payload: Any, fault: Optional[str],
                 anchor: Optional[tuple[str, int]], delay: float, at: float) -> None:
        self.action, self.payload, self.fault = action, payload, fault
        self.anchor, self.delay, self.at = anchor, delay, at


def _record_time(record: dict) -> float:
    try:
        moment = datetime.datetime.strptime(record["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")
    except (KeyError, TypeError, ValueError):
        return 0.0
    return moment.replace(tzinfo=datetime.timezone.utc).timestamp()


def read_transcript_runs(path: str) -> list[list[dict]]:
    """The records of a --log file, run by run (a run starts at each "start" record; a file
    without any is one run); TranscriptUnusable says why it cannot be read."""
    try:
        with open(path, encoding="utf-8") as transcript:
            lines = list(itertools.islice(transcript, REPLAY_MAX_RECORDS + 1))
    except OSError as exc:
        raise TranscriptUnusable("cannot read %s: %s" % (path, exc.strerror or exc)) from None
    except UnicodeDecodeError as exc:
        raise TranscriptUnusable("%s is not UTF-8 text: %s" % (path, exc)) from None
    if len(lines) > REPLAY_MAX_RECORDS:
        raise TranscriptUnusable("%s has over %d lines" % (path, REPLAY_MAX_RECORDS))
    runs: list[list[dict]] = [[]]
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = loads_strict(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("ts"), str) or (
                ("dir" in record) == ("event" in record)):
            raise TranscriptUnusable("%s line %d is not a --log transcript record: %s"
                                     % (path, number, printable(line.strip(), 60)))
        if record.get("event") == TRANSCRIPT_START:
            runs.append([])
        runs[-1].append(record)
    return [run for run in runs if any("dir" in record for record in run)]


class ChargerRecording:
    """One charge point's part of a recorded run: its messages (compared), the answers the server
    gave its CALLs (by action, in order), and the plan of what the server did on its own."""

    def __init__(self, charger_id: str, records: list[dict], heartbeats: bool) -> None:
        self.charger_id = charger_id
        self.version: Optional[str] = next((
            record["version"] for record in records
            if record.get("event") == "connect" and isinstance(record.get("version"), str)), None)
        self.frames: list[tuple[str, str]] = []  # (dir, text), frame number = index + 1
        self.messages: list[RecordedMessage] = []
        self.answers: dict[str, list[Any]] = {}
        self.plan: list[PlanItem] = []
        self.disconnects = sum(1 for record in records if record.get("event") == "disconnect")
        # its frames and connections only: log lines, verdicts and the like may come after
        wire = [record for record in records
                if "dir" in record or record.get("event") in ("connect", "disconnect")]
        self.ends_disconnected = bool(wire) and wire[-1].get("event") == "disconnect"
        self.started = _record_time(records[0]) if records else 0.0
        self.heartbeats = heartbeats
        self._pending_call: Optional[tuple[str, str, Any]] = None  # an out CALL being read
        self._read(records)

    def _read(self, records: list[dict]) -> None:
        calls_in: dict[str, list[RecordedMessage]] = {}  # message id -> its CALLs not answered
        calls_out: dict[str, PlanItem] = {}  # message id -> the server's CALL
        counts: dict[str, int] = {}
        anchor: Optional[tuple[str, int]] = None
        before_last: Optional[tuple[str, int]] = None  # the anchor before the latest message
        faults_seen: set = set()
        for record in records:
            at = _record_time(record)
            if record.get("event") == "fault":
                text = str(record.get("fault", ""))
                if text and text not in faults_seen:
                    faults_seen.add(text)
                    last_in = bool(self.frames) and self.frames[-1][0] == "in"
                    self._plan(None, None, text, before_last if last_in else anchor, at)
                continue
            if "dir" not in record:
                continue
            self.frames.append((record["dir"], str(record.get("frame", ""))))
            message = self._frame(record, at, calls_in, calls_out)
            if message is not None and (self.heartbeats or message.action != "Heartbeat"):
                counts[message.key] = counts.get(message.key, 0) + 1
                before_last, anchor = anchor, (message.key, counts[message.key])
            elif message is None and self.frames[-1][0] == "out":
                self._note_call(calls_out, anchor, at)

    def _frame(self, record: dict, at: float, calls_in: dict, calls_out: dict
               ) -> Optional[RecordedMessage]:
        """Read one frame record; the charger's message it is, if it is one."""
        try:
            frame = parse_frame(record["frame"])
        except (FrameError, TypeError):
            return None
        number = len(self.frames)
        if record["dir"] == "in" and frame.kind == CALL:
            message = RecordedMessage(number, "call", frame.action or "", frame.payload, at)
            self.messages.append(message)
            calls_in.setdefault(frame.message_id, []).append(message)
            return message
        if record["dir"] == "in":
            item = calls_out.pop(frame.message_id, None)
            if item is None:
                return None
            error = None if frame.kind == CALLRESULT else str(frame.error_code)
            payload = frame.payload if frame.kind == CALLRESULT else frame.error_details
            message = RecordedMessage(number, "reply", item.action, payload, at, error)
            self.messages.append(message)
            return message
        self._note_out(frame, calls_in, calls_out)
        return None

    def _note_out(self, frame: Frame, calls_in: dict, calls_out: dict) -> None:
        """A frame the server sent: the answer to a charger's CALL, or a CALL of its own (planned
        by _note_call once the frame is counted)."""
        if frame.kind == CALL:
            self._pending_call = (frame.message_id, frame.action or "", frame.payload)
            return
        asked = calls_in.get(frame.message_id)
        if not asked:
            return
        message = asked.pop(0)
        message.answer = frame.payload if frame.kind == CALLRESULT else (
            "error", str(frame.error_code), str(frame.error_description))
        self.answers.setdefault(message.action, []).append((message.answer, message.at))

    def _note_call(self, calls_out: dict, anchor: Optional[tuple[str, int]], at: float) -> None:
        if self._pending_call is None:
            return
        message_id, action, payload = self._pending_call
        self._pending_call = None
        calls_out[message_id] = self._plan(action, payload, None, anchor, at)

    def _plan(self, action: Optional[str], payload: Any, fault: Optional[str],
              anchor: Optional[tuple[str, int]], at: float) -> PlanItem:
        item = PlanItem(action or "", standard_spelling(action or "", payload), fault, anchor,
                        0.0 if anchor else max(0.0, at - self.started), at)
        self.plan.append(item)
        return item


def standard_spelling(action: str, payload: Any) -> Any:
    """A recorded CALL's payload in the standard spelling (undoing FLEXICHARGE_KEY_SPELLINGS; the
    session spells it again for a FlexiCharge charger)."""
    spellings = FLEXICHARGE_KEY_SPELLINGS.get(action)
    if spellings is None or not isinstance(payload, dict):
        return payload
    standard = {spelled: key for key, spelled in spellings.items()}
    return {standard.get(key, key): value for key, value in payload.items()}


class Recording:
    """The run of a transcript to replay: its charge points' recordings, by charge point id."""

    def __init__(self, path: str, chargers: dict[str, ChargerRecording], run: int,
                 runs: int) -> None:
        self.path, self.chargers, self.run, self.runs = path, chargers, run, runs

    @property
    def version(self) -> Optional[str]:
        """The OCPP version of its first charger (for those that connect naming none)."""
        return next((charger.version for charger in self.chargers.values() if charger.version),
                    None)


def load_recording(path: str, run: Optional[int] = None, charger: Optional[str] = None,
                   heartbeats: bool = False) -> Recording:
    """The run (1 = the first; the last by default) of a --log file to replay, of every charger or
    of one; TranscriptUnusable says why there is none."""
    runs = read_transcript_runs(path)
    if not runs:
        raise TranscriptUnusable("%s holds no frames: not a --log transcript of a session" % path)
    if run is not None and not 1 <= run <= len(runs):
        raise TranscriptUnusable("%s holds %d run(s); --replay-run %d names none"
                                 % (path, len(runs), run))
    number = run if run is not None else len(runs)
    records = runs[number - 1]
    ids = list(dict.fromkeys(record["charger"] for record in records
                             if "dir" in record and isinstance(record.get("charger"), str)))
    if charger is not None and charger not in ids:
        raise TranscriptUnusable("run %d of %s has no charger %s (it has %s)"
                                 % (number, path, charger, ", ".join(ids) or "none"))
    chosen = [charger] if charger is not None else ids
    chargers = {name: ChargerRecording(name, [record for record in records
                                              if record.get("charger") == name], heartbeats)
                for name in chosen}
    if not any(recording.messages for recording in chargers.values()):
        raise TranscriptUnusable("run %d of %s has no message from a charger" % (number, path))
    return Recording(path, chargers, number, len(runs))


def _transaction_of(payload: Any) -> Any:
    """The transaction id a charger's message names, if any (1.6 or 2.0.1, either spelling)."""
    if not isinstance(payload, dict):
        return None
    found = payload.get("transactionId", payload.get("transactionID"))
    info = payload.get("transactionInfo")
    if found is None and isinstance(info, dict):
        found = info.get("transactionId")
    return found if isinstance(found, (str, int)) and not isinstance(found, bool) else None


def message_stream(message: RecordedMessage, transactions: dict) -> str:
    """The stream a message is compared in: its connector or EVSE (a transaction's messages in
    the stream of the connector it started on), "replies" for replies to the server's CALLs,
    "charger" for the rest.  ``transactions`` (transaction id -> stream) is learnt as it goes."""
    if message.kind == "reply":
        return "replies"
    payload = message.payload if isinstance(message.payload, dict) else {}
    evse = payload.get("evse")
    connector, evse_id = payload.get("connectorId"), payload.get("evseId")
    if evse_id is None and isinstance(evse, dict):
        evse_id = evse.get("id")
    transaction = _transaction_of(payload)
    if transaction is None and isinstance(message.answer, dict):
        transaction = _transaction_of(message.answer)
    if evse_id is not None:
        stream = "EVSE %s" % printable(str(evse_id), 20)
    elif connector is not None and str(connector) != "0":
        stream = "connector %s" % printable(str(connector), 20)
    else:
        stream = transactions.get(transaction, "charger")
    if transaction is not None and stream != "charger" and (
            len(transactions) < MAX_OPEN_TRANSACTIONS or transaction in transactions):
        transactions[transaction] = stream
    return stream


def _leaves(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """(path, value) of every leaf of a payload: a path is its keys and list indices."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, path + (key,))
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            yield from _leaves(item, path + (index,))
    else:
        yield path, value


def _path_text(path: tuple, indices: bool = True) -> str:
    return ".".join(str(part) for part in path if indices or not isinstance(part, int))


class ReplayRules:
    """What a comparison leaves out or allows (--replay-ignore, --replay-tolerance,
    --replay-heartbeats), and how long a quiet charger is waited for (--replay-timeout)."""

    def __init__(self, ignore: Sequence[str] = (), tolerance: float = REPLAY_DEFAULT_TOLERANCE,
                 heartbeats: bool = False, quiet: float = REPLAY_QUIET_SECONDS) -> None:
        self.quiet = quiet  # --replay-timeout
        self.ignore = frozenset(ignore)
        self.tolerance = tolerance / 100.0
        self.heartbeats = heartbeats

    def volatile(self, action: str, path: tuple) -> bool:
        """Is the field at ``path`` of an ``action`` left out: volatile by name, or named by
        --replay-ignore (its name, its dotted path with or without list indices, either one after
        the action and a dot)?"""
        names = [part for part in path if isinstance(part, str)]
        if not names:
            return False
        if names[-1] in REPLAY_VOLATILE_FIELDS or names[-1] in self.ignore:
            return True
        ignore = self.ignore
        return any(text in ignore or "%s.%s" % (action, text) in ignore
                   for text in (_path_text(path), _path_text(path, False)))

    def same_value(self, path: tuple, then: Any, now: Any) -> bool:
        if then == now and type(then) is type(now):
            return True
        names = [part for part in path if isinstance(part, str)]
        if not names or not (names[-1] in REPLAY_METER_FIELDS
                             or REPLAY_METER_CONTAINERS.intersection(names)):
            return False
        try:
            old, new = float(then), float(now)
        except (TypeError, ValueError):
            return False
        return abs(old - new) <= self.tolerance * max(abs(old), abs(new))

    def differences(self, then: RecordedMessage, now: RecordedMessage) -> list[str]:
        """How ``now`` differs from ``then`` (same action), field by field, as "expected ...,
        got ..." texts without the frame."""
        label = then.action + (".conf" if then.kind == "reply" else "")
        if then.error != now.error:
            return ["expected %s %s, got %s" % (label, "CALLERROR " + then.error if then.error
                                                else "CALLRESULT", "CALLERROR " + now.error
                                                if now.error else "a CALLRESULT")]
        old = {path: value for path, value in _leaves(then.payload)
               if not self.volatile(then.action, path)}
        new = {path: value for path, value in _leaves(now.payload)
               if not self.volatile(then.action, path)}
        found = []
        for path in list(old) + [path for path in new if path not in old]:
            name = _path_text(path) or "(payload)"
            if path not in new:
                found.append("expected %s %s=%s, got no %s" % (label, name, _shown(old[path]),
                                                               name))
            elif path not in old:
                found.append("expected %s without %s, got %s=%s" % (label, name, name,
                                                                    _shown(new[path])))
            elif not self.same_value(path, old[path], new[path]):
                found.append("expected %s %s=%s, got %s=%s" % (label, name, _shown(old[path]),
                                                              name, _shown(new[path])))
        return found


def _shown(value: Any) -> str:
    return printable(value if isinstance(value, str) else render_json(value), 60)


def message_summary(message: RecordedMessage) -> str:
    """A message as a difference line names it: its action and a few telling fields."""
    payload = message.payload if isinstance(message.payload, dict) else {}
    fields = ["%s=%s" % (name, _shown(payload[name])) for name in REPLAY_SUMMARY_FIELDS
              if name in payload and not isinstance(payload[name], (dict, list))]
    if message.error:
        fields.insert(0, "CALLERROR " + message.error)
    return " ".join([message.key] + fields)


class ReplayCase:
    """One compared message (or one check of the run): what a JUnit testcase reports."""

    __slots__ = ("name", "seconds", "failure", "details", "frame")

    def __init__(self, name: str, seconds: float = 0.0, failure: Optional[str] = None,
                 details: str = "", frame: int = 0) -> None:
        self.name, self.seconds, self.failure = name, seconds, failure
        self.details, self.frame = details, frame


class ChargerVerdict:
    """How one recorded charger's replay went: its cases, in frame order."""

    def __init__(self, charger_id: str, started: float) -> None:
        self.charger_id = charger_id
        self.live_id: Optional[str] = None
        self.started = started
        self.seconds = 0.0
        self.cases: list[ReplayCase] = []

    @property
    def failures(self) -> list[ReplayCase]:
        return [case for case in self.cases if case.failure is not None]


class ReplayResult:
    """A replay's verdicts, one per recorded charger; ``status`` is the exit status."""

    def __init__(self, name: str, verdicts: list[ChargerVerdict]) -> None:
        self.name, self.verdicts = name, verdicts

    @property
    def status(self) -> int:
        return 1 if any(verdict.failures for verdict in self.verdicts) else 0


def replay_junit_suites(result: ReplayResult) -> list[dict]:
    """The replay as write_junit's suites: one per replayed charger, one case per compared
    message (and per check that fired)."""
    return [{"name": "replay %s %s" % (os.path.basename(result.name), verdict.charger_id),
             "timestamp": UTC_CLOCK.at(verdict.started),
             "cases": [{"name": case.name, "seconds": round(case.seconds, 3),
                        "failure": case.failure, "details": case.details}
                       for case in verdict.cases]}
            for verdict in result.verdicts]


def _refreshed(value: Any, shift: float) -> Any:
    """A recorded value with its ISO-8601 dates moved ``shift`` seconds on (to today's)."""
    if isinstance(value, dict):
        return {key: _refreshed(item, shift) for key, item in value.items()}
    if isinstance(value, list):
        return [_refreshed(item, shift) for item in value]
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        return iso_utc(moment + datetime.timedelta(seconds=shift))
    return value


# Answers whose values the server's own state follows: the default handler runs with these
# options (answer field, Settings field, type) set from the recorded answer.
REPLAY_ANSWER_OPTIONS = {
    "BootNotification": (("status", "boot_status", str), ("interval", "heartbeat_interval", int)),
}


def _handled_as_recorded(session: ChargerSession, action: str, payload: Any,
                         handler: Callable[[ChargerSession, dict], Any], answer: Any) -> Any:
    """The default handler's answer, made with the options the recorded ``answer`` implies
    (REPLAY_ANSWER_OPTIONS), so that the server's state (and its checks) follow the recording."""
    fields = REPLAY_ANSWER_OPTIONS.get(action)
    if fields is None or not isinstance(answer, dict):
        return handler(session, payload)
    system = session.system
    options = system.options
    system.options = dataclasses.replace(options, **{
        name: answer[key] for key, name, kind in fields if type(answer.get(key)) is kind})
    try:
        return handler(session, payload)
    finally:
        system.options = options


def _since(at: float) -> float:
    """Seconds from a recorded moment to now (0 for a record whose time could not be read)."""
    return time.time() - at if at else 0.0


class ReplayCharger:
    """One recorded charger replayed: the live session it is played against, what it has sent
    so far, the plan's progress and the transaction ids mapped (recorded -> live)."""

    def __init__(self, replay: "Replay", recording: ChargerRecording) -> None:
        self.replay, self.recording = replay, recording
        self.session: Optional[ChargerSession] = None
        self.verdict = ChargerVerdict(recording.charger_id, time.time())
        self.counts: dict[str, int] = {}  # key -> live messages of it (anchors' ordinals)
        self.answered: dict[str, int] = {}  # action -> live CALLs of it answered so far
        self.transaction_ids: dict[Any, Any] = {}
        self.messages: list[RecordedMessage] = []
        self.frames: list[tuple[str, str]] = []
        self.frame_count = 0
        self.next_item = 0
        self.ready: set = set()  # plan items due by time (no charger message before them)
        self.calls_open = 0
        self.disconnects = 0
        self.last_at = time.time()  # of the latest live message
        self.keep = len(recording.frames) + REPLAY_EXTRA_KEPT
        self.recorded_by_ordinal: dict[tuple[str, int], RecordedMessage] = {}
        seen: dict[str, int] = {}
        for message in recording.messages:
            seen[message.key] = seen.get(message.key, 0) + 1
            self.recorded_by_ordinal[(message.key, seen[message.key])] = message

    def bind(self, session: ChargerSession) -> None:
        """The charger connected (again): play against this session from now on."""
        first = self.session is None
        self.session = session
        self.verdict.live_id = session.charger_id
        recorded = self.recording.version
        if recorded and session.version.name != recorded:
            self.verdict.cases.append(ReplayCase(
                "OCPP version", failure="expected OCPP %s, got OCPP %s at frame %d"
                % (recorded, session.version.name, self.frame_count + 1)))
        session.version = self.replay.wrapped_version(session.version)
        if first:
            for index, item in enumerate(self.recording.plan):
                if item.anchor is None and item.fault is None:
                    asyncio.get_running_loop().call_later(item.delay, self._due, index)
        self.advance()

    def _due(self, index: int) -> None:
        self.ready.add(index)
        self.advance()

    def on_frame(self, direction: str, text: str) -> None:
        self.frame_count += 1
        if len(self.frames) < self.keep:
            self.frames.append((direction, text))

    def on_message(self, message: RecordedMessage, answering: bool) -> None:
        """A charger's CALL (``answering``: its reply is being sent) or reply arrived."""
        key = message.key
        if answering:
            self.answered[message.action] = self.answered.get(message.action, 0) + 1
        ordinal = self.counts[key] = self.counts.get(key, 0) + 1
        then = self.recorded_by_ordinal.get((key, ordinal))
        if then is not None:
            recorded, live = _transaction_of(then.payload), _transaction_of(message.payload)
            if recorded is not None and live is not None and len(
                    self.transaction_ids) < MAX_OPEN_TRANSACTIONS:
                self.transaction_ids[recorded] = live
        if not self.recording.heartbeats and message.action == "Heartbeat":
            self.counts[key] -= 1  # not an anchor: its timing is the charger's own
            return
        if len(self.messages) < self.keep:
            self.messages.append(message)
        self.advance()

    def advance(self) -> None:
        """Do the plan's next items whose moment has come, in order."""
        plan, session = self.recording.plan, self.session
        while self.next_item < len(plan) and session is not None and not session.closed:
            item = plan[self.next_item]
            if item.anchor is None and item.fault is None and self.next_item not in self.ready:
                return
            if item.anchor is not None and self.counts.get(item.anchor[0], 0) < item.anchor[1]:
                return
            self.next_item += 1
            if item.fault is not None and item.anchor is None:
                continue  # set when the replay started
            if item.fault is not None:
                self.replay.set_fault(item.fault)
            else:  # queued: it goes out after the reply being sent, if any (a task sends it)
                self._send(session, item)

    def _send(self, session: ChargerSession, item: PlanItem) -> None:
        payload = self._mapped(_refreshed(item.payload, _since(item.at)))
        self.calls_open += 1
        session.call(item.action, payload, on_done=self._call_done)

    def _call_done(self, outcome: CallOutcome) -> None:
        self.calls_open -= 1
        self.replay.changed.set()

    def _mapped(self, payload: Any) -> Any:
        """A recorded payload with its transaction ids the live ones."""
        if isinstance(payload, dict):
            return {key: (self.transaction_ids.get(value, value)
                          if key in ("transactionId", "transactionID")
                          and isinstance(value, (str, int)) else self._mapped(value))
                    for key, value in payload.items()}
        if isinstance(payload, list):
            return [self._mapped(item) for item in payload]
        return payload

    def answer(self, session: ChargerSession, action: str, payload: Any,
               handler: Callable[[ChargerSession, dict], Any]) -> Any:
        """The answer to a charger's CALL: the recorded one of the same action at the same
        position, made consistent with the default handler's (which runs, for the server's
        state); the default one where none was recorded."""
        number = self.answered.get(action, 0) + 1  # counted as answered (a fault may answer)
        recorded = self.recording.answers.get(action, [])
        answer, at = recorded[number - 1] if number <= len(recorded) else (None, 0.0)
        live = _handled_as_recorded(session, action, payload, handler, answer)
        if type(live) is LaterReply:  # what follows it (CertificateSigned) is automation: off
            return LaterReply(self._later(live.making, answer, at))
        if answer is None:
            return live
        return self._recorded_answer(answer, at, live)

    async def _later(self, making: "Awaitable[LaterMade]", answer: Any, at: float) -> LaterMade:
        reply, _ = await making
        return (reply if answer is None else self._recorded_answer(answer, at, reply)), None

    def _recorded_answer(self, answer: Any, at: float, live: Any) -> Any:
        if isinstance(answer, tuple):
            raise CallRefused(answer[1], answer[2])
        if not isinstance(answer, dict) or not isinstance(live, dict):
            return live
        reply = _refreshed(answer, _since(at))
        for key in ("transactionId", "currentTime"):
            if key in reply and key in live:
                if key == "transactionId" and len(self.transaction_ids) < MAX_OPEN_TRANSACTIONS:
                    self.transaction_ids[reply[key]] = live[key]
                reply[key] = live[key]
        return reply

    @property
    def done(self) -> bool:
        """Played to the end: disconnected as the recording ends, or every recorded message
        came and every recorded CALL was sent and ended."""
        recording = self.recording
        if self.session is None:
            return False
        if recording.ends_disconnected and self.disconnects >= recording.disconnects:
            return True
        if self.next_item < len(recording.plan) or self.calls_open:
            return False
        arrived = collections.Counter(message.key for message in self.messages)
        arrived.subtract(message.key for message in self.compared(recording.messages))
        return min(arrived.values(), default=0) >= 0

    def compared(self, messages: list[RecordedMessage]) -> list[RecordedMessage]:
        return [message for message in messages
                if self.recording.heartbeats or message.action != "Heartbeat"]


class ReplayComparison:
    """What a replayed charger sent, compared stream by stream with what it sent then."""

    def __init__(self, charger: ReplayCharger, rules: ReplayRules) -> None:
        self.charger, self.rules = charger, rules

    def cases(self) -> list[ReplayCase]:
        charger = self.charger
        then = self._streams(charger.compared(charger.recording.messages))
        now = self._streams(charger.messages)
        cases: list[ReplayCase] = []
        for stream in dict.fromkeys(list(then) + list(now)):
            old, new = then.get(stream, []), now.get(stream, [])
            matcher = difflib.SequenceMatcher(None, [message_summary(message) for message in old],
                                              [message_summary(message) for message in new],
                                              autojunk=False)
            after = 0  # the live frame a missing message was expected after
            for _, i1, i2, j1, j2 in matcher.get_opcodes():
                for offset in range(max(i2 - i1, j2 - j1)):
                    live = new[j1 + offset] if j1 + offset < j2 else None
                    after = live.frame if live is not None else after
                    cases.append(self._case(stream, old[i1 + offset] if i1 + offset < i2 else None,
                                            live, after))
        return cases

    def _streams(self, messages: list[RecordedMessage]) -> dict[str, list[RecordedMessage]]:
        streams: dict[str, list[RecordedMessage]] = {}
        transactions: dict = {}
        for message in messages:
            message.stream = message_stream(message, transactions)
            streams.setdefault(message.stream, []).append(message)
        return streams

    def _case(self, stream: str, then: Optional[RecordedMessage],
              now: Optional[RecordedMessage], after: int) -> ReplayCase:
        if then is None:
            assert now is not None
            return self._failed(stream, now, None, "expected no more messages, got %s at frame %d"
                                % (message_summary(now), now.frame), [], now.frame)
        if now is None:
            return self._failed(stream, None, then, "expected %s (recorded frame %d), got nothing "
                                "%s" % (message_summary(then), then.frame, "after frame %d" % after
                                        if after else "in %s" % stream), [], after)
        if then.key != now.key:
            return self._failed(stream, now, then, "expected %s, got %s at frame %d" % (
                message_summary(then), message_summary(now), now.frame), [], now.frame)
        found = self.rules.differences(then, now)
        if found:
            return self._failed(stream, now, then, "%s at frame %d" % (found[0], now.frame),
                                found, now.frame)
        return ReplayCase("frame %d: %s (%s)" % (now.frame, message_summary(now), stream),
                          now.seconds, None, "", now.frame)

    def _failed(self, stream: str, now: Optional[RecordedMessage],
                then: Optional[RecordedMessage], failure: str, found: list[str],
                frame: int) -> ReplayCase:
        shown = message_summary(now if now is not None else then)  # type: ignore[arg-type]
        details = "\n".join(found[1:] + [
            "recorded, around frame %d:" % (then.frame if then else 0),
            *_frames_around(self.charger.recording.frames, then.frame if then else 0),
            "now, around frame %d:" % frame, *_frames_around(self.charger.frames, frame)])
        return ReplayCase("frame %d: %s (%s)" % (frame, shown, stream),
                          now.seconds if now else 0.0,
                          failure, details, frame)


def _frames_around(frames: list[tuple[str, str]], number: int) -> list[str]:
    """The frames around frame ``number`` (1-based), one line each, as the transcript has them."""
    first = max(1, number - REPLAY_FRAMES_AROUND)
    return ["  %s%d %s %s" % (">" if index == number else " ", index, frames[index - 1][0],
                              printable(frames[index - 1][1], 300))
            for index in range(first, min(len(frames), number + REPLAY_FRAMES_AROUND) + 1)]


class Replay:
    """A replay run on a server: binds each recorded charger to the charger that connects as it
    (any one, when one charger was recorded), answers and calls as recorded, and compares."""

    EVENTS = ("connected", "disconnected", "call_answered", "reply_received", "spec_problem")

    def __init__(self, system: "CentralSystem", recording: Recording, rules: ReplayRules) -> None:
        self.system, self.recording, self.rules = system, recording, rules
        self.chargers = {charger_id: ReplayCharger(self, charger)
                         for charger_id, charger in recording.chargers.items()}
        self.bound: dict[str, ReplayCharger] = {}  # live charge point id -> its recorded one
        self.versions: dict[str, OcppVersion] = {}  # version name -> its handlers wrapped
        self.originals: dict[int, tuple[ChargerSession, OcppVersion]] = {}
        self.changed = asyncio.Event()
        self.last_activity = time.monotonic()
        self.options: Optional[Settings] = None

    def charger_for(self, charger_id: str) -> Optional[ReplayCharger]:
        """The recorded charger a live one plays: the one of its id, else (one recorded) the
        only one, for the first charger that connects."""
        charger = self.bound.get(charger_id)
        if charger is None:
            charger = self.chargers.get(charger_id)
            if charger is None and len(self.chargers) == 1 and not self.bound:
                charger = next(iter(self.chargers.values()))
            if charger is not None and charger not in self.bound.values():
                self.bound[charger_id] = charger
            else:
                charger = None
        return charger

    def wrapped_version(self, version: OcppVersion) -> OcppVersion:
        """``version`` with each handler answering through the replay (made once per version)."""
        if version.name in self.versions or version in self.versions.values():
            return self.versions.get(version.name, version)
        wrapped = object.__new__(OcppVersion)
        wrapped.__dict__.update(version.__dict__)
        wrapped.handlers = {action: functools.partial(self._answer, action, handler)
                            for action, handler in version.handlers.items()}
        self.versions[version.name] = wrapped
        return wrapped

    def _answer(self, action: str, handler: Callable[[ChargerSession, dict], Any],
                session: ChargerSession, payload: Any) -> Any:
        charger = self.bound.get(session.charger_id)
        if charger is None or charger.session is not session:
            return handler(session, payload)
        return charger.answer(session, action, payload, handler)

    def start(self) -> None:
        """Automation off, the recorded faults of no moment set, the events subscribed; a
        charger connected already is played against from now on."""
        system = self.system
        self.options = system.options
        system.options = dataclasses.replace(system.options, boot_data=False,
                                             auto_start_after=None, auto_stop_after=None)
        for charger in self.chargers.values():
            for item in charger.recording.plan:
                if item.fault is not None and item.anchor is None:
                    self.set_fault(item.fault)
        system.bus.subscribe(self.on_event, *self.EVENTS)
        system.bus.subscribe(self.on_frame_event, "frame", receiver=self.on_frames)
        for session in list(system.sessions.values()):
            self._connected(session)

    def stop(self) -> None:
        self.system.bus.unsubscribe(self.on_event)
        self.system.bus.unsubscribe(self.on_frame_event)
        if self.options is not None:
            self.system.options = self.options
        for session, version in self.originals.values():
            session.version = version

    def set_fault(self, text: str) -> None:
        """Set a recorded fault again (for any charger, when one charger was recorded)."""
        try:
            command = fault_command(text)
            target = command.target if len(self.chargers) > 1 else None
            self.system.faults.add(parse_fault(command.text, target))
        except CommandError as exc:
            self.system.log("warn", None, "replay: the recorded fault %r not set: %s" % (text, exc))

    def _connected(self, session: ChargerSession) -> None:
        charger = self.charger_for(session.charger_id)
        if charger is not None:
            self.originals = {key: kept for key, kept in self.originals.items()
                              if not kept[0].closed}  # the sessions still open only
            self.originals[id(session)] = (session, session.version)
            charger.bind(session)
            self.activity()

    def activity(self) -> None:
        self.last_activity = time.monotonic()
        self.changed.set()


class ReplayEvents(Replay):
    """A Replay's bus subscriptions: the charger's frames, messages and checks as they come."""

    def on_event(self, event: Event) -> None:
        if event.type == "connected" and event.session is not None:
            self._connected(event.session)
            return
        charger = self.bound.get(event.charger or "")
        if charger is None or event.session is not charger.session:
            return
        fields = event.fields
        if event.type == "disconnected":
            charger.disconnects += 1
            self.activity()
        elif event.type == "spec_problem":
            self._spec_problem(charger, fields)
        else:
            message = RecordedMessage(charger.frame_count,
                                      "call" if event.type == "call_answered" else "reply",
                                      fields["action"], fields["payload"], event.at,
                                      fields["error"] if event.type == "reply_received" else None)
            if event.type == "call_answered":
                message.answer = fields["reply"]
            message.seconds = max(0.0, event.at - charger.last_at)
            charger.last_at = event.at
            charger.on_message(message, event.type == "call_answered")
            if self.rules.heartbeats or message.action != "Heartbeat":
                self.activity()

    def _spec_problem(self, charger: ReplayCharger, fields: dict) -> None:
        """A behaviour check that fired fails the replay; a spec warning does under --strict."""
        key, text = fields["key"], fields["text"]
        if key[:1] == ["check"] or self.system.options.strict:
            name = "behaviour check %s" % key[1] if key[:1] == ["check"] else "spec warning"
            charger.verdict.cases.append(ReplayCase(
                name, 0.0, "%s at frame %d" % (text, charger.frame_count),
                "\n".join(_frames_around(charger.frames, charger.frame_count)),
                charger.frame_count))

    def on_frame_event(self, event: Event) -> None:
        charger = self.bound.get(event.charger or "")
        if charger is not None and event.session is charger.session:
            charger.on_frame(event.fields["direction"], event.fields["text"])

    def on_frames(self, frames: Iterator[FrameRecord]) -> None:
        bound = self.bound
        for record in frames:
            charger = bound.get(record[1])
            if charger is not None:
                charger.on_frame(record[3], record[4])


class ReplayRun(ReplayEvents):
    """A Replay from start to verdict: ``run`` plays it and returns the ReplayResult."""

    async def run(self) -> ReplayResult:
        self.start()
        try:
            while not all(charger.done for charger in self.chargers.values()):
                quiet = self.rules.quiet if self.bound else REPLAY_CONNECT_SECONDS
                left = self.last_activity + quiet - time.monotonic()
                if left <= 0:
                    break
                self.changed.clear()
                try:
                    await asyncio.wait_for(self.changed.wait(), left)
                except asyncio.TimeoutError:
                    pass
        finally:
            self.stop()
        return self.verdicts()

    def verdicts(self) -> ReplayResult:
        """Each charger's cases, said: its differences (the first REPLAY_DIFFERENCES_SHOWN), then
        its verdict line."""
        result = ReplayResult(self.recording.path, [])
        for charger in self.chargers.values():
            verdict = charger.verdict
            verdict.seconds = time.time() - verdict.started
            if charger.session is None:
                verdict.cases.append(ReplayCase("connect", 0.0, "expected charger %s to connect, "
                                                "none did" % verdict.charger_id))
            else:
                verdict.cases[:0] = ReplayComparison(charger, self.rules).cases()
                verdict.cases.sort(key=lambda case: case.frame)  # stable: the checks after
            result.verdicts.append(verdict)
            self._say(verdict, len(charger.messages))
        return result

    def _say(self, verdict: ChargerVerdict, compared: int) -> None:
        who = verdict.live_id or verdict.charger_id
        failures = verdict.failures
        for case in failures[:REPLAY_DIFFERENCES_SHOWN]:
            self.system.log("warn", who, "replay: %s" % case.failure)
        if len(failures) > REPLAY_DIFFERENCES_SHOWN:
            self.system.log("warn", who, "replay: and %d more difference(s)"
                            % (len(failures) - REPLAY_DIFFERENCES_SHOWN))
        name = os.path.basename(self.recording.path)
        if failures:
            self.system.log("notice", who, "replay %s (run %d, %s): DIFFERENT, %d difference(s) "
                            "in %d message(s) in %.1f s; first: %s"
                            % (name, self.recording.run, verdict.charger_id, len(failures),
                               compared, verdict.seconds, failures[0].failure))
        else:
            self.system.log("notice", who, "replay %s (run %d, %s): SAME, %d message(s) compared "
                            "in %.1f s" % (name, self.recording.run, verdict.charger_id,
                                           compared, verdict.seconds))


def replay_rules(options: "Settings") -> ReplayRules:
    return ReplayRules(options.replay_ignore, options.replay_tolerance, options.replay_heartbeats,
                       options.replay_timeout)


def load_replay(options: "Settings", out: Output) -> Optional[Recording]:
    """--replay's recording, as the flags pick it; None (after one error line) when there is
    none."""
    if options.script:
        out.error(None, "--replay and --script are two runs: give one (a script can replay with "
                  "a `replay FILE` step)")
        return None
    try:
        return load_recording(options.replay or "", options.replay_run, options.replay_charger,
                              options.replay_heartbeats)
    except TranscriptUnusable as exc:
        out.error(None, "--replay: %s" % exc)
        return None


async def run_replay(replay: ReplayRun, system: "CentralSystem") -> None:
    """Run the --replay, write its --junit report, then stop the server with its exit status."""
    try:
        result = await replay.run()
        system.exit_code = result.status
        if system.options.junit:
            system.exit_code = max(system.exit_code, report_junit(
                system, system.options.junit, replay_junit_suites(result)))
    except Exception as exc:  # a bug of ours: report it as a failed run, not a traceback
        system.log("error", None, "the replay stopped: %s: %s" % (type(exc).__name__, exc))
        system.exit_code = 1
    system.stop()


class ReplayStep(Step):
    """``replay FILE``: replay a --log transcript (relative to the script) against the charger;
    the step fails when it sends something else.  As a script's first step it waits for the
    charger to connect, as --replay does."""

    usage = "replay FILE"
    connects = True

    def parse(self, tokens: list[str]) -> None:
        if len(tokens) != 1:
            raise self.fail_usage()
        path = os.path.join(self.folder, tokens[0])
        self.result: Optional[ReplayResult] = None  # once it has run
        try:
            self.recording = load_recording(path)
        except TranscriptUnusable as exc:
            raise ScriptError(self.line, str(exc)) from None

    async def run(self, runner: "ScenarioRunner") -> None:
        system = runner.system
        replay = ReplayRun(system, self.recording, replay_rules(system.options))
        result = self.result = await replay.run()  # for the report of the script's run
        verdict = result.verdicts[0] if result.verdicts else None
        if verdict is not None and verdict.live_id is not None:
            runner.charger_id = verdict.live_id
            runner.session = system.sessions.get(verdict.live_id)
        failures = [case for verdict in result.verdicts for case in verdict.failures]
        if failures:
            raise StepFailed("replay %s: %d difference(s); first: %s"
                             % (self.text.split(None, 1)[1], len(failures), failures[0].failure))


_WORDS_BEFORE_REPLAY = ", ".join(SCENARIO_WORDS)
SCENARIO_STEPS["replay"] = ReplayStep
SCENARIO_WORDS = tuple(SCENARIO_STEPS)
HELP_TOPICS["scripts"] = [text.replace(_WORDS_BEFORE_REPLAY, ", ".join(SCENARIO_WORDS))
                          for text in HELP_TOPICS["scripts"]]


# ------------------------------------------- HTTP API, event stream, file server
# A second port (the websocket port + 1 by default) for everything that is
# not a charger: test code drives chargers with JSON, a browser watches the
# live page, chargers upload diagnostics and fetch firmware.  Standard
# library only: asyncio streams and a small HTTP/1.1 reader, one request per
# connection.  docs/api.md is the contract; API_VERSION numbers it.

# 2: event ids carry the run ("<run>:<number>"); a stream starts with "hello".  3: OCPP 2.0.1
# stations: a transactionId may be a string, connectors keyed "evse/connector", `version`.
API_VERSION = 3
HTTP_HEADER_TIMEOUT = 10.0  # seconds a client gets to send its request line and headers
HTTP_BODY_TIMEOUT = 60.0  # seconds a request body may pause before the request is dropped
MAX_HTTP_HEADERS = 100
MAX_JSON_BODY = 1 << 20  # bytes of a JSON request body
EVENT_HISTORY = 5000  # events kept for the event streams, their resumes and GET /api/transcript
EVENT_HISTORY_LINES = 1000  # operator lines ("log" events) kept apart from those, for the same
EVENT_HISTORY_BUDGET = 2000000  # characters those events may hold between them (a few MB at most)
EVENT_STREAM_KEEPALIVE = 15.0  # seconds between comments on a quiet event stream
# seconds an event stream gathers events before it writes them (20 writes a second)
EVENT_STREAM_PACE = 0.05
# every event is kept this long after the last stream closed, for its resume
EVENT_RESUME_SECONDS = 60.0
# Descriptors: every HTTP connection and every charger is one, under the soft open-files limit.
DEFAULT_HTTP_MAX_CONNECTIONS = 256  # HTTP connections served at once (--http-max-connections)
OPEN_FILES_FOR_CHARGERS = 64  # descriptors the HTTP bound leaves free under the open-files limit
LOW_OPEN_FILES = 4096  # an open-files limit under this is named in the banner
MACOS_OPEN_MAX = 10240  # the most macOS lets the soft open-files limit be, whatever the hard one
HTTP_BUSY_ANSWERS = 64  # connections over the bound answered 503 at once; more are cut unanswered
HTTP_BUSY_RETRY_AFTER = 5  # seconds, the Retry-After of a 503 "busy"
HTTP_BUSY_HEADERS = (("Retry-After", str(HTTP_BUSY_RETRY_AFTER)),)
HTTP_BUSY_LINGER = 1.0  # seconds a 503 waits for the request head (lest the close reset it)
EVENT_STREAM_SHARE = 0.75  # share of those connections event streams may take; the rest: the API
EVENT_STREAM_SEND_BUFFER = 32 * 1024  # SO_SNDBUF of an event stream's socket (Linux doubles it)
EVENT_STREAM_WRITE_BYTES = 64 * 1024  # most a stream writes at once; its write buffer's high mark
EVENT_STREAM_DRAIN_TIMEOUT = 30.0  # seconds a stream's reader may take nothing; then it is closed
BURST_FIRST_REPORT = 1.0  # seconds a burst of a repeated happening is counted before its first line
BURST_LONGEST_REPORT = 60.0  # while it lasts, a line every 2, 4, ... up to this many seconds
DEFAULT_MAX_UPLOAD = 50 * 1024 * 1024
DEFAULT_FILES_QUOTA = 500 * 1024 * 1024
UPLOAD_CHUNK = 64 * 1024
HTTP_LINGER_SECONDS = 2.0  # after a refused request body: how long what follows is read and dropped
HTTP_LINGER_BYTES = 4 << 20  # and at most how many bytes of it


class HttpError(Exception):
    """An HTTP refusal: its status, the text of its ``{"error": ...}`` body, and more keys for that
    body."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = (),
                 **more: Any) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers
        self.more = more


class BurstReport:
    """One operator line per burst of something that can repeat fast (connections refused, streams
    closed, failed accepts), with its count.

    The first line comes BURST_FIRST_REPORT seconds after the first
    occurrence; while more come, a line every 2, 4, ... up to
    BURST_LONGEST_REPORT seconds; a window without any ends the burst.
    ``report(count, seconds)`` makes the line.  Call ``add`` in the loop.
    """

    def __init__(self, report: Callable[[int, float], None]) -> None:
        self.report = report
        self.count = 0
        self.window = 0.0
        self._timer: Optional[asyncio.TimerHandle] = None

    def add(self, count: int = 1) -> None:
        self.count += count
        if self._timer is None:
            self.window = BURST_FIRST_REPORT
            self._timer = asyncio.get_running_loop().call_later(self.window, self._flush)

    def _flush(self) -> None:
        count, self.count, self._timer = self.count, 0, None
        if not count:
            return  # a quiet window: the burst is over
        self.report(count, self.window)
        self.window = min(self.window * 2, BURST_LONGEST_REPORT)
        self._timer = asyncio.get_running_loop().call_later(self.window, self._flush)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


_API_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def api_json(value: Any) -> str:
    """JSON for an API body: ASCII (so always UTF-8, a charger's lone surrogates as escapes), never
    raising."""
    try:
        return _API_ENCODER.encode(value)
    except (ValueError, TypeError, RecursionError):
        # a charger's value nested too deep: that field is shown as text
        if isinstance(value, dict):
            return "{%s}" % ",".join("%s:%s" % (json.dumps(str(key)), api_json(item)) for key,
                                     item in value.items())
        return json.dumps(render_json(value), ensure_ascii=True)


# Fields the history and the event streams leave out: the frame event just before carries the same
# charger payload, as text.  Kept once, as text, its memory is bounded by its length.
STREAM_OMITS = {"call_answered": ("payload",), "reply_received": ("payload",)}
FRAME_FIELDS = EVENT_FIELDS["frame"]
_SCALARS = (str, int, float, bool, type(None))


class StoredEvent:
    """An event as the history keeps it: strings only.

    No session, and no charger payload as parsed objects: those are not
    bounded by their text (a frame nested 900 deep is 900 lists), and a
    history full of them would make every garbage collection slow.  A frame
    keeps its fields; any other event its API form, made now.
    """

    __slots__ = ("seq", "type", "charger", "at", "_frame", "_fields", "json", "sse", "cost")

    def __init__(self, event: Event) -> None:
        self.seq, self.type, self.charger, self.at = event.seq, event.type, event.charger, event.at
        self.sse: Optional[bytes] = None  # its event-stream message, made once for every reader
        self.json: Optional[str] = None  # its API form, made when a reader first wants it
        self._fields: Optional[dict[str, Any]] = None
        if isinstance(event, FrameEvent):
            self._frame: Optional[tuple] = (event.direction, event.text, event.label, event.binary)
            self.cost = 100 + len(event.text)  # what the history counts it as: about its characters
            return
        self._frame = None
        fields = event.fields
        omitted = STREAM_OMITS.get(event.type)
        if omitted:
            fields = {name: value for name, value in fields.items() if name not in omitted}
        if event.type == "call_answered" or all(type(value) in _SCALARS
                                                for value in fields.values()):
            self._fields = fields  # scalars, or the server's own reply: small, bounded
            self.cost = 100 + sum(len(value) for value in fields.values() if type(value) is str)
        else:  # a charger's values: kept as their text
            self.json = self._json(fields)
            self.cost = 100 + len(self.json)

    def _json(self, fields: dict[str, Any]) -> str:
        record = {"id": self.seq, "type": self.type, "charger": self.charger,
                  "ts": UTC_CLOCK.at(self.at)}
        record.update(fields)
        return api_json(record)

    @classmethod
    def of_frame(cls, kept: tuple) -> "StoredEvent":
        """A frame the history kept as a tuple (EventHistory.__call__), made a StoredEvent."""
        stored = cls.__new__(cls)
        stored.seq, stored.charger, stored.at, direction, text, label, binary = kept
        stored.type, stored.sse, stored.json, stored._fields = "frame", None, None, None
        stored._frame = (direction, text, label, binary)
        stored.cost = 100 + len(text)
        return stored

    @property
    def fields(self) -> dict[str, Any]:
        if self._frame is not None:
            return dict(zip(FRAME_FIELDS, self._frame))
        if self._fields is not None:
            return self._fields
        record = json.loads(self.event_json())
        for name in ("id", "type", "charger", "ts"):
            del record[name]
        return record

    def event_json(self) -> str:
        """Its API form: ``{"id", "type", "charger", "ts", <its fields>}``."""
        if self.json is None:
            self.json = self._json(self.fields)
        return self.json

    def sse_message(self, run: str, missed: int = 0) -> bytes:
        """It as a Server-Sent Events message, its id ``<run>:<number>``; made once for every reader
        (unless it tells one what it missed)."""
        if missed:
            return ('id: %s:%d\ndata: {"missed":%d,%s\n\n' % (
                run, self.seq, missed, self.event_json()[1:])).encode("ascii")
        if self.sse is None:
            self.sse = ("id: %s:%d\ndata: %s\n\n" % (
                run, self.seq, self.event_json())).encode("ascii")
        return self.sse


class EventHistory:
    """The latest events: what every event stream reads (live, or resumed with Last-Event-ID) and
    what GET /api/transcript shows.

    One bus subscriber, however many readers: each reader keeps its own
    place (the last event number it sent) and, when it has caught up, waits
    for the next event.  A reader that falls behind the oldest event kept is
    told how many it missed.  Events are kept as StoredEvent (strings only),
    bounded by count and by the characters they hold.  ``run`` names this
    run of the server in every event id (``<run>:<number>``), so that a
    reader resuming with an id of an earlier run is told and starts afresh.

    The transcript's events (ALWAYS) are kept all the time; the others only
    while a stream is open and for EVENT_RESUME_SECONDS after the last one
    closes (HttpApi subscribes it to them): an event nobody may read is not
    even built, and the chargers' messages cost what they did without the
    HTTP port.
    """

    ALWAYS = Transcript.EVENT_NAMES

    def __init__(self, limit: Optional[int] = None, budget: Optional[int] = None,
                 lines: Optional[int] = None) -> None:
        # The chargers' events: StoredEvent, or a frame kept while nobody reads as a plain tuple
        # (see _frame), which costs less and which the garbage collector stops tracking.
        self.events: collections.deque[Any] = collections.deque()
        self.lines: collections.deque[StoredEvent] = collections.deque()  # "log" events, kept apart
        self.limit, self.budget, self.cost = (limit or EVENT_HISTORY, budget
                                              or EVENT_HISTORY_BUDGET, 0)
        self.line_limit = lines or EVENT_HISTORY_LINES
        self.last = 0  # the number of the latest event kept (0 before the first)
        self.dropped = 0  # the number of the latest event dropped to make room (0: none yet)
        self._waiting: list[asyncio.Future[bool]] = []  # the readers that have caught up
        self.readers = 0  # event streams open now
        self.run = base64.urlsafe_b64encode(os.urandom(6)).decode("ascii")

    def on_event(self, event: Event) -> None:
        """The history as a bus subscriber (a bound method: called faster than the instance)."""
        if event.type == "frame":
            self.on_frames(iter(((event.seq, event.charger, event.at, event.direction, event.text,
                                  event.label, event.binary),)))
            return
        self._keep(StoredEvent(event))
        self.last = event.seq
        self._wake()

    def on_frames(self, frames: "Iterator[tuple]") -> None:
        """The history's receiver of frames (EventBus.deliver_frames; FrameRecords, or their first
        seven fields): the most frequent event, kept lean (a plain tuple while nobody reads)."""
        if self.readers:
            for frame in frames:
                self._keep(StoredEvent.of_frame(frame[:7]))
                self.last = frame[0]
        else:
            events, cost, frame = self.events, self.cost, None
            for frame in frames:
                events.append(frame[:7])
                cost += 100 + len(frame[4])
            if frame is not None:
                self.cost, self.last = cost, frame[0]
                if cost > self.budget or len(events) > self.limit:
                    self._trim()
        if self._waiting:
            self._wake()

    def _wake(self) -> None:
        """Wake the readers that have caught up."""
        if self._waiting:
            waiting, self._waiting = self._waiting, []
            for reader in waiting:
                if not reader.done():
                    reader.set_result(True)

    __call__ = on_event  # a history is a subscriber itself too (the server subscribes on_event)

    def _keep(self, stored: StoredEvent) -> None:
        if stored.type == "log":  # a flood of lines (refusals) pushes out lines, not frames
            self.lines.append(stored)
            if len(self.lines) > self.line_limit:
                self.dropped = max(self.dropped, self.lines.popleft().seq)
        else:
            self.events.append(stored)
            self.cost += stored.cost
            self._trim()
        if self.readers:
            stored.sse_message(self.run)  # made now, in its charger's turn, not in a reader's

    def _trim(self) -> None:
        events, limit, budget, cost, dropped = self.events, self.limit, self.budget, self.cost, \
            self.dropped
        while len(events) > limit or cost > budget:
            oldest = events.popleft()
            if type(oldest) is tuple:
                cost -= 100 + len(oldest[4])
                seq = oldest[0]
            else:
                cost -= oldest.cost
                seq = oldest.seq
            if seq > dropped:
                dropped = seq
        self.cost, self.dropped = cost, dropped

    @staticmethod
    def _newer(kept: "collections.deque[Any]", seq: int) -> list[StoredEvent]:
        """The events of ``kept`` after number ``seq``, oldest first, as StoredEvent."""
        newer = []
        for event in reversed(kept):  # a reader is nearly always near the end: walk back to it
            if type(event) is tuple:
                if event[0] <= seq:
                    break
                event = StoredEvent.of_frame(event)
            elif event.seq <= seq:
                break
            newer.append(event)
        newer.reverse()
        return newer

    def after(self, seq: int) -> tuple[list[StoredEvent], int]:
        """The events after number ``seq``, oldest first, and how many event numbers after it are
        not kept (those before the first given, when events after ``seq`` were dropped)."""
        if self.last <= seq:
            return [], 0
        newer = self._newer(self.events, seq)
        lines = self._newer(self.lines, seq)
        if lines:
            newer = sorted(newer + lines, key=lambda stored: stored.seq)
        missed = max(0, newer[0].seq - seq - 1) if newer and self.dropped > seq else 0
        return newer, missed

    def kept(self) -> list[StoredEvent]:
        """Every event kept, oldest first."""
        return self.after(0)[0]

    async def wait(self, seq: int, timeout: float) -> bool:
        """Wait until an event after number ``seq`` is kept (True), or ``timeout`` seconds
        (False)."""
        if self.last > seq:
            return True
        loop = asyncio.get_running_loop()
        arrived: asyncio.Future[bool] = loop.create_future()
        timer = loop.call_later(timeout, lambda: arrived.done() or arrived.set_result(False))
        self._waiting.append(arrived)
        try:
            return await arrived
        finally:
            timer.cancel()


class HttpRequest:
    """One request's line and headers; its body is read from ``reader`` by body_chunks."""

    __slots__ = ("method", "path", "segments", "query", "headers", "reader", "peer")

    def __init__(self, method: str, target: str, headers: list[tuple[str, str]],
                 reader: asyncio.StreamReader, peer: str) -> None:
        self.method = method
        self.path, _, query = target.partition("?")
        try:
            # Each segment decoded on its own: an encoded "/" stays inside its segment.
            self.segments = [urllib.parse.unquote(part, errors="strict")
                             for part in self.path.split("/")[1:]]
            self.query = {name: values[-1] for name, values in urllib.parse.parse_qs(
                query, keep_blank_values=True, errors="strict").items()}
        except UnicodeDecodeError:
            raise HttpError(400, "the URL is not UTF-8 once percent-decoded") from None
        self.headers = headers
        self.reader = reader
        self.peer = peer

    def header(self, name: str) -> Optional[str]:
        """The value of header ``name`` (lower case); HttpError 400 if it is given twice."""
        values = [value for key, value in self.headers if key == name]
        if len(values) > 1:
            raise HttpError(400, "%d %s headers; a request may carry one" % (len(values), name))
        return values[0] if values else None

    def number(self, name: str, low: float, high: float,
               default: Optional[float] = None) -> Optional[float]:
        """Query parameter ``name`` as a number from ``low`` to ``high``; HttpError 400 if it is not
        one."""
        text = self.query.get(name)
        if text is None:
            return default
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not low <= value <= high:
            raise HttpError(400, "?%s=%s: expected a number from %g to %g"
                            % (name, printable(text, 40), low, high))
        return value


async def read_request(reader: asyncio.StreamReader, peer: str) -> Optional[HttpRequest]:
    """The next request's line and headers, or None if the client closed without sending one."""
    line = await reader.readline()
    if not line.strip():
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
        raise HttpError(400, "malformed request line %s" % _show(line.decode("latin-1").strip()))
    headers: list[tuple[str, str]] = []
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n"):
            break
        if not line.endswith(b"\n"):
            raise HttpError(400, "the request ended inside its headers")
        if len(headers) == MAX_HTTP_HEADERS:
            raise HttpError(431, "more than %d headers" % MAX_HTTP_HEADERS)
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon or not name or name != name.strip():
            raise HttpError(400, "malformed header line %s" % _show(line.decode("latin-1").strip()))
        headers.append((name.lower(), value.strip()))
    return HttpRequest(parts[0], parts[1], headers, reader, peer)


def body_length(request: HttpRequest, limit: int) -> Optional[int]:
    """How the request's body is framed: its Content-Length (0 without one), or None for chunked;
    HttpError for a framing this server refuses, or 413 for a length over ``limit``."""
    encoding, length = request.header("transfer-encoding"), request.header("content-length")
    if encoding is not None and length is not None:
        raise HttpError(400, "both Transfer-Encoding and Content-Length")
    if encoding is not None and encoding.lower() != "chunked":
        raise HttpError(501, "Transfer-Encoding %s is not supported (chunked is)"
                        % printable(encoding, 40))
    if encoding is not None:
        return None
    if length is not None and (not length.isdigit() or not length.isascii()):
        raise HttpError(400, "Content-Length %s is not a number" % printable(length, 40))
    if length is not None and int(length) > limit:
        raise HttpError(413, "the body is %s bytes; at most %d are accepted" % (length, limit))
    return int(length or 0)


async def read_body_bytes(reader: asyncio.StreamReader, count: int) -> bytes:
    """Exactly ``count`` bytes of a request body; HttpError when it ends early or stalls."""
    try:
        return await asyncio.wait_for(reader.readexactly(count), HTTP_BODY_TIMEOUT)
    except asyncio.IncompleteReadError:
        raise HttpError(400, "the body ended early") from None
    except asyncio.TimeoutError:
        raise HttpError(408, "the body stalled for %g s" % HTTP_BODY_TIMEOUT) from None


async def body_chunks(request: HttpRequest, limit: int,
                      writer: Optional[asyncio.StreamWriter] = None,
                      reserve: Optional[Callable[[int], None]] = None) -> "AsyncIterator[bytes]":
    """The request body in pieces, by Content-Length or chunked; HttpError 413 past ``limit``.

    ``reserve`` is given each count of bytes before they are read (a
    Content-Length all at once, a chunked body chunk by chunk) and refuses
    them by raising HttpError.  With ``writer``, a client that asked to be
    told (Expect: 100-continue, as curl does for large uploads) is told to
    go ahead once its length has been accepted.
    """
    length = body_length(request, limit)
    if length and reserve is not None:
        reserve(length)
    if writer is not None and (request.header("expect") or "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if length is None:
        async for piece in chunked_body(request.reader, limit, reserve):
            yield piece
        return
    while length:
        piece = await read_body_bytes(request.reader, min(length, UPLOAD_CHUNK))
        length -= len(piece)
        yield piece


async def chunked_body(reader: asyncio.StreamReader, limit: int,
                       reserve: Optional[Callable[[int], None]]) -> "AsyncIterator[bytes]":
    """A chunked body's bytes (body_chunks); each chunk is checked against ``limit`` and given to
    ``reserve`` before it is read."""
    total = 0
    while True:
        size_line = await asyncio.wait_for(reader.readline(), HTTP_BODY_TIMEOUT)
        try:
            size = int(size_line.split(b";")[0].strip(), 16)
        except ValueError:
            size = -1
        if size < 0:
            raise HttpError(400, "malformed chunk size")
        if size == 0:
            while (await asyncio.wait_for(reader.readline(), HTTP_BODY_TIMEOUT)) not in (
                    b"\r\n", b"\n", b""):
                pass  # trailers
            return
        total += size
        if total > limit:
            raise HttpError(413, "the body passed %d bytes, the most accepted" % limit)
        if reserve is not None:
            reserve(size)
        while size:
            piece = await read_body_bytes(reader, min(size, UPLOAD_CHUNK))
            size -= len(piece)
            yield piece
        await read_body_bytes(reader, 2)  # the CRLF after the chunk


async def read_json_body(request: HttpRequest) -> Any:
    """The request's JSON body (None when it is empty); HttpError 400 when it is not JSON."""
    body = b"".join([piece async for piece in body_chunks(request, MAX_JSON_BODY)])
    if not body.strip():
        return None
    try:
        return loads_strict(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise HttpError(400, "the body is not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise HttpError(400, "the body is not JSON: %s" % exc) from None


def http_head(status: int, content_type: Optional[str], length: Optional[int],
              headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A response's status line and headers; every response closes its connection."""
    lines = ["HTTP/1.1 %d %s" % (status, http.HTTPStatus(status).phrase), "Connection: close",
             "Cache-Control: no-store", "X-Content-Type-Options: nosniff"]
    if content_type is not None:
        lines.append("Content-Type: " + content_type)
    if length is not None:
        lines.append("Content-Length: %d" % length)
    lines.extend("%s: %s" % header for header in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def json_response(status: int, value: Any, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    body = (api_json(value) + "\n").encode("ascii")
    return http_head(status, "application/json", len(body), headers) + body


def head_only(request: Optional[HttpRequest], response: bytes) -> bytes:
    """A response as sent: its head alone for a HEAD request (RFC 9110 9.3.2), whole for others."""
    if request is None or request.method != "HEAD":
        return response
    return response[:response.index(b"\r\n\r\n") + 4]


async def drop_unread_body(request: Optional[HttpRequest], writer: asyncio.StreamWriter) -> None:
    """After a refusal of a request with a body: read and drop what the client still sends of it
    (at most HTTP_LINGER_BYTES, for HTTP_LINGER_SECONDS), so that closing with its bytes unread
    does not reset the connection before the client has read the answer."""
    if request is None or not any(name in ("content-length", "transfer-encoding")
                                  for name, _ in request.headers):
        return
    loop = asyncio.get_running_loop()
    deadline, left = loop.time() + HTTP_LINGER_SECONDS, HTTP_LINGER_BYTES
    try:
        await asyncio.wait_for(writer.drain(), HTTP_LINGER_SECONDS)
        writer.write_eof()
        while left > 0:
            piece = await asyncio.wait_for(request.reader.read(min(left, UPLOAD_CHUNK)),
                                           max(0.0, deadline - loop.time()))
            if not piece:
                return
            left -= len(piece)
    except (OSError, asyncio.TimeoutError, ValueError):
        pass  # gone, slow, or more than we read: the connection is closed as it is


class HttpAccess:
    """Who may use the HTTP port: the Host and Origin rules against other web pages, and
    --http-token.

    A request must name this server in its Host (against DNS rebinding);
    one that changes anything must send JSON (file uploads excepted) and,
    if it has an Origin, this server's own (against other pages' forms and
    scripts).  With a token, every request needs it as a bearer token or as
    the cookie that ``/?token=TOKEN`` sets, except file requests under the
    per-run ``file_secret`` path segment: chargers cannot send a token.
    """

    CHANGES = ("POST", "PUT", "DELETE", "PATCH")

    def __init__(self, host: str, port: int, token: Optional[str]) -> None:
        self.token = token
        self.cookie = "ocpp_mock_token_%d" % port  # cookies ignore ports: one name per server
        self.file_secret = (base64.urlsafe_b64encode(os.urandom(18)).decode("ascii") if token
                            else None)
        self.wildcard = host in ("0.0.0.0", "::", "")
        names = {"localhost", host.lower().strip("[]")}
        if self.wildcard:
            names.update({socket.gethostname().lower(), socket.gethostname().lower() + ".local",
                          socket.getfqdn().lower()})
        self.host_names = names

    def check(self, request: HttpRequest) -> Optional[bytes]:
        """Raise HttpError 401 or 403 for a request that may not go ahead; the response to send
        instead of handling it (the token's cookie and redirect), or None to handle it."""
        self._check_host(request)
        if request.method in self.CHANGES:
            self._check_origin(request)
        if self.token is None:
            return None
        if request.segments[:2] == ["files", self.file_secret]:
            return None
        if request.segments == [""] and "token" in request.query:
            if not hmac.compare_digest(request.query["token"].encode("utf-8"),
                                       self.token.encode("utf-8")):
                raise HttpError(401, "wrong token")
            cookie = "%s=%s; HttpOnly; SameSite=Strict; Path=/" % (self.cookie,
                                                                   urllib.parse.quote(self.token))
            return http_head(303, None, 0, (("Set-Cookie", cookie), ("Location", "/")))
        if not self._has_token(request):
            raise HttpError(401,
                            "this server needs its --http-token: send Authorization: Bearer "
                            "TOKEN, or open "
                            "/?token=TOKEN in the browser",
                            (("WWW-Authenticate", 'Bearer realm="ocpp-mock"'),))
        return None

    def _check_host(self, request: HttpRequest) -> None:
        host = request.header("host")
        if host is None:
            raise HttpError(403, "no Host header")
        name = host.lower()
        name = (name[1:name.index("]")] if name.startswith("[") and "]" in name
                else name.rpartition(":")[0] or name)
        if name in self.host_names:
            return
        if self.wildcard:
            try:
                ipaddress.ip_address(name)
                return
            except ValueError:
                pass
        raise HttpError(403,
                        "Host %s is not this server's address (a page of another site "
                        "may not use it)"
                        % _show(host))

    def _check_origin(self, request: HttpRequest) -> None:
        origin = request.header("origin")
        if origin is not None and origin != "http://" + (request.header("host") or ""):
            raise HttpError(403, "Origin %s is not this server" % _show(origin))
        media_type = (request.header("content-type") or "").split(";")[0].strip().lower()
        if request.segments[:1] != ["files"] and media_type != "application/json":
            raise HttpError(403,
                            "a request that changes something must send Content-Type: "
                            "application/json")

    def _has_token(self, request: HttpRequest) -> bool:
        wanted = (self.token or "").encode("utf-8")
        scheme, _, given = (request.header("authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("utf-8"),
                                                              wanted):
            return True
        for header in [value for key, value in request.headers if key == "cookie"]:
            for pair in header.split(";"):
                name, _, value = pair.strip().partition("=")
                if (name == self.cookie
                    and hmac.compare_digest(urllib.parse.unquote(value).encode("utf-8"), wanted)):
                    return True
        return False


# ---- file server

FILE_NAME_BYTES = 255  # bytes of one file or folder name: the limit of common file systems
CHARGER_FOLDER_CHARACTERS = 64  # the longest charge point id that is its own folder's name
CHARGER_FOLDER_DIGEST = 12  # hex digits of SHA-256 that make an escaped folder name unique
CHARGER_FOLDERS_REMEMBERED = 10000  # ids whose folder a run remembers; past it, new ids are escaped
PART_FILE_PREFIX = ".upload-"  # an upload arriving: a hidden file in the files folder
_SAFE_CHARGER_FOLDER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,%d}[A-Za-z0-9_-])?\Z"
                                  % (CHARGER_FOLDER_CHARACTERS - 2))
_DEVICE_NAMES = re.compile(r"(?:con|prn|aux|nul|com\d|lpt\d)(?:\..*)?\Z", re.IGNORECASE)
_FOLDER_ERRORS = {errno.EISDIR: 409, errno.ENOTDIR: 409, errno.EEXIST: 409,
                  errno.ENAMETOOLONG: 400, errno.ENOSPC: 507}


def safe_file_segment(name: str) -> bool:
    """A file or folder name the file server stores: no separators, no leading dot, no control
    characters, at most FILE_NAME_BYTES bytes."""
    return (0 < len(name) and len(name.encode("utf-8", "surrogatepass")) <= FILE_NAME_BYTES
            and not name.startswith(".") and name.isprintable()
            and not any(mark in name for mark in "/\\:\0"))


def escaped_charger_folder(charger_id: str) -> str:
    """The folder name of a charge point id that cannot be one as it is: its letters, digits and
    ``._-`` (any other character as ``_``, no leading dot), cut short, then ``~`` and a digest of
    the exact id: no safe id has a ``~``, and no two ids share a digest, whatever their case."""
    digest = hashlib.sha256(charger_id.encode("utf-8", "surrogatepass")).hexdigest()
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", charger_id[:CHARGER_FOLDER_CHARACTERS - 1
                                                           - CHARGER_FOLDER_DIGEST])
    return "%s~%s" % (readable.lstrip("."), digest[:CHARGER_FOLDER_DIGEST])


class QuotaHold:
    """The room one upload in flight holds in the files folder's quota: taken before its bytes are
    read, given back when it fails, turned into stored bytes when it is kept."""

    __slots__ = ("store", "held")

    def __init__(self, store: "FileStore") -> None:
        self.store, self.held = store, 0

    def take(self, count: int) -> None:
        """Hold ``count`` more bytes; HttpError 507 if the quota has no room for them."""
        store = self.store
        if store.stored + store.reserved + count > store.quota:
            raise HttpError(507, "the files folder is at its quota (--files-quota %d bytes: %d "
                            "stored, %d held by uploads arriving, %d more asked)"
                            % (store.quota, store.stored, store.reserved, count))
        store.reserved += count
        self.held += count

    def release(self, kept: int = 0) -> None:
        """Give the room back; ``kept`` bytes were stored."""
        self.store.reserved -= self.held
        self.store.stored += kept
        self.held = 0


class FileStore:
    """--files-dir: what chargers upload (GetDiagnostics, GetLog) and fetch (UpdateFirmware).

    Names are checked segment by segment and must resolve inside the folder;
    an upload streams to a hidden part file, is capped at ``max_upload``
    bytes and by the folder's ``quota``, and is moved into place only
    when it is complete.  The quota counts the files stored plus the bytes
    held by uploads in flight (QuotaHold), so parallel uploads cannot pass it.
    """

    def __init__(self, root: str, max_upload: int, quota: int, temporary: bool) -> None:
        self.root = os.path.realpath(root)
        self.max_upload = max_upload
        self.quota = quota
        self.temporary = temporary
        self.stored = 0  # bytes in the folder: counted when an upload starts, plus those kept since
        self.reserved = 0  # bytes held by uploads in flight
        self._folders: dict[str, str] = {}  # charge point id -> its folder's name
        self._owners: dict[str, str] = {}  # a folder's name, lower case -> the id it is for

    def charger_folder(self, charger_id: str) -> str:
        """The name of a charge point's folder under the files folder: the one mapping from id to
        folder, for the URLs the server gives and the listings that show them.

        A safe id (letters, digits, ``._-``, at most CHARGER_FOLDER_CHARACTERS, not a Windows
        device name) is its own folder's name, unless another id of this run, or a folder already
        there, has that name in another case; any other id gets escaped_charger_folder.
        """
        folder = self._folders.get(charger_id)
        if folder is not None:
            return folder
        folder = charger_id
        if (not _SAFE_CHARGER_FOLDER.match(folder) or _DEVICE_NAMES.match(folder)
                or len(self._folders) >= CHARGER_FOLDERS_REMEMBERED or self._case_taken(folder)):
            return self._remember(charger_id, escaped_charger_folder(charger_id))
        return self._remember(charger_id, folder)

    def _case_taken(self, name: str) -> bool:
        """Whether ``name`` cannot be its id's folder: another id has it in another case, or the
        files folder holds it as a file or in another case."""
        owner = self._owners.get(name.lower())
        if owner is not None:
            return owner != name
        try:
            entries = os.listdir(self.root)
        except OSError:
            return False
        if name in entries and not os.path.isdir(os.path.join(self.root, name)):
            return True
        return any(entry.lower() == name.lower() and entry != name for entry in entries)

    def _remember(self, charger_id: str, folder: str) -> str:
        if len(self._folders) < CHARGER_FOLDERS_REMEMBERED:
            self._folders[charger_id] = folder
            self._owners[folder.lower()] = charger_id
        return folder

    def charger_of_file(self, segments: list[str], known: "dict[str, Any]") -> Optional[str]:
        """The charge point a file belongs to: the one whose folder is its first segment, if the
        run gave that folder to one, or if it is the own folder of a ``known`` id."""
        if len(segments) < 2:
            return None
        owner = self._owners.get(segments[0].lower())
        if owner is not None:
            return owner if self._folders.get(owner) == segments[0] else None
        if segments[0] in known and self.charger_folder(segments[0]) == segments[0]:
            return segments[0]
        return None

    def path(self, segments: list[str]) -> str:
        """The file path of a name given as segments; HttpError 400 for a name outside the
        folder."""
        bad = [segment for segment in segments if not safe_file_segment(segment)]
        if bad or not segments or len(segments) > 8:
            raise HttpError(400, "file name %s refused: each part must be a plain name of at most "
                            "%d bytes (no '..', separators, leading dots or control characters)"
                            % (_show("/".join(segments)), FILE_NAME_BYTES))
        path = os.path.realpath(os.path.join(self.root, *segments))
        if os.path.commonpath([path, self.root]) != self.root:
            raise HttpError(400, "file name %s leads outside the files folder"
                            % _show("/".join(segments)))
        return path

    def upload_target(self, segments: list[str]) -> str:
        """The path an upload to ``segments`` is stored at (a last segment of "" is checked as a
        folder only): HttpError 400 for a bad name, 409 when a folder on the way is a file or the
        name is a folder's."""
        path = self.path(segments[:-1] + [segments[-1] or "upload"])
        folder = self.root
        for segment in segments[:-1]:
            folder = os.path.join(folder, segment)
            if os.path.lexists(folder) and not os.path.isdir(folder):
                raise HttpError(409, "%s is a file, not a folder" % _show(os.path.relpath(
                    folder, self.root).replace(os.sep, "/")))
        if segments[-1] and os.path.isdir(path):
            raise HttpError(409, "%s is a folder: upload to a file in it (or to %s/, which keeps "
                            "the sender's file name)"
                            % (_show("/".join(segments)), "/".join(segments)))
        return path

    def used(self) -> int:
        """The bytes the stored files hold (uploads still arriving are QuotaHold's)."""
        total = 0
        for folder, _, names in os.walk(self.root):
            for name in names:
                if folder == self.root and name.startswith(PART_FILE_PREFIX):
                    continue
                try:
                    total += os.path.getsize(os.path.join(folder, name))
                except OSError:
                    pass
        return total

    def listing(self, segments: list[str]) -> list[dict]:
        """The stored files under a folder (every one for no segments), by name, size and time."""
        top = self.path(segments) if segments else self.root
        files = []
        for folder, folders, names in os.walk(top):
            folders[:] = sorted(name for name in folders if not name.startswith("."))
            for name in sorted(names):
                if name.startswith("."):
                    continue  # an upload still arriving
                path = os.path.join(folder, name)
                try:
                    info = os.stat(path)
                except OSError:
                    continue
                files.append({"name": os.path.relpath(path, self.root).replace(os.sep, "/"),
                              "size": info.st_size, "modified": UTC_CLOCK.at(info.st_mtime)})
        return files

    async def receive(self, request: HttpRequest, writer: asyncio.StreamWriter,
                      segments: list[str]) -> str:
        """Store an upload (raw body, or the first file of a multipart/form-data body); its stored
        name.

        ``segments`` ending in "" name a folder: the file keeps the name the
        sender gave it (multipart filename or Content-Disposition).  The name
        and the folders on the way are checked before a byte is read; the
        quota is held as the bytes are announced (QuotaHold).
        """
        folder, name = segments[:-1], segments[-1]
        self.upload_target(segments)
        self.stored = self.used()
        hold = QuotaHold(self)
        try:
            given, body = await self._upload_body(request, writer, hold.take)
            target = self.upload_target(folder + [name or sender_file_name(given)])
            size = await self._write(body, target)
        except BaseException:
            hold.release()
            raise
        hold.release(kept=size)
        return os.path.relpath(target, self.root).replace(os.sep, "/")

    async def _upload_body(self, request: HttpRequest, writer: asyncio.StreamWriter,
                           reserve: Callable[[int], None]) -> tuple[str, "AsyncIterator[bytes]"]:
        """The name the sender gave its file ("" if none), and the file's bytes."""
        media_type, parameters = parse_media_type(request.header("content-type") or "")
        chunks = body_chunks(request, self.max_upload, writer, reserve)
        if media_type != "multipart/form-data":
            disposition = parse_media_type(request.header("content-disposition") or "")[1]
            return disposition.get("filename", ""), chunks
        if "boundary" not in parameters:
            raise HttpError(400, "multipart/form-data without a boundary")
        parts = multipart_file(chunks, parameters["boundary"].encode("latin-1"))
        return await parts.__anext__(), parts  # first the file part's own name, then its bytes

    async def _write(self, body: "AsyncIterator[bytes]", target: str) -> int:
        """Stream ``body`` to a part file, then move it to ``target`` (its folders made only now,
        so a refused upload leaves none); its size.  A file system refusal is an HttpError."""
        part = os.path.join(self.root, "%s%s.part" % (PART_FILE_PREFIX, uuid.uuid4().hex))
        loop = asyncio.get_running_loop()
        size = 0
        try:
            with open(part, "wb") as stored:
                async for piece in body:
                    size += len(piece)
                    await loop.run_in_executor(None, stored.write, piece)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(part, target)
        except OSError as exc:
            name = os.path.relpath(target, self.root).replace(os.sep, "/")
            raise HttpError(_FOLDER_ERRORS.get(exc.errno or 0, 500), "cannot store %s: %s" % (
                _show(name), exc.strerror or type(exc).__name__)) from None
        finally:
            if os.path.exists(part):
                os.unlink(part)
        return size


def newest_upload(files: FileStore, charger_id: str) -> str:
    """The newest file in a charge point's folder of the file server, with its size and path, or
    that there is none."""
    try:
        listed = files.listing([files.charger_folder(charger_id)])
    except HttpError:
        listed = []
    if not listed:
        return "no file in its folder of the file server"
    newest = max(listed, key=lambda entry: entry["modified"])
    return "%s (%d bytes), stored as %s" % (printable(newest["name"], 200), newest["size"],
                                            os.path.join(files.root, newest["name"]))


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """A Content-Type or Content-Disposition value: its first word (lower case) and its
    parameters."""
    first, _, rest = value.partition(";")
    parameters = {}
    for match in re.finditer(r'\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)\s*;?', rest):
        text = match.group(2).strip()
        if text.startswith('"'):
            text = re.sub(r"\\(.)", r"\1", text[1:-1])
        parameters[match.group(1).lower()] = text
    return first.strip().lower(), parameters


def sender_file_name(given: str) -> str:
    """The name a charger gave its upload, as a safe single name (its folders dropped, at most 200
    bytes)."""
    name = re.split(r"[/\\]", given)[-1]
    name = "".join(character if character.isprintable() and character not in ':\0"' else "_"
                   for character in name)
    name = name.lstrip(".").encode("utf-8", "surrogatepass")[:200].decode("utf-8", "ignore")
    return name or "upload-%s.bin" % time.strftime("%Y%m%d-%H%M%S")


class MultipartScanner:
    """A multipart/form-data body read a piece at a time, keeping back only as many bytes as the
    delimiter is long, so a file of any size never sits in memory."""

    def __init__(self, chunks: "AsyncIterator[bytes]", boundary: bytes) -> None:
        self.delimiter = b"\r\n--" + boundary
        self.buffer = b"\r\n"  # the first delimiter has no CRLF before it
        self.pieces = chunks.__aiter__()

    async def more(self) -> bool:
        """Add the next piece of the body to the buffer; False at its end."""
        try:
            self.buffer += await self.pieces.__anext__()
            return True
        except StopAsyncIteration:
            return False

    async def next_part(self) -> Optional[str]:
        """Skip to the next part and past its headers: its filename, or None if it is no file."""
        delimiter = self.delimiter
        while delimiter not in self.buffer:
            if len(self.buffer) > len(delimiter):
                self.buffer = self.buffer[-len(delimiter):]
            if not await self.more():
                raise HttpError(400, "multipart body without a file part")
        self.buffer = self.buffer[self.buffer.index(delimiter) + len(delimiter):]
        while b"\r\n\r\n" not in self.buffer:
            if self.buffer.startswith(b"--") or len(self.buffer) > 16384 or not await self.more():
                raise HttpError(400, "multipart body without a file part")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        disposition = ""
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-disposition":
                disposition = value
        return parse_media_type(disposition)[1].get("filename")

    async def file_bytes(self) -> "AsyncIterator[bytes]":
        """The current part's bytes, up to the next delimiter; the rest of the body is dropped."""
        keep = len(self.delimiter) - 1
        while True:
            index = self.buffer.find(self.delimiter)
            if index >= 0:
                if index:
                    yield self.buffer[:index]
                async for _ in self.pieces:
                    pass
                return
            if len(self.buffer) > keep:
                yield self.buffer[:-keep]
                self.buffer = self.buffer[-keep:]
            if not await self.more():
                raise HttpError(400, "the multipart body ended inside its file")


async def multipart_file(chunks: "AsyncIterator[bytes]", boundary: bytes) -> "AsyncIterator[Any]":
    """The first file of a multipart/form-data body, streamed: its filename, then its bytes."""
    scanner = MultipartScanner(chunks, boundary)
    filename = await scanner.next_part()
    while filename is None:
        filename = await scanner.next_part()
    yield filename
    async for piece in scanner.file_bytes():
        yield piece


def file_location(system: "CentralSystem", session: Optional["ChargerSession"],
                  name: str = "") -> Optional[str]:
    """The URL of the file server a charger fetches or uploads ``name`` at, under
    /files/<its folder>/ (FileStore.charger_folder); None when the HTTP port is off.  Its address
    is one the charger can reach."""
    api = system.http
    if api is None or api.port is None:
        return None
    host = api.host
    if host in ("0.0.0.0", "::", "") and session is not None:
        local = session.websocket.local_address
        host = local[0] if local else DEFAULT_HOST  # the address the charger itself connected to
    elif is_loopback(host) and session is not None:
        remote = session.websocket.remote_address
        if remote and not is_loopback(remote[0]):
            session.warn_once(("file-server-loopback",),
                              "the file server listens on %s only, which %s at %s cannot "
                              "reach: start with --http-host 0.0.0.0 --http-token TOKEN, or "
                              "give location=" % (
                                  host, printable(session.charger_id), remote[0]))
    host = "[%s]" % host if ":" in host else host
    secret = api.access.file_secret + "/" if api.access.file_secret else ""
    charger = ""
    if session is not None:
        charger = urllib.parse.quote(api.files.charger_folder(session.charger_id), safe="") + "/"
    return "http://%s:%d/files/%s%s%s" % (host, api.port, secret, charger, urllib.parse.quote(name))


# ---- the API


def transaction_record(transaction: Transaction) -> dict:
    """What GET /api/chargers says of an open transaction; evseId only for one on an EVSE."""
    record = {"transactionId": transaction.transaction_id,
              "connectorId": transaction.connector_id, "idTag": transaction.id_tag,
              "meterStart": transaction.meter_start}
    if transaction.evse_id is not None:
        record["evseId"] = transaction.evse_id
    return record


def charger_record(system: "CentralSystem", state: ChargerState) -> dict:
    """What GET /api/chargers says of one charge point."""
    session = system.sessions.get(state.charger_id)
    outstanding = session.queue.outstanding if session is not None else None
    return {
        "id": state.charger_id,
        "connected": state.connected,
        "peer": session.peer if session is not None else None,
        "version": state.version,
        "dialect": state.dialect,
        "boot": state.boot_info,
        "bootStatus": state.boot_status,
        "connectors": dict(state.connector_statuses()),
        "transactions": [transaction_record(tx) for tx in state.transactions.values()],
        "lastMeterValues": state.last_meter_values,
        "specWarnings": state.spec_warnings,
        "summary": dict(charger_verdict(state), lastTransaction=state.tally.last),
        "authorizationKeyRotated": state.key_rotated,
        "outstandingCall": outstanding.action if outstanding is not None else None,
        "filesFolder": system.http.files.charger_folder(state.charger_id) if system.http else None,
        "schedules": list(state.smart_charging.schedules.values())
        if state.smart_charging is not None else [],
    }


def api_payload(system: "CentralSystem", session: "ChargerSession", action: str, body: Any) -> dict:
    """An API CALL's payload: ``body`` merged field by field over the console's defaults, then
    checked.

    The body's nested objects are merged into the defaults' (a list or any
    other value replaces); PayloadRefused lists every schema problem.
    """
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise CommandError("the body must be a JSON object of %s fields (or empty for the defaults)"
                           % action)

    def leaves(value: dict, path: list[str]) -> Iterator[tuple[list[str], Any]]:
        for key, item in value.items():
            if isinstance(item, dict) and item:
                yield from leaves(item, path + [key])
            else:
                yield path + [key], item
    return build_payload(system, session, Command("", "call", session.charger_id, action,
                                                  overrides=list(leaves(body, []))))


def problem_records(problems: list[Problem]) -> list[dict]:
    return [{"field": problem.path, "problem": str(problem), "code": problem.code}
            for problem in problems]


def call_record(call: PendingCall, outcome: CallOutcome) -> dict:
    """A finished CALL as POST /api/command reports it: the request, then its result or
    CALLERROR."""
    record: dict[str, Any] = {"action": call.action, "request": call.payload,
                              "outcome": outcome.kind}
    if outcome.kind == "result":
        record["result"] = outcome.payload
    elif outcome.kind == "error":
        record["error"] = {"code": outcome.error_code, "description": outcome.error_description,
                           "details": outcome.payload}
    else:
        record["description"] = outcome.error_description or "no reply within --call-timeout"
    return record


class EventStreams:
    """GET /api/events: the Server-Sent Events streams, all reading one EventHistory (docs/api.md).

    A reader is woken by the next event, gathers what else arrives within
    about EVENT_STREAM_PACE, and sends it in writes of at most about
    EVENT_STREAM_WRITE_BYTES: its cost grows with time, not with the number
    of events.  One that does not keep up holds up nobody: it skips ahead,
    told how many it missed.  What a stream may hold unsent is bounded (a
    small socket send buffer and write buffer), and a stream whose reader
    takes nothing for EVENT_STREAM_DRAIN_TIMEOUT seconds is closed.  At most
    ``limit`` are open at once; more are refused with 503.
    """

    def __init__(self, system: "CentralSystem", limit: int) -> None:
        self.system = system
        self.limit = limit
        self.history = EventHistory()
        # Set until the last stream's resume time ends.
        self._keep_every_event: Optional[asyncio.TimerHandle] = None
        self.stalled = BurstReport(lambda count, seconds: system.log(
            "warn", None, "HTTP: closed %d event stream%s in %g s: the reader took nothing for %g s"
            % (count, "" if count == 1 else "s", seconds, EVENT_STREAM_DRAIN_TIMEOUT)))
        system.bus.subscribe(self.history.on_event, *EventHistory.ALWAYS,
                             receiver=self.history.on_frames)

    async def open(self, request: HttpRequest, writer: asyncio.StreamWriter) -> None:
        """GET /api/events: live events; Last-Event-ID (or ?lastEventId=) resumes after that event.

        Each stream starts with a ``hello`` event naming the run; its
        ``reset`` is true when the id given was another run's, and the
        stream then starts with the first event this run holds.
        """
        charger = request.query.get("charger")
        given = request.header("last-event-id") or request.query.get("lastEventId")
        sent, reset = self.resume_point(given)
        if self.history.readers >= self.limit:
            raise HttpError(503, "the HTTP port is busy: %d event streams are open, the most "
                            "it serves (--http-max-connections); retry after %d s"
                            % (self.limit, HTTP_BUSY_RETRY_AFTER), HTTP_BUSY_HEADERS,
                            retryAfter=HTTP_BUSY_RETRY_AFTER)
        self._bound_unsent(writer)
        head = http_head(200, "text/event-stream; charset=utf-8", None,
                         (("X-Accel-Buffering", "no"),))
        writer.write(head + b"retry: 1000\n\n" + self.hello(sent, reset))
        self.reader_opened()
        streaming = asyncio.ensure_future(self._stream(writer, sent, charger))
        # The client sends nothing after its request: end of input (or anything) means it has gone,
        # even while the stream waits for an event.
        gone = asyncio.ensure_future(request.reader.read(1024))
        for task in (streaming, gone):  # their errors are seen, even when this handler is cut short
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
        try:
            await asyncio.wait([streaming, gone], return_when=asyncio.FIRST_COMPLETED)
        finally:
            streaming.cancel()
            gone.cancel()
            self.reader_closed()
        if streaming.done() and not streaming.cancelled() and streaming.exception() is not None:
            raise streaming.exception()  # type: ignore[misc]

    def resume_point(self, text: Optional[str]) -> tuple[int, bool]:
        """The number of the event a stream starts after, and whether it starts afresh (a reset).

        ``text`` is ``<run>:<number>``, or a bare number (read as this
        run's).  An id of another run, or a number this run has not reached,
        starts afresh: from the first event held.
        """
        if not text:
            return self.history.last, False
        run, colon, number = text.rpartition(":")
        if not number.isdigit() or not number.isascii() or len(number) > 18 or (colon and not run):
            raise HttpError(400, "Last-Event-ID %s is not an event id (<run>:<number>)"
                            % _show(text))
        if (colon and run != self.history.run) or int(number) > self.system.bus.sequence:
            return 0, True
        return int(number), False

    def hello(self, sent: int, reset: bool) -> bytes:
        """The stream's first event: ``event: hello``, its id the place the stream starts from."""
        run = self.history.run
        return ('event: hello\nid: %s:%d\ndata: '
                '{"type":"hello","run":"%s","apiVersion":%d,"reset":%s}'
                '\n\n' % (run, sent, run, API_VERSION, "true" if reset
                          else "false")).encode("ascii")

    @staticmethod
    def _bound_unsent(writer: asyncio.StreamWriter) -> None:
        """Keep what the stream may hold unsent small: its socket's send and write buffers."""
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, EVENT_STREAM_SEND_BUFFER)
            except OSError:
                pass
        writer.transport.set_write_buffer_limits(high=EVENT_STREAM_WRITE_BYTES)

    def reader_opened(self) -> None:
        """Keep every event while a stream is open (see EventHistory)."""
        history = self.history
        if self._keep_every_event is not None:
            self._keep_every_event.cancel()
            self._keep_every_event = None
        elif history.readers == 0:
            bus = self.system.bus
            bus.subscribe(history.on_event, *[name for name in EVENT_FIELDS
                                              if name not in EventHistory.ALWAYS])
        history.readers += 1

    def reader_closed(self) -> None:
        history = self.history
        history.readers -= 1
        if history.readers == 0:
            def keep_transcript_events_only() -> None:
                self._keep_every_event = None
                self.system.bus.unsubscribe(history.on_event)
                self.system.bus.subscribe(history.on_event, *EventHistory.ALWAYS,
                                          receiver=history.on_frames)
            self._keep_every_event = asyncio.get_running_loop().call_later(
                EVENT_RESUME_SECONDS, keep_transcript_events_only)

    async def _stream(self, writer: asyncio.StreamWriter, sent: int, charger: Optional[str]
                      ) -> None:
        history, owed = self.history, 0  # owed: events missed and not yet reported
        while True:
            events, missed = history.after(sent)
            owed += missed
            if not events:
                if await history.wait(sent, EVENT_STREAM_KEEPALIVE):
                    # Each reader at its own pace, so that twenty do not all write in the same turn.
                    await asyncio.sleep(EVENT_STREAM_PACE * random.uniform(0.5, 1.5))
                else:
                    writer.write(b": keepalive\n\n")
                await self._drain(writer)
                continue
            messages, sent, owed = self._batch(events, charger, owed)
            if messages:
                writer.write(b"".join(messages))
                await self._drain(writer)  # a slow reader waits here, and nobody else does

    def _batch(self, events: list[StoredEvent], charger: Optional[str], owed: int
               ) -> tuple[list[bytes], int, int]:
        """The messages of the next write (about EVENT_STREAM_WRITE_BYTES at most), the number of
        the last event they cover, and the missed events still to report."""
        run, messages, size = self.history.run, [], 0
        for event in events:
            if charger is None or event.charger == charger:
                if owed:
                    message = event.sse_message(run, owed)
                else:
                    message = event.sse or event.sse_message(run)
                owed = 0
                messages.append(message)
                size += len(message)
                if size >= EVENT_STREAM_WRITE_BYTES:
                    return messages, event.seq, owed
        return messages, events[-1].seq, owed

    async def _drain(self, writer: asyncio.StreamWriter) -> None:
        """Wait for the reader to take what is written; one that takes nothing for
        EVENT_STREAM_DRAIN_TIMEOUT seconds has its stream cut (ConnectionAbortedError)."""
        try:
            await asyncio.wait_for(writer.drain(), EVENT_STREAM_DRAIN_TIMEOUT)
        except asyncio.TimeoutError:
            self.stalled.add()
            writer.transport.abort()
            raise ConnectionAbortedError(
                "the reader took nothing for %g s" % EVENT_STREAM_DRAIN_TIMEOUT) from None


class HttpPort:
    """The HTTP port's connections: one request each, answered by a handler of ROUTES (HttpApi's).

    At most ``max_connections`` are served at once; one over that is
    answered 503 with Retry-After before its request is read, and cut
    unanswered when HTTP_BUSY_ANSWERS such answers are under way already,
    so that the HTTP side never takes the descriptors the chargers need.
    """

    # (path pattern, {method: handler}): "*" is one segment, "**" the rest of the path; a handler
    # "owner.name" is a method of the attribute ``owner``.
    ROUTES: tuple[tuple[tuple[str, ...], dict[str, str]], ...] = ()

    def __init__(self, system: "CentralSystem", host: str, token: Optional[str],
                 max_connections: int) -> None:
        self.system = system
        self.out = system.out
        self.host = host
        self.port: Optional[int] = None
        self.token = token
        self.access = HttpAccess(host, 0, token)
        self.max_connections = max_connections
        self.server: Any = None
        self.connections: set = set()  # the ones served, not those answered 503
        self.tasks: dict[asyncio.Task[None], asyncio.StreamWriter] = {}  # every handler running
        self.busy_answers = 0  # connections over the bound being answered 503 now
        self.busy = BurstReport(lambda count, seconds: system.log(
            "warn", None, "HTTP port busy: refused %d connection%s in %g s with 503 (it serves %d "
            "at once: --http-max-connections)"
            % (count, "" if count == 1 else "s", seconds, max_connections)))

    async def listen(self, port: int) -> None:
        """Listen on ``port`` (0: a free one); OSError if it cannot."""
        self.server = await asyncio.start_server(self.handle, self.host, port, limit=16384)
        self.port = self.server.sockets[0].getsockname()[1]
        self.access = HttpAccess(self.host, self.port, self.token)

    @property
    def url(self) -> str:
        host = "[%s]" % self.host if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1" if host == "0.0.0.0" else "[::1]"
        return "http://%s:%d/" % (host, self.port or 0)

    async def close(self) -> None:
        """Stop listening, cut every open request (event streams stay open until then) and let
        their handlers end (else the loop would cancel them, and asyncio print tracebacks)."""
        if self.server is not None:
            self.server.close()
        for writer in self.tasks.values():
            writer.transport.abort()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=SHUTDOWN_GRACE)

    # -- one connection, one request

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The asyncio.start_server callback: one request answered (or 503), then the close."""
        task = asyncio.current_task()
        self.tasks[task] = writer  # type: ignore[index]
        try:
            if len(self.connections) >= self.max_connections:
                await self._answer_busy(reader, writer)
            else:
                await self._serve(reader, writer)
        finally:
            del self.tasks[task]  # type: ignore[arg-type]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read one request, answer it, close."""
        self.connections.add(writer)
        address = writer.get_extra_info("peername")
        peer = "%s:%s" % (address[0], address[1]) if address else "?"
        request = None
        try:
            request = await asyncio.wait_for(read_request(reader, peer), HTTP_HEADER_TIMEOUT)
            if request is not None:
                await self.respond(request, writer)
        except HttpError as exc:
            self.refuse(writer, request, peer, exc)
            await drop_unread_body(request, writer)
        # headers too slow, or a line over the reader's limit
        except (asyncio.TimeoutError, ValueError):
            self.refuse(writer, request, peer, HttpError(400, "malformed or too slow request"))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        except Exception as exc:  # a bug of ours: a 500 and one line, never a traceback
            self.system.log("error", None, "HTTP %s failed: %s: %s"
                            % (request.path if request else "request",
                                                              type(exc).__name__, exc))
            writer.write(head_only(request, json_response(
                500, {"error": "internal error: %s" % type(exc).__name__})))
        finally:
            self.connections.discard(writer)
            try:
                await asyncio.wait_for(writer.drain(), 5.0)
            except (ConnectionError, asyncio.TimeoutError):
                pass
            writer.close()

    async def _answer_busy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                           ) -> None:
        """503 with Retry-After, said before the request is read; its head is then read and dropped
        (for HTTP_BUSY_LINGER at most), so that the close does not reset the connection before the
        client has read the answer."""
        self.busy.add()
        if self.busy_answers >= HTTP_BUSY_ANSWERS:
            writer.transport.abort()
            return
        self.busy_answers += 1
        try:
            writer.write(json_response(503, {
                "error": "the HTTP port is busy: it serves %d connections at once "
                "(--http-max-connections); retry after %d s"
                % (self.max_connections, HTTP_BUSY_RETRY_AFTER),
                "retryAfter": HTTP_BUSY_RETRY_AFTER}, HTTP_BUSY_HEADERS))
            writer.write_eof()
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HTTP_BUSY_LINGER)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError, OSError):
            pass
        finally:
            self.busy_answers -= 1
            writer.close()

    def refuse(self, writer: asyncio.StreamWriter, request: Optional[HttpRequest], peer: str,
               refusal: HttpError) -> None:
        if refusal.status in (401, 403):
            self.system.log("warn", None, "HTTP %d for %s %s from %s: %s" % (
                refusal.status, request.method if request else "?",
                printable(request.path if request else "?", 200), peer, refusal))
        elif refusal.status == 503:
            self.busy.add()
        writer.write(head_only(request, json_response(
            refusal.status, dict(refusal.more, error=str(refusal)), refusal.headers)))

    async def respond(self, request: HttpRequest, writer: asyncio.StreamWriter) -> None:
        instead = self.access.check(request)
        if instead is not None:
            writer.write(instead)
            return
        handlers, arguments = self.route(request.segments)
        if request.method not in handlers:
            raise HttpError(405, "%s does not take %s (it takes %s)" % (
                request.path, printable(request.method, 20), ", ".join(handlers)),
                            (("Allow", ", ".join(handlers)),))
        owner, _, name = handlers[request.method].rpartition(".")
        handler = getattr(getattr(self, owner) if owner else self, name)
        answer = await handler(request, writer, *arguments)
        if answer is not None:
            writer.write(head_only(request, json_response(*answer)))

    def route(self, segments: list[str]) -> tuple[dict[str, str], list[Any]]:
        """The handlers for a path, by method, and the parts of the path they take."""
        for pattern, handlers in self.ROUTES:
            if (pattern[-1] == "**" and segments[:len(pattern) - 1] == list(pattern[:-1])
                and len(segments) >= len(pattern)):
                return handlers, [segments[len(pattern) - 1:]]
            if len(pattern) == len(segments) and all(part in ("*", segment) for part,
                                                     segment in zip(pattern, segments)):
                return handlers, [segment for part, segment in zip(pattern, segments)
                                  if part == "*"]
        raise HttpError(404, "no such endpoint: %s (see docs/api.md)"
                        % printable(urllib.parse.unquote(
            "/" + "/".join(segments)), 200))


class HttpApi(HttpPort):
    """The HTTP port's routes: the API, page, event streams and file server (docs/api.md)."""

    ROUTES: tuple[tuple[tuple[str, ...], dict[str, str]], ...] = (
        (("",), {"GET": "page"}),
        (("api", "chargers"), {"GET": "list_chargers"}),
        (("api", "chargers", "*"), {"GET": "get_charger"}),
        (("api", "chargers", "*", "variables"), {"GET": "device_routes.variables"}),
        (("api", "chargers", "*", "summary"), {"GET": "get_summary"}),  # before {Action}'s
        (("api", "chargers", "*", "*"), {"POST": "call_action"}),
        (("api", "command"), {"POST": "run_command"}),
        (("api", "events"), {"GET": "streams.open"}),
        (("api", "transcript"), {"GET": "transcript"}),
        (("api", "faults"), {"GET": "list_faults", "PUT": "set_faults", "POST": "add_fault"}),
        (("files", "**"), {"GET": "file_routes.get_file", "HEAD": "file_routes.get_file",
                           "PUT": "file_routes.put_file", "POST": "file_routes.put_file"}),
    )

    def __init__(self, system: "CentralSystem", console: "Console", host: str, files: FileStore,
                 token: Optional[str], max_connections: int = DEFAULT_HTTP_MAX_CONNECTIONS) -> None:
        super().__init__(system, host, token, max_connections)
        self.console = console
        self.files = files
        self.streams = EventStreams(system, max(1, int(max_connections * EVENT_STREAM_SHARE)))
        self.history = self.streams.history
        self.file_routes = FileRoutes(self)
        self.device_routes = DeviceModelRoutes(self)

    async def close(self) -> None:
        self.busy.cancel()
        self.streams.stalled.cancel()
        await super().close()

    # -- the endpoints

    async def page(self, request: HttpRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(page_response(self.system, self.history))
        # every event kept from here, for the stream the page opens next
        self.streams.reader_opened()
        self.streams.reader_closed()

    async def list_chargers(self, request: HttpRequest, writer: asyncio.StreamWriter
                  ) -> tuple[int, Any]:
        return 200, {"apiVersion": API_VERSION, "chargers": [
            charger_record(self.system, state) for state in self.system.states.values()]}

    async def get_charger(self, request: HttpRequest, writer: asyncio.StreamWriter, charger_id: str
                          ) -> tuple[int, Any]:
        state = self.system.states.get(charger_id)
        if state is None:
            raise HttpError(404, "no charge point %s has connected" % _show(charger_id))
        return 200, charger_record(self.system, state)

    async def get_summary(self, request: HttpRequest, writer: asyncio.StreamWriter,
                          charger_id: str) -> tuple[int, Any]:
        """GET /api/chargers/{id}/summary: its verdict so far, and its latest transaction's."""
        state = self.system.states.get(charger_id)
        if state is None:
            raise HttpError(404, "no charge point %s has connected" % _show(charger_id))
        return 200, dict(charger_verdict(state), charger=charger_id,
                         lastTransaction=state.tally.last)

    def _action(self, charger_id: str, word: str) -> str:
        """The action ``word`` names for the charger's version (--ocpp's while it is away)."""
        session = self.system.sessions.get(charger_id)
        version = session.version if session is not None else self.system.default_version
        action = console_action(word, version)
        if action is None or action not in version.defaults:
            raise HttpError(400, "unknown action %s for OCPP %s; the actions: %s"
                            % (_show(word), version.name, ", ".join(version.defaults)))
        return action

    async def call_action(self, request: HttpRequest, writer: asyncio.StreamWriter, charger_id: str,
                          word: str) -> tuple[int, Any]:
        """POST /api/chargers/{id}/{Action}: send the CALL, answer with the charger's reply."""
        action = self._action(charger_id, word)
        body = await read_json_body(request)
        timeout = self.system.options.call_timeout
        timeout = request.number("timeout", 0.001, 86400, timeout) or timeout
        session = self.system.sessions.get(charger_id)
        if session is None:
            raise HttpError(404, "no charger %s is connected (connected: %s)" % (
                _show(charger_id), ", ".join(map(_show, self.system.sessions)) or "none"))
        try:
            payload = api_payload(self.system, session, action, body)
        except PayloadRefused as exc:
            raise HttpError(400, str(exc), problems=problem_records(exc.problems)) from None
        except CommandError as exc:
            raise HttpError(400, str(exc)) from None
        call = session.call(action, payload)
        try:
            outcome = await asyncio.wait_for(asyncio.shield(call.outcome), timeout)
        except asyncio.TimeoutError:
            dropped = session.queue.drop(call,
                                         "not sent: the API caller's timeout of %g s passed first"
                                         % timeout)
            raise HttpError(504, "no reply from %s within %g s%s" % (
                printable(charger_id), timeout, "; the call was still queued and is dropped"
                                                                     if dropped else
                "; the call stays outstanding until its reply or --call-timeout"),
                            request=payload) from None
        if outcome.kind in ("result", "error"):
            record = call_record(call, outcome)
            return 200, {key: record[key] for key in ("request", "result", "error")
                         if key in record}
        if outcome.kind == "timeout":
            raise HttpError(504, "no reply from %s within --call-timeout %g s" % (
                printable(charger_id), self.system.options.call_timeout), request=payload)
        raise HttpError(502, outcome.error_description or "the call failed", request=payload)

    async def run_command(self, request: HttpRequest, writer: asyncio.StreamWriter
                  ) -> tuple[int, Any]:
        """POST /api/command: one line of the console's language, and how it ended."""
        body = await read_json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("line"), str):
            raise HttpError(400, 'the body must be {"line": "<a console command>"}')
        line = body["line"]
        if "\n" in line or "\r" in line:
            raise HttpError(400, "one line at a time")
        self.out.console("api: " + printable(line, 400))
        outcome = self.console.run(line, hold=False, files=False)
        for text in outcome.lines:
            self.out.console(text)
        record: dict[str, Any] = {"ok": outcome.ok, "lines": outcome.lines}
        if outcome.held:
            return 409, dict(record, error=outcome.lines[0])
        if not outcome.ok:
            return 400, dict(record, error=outcome.lines[0] if outcome.lines
                             else "the command failed")
        if outcome.call is not None:
            record["call"] = call_record(outcome.call, await asyncio.shield(outcome.call.outcome))
        return 200, record

    async def list_faults(self, request: HttpRequest, writer: asyncio.StreamWriter
                  ) -> tuple[int, Any]:
        """GET /api/faults: the faults in force, as their words."""
        return 200, {"faults": [str(fault) for fault in self.system.faults.faults]}

    async def set_faults(self, request: HttpRequest, writer: asyncio.StreamWriter
                  ) -> tuple[int, Any]:
        """PUT /api/faults {"faults": [...]}: replace every fault (an empty list clears them)."""
        body = await read_json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("faults"), list) or not all(
                isinstance(text, str) for text in body["faults"]):
            raise HttpError(400, 'the body must be {"faults": ["<fault>", ...]}')
        if len(body["faults"]) > MAX_FAULTS:
            raise HttpError(400, "%d faults; at most %d may be in force"
                            % (len(body["faults"]), MAX_FAULTS))
        commands = self._fault_commands(body["faults"])  # every one checked before any is set
        self.system.faults.clear()
        return 200, {"faults": [line for command in commands
                                for line in run_fault_command(self.system, command)]}

    async def add_fault(self, request: HttpRequest, writer: asyncio.StreamWriter
                  ) -> tuple[int, Any]:
        """POST /api/faults {"fault": "..."}: add one."""
        body = await read_json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("fault"), str):
            raise HttpError(400,
                            'the body must be {"fault": "<fault>"}, e.g. {"fault": '
                            '"Heartbeat drop"}')
        command = self._fault_commands([body["fault"]])[0]
        try:
            return 200, {"faults": run_fault_command(self.system, command)}
        except CommandError as exc:  # MAX_FAULTS in force already
            raise HttpError(409, str(exc)) from None

    @staticmethod
    def _fault_commands(texts: list[str]) -> list[Command]:
        try:
            return [fault_command(text) for text in texts]
        except CommandError as exc:
            raise HttpError(400, str(exc)) from None

    async def transcript(self, request: HttpRequest, writer: asyncio.StreamWriter
                  ) -> tuple[int, Any]:
        """GET /api/transcript: the latest --log records (frames, connects, authorizations)."""
        charger = request.query.get("charger")
        limit = int(request.number("limit", 1, EVENT_HISTORY, 100) or 100)
        records = [record for record in (transcript_record(event) for event in self.history.kept()
                                         if charger is None or event.charger == charger)
                   if record is not None]
        return 200, {"records": records[-limit:]}


class FileRoutes:
    """The file server's routes, GET, HEAD, PUT and POST /files/... (see FileStore)."""

    def __init__(self, api: HttpApi) -> None:
        self.api = api
        self.system = api.system
        self.out = api.out
        self.files = api.files

    @property
    def access(self) -> HttpAccess:
        return self.api.access  # made anew once the port listens

    async def get_file(self, request: HttpRequest, writer: asyncio.StreamWriter, segments: list[str]
                       ) -> Optional[tuple[int, Any]]:
        """GET /files/ (a listing) or /files/{name} (the file, as a download); HEAD (its headers
        only), which some chargers send before they download firmware."""
        segments = self._file_segments(segments)
        if not segments or segments[-1] == "":
            return 200, {"files": self.files.listing([segment for segment in segments if segment]),
                         "folder": self.files.root}
        path = self.files.path(segments)
        if not os.path.isfile(path):
            raise HttpError(404, "no file %s in the files folder" % _show("/".join(segments)))
        size = os.path.getsize(path)
        writer.write(http_head(200, "application/octet-stream", size, (
            ("Content-Disposition", "attachment"), ("Content-Security-Policy", "sandbox"))))
        if request.method == "HEAD":
            return None
        with open(path, "rb") as served:
            while True:
                piece = served.read(UPLOAD_CHUNK)
                if not piece:
                    break
                writer.write(piece)
                await writer.drain()
        self.system.log("info", self._charger_of(segments), "file server: sent %s (%d bytes) to %s"
                        % (
            printable("/".join(segments), 200), size, request.peer))
        return None

    async def put_file(self, request: HttpRequest, writer: asyncio.StreamWriter, segments: list[str]
                       ) -> tuple[int, Any]:
        """PUT or POST /files/{name}: store an upload (a folder URL keeps the sender's file
        name)."""
        segments = self._file_segments(segments)
        if not segments:
            segments = [""]
        try:
            name = await self.files.receive(request, writer, segments)
        except HttpError as exc:
            self.system.log("warn", self._charger_of(segments),
                            "file server: upload %s from %s refused: %s" % (
                printable("/".join(segments), 200), request.peer, exc))
            raise
        size = os.path.getsize(os.path.join(self.files.root, name))
        charger = self._charger_of(name.split("/"))
        self.system.bus.publish("file_received", charger, self.system.sessions.get(charger or ""),
                                name=name, size=size, peer=request.peer)
        self.system.log("info", charger,
                        "file server: received %s (%d bytes) from %s, stored as %s" % (
            printable(name, 200), size, request.peer, os.path.join(self.files.root, name)))
        return 201, {"name": name, "size": size}

    def _file_segments(self, segments: list[str]) -> list[str]:
        """The file's name under the files folder: without the per-run secret segment, if the URL
        has it."""
        if self.access.file_secret is not None and segments[:1] == [self.access.file_secret]:
            return segments[1:]
        return segments

    def _charger_of(self, segments: list[str]) -> Optional[str]:
        """The charge point a file belongs to: the one whose folder is its first, if any."""
        return self.files.charger_of_file(segments, self.system.states)


class DeviceModelRoutes:
    """GET /api/chargers/{id}/variables?q=: a 2.0.1 station's device model, searched as the
    console's `variables` searches it."""

    def __init__(self, api: HttpApi) -> None:
        self.system = api.system

    async def variables(self, request: HttpRequest, writer: asyncio.StreamWriter, charger_id: str
                        ) -> tuple[int, Any]:
        state = self.system.states.get(charger_id)
        if state is None:
            raise HttpError(404, "no charge point %s has connected" % _show(charger_id))
        query = request.query.get("q", "")
        model = state.device_model
        found = model.matching(query) if model is not None else []
        return 200, {"id": charger_id, "query": query,
                     "kept": len(model.variables) if model is not None else 0,
                     "cap": MAX_DEVICE_VARIABLES, "full": model is not None and model.full,
                     "variables": [variable_record(name, key, row) for name, key, row in found]}


def variable_record(name: str, key: VariableKey, row: list) -> dict:
    """What GET /api/chargers/{id}/variables says of one variable attribute."""
    component, variable = component_json(key)
    return {"name": name, "component": component, "variable": variable, "attributeType": key[6],
            "value": row[0], "mutability": row[1], "dataType": row[2], "unit": row[3],
            "source": row[4]}


# ------------------------------------------------------------- The web page
# GET / on the HTTP port: one self-contained page (no CDN: classrooms are
# often offline), fed by /api/events.  Everything a charger controls is put
# in the page as text (textContent), never as HTML; the Content-Security-
# Policy allows this one inline script and nothing else.

PAGE_SCRIPT = r"""
"use strict";
const $ = (selector) => document.querySelector(selector);
const MEASURANDS = {energy: "Energy.Active.Import.Register", power: "Power.Active.Import",
                    soc: "SoC"};
const MAX_ROWS = 400;
const START_CONNECTOR = 1;  // the connector the Start button's RemoteStartTransaction names
const START_WAIT = 15000;  // ms an accepted Start stays disabled, awaiting its transaction
const REFRESHING = ["connected", "disconnected", "ready", "state_changed", "transaction_started",
                    "transaction_stopped", "spec_problem", "file_received", "summary"];
const charts = new Map();  // "CP · transaction N" -> {points, canvas, box, legend}, oldest first
const cards = new Map();  // charger id -> its card, kept: buttons and answers survive updates
const warnings = new Map();  // charger id -> the texts of its latest spec warnings
const openLists = new Set();  // charger ids whose list of warnings is open
const starting = new Map();  // charger id -> the timer of its Start in flight
const dirty = new Set();  // charts to draw at the next animation frame
let limits = {charts: 10, points: 2000, warnings: 20};  // the server's, from its state block
let chargers = [];
let refreshTimer = null, drawPending = false;
let known = {run: "", seq: 0};  // the newest event shown: its run and number
let source = null, retryDelay = 0, retryTimer = null;
let pending = null, syncing = false;  // events that arrive while the page reloads its state
const MAX_PENDING = 5000;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function setStatus(text, kind) {
  $("#status").textContent = text;
  $("#status").className = "badge " + kind;
}

async function api(method, path, body) {
  const init = {method, credentials: "same-origin", headers: {}};
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data;
  try { data = await response.json(); } catch (error) { data = {error: response.statusText}; }
  return {status: response.status, data};
}

function refreshSoon(delay) {
  if (refreshTimer === null) refreshTimer = setTimeout(refreshChargers, delay || 150);
}

async function refreshChargers() {
  refreshTimer = null;
  let answer;
  try { answer = await api("GET", "/api/chargers"); } catch (error) { return; }
  const {status, data} = answer;
  if (status === 503) { refreshSoon(2000); return; }  // the server is busy: again, later
  if (status !== 200) { setStatus(data.error || ("HTTP " + status), "off"); return; }
  chargers = data.chargers;
  for (const charger of chargers) {
    if (starting.has(charger.id) && startBlocked(charger)) startEnds(charger.id, false);
  }
  renderChargers();
}

function renderChargers() {
  $("#no-chargers").hidden = chargers.length > 0;
  for (const charger of chargers) renderCard(charger);
}

function newCard(id) {
  const card = el("section", "card");
  card.dataset.charger = id;
  const buttons = el("div", "buttons");
  for (const [label, action] of [["Start", "startRemote"], ["Stop", "stopRemote"],
                                 ["Reset", "Reset"], ["Trigger", "TriggerMessage"]]) {
    const button = el("button", null, label);
    button.dataset.action = action;
    button.addEventListener("click", () => callAction(id, action, card));
    buttons.append(button);
  }
  card.append(el("div", "info"), buttons, el("p", "answer"));
  cards.set(id, card);
  $("#chargers").append(card);
  return card;
}

function startBlocked(charger) {  // a transaction is open on the connector Start names
  return charger.transactions.some((tx) => tx.connectorId === START_CONNECTOR);
}

function renderCard(charger) {
  const card = cards.get(charger.id) || newCard(charger.id);
  card.classList.toggle("away", !charger.connected);
  const noStart = startBlocked(charger) || starting.has(charger.id);
  card.querySelectorAll("button[data-action]").forEach((button) => {
    button.disabled = !charger.connected || (button.dataset.action === "startRemote" && noStart);
  });
  const title = el("h3", null, charger.id);
  title.append(el("span", "badge " + (charger.connected ? "on" : "off"),
                  charger.connected ? "connected" : "away"));
  if (charger.version) title.append(el("span", "badge", "OCPP " + charger.version));
  if (charger.dialect === "flexicharge") title.append(el("span", "badge", charger.dialect));
  const boot = charger.boot || {};
  const station = boot.chargingStation || {};  // OCPP 2.0.1's BootNotification
  const parts = [title, el("p", "muted", charger.boot ? [
    boot.chargePointVendor || station.vendorName, boot.chargePointModel || station.model,
    "boot " + charger.bootStatus].filter(Boolean).join(" \u00b7 ") : "no BootNotification yet")];
  const connectors = el("p", "connectors");
  for (const [number, status] of Object.entries(charger.connectors)) {
    connectors.append(el("span", "connector s-" + String(status).replace(/[^A-Za-z]/g, ""),
                         number + ": " + status));
  }
  parts.push(connectors);
  for (const tx of charger.transactions) {
    const evse = tx.evseId !== undefined ? "EVSE " + tx.evseId + " " : "";
    parts.push(el("p", "tx", "transaction " + tx.transactionId + " on " + evse + "connector " +
      tx.connectorId + " \u00b7 idTag " + tx.idTag + " \u00b7 meterStart " + tx.meterStart));
  }
  for (const schedule of charger.schedules || []) parts.push(scheduleBox(schedule));
  if (charger.specWarnings) parts.push(...warningParts(charger));
  if (charger.summary) parts.push(summaryBlock(charger.summary));
  card.querySelector(".info").replaceChildren(...parts);
}

const SCHEDULE_SIZE = [280, 64];  // px: a composite schedule's step chart on its station's card

function scheduleBox(schedule) {  // a composite schedule: a step chart of its limits, and in text
  const unit = String(schedule.chargingRateUnit), box = el("div", "schedule");
  const canvas = el("canvas");
  canvas.dataset.periods = String(schedule.periods.length);
  box.append(el("p", "muted", "composite schedule \u00b7 EVSE " + schedule.evseId + " \u00b7 " +
                schedule.duration + " s \u00b7 " + unit), canvas,
             el("p", "muted", schedule.periods.map(([start, limit]) => start + " s: " + limit +
                " " + unit).join(" \u00b7 ")));
  drawSchedule(canvas, schedule);
  return box;
}

function drawSchedule(canvas, schedule) {  // each limit held until the next period starts
  const periods = schedule.periods.filter(([start, limit]) => Number.isFinite(start) &&
    Number.isFinite(limit)).sort((one, other) => one[0] - other[0]);
  const [width, height] = SCHEDULE_SIZE, ratio = window.devicePixelRatio || 1;
  canvas.width = width * ratio; canvas.height = height * ratio;
  canvas.style.width = width + "px"; canvas.style.height = height + "px";
  const context = canvas.getContext("2d");
  context.scale(ratio, ratio);
  if (!periods.length) return;
  const end = Math.max(Number(schedule.duration) || 0, periods[periods.length - 1][0] + 1);
  const high = Math.max(1, ...periods.map(([, limit]) => limit));
  const x = (t) => 4 + t / end * (width - 8);
  const y = (limit) => height - 4 - limit / high * (height - 8);
  context.strokeStyle = "#1565c0"; context.lineWidth = 2; context.beginPath();
  periods.forEach(([start, limit], index) => {
    const next = index + 1 < periods.length ? periods[index + 1][0] : end;
    if (index) context.lineTo(x(start), y(limit)); else context.moveTo(x(start), y(limit));
    context.lineTo(x(next), y(limit));
  });
  context.stroke();
}

function rerender(id) {
  const charger = chargers.find((one) => one.id === id);
  if (charger) renderCard(charger);
}

function warningParts(charger) {  // "N spec warning(s)", which opens the list of them
  const id = charger.id, texts = warnings.get(id) || [];
  const toggle = el("button", "link warn", charger.specWarnings + " spec warning(s)");
  toggle.setAttribute("aria-expanded", String(openLists.has(id)));
  toggle.addEventListener("click", () => {
    if (!openLists.delete(id)) openLists.add(id);
    rerender(id);
  });
  if (!openLists.has(id)) return [toggle];
  const list = el("ul", "warnings");
  for (const text of texts) list.append(el("li", null, text));
  const unlisted = charger.specWarnings - texts.length;
  if (unlisted > 0) list.append(el("li", "muted", unlisted + " more, not kept"));
  return [toggle, list];
}

function noteWarning(event) {
  const texts = warnings.get(event.charger) || [];
  texts.push(event.text);
  if (texts.length > limits.warnings) texts.shift();
  warnings.set(event.charger, texts);
}

function summaryBlock(summary) {  // the charger's verdict so far, and its latest transaction's
  const block = el("div", "verdict");
  block.append(el("p", "muted", summary.text));
  if (summary.lastTransaction) block.append(el("p", "muted", summary.lastTransaction.text));
  return block;
}

function startBegins(id) {
  clearTimeout(starting.get(id));
  starting.set(id, null);
  rerender(id);
}

function startEnds(id, render) {
  clearTimeout(starting.get(id));
  starting.delete(id);
  if (render) rerender(id);
}

async function callAction(id, action, card) {
  const answer = card.querySelector(".answer");
  answer.textContent = action + " \u2026";
  const start = action === "startRemote";
  if (start) startBegins(id);
  let status = 0, data = {error: "the server did not answer"};
  try {
    const path = "/api/chargers/" + encodeURIComponent(id) + "/" + action;
    ({status, data} = await api("POST", path, {}));
  } catch (error) { /* shown below */ }
  if (start && status === 200 && data.result && data.result.status === "Accepted") {
    starting.set(id, setTimeout(() => startEnds(id, true), START_WAIT));  // until its transaction
  } else if (start) {
    startEnds(id, true);
  }
  answer.textContent = action + ": " + (status === 200 ? JSON.stringify(data.result || data.error)
                                                       : (data.error || status));
  answer.className = "answer" + (status === 200 && !data.error ? "" : " bad");
}

async function sendCommand(event) {
  event.preventDefault();
  const line = $("#line").value.trim();
  if (!line) return;
  $("#reply").textContent = "\u2026";
  const {status, data} = await api("POST", "/api/command", {line});
  const shown = (data.lines || []).slice();
  if (data.call) shown.push(JSON.stringify(data.call, null, 2));
  if (!shown.length) shown.push(data.error || (status === 200 ? "ok" : "HTTP " + status));
  $("#reply").textContent = shown.join("\n");
  $("#reply").className = status === 200 ? "" : "bad";
}

async function showVariables(event) {  // a station's device model, searched: text only
  event.preventDefault();
  const id = $("#var-charger").value.trim() || (chargers.length ? chargers[0].id : "");
  const out = $("#var-list");
  if (!id) { out.textContent = "no charger yet"; return; }
  const path = "/api/chargers/" + encodeURIComponent(id) + "/variables?q=" +
    encodeURIComponent($("#var-query").value.trim());
  let status = 0, data = {error: "the server did not answer"};
  try { ({status, data} = await api("GET", path)); } catch (error) { /* shown below */ }
  const rows = status === 200 ? data.variables.map((row) => row.name + " = " +
    (row.value === null ? "(no value)" : row.value) + "  (" + row.source + ")") : [];
  out.textContent = status !== 200 ? (data.error || "HTTP " + status)
    : rows.length ? rows.join("\n") : id + ": no variable" + (data.query ? " matches" : " yet");
  out.className = status === 200 ? "" : "bad";
}

function addRow(event, kind, label, text, detail) {
  const log = $("#frames");
  const row = el("div", "row " + kind);
  row.dataset.type = event.type;
  row.append(el("span", "time", (event.ts || "").slice(11, 19)),
             el("span", "who", event.charger || "server"),
             el("span", "dir", kind === "in" ? "\u2190" : kind === "out" ? "\u2192" : "!"),
             el("span", "label", label),
             el("span", "text", text.length > 160 ? text.slice(0, 160) + "\u2026" : text));
  if (detail !== undefined) {
    row.classList.add("open-able");
    row.addEventListener("click", () => {
      const next = row.nextElementSibling;
      if (next && next.classList.contains("detail")) { next.remove(); return; }
      row.after(el("pre", "detail", detail));
    });
  }
  log.prepend(row);
  while (log.children.length > MAX_ROWS) log.lastElementChild.remove();
}

function pretty(text) {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch (error) { return text; }
}

function onFrame(event) {
  let shown = event.text;  // the payload, when the frame is OCPP-J; the label names the action
  try {
    const message = JSON.parse(event.text);
    const payload = message[0] === 2 ? message[3] : message[0] === 3 ? message[message.length - 1]
                                                                    : message.slice(2);
    if (Array.isArray(message) && payload !== undefined) shown = JSON.stringify(payload);
  } catch (error) { /* shown as sent */ }
  addRow(event, event.direction, event.label, shown, pretty(event.text));
}

function reading(readings, measurand) {
  for (const [name, value, unit] of readings || []) {
    if ((name || MEASURANDS.energy) !== measurand) continue;
    const number = parseFloat(value);
    if (!Number.isFinite(number)) continue;
    return /^k/.test(unit || "") ? number * 1000 : number;
  }
  return null;
}

function chartFor(charger, transactionId, connectorId, evseId) {  // the newest CHARTS_KEPT stay
  const key = charger + " \u00b7 " + (transactionId !== null && transactionId !== undefined ?
    "transaction " + transactionId : evseId !== null && evseId !== undefined ? "EVSE " + evseId
    : "connector " + connectorId);
  let chart = charts.get(key);
  if (chart) return chart;
  while (charts.size >= limits.charts) {
    const [oldest, old] = charts.entries().next().value;
    old.box.remove();
    dirty.delete(old);
    charts.delete(oldest);
  }
  const box = el("section", "chart"), canvas = el("canvas");
  canvas.dataset.points = "0";
  box.append(el("h3", null, key), canvas, el("p", "legend"));
  $("#charts").prepend(box);
  chart = {points: [], canvas, box, legend: box.querySelector(".legend")};
  charts.set(key, chart);
  return chart;
}

function pointsChanged(chart) {
  if (chart.points.length > limits.points) {  // thinned: every other reading goes, the last stays
    chart.points = chart.points.filter((point, index) => index % 2 === 0);
  }
  chart.canvas.dataset.points = String(chart.points.length);
  drawSoon(chart);
}

function drawSoon(chart) {  // at the next animation frame, once however many readings came
  dirty.add(chart);
  if (!drawPending) {
    drawPending = true;
    requestAnimationFrame(drawDirty);
  }
}

function onMeterValues(event) {
  const chart = chartFor(event.charger, event.transactionId, event.connectorId, event.evseId);
  chart.points.push({t: Date.parse(event.ts), energy: reading(event.readings, MEASURANDS.energy),
                     power: reading(event.readings, MEASURANDS.power),
                     soc: reading(event.readings, MEASURANDS.soc)});
  pointsChanged(chart);
}

function loadChart(kept) {  // a chart the server kept: [time ms, energy, power, soc] each
  const chart = chartFor(kept.charger, kept.transactionId, kept.connectorId);
  chart.points = kept.points.map(([t, energy, power, soc]) => ({t, energy, power, soc}));
  pointsChanged(chart);
}

const SERIES = [["energy", "Wh", "#1565c0"], ["power", "W", "#c62828"], ["soc", "%", "#2e7d32"]];
const LANE = 58, LABEL = 17, AXIS = 22;  // px: a series' lane, its label above it, the time axis
const TICKS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400];

function drawDirty() {
  drawPending = false;
  for (const chart of dirty) drawChart(chart);
  dirty.clear();
}

function number(value) {
  return Number.isInteger(value) ? String(value) : String(Number(value.toFixed(3)));
}

function clock(t) {  // UTC, as the frame log shows times
  return new Date(t).toISOString().slice(11, 19);
}

function drawChart(chart) {
  const points = chart.points;
  const lanes = SERIES.map(([name, unit, color]) => ({name, unit, color, values: points.map(
    (point) => point[name]).filter((value) => value !== null && value !== undefined)}))
    .filter((lane) => lane.values.length);
  const canvas = chart.canvas, ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 300, height = Math.max(1, lanes.length) * LANE + AXIS;
  canvas.width = width * ratio; canvas.height = height * ratio;
  canvas.style.height = height + "px";
  const context = canvas.getContext("2d");
  context.scale(ratio, ratio);
  context.font = "12px system-ui, sans-serif";
  if (!points.length) return;
  const first = points[0].t, span = Math.max(1, points[points.length - 1].t - first);
  const x = (t) => 4 + (t - first) / span * (width - 8);
  lanes.forEach((lane, index) => drawLane(context, lane, points, x, index * LANE));
  drawTimeAxis(context, first, span, width, Math.max(1, lanes.length) * LANE);
  chart.legend.textContent = lanes.map((lane) => lane.name + " " +
    number(lane.values[lane.values.length - 1]) + " " + lane.unit).join("  \u00b7  ");
}

function drawLane(context, lane, points, x, top) {  // its label first, the line below it
  let low = Infinity, high = -Infinity;
  for (const value of lane.values) { low = Math.min(low, value); high = Math.max(high, value); }
  const range = high - low || 1, plotTop = top + LABEL + 2, plotHeight = LANE - LABEL - 8;
  context.fillStyle = lane.color;
  context.fillText(lane.name + " " + number(low) + "\u2013" + number(high) + " " + lane.unit,
                   6, top + 13);
  context.strokeStyle = lane.color; context.lineWidth = 2; context.beginPath();
  let started = false;
  for (const point of points) {
    const value = point[lane.name];
    if (value === null || value === undefined) continue;
    const y = plotTop + plotHeight - (value - low) / range * plotHeight;
    if (started) context.lineTo(x(point.t), y);
    else { context.moveTo(x(point.t), y); started = true; }
  }
  context.stroke();
}

function drawTimeAxis(context, first, span, width, top) {  // a tick every "nice" step
  context.strokeStyle = "#99a"; context.fillStyle = "#556"; context.lineWidth = 1;
  context.beginPath(); context.moveTo(4, top + 2); context.lineTo(width - 4, top + 2);
  context.stroke();
  const most = Math.max(1, Math.floor(width / 90));
  const step = 1000 * (TICKS.find((seconds) => span / 1000 / seconds <= most) || 86400);
  context.textAlign = "center";
  let drawn = 0;
  for (let t = Math.ceil(first / step) * step; t <= first + span && drawn < 40; t += step) {
    const at = 4 + (t - first) / span * (width - 8);
    context.beginPath(); context.moveTo(at, top + 2); context.lineTo(at, top + 6); context.stroke();
    context.fillText(clock(t), Math.min(Math.max(at, 28), width - 28), top + 18);
    drawn += 1;
  }
  context.textAlign = "start";
  if (!drawn) context.fillText(clock(first), 4, top + 18);
}

function showEvent(event, live) {  // live: from the stream (else a row of the page's first state)
  if (event.missed) {
    addRow(event, "warn", "missed", event.missed + " event(s) were dropped: this page fell behind");
  }
  switch (event.type) {
    case "frame": onFrame(event); break;
    case "meter_values": if (live) onMeterValues(event); break;
    case "spec_problem":
      addRow(event, "warn", "spec", event.text);
      if (live) noteWarning(event);
      break;
    case "log":
      if (event.level === "warn" || event.level === "error") {
        addRow(event, event.level, event.level, event.text);
      }
      break;
    case "file_received":
      addRow(event, "file", "file", event.name + " (" + event.size + " bytes) from " + event.peer);
      break;
    case "summary": addRow(event, "summary", "summary", event.text); break;
  }
  if (live && REFRESHING.includes(event.type)) refreshSoon();
}

function parseId(text) {  // "run:seq", or a bare number
  const value = String(text || ""), at = value.lastIndexOf(":");
  return {run: at < 0 ? "" : value.slice(0, at), seq: Number(value.slice(at + 1)) || 0};
}

function readState(doc) {
  const block = doc.getElementById("state");
  try { return block ? JSON.parse(block.textContent) : null; } catch (error) { return null; }
}

function load(state) {  // everything drawn afresh from the server's state
  cards.forEach((card) => card.remove());
  cards.clear();
  charts.forEach((chart) => chart.box.remove());
  charts.clear();
  dirty.clear();
  starting.forEach((timer) => clearTimeout(timer));
  starting.clear();
  warnings.clear();
  $("#frames").replaceChildren();
  limits = Object.assign({}, limits, state.limits || {});
  for (const [id, texts] of Object.entries(state.warnings || {})) warnings.set(id, texts.slice());
  for (const event of state.events || []) showEvent(event, false);
  for (const kept of state.charts || []) loadChart(kept);
  chargers = state.chargers || [];
  known = parseId(state.eventId);
  renderChargers();
}

function take(id, event) {
  if (id.run === known.run && id.seq <= known.seq) return;  // shown already: the state had it
  known = id;
  showEvent(event, true);
}

function onMessage(message) {
  let event;
  try { event = JSON.parse(message.data); } catch (error) { return; }
  const id = parseId(message.lastEventId || event.id);
  if (pending) {  // held until the state is loaded; the oldest go first (the state covers them)
    if (pending.push([id, event]) > MAX_PENDING) pending.shift();
    return;
  }
  if (id.run !== known.run) {  // another run of the server: redraw from its state
    pending = [[id, event]];
    resync();
    return;
  }
  take(id, event);
}

async function fetchState() {  // the state block of the page as the server would send it now
  try {
    const response = await fetch("/", {credentials: "same-origin", cache: "no-store"});
    if (!response.ok) return null;
    return readState(new DOMParser().parseFromString(await response.text(), "text/html"));
  } catch (error) { return null; }  // away again: the stream's retry brings the page back here
}

async function resync() {  // after a reconnect: is this still the run the page shows?
  if (!pending) pending = [];
  if (syncing) return;
  syncing = true;
  const state = await fetchState();
  syncing = false;
  const newest = pending.length ? pending[pending.length - 1][0] : known;
  if (!state && newest.run !== known.run) {  // a new run, and its state is not to be had yet
    setTimeout(resync, 2000);
    return;
  }
  const queued = pending;
  pending = null;
  const id = state ? parseId(state.eventId) : known;
  if (id.run !== known.run || id.seq < known.seq) {  // the server restarted
    load(state);
    connect(state.eventId, true);
  }
  for (const [eventId, event] of queued) if (eventId.run === known.run) take(eventId, event);
  refreshSoon();
}

function connect(from, fresh) {  // fresh: the page has just loaded the state at "from"
  if (source) source.close();
  clearTimeout(retryTimer);
  const stream = source = new EventSource("/api/events?lastEventId=" + encodeURIComponent(from));
  let reopened = !fresh;
  stream.onopen = () => {  // a reopened stream may find another run of the server
    retryDelay = 0;
    setStatus("live", "on");
    if (reopened) resync(); else refreshSoon();
    reopened = true;
  };
  stream.onerror = () => {
    if (stream !== source) return;
    if (stream.readyState !== EventSource.CLOSED) {  // it reconnects by itself
      setStatus("reconnecting\u2026", "off");
      return;
    }
    // Refused (503 when the server is busy): EventSource gives up, so the page retries itself.
    retryDelay = Math.min(retryDelay ? retryDelay * 2 : 500, 15000);
    setStatus("server busy, retrying in " + Math.ceil(retryDelay / 1000) + " s", "off");
    retryTimer = setTimeout(() => connect(known.run ? known.run + ":" + known.seq : known.seq),
                            retryDelay);
  };
  stream.onmessage = onMessage;
}

$("#command").addEventListener("submit", sendCommand);
$("#variables").addEventListener("submit", showVariables);
window.addEventListener("resize", () => charts.forEach(drawSoon));
const firstState = readState(document);
if (firstState) {
  load(firstState);
  setStatus("as of " + clock(Date.parse(firstState.ts)), "");
}
connect(firstState ? firstState.eventId : "0", Boolean(firstState));
"""

PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>OCPP Mock Server</title>
<style>
:root { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; font-size: 17px;
        color: #1b1b1b; background: #f4f5f7; }
body { margin: 0; }
header { display: flex; flex-wrap: wrap; align-items: center; gap: .6rem 1rem; padding: .7rem 1rem;
         background: #12355b; color: #fff; }
header h1 { font-size: 1.3rem; margin: 0; }
main { display: grid; grid-template-columns: minmax(0, 2fr) minmax(0, 3fr); gap: 1rem;
       padding: 1rem; }
@media (max-width: 900px) { main { grid-template-columns: minmax(0, 1fr); padding: .5rem; } }
h2 { font-size: 1.05rem; margin: .2rem 0 .5rem; text-transform: uppercase; letter-spacing: .04em;
     color: #445; }
.card, .chart, .panel { background: #fff; border-radius: 8px; box-shadow: 0 1px 3px rgba(0,0,0,.15);
                        padding: .7rem .9rem; margin-bottom: .8rem; }
.card.away { opacity: .65; }
.card h3, .chart h3 { margin: 0 0 .3rem; font-size: 1.15rem; word-break: break-all; }
.badge { display: inline-block; font-size: .75rem; padding: .1rem .5rem; border-radius: 1rem;
         margin-left: .5rem; background: #e3e7ee; color: #223; vertical-align: middle; }
.badge.on { background: #2e7d32; color: #fff; }
.badge.off { background: #b71c1c; color: #fff; }
.muted { color: #667; margin: .2rem 0; }
.connector { display: inline-block; margin: 0 .4rem .3rem 0; padding: .15rem .5rem;
             border-radius: 4px;
             background: #e3e7ee; }
.s-Available { background: #c8e6c9; } .s-Charging, .s-Occupied { background: #bbdefb;
               } .s-Faulted { background: #ffcdd2; }
.s-Preparing, .s-SuspendedEV, .s-SuspendedEVSE, .s-Finishing { background: #fff3c4; }
.tx { font-weight: 600; margin: .3rem 0; }
.schedule canvas { display: block; background: #f6f8fb; border-radius: 4px; }
.warn { color: #8a5a00; }
button.link { background: none; padding: 0; min-height: 0; text-decoration: underline; }
.warnings { margin: .2rem 0 .4rem; padding-left: 1.2rem; font-size: .85rem;
            word-break: break-word; }
.buttons { display: flex; flex-wrap: wrap; gap: .4rem; margin-top: .5rem; }
button { font: inherit; padding: .45rem .9rem; border: 0; border-radius: 6px; background: #12355b;
         color: #fff;
         cursor: pointer; min-height: 2.4rem; }
button:disabled { background: #9aa3b0; cursor: default; }
.answer { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .85rem;
          word-break: break-all;
          margin: .4rem 0 0; }
.bad { color: #b71c1c; }
form { display: flex; gap: .5rem; }
input { flex: 1; min-width: 0; font: inherit; padding: .45rem; border: 1px solid #99a;
        border-radius: 6px; }
#reply, #var-list { white-space: pre-wrap; word-break: break-all; font-size: .85rem;
         margin: .5rem 0 0; max-height: 16rem;
         overflow: auto; }
canvas { width: 100%; display: block; }
.legend { margin: .3rem 0 0; font-size: .9rem; }
#frames { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .85rem;
          max-height: 75vh;
          overflow: auto; }
.row { display: grid; grid-template-columns: 4.6rem 7rem 1.2rem 13rem minmax(0, 1fr); gap: .4rem;
       padding: .25rem .3rem; border-bottom: 1px solid #eceef2; }
@media (max-width: 600px) { .row { grid-template-columns: 4.6rem minmax(0, 1fr) 1.2rem; }
                            .row .label { grid-column: 1 / -1; }
                            .row .text { grid-column: 1 / -1; } }
.row span { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.row.in .dir { color: #1565c0; } .row.out .dir { color: #2e7d32; }
.row.warn, .row.error { background: #fff3c4; } .row.error { background: #ffcdd2; }
.row.file { background: #e1f5fe; }
.row.summary { background: #e8f5e9; } .verdict { border-top: 1px solid #dde; margin-top: .3rem; }
.open-able { cursor: pointer; } .open-able:hover { background: #eef3fb; }
.detail { margin: 0; padding: .5rem; background: #f7f8fa; white-space: pre-wrap;
          word-break: break-all;
          border-bottom: 1px solid #dde; }
</style>
</head>
<body>
<header><h1>OCPP Mock Server</h1><span id="status" class="badge off">connecting\u2026</span>
<span class="muted" style="color:#cfd8e6">chargers, frames and meter values, live</span></header>
<main>
<div>
<h2>Chargers</h2>
<div id="chargers"><p id="no-chargers" class="muted">No charger yet: point one at the server's
ws:// URL.</p></div>
<div class="panel">
<h2>Command</h2>
<form id="command"><input id="line" autocomplete="off" spellcheck="false"
placeholder="e.g. startRemote or @CP-1 Reset type=Hard" aria-label="command"><button
type="submit">Send</button></form>
<pre id="reply"></pre>
</div>
<div class="panel">
<h2>Variables (2.0.1)</h2>
<form id="variables"><input id="var-charger" autocomplete="off" spellcheck="false"
placeholder="charger id" aria-label="charger id"><input id="var-query" autocomplete="off"
spellcheck="false" placeholder="search, e.g. heartbeat" aria-label="search"><button
type="submit">Show</button></form>
<pre id="var-list"></pre>
</div>
<h2>Meter values</h2>
<div id="charts"></div>
</div>
<div>
<h2>Frames</h2>
<div class="panel" id="frames"></div>
</div>
</main>
<script type="application/json" id="state">{state}</script>
<script>{script}</script>
</body>
</html>
""".replace("{script}", PAGE_SCRIPT)

# The page's HTML around its state block, which each GET / fills in.
PAGE_BEFORE_STATE, PAGE_AFTER_STATE = (part.encode("utf-8") for part in PAGE_HTML.split("{state}"))
PAGE_HEADERS = (
    ("Content-Security-Policy",
     "default-src 'self'; script-src 'sha256-%s'; style-src 'unsafe-inline'; "
     "img-src 'self' data:; frame-ancestors 'none'; form-action 'none'"
     % base64.b64encode(hashlib.sha256(PAGE_SCRIPT.encode("utf-8")).digest()).decode("ascii")),
    ("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer"), ("Cache-Control", "no-store"))
PAGE_STATE_ROWS = 100  # latest frame-log rows the page's first HTML carries ...
PAGE_STATE_BUDGET = 500000  # ... and the characters they may hold between them
PAGE_ROW_TYPES = ("frame", "spec_problem", "file_received", "summary")  # and warn and error lines
# A data block ends at the first "</script"; a charger's "<", ">" and "&", and the line separators
# (line ends to older JavaScript), are written as JSON escapes, so nothing it sends can end it.
_DATA_BLOCK_ESCAPES = {ord(character): f"\\u{ord(character):04x}"
                       for character in "<>&\u2028\u2029"}


def _page_rows(history: EventHistory) -> list[str]:
    """The latest events the page shows as rows of its frame log, oldest first, as their JSON."""
    rows: list[str] = []
    budget = PAGE_STATE_BUDGET
    for event in reversed(history.kept()):
        if len(rows) >= PAGE_STATE_ROWS:
            break
        if event.type not in PAGE_ROW_TYPES and not (
                event.type == "log" and event.fields.get("level") in ("warn", "error")):
            continue
        text = event.event_json()
        budget -= len(text)
        if budget < 0:
            break
        rows.append(text)
    rows.reverse()
    return rows


def page_state_json(system: "CentralSystem", history: EventHistory) -> str:
    """The page's first state: the chargers as GET /api/chargers lists them, their latest spec
    warnings, the open transactions' charts, the latest frame-log rows, and the id of the newest
    event in it (the page's event stream resumes from there).  Escaped for a data block."""
    state = {
        "eventId": "%s:%d" % (history.run, history.last), "ts": UTC_CLOCK.now(),
        "limits": {"charts": CHARTS_KEPT, "points": CHART_POINTS, "warnings": SPEC_WARNINGS_KEPT},
        "chargers": [charger_record(system, charger) for charger in system.states.values()],
        "warnings": {charger.charger_id: list(charger.spec_texts)
                     for charger in system.states.values() if charger.spec_texts},
        "charts": system.charts.records(system.states) if system.charts is not None else [],
    }
    text = api_json(state)[:-1] + ',"events":[' + ",".join(_page_rows(history)) + "]}"
    return text.translate(_DATA_BLOCK_ESCAPES)


def page_response(system: "CentralSystem", history: EventHistory) -> bytes:
    """GET /: the page with the server's state in it, so that its first paint is already right."""
    body = b"".join((PAGE_BEFORE_STATE, page_state_json(system, history).encode("utf-8"),
                     PAGE_AFTER_STATE))
    return http_head(200, "text/html; charset=utf-8", len(body), PAGE_HEADERS) + body


# ------------------------------------------------- websockets compatibility
# Every difference between websockets 10.3 (the FlexiCharge pin) and the
# latest release is handled here, by the feature, not by the version: the
# asyncio API (websockets.asyncio.server) where it exists, else the legacy
# one; the sans-I/O protocol object where a connection has one.

MIN_WEBSOCKETS = (10, 3)


def websockets_too_old() -> Optional[str]:
    """Why the installed websockets cannot serve (older than 10.3), or None."""
    numbers = re.findall(r"\d+", str(getattr(websockets, "__version__", "0")))[:2]
    version = tuple(int(number) for number in numbers)
    if version >= MIN_WEBSOCKETS:
        return None
    return ("websockets %s is installed; this server needs websockets %s or newer: pip install "
            "-U websockets"
            % (getattr(websockets, "__version__", "(unknown version)"),
               ".".join(map(str, MIN_WEBSOCKETS))))


# The version is checked before any import that needs a newer release
# (websockets 8.1, Debian 11's, has no websockets.legacy): main() then says
# so in one line.
_ASYNCIO_API = False
if websockets_too_old() is None:
    try:
        from websockets.asyncio.server import serve as _websockets_serve
        _ASYNCIO_API = True
    except ImportError:  # websockets < 13
        # type: ignore
        from websockets.legacy.server import WebSocketServerProtocol as _LegacyServerProtocol
        from websockets.legacy.server import serve as _websockets_serve  # type: ignore
    from websockets.frames import Opcode as _Opcode
    _PONG = _Opcode.PONG
    if _ASYNCIO_API:
        from websockets.asyncio.connection import Connection as _Connection
        from websockets.protocol import State as _State
        _OPEN = _State.OPEN
        # The future a fragmented send holds until its last fragment: renamed in 16.0.
        _SEND_IN_PROGRESS = ("send_in_progress" if "send_in_progress" in
                             _Connection.__init__.__code__.co_names else "fragmented_send_waiter")


def send_at_once(websocket: Any, text: str) -> bool:
    """Send ``text`` as one text frame now, as the asyncio API's ``send`` would, without its
    per-call context manager (a third of a reply's cost); False, with nothing sent, when the
    caller must await ``websocket.send`` instead.

    That is when the send could not go through at once in ``send`` either:
    the legacy API, a connection that is not open or is closing, a fragmented
    send under way, or a write buffer over its limit (``send`` would wait for
    it to drain: the caller's ``send`` then waits, so what a charger that does
    not read is sent stays bounded as before).  Releases 13.0 to the latest
    share these attributes; a release without them is served the slow way.
    """
    if not _ASYNCIO_API:
        return False
    try:
        if websocket.protocol.state is not _OPEN or websocket.paused or \
                websocket.transport.is_closing() or \
                getattr(websocket, _SEND_IN_PROGRESS) is not None:
            return False
        send_text, send_data = websocket.protocol.send_text, websocket.send_data
    except AttributeError:  # a websockets release that keeps these elsewhere
        return False
    send_text(text.encode())
    send_data()
    return True


def request_path(websocket: Any) -> str:
    request = getattr(websocket, "request", None)  # the asyncio API keeps the whole request
    return request.path if request is not None else websocket.path


def request_headers(websocket: Any) -> Any:
    request = getattr(websocket, "request", None)
    return request.headers if request is not None else websocket.request_headers


def release_handshake(websocket: Any) -> None:
    """Let go of the handshake once the connection is open and its headers are read (vetted, the
    subprotocol checked): the server's own response (its 101 and headers, about 1.5 KB a charger,
    kept by the asyncio API) and the charger's request headers (about 2.7 KB, kept by both APIs
    for the connection's life: the library's parser holds the request).  Nothing reads either
    afterwards; the request's path stays (the default of SetNetworkProfile reads it)."""
    if _ASYNCIO_API:
        websocket.response = None
    request_headers(websocket).clear()


def _close_frames(websocket: Any) -> Any:
    """The object that holds close_sent, close_rcvd and close_code: the sans-I/O protocol, or the
    legacy connection."""
    return getattr(websocket, "protocol", websocket)


def close_code(websocket: Any) -> Optional[int]:
    """The connection's close code (1006 when it dropped without a close frame)."""
    return getattr(_close_frames(websocket), "close_code", None)


def describe_close(websocket: Any) -> str:
    """How a connection ended: the code the server failed it with, else the charger's."""
    frames = _close_frames(websocket)
    sent, received = frames.close_sent, frames.close_rcvd
    if sent is not None and sent.code in CLOSE_EXPLANATIONS:
        text = "closed by the server with %d" % sent.code
        if sent.reason:
            text += " " + _show(sent.reason)
        return text + ": " + CLOSE_EXPLANATIONS[sent.code]
    if received is None:
        return "close code 1006: the connection dropped without a close frame"
    return "close code %d%s" % (received.code, " " + _show(received.reason) if received.reason
                                else "")


# Closes the websockets library makes on a charger's behalf, explained.
CLOSE_EXPLANATIONS = {
    1007: "a text frame that is not valid UTF-8; RFC 6455 section 8.1 requires closing",
    1009: "a frame over --max-message-size",
    1002: "a websocket protocol error",
}


async def close_within(websocket: Any, code: int, reason: str, timeout: float) -> None:
    """Close a connection with ``code``; cut it if the charger has not finished closing within
    ``timeout``."""
    try:
        await asyncio.wait_for(websocket.close(code, reason), timeout)
    except (asyncio.TimeoutError, OSError, websockets.WebSocketException):
        websocket.transport.abort()


async def close_invalid_utf8(websocket: Any) -> None:
    """Fail a connection that sent a text frame that is not UTF-8, with 1007 (RFC 6455 section 8.1).

    Most websockets releases do it themselves; 13.x raises UnicodeDecodeError
    from the receive loop instead, and would close with 1011.
    """
    await close_within(websocket, 1007, "invalid UTF-8", CLOSE_TIMEOUT)


class LibraryLogLine(logging.Handler):
    """What websockets logs about a failed opening handshake, as one line of output, never a
    traceback.

    websockets answers some anomalies itself (426 without an Upgrade header,
    400 without a key) and logs them at INFO or ERROR depending on the
    release; its routine INFO records (connection open, closed) are dropped.
    A refusal the AccessPolicy made and logged already is not logged twice.
    """

    HANDSHAKE_RECORDS = ("connection rejected", "connection failed", "opening handshake failed")

    def __init__(self, out: "Output", access: "AccessPolicy") -> None:
        super().__init__(logging.INFO)
        self.out = out
        self.access = access

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        error = record.exc_info[1] if record.exc_info else None
        while error is not None:
            text += ": %s: %s" % (type(error).__name__, error)
            error = error.__cause__
        if not text.startswith(self.HANDSHAKE_RECORDS):
            if record.levelno < logging.WARNING:
                return
        elif self.ECHO_OF_A_REFUSAL in text:
            return  # 13.x logs the refusal the server made (and logged) as a failed handshake too
        elif not text.startswith("opening") and self.access.logged_refusals > 0:
            # websockets' echo of a refusal the server made and logged
            self.access.logged_refusals -= 1
            return
        self.out.log("warn", None, "websockets: " + printable(text, 400))

    # What websockets says of a response process_request made: the server's own refusal.
    ECHO_OF_A_REFUSAL = "server rejected WebSocket connection: HTTP "


def route_library_logs(out: "Output", access: "AccessPolicy") -> None:
    logger = logging.getLogger("websockets")
    logger.handlers[:] = [LibraryLogLine(out, access)]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _log_tls_failures(context: ssl.SSLContext, out: "Output") -> None:
    """Make a failed TLS handshake one line of output (asyncio logs them only in debug mode)."""

    class LoggedSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise  # the handshake goes on when more bytes arrive
            except ssl.SSLError as exc:
                out.log("warn", None, "TLS handshake failed: %s%s" % (
                    printable(exc.reason or str(exc)),
                    " (a plain ws:// client on this wss:// port?)" if exc.reason in (
                        "HTTP_REQUEST", "WRONG_VERSION_NUMBER", "UNSUPPORTED_PROTOCOL") else ""))
                raise

    context.sslobject_class = LoggedSSLObject


def answer_pings(websocket: Any, answer: bool) -> None:
    """Answer the charger's pings with pongs (as websockets does by itself), or not (``fault
    pings``)."""
    if _ASYNCIO_API:  # the Sans-I/O protocol answers a ping by sending a PONG frame
        protocol = websocket.protocol
        protocol.__dict__.pop("send_frame", None)
        if not answer:
            send_frame = protocol.send_frame

            def send_frame_but_pongs(frame: Any) -> None:
                if frame.opcode is not _PONG:
                    send_frame(frame)
            protocol.send_frame = send_frame_but_pongs
    else:  # the legacy protocol answers with its pong() method
        websocket.__dict__.pop("pong", None)
        if not answer:
            async def no_pong(data: Any = b"") -> None:
                return None
            websocket.pong = no_pong


def _select_subprotocol(connection: Any, offered: Any) -> Optional[str]:
    """The charger's first choice of the server's subprotocols; none for a charger that offers
    none (lenient: AccessPolicy refused the others before the handshake)."""
    return choose_subprotocol(offered)


def _vetted(access: "AccessPolicy", path: str, headers: Any, peer: Any, transport: Any
            ) -> Optional[tuple[int, str, list]]:
    """An upgrade's refusal, if any, on either API.  A fault's "no answer at all" (status 0) cuts
    the connection here; the 503 then made is never seen."""
    refusal = access.refuse(path, headers, peer, transport.get_extra_info("peercert"),
                            transport.get_extra_info("ssl_object") is not None)
    if refusal is not None and refusal[0] == 0:
        transport.abort()
        return (503,) + refusal[1:]  # type: ignore[return-value]
    return refusal


def serve_websockets(handler: Callable[[Any], Any], host: str, port: int, max_size: int,
                     access: "AccessPolicy", ssl_context: Optional[ssl.SSLContext]) -> Any:
    """Start listening, on whichever websockets API is installed (await the result).

    ``access`` vets every upgrade request before the handshake completes.
    """
    # No permessage-deflate: OCPP frames are small, and plain frames stay
    # readable in a packet capture and cost less CPU and memory per charger.
    kwargs: dict[str, Any] = {"subprotocols": list(SUBPROTOCOLS), "max_size": max_size,
                              "ssl": ssl_context, "compression": None,
                              "close_timeout": CLOSE_TIMEOUT}
    if _ASYNCIO_API:
        kwargs["select_subprotocol"] = _select_subprotocol

        def process_request(connection: Any, request: Any) -> Any:
            refusal = _vetted(access, request.path, request.headers, connection.remote_address,
                              connection.transport)
            if refusal is None:
                return None
            status, text, headers = refusal
            response = connection.respond(status, text + "\n")
            for name, value in headers:
                response.headers[name] = value
            return response
        kwargs["process_request"] = process_request
    else:
        kwargs["create_protocol"] = _legacy_vetted_protocol(access)
    return _websockets_serve(handler, host, port, **kwargs)


def _legacy_vetted_protocol(access: "AccessPolicy") -> type:
    """The legacy API's connection class, vetted as the new API's process_request does, and
    choosing the subprotocol by the charger's order (the legacy API ranks both lists)."""
    class VettedProtocol(_LegacyServerProtocol):  # type: ignore[misc, valid-type]
        def select_subprotocol(self, client_subprotocols: Any, server_subprotocols: Any) -> Any:
            return choose_subprotocol(client_subprotocols)

        async def process_request(self, path: str, request_headers: Any) -> Any:
            refusal = _vetted(access, path, request_headers, self.remote_address,
                              self.transport)
            if refusal is None:
                return None
            status, text, headers = refusal
            return http.HTTPStatus(status), headers, (text + "\n").encode()
    return VettedProtocol


# ------------------------------------------------------------------- Server


def charger_id_from_path(path: str) -> str:
    """The charge point id: the last segment of the URL path, percent-decoded."""
    segment = urllib.parse.urlsplit(path).path.rstrip("/").rsplit("/", 1)[-1]
    return urllib.parse.unquote(segment)


# The security profiles of OCPP 1.6 (security whitepaper) and 2.0.1 (A00), as a connection shows
# them.
SECURITY_PROFILE_NAMES = {1: "ws://, HTTP Basic", 2: "wss://, HTTP Basic",
                          3: "wss:// with a client certificate"}


class AccessPolicy:
    """Who may open a connection: ``--charger-ids`` and ``--basic-auth`` (OCPP 1.6 security profile
    1).

    ``refuse`` answers an upgrade request with None (go ahead) or the HTTP
    refusal ``(status, text, headers)``: 404 for a charge point id not on
    the list (OCPP 1.6 errata 3.3), 401 for missing or wrong credentials,
    whose username must be the charge point id of the URL, 400 for a charger
    that offers subprotocols but not ocpp1.6 (and, with --strict, one that
    offers none).
    """

    def __init__(self, out: Output, charger_ids: Optional[list[str]] = None,
                 password: Optional[bytes] = None, require_subprotocol: bool = False,
                 client_ca: bool = False) -> None:
        self.out = out
        self.charger_ids = frozenset(charger_ids) if charger_ids else None
        # the starting key (--basic-auth), for every charger not rotated since
        self.password = password
        self.require_subprotocol = require_subprotocol
        # profile 3: the client certificate's CN must be the charge point id
        self.client_ca = client_ca
        # charge point id -> the forms of its new key
        self.rotated: dict[str, tuple[bytes, ...]] = {}
        # charge point id -> the lowest security profile it may connect at (raised by SetVariables
        # SecurityCtrlr.SecurityProfile; one entry per station that accepted a raise)
        self.lowest_profile: dict[str, int] = {}
        self.faults: Optional[FaultTable] = None  # offline and handshake faults refuse upgrades too
        self.logged_refusals = 0  # refusals logged here that websockets will log again

    def rotate(self, charger_id: str, key: str) -> str:
        """A charger accepted a new AuthorizationKey: from its next connection on, only that key
        lets it in.

        The whitepaper's key is 32 to 40 hex digits (16 to 20 bytes), and
        chargers differ on whether the password is that text or the bytes it
        spells: either is accepted.  The line to show says which.
        """
        forms = [key.encode("utf-8")]
        try:
            spelled = bytes.fromhex(key)
        except ValueError:
            spelled = b""
        if 16 <= len(spelled) <= 20:
            forms.append(spelled)
        self.rotated[charger_id] = tuple(forms)
        return "the hex text or the %d bytes it spells" % len(spelled) if len(forms) == 2 else \
            "as typed (not 32 to 40 hex digits, as the security whitepaper sets it)"

    def refuse(self, path: str, headers: Any, peer: Any, peer_certificate: Optional[dict] = None,
               tls: bool = False) -> Optional[tuple[int, str, list]]:
        """None to let the upgrade go ahead, else the refusal; one log line for each refusal.

        ``peer_certificate`` is the client certificate TLS verified (with --client-ca), as ssl gives
        it; ``tls`` says whether the connection is wss:// (with --tls-port, ws:// connections are
        served too, and are asked for no client certificate).
        """
        try:
            charger_id = charger_id_from_path(path)
            if self.faults is not None and self.faults.faults:
                injected = self.faults.upgrade_refusal(charger_id)
                if injected is not None:
                    # said by the fault; status 0: cut, no answer
                    return injected[0], injected[1], []
            refusal = self._refusal(charger_id, headers)
            if refusal is None and self.client_ca and tls:
                refusal = self._check_certificate(charger_id, peer_certificate)
            if refusal is None and self.lowest_profile:
                refusal = self._profile_refusal(charger_id, peer_certificate, tls)
        except Exception as exc:  # whatever the request holds, the answer is a 4xx, not a 500
            charger_id = ""
            refusal = (400, "malformed upgrade request (%s: %s)" % (type(exc).__name__, exc), [])
        if refusal is not None:
            self.logged_refusals += 1
            where = " from %s:%s" % (peer[0], peer[1]) if peer else ""
            self.out.log("warn", charger_id or None, "refused a connection%s to %s: HTTP %d, %s"
                          % (where, _show(path), refusal[0], printable(refusal[1], 400)))
        return refusal

    def _refusal(self, charger_id: str, headers: Any) -> Optional[tuple[int, str, list]]:
        authorization = headers.get_all("Authorization")
        if len(authorization) > 1:
            return 400, "%d Authorization headers; a request may carry one" % len(authorization), []
        refusal = self._check(charger_id, authorization[0] if authorization else None)
        if refusal is None:
            offered = [name.strip() for value in headers.get_all("Sec-WebSocket-Protocol")
                       for name in value.split(",") if name.strip()]
            refusal = self._subprotocol_refusal(charger_id, offered)
        return refusal

    def _subprotocol_refusal(self, charger_id: str,
                             offered: list[str]) -> Optional[tuple[int, str, list]]:
        """A charger offering none of the server's subprotocols (RFC 6455 lets the server decline;
        serving it would hide the charger's bug), or none at all under --strict, or an identity its
        version does not allow under --strict."""
        chosen = choose_subprotocol(offered)
        if offered and chosen is None:
            return (400, "the charger offered the subprotocols %s, not %s" % (printable(
                ", ".join(offered), 200), " or ".join(SUBPROTOCOLS)), [])
        if not offered and self.require_subprotocol:
            return (400, "the charger must offer a subprotocol (%s) (--strict); it offered none"
                    % ", ".join(SUBPROTOCOLS), [])
        problem = RPC_RULES[chosen].identity_problem(charger_id) if chosen else None
        if problem is not None and self.require_subprotocol:
            return 400, problem + " (--strict)", []
        return None

    def set_password(self, charger_id: str, password: str) -> None:
        """A 2.0.1 station accepted SecurityCtrlr.BasicAuthPassword: from its next connection on,
        only that password (its UTF-8 bytes, as the station sends it) lets it in."""
        self.rotated[charger_id] = (password.encode("utf-8"),)

    def raise_profile(self, charger_id: str, profile: int) -> Optional[int]:
        """A station accepted SecurityCtrlr.SecurityProfile ``profile``: from its next connection
        on, lower profiles are refused.  The profile it had before, or None when ``profile`` is
        not higher than the one it has (a security profile is never lowered: OCPP 2.0.1 A05)."""
        before = self.lowest_profile.get(charger_id, 1)
        if profile <= before:
            return None
        self.lowest_profile[charger_id] = profile
        return before

    def _profile_refusal(self, charger_id: str, certificate: Optional[dict],
                         tls: bool) -> Optional[tuple[int, str, list]]:
        """HTTP 403 for a connection below the profile its station was raised to: 1 is ws://, 2
        wss://, 3 wss:// with a client certificate TLS verified (--client-ca)."""
        lowest = self.lowest_profile.get(charger_id)
        profile = 3 if tls and certificate else 2 if tls else 1
        if lowest is None or profile >= lowest:
            return None
        return 403, ("security profile %d (%s) is below %d, which this station accepted "
                     "(SecurityCtrlr.SecurityProfile); lower profiles are refused" % (
                         profile, SECURITY_PROFILE_NAMES[profile], lowest)), []

    @staticmethod
    def _check_certificate(charger_id: str,
                           certificate: Optional[dict]) -> Optional[tuple[int, str, list]]:
        """Security profile 3: the client certificate's subject CN must be the charge point id of
        the URL."""
        names = [value for entry in (certificate or {}).get("subject", ()) for key, value in entry
                 if key == "commonName"]
        if names != [charger_id]:
            return 403, "the client certificate's CN is %s, not the charge point id %s" % (
                ", ".join(map(_show, names)) or "missing", _show(charger_id)), []
        return None

    def _check(self, charger_id: str,
               authorization: Optional[str]) -> Optional[tuple[int, str, list]]:
        if self.charger_ids is not None and charger_id not in self.charger_ids:
            return 404, "unknown charge point id %s" % _show(charger_id), []
        keys = self.rotated.get(charger_id) or ((self.password,) if self.password is not None
                                                else None)
        if keys is None:
            return None
        challenge = [("WWW-Authenticate", 'Basic realm="OCPP", charset="UTF-8"')]
        if not charger_id:
            return 401, "the URL names no charge point id to authenticate", challenge
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic" or not encoded:
            return 401, "HTTP Basic credentials are required", challenge
        try:
            username, _, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return 401, "malformed HTTP Basic credentials", challenge
        if not hmac.compare_digest(username, charger_id.encode("utf-8")):
            return 401, "the username must be the charge point id", challenge
        if not any(hmac.compare_digest(password, key) for key in keys):
            if charger_id in self.rotated:
                return 401, ("wrong password: its AuthorizationKey was rotated (2.0.1: its "
                             "BasicAuthPassword set), and only the new key is accepted"), challenge
            return 401, ("wrong password (this server knows its starting key and the keys rotated "
                         "since it started, not those of an earlier run)"), challenge
        return None


def make_ssl_context(certfile: str, keyfile: Optional[str], out: Output,
                     client_ca: Optional[str] = None
                     ) -> ssl.SSLContext:
    """TLS 1.2 or newer for wss:// (OCPP 1.6 security profile 2; with ``client_ca``, profile 3: a
    client certificate signed by that CA is required); failed handshakes are logged."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    if client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    _log_tls_failures(context, out)
    return context


class CentralSystem:
    """The server's shared state: options, connected chargers, id counters."""

    def __init__(self, options: "Settings", out: Output) -> None:
        self.options = options
        self.out = out
        self.default_version: OcppVersion = VERSIONS[options.ocpp]  # see --ocpp
        self.sessions: dict[str, ChargerSession] = {}
        # Every charge point seen, connected or not (the oldest gone ones are forgotten first).
        self.states: collections.OrderedDict[str, ChargerState] = collections.OrderedDict()
        self.transaction_ids = itertools.count(1)
        self.next_reservation_id = 1
        self.last_reservation_id: Optional[int] = None
        self.next_request_id = 1  # the requestId of the next command that sends one
        self.next_remote_start_id = 1  # RequestStartTransaction's remoteStartId (2.0.1)
        self.signing = CertificateSigning(self, options.ca_cert, options.ca_key)
        self.access: Optional[AccessPolicy] = None  # who may connect; set when the server listens
        self.faults = FaultTable(self)
        for text in options.faults:  # --fault, checked when the command line was read
            command = fault_command(text)
            self.faults.add(parse_fault(command.text, command.target))
        # charge point id -> the chain signed for it last
        self.last_signed_chain: dict[str, str] = {}
        self.url = "ws://%s:%d" % (options.host, options.port)
        self.port = options.port  # the port listened on, once it listens
        self.tls_url: Optional[str] = None  # --tls-port: the wss:// listener's URL, once it listens
        self.tls_port: Optional[int] = options.tls_port
        self.transcript: Optional[Transcript] = None
        self.http: Optional[HttpApi] = None
        self.authorization = AuthorizationRules(options.tag_rules, options.unknown_tags,
                                                options.concurrent_tx)
        self.exit_code = 0
        self.stopped = asyncio.Event()
        self._failed_subscribers: set = set()
        self.bus = EventBus(self._subscriber_failed)
        out.subscribe_to(self.bus)
        out.publish_log = self.log
        self.spec_warnings = 0
        # The open transactions' readings, for the page (nothing is kept without the HTTP port).
        self.charts: Optional[ChartReadings] = ChartReadings() if options.http else None

    def _subscriber_failed(self, subscriber: Callable[[Event], None], exc: Exception) -> None:
        key = (getattr(subscriber, "__qualname__", repr(subscriber)), type(exc).__name__)
        if key not in self._failed_subscribers:
            self._failed_subscribers.add(key)
            self.out.error(None, "event subscriber %s failed: %s: %s (reported once)"
                           % (key[0], key[1], exc))

    def stop(self) -> None:
        self.stopped.set()
        self.out.writer.end_input_line()

    def log(self, level: str, charger: Optional[str], text: str) -> None:
        """A line for the operator (a level of EVENT_FIELDS["log"]), about a charger or the server
        (``charger`` None), published on the bus as a "log" event: the one way such lines are
        shown."""
        self.bus.publish("log", charger, self.sessions.get(charger) if charger else None,
                         level=level, text=text)

    def count_spec_warning(self, state: ChargerState, text: Optional[str] = None) -> None:
        self.spec_warnings += 1
        state.spec_warnings += 1
        if text is not None:
            if type(state.spec_texts) is tuple:  # its first
                state.spec_texts = Latest(SPEC_WARNINGS_KEPT)
            state.spec_texts.append(text)

    def state_for(self, charger_id: str) -> ChargerState:
        """The state of a charge point (new or remembered), marked most recently seen."""
        state = self.states.get(charger_id)
        if state is None:
            state = self.states[charger_id] = ChargerState(charger_id)
            gone = len(self.states) - len(self.sessions) - 1
            for old_id in list(self.states):
                if gone <= REMEMBERED_CHARGE_POINTS:
                    break
                if not self.states[old_id].connected and old_id != charger_id:
                    del self.states[old_id]
                    gone -= 1
        self.states.move_to_end(charger_id)
        return state

    def peek_reservation_id(self) -> int:
        return self.next_reservation_id

    def note_given_ids(self, action: str, payload: dict) -> None:
        """A CALL was queued: the next bare commands default to the ids after its requestId,
        remoteStartId and (a ReserveNow's, as either version spells it) reservation id, and
        CancelReservation to that reservation."""
        request_id, start_id = payload.get("requestId"), payload.get("remoteStartId")
        if type(request_id) is int:
            self.next_request_id = max(self.next_request_id, request_id + 1)
        if type(start_id) is int:
            self.next_remote_start_id = max(self.next_remote_start_id, start_id + 1)
        reservation_id = payload.get("reservationId", payload.get("id"))
        if action == "ReserveNow" and type(reservation_id) is int:
            self.last_reservation_id = reservation_id
            self.next_reservation_id = max(self.next_reservation_id, reservation_id + 1)

    async def handle_connection(self, websocket: Any) -> None:
        """One charger connection, from handshake to close."""
        address = websocket.remote_address
        peer = "%s:%s" % (address[0], address[1]) if address else "?"
        path = request_path(websocket)
        subprotocol = websocket.subprotocol
        version = VERSION_OF_SUBPROTOCOL.get(subprotocol or "", self.default_version)
        charger_id = self._named(charger_id_from_path(path), address,
                                 "%s (OCPP %s)" % (peer, version.name))
        self._check_subprotocol(charger_id, subprotocol, websocket)
        release_handshake(websocket)
        session = self._session_for(websocket, charger_id, peer, subprotocol)
        self.bus.publish("connected", charger_id, session, peer=peer, path=path,
                         subprotocol=subprotocol, version=session.version.name)
        if self.faults.faults:
            self.faults.session_started(session)
        try:
            await session.serve()
        finally:
            if self.sessions.get(charger_id) is session:
                del self.sessions[charger_id]
                session.state.connected = False
                connection_ended(session.state)
            description = describe_close(websocket)
            session.log("info", "disconnected (%s)" % description)
            self.bus.publish("disconnected", charger_id, session, code=close_code(websocket),
                             description=description)

    def _check_subprotocol(self, charger_id: str, subprotocol: Optional[str],
                           websocket: Any) -> None:
        """Spec warnings of a new connection: no subprotocol, or an identity its version does not
        allow (both refused before the handshake under --strict)."""
        if subprotocol is None:
            offered = (", ".join(request_headers(websocket).get_all("Sec-WebSocket-Protocol"))
                       or "none")
            self.count_spec_warning(self.state_for(charger_id))
            self.state_for(charger_id).tally.count(("no-subprotocol",))
            self.log("warn", charger_id, "spec: no subprotocol negotiated (charger offered: %s); "
                     "serving it as OCPP %s (--ocpp)" % (printable(offered),
                                                         self.default_version.name))
            return
        problem = RPC_RULES[subprotocol].identity_problem(charger_id)
        if problem is not None:
            self.count_spec_warning(self.state_for(charger_id))
            self.state_for(charger_id).tally.count(("charge-point-id",))
            self.log("warn", charger_id, "spec: %s; serving it anyway" % problem)

    def _named(self, charger_id: str, address: Any, peer: str) -> str:
        """The charge point id of a new connection (its address when the URL names none), said."""
        if charger_id:
            self.log("info", charger_id, "connected from %s" % peer)
            return charger_id
        charger_id = address[0] if address else "charger"
        self.log("info", charger_id, "connected from %s with no id in the URL path; calling it %s "
                 "(add /<id> to the URL to name it)" % (peer, charger_id))
        return charger_id

    def _session_for(self, websocket: Any, charger_id: str, peer: str, subprotocol: Optional[str]
                     ) -> "ChargerSession":
        """A new connection's session; one of the same charge point id before it is closed."""
        previous = self.sessions.get(charger_id)
        session = ChargerSession(self, websocket, charger_id, peer, subprotocol)
        self.sessions[charger_id] = session
        session.state.connected = True
        connection_started(session.state)
        if previous is not None:
            self.log("info", charger_id, "reconnected; the new connection replaces the old one")
            previous.closed = True
            asyncio.ensure_future(close_within(previous.websocket, 1000,
                                               "replaced by a new connection", REPLACE_TIMEOUT))
        return session


# Start-up and shutdown: listening, the banner, the open-files limit, the collector.


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_scenario(path: str, out: Output, version: OcppVersion) -> Optional[list[Step]]:
    """The checked steps of a --script file (commands of ``version``); None (after one error
    line) when it is unusable."""
    try:
        with open(path, encoding="utf-8") as script:
            return parse_scenario(script.read(), os.path.dirname(os.path.abspath(path)), version)
    except OSError as exc:
        out.error(None, "cannot read the script %s: %s" % (path, exc.strerror or exc))
    except UnicodeDecodeError as exc:
        out.error(None, "the script %s is not UTF-8 text: %s" % (path, exc))
    except ScriptError as exc:
        out.error(None, "%s:%d: %s" % (path, exc.line, exc))
    return None


def script_paths(given: Sequence[str], out: Output) -> Optional[list[str]]:
    """The --script files in run order: each FILE as given, each FOLDER's *.txt files in name
    order; None (after one error line) when a folder holds none."""
    paths = []
    for path in given:
        if not os.path.isdir(path):
            paths.append(path)
            continue
        found = sorted(name for name in os.listdir(path) if name.endswith(".txt")
                       and os.path.isfile(os.path.join(path, name)))
        if not found:
            out.error(None, "the script folder %s holds no *.txt script" % path)
            return None
        paths += [os.path.join(path, name) for name in found]
    return paths


def load_scenarios(options: "Settings", out: Output) -> Optional[list[tuple[str, list[Step]]]]:
    """Every --script checked, before any runs (one error line per unusable one): (path, steps)
    per script, or None when any is unusable."""
    paths = script_paths(options.script, out)
    if paths is None:
        return None
    scenarios = [(path, load_scenario(path, out, VERSIONS[options.ocpp])) for path in paths]
    if any(steps is None for _, steps in scenarios):
        return None
    return scenarios  # type: ignore[return-value]


async def run_server(options: "Settings", out: Output, stdin: Any = None,
                     started: Optional[Callable[["CentralSystem", "Console"], None]] = None) -> int:
    """Serve until quit, SIGINT or SIGTERM, or until --script is done; the exit status.

    ``stdin`` feeds the console (sys.stdin by default); ``started`` is called
    once the server listens (the tests use it to run it in-process).
    """
    scenarios = None
    if options.script:
        # checked before the server listens
        scenarios = load_scenarios(options, out)
        if scenarios is None:
            return 2
    recording = load_replay(options, out) if options.replay else None
    if options.replay and recording is None:
        return 2
    if recording is not None and recording.version in VERSIONS:  # for chargers naming none
        options = dataclasses.replace(options, ocpp=recording.version)
    problem = junit_path_problem(options.junit) if options.junit else None
    if problem is not None:
        out.error(None, "cannot write the JUnit report %s: %s" % (options.junit, problem))
        return 2
    system = CentralSystem(options, out)
    if options.log:
        try:
            system.transcript = Transcript(options.log,
                                           lambda text: system.log("error", None, text))
            system.bus.subscribe(system.transcript.on_event, *Transcript.EVENT_NAMES)
            system.transcript.start_run(options.ocpp)
        except OSError as exc:
            out.error(None, "cannot open the transcript %s: %s"
                      % (options.log, exc.strerror or exc))
            return 2
    try:
        return await serve_until_stopped(system, options, out, stdin, scenarios, started,
                                         recording)
    finally:
        if system.transcript is not None:
            system.transcript.close()


async def serve_until_stopped(system: CentralSystem, options: "Settings", out: Output,
                              stdin: Any = None,
                              scenarios: Optional[list[tuple[str, list[Step]]]] = None,
                              started: Optional[Callable[["CentralSystem", "Console"],
                                                         None]] = None,
                              recording: Optional[Recording] = None) -> int:
    """Listen, print the banner, run the console, the scripts or the replay; the exit status."""
    access = system.access = AccessPolicy(out, options.charger_ids, options.password,
                                          require_subprotocol=options.strict,
                                          client_ca=bool(options.client_ca))
    access.faults = system.faults
    route_library_logs(out, access)
    report_accept_errors(system)
    loop = asyncio.get_running_loop()
    console = Console(system)
    try:
        server = await listen(system, options, out, access)
        try:
            http_api = await start_http(system, options, out, console)
        except CannotStart:
            server.close()
            raise
    except CannotStart as exc:
        return exc.status
    stop_on_signals(loop, system)
    print_banner(system, options, out, access)
    note_open_files(system, options)
    scripts = start_run(system, options, scenarios, recording)
    if scripts is None:
        console.start_reader(loop, stdin)
    if started is not None:
        started(system, console)
    await system.stopped.wait()
    await stop_scenarios(scripts)
    await close_down(system, server, http_api, out)
    return system.exit_code


def start_run(system: CentralSystem, options: "Settings",
              scenarios: Optional[list[tuple[str, list[Step]]]],
              recording: Optional[Recording]) -> "Optional[asyncio.Future[None]]":
    """The --replay or --script run, started; None when the console runs instead."""
    if recording is not None:
        return asyncio.ensure_future(run_replay(ReplayRun(system, recording,
                                                          replay_rules(options)), system))
    return scenarios and asyncio.ensure_future(run_scenarios(scenarios, system))


async def stop_scenarios(scripts: "Optional[asyncio.Future[None]]") -> None:
    """Stop the --script run when the server stops before it is done (quit, SIGINT, SIGTERM):
    what ran is reported (run_scenarios)."""
    if scripts is not None and not scripts.done():
        scripts.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await scripts


async def close_down(system: CentralSystem, server: Any, http_api: "Optional[HttpApi]",
                     out: Output) -> None:
    """The HTTP port, then every charger connection; the temporary files folder unless it holds
    files."""
    if http_api is not None:
        await http_api.close()
    await shut_down(system, server)
    publish_exit_verdicts(system)
    if http_api is not None and http_api.files.temporary:
        keep_or_remove(http_api.files.root, out)
    out.console("stopped")


def publish_exit_verdicts(system: CentralSystem) -> None:
    """At exit, once every connection is closed: a "summary" event (scope "exit") for each charge
    point that connected during the run (the REMEMBERED_CHARGE_POINTS latest gone ones)."""
    for state in list(system.states.values()):
        system.bus.publish("summary", state.charger_id, None, **charger_verdict(state, "exit"))


# The collector's pauses over a heap of thousands of connections are most of a large fleet's
# latency tail: young objects are collected less often, and whole-heap collections rarely.
GC_YOUNG_OBJECTS = 20000  # allocations between two collections of the youngest generation
GC_MIDDLE_EVERY = 20  # collections of the youngest between two of the middle generation
GC_OLD_EVERY = 100  # of the middle between two of the whole heap (with Python's own 25 % rule)


def settle_garbage_collector() -> None:
    """Before serving: the objects of start-up (modules, tables) are left out of every collection
    (gc.freeze), and collections come less often (GC_YOUNG_OBJECTS and the two after it)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_OBJECTS, GC_MIDDLE_EVERY, GC_OLD_EVERY)


class CannotStart(Exception):
    """The server cannot start as asked; ``status`` is the exit status, and the line saying why
    has been printed."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def stop_on_signals(loop: asyncio.AbstractEventLoop, system: CentralSystem) -> None:
    """SIGINT and SIGTERM stop the server (where the loop can take signal handlers)."""
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signal_number, system.stop)
        except (NotImplementedError, RuntimeError):
            pass  # Windows: Ctrl-C arrives as KeyboardInterrupt instead


class Listeners:
    """The websocket port and, with --tls-port, the wss:// one, closed and awaited as one server."""

    def __init__(self, servers: list) -> None:
        self.servers = servers
        self.sockets = servers[0].sockets

    def close(self) -> None:
        for server in self.servers:
            server.close()

    async def wait_closed(self) -> None:
        await asyncio.gather(*(server.wait_closed() for server in self.servers))


async def listen(system: CentralSystem, options: "Settings", out: Output,
                 access: AccessPolicy) -> Any:
    """The listening websockets server (its URL set on ``system``), with --tls-port a Listeners of
    both; CannotStart when it cannot listen."""
    ssl_context = None
    if options.certfile:
        try:
            ssl_context = make_ssl_context(options.certfile, options.keyfile, out,
                                           options.client_ca)
        except (OSError, ssl.SSLError) as exc:
            out.error(None, "cannot load the TLS certificate %s: %s" % (options.certfile, exc))
            raise CannotStart(2) from None
    if options.tls_port is None:
        return await _listen_on(system, options, out, access, options.port, ssl_context)
    server = await _listen_on(system, options, out, access, options.port, None)
    try:
        tls_server = await _listen_on(system, options, out, access, options.tls_port, ssl_context)
    except CannotStart:
        server.close()
        raise
    return Listeners([server, tls_server])


async def _listen_on(system: CentralSystem, options: "Settings", out: Output,
                     access: AccessPolicy, port: int, ssl_context: Optional[ssl.SSLContext]) -> Any:
    """One listening websockets server; its URL set on ``system`` (the wss:// one of --tls-port as
    its tls_url)."""
    try:
        server = await serve_websockets(system.handle_connection, options.host, port,
                                        options.max_message_size, access, ssl_context)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            out.error(None,
                      "port %d on %s is already in use (another mock server?); stop it or choose "
                      "another port: --port %d (the HTTP port takes the one after it)"
                      % (port, options.host,
                         free_port_pair(options.host, options.port + 2)))
        else:
            out.error(None, "cannot listen on %s:%d: %s"
                      % (options.host, port, exc.strerror or exc))
        raise CannotStart(1) from None
    bound = server.sockets[0].getsockname()[1]
    host = options.host if ":" not in options.host else "[%s]" % options.host
    url = "%s://%s:%d" % ("wss" if ssl_context else "ws", host, bound)
    if ssl_context is not None and options.tls_port is not None:
        system.tls_url, system.tls_port = url, bound
    else:
        system.url, system.port = url, bound
    return server


def machine_addresses() -> list[str]:
    """This machine's IPv4 addresses other machines may reach it at, best effort: the standard
    library has no call for them, so Linux's routing tables are read, and the address of the default
    route is asked for (a UDP socket "connected" to a documentation address sends nothing)."""
    found: list[str] = []
    try:
        with open("/proc/net/fib_trie", encoding="ascii") as trie:
            last = ""
            for line in trie:
                if line.strip().startswith("|--"):
                    last = line.split()[-1]
                elif "/32 host LOCAL" in line and last:
                    found.append(last)
    except OSError:
        pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            found.insert(0, probe.getsockname()[0])
    except OSError:
        pass
    unique: list[str] = []
    for address in found:
        if (address not in unique and not is_loopback(address)
            and not address.startswith("169.254.")):
            unique.append(address)
    return unique


def free_port_pair(host: str, start: int) -> int:
    """A port from ``start`` on that is free on ``host``, with the one after it free too (for the
    HTTP port)."""
    for port in range(min(start, 65534), 65535):
        try:
            for candidate in (port, port + 1):
                with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
                    probe.bind((host, candidate))
            return port
        except OSError:
            continue
    return 0


async def start_http(system: CentralSystem, options: "Settings", out: Output, console: "Console"
                     ) -> "Optional[HttpApi]":
    """The HTTP port (API, page, file server) listening: None when it is off or its default port is
    taken; CannotStart when it cannot start as asked."""
    if not options.http:
        return None
    port, given = options.http_port, options.http_port is not None
    if port is None:
        port = 0 if options.port == 0 or system.port >= 65535 else system.port + 1
    temporary = options.files_dir is None
    try:
        root = tempfile.mkdtemp(prefix="ocpp-mock-files-") if temporary else options.files_dir
        os.makedirs(root, exist_ok=True)
    except OSError as exc:
        out.error(None, "cannot use --files-dir %s: %s" % (options.files_dir, exc.strerror or exc))
        raise CannotStart(2) from None
    api = HttpApi(system, console, options.http_host,
                  FileStore(root, options.max_upload_size, options.files_quota, temporary),
                  options.http_token, http_connection_bound(options.http_max_connections))
    try:
        await api.listen(port)
    except OSError as exc:
        system.bus.unsubscribe(api.history.on_event)
        if temporary:
            os.rmdir(root)
        if exc.errno == errno.EADDRINUSE and not given:
            system.log("warn", None, "HTTP port %d is in use: no web page, API or file server "
                       "this run (choose one with --http-port, or --no-http)" % port)
            return None
        out.error(None, "cannot listen for HTTP on %s:%d: %s"
                  % (options.http_host, port, exc.strerror or exc))
        raise CannotStart(1) from None
    system.http = api
    return api


def open_files_limit() -> Optional[int]:
    """The soft open-files limit (None where the platform has none to read)."""
    if resource is None:
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def raise_open_files_limit() -> None:
    """Raise the soft open-files limit to the hard one, where the platform allows: every charger and
    every HTTP connection is a descriptor, and 1,024 (a common default) is few."""
    if resource is None:
        return
    unlimited = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == unlimited:
        return
    # macOS refuses more than its OPEN_MAX, even under an unlimited hard limit.
    for wanted in (hard, MACOS_OPEN_MAX):
        if (wanted == unlimited or wanted > soft) and (hard == unlimited or wanted <= hard):
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
                return
            except (ValueError, OSError):
                continue


def http_connection_bound(wanted: int) -> int:
    """HTTP connections served at once: ``wanted`` (--http-max-connections), but never so many that
    they, and the 503s under way, leave fewer than OPEN_FILES_FOR_CHARGERS descriptors free."""
    limit = open_files_limit()
    if limit is None:
        return wanted
    return max(1, min(wanted, limit - OPEN_FILES_FOR_CHARGERS - HTTP_BUSY_ANSWERS))


def note_open_files(system: CentralSystem, options: "Settings") -> None:
    """A banner line when the open-files limit stays low, or holds the HTTP connections under
    --http-max-connections."""
    limit = open_files_limit()
    bound = system.http.max_connections if system.http is not None else 0
    lowered = system.http is not None and bound < options.http_max_connections
    if limit is None or limit >= LOW_OPEN_FILES and not lowered:
        return
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    system.log("warn", None, "open files are limited to %d (ulimit -n%s): fewer than %d chargers "
               "at once%s" % (limit, "; the hard limit too" if hard == limit else "",
                           max(0, limit - bound - HTTP_BUSY_ANSWERS),
                           "; HTTP connections at most %d, not %d"
                           % (bound, options.http_max_connections) if lowered else ""))


def report_accept_errors(system: CentralSystem) -> None:
    """Make a failed accept() (out of descriptors, EMFILE or ENFILE, or memory) one line per burst.

    asyncio reports each failure with a traceback through the loop's
    exception handler, up to a hundred per listening socket and turn, and
    stops accepting on that socket for a second (its back-off; the waiting
    connections stay queued in the kernel).  This handler counts them
    instead; every other report goes to asyncio's own handler.
    """
    failures = BurstReport(lambda count, seconds: system.log(
        "warn", None, "out of open files: %d connection%s could not be accepted in %g s (retried "
        "every second; raise ulimit -n)" % (count, "" if count == 1 else "s", seconds)))

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == "socket.accept() out of system resource":
            failures.add()
        else:
            loop.default_exception_handler(context)
    asyncio.get_running_loop().set_exception_handler(handle)


def keep_or_remove(folder: str, out: Output) -> None:
    """The temporary files folder at exit: removed when it holds no file (its empty folders go
    with it), else kept and named with how many files it holds."""
    count = sum(len(names) for _, _, names in os.walk(folder))
    if count:
        out.console("%d uploaded file%s kept in %s"
                    % (count, " is" if count == 1 else "s are", folder))
        return
    shutil.rmtree(folder, ignore_errors=True)


def print_banner(system: CentralSystem, options: "Settings", out: Output,
                 access: AccessPolicy) -> None:
    """What the server is, where it listens, and what it asks of a charger that connects."""
    out.console("OCPP Mock Server %s: OCPP %s central system (websockets %s)"
                % (__version__, " and ".join(VERSIONS), websockets.__version__))
    print_addresses(system, options, out)
    out.console("name a charger with the URL path, e.g. %s/CP-1; type help for commands, "
                "Ctrl-C to stop" % system.url)
    if system.http is not None:
        api = system.http
        token = "?token=" + urllib.parse.quote(api.token, safe="") if api.token else ""
        out.console("web page and HTTP API: %s%s   files: %s" % (api.url, token, api.files.root))
    if system.transcript is not None:
        out.console("transcript: every frame is appended to %s" % system.transcript.path)
    if not is_loopback(options.host):
        system.log("warn", None, "listening on %s, not loopback: any machine that reaches this "
                   "port can act as a charger (see the guide's security section)" % options.host)
    if access.password is not None:
        out.console("HTTP Basic auth required: username = charge point id (security profile 1)")
        if len(access.password) < 16:
            system.log("warn", None, "the --basic-auth key is %d bytes; the security "
                       "whitepaper's AuthorizationKey is 16 to 20 bytes (it is used anyway)"
                       % len(access.password))
    if system.tls_url is not None:
        out.console("TLS too (security profiles 2 and 3): %s/<charge point id>" % system.tls_url)
    if access.client_ca:
        out.console("client certificates required%s, signed by %s, CN = charge point id "
                    "(security profile 3)" % (" on wss://" if system.tls_url else "",
                                              options.client_ca))
    if access.charger_ids is not None:
        out.console("only these charge point ids may connect: "
                    + ", ".join(sorted(access.charger_ids)))


def print_addresses(system: CentralSystem, options: "Settings", out: Output) -> None:
    """Where the server listens; on every address, the addresses a charger can reach it at."""
    if options.host not in ("0.0.0.0", "::", ""):
        out.console("listening on %s   charger config: _mockServerIP = '%s'"
                    % (system.url, system.url))
        return
    out.console("listening on %s (every address)" % system.url)
    scheme = system.url.split("://")[0]
    addresses = machine_addresses()
    for address in addresses:
        out.console("  reachable as %s://%s:%d   charger config: _mockServerIP = '%s://%s:%d'"
                    % (scheme, address, system.port, scheme, address, system.port))
    if not addresses:
        out.console("  could not find this machine's addresses: ask `ip addr` (Linux, macOS: "
                    "`ifconfig`) or `ipconfig` (Windows) for one, and use ws://<it>:%d"
                    % system.port)


async def shut_down(system: CentralSystem, server: Any) -> None:
    """Close every charger connection with 1001 (going away), dropping what is still stuck after the
    grace."""
    server.close()
    try:
        # A connection stuck in its opening handshake would hold this up to
        # the websockets open timeout; do not let it keep the operator waiting.
        await asyncio.wait_for(server.wait_closed(), SHUTDOWN_GRACE)
    except asyncio.TimeoutError:
        system.log("warn", None, "connections still closing or opening after %g s; dropping them"
                   % SHUTDOWN_GRACE)
        for session in list(system.sessions.values()):
            session.websocket.transport.abort()
        await asyncio.sleep(0)


async def run_scenarios(scenarios: list[tuple[str, list[Step]]], system: CentralSystem) -> None:
    """Run the --script scenarios one after another against the same charger, each counting from
    its own start; write the --junit report; stop the server with one exit status (0: every
    scenario passed, 1: one failed)."""
    status, suites, failed = 0, [], []
    for index, (path, steps) in enumerate(scenarios):
        runner = ScenarioRunner(system, steps, os.path.basename(path), path)
        try:
            code, crash = await run_scenario(runner)
        except asyncio.CancelledError:  # the server stops: report what ran, and what did not
            runner.seconds = time.time() - runner.started_at
            suites.append(scenario_suite(runner, "the server stopped during this script"))
            suites += [unrun_suite(*scenario) for scenario in scenarios[index + 1:]]
            if system.options.junit:
                report_junit(system, system.options.junit, suites)
            raise
        finally:
            runner.close()
        status = max(status, code)
        failed += [runner.name] if code else []
        suites.append(scenario_suite(runner, crash))
    if len(scenarios) > 1:
        system.log("notice", None, "scripts: %d of %d passed%s" % (
            len(scenarios) - len(failed), len(scenarios),
            "; failed: " + ", ".join(failed) if failed else ""))
    if system.options.junit:
        status = max(status, report_junit(system, system.options.junit, suites))
    system.exit_code = status
    system.stop()


async def run_scenario(runner: ScenarioRunner) -> tuple[int, Optional[str]]:
    """Run one scenario: its exit status, and what stopped it if it was a bug of ours."""
    try:
        return await runner.run(), None
    except Exception as exc:  # a bug of ours: report it as a failed run, not a traceback
        crash = "%s: %s" % (type(exc).__name__, exc)
        runner.system.log("error", None, "the scenario stopped: " + crash)
        return 1, crash


def report_junit(system: CentralSystem, path: str, suites: list[dict]) -> int:
    """Write the --junit report and say where, in one line; 0, or 1 when it could not be
    written."""
    try:
        write_junit(path, suites)
    except OSError as exc:
        system.log("error", None, "cannot write the JUnit report %s: %s"
                   % (path, exc.strerror or exc))
        return 1
    system.log("notice", None, "JUnit report written to %s" % path)
    return 0


# --------------------------------------------------------- Settings and CLI
def config_default_address(config_path: str) -> tuple[str, int]:
    """Host and port of ``_mockServerIP`` in the charger's config.py, read without running it."""
    try:
        with open(config_path, encoding="utf-8") as config_file:
            tree = ast.parse(config_file.read())
    except (OSError, SyntaxError, ValueError):
        return DEFAULT_HOST, DEFAULT_PORT
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign) or not isinstance(node.value, ast.Constant):
            continue
        names = [target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
                 for target in node.targets]
        if "_mockServerIP" in names and isinstance(node.value.value, str):
            url = urllib.parse.urlsplit(node.value.value)
            try:
                return url.hostname or DEFAULT_HOST, url.port or DEFAULT_PORT
            except ValueError:
                break
    return DEFAULT_HOST, DEFAULT_PORT


def number_in(low: float, high: float, kind: Callable[[str], Any] = float) -> Callable[[str], Any]:
    """An argparse type: a finite number (``kind``: int or float) from ``low`` to ``high``."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not %s" % (text, "a whole number" if kind is int
                                                                else "a number")) from None
        if not low <= value <= high:  # also false for nan
            raise argparse.ArgumentTypeError("%s is out of range: give %g to %g"
                                             % (text, low, high))
        return value
    return parse


def id_token(text: str) -> str:
    """An argparse type: an idTag, CiString20 in OCPP 1.6."""
    if not 1 <= len(text) <= 20:
        raise argparse.ArgumentTypeError("an idTag is 1 to 20 characters (CiString20), got %d"
                                         % len(text))
    return text


def non_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty (an empty value would let everyone in)")
    return text


def http_token(text: str) -> str:
    """An argparse type: --http-token, visible ASCII only: it travels in an Authorization header."""
    non_empty(text)
    if not all("!" <= char <= "~" for char in text):
        raise argparse.ArgumentTypeError(
            "must be visible ASCII only (no spaces around it or in it, no accents, no control "
            "characters): it is sent as an HTTP header, where nothing else arrives intact")
    return text


def byte_size(text: str) -> int:
    """argparse type: a size in bytes, with an optional K, M or G suffix (powers of 1024)."""
    match = re.fullmatch(r"(\d{1,12})([KkMmGg]?)", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError("expected bytes, e.g. 50M, 512K or 1000000, got %r" % text)
    return int(match.group(1)) * 1024 ** " KMG".index(match.group(2).upper() or " ")


def build_parser() -> argparse.ArgumentParser:
    host, port = config_default_address(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                     "config.py"))
    parser = argparse.ArgumentParser(
        prog="ocpp_mock_server.py",
        description="OCPP 1.6 and 2.0.1 mock central system for testing chargers. "
                    "Type `help` once it runs.",
        epilog="Defaults for --host/--port come from _mockServerIP in the config.py "
               "beside this file.")
    parser.add_argument("--host", default=host, help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=number_in(0, 65535, int), default=port,
                        help="port to listen on; 0 picks a free one "
                        "(default %(default)s)")
    parser.add_argument("--ocpp", choices=tuple(VERSIONS), default=DEFAULT_VERSION.name,
                        help="the OCPP version of what is named before a charger says its own: "
                             "scripts, held commands, a charger that offers no subprotocol "
                             "(default %(default)s; each charger gets the version it asks for)")
    parser.add_argument("--dialect", choices=("auto", DIALECT_OCPP16, DIALECT_FLEXICHARGE),
                        default="auto",
                        help="auto switches a charger to flexicharge when it sends a "
                             "4-element reply "
                        "(default %(default)s)")
    parser.add_argument("--strict", action="store_true",
                        help="answer off-spec payloads with the OCPP CALLERROR instead of a "
                             "warning, refuse "
                        "chargers that offer no OCPP subprotocol (HTTP 400) and CALLs before an "
                        "accepted boot "
                        "(SecurityError)")
    parser.add_argument("--boot-status", choices=("Accepted", "Pending", "Rejected"),
                        default="Accepted",
                        help="status of BootNotification.conf (default %(default)s)")
    parser.add_argument("--heartbeat-interval", type=number_in(0, 2 ** 31 - 1, int), default=60,
                        help="interval of BootNotification.conf, seconds (default %(default)s)")
    parser.add_argument("--no-boot-data", dest="boot_data", action="store_false",
                        help="do not send the FlexiCharge BootData DataTransfer after boot")
    parser.add_argument("--flexicharge-id", type=number_in(0, 2 ** 31 - 1, int), default=100009,
                        help="chargerId and connectorID in BootData (default %(default)s)")
    parser.add_argument("--charging-price", default="5.25",
                        help="chargingPrice in BootData (default %(default)s)")
    parser.add_argument("--id-tag", type=id_token, default="1",
                        help="idTag of RemoteStartTransaction and ReserveNow (default %(default)s, "
                             "the only one "
                        "the FlexiCharge charger accepts)")
    parser.add_argument("--call-timeout", type=number_in(0.1, 86400), default=30.0,
                        help="seconds to wait for a charger's reply to a server CALL (default "
                             "%(default)g)")
    parser.add_argument("--hold-for", type=number_in(0.1, 86400), default=DEFAULT_HOLD_FOR,
                        metavar="SECONDS", help="how long a charger command typed while no "
                        "charger is ready waits for one before it is dropped (default %(default)g)")
    parser.add_argument("--auto-start-after", type=number_in(0, 86400), metavar="N",
                        help="send RemoteStartTransaction N seconds after a charger's handshake")
    parser.add_argument("--auto-stop-after", type=number_in(0, 86400), metavar="M",
                        help="send RemoteStopTransaction M seconds after a charger's "
                             "StartTransaction")
    parser.add_argument("--max-message-size", type=number_in(1024, 16 * 1024 * 1024, int),
                        default=DEFAULT_MAX_MESSAGE_SIZE,
                        help="largest frame accepted, bytes; larger ones close the "
                             "connection with 1009 "
                        "(default %(default)s)")
    security = parser.add_argument_group("access control (OCPP 1.6 security profiles)")
    security.add_argument("--basic-auth", metavar="KEY", type=non_empty,
                          help="profile 1: require HTTP Basic auth, username = charge point id, "
                               "password = KEY")
    security.add_argument("--basic-auth-hex", metavar="HEX", type=non_empty,
                          help="like --basic-auth, with the key given as hex bytes (e.g. a 20-byte "
                               "AuthorizationKey)")
    security.add_argument("--certfile",
                          help="profile 2: serve wss:// with this PEM certificate (chain)")
    security.add_argument("--keyfile", help="the certificate's private key, if not in --certfile")
    security.add_argument("--tls-port", type=number_in(0, 65535, int), metavar="PORT",
                          help="with --certfile: serve wss:// on PORT and keep ws:// on --port, "
                               "so a station can move from profile 1 to 2 on one server")
    security.add_argument("--client-ca", metavar="FILE",
                          help="profile 3: with --certfile, require a client certificate signed by "
                               "this CA (PEM), "
                          "its CN the charge point id (HTTP 403 otherwise)")
    security.add_argument("--ca-cert", metavar="FILE",
                          help="sign chargers' SignCertificate CSRs with this CA "
                          "certificate (PEM; with --ca-key; needs the openssl command) and send "
                          "CertificateSigned")
    security.add_argument("--ca-key", metavar="FILE", help="the private key of --ca-cert (PEM)")
    security.add_argument("--charger-ids", metavar="A,B,...", type=non_empty,
                          help="only these charge point ids may connect; others get HTTP 404")
    authorization = parser.add_argument_group("authorization (idTagInfo in Authorize, "
                                              "StartTransaction, "
                                              "StopTransaction; idTokenInfo in Authorize, "
                                              "TransactionEvent)")
    authorization.add_argument("--tag", action="append", default=[], metavar="TAG=STATUS",
                               help="answer TAG with STATUS (%s; the last five become Blocked "
                               "or Invalid in idTagInfo); repeatable"
                               % ", ".join(TAG_RULE_STATUSES))
    authorization.add_argument("--tags", metavar="FILE",
                               help='JSON rules: {"TAG": "Blocked", "TAG2": {"status": "Accepted", '
                               '"expiryDate": "...", "parentIdTag": "..."}}')
    authorization.add_argument("--unknown-tags", choices=TAG_RULE_STATUSES, default="Accepted",
                               help="the answer for tags no rule names (default %(default)s)")
    authorization.add_argument("--concurrent-tx", action="store_true",
                               help="answer ConcurrentTx for a tag that already has an open "
                                    "transaction "
                               "on another connector")
    web = parser.add_argument_group("HTTP API, web page and file server (a second port; see "
                                    "docs/api.md)")
    web.add_argument("--http-host", default=DEFAULT_HOST, metavar="HOST",
                     help="address of the HTTP port (default %(default)s; any other needs "
                          "--http-token)")
    web.add_argument("--http-port", type=number_in(0, 65535, int), metavar="PORT",
                     help="default: the websocket port + 1 (a free port with --port 0)")
    web.add_argument("--no-http", dest="http", action="store_false", help="no HTTP port at all")
    web.add_argument("--http-token", type=http_token, metavar="TOKEN",
                     help="every HTTP request needs it (Authorization: Bearer TOKEN, or open "
                          "/?token=TOKEN once)")
    web.add_argument("--http-max-connections", type=number_in(1, 1000000, int), metavar="N",
                     default=DEFAULT_HTTP_MAX_CONNECTIONS,
                     help="HTTP connections served at once; more get 503 (default "
                     "%(default)s, fewer when the open-files limit is low)")
    web.add_argument("--files-dir", metavar="DIR",
                     help="where uploads are stored and files are served from "
                     "(default: a new temporary folder, kept at exit)")
    web.add_argument("--max-upload-size", type=byte_size, default=DEFAULT_MAX_UPLOAD,
                     metavar="BYTES", help="largest upload, bytes; K and M suffixes (default 50M)")
    web.add_argument("--files-quota", type=byte_size, default=DEFAULT_FILES_QUOTA, metavar="BYTES",
                     help="most the files folder may hold, bytes; K, M and G suffixes "
                          "(default 500M)")
    parser.add_argument("--fault", dest="faults", action="append", default=[], metavar="FAULT",
                        help="inject a fault from the start, e.g. --fault 'BootNotification "
                             "status=Pending times=2' "
                        "or --fault '@CP-1 disconnect after=5'; repeatable (docs/faults.md)")
    parser.add_argument("--script", metavar="FILE", action="append", default=[],
                        help="run a scenario against the first charger that connects, then exit "
                             "0 (passed), "
                        "1 (failed) or 2 (invalid script); see docs/ci.md. Repeatable, or a "
                        "FOLDER (its *.txt in name order): run one after another, one exit status")
    parser.add_argument("--junit", metavar="FILE",
                        help="with --script: write a JUnit XML report of the run to FILE (a "
                             "testsuite per script, a testcase per step; see docs/ci.md)")
    parser.add_argument("--log", metavar="FILE",
                        help="append every frame in and out to FILE, one JSON object per line")
    parser.add_argument("--quiet", action="store_true",
                        help="print warnings, errors and console answers only")
    parser.add_argument("--wide", action="store_true",
                        help="at a terminal, print frame lines whole (by default they are cut "
                             "to its width; in files and pipes they are always whole)")
    add_replay_arguments(parser)
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    return parser


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    """--replay and its flags (docs/ci.md, "Replaying a recorded session")."""
    parser.add_argument("--replay", metavar="FILE",
                        help="play the central system's side of a --log transcript again against "
                             "the charger that connects and compare what it sends; exit 0 (the "
                             "same), 1 (different) or 2 (transcript unusable); see docs/ci.md")
    parser.add_argument("--replay-run", type=number_in(1, REPLAY_MAX_RECORDS, int), metavar="N",
                        help="replay the transcript's Nth run (1 = the first; default: the last)")
    parser.add_argument("--replay-charger", metavar="ID",
                        help="replay only this charge point of the transcript (default: each)")
    parser.add_argument("--replay-ignore", action="append", default=[], metavar="FIELD",
                        help="leave a field out of the comparison: a name (any depth) or a dotted "
                             "path such as idTagInfo.status; repeatable")
    parser.add_argument("--replay-tolerance", type=number_in(0, 100), metavar="PERCENT",
                        default=REPLAY_DEFAULT_TOLERANCE,
                        help="how far a meter reading may be from the recorded one "
                             "(default %(default)g %%)")
    parser.add_argument("--replay-timeout", type=number_in(0.1, 86400), metavar="SECONDS",
                        default=REPLAY_QUIET_SECONDS,
                        help="end the replay when the chargers have sent nothing to compare for "
                             "this long (default %(default)g)")
    parser.add_argument("--replay-heartbeats", action="store_true",
                        help="compare Heartbeats too (by default they are left out)")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every option of one run, typed and checked: built once from the command line
    (parse_settings), read-only after.

    The flags as build_parser names them, plus what they mean once checked:
    ``password`` (bytes of --basic-auth or --basic-auth-hex, or None),
    ``charger_ids`` (the allow-list, or None) and ``tag_rules`` (idTag ->
    (idTagInfo, the rule that set it)).
    """

    host: str
    port: int
    ocpp: str
    dialect: str
    strict: bool
    boot_status: str
    heartbeat_interval: int
    boot_data: bool
    flexicharge_id: int
    charging_price: str
    id_tag: str
    call_timeout: float
    hold_for: float
    auto_start_after: Optional[float]
    auto_stop_after: Optional[float]
    max_message_size: int
    password: Optional[bytes]
    certfile: Optional[str]
    keyfile: Optional[str]
    tls_port: Optional[int]
    client_ca: Optional[str]
    ca_cert: Optional[str]
    ca_key: Optional[str]
    charger_ids: Optional[list[str]]
    tag_rules: dict[str, tuple[dict, str]]
    unknown_tags: str
    concurrent_tx: bool
    script: list[str]
    log: Optional[str]
    replay: Optional[str]
    replay_run: Optional[int]
    replay_charger: Optional[str]
    replay_ignore: list[str]
    replay_tolerance: float
    replay_heartbeats: bool
    replay_timeout: float
    quiet: bool
    wide: bool
    faults: list[str]
    http: bool
    http_host: str
    http_port: Optional[int]
    http_token: Optional[str]
    http_max_connections: int
    files_dir: Optional[str]
    max_upload_size: int
    files_quota: int
    junit: Optional[str]


def parse_settings(argv: Optional[list[str]] = None) -> Settings:
    """The command line, checked: usage mistakes exit 2 with one line."""
    parser = build_parser()
    options = parser.parse_args(argv)
    try:
        derived = {"password": _password(options), "charger_ids": _charger_ids(options.charger_ids),
                   "tag_rules": load_tag_rules(options.tags, options.tag)}
    except ValueError as exc:
        parser.error(str(exc))
    if options.keyfile and not options.certfile:
        parser.error("--keyfile needs --certfile")
    if len(options.faults) > MAX_FAULTS:
        parser.error("--fault given %d times; at most %d faults may be in force"
                     % (len(options.faults), MAX_FAULTS))
    for text in options.faults:
        try:
            fault_command(text)
        except CommandError as exc:
            parser.error("--fault %s: %s" % (text, exc))
    if _tls_flag_without_certfile(options):
        parser.error(_tls_flag_without_certfile(options))
    if bool(options.ca_cert) != bool(options.ca_key):
        parser.error("--ca-cert and --ca-key go together")
    for flag, path in (("--ca-cert", options.ca_cert), ("--ca-key", options.ca_key)):
        if path and not os.path.isfile(path):
            parser.error("%s %s: no such file" % (flag, path))
    if options.ca_cert and shutil.which("openssl") is None:
        parser.error("--ca-cert signs with the openssl command, which is not on PATH (apt "
                     "install openssl); "
                     "without --ca-cert the server saves each CSR for you to sign")
    _check_junit(parser, options)
    if options.http and not is_loopback(options.http_host) and options.http_token is None:
        parser.error("--http-host %s is reachable from other machines, and anyone who reaches the "
                     "HTTP port can "
                     "drive every charger: give --http-token TOKEN too (or --no-http)"
                     % options.http_host)
    return Settings(**derived, **{field.name: getattr(options, field.name)
                                  for field in dataclasses.fields(Settings)
                                  if field.name not in derived})


def _tls_flag_without_certfile(options: argparse.Namespace) -> str:
    """The usage mistake of a TLS flag given without --certfile, or ""."""
    if options.client_ca and not options.certfile:
        return "--client-ca needs --certfile (security profile 3 is TLS with client certificates)"
    if options.tls_port is not None and not options.certfile:
        return "--tls-port needs --certfile (the wss:// listener serves it)"
    return ""


def _check_junit(parser: argparse.ArgumentParser, options: argparse.Namespace) -> None:
    if options.junit and not options.script and not getattr(options, "replay", None):
        parser.error("--junit FILE reports a --script run (or a --replay run): give one")


def _password(options: "Settings") -> Optional[bytes]:
    """The security profile 1 key as bytes: --basic-auth as UTF-8, --basic-auth-hex as the bytes it
    spells."""
    if options.basic_auth is not None and options.basic_auth_hex is not None:
        raise ValueError("give --basic-auth or --basic-auth-hex, not both")
    if options.basic_auth is not None:
        return options.basic_auth.encode("utf-8")
    if options.basic_auth_hex is not None:
        try:
            return bytes.fromhex(options.basic_auth_hex)
        except ValueError:
            raise ValueError("--basic-auth-hex needs hex digits, e.g. 0123456789abcdef") from None
    return None


def _charger_ids(given: Optional[str]) -> Optional[list[str]]:
    if given is None:
        return None
    names = [name.strip() for name in given.split(",") if name.strip()]
    if not names:
        raise ValueError("--charger-ids %r names no charge point id (an empty list would let "
                         "everyone in)" % given)
    return names


def load_tag_rules(path: Optional[str], flags: list[str]) -> dict[str, tuple[dict, str]]:
    """--tags FILE and --tag TAG=STATUS as {tag: (idTagInfo, rule)}; --tag wins. ValueError says
    what is wrong."""
    rules: dict[str, tuple[dict, str]] = {}
    if path:
        try:
            with open(path, encoding="utf-8") as tags_file:
                table = loads_strict(tags_file.read())
        except OSError as exc:
            raise ValueError("--tags %s: %s" % (path, exc.strerror or exc)) from None
        except ValueError as exc:
            raise ValueError("--tags %s is not JSON: %s" % (path, exc)) from None
        if not isinstance(table, dict):
            raise ValueError('--tags %s must be a JSON object like {"TAG": "Blocked"}' % path)
        for tag, answer in table.items():
            if not 1 <= len(tag) <= 20:
                raise ValueError("--tags %s: tag %s is not 1 to 20 characters (CiString20)"
                                 % (path, _show(tag)))
            info = {"status": answer} if isinstance(answer, str) else answer
            problems = lint_payload(TAG_RULE, info)
            if problems:
                raise ValueError("--tags %s, tag %s: %s" % (path, _show(tag), problems[0]))
            rules[tag] = (info, "--tags %s" % os.path.basename(path))
    for flag in flags:
        tag, equals, status = flag.partition("=")
        if not equals or not 1 <= len(tag) <= 20 or status not in TAG_RULE_STATUSES:
            raise ValueError("--tag %s: expected TAG=STATUS, STATUS one of %s"
                             % (flag, ", ".join(TAG_RULE_STATUSES)))
        rules[tag] = ({"status": status}, "--tag %s" % flag)
    return rules


class TerminalSettings:
    """The terminal's settings at start-up, to put back on every way out."""

    def __init__(self) -> None:
        self.saved: Any = None
        try:
            import termios
            if sys.stdin.isatty():
                self.saved = termios.tcgetattr(sys.stdin.fileno())
        except (ImportError, OSError, ValueError):  # Windows, or no terminal
            pass

    def restore(self) -> None:
        if self.saved is not None:
            import termios
            try:
                termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self.saved)
                sys.stdout.write("\n")  # past the prompt readline may have left
                sys.stdout.flush()
            except (OSError, ValueError):
                pass


def main(argv: Optional[list[str]] = None) -> int:
    too_old = websockets_too_old()
    if too_old is not None:
        sys.stderr.write("ocpp_mock_server: %s\n" % too_old)
        return 2
    options = parse_settings(argv)
    raise_open_files_limit()
    out = Output(quiet=options.quiet, wide=options.wide)
    terminal = TerminalSettings()
    settle_garbage_collector()
    try:
        return asyncio.run(run_server(options, out))
    except KeyboardInterrupt:
        return 0
    finally:
        try:
            out.close()
        except KeyboardInterrupt:  # a second Ctrl-C while the last lines are written: stop writing
            pass
        # readline may have left it mid-line: quit, Ctrl-C, SIGTERM and a crash alike
        terminal.restore()


if __name__ == "__main__":
    sys.exit(main())
