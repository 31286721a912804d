"""The OpenAPI document as Markdown (docs/api.md, `ingest openapi --markdown`)."""

from __future__ import annotations

from typing import Any


def render_markdown(document: dict[str, Any]) -> str:
    """The OpenAPI document as Markdown, for docs/api.md (generated, never edited by hand)."""
    lines = [
        f"# {document['info']['title']} HTTP API",
        "",
        "Generated from the service's own OpenAPI document (`GET /openapi.json`) for the",
        "example configuration: `ingest --config deploy/ingest.example.toml openapi --markdown`.",
        "A test fails when this file and the code disagree.",
        "",
        document["info"]["description"],
        "",
    ]
    schemes = document["components"].get("securitySchemes", {})
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            lines += _operation_markdown(method, path, operation, schemes)
    lines += ["## Schemas", ""]
    for name, schema in document["components"]["schemas"].items():
        lines += _schema_markdown(name, schema)
    return "\n".join(lines).rstrip("\n") + "\n"


def _operation_markdown(
    method: str, path: str, operation: dict[str, Any], schemes: dict[str, Any]
) -> list[str]:
    lines = [f"## {method.upper()} `{path}`", "", operation["summary"] + ".", ""]
    for requirement in operation.get("security", []):
        lines += ["Authentication (all of):", ""]
        lines += [f"- {_scheme_markdown(schemes[name])}" for name in requirement]
        lines.append("")
    if params := operation.get("parameters", []):
        lines += ["| parameter | in | required | values |", "|---|---|---|---|"]
        for param in params:
            values = ", ".join(f"`{v}`" for v in param["schema"].get("enum", [])) or "string"
            if param.get("description"):
                values += f": {param['description']}"
            required = "yes" if param.get("required") else "no"
            lines.append(f"| `{param['name']}` | {param['in']} | {required} | {values} |")
        lines.append("")
    if body := operation.get("requestBody"):
        lines += ["Request body (any other content type: 415):", ""]
        lines += [f"- `{kind}`: {_schema_name(media)}" for kind, media in body["content"].items()]
        lines.append("")
    lines += ["| status | meaning | body | headers |", "|---|---|---|---|"]
    for status, response in operation["responses"].items():
        content = response.get("content", {})
        bodies = ", ".join(f"{_schema_name(m)} (`{k}`)" for k, m in content.items()) or "-"
        headers = ", ".join(f"`{h}`" for h in response.get("headers", {})) or "-"
        lines.append(f"| {status} | {response['description']} | {bodies} | {headers} |")
    lines.append("")
    return lines


def _scheme_markdown(scheme: dict[str, Any]) -> str:
    if scheme["type"] == "http":
        return f"`Authorization: Bearer <token>`: {scheme.get('description', '')}"
    return f"{scheme['in']} `{scheme['name']}`: {scheme.get('description', '')}"


def _schema_markdown(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", ""]
    if schema.get("description"):
        lines += [schema["description"], ""]
    for part in schema.get("allOf", []):
        lines += [f"All of {_schema_name({'schema': part})}.", ""]
    if alternatives := schema.get("anyOf"):
        needs = " or ".join("+".join(f"`{f}`" for f in alt.get("required", [])) for alt in alternatives)
        lines += [f"Required: {needs}.", ""]
    if not schema.get("properties"):
        return lines
    required = set(schema.get("required", []))
    lines += ["| field | type | required | notes |", "|---|---|---|---|"]
    for field, spec in schema.get("properties", {}).items():
        kind = spec.get("type", "any")
        if isinstance(kind, list):
            kind = " or ".join(kind)
        if "enum" in spec:
            kind += ": " + ", ".join(f"`{v}`" for v in spec["enum"])
        if "format" in spec:
            kind += f" ({spec['format']})"
        notes = spec.get("description", "-")
        lines.append(f"| `{field}` | {kind} | {'yes' if field in required else 'no'} | {notes} |")
    lines.append("")
    return lines


def _schema_name(media: dict[str, Any]) -> str:
    schema = media.get("schema", {})
    if alternatives := schema.get("anyOf"):
        return " or ".join(_schema_name({"schema": alt}) for alt in alternatives)
    ref = schema.get("$ref", "")
    if not ref:
        return "text" if schema.get("type", "string") == "string" else str(schema.get("type", "text"))
    name = ref.rsplit("/", 1)[-1]
    return f"[{name}](#{name.lower().replace('.', '')})"
