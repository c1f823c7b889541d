#!/usr/bin/env python3
"""Print the OCPP 2.0.1 field rules of ocpp_mock_server.py, generated from the official schemas.

    python scripts/ocpp201_tables.py [SCHEMA_FOLDER] [--check]

SCHEMA_FOLDER holds the 128 official OCPP 2.0.1 JSON schemas (``AuthorizeRequest.json``...);
without it, the ``ocpp`` package's ``v201/schemas`` (the package is imported only to find that
folder).  The output is the module's section "OCPP 2.0.1 field rules", banner included, ready to
paste over the old one: the enums as tuples of strings (``V201_...``), the object types as small
functions (``_v201_...(required=False) -> Object``), and the three tables the server reads,
``V201_CHARGER_REQUESTS``, ``V201_SERVER_REQUESTS`` and ``V201_CHARGER_REPLIES`` (action -> field
name -> Rule).  ``--check`` prints nothing and exits 1 when the module's section differs from the
output (tests/test_v201_rules.py checks the same).

The output is deterministic (names sorted; fields in the schemas' order) and every line is at most
100 characters.  A schema keyword or format the lint does not know stops the script with exit
status 2, rather than letting a rule pass unchecked.
"""

import json
import re
import sys
from pathlib import Path

MODULE = Path(__file__).resolve().parent.parent / "ocpp_mock_server.py"
SECTION = "OCPP 2.0.1 field rules"
NEXT_SECTION = "Output and transcript"
LINE_LIMIT = 100

# Which side sends which CALL: the schemas do not say.  DataTransfer goes both ways.
CHARGER_ACTIONS = (
    "BootNotification", "Heartbeat", "StatusNotification", "Authorize", "TransactionEvent",
    "MeterValues", "NotifyReport", "NotifyEvent", "NotifyMonitoringReport",
    "NotifyCustomerInformation", "NotifyDisplayMessages", "SecurityEventNotification",
    "SignCertificate", "FirmwareStatusNotification", "PublishFirmwareStatusNotification",
    "LogStatusNotification", "ReservationStatusUpdate", "NotifyChargingLimit",
    "ClearedChargingLimit", "NotifyEVChargingNeeds", "NotifyEVChargingSchedule",
    "ReportChargingProfiles", "Get15118EVCertificate", "GetCertificateStatus", "DataTransfer",
)
SERVER_ACTIONS = (
    "GetBaseReport", "GetReport", "GetVariables", "SetVariables", "SetNetworkProfile", "Reset",
    "ClearCache", "SendLocalList", "GetLocalListVersion", "GetTransactionStatus",
    "RequestStartTransaction", "RequestStopTransaction", "TriggerMessage", "UnlockConnector",
    "ChangeAvailability", "ReserveNow", "CancelReservation", "CostUpdated", "SetChargingProfile",
    "GetChargingProfiles", "ClearChargingProfile", "GetCompositeSchedule", "UpdateFirmware",
    "PublishFirmware", "UnpublishFirmware", "CertificateSigned", "InstallCertificate",
    "DeleteCertificate", "GetInstalledCertificateIds", "GetLog", "GetMonitoringReport",
    "SetMonitoringBase", "SetMonitoringLevel", "SetVariableMonitoring", "ClearVariableMonitoring",
    "CustomerInformation", "SetDisplayMessage", "GetDisplayMessages", "ClearDisplayMessage",
    "DataTransfer",
)

# What the lint checks, and what only documents (a keyword outside both stops the script).
CHECKED = {"type", "$ref", "properties", "required", "additionalProperties", "enum", "maxLength",
           "format", "items", "minItems", "maxItems", "minimum", "maximum"}
IGNORED = {"$schema", "comment", "description", "javaType", "default", "definitions",
           "additionalItems"}  # additionalItems means nothing when items is one schema
FORMATS = {"date-time": "DateTime"}


class Unsupported(Exception):
    """The schemas say something the generated rules could not check."""


def schema_folder() -> Path:
    import ocpp  # only to find its schemas: the server never imports it

    return Path(ocpp.__file__).resolve().parent / "v201" / "schemas"


def load_schemas(folder: Path) -> dict:
    """File stem (``AuthorizeRequest``) -> schema, for every ``*.json`` in ``folder``."""
    schemas = {path.stem: json.loads(path.read_text(encoding="utf-8"))
               for path in sorted(folder.glob("*.json"))}
    if not schemas:
        raise Unsupported(f"no *.json schemas in {folder}")
    return schemas


def _meaning(schema):
    """A schema without its documentation: two definitions are the same if these are equal."""
    if isinstance(schema, dict):
        return {key: _meaning(value) for key, value in schema.items()
                if key not in ("description", "javaType", "comment")}
    if isinstance(schema, list):
        return [_meaning(value) for value in schema]
    return schema


