"""The OpenAPI 3.0 document of /api/v1 (docs/CONTRACT-api.md).

`document(routes)` builds the document's paths from the route table
(api.ROUTES): each route's operation is described here in OPERATIONS, keyed
by (method, pattern), and its security comes from the route's auth, so the
document lists exactly the routes the dispatcher serves (a route without a
description, or a description without a route, fails at import).  The named
schemas (COMPONENTS) and the fragments the operations share are in
openapi_schemas.py.  Patterns come from validate.py, the handlers' own checks.
tests/net/test_api.py walks the document; schemathesis checks every route
against it."""
from __future__ import annotations

from iso_builder.media import IP_CIDR_PATTERN as media_ip_pattern
from iso_builder.media import PIN_PATTERN as media_pin_pattern
from iso_builder.media import URL_PATTERN as media_url_pattern

from ...registry.hosts import CURSOR_PATTERN
from . import validate as v
from .openapi_schemas import (_EFI, _ERR, _IPV4, _LIMIT, _MAC, _MUT, _SEC, _UUID, COMPONENTS,
                              _arr, _ok, _q, _ref)

_HOST = {"200": _ok(_ref("Host")), **_MUT}
_REGISTERED = _ok({"type": "object", "required": ["mac", "state"]})
_AFTER = _q("after", "integer", minimum=0, maximum=2 ** 62)
_AGENT = [{"agent": []}]
_SERIAL = {"type": "string", "maxLength": 128, "pattern": v.TEXT_PATTERN, "nullable": True}
H = "/api/v1/hosts/{mac}"
A = "/api/v1/accounts"
V = "/api/v1/volumes"
# policy/volumes.check_name and check_size (the lvm2-reserved pieces are 400s too)
_VOLNAME = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$"}
_SIZE = {"type": "integer", "minimum": 1 << 20, "maximum": 1 << 44, "multipleOf": 512,
         "description": "bytes: whole 512-byte sectors, 1 MiB to 16 TiB"}
_STORAGE_MUT = {"200": _ok(_ref("Job"), "the job: done (with its result) or running"),
                **_MUT, "409": _ERR, "502": _ERR, "503": _ERR}


def _body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


N = "/api/v1/networks"
_NETMUT = {"200": _ok(_ref("NetworkDetail")), **_MUT, "409": _ERR, "503": _ERR}

_NAMED = _body({"type": "object", "required": ["name"], "additionalProperties": False,
                "properties": {"name": _VOLNAME}})

