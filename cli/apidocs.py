"""docs/api.md, generated from the service's OpenAPI document (`service.app.create_app().openapi()`):
every route with its parameters, body and responses, then every schema with its fields."""

from __future__ import annotations

import json

INTRO = """# API reference

Generated from the OpenAPI document by `python -m cli.docs`; a running service serves the same document
at `/openapi.json` and interactive docs at `/docs`. Every `/v1` route needs `Authorization: Bearer <key>`.
Errors are `application/problem+json`: `{type, title, status, detail, code}`, where `code` is stable
(what a program matches on); request validation errors are `422` with code `invalid_request` and an
`errors` list. The Python SDK (`sdk.Client`) and the `pareto` commands wrap these routes
([quickstart](quickstart.md)).
"""


def _anchor(name: str) -> str:
    return name.lower()


def _type(schema: dict) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_anchor(name)})"
    if "enum" in schema:
        return " \\| ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    for union in ("anyOf", "oneOf"):
        if union in schema:
            return " \\| ".join(_type(s) for s in schema[union])
    if schema.get("type") == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if schema.get("type") == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"map of {_type(schema['additionalProperties'])}"
    return schema.get("type", "any")


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _operation(method: str, path: str, op: dict) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", "", _cell(op.get("description") or op.get("summary", "")), ""]
    params = op.get("parameters", [])
    if params:
        lines += ["| parameter | in | type | required | meaning |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| `{p['name']}` | {p['in']} | {_type(p.get('schema', {}))} "
                  f"| {'yes' if p.get('required') else 'no'} | {_cell(p.get('description', ''))} |" for p in params]
        lines.append("")
    body = op.get("requestBody", {}).get("content", {})
    for media, content in body.items():
        lines += [f"Body (`{media}`): {_type(content.get('schema', {}))}", ""]
    for status, response in op.get("responses", {}).items():
        kinds = [f"`{media}` {_type(c['schema'])}" if c.get("schema") else f"`{media}`"
                 for media, c in response.get("content", {}).items()]
        described = f"- **{status}** {_cell(response.get('description', ''))}"
        lines.append(described + (f": {', '.join(kinds)}" if kinds else ""))
    return [*lines, ""]


def _schema(name: str, schema: dict) -> list[str]:
    lines = [f"### {name}", ""]
    if schema.get("description"):
        lines += [_cell(schema["description"]), ""]
    if "enum" in schema:
        return [*lines, "One of: " + ", ".join(f"`{v}`" for v in schema["enum"]), ""]
    required = set(schema.get("required", []))
    props = schema.get("properties", {})
    if props:
        lines += ["| field | type | required | default | meaning |", "| --- | --- | --- | --- | --- |"]
        for field, prop in props.items():
            default = f"`{json.dumps(prop['default'])}`" if "default" in prop else ""
            lines.append(f"| `{field}` | {_type(prop)} | {'yes' if field in required else 'no'} | {default} "
                         f"| {_cell(prop.get('description', ''))} |")
        lines.append("")
    return lines


def render_api() -> str:
    from service.app import create_app

    spec = create_app().openapi()
    lines = [INTRO, "## Routes", ""]
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            lines += _operation(method, path, op)
    lines += ["## Schemas", ""]
    for name, schema in sorted(spec.get("components", {}).get("schemas", {}).items()):
        lines += _schema(name, schema)
    return "\n".join(lines).rstrip() + "\n"