def merged_definitions(schemas: dict) -> dict:
    """Definition name -> schema, over all files; a name that means two things stops the script
    (the generated names would clash)."""
    definitions = {}
    for stem, schema in schemas.items():
        for name, definition in schema.get("definitions", {}).items():
            if name in definitions and _meaning(definitions[name]) != _meaning(definition):
                raise Unsupported(f"{stem}: definition {name} differs from another file's")
            definitions.setdefault(name, definition)
    return definitions


def _snake(name: str) -> str:
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    return words.lower()


def enum_constant(definition_name: str) -> str:
    """``ChargingStateEnumType`` -> ``V201_CHARGING_STATE``."""
    return "V201_" + _snake(re.sub(r"(Enum)?Type$", "", definition_name)).upper()


def object_function(definition_name: str) -> str:
    """``IdTokenType`` -> ``_v201_id_token``."""
    return "_v201_" + _snake(re.sub(r"Type$", "", definition_name))


def _is_enum(schema: dict) -> bool:
    return schema.get("type") == "string" and "enum" in schema


def _check_keywords(schema: dict, where: str) -> None:
    unknown = set(schema) - CHECKED - IGNORED
    if unknown:
        raise Unsupported(f"{where}: keyword(s) {', '.join(sorted(unknown))}")
    if "format" in schema and schema["format"] not in FORMATS:
        raise Unsupported(f"{where}: format {schema['format']}")


def _number(value) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Generator:
    """Renders rules as source, noting the enums and object types they use."""

    def __init__(self, definitions: dict) -> None:
        self.definitions = definitions
        self.used = set()  # definition names the output needs

    def rule(self, schema: dict, required: bool, where: str) -> tuple:
        """(callee, [arguments]) of the rule for ``schema``."""
        _check_keywords(schema, where)
        flag = ["required=True"] if required else []
        if "$ref" in schema:
            return self._reference(schema["$ref"].split("/")[-1], flag, where)
        kind = schema.get("type")
        if _is_enum(schema):
            return "Enum", [_tuple(schema["enum"])] + flag
        if kind == "string" and "format" in schema:
            return FORMATS[schema["format"]], flag
        if kind == "string":
            return "String", ([str(schema["maxLength"])] if "maxLength" in schema else []) + flag
        if kind in ("integer", "number"):
            bounds = [f"{key}={_number(schema[key])}"
                      for key in ("minimum", "maximum") if key in schema]
            callee = "Integer" if kind == "integer" else "Decimal"
            callee = "Bounded" + callee.replace("Decimal", "Number") if bounds else callee
            return callee, bounds + flag
        if kind == "boolean":
            return "Boolean", flag
        if kind == "array":
            return self._array(schema, flag, where)
        if kind is None and not set(schema) & CHECKED:
            return "Anything", flag  # no rule: any JSON value
        raise Unsupported(f"{where}: a {kind} here (only $ref objects are generated)")

    def _reference(self, name: str, flag: list, where: str) -> tuple:
        definition = self.definitions[name]
        self.used.add(name)
        if _is_enum(definition):
            _check_keywords(definition, name)
            return "Enum", [enum_constant(name)] + flag
        if definition.get("type") != "object":
            raise Unsupported(f"{where}: {name} is neither an enum nor an object")
        return object_function(name), flag

    def _array(self, schema: dict, flag: list, where: str) -> tuple:
        items = schema["items"]
        if not isinstance(items, dict):
            raise Unsupported(f"{where}: items is a list")
        arguments = [render(*self.rule(items, False, where + "[]"))]
        if schema.get("minItems", 0):
            arguments.append(f"min_items={schema['minItems']}")
        if "maxItems" in schema:
            arguments.append(f"max_items={schema['maxItems']}")
        return "Array", arguments + flag

    def fields(self, schema: dict, where: str, indent: str) -> list:
        """The lines of the ``{...}`` body of an object's fields, one field a line."""
        _check_keywords(schema, where)
        if schema.get("type") != "object":
            raise Unsupported(f"{where}: not an object")
        required = set(schema.get("required", ()))
        unknown = required - set(schema.get("properties", {}))
        if unknown:
            raise Unsupported(f"{where}: required {', '.join(sorted(unknown))} has no rule")
        lines = []
        for name, field in schema.get("properties", {}).items():
            callee, arguments = self.rule(field, name in required, where + "." + name)
            lines.extend(wrap(indent + f'"{name}": ', callee, arguments, ","))
        return lines

    def function(self, name: str) -> list:
        """The source of the function that builds the Object of definition ``name``."""
        definition = self.definitions[name]
        kind = "Object" if definition.get("additionalProperties") is False else "OpenObject"
        lines = ["@functools.cache",
                 f"def {object_function(name)}(required: bool = False) -> Object:",
                 f"    return {kind}({{"]
        lines += self.fields(definition, name, " " * 8)
        return lines + ["    }, required=required)"]


