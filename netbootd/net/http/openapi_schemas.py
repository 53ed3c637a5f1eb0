"""The schema side of the OpenAPI document (openapi.py): COMPONENTS, the named
schemas of /api/v1's bodies (Host, Account, Assign, Volume, Job...), and the
small builders and fragments the operations share (``_ok`` a JSON response,
``_ref``/``_arr`` a named schema, ``_q`` a query parameter, ``_ERR`` an error,
``_MUT`` a mutating call's refusals).  Patterns come from validate.py, the
handlers' own checks (the UEFI loader path's from policy/boot.py)."""
from __future__ import annotations

from ...policy.boot import EFI_FILENAME_PATTERN
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
