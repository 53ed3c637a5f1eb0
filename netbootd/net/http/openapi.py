"""The OpenAPI 3.0 document of /api/v1 (docs/CONTRACT-api.md).

`document(routes)` builds the document's paths from the route table
(api.ROUTES): each route's operation is described here in OPERATIONS, keyed
by (method, pattern), and its security comes from the route's auth, so the
document lists exactly the routes the dispatcher serves (a route without a
description, or a description without a route, fails at import).  Patterns
come from validate.py, the handlers' own checks.  tests/net/test_api.py
walks the document; schemathesis checks every route against it."""
from __future__ import annotations

from iso_builder.media import IP_CIDR_PATTERN as media_ip_pattern
from iso_builder.media import PIN_PATTERN as media_pin_pattern
from iso_builder.media import URL_PATTERN as media_url_pattern

from ...policy.boot import EFI_FILENAME_PATTERN
from ...registry.hosts import CURSOR_PATTERN
from . import validate as v

MAC_PATTERN, HOSTNAME_PATTERN = v.MAC_PATTERN, v.HOSTNAME_PATTERN
_MAC = {"name": "mac", "in": "path", "required": True,
        "schema": {"type": "string", "pattern": v.MAC_PATTERN}}
_IPV4 = {"type": "string", "pattern": v.IPV4_PATTERN}
_UUID = {"type": "string", "pattern": v.UUID_PATTERN}
# A kernel or initrd: the same rule as policy/boot._location (validate.py).
_LOCATION = {"anyOf": [
    {"type": "string", "pattern": v.LOCATION_URL_PATTERN, "maxLength": v.LOCATION_URL_MAX},
    {"type": "string", "pattern": v.LOCATION_NAME_PATTERN, "maxLength": v.LOCATION_NAME_MAX}]}
# sanboot --filename: the UEFI loader on the volume (policy/boot.py)
_EFI = {"type": "string", "pattern": EFI_FILENAME_PATTERN,
        "description": "UEFI loader path on the volume, e.g. \\EFI\\debian\\shimx64.efi"}
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

