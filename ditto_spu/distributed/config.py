"""Deployment config: three nodes, their links, rings, SPU options, policy (JSON).

Shape (see configs/3pc.json)::

    {
      "nodes": [{"id": "node0", "link_address": "127.0.0.1:61920",
                 "control_address": "127.0.0.1:61930",
                 "link_connect_address": "127.0.0.1:61940"},   # optional: peers connect
                                                               # here (a delaying relay)
                ... 3 entries ...],
      "link": {"connect_retry_times": 30, "connect_retry_interval_ms": 1000,
               "recv_timeout_ms": 45000, "http_timeout_ms": 120000,
               "tls": {"enabled": false, "cert": "...", "key": "...", "ca": "..."}},
                                              # tls: the brpc links AND the driver <-> node
                                              # control channel (.channel)
      "rings": {"low": "FXP32[f=10]", "high": "FXP64[f=18]"},
      "spu": {"fxp_exp_iters": 5, ...SpuOptions fields...},
      "policy": "policy_default.json",        # path relative to the config, or inline
      "authkey_env": "DITTO_SPU_AUTHKEY",     # the driver's (operator's) key: `run`, shutdown
      "owner_key_env": "DITTO_SPU_OWNER_KEY", # the model owner's key: upload (and query)
      "client_key_env": "DITTO_SPU_CLIENT_KEY",  # clients' key: model metadata and queries
                                              # (keys are read from the env; required unless
                                              # every address is loopback; all distinct)
      "queue_timeout_s": 300,                 # how long a query waits for a busy node
      "max_message_mb": 8192                  # largest control message accepted
    }

:func:`load_config` validates it against :data:`SCHEMA` (jsonschema) and turns every
violation into a :class:`ConfigError` naming the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from ..errors import DittoError
from ..rings import RingSpec
from ..spu_config import SpuOptions

_ADDRESS = {"type": "string", "pattern": r"^[A-Za-z0-9_.\-\[\]:]+:[0-9]{1,5}$"}

SCHEMA = {
    "type": "object",
    "required": ["nodes"],
    "additionalProperties": False,
    "properties": {
        "nodes": {
            "type": "array",
            "minItems": 3,
            "maxItems": 3,
            "items": {
                "type": "object",
                "required": ["id", "link_address", "control_address"],
                "additionalProperties": False,
                "properties": {
                    "id": {"type": "string", "minLength": 1},
                    "link_address": _ADDRESS,
                    "control_address": _ADDRESS,
                    "link_connect_address": _ADDRESS,
                    "store": {"type": "string", "minLength": 1},
                },
            },
        },
        "link": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "connect_retry_times": {"type": "integer", "minimum": 0},
                "connect_retry_interval_ms": {"type": "integer", "minimum": 1},
                "recv_timeout_ms": {"type": "integer", "minimum": 100},
                "http_timeout_ms": {"type": "integer", "minimum": 100},
                "brpc_channel_protocol": {"type": "string"},
                "brpc_channel_connection_type": {"enum": ["", "single", "pooled", "short"]},
                "tls": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["enabled"],
                    "properties": {
                        "enabled": {"type": "boolean"},
                        "cert": {"type": "string"},
                        "key": {"type": "string"},
                        "ca": {"type": "string"},
                    },
                },
            },
        },
        "rings": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "low": {"type": "string", "pattern": r"^FXP32\[f=\d+\]$"},
                "high": {"type": "string", "pattern": r"^FXP64\[f=\d+\]$"},
            },
        },
        "spu": {"type": "object"},
        "policy": {"type": ["string", "object", "null"]},
        "authkey_env": {"type": "string"},
        "owner_key_env": {"type": "string"},
        "client_key_env": {"type": "string"},
        "queue_timeout_s": {"type": "number", "exclusiveMinimum": 0},
        "job_timeout_s": {"type": "number", "exclusiveMinimum": 0},
        "max_message_mb": {"type": "number", "exclusiveMinimum": 0},
    },
}


class ConfigError(DittoError):
    """The deployment config is invalid; the message names the file and the field."""


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    id: str
    link_address: str  # where this node's link listens
    control_address: str
    link_connect_address: str = ""  # where its peers connect (a relay); default link_address
    store: str = ""  # where the node keeps uploaded weight shares (absolute; "" = default)

    @property
    def link_peer_address(self) -> str:
        return self.link_connect_address or self.link_address

    @property
    def control_host_port(self) -> tuple:
        host, port = self.control_address.rsplit(":", 1)
        return host.strip("[]"), int(port)


@dataclasses.dataclass(frozen=True)
class LinkSettings:
    connect_retry_times: int = 30
    connect_retry_interval_ms: int = 1000
    recv_timeout_ms: int = 45_000
    http_timeout_ms: int = 120_000
    brpc_channel_protocol: str = "baidu_std"
    brpc_channel_connection_type: str = ""
    tls_enabled: bool = False
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""


@dataclasses.dataclass(frozen=True)
class DeploymentConfig:
    path: str
    nodes: tuple
    link: LinkSettings
    low: RingSpec
    high: RingSpec
    spu: SpuOptions
    policy: object  # path, inline dict or None (the default policy)
    authkey_env: str
    job_timeout_s: float
    raw: dict
    max_message_mb: float = 8192.0  # largest control message a node or driver accepts
    owner_key_env: str = "DITTO_SPU_OWNER_KEY"
    client_key_env: str = "DITTO_SPU_CLIENT_KEY"
    queue_timeout_s: float = 300.0

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * (1 << 20))

    @property
    def loopback_only(self) -> bool:
        """Whether every address of the deployment is on this machine's loopback."""
        return all(
            _is_loopback(addr.rsplit(":", 1)[0].strip("[]"))
            for n in self.nodes
            for addr in (n.link_address, n.control_address, n.link_connect_address)
            if addr
        )

    @property
    def digest(self) -> str:
        """sha256 of the canonical config: nodes refuse jobs from a driver with another."""
        return hashlib.sha256(json.dumps(self.raw, sort_keys=True).encode()).hexdigest()

    def authkey(self) -> bytes:
        """The driver's (operator's) key: :meth:`role_key` of ``"driver"``."""
        return self.role_key("driver")

    def key_env(self, role: str) -> str:
        """The environment variable holding ``role``'s key (driver, owner or client)."""
        envs = {"driver": self.authkey_env, "owner": self.owner_key_env, "client": self.client_key_env}
        if role not in envs:
            raise ConfigError(f"unknown control-channel role {role!r}; roles are {sorted(envs)}")
        return envs[role]

    def role_key(self, role: str) -> bytes:
        """``role``'s control-channel key, from its environment variable (``authkey_env``,
        ``owner_key_env``, ``client_key_env``). A public default per role exists only for
        deployments whose addresses are all loopback (one machine); any other deployment
        refuses to start without a key of its own."""
        env = self.key_env(role)
        key = os.environ.get(env)
        if key:
            if len(key) < 16:
                raise ConfigError(f"{self.path}: the key in ${env} ({role}) is shorter than 16 characters")
            return key.encode()
        if not self.loopback_only:
            raise ConfigError(
                f"{self.path}: nodes listen on non-loopback addresses, so the control channel needs a "
                f"secret {role} key: set ${env} (the same value on every node and the {role}, "
                "e.g. from `python -c 'import secrets; print(secrets.token_hex(32))'`)"
            )
        return b"ditto-spu-loopback-only-authkey" if role == "driver" else f"ditto-spu-loopback-only-{role}-key".encode()

    def node_keys(self) -> dict:
        """Every role's key (what a node checks peers against); ConfigError if two roles
        share a key — a client holding the owner's key could upload."""
        keys = {role: self.role_key(role) for role in ("driver", "owner", "client")}
        if len(set(keys.values())) != len(keys):
            same = [r for r in keys if list(keys.values()).count(keys[r]) > 1]
            raise ConfigError(
                f"{self.path}: roles {same} have the same key (${', $'.join(self.key_env(r) for r in same)}); "
                "each role needs its own key, or one role could act as another"
            )
        return keys

    def link_desc(self, rank: int | None = None):
        """The SPU brpc link description for the three nodes, as node ``rank`` uses it:
        its own link listens on its ``link_address``, its peers are reached at their
        ``link_connect_address`` (a delaying relay, :mod:`.relay`) when one is set."""
        from spu import libspu

        desc = libspu.link.Desc()
        for i, node in enumerate(self.nodes):
            desc.add_party(node.id, node.link_address if i == rank else node.link_peer_address)
        desc.connect_retry_times = self.link.connect_retry_times
        desc.connect_retry_interval_ms = self.link.connect_retry_interval_ms
        desc.recv_timeout_ms = self.link.recv_timeout_ms
        desc.http_timeout_ms = self.link.http_timeout_ms
        desc.brpc_channel_protocol = self.link.brpc_channel_protocol
        if self.link.brpc_channel_connection_type:
            desc.brpc_channel_connection_type = self.link.brpc_channel_connection_type
        if self.link.tls_enabled:
            desc.enable_ssl = True
            for opts in (desc.client_ssl_opts, desc.server_ssl_opts):
                opts.cert.certificate_path = self.link.tls_cert
                opts.cert.private_key_path = self.link.tls_key
                opts.verify.ca_file_path = self.link.tls_ca
                opts.verify.verify_depth = 1
        return desc

    def policy_object(self):
        """The precision policy: the config's ``policy`` (path relative to the config, or
        inline), or — when there is none — f16 values in ``rings.low`` and f32 in
        ``rings.high``."""
        from ..policy import Policy

        if self.policy is None:
            return Policy(low=self.low, high=self.high)
        try:
            if isinstance(self.policy, dict):
                return Policy.from_obj(self.policy)
            path = self.policy
            if not os.path.isabs(path):
                path = os.path.join(os.path.dirname(self.path), path)
            return Policy.load(path)
        except DittoError as e:
            raise ConfigError(f"{self.path}: field 'policy': {e}") from None


