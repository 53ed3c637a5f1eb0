"""The OpenAPI 3.0 document of /api/v1 (docs/CONTRACT-api.md).

Written by hand next to the routes; tests/net/test_api.py checks that every
route answers as documented and that every mutating operation refuses a
missing token, by walking this document."""
from __future__ import annotations


from twisted.web import resource

from ...registry.hosts import CURSOR_PATTERN
from .common import send_json

# Exactly what model.normalize_mac accepts: one separator style throughout.
MAC_PATTERN = ("^([0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}|[0-9a-fA-F]{2}(-[0-9a-fA-F]{2}){5}"
               "|[0-9a-fA-F]{12})$")
# DNS names are case-insensitive: stored lower-case.
HOSTNAME_PATTERN = ("^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                    "(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_MAC = {"name": "mac", "in": "path", "required": True,
        "schema": {"type": "string", "pattern": MAC_PATTERN}}
# Empty ip/uuid mean "not known" (the agent on hardware without DMI data).
_IPV4 = {"type": "string", "pattern": "^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
                                      "(\\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3})?$"}
_UUID = {"type": "string", "pattern": "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                                      "[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"}
_LOCATION = {"type": "string", "pattern": "^(https?://[A-Za-z0-9._~:/?=,+@%&-]+|"
                                          "[A-Za-z0-9._+-][A-Za-z0-9._+-]{0,63})$"}
_ERR = {"description": "error", "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/Error"}}}}


def _ok(schema: dict, desc: str = "ok") -> dict:
    return {"description": desc, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _arr(name: str) -> dict:
    return {"type": "array", "items": _ref(name)}


def _q(name: str, typ: str = "string", **constraints) -> dict:
    return {"name": name, "in": "query", "required": False,
            "schema": {"type": typ, **constraints}}


_LIMIT = _q("limit", "integer", minimum=0, maximum=1000)


_SEC = [{"bearer": []}]
_MUT = {"401": _ERR, "400": _ERR, "404": _ERR, "413": _ERR}

SPEC: dict = {
    "openapi": "3.0.3",
    "info": {"title": "netbootd API", "version": "1"},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {"type": "object", "required": ["error", "status"], "properties": {
                "error": {"type": "string"}, "status": {"type": "integer"}}},
            "Event": {"type": "object", "required": ["id", "ts", "kind", "detail"],
                      "properties": {"id": {"type": "integer"}, "ts": {"type": "number"},
                                     "mac": {"type": "string", "nullable": True},
                                     "kind": {"type": "string"},
                                     "detail": {"type": "object"}}},
            "Host": {"type": "object", "required": ["mac", "state"], "properties": {
                "mac": {"type": "string"},
                "state": {"type": "string", "enum": ["discovered", "registered", "idle",
                                                     "assigned", "booting", "active",
                                                     "error", "retired"]},
                "arch": {"type": "integer", "nullable": True},
                "arch_name": {"type": "string", "nullable": True},
                "vendor_class": {"type": "string", "nullable": True},
                "uuid": {"type": "string", "nullable": True},
                "hostname": {"type": "string", "nullable": True},
                "interface": {"type": "string", "nullable": True},
                "ip": {"type": "string", "nullable": True},
                "profile": {"type": "string", "nullable": True},
                "profile_args": {"type": "object"},
                "first_seen": {"type": "number"}, "last_seen": {"type": "number"},
                "last_event": {"allOf": [_ref("Event")], "nullable": True},
                "timeline": _arr("Event")}},
            "HostPage": {"type": "object", "required": ["hosts", "next", "total", "counts"],
                         "properties": {
                "hosts": _arr("Host"), "next": {"type": "string", "nullable": True},
                "total": {"type": "integer", "minimum": 0},
                "counts": {"type": "object", "required": ["hosts", "states", "seen"],
                           "properties": {
                               "hosts": {"type": "integer", "minimum": 0},
                               "states": {"type": "object", "additionalProperties": {
                                   "type": "integer", "minimum": 0}},
                               "seen": {"type": "integer", "minimum": 0}}}}},
            "Lease": {"type": "object", "required": ["address", "mac", "state"], "properties": {
                "address": {"type": "string"}, "mac": {"type": "string"},
                "state": {"type": "string"},
                "hostname": {"type": "string", "nullable": True},
                "network": {"type": "string"}, "starts": {"type": "number"},
                "ends": {"type": "number"}}},
            "Pool": {"type": "object", "required": ["name", "subnet", "size", "used"],
                     "properties": {"name": {"type": "string"}, "subnet": {"type": "string"},
                                    "ranges": {"type": "array", "items": {"type": "string"}},
                                    "router": {"type": "string", "nullable": True},
                                    "dns": {"type": "array", "items": {"type": "string"}},
                                    "domain": {"type": "string", "nullable": True},
                                    "lease_time": {"type": "integer"},
                                    "interface": {"type": "string", "nullable": True},
                                    "size": {"type": "integer"}, "used": {"type": "integer"}}},
            "Transfer": {"type": "object", "required": ["proto", "client", "file"],
                         "properties": {"proto": {"type": "string", "enum": ["tftp", "http"]},
                                        "client": {"type": "string"},
                                        "file": {"type": "string"},
                                        "bytes": {"type": "integer"},
                                        "size": {"type": "integer", "nullable": True},
                                        "started": {"type": "number"}}},
            # One schema per profile: policy/boot.validate_args is the reference.
            "Assign": {"oneOf": [
                {"type": "object", "required": ["profile"], "additionalProperties": False,
                 "properties": {"profile": {"type": "string",
                                            "enum": ["discover", "localboot", "shell"]},
                                "args": {"type": "object", "additionalProperties": False}}},
                {"type": "object", "required": ["profile", "args"],
                 "additionalProperties": False, "properties": {
                     "profile": {"type": "string", "enum": ["linux"]},
                     "args": {"type": "object", "required": ["kernel"],
                              "additionalProperties": False, "properties": {
                                  "kernel": _LOCATION,
                                  "initrds": {"type": "array", "maxItems": 16,
                                              "items": _LOCATION},
                                  "cmdline": {"type": "string", "maxLength": 2048,
                                              "pattern": "^[^\\x00-\\x1f\\x7f]*$"}}}}},
                {"type": "object", "required": ["profile", "args"],
                 "additionalProperties": False, "properties": {
                     "profile": {"type": "string", "enum": ["sanboot"]},
                     "args": {"type": "object", "required": ["san_uri"],
                              "additionalProperties": False, "properties": {
                                  "san_uri": {"type": "string", "pattern":
                                              "^iscsi:[A-Za-z0-9._~:/?=,+@%-]{1,200}$"},
                                  "initiator_iqn": {"type": "string", "pattern":
                                                    "^(iqn\\.[0-9]{4}-[0-9]{2}\\.[a-z0-9.-]{1,60}"
                                                    "(:[A-Za-z0-9._:-]{1,60})?)?$"}}}}}]},
            "Patch": {"type": "object", "minProperties": 1, "additionalProperties": False,
                      "properties": {"hostname": {"type": "string", "nullable": True,
                                                  "maxLength": 253,
                                                  "pattern": HOSTNAME_PATTERN}}},
        }},
    "paths": {
        "/api/v1/status": {"get": {"responses": {"200": _ok({"type": "object", "required": [
            "version", "mode", "hosts", "pools", "transfers", "events"]})}}},
        # A page at a time: `next` is the opaque cursor of the following page
        # (null on the last); `total` counts the hosts matching the filters.
        "/api/v1/hosts": {"get": {"parameters": [
            _q("state", enum=["discovered", "registered", "idle", "assigned", "booting", "active",
                              "error", "retired"]), _q("arch"), _q("q"),
            _q("limit", "integer", minimum=1, maximum=1000), _q("cursor", pattern=CURSOR_PATTERN)],
                                  "responses": {"200": _ok(_ref("HostPage")), "400": _ERR}}},
        "/api/v1/hosts/{mac}": {
            "parameters": [_MAC],
            "get": {"responses": {"200": _ok(_ref("Host")), "400": _ERR, "404": _ERR}},
            "patch": {"security": _SEC, "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("Patch")}}},
                "responses": {"200": _ok(_ref("Host")), **_MUT}},
            "delete": {"security": _SEC, "responses": {
                "200": _ok({"type": "object", "required": ["deleted"]}), **_MUT}}},
        "/api/v1/hosts/{mac}/assign": {"parameters": [_MAC], "post": {
            "security": _SEC, "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("Assign")}}},
            "responses": {"200": _ok(_ref("Host")), **_MUT}}},
        "/api/v1/hosts/{mac}/approve": {"parameters": [_MAC], "post": {
            "security": _SEC, "responses": {"200": _ok(_ref("Host")), "409": _ERR, **_MUT}}},
        "/api/v1/hosts/{mac}/retire": {"parameters": [_MAC], "post": {
            "security": _SEC, "responses": {"200": _ok(_ref("Host")), **_MUT}}},
        "/api/v1/hosts/{mac}/timeline": {"parameters": [_MAC], "get": {
            "parameters": [_LIMIT],
            "responses": {"200": _ok(_arr("Event")), "400": _ERR, "404": _ERR}}},
        "/api/v1/leases": {"get": {"parameters": [_q("network"), _q("state")],
                                   "responses": {"200": _ok(_arr("Lease"))}}},
        "/api/v1/networks": {"get": {"responses": {"200": _ok(_arr("Pool"))}}},
        "/api/v1/events": {"get": {"parameters": [
            _q("after", "integer", minimum=0, maximum=2 ** 62), _LIMIT,
            _q("mac", pattern=MAC_PATTERN), _q("kind")],
                                   "responses": {"200": _ok(_arr("Event")), "400": _ERR}}},
        "/api/v1/events/stream": {"get": {"parameters": [_q("after", "integer", minimum=0,
                                                             maximum=2 ** 62)],
                                          "responses": {
            "200": {"description": "text/event-stream of Event objects"}}}},
        "/api/v1/transfers": {"get": {"responses": {"200": _ok(_arr("Transfer"))}}},
        "/api/v1/agent/register": {
            "post": {"requestBody": {"required": True, "content": {"application/json": {
                "schema": {"type": "object", "required": ["mac"], "properties": {
                    "mac": {"type": "string", "pattern": MAC_PATTERN}, "ip": _IPV4,
                    "uuid": _UUID}}}}},
                "responses": {"200": _ok({"type": "object", "required": ["mac", "state"]}),
                              "400": _ERR, "413": _ERR, "429": _ERR}},
            "get": {"parameters": [{**_q("mac", pattern=MAC_PATTERN), "required": True},
                                   {**_q("ip"), "schema": _IPV4}, {**_q("uuid"), "schema": _UUID}],
                    "responses": {"200": _ok({"type": "object", "required": ["mac", "state"]}),
                                  "400": _ERR, "429": _ERR}}},
        "/api/v1/agent/next": {"get": {"parameters": [{**_q("mac", pattern=MAC_PATTERN),
                                                       "required": True}],
                                       "responses": {"200": _ok({"type": "object", "required": [
                                           "action"]}), "400": _ERR}}},
    },
}


class OpenApi(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        return send_json(request, 200, SPEC)