# (method, pattern) -> the operation, without its security (from the route's auth).
OPERATIONS: dict = {
    ("GET", "/api/v1/status"): {"responses": {"200": _ok({"type": "object", "required": [
        "version", "mode", "hosts", "pools", "transfers", "events"]})}},
    # A page at a time: `next` is the opaque cursor of the following page
    # (null on the last); `total` counts the hosts matching the filters.
    ("GET", "/api/v1/hosts"): {"parameters": [
        _q("state", enum=list(v.STATES)), _q("arch"), _q("q"), _q("account"),
        _q("limit", "integer", minimum=1, maximum=v.MAX_LIMIT),
        _q("cursor", pattern=CURSOR_PATTERN)],
        "responses": {"200": _ok(_ref("HostPage")), "400": _ERR, "404": _ERR}},
    ("GET", H): {"responses": {"200": _ok(_ref("Host")), "400": _ERR, "404": _ERR}},
    ("PATCH", H): {"requestBody": {"required": True, "content": {
        "application/json": {"schema": _ref("Patch")}}}, "responses": _HOST},
    ("POST", H + "/actions"): {"requestBody": {"required": True, "content": {
        "application/json": {"schema": _ref("Action")}}}, "responses": {**_HOST, "409": _ERR}},
    ("POST", H + "/reset"): {"responses": _HOST},
    ("GET", A): {"responses": {"200": _ok(_arr("Account"))}},
    ("POST", A): {"requestBody": {"required": True, "content": {"application/json": {
        "schema": _ref("NewAccount")}}}, "responses": {"200": _ok(_ref("Account")), **_MUT,
                                                       "409": _ERR}},
    ("GET", A + "/{name}"): {"responses": {"200": _ok(_ref("Account")), "404": _ERR}},
    ("GET", A + "/{name}/media"): {
        "parameters": [_q("flavour", enum=["full", "net"]),
                       _q("server_url", pattern=media_url_pattern),
                       _q("ip", pattern=media_ip_pattern), _q("gateway", **_IPV4),
                       _q("dns", **_IPV4), _q("pin", pattern=media_pin_pattern)],
        "responses": {"200": {"description": "the boot image (isohybrid; Range, ETag)",
                              "content": {"application/octet-stream": {"schema": {
                                  "type": "string", "format": "binary"}}}},
                      "304": {"description": "not modified (If-None-Match)"},
                      "400": _ERR, "401": _ERR, "404": _ERR, "503": _ERR}},
    ("PATCH", A + "/{name}"): {"requestBody": {"required": True, "content": {
        "application/json": {"schema": _ref("AccountPatch")}}},
        "responses": {"200": _ok(_ref("Account")), **_MUT}},
    ("DELETE", A + "/{name}"): {"responses": {
        "200": _ok({"type": "object", "required": ["deleted"]}), **_MUT, "409": _ERR}},
    ("GET", "/api/v1/tokens"): {"parameters": [_q("account")], "responses": {
        "200": _ok(_arr("Token")), "401": _ERR, "404": _ERR}},
    ("POST", "/api/v1/tokens"): {"requestBody": {"required": True, "content": {
        "application/json": {"schema": _ref("NewToken")}}},
        "responses": {"200": _ok(_ref("Token")), **_MUT}},
    ("POST", "/api/v1/tokens/{token_id}/revoke"): {"responses": {
        "200": _ok(_ref("Token")), **_MUT}},
    ("POST", "/api/v1/tokens/rotate-key"): {"responses": {"200": _ok({
        "type": "object", "required": ["current", "keys"]}), **_MUT, "503": _ERR}},
    ("DELETE", H): {"responses": {
        "200": _ok({"type": "object", "required": ["deleted"]}), **_MUT}},
    ("POST", H + "/assign"): {"requestBody": {"required": True, "content": {
        "application/json": {"schema": _ref("Assign")}}}, "responses": _HOST},
    ("POST", H + "/approve"): {"responses": {**_HOST, "409": _ERR}},
    ("POST", H + "/retire"): {"responses": _HOST},
    ("GET", H + "/timeline"): {"parameters": [_LIMIT], "responses": {
        "200": _ok(_arr("Event")), "400": _ERR, "404": _ERR}},
    ("GET", "/api/v1/leases"): {"parameters": [_q("network"), _q("state")],
                                "responses": {"200": _ok(_arr("Lease"))}},
    ("GET", "/api/v1/networks"): {"responses": {"200": _ok(_arr("Pool"))}},
    # Networks as objects (issue 14; api_networks.py): a body is {"template": text}
    # (TOML or OpenNebula syntax) or the fields as JSON (docs/networks.md).
    ("POST", N): {"requestBody": _body(_ref("NetworkDef")), "responses": _NETMUT},
    ("GET", N + "/{name}"): {"responses": {"200": _ok(_ref("NetworkDetail")), "404": _ERR,
                                           "503": _ERR}},
    ("PUT", N + "/{name}"): {"requestBody": _body(_ref("NetworkDef")), "responses": _NETMUT},
    ("DELETE", N + "/{name}"): {
        "parameters": [_q("force", enum=["true", "false", "1", "0", "yes", "no"])],
        "responses": {"200": _ok({"type": "object", "required": ["deleted"]}), **_NETMUT}},
    ("POST", N + "/{name}/leases"): {"requestBody": _body({
        "type": "object", "required": ["leases"], "additionalProperties": False,
        "properties": {"leases": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["ip"], "additionalProperties": False,
            "properties": {"ip": {"type": "string", "format": "ipv4"},
                           "mac": {"type": "string", "pattern": v.MAC_PATTERN},
                           "hostname": {"type": "string", "nullable": True,
                                        "maxLength": 63}}}}}}),
        "responses": _NETMUT},
    ("POST", N + "/{name}/leases/remove"): {"requestBody": _body({
        "type": "object", "required": ["ips"], "additionalProperties": False,
        "properties": {"ips": {"type": "array", "minItems": 1,
                               "items": {"type": "string", "format": "ipv4"}},
                       "force": {"type": "boolean"}}}), "responses": _NETMUT},
    ("GET", "/api/v1/net/interfaces"): {"responses": {"200": _ok(_arr("Interface"))}},
    ("GET", "/api/v1/events"): {"parameters": [
        _AFTER, _LIMIT, _q("mac", pattern=v.MAC_PATTERN), _q("kind")],
        "responses": {"200": _ok(_arr("Event")), "400": _ERR}},
    ("GET", "/api/v1/events/stream"): {"parameters": [_AFTER], "responses": {
        "200": {"description": "text/event-stream of Event objects"}}},
    ("GET", "/api/v1/transfers"): {"responses": {"200": _ok(_arr("Transfer"))}},
    ("GET", "/api/v1/events/kinds"): {"responses": {"200": _ok({"type": "array", "items": {
        "type": "object", "required": ["kind", "failure", "reportable", "shown"]}},
        "the event catalog (netbootd/events.py)")}},
    ("POST", "/api/v1/agent/register"): {
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"type": "object", "required": ["mac"], "additionalProperties": False,
                       "properties": {
                "mac": {"type": "string", "pattern": v.MAC_PATTERN},
                "ip": {**_IPV4, "nullable": True}, "uuid": {**_UUID, "nullable": True},
                "token": {"type": "string", "maxLength": 512, "nullable": True},
                "ids": {"type": "object", "additionalProperties": False, "properties": {
                    "macs": {"type": "array", "maxItems": 64, "items": {
                        "type": "string", "pattern": v.MAC_PATTERN}},
                    "uuid": {"type": "string", "pattern": v.UUID_PATTERN, "nullable": True},
                    "serial": _SERIAL, "board_serial": _SERIAL}}}}}}},
        "responses": {"200": _REGISTERED, "400": _ERR, "403": _ERR, "409": _ERR, "413": _ERR,
                      "429": _ERR}},
    ("GET", "/api/v1/agent/next"): {"security": _AGENT, "responses": {
        "200": _ok({"type": "object", "required": ["action", "id", "poll"]}), "401": _ERR}},
    ("POST", "/api/v1/agent/inventory"): {"security": _AGENT, "requestBody": {
        "required": True, "content": {"application/json": {"schema": {
            "type": "object", "description": "netbootd/policy/inventory.py (schema 1)"}}}},
        "responses": {"200": _ok({"type": "object", "required": ["stored", "changed"]}),
                      "400": _ERR, "401": _ERR, "413": _ERR}},
    ("POST", "/api/v1/agent/report"): {"security": _AGENT, "requestBody": {
        "required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["id", "action", "status"]}}}},
        "responses": {"200": _ok({"type": "object", "required": ["ok"]}), "400": _ERR,
                      "401": _ERR, "409": _ERR}},
    ("GET", "/api/v1/openapi.json"): {"responses": {"200": _ok({
        "type": "object", "required": ["openapi", "paths"]}, "this document")}},
    # -- storage: mutating calls answer with their job (done, or running: poll
    # /api/v1/jobs/{job}); refusals in the first second with their status.
    ("GET", V): {"responses": {"200": _ok({"type": "object", "required": ["pools", "volumes"],
                                           "properties": {"pools": _arr("VolumePool"),
                                                          "volumes": _arr("Volume")}}),
                               "503": _ERR}},
    ("POST", V): {"requestBody": _body({"type": "object", "required": ["name", "size"],
                                        "additionalProperties": False, "properties": {
                                            "pool": {"type": "string", "nullable": True},
                                            "name": _VOLNAME, "size": _SIZE}}),
                  "responses": _STORAGE_MUT},
    ("GET", V + "/{name}"): {"responses": {"200": _ok(_ref("Volume")), "400": _ERR,
                                           "404": _ERR, "503": _ERR}},
    ("DELETE", V + "/{name}"): {"responses": _STORAGE_MUT},
    ("POST", V + "/{name}/resize"): {"requestBody": _body({
        "type": "object", "required": ["size"], "additionalProperties": False,
        "properties": {"size": _SIZE, "force": {"type": "boolean",
                                                "description": "allow a shrink"}}}),
        "responses": _STORAGE_MUT},
    ("POST", V + "/{name}/snapshot"): {"requestBody": _NAMED, "responses": _STORAGE_MUT},
    ("POST", V + "/{name}/clone"): {"requestBody": _NAMED, "responses": _STORAGE_MUT},
    ("GET", "/api/v1/exports"): {"responses": {"200": _ok({
        "type": "object", "required": ["available", "exports"], "properties": {
            "available": {"type": "boolean"},
            "problem": {"type": "string", "nullable": True},
            "portal": {"type": "string", "nullable": True},
            "exports": _arr("Export")}}), "503": _ERR}},
    ("DELETE", "/api/v1/exports/{name}"): {"responses": _STORAGE_MUT},
    ("POST", H + "/sanboot"): {"requestBody": _body({
        "type": "object", "required": ["volume"], "additionalProperties": False,
        "properties": {"volume": _VOLNAME, "efi_filename": _EFI}}),
        "responses": _STORAGE_MUT},
    ("POST", H + "/chap"): {"responses": _STORAGE_MUT,
                            "description": "a new CHAP secret for the host's exports"},
    ("POST", "/api/v1/deploy"): {"requestBody": _body({
        "type": "object", "required": ["mac", "from"], "additionalProperties": False,
        "properties": {"mac": {"type": "string", "pattern": v.MAC_PATTERN},
                       "from": _VOLNAME, "name": {**_VOLNAME, "nullable": True},
                       "efi_filename": _EFI}}),
        "responses": _STORAGE_MUT},
    ("GET", "/api/v1/jobs/{job}"): {"responses": {"200": _ok(_ref("Job")), "404": _ERR,
                                                  "503": _ERR}},
    # -- disk capture (net/capture.py, docs/storage.md Capture)
    ("POST", H + "/capture"): {"requestBody": _body({
        "type": "object", "required": ["disk", "volume"], "additionalProperties": False,
        "properties": {"disk": {"type": "string", "pattern": r"^(/dev/)?[A-Za-z0-9_-]{1,32}$"},
                       "volume": _VOLNAME, "pool": {"type": "string", "nullable": True}}}),
        "responses": _STORAGE_MUT,
        "description": "capture a disk of the host (its agent streams it) into a new or "
                       "empty volume sized to the disk"},
    ("GET", "/api/v1/agent/capture/{job}"): {"security": _AGENT, "responses": {
        "200": _ok({"type": "object", "required": ["job", "bytes", "chunk", "committed"]}),
        "401": _ERR, "404": _ERR, "409": _ERR, "503": _ERR}},
    ("POST", "/api/v1/agent/capture/{job}/{offset}"): {
        "security": _AGENT,
        "parameters": [{"name": "offset", "in": "path", "required": True,
                        "schema": {"type": "integer", "minimum": 0}},
                       _q("sha256", pattern="^[0-9a-f]{64}$")],
        "requestBody": {"required": True, "content": {"application/octet-stream": {
            "schema": {"type": "string", "format": "binary"}}}},
        "responses": {"200": _ok({"type": "object", "required": ["committed", "bytes"]}),
                      "400": _ERR, "401": _ERR, "404": _ERR, "409": _ERR, "413": _ERR,
                      "422": _ERR, "503": _ERR}},
    ("POST", "/api/v1/agent/capture/{job}/stream/{offset}"): {
        "security": _AGENT,
        "parameters": [{"name": "offset", "in": "path", "required": True,
                        "schema": {"type": "integer", "minimum": 0}}],
        "requestBody": {"required": True, "content": {"application/octet-stream": {
            "schema": {"type": "string", "format": "binary"}}}},
        "description": "every chunk from the committed offset to the end over one "
                       "connection, each after its sha256 in hex and a newline; "
                       "Content-Length exactly the framed remainder (docs/storage.md)",
        "responses": {"200": _ok({"type": "object", "required": ["committed", "bytes"]}),
                      "400": _ERR, "401": _ERR, "404": _ERR, "409": _ERR, "422": _ERR,
                      "503": _ERR}},
}