COMPONENTS: dict = {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                            # Authorization: Agent <secret> (docs/agent-protocol.md)
                            "agent": {"type": "apiKey", "in": "header",
                                      "name": "Authorization"}},
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
                "state": {"type": "string", "enum": list(v.STATES)},
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
                "account": {"type": "string", "nullable": True},
                "credential": {"type": "boolean"},
                "ids": {"type": "array", "items": {"type": "array", "items": {
                    "type": "string"}}},
                "action": {"type": "object", "nullable": True},
                "hw": {"type": "object", "nullable": True},
                "inventory": {"type": "object", "nullable": True},
                "last_event": {"allOf": [_ref("Event")], "nullable": True},
                "timeline": _arr("Event")}},
            "Account": {"type": "object", "required": ["id", "name", "approval"], "properties": {
                "id": {"type": "string"}, "name": {"type": "string"},
                "approval": {"type": "string", "enum": ["auto", "manual"]},
                "profile": {"type": "string", "nullable": True},
                "profile_args": {"type": "object"}, "created": {"type": "number"},
                "hosts": {"type": "integer"}, "tokens": {"type": "integer"}}},
            # boot: the default profile of the account's hosts (an Assign), or null.
            "NewAccount": {"type": "object", "required": ["name"], "additionalProperties": False,
                           "properties": {
                "name": {"type": "string", "pattern": v.ACCOUNT_PATTERN},
                "approval": {"type": "string", "enum": ["auto", "manual"]},
                "boot": {"allOf": [_ref("Assign")], "nullable": True}}},
            "AccountPatch": {"type": "object", "minProperties": 1, "additionalProperties": False,
                             "properties": {
                "approval": {"type": "string", "enum": ["auto", "manual"]},
                "boot": {"allOf": [_ref("Assign")], "nullable": True}}},
            "Token": {"type": "object", "required": ["id", "account", "state"], "properties": {
                "id": {"type": "string"}, "account": {"type": "string", "nullable": True},
                "label": {"type": "string", "nullable": True},
                "created": {"type": "number"},
                "expires": {"type": "integer", "nullable": True},
                "max_uses": {"type": "integer", "nullable": True},
                "uses": {"type": "integer"}, "revoked": {"type": "number", "nullable": True},
                "state": {"type": "string"},
                "token": {"type": "string", "description": "only when created: shown once"}}},
            "NewToken": {"type": "object", "required": ["account"], "additionalProperties": False,
                         "properties": {
                "account": {"type": "string"},
                "expires_in": {"type": "integer", "minimum": 1, "maximum": v.MAX_COUNT,
                               "nullable": True,
                               "description": "seconds; null or absent: until revoked"},
                "uses": {"type": "integer", "minimum": 1, "maximum": v.MAX_COUNT,
                         "nullable": True},
                "label": {"type": "string", "nullable": True, "maxLength": 200,
                          "pattern": "^[^\\x00-\\x1f]*$"}}},
            "Action": {"oneOf": [
                {"type": "object", "required": ["action"], "additionalProperties": False,
                 "properties": {"action": {"type": "string",
                                           "enum": ["wait", "poweroff", "reboot"]}}},
                {"type": "object", "required": ["action", "disks", "confirm"],
                 "additionalProperties": False, "properties": {
                     "action": {"type": "string", "enum": ["wipe"]},
                     "disks": {"type": "array", "minItems": 1, "maxItems": 64, "items": {
                         "type": "string", "pattern": v.DISK_PATTERN}},
                     "confirm": {"type": "string", "pattern": v.MAC_PATTERN,
                                 "description": "the host's MAC (409 when not)"}}}]},
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
            # {"template": text} or the template's keys as JSON (any case; values
            # as in a TOML template): checked by policy/vnet.py, errors name the key.
            "NetworkDef": {"type": "object", "minProperties": 1, "properties": {
                "template": {"type": "string"}}},
            "NetworkDetail": {"type": "object", "required": ["name", "definition", "leases"],
                              "properties": {"name": {"type": "string"},
                                             "definition": {"type": "object"},
                                             "leases": {"type": "array",
                                                        "items": {"type": "object"}}}},
            # net/interfaces.link_rows + what netbootd serves there (api_net.py)
            "Interface": {"type": "object", "required": ["name", "index", "up", "state", "ipv4",
                                                         "served"],
                          "properties": {
                              "name": {"type": "string"}, "index": {"type": "integer"},
                              "mac": {"type": "string", "nullable": True},
                              "up": {"type": "boolean"}, "state": {"type": "string"},
                              "kind": {"type": "string", "nullable": True},
                              "master": {"type": "string", "nullable": True},
                              "vlan": {"type": "integer", "nullable": True},
                              "ipv4": {"type": "array", "items": {"type": "string"}},
                              "ipv6_linklocal": {"type": "string", "nullable": True},
                              "served": {"type": "boolean"},
                              "served_ip": {"type": "string", "nullable": True},
                              "network": {"type": "string", "nullable": True},
                              "ra": {"type": "string", "nullable": True}}},
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
                 "properties": {"profile": {"type": "string", "enum": list(v.PLAIN_PROFILES)},
                                "args": {"type": "object", "additionalProperties": False}}},
                {"type": "object", "required": ["profile", "args"],
                 "additionalProperties": False, "properties": {
                     "profile": {"type": "string", "enum": ["linux"]},
                     "args": {"type": "object", "required": ["kernel"],
                              "additionalProperties": False, "properties": {
                                  "kernel": _LOCATION,
                                  "initrds": {"type": "array", "maxItems": 16,
                                              "items": _LOCATION},
                                  "cmdline": {"type": "string", "maxLength": v.CMDLINE_MAX,
                                              "pattern": "^[^\\x00-\\x1f\\x7f]*$"}}}}},
                {"type": "object", "required": ["profile", "args"],
                 "additionalProperties": False, "properties": {
                     "profile": {"type": "string", "enum": ["sanboot"]},
                     "args": {"type": "object", "required": ["san_uri"],
                              "additionalProperties": False, "properties": {
                                  "san_uri": {"type": "string", "pattern": v.SAN_URI_PATTERN,
                                              "maxLength": v.SAN_URI_MAX},
                                  "initiator_iqn": {"type": "string", "pattern": v.IQN_PATTERN,
                                                    "maxLength": v.IQN_MAX},
                                  "efi_filename": _EFI}}}}]},
            "Patch": {"type": "object", "minProperties": 1, "additionalProperties": False,
                      "properties": {"hostname": {"type": "string", "nullable": True,
                                                  "maxLength": v.HOSTNAME_MAX,
                                                  "pattern": HOSTNAME_PATTERN},
                                     "account": {"type": "string", "nullable": True,
                                                 "description": "move the host to this "
                                                 "account (a name), or out of any"}}},
            # -- storage (issue 13): net/http/api_storage.py ----------------------
            "Volume": {"type": "object", "required": ["name", "pool", "size", "kind"],
                       "properties": {
                "name": {"type": "string"}, "pool": {"type": "string"},
                "size": {"type": "integer"}, "used": {"type": "integer", "nullable": True},
                "origin": {"type": "string", "nullable": True},
                "kind": {"type": "string", "enum": ["volume", "snapshot"]},
                "created": {"type": "number", "nullable": True},
                "exported_to": {"type": "string", "nullable": True},
                "in_use": {"type": "array", "items": {"type": "string"}},
                "job": {"type": "object", "nullable": True,
                        "description": "a capture into it under way (net/capture.py)"}}},
            "VolumePool": {"type": "object", "required": ["name", "total", "used", "free"],
                           "properties": {
                "name": {"type": "string"}, "backend": {"type": "string", "nullable": True},
                "describe": {"type": "string", "nullable": True},
                "cow_clones": {"type": "boolean"}, "total": {"type": "integer"},
                "used": {"type": "integer"}, "free": {"type": "integer"},
                "provisioned": {"type": "integer"}, "volumes": {"type": "integer"},
                "error": {"type": "string", "nullable": True}}},
            "Export": {"type": "object", "required": ["volume", "host", "target_iqn", "chap"],
                       "properties": {
                "volume": {"type": "string"}, "pool": {"type": "string"},
                "host": {"type": "string"}, "initiator_iqn": {"type": "string"},
                "target_iqn": {"type": "string"}, "san_uri": {"type": "string"},
                "chap": {"type": "boolean", "description": "the secret is never shown"},
                "mutual_chap": {"type": "boolean"}, "created": {"type": "number"},
                "cloned_from": {"type": "string"}}},
            "Job": {"type": "object", "required": ["id", "op", "state", "done", "total"],
                    "properties": {
                "id": {"type": "string"}, "op": {"type": "string"},
                "target": {"type": "string"},
                "state": {"type": "string", "enum": ["running", "done", "failed"]},
                "done": {"type": "integer", "minimum": 0},
                "total": {"type": "integer", "minimum": 0},
                "result": {"type": "object", "nullable": True},
                "error": {"allOf": [_ref("Error")], "nullable": True},
                "started": {"type": "number"}, "ended": {"type": "number", "nullable": True}}},
        }}

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