def render(callee: str, arguments: list) -> str:
    return f"{callee}({', '.join(arguments)})"


def wrap(prefix: str, callee: str, arguments: list, suffix: str) -> list:
    """``prefix callee(arguments)suffix`` on one line, or its arguments wrapped under the
    parenthesis when that line would be too long."""
    line = prefix + render(callee, arguments) + suffix
    if len(line) <= LINE_LIMIT:
        return [line]
    opening = prefix + callee + "("
    hanging = " " * len(opening)
    lines, current = [], opening
    for index, argument in enumerate(arguments):
        piece = argument + (")" + suffix if index == len(arguments) - 1 else ",")
        if current in (opening, hanging):
            current += piece
        elif len(current + " " + piece) > LINE_LIMIT:
            lines.append(current)
            current = hanging + piece
        else:
            current += " " + piece
    return lines + [current]


def _tuple(values: list) -> str:
    return render("", _items(values))


def _items(values: list) -> list:
    """The values as the elements of a tuple literal (one alone gets its comma)."""
    items = [json.dumps(value) for value in values]
    return [items[0] + ","] if len(items) == 1 else items


def constant(name: str, values: list) -> list:
    """``NAME = ("a", "b", ...)`` wrapped under its parenthesis."""
    return wrap(name + " = ", "", _items(values), "")


def table(generator: Generator, name: str, comment: str, schemas: dict, actions: list,
          suffix: str) -> list:
    lines = ["# " + comment, f"{name}: dict[str, dict[str, Rule]] = {{"]
    for action in sorted(actions):
        stem = action + suffix
        schema = schemas[stem]
        if schema.get("additionalProperties") is not False:
            raise Unsupported(f"{stem}: the payload itself is open")
        body = generator.fields(schema, stem, " " * 8)
        if body:
            lines += [f'    "{action}": {{'] + body + ["    },"]
        else:
            lines.append(f'    "{action}": {{}},')
    return lines + ["}"]


def banner(name: str) -> str:
    return "# " + "-" * (75 - 3 - len(name)) + " " + name


def section(schemas: dict) -> str:
    """The module's section of 2.0.1 field rules, as source text ending in a newline."""
    generator = Generator(merged_definitions(schemas))
    tables = table(generator, "V201_CHARGER_REQUESTS", "Requests a 2.0.1 charging station sends.",
                   schemas, CHARGER_ACTIONS, "Request")
    tables += [""] + table(generator, "V201_SERVER_REQUESTS",
                           "Requests the server sends to a 2.0.1 charging station.", schemas,
                           SERVER_ACTIONS, "Request")
    tables += [""] + table(generator, "V201_CHARGER_REPLIES",
                           "What a 2.0.1 charging station answers to each server request.",
                           schemas, SERVER_ACTIONS, "Response")
    functions = {}
    while generator.used - set(functions):  # an object type's fields use more definitions
        for name in sorted(generator.used - set(functions)):
            is_enum = _is_enum(generator.definitions[name])
            functions[name] = [] if is_enum else generator.function(name)
    enums = sorted(name for name, lines in functions.items() if not lines)
    lines = [banner(SECTION),
             "# Generated by scripts/ocpp201_tables.py from the official OCPP 2.0.1 JSON schemas;",
             "# do not edit by hand: change the script, run it and paste its output here.",
             "# An object type's rules are built once (functools.cache) and shared: rules do not",
             "# change once built.",
             ""]
    lines += [line for name in enums
              for line in constant(enum_constant(name), generator.definitions[name]["enum"])]
    for name in sorted(name for name, lines in functions.items() if lines):
        lines += ["", ""] + functions[name]
    lines += ["", ""] + tables
    return "\n".join(lines) + "\n"


def module_section(text: str) -> str:
    """The section as it stands in the module's ``text`` (empty when there is none)."""
    pattern = rf"^{re.escape(banner(SECTION))}\n.*?(?=^# -+ {NEXT_SECTION}\n)"
    found = re.search(pattern, text, re.DOTALL | re.MULTILINE)
    return found.group(0).rstrip("\n") + "\n" if found else ""


def main(argv: list) -> int:
    arguments = [argument for argument in argv if argument != "--check"]
    try:
        generated = section(load_schemas(Path(arguments[0]) if arguments else schema_folder()))
    except Unsupported as problem:
        print(f"ocpp201_tables: {problem}", file=sys.stderr)
        return 2
    if "--check" in argv:
        return 0 if module_section(MODULE.read_text(encoding="utf-8")) == generated else 1
    sys.stdout.write(generated)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
