"""Configuration: defaults < TOML file (``--config`` or ``GITSERVER_CONFIG``) < environment.

One immutable :class:`Config` is built at process start by :func:`load` and passed to whatever
needs it; nothing reads the environment or a global afterwards.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gitserver.policy import ssh_algorithms
from gitserver.policy.errors import ConfigError
from gitserver.policy.values import parse_max_startups, parse_uid_range

ENV_PREFIX = "GITSERVER_"
BUILD_NETWORKS = ("host", "none")


# What a setting accepts, declared with it (dataclass field metadata) and checked by load().
_LEAST, _EXPECTED, _CHOICES, _PARSER = "least", "expected", "choices", "parser"
_NO_LIMIT = "0 (no limit) or a positive number of bytes"
_NO_CAP = "0 (no cap) or a positive count"
_CHECK_OFF = "0 (check off) or a positive count"
_OFF = "0 (off) or a positive number"


def _at_least(least: float, expected: str, default: float) -> Any:
    """A number setting that is ``least`` or more; below, the error says what is ``expected``."""
    return dataclasses.field(default=default, metadata={_LEAST: least, _EXPECTED: expected})


def _one_of(choices: tuple[str, ...], default: str) -> Any:
    """A setting that is one of ``choices``."""
    return dataclasses.field(default=default, metadata={_CHOICES: choices})


def _parsed(parser: Callable[[str], object], default: str) -> Any:
    """A setting that ``parser`` accepts (its ValueError is the error's reason)."""
    return dataclasses.field(default=default, metadata={_PARSER: parser})


class _InDataDir:
    """A directory of the data dir, read like a property: ``config.repos_dir``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, config: Config, owner: type[Config] | None = None) -> Path:
        return config.data_dir / self.name


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of a gitserver process. Field names are the TOML keys; the environment
    name is ``GITSERVER_`` + the upper-cased field name."""

    data_dir: Path = Path("./var")
    database_url: str = ""
    ssh_host: str = "127.0.0.1"
    ssh_port: int = 2222
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    public_ssh_url: str = ""
    public_http_url: str = ""
    workers: int = 2
    http_workers: int = 2
    # Smart HTTP (read-only git): largest upload-pack request body (negotiation, not packs),
    # counted before and after gzip decoding.
    http_git_max_request_bytes: int = 10 * 1024 * 1024
    # Slow clients (docs/limits.md): a request head must arrive whole within this many seconds,
    # read by the worker's event loop, not a thread; after that every read or write of the
    # request waits at most http_read_timeout seconds for progress.
    http_header_timeout: float = 10.0
    http_read_timeout: float = 60.0
    allow_private_networks: bool = False
    # The server's signing key (docs/provenance.md): by default a file key under
    # <data>/signing; with both set, the key stays in the ssh-agent at this socket and the
    # server only asks it to sign (signing_key = its public key, ``ssh-ed25519 AAAA…``).
    signing_agent: str = ""
    signing_key: str = ""
    # Push limits (docs/limits.md), checked before the pushed objects leave git's quarantine;
    # 0 turns one off. Per-repository and per-tenant quotas live in the database.
    max_blob_bytes: int = _at_least(0, _NO_LIMIT, 100 * 1024 * 1024)
    max_push_bytes: int = _at_least(0, _NO_LIMIT, 2 * 1024 * 1024 * 1024)
    # SSH algorithms offered (gitserver.policy.ssh_algorithms explains the defaults).
    ssh_ciphers: tuple[str, ...] = ssh_algorithms.DEFAULT_CIPHERS
    ssh_kex_algorithms: tuple[str, ...] = ssh_algorithms.DEFAULT_KEX
    ssh_macs: tuple[str, ...] = ssh_algorithms.DEFAULT_MACS
    ssh_host_key_algorithms: tuple[str, ...] = ssh_algorithms.DEFAULT_HOST_KEY_ALGORITHMS
    ssh_pubkey_algorithms: tuple[str, ...] = ssh_algorithms.DEFAULT_PUBKEY_ALGORITHMS
    # SSH daemon limits.
    ssh_login_grace_time: float = 30.0
    ssh_keepalive_interval: float = 30.0
    ssh_keepalive_count_max: int = 3
    ssh_max_connections: int = 500
    # OpenSSH's MaxSessions default. git-lfs multiplexes its pure-SSH transfer connections
    # over one ControlMaster: lfs.concurrenttransfers sessions, 8 by default (docs/limits.md).
    ssh_max_channels_per_connection: int = 10
    # Connections that have not authenticated yet (docs/limits.md), spelled like OpenSSH's
    # MaxStartups "start:rate:full": from `start` logins in progress on, rate % of new ones are
    # dropped at random, rising to 100 % at `full`; in all, and from one source address (an
    # IPv6 /64 counts as one). A bare number N is N:100:N (a hard cap); 0 = no cap. Each login
    # may take ssh_login_grace_time. The per-source start lets a CI fleet behind one NAT
    # address start 50 clones at the same instant without a drop.
    ssh_max_startups: str = _parsed(parse_max_startups, "100:30:200")
    ssh_per_source_max_startups: str = _parsed(parse_max_startups, "50:30:100")
    # Authenticated connections one user (or deploy key) and one source address may hold at
    # once; 0 = no cap. A fleet of dozens of CI runners cloning as one user fits, and no one
    # user (a fifth) or source (two fifths) can take all of ssh_max_connections.
    ssh_max_connections_per_user: int = _at_least(0, _NO_CAP, 100)
    ssh_max_connections_per_source: int = _at_least(0, _NO_CAP, 200)
    # An authenticated connection with no channel open is closed after this many seconds
    # (multiplexing clients keep one between commands); 0 = never.
    ssh_idle_timeout: float = 300.0
    # A git upload-pack or upload-archive channel on which nothing moved either way (no
    # client data, no output the client took) for this many seconds is closed and its git
    # killed; 0 = never. Never applies to receive-pack (docs/limits.md says why).
    ssh_channel_idle_timeout: float = 60.0
    ssh_shutdown_grace: float = 30.0
    # SSH certificates (docs/certificates.md): files of user CA public keys trusted for
    # every tenant; a KRL or a list of public keys whose keys and certificates are refused
    # (re-read when it changes; empty: none); certificates of the host keys to present.
    ssh_user_ca_keys: tuple[str, ...] = ()
    ssh_revoked_keys: str = ""
    ssh_host_certificates: tuple[str, ...] = ()
    # A receive-pack whose client hung up after sending its ref commands is never killed for
    # that: it gets this long to finish its hooks (record the push), then its process group
    # is killed. A push intent older than this is settled by the reconciler.
    receive_finish_timeout: float = 300.0
    # Seconds between passes of the ref reconciler (refs on disk against the push ledger).
    refs_reconcile_interval: float = 60.0
    # Quarantine directories (objects/tmp_objdir-incoming-*) untouched this long are left by
    # a receive-pack that died; they are removed at start.
    quarantine_stale_seconds: float = 600.0
    # The pack cache (docs/performance.md, "Clone storms"): identical fetches share one
    # pack-objects. Its directory (empty: <data>/cache/packs), its bound in bytes (0: off) and
    # how long a pack is served after it was made.
    pack_cache_dir: str = ""
    pack_cache_max_bytes: int = _at_least(0, _OFF, 1024 * 1024 * 1024)
    pack_cache_max_age: float = _at_least(0, _OFF, 300.0)
    # Pipelines.
    job_lease_seconds: float = 30.0
    job_poll_interval: float = 0.5
    build_timeout: float = 3600.0
    build_memory_mb: int = 2048
    build_cpu_seconds: int = 3600
    build_file_size_mb: int = 1024
    # On SIGTERM a worker stops claiming and lets running jobs finish this long, then gives
    # their leases back (job re-queued) so another worker runs them.
    job_shutdown_grace: float = 10.0
    # Seconds between reconciler passes (pushes recorded without a pipeline get one).
    job_reconcile_interval: float = 10.0
    # Pipeline logs of pipelines that ended more than this many days ago are deleted by the
    # worker (docs/pipelines.md, "Log retention"); 0 keeps them for ever.
    pipeline_log_retention_days: int = _at_least(0, "0 (keep for ever) or a number of days", 0)
    # Repository maintenance (docs/maintenance.md): after a push, a repository with more packs
    # or loose objects than these (0 = that check off) gets a `maintain` job, which repacks
    # it (never pruning) and writes bitmaps and a commit-graph; each git command gets
    # maintenance_timeout seconds. The job runs maintenance_delay seconds after the push that
    # queued it, so a burst of pushes is repacked once, after the burst.
    maintenance_enabled: bool = True
    maintenance_max_packs: int = _at_least(0, _CHECK_OFF, 16)
    maintenance_max_loose_objects: int = _at_least(0, _CHECK_OFF, 1000)
    maintenance_delay: float = _at_least(0, "0 or a positive number of seconds", 60.0)
    maintenance_timeout: float = 3600.0
    # Only when jobs run unsandboxed as root (build_allow_unisolated, no bwrap): steps run as
    # this unprivileged user instead of root.
    build_user: str = "nobody"
    # The most network a build step may have (docs/sandbox.md): "host" lets a pipeline file
    # ask for the worker's network (network = "host"; steps have none unless they ask);
    # "none" never gives it, and a step that asks for it fails.
    build_network: str = _one_of(BUILD_NETWORKS, "host")
    # Jobs (build steps, alignment tools) that cannot be sandboxed on this host (not root, no
    # bwrap, no namespaces) would run unconfined, able to read the database and every
    # repository. Refused unless the operator accepts exactly that here.
    build_allow_unisolated: bool = False
    # Sandboxes (docs/sandbox.md): each running job leases a UID of this range (START:COUNT,
    # like /etc/subuid, or FIRST-LAST); extra read-only paths jobs see (tools, JDKs).
    sandbox_uid_range: str = _parsed(parse_uid_range, "2100000000:100000")
    sandbox_read_only_paths: tuple[str, ...] = ()
    # Processes and threads one sandboxed job may have at once (RLIMIT_NPROC of its UID, which
    # no other job shares): a fork bomb stops there.
    sandbox_max_processes: int = 4096
    webhook_timeout: float = 10.0
    webhook_max_attempts: int = 6
    # Delay before delivery attempt n+1: base * 2**(n-1) seconds with jitter, at most max.
    webhook_backoff_base: float = 10.0
    webhook_backoff_max: float = 3600.0
    # Repour-compatible API: alignment tools (command lines, shlex-split; empty = not
    # configured) and the wall-clock limits of their runs and of git fetch/push.
    adjust_mvn_command: str = ""
    adjust_mvn_parameters: str = ""
    adjust_gradle_command: str = ""
    adjust_gradle_parameters: str = ""
    adjust_nodejs_command: str = ""
    adjust_nodejs_parameters: str = ""
    adjust_sbt_command: str = ""
    adjust_sbt_parameters: str = ""
    adjust_process_command: str = ""
    adjust_temp_build_parameters: str = "-DversionIncrementalSuffix={timestamp}-redhat"
    adjust_timeout: float = 3600.0
    # Network of alignment tools: "host" (they download artifacts) or "none".
    adjust_network: str = _one_of(BUILD_NETWORKS, "host")
    repour_git_timeout: float = 600.0
    # Synchronous /clone and /adjust runs at once per API process (each holds a request
    # thread for up to its timeout); more get 429 with Retry-After. Callback mode is not
    # capped: it runs as a job. 0 = callback mode only.
    repour_max_sync_runs: int = 2
    repour_default_tenant: str = ""
    # Visibility of the repositories /internal-scm creates: "public" lets PNC's builders clone
    # the read-only HTTP URL anonymously (writes still need an SSH key with a grant).
    repour_internal_scm_visibility: str = _one_of(("private", "internal", "public"), "public")
    # Upload the alignment log to Bifrost (POST <url>/final-log/upload) before the callback;
    # empty: no upload.
    repour_bifrost_url: str = ""
    # Bearer tokens may also be OIDC JWTs of this issuer (RS256, keys from its JWKS) with this
    # audience; roles map to permissions as "role=site-admin" or "role=tenant-admin:<tenant>"
    # (Keycloak realm roles by name, client roles as "<client>:<role>"). The default lets in
    # the roles Reqour lets in (its OidcRoleConstants).
    oidc_issuer: str = ""
    oidc_audience: str = ""
    oidc_role_map: tuple[str, ...] = ("pnc-app-repour-user=site-admin", "pnc-users-admin=site-admin")
    # Callbacks: client-credentials token endpoint of the service account (OIDC).
    oidc_token_url: str = ""
    oidc_client_id: str = ""
    oidc_service_account_secret: str = ""
    # Hosts whose callbacks carry that token. Callers choose callback URLs, so the token goes
    # only to hosts named here (none by default).
    oidc_callback_hosts: tuple[str, ...] = ()
    # Git LFS (docs/lfs.md): where objects are kept (empty: <data>/lfs; a directory; or
    # s3://bucket/prefix with the endpoint, region and credentials below, empty = boto3's own
    # defaults); the largest object accepted (0 = no limit of its own); how long the headers
    # of an action href and of git-lfs-authenticate stay valid.
    lfs_store: str = ""
    lfs_max_object_bytes: int = _at_least(0, _NO_LIMIT, 10 * 1024 * 1024 * 1024)
    lfs_action_expires_seconds: int = _at_least(60, "at least 60 seconds", 900)
    # Serve the pure SSH protocol (git-lfs-transfer); off, git-lfs falls back to
    # git-lfs-authenticate and moves the objects over HTTP (through a TLS front, say).
    lfs_ssh_transfer: bool = True
    lfs_s3_endpoint_url: str = ""
    lfs_s3_region: str = ""
    lfs_s3_access_key_id: str = ""
    lfs_s3_secret_access_key: str = ""
    # Web console single sign-on (authorization code with PKCE) against oidc_issuer: the
    # console's client id (and secret, for a confidential client); the ID token's claim that
    # names the user, looked up in the tenants the token names (docs/console.md): those of
    # the claim oidc_console_tenant_claim, those its roles are admins of through
    # oidc_role_map, then oidc_console_tenant (users are made by admins, never here).
    oidc_console_client_id: str = ""
    oidc_console_client_secret: str = ""
    oidc_console_tenant: str = ""
    oidc_console_tenant_claim: str = ""
    oidc_console_user_claim: str = "preferred_username"
    # Logging.
    log_format: str = _one_of(("text", "json"), "text")
    log_level: str = "INFO"

    # The parts of the data dir.
    repos_dir = _InDataDir("repos")
    host_key_dir = _InDataDir("ssh")
    # The signing keys' history and file keys (gitserver.provenance.keys); sandboxes never see
    # it (it is inside the data dir, which they never see).
    signing_dir = _InDataDir("signing")
    hooks_dir = _InDataDir("hooks")
    lfs_dir = _InDataDir("lfs")  # the local LFS object store and its temporary uploads (gitserver.lfs.store)
    bundles_dir = _InDataDir("bundles")  # where maintenance writes each repository's bundle (gitserver.git.bundles)

    @property
    def effective_pack_cache_dir(self) -> Path:
        return Path(self.pack_cache_dir) if self.pack_cache_dir else self.data_dir / "cache" / "packs"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'gitserver.db'}"

    @property
    def ssh_base_url(self) -> str:
        """Base of the SSH URLs handed out, like ``ssh://git@127.0.0.1:2222``."""
        if self.public_ssh_url:
            return self.public_ssh_url.rstrip("/")
        return f"ssh://git@{_url_host(self.ssh_host)}:{self.ssh_port}"

    @property
    def http_base_url(self) -> str:
        if self.public_http_url:
            return self.public_http_url.rstrip("/")
        return f"http://{_url_host(self.http_host)}:{self.http_port}"


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _coerce(name: str, field_type: Any, value: Any) -> Any:
    """Turn a TOML or environment value into the field's type, naming the setting on error."""
    type_name = field_type if isinstance(field_type, str) else field_type.__name__
    try:
        if type_name == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(f"expected a boolean, got {value!r}")
        if type_name == "int":
            if isinstance(value, bool):
                raise ValueError("expected an integer")
            return int(value)
        if type_name == "float":
            return float(value)
        if type_name == "Path":
            return Path(str(value))
        if type_name.startswith("tuple"):
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            return tuple(str(v) for v in value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: {exc}") from exc


def load(config_file: str | os.PathLike[str] | None = None,
         environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
    """Build the configuration from defaults, the TOML file and the environment."""
    environ = os.environ if environ is None else environ
    fields = {f.name: f for f in dataclasses.fields(Config)}
    values: dict[str, Any] = {}
    path = config_file or environ.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
        for key, value in _flatten(data).items():
            if key not in fields:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            values[key] = _coerce(key, fields[key].type, value)
    for name, field in fields.items():
        env_name = ENV_PREFIX + name.upper()
        if env_name in environ:
            values[name] = _coerce(env_name, field.type, environ[env_name])
    for name, value in overrides.items():
        if value is not None:
            values[name] = _coerce(name, fields[name].type, value)
    config = Config(**values)
    for field in dataclasses.fields(config):
        _check_declared(field, getattr(config, field.name))
    ssh_algorithms.of_config(config)  # a typo stops every process here, not at a client's login
    if config.maintenance_timeout <= 0:
        raise ConfigError("setting maintenance_timeout: expected a positive number of seconds")
    _check_oidc(config)
    config = dataclasses.replace(config, data_dir=config.data_dir.absolute())
    _check_read_only_paths(config.sandbox_read_only_paths, config.data_dir)
    _check_signing_agent(config)
    return config


def _check_declared(field: dataclasses.Field[Any], value: Any) -> None:
    """Refuse a value outside what the setting's declaration accepts (:func:`_at_least`,
    :func:`_one_of`, :func:`_parsed`), naming the setting."""
    if _LEAST in field.metadata and value < field.metadata[_LEAST]:
        raise ConfigError(f"setting {field.name}: expected {field.metadata[_EXPECTED]}")
    choices = field.metadata.get(_CHOICES)
    if choices is not None and value not in choices:
        raise ConfigError(f"setting {field.name}: expected one of {', '.join(choices)}, got {value!r}")
    if _PARSER in field.metadata:
        try:
            field.metadata[_PARSER](value)
        except ValueError as exc:
            raise ConfigError(f"setting {field.name}: {exc}") from exc


def _check_read_only_paths(paths: tuple[str, ...], data_dir: Path) -> None:
    """Jobs must never see the data dir: refuse, at start, a read-only path that shows it."""
    for text in paths:
        path = Path(text).absolute()
        if path == data_dir or path in data_dir.parents or data_dir in path.parents:
            raise ConfigError(f"setting sandbox_read_only_paths: {text} overlaps the data dir "
                              f"{data_dir}, which sandboxed jobs must never see")


def _check_signing_agent(config: Config) -> None:
    """The agent's socket signs for whoever reaches it: no sandbox may see it either."""
    if bool(config.signing_agent) != bool(config.signing_key):
        raise ConfigError("settings signing_agent and signing_key: set both or neither")
    if not config.signing_agent:
        return
    agent = Path(config.signing_agent).absolute()
    for text in config.sandbox_read_only_paths:
        path = Path(text).absolute()
        if path == agent or path in agent.parents:
            raise ConfigError(f"setting sandbox_read_only_paths: {text} shows the signing agent's "
                              f"socket {agent} to sandboxed jobs")


def _check_oidc(config: Config) -> None:
    """A half-configured issuer would answer every JWT with 401 at run time: refuse it at start."""
    if not config.oidc_issuer:
        return
    # Imported only when an issuer is set: oidc brings PyJWT, which every process that loads
    # the configuration (the SSH daemon, the CLI) would otherwise import for nothing.
    from gitserver.identity import oidc

    oidc.check_issuer_url(config.oidc_issuer, config.allow_private_networks)
    if not config.oidc_audience:
        raise ConfigError("setting oidc_audience: required with oidc_issuer (the client id tokens are for)")
    role_map = oidc.parse_role_map(config.oidc_role_map)
    names_tenants = any(t.startswith(oidc.TENANT_ADMIN_PREFIX) for targets in role_map.values() for t in targets)
    if config.oidc_console_client_id and not (config.oidc_console_tenant or config.oidc_console_tenant_claim
                                              or names_tenants):
        raise ConfigError("setting oidc_console_tenant_claim: with oidc_console_client_id, set it or "
                          "oidc_console_tenant (or map roles to tenant-admin:<tenant> in oidc_role_map): "
                          "nothing names the tenant of a console single sign-on")


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``[ssh] port = 1`` and ``ssh_port = 1`` mean the same setting."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}".replace("-", "_")
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "_"))
        else:
            out[name] = value
    return out