def document(routes) -> dict:
    """The OpenAPI document of exactly these routes."""
    described = {(r.method, r.pattern) for r in routes}
    missing = described - set(OPERATIONS)
    stale = set(OPERATIONS) - described
    if missing or stale:
        raise ValueError(f"openapi: routes without a description {sorted(missing)}, "
                         f"descriptions without a route {sorted(stale)}")
    paths: dict = {}
    for r in routes:
        item = paths.setdefault(r.pattern, {})
        if "{mac}" in r.pattern:
            item["parameters"] = [_MAC]
        for name in ("name", "token_id", "job"):
            if "{" + name + "}" in r.pattern:
                item["parameters"] = [{"name": name, "in": "path", "required": True,
                                       "schema": {"type": "string", "maxLength": 128}}]
        if r.pattern.startswith((V + "/{name}", "/api/v1/exports/{name}")):
            item["parameters"] = [{"name": "name", "in": "path", "required": True,
                                   "schema": _VOLNAME}]
        op = dict(OPERATIONS[(r.method, r.pattern)])
        if r.auth == "admin":
            op["security"] = _SEC
            # over plain http from a peer [http] admin_over_plain refuses (routes.py)
            op["responses"] = {**op.get("responses", {}), "403": _ERR}
        item[r.method.lower()] = op
    return {"openapi": "3.0.3", "info": {"title": "netbootd API", "version": "1"},
            "components": COMPONENTS, "paths": paths}