def load_config(path: str) -> DeploymentConfig:
    """Read and validate a deployment config (ConfigError naming the field if wrong)."""
    try:
        with open(path) as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from None
    return parse_config(raw, path)


def parse_config(raw: dict, path: str = "<config>") -> DeploymentConfig:
    import jsonschema

    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        field = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ConfigError(f"{path}: field '{field}': {e.message}")
    ids = [n["id"] for n in raw["nodes"]]
    if len(set(ids)) != 3:
        raise ConfigError(f"{path}: field 'nodes': node ids must be distinct, got {ids}")
    addresses = [n[k] for k in ("link_address", "control_address", "link_connect_address") for n in raw["nodes"] if k in n]
    if len(set(addresses)) != len(addresses):
        raise ConfigError(f"{path}: field 'nodes': every link, control and link-connect address must be distinct")
    link_raw = dict(raw.get("link", {}))
    tls = link_raw.pop("tls", {"enabled": False})
    if tls.get("enabled"):
        for key in ("cert", "key", "ca"):
            if not tls.get(key):
                raise ConfigError(f"{path}: field 'link/tls/{key}' is required when TLS is enabled")
            full = tls[key] if os.path.isabs(tls[key]) else os.path.join(os.path.dirname(path), tls[key])
            if not os.path.exists(full):
                raise ConfigError(f"{path}: field 'link/tls/{key}': file {full} does not exist")
            tls[key] = full
    link = LinkSettings(
        **link_raw,
        tls_enabled=bool(tls.get("enabled")),
        tls_cert=tls.get("cert", ""),
        tls_key=tls.get("key", ""),
        tls_ca=tls.get("ca", ""),
    )
    rings = raw.get("rings", {})
    try:
        low = RingSpec.parse(rings.get("low", "FXP32[f=10]"))
        high = RingSpec.parse(rings.get("high", "FXP64[f=18]"))
        spu = SpuOptions.from_dict(raw.get("spu", {}))
    except DittoError as e:
        raise ConfigError(f"{path}: {e}") from None
    return DeploymentConfig(
        path=os.path.abspath(path),
        nodes=tuple(NodeSpec(**_node_fields(n, path)) for n in raw["nodes"]),
        link=link,
        low=low,
        high=high,
        spu=spu,
        policy=raw.get("policy"),
        authkey_env=raw.get("authkey_env", "DITTO_SPU_AUTHKEY"),
        job_timeout_s=float(raw.get("job_timeout_s", 3600)),
        raw=raw,
        max_message_mb=float(raw.get("max_message_mb", 8192)),
        owner_key_env=raw.get("owner_key_env", "DITTO_SPU_OWNER_KEY"),
        client_key_env=raw.get("client_key_env", "DITTO_SPU_CLIENT_KEY"),
        queue_timeout_s=float(raw.get("queue_timeout_s", 300)),
    )


def _node_fields(node: dict, path: str) -> dict:
    fields = dict(node)
    store = fields.get("store")
    if store and not os.path.isabs(store):
        fields["store"] = os.path.join(os.path.dirname(os.path.abspath(path)), store)
    return fields


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
