"""Connect to (or start) a Ray cluster, make sure the client-actor pool fits, and run one
federated job on it.

Before any work: a cluster address (``runtime.ray_address`` or RAY_ADDRESS) must accept a TCP
connection and, for a GCS address, answer the GCS's own gRPC call (GetClusterId), both within
``runtime.connect_timeout_s`` (``ray.init`` itself retries a dead address silently for a long
time: over 40 s measured; and a proxy or firewall that accepts every TCP connection, as some
networks have, made it hang 22 s before a traceback); a cluster that cannot grow (the local one
this script starts) must hold the pool, or the run stops at once; any cluster must find room for
the pool within ``runtime.placement_timeout_s`` (a cluster joined by address may autoscale, so it
gets that long to add nodes). A Ray Client address (ray://) gets the TCP check only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from fedlora_ray.config import ConfigError, RunConfig, RuntimeConfig
from fedlora_ray.preflight import ClientData, check_data
from fedlora_ray.storage import is_uri

_EPS = 1e-6  # Ray counts resources in units of 1e-4


# --------------------------------------------------------------------------- connecting


def connect(cfg: RunConfig) -> bool:
    """Join the configured cluster, or RAY_ADDRESS's (set by `ray job submit`), or start a
    local one. Returns True when this call started Ray (and should shut it down).

    A given address must answer within ``runtime.connect_timeout_s``, else ConfigError."""
    if ray.is_initialized():
        return False
    rt = cfg.runtime
    address, where = rt.ray_address, f"config field 'runtime.ray_address' = {rt.ray_address!r}"
    if not address and os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]
        where = f"RAY_ADDRESS = {address!r} (used because config field 'runtime.ray_address' is empty)"
    if address:
        check_reachable(address, where, rt.connect_timeout_s)
        try:
            ray.init(address=address, log_to_driver=True)
        except (ConnectionError, RuntimeError) as err:  # it answered the probe, then failed
            raise ConfigError(f"{where}: joining the Ray cluster failed ({err}); {_ADDRESS_HELP}") from None
        return False
    with _worker_allocator(rt.jemalloc):
        ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1")
    return True


@contextlib.contextmanager
def _worker_allocator(jemalloc: bool) -> Iterator[None]:
    """While a local cluster starts: preload Ray's bundled jemalloc into its processes, and let
    the raylet keep it for the workers it starts (it drops LD_PRELOAD otherwise). glibc's
    allocator keeps about 250 MB that a client actor freed after its first round; jemalloc
    hands most of it back. This process's own environment is restored afterwards."""
    library = Path(ray.__file__).parent / "core" / "libjemalloc.so"
    if not jemalloc or not library.is_file() or os.environ.get("LD_PRELOAD"):
        yield  # a user's own preload stands
        return
    saved = {k: os.environ.get(k) for k in ("LD_PRELOAD", "RAY_LD_PRELOAD_ON_WORKERS")}
    os.environ.update(LD_PRELOAD=str(library), RAY_LD_PRELOAD_ON_WORKERS="1")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_ADDRESS_HELP = (
    "give the head node's GCS address host:port (port 6379 unless `ray start --head --port` "
    "chose another; `ray job submit` sets RAY_ADDRESS to it), 'ray://host:10001' for Ray "
    "Client, or leave runtime.ray_address empty (and RAY_ADDRESS unset) to start a local cluster"
)


def check_reachable(address: str, where: str, timeout_s: float) -> None:
    """Raise ConfigError, within about ``timeout_s``, unless a TCP connection to the cluster
    address opens. ``where`` names the setting the address came from, for the message."""
    endpoint = _endpoint(address, where)
    if endpoint is None:
        return  # a Ray Client plug-in scheme ("anyscale://..."): ray.init knows what it means
    host, port, gcs = endpoint
    problem = _probe(host, port, timeout_s, gcs)
    if problem:
        raise ConfigError(
            f"{where}: no Ray cluster answers at {host}:{port} ({problem}); {_ADDRESS_HELP}. "
            f"A slow network may need a larger runtime.connect_timeout_s (now {timeout_s:g} s)"
        )


def _endpoint(address: str, where: str) -> tuple[str, int, bool] | None:
    """The host and port that must accept a TCP connection for ``address`` to work, and whether
    a Ray GCS must answer there (not for ray://, a Ray Client server)."""
    if address == "auto":  # the cluster `ray start` last started on this machine
        from ray._private.services import canonicalize_bootstrap_address

        try:
            resolved = canonicalize_bootstrap_address("auto")
        except (ConnectionError, ValueError) as err:
            raise ConfigError(
                f"{where}: no running Ray cluster found on this machine ({err}); {_ADDRESS_HELP}"
            ) from None
        if resolved is None:
            raise ConfigError(f"{where}: no running Ray cluster found on this machine; {_ADDRESS_HELP}")
        address = resolved
    scheme, sep, rest = address.partition("://")
    default_port: int | None = None
    if not sep:
        rest = address
    elif scheme in ("http", "https"):
        raise ConfigError(
            f"{where}: an http address is the dashboard's (for `ray job submit --address`), not "
            f"the cluster's; {_ADDRESS_HELP}"
        )
    elif scheme == "ray":
        default_port = 10001  # the Ray Client server's default port
    else:
        return None
    rest = rest.split("/", 1)[0]
    if rest.startswith("["):  # [IPv6]:port
        host, _, tail = rest[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
    else:
        host, port_text = rest, ""
    if not port_text and default_port is not None:
        port_text = str(default_port)
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{where}: not a host:port address; {_ADDRESS_HELP}")
    return host, int(port_text), default_port is None


def _probe(host: str, port: int, timeout_s: float, gcs: bool = False) -> str:
    """'' when a TCP connection to host:port opens within timeout_s (and, with ``gcs``, a Ray
    GCS answers there in the time left), else what went wrong. The name lookup runs in the same
    bounded thread, since getaddrinfo has no timeout of its own."""
    start = time.monotonic()
    problem = _tcp_probe(host, port, timeout_s)
    if problem or not gcs or os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return problem  # a TLS cluster's GCS needs its certificates: ray.init checks it
    return _gcs_probe(host, port, max(0.05, timeout_s - (time.monotonic() - start)), timeout_s)


def _gcs_probe(host: str, port: int, left_s: float, timeout_s: float) -> str:
    """'' when the GCS at host:port answers GetClusterId within ``left_s``. A port that accepts
    TCP is not enough: a proxy or firewall may accept every connection (one answered HTTP/2 with
    a 404 here), and ray.init then retries for many seconds before a traceback."""
    import grpc

    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    channel = grpc.insecure_channel(target)
    try:
        # bytes in, bytes out: an empty GetClusterIdRequest, no protobuf classes needed
        channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetClusterId")(b"", timeout=left_s)
    except grpc.RpcError as err:
        code = err.code()  # type: ignore[attr-defined]
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return ""  # a GCS that wants a token: ray.init sends it, and says what is wrong
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return (
                "a TCP connection opened, but no Ray GCS answered within "
                f"runtime.connect_timeout_s = {timeout_s:g} s"
            )
        details = (err.details() or "").strip()  # type: ignore[attr-defined]
        return (
            "a TCP connection opened, but what answers there is not a Ray cluster's GCS ("
            f"{code.name.lower()}{': ' + details if details else ''})"
        )
    finally:
        channel.close()
    return ""


def _tcp_probe(host: str, port: int, timeout_s: float) -> str:
    """'' when a TCP connection to host:port opens within timeout_s, else what went wrong."""
    result: list[str] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                result.append("")
        except socket.gaierror as err:
            result.append(f"the host name does not resolve: {err.strerror or err}")
        except ConnectionRefusedError:
            result.append("connection refused")
        except TimeoutError:
            result.append(f"no answer within runtime.connect_timeout_s = {timeout_s:g} s")
        except OSError as err:
            result.append(err.strerror or str(err))

    thread = threading.Thread(target=attempt, name="ray-address-probe", daemon=True)
    thread.start()
    thread.join(timeout_s + 0.5)
    return result[0] if result else f"no answer within runtime.connect_timeout_s = {timeout_s:g} s"


# --------------------------------------------------------------------------- placement


def _n(x: float) -> str:
    return f"{x:g}"


def _bundle(rt: RuntimeConfig) -> dict[str, float]:
    """What one client actor reserves (as in RayBackend); zero entries left out."""
    return {k: v for k, v in (("CPU", rt.num_cpus_per_actor), ("GPU", rt.num_gpus_per_actor)) if v > 0}


def _actors(rt: RuntimeConfig) -> int:
    """``runtime.num_actors`` of a config whose pool is sized (by ``choose_pool``)."""
    if not isinstance(rt.num_actors, int):
        raise ValueError("runtime.num_actors is 'auto': size the pool first (choose_pool)")
    return rt.num_actors


@dataclass(frozen=True)
class Pool:
    """The client-actor pool as the launcher chose it, once: how many actors, why, and the
    placement group it reserved for them (one bundle per actor; None when they reserve nothing)."""

    num_actors: int
    chosen_by: str
    placement: PlacementGroup | None = None


def pool_needs(cfg: RunConfig) -> str:
    """The pool's needs in words, with the fields they come from."""
    rt = cfg.runtime
    n = _actors(rt)
    parts = [
        f"{_n(n * rt.num_cpus_per_actor)} CPUs (runtime.num_actors={rt.num_actors} x "
        f"runtime.num_cpus_per_actor={rt.num_cpus_per_actor})"
    ]
    if rt.num_gpus_per_actor > 0:
        parts.append(
            f"{_n(n * rt.num_gpus_per_actor)} GPUs (runtime.num_actors={rt.num_actors} x "
            f"runtime.num_gpus_per_actor={rt.num_gpus_per_actor})"
        )
    return " and ".join(parts)


def _alive_nodes() -> list[dict[str, float]]:
    return [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]


def cluster_has() -> str:
    """The cluster's CPUs and GPUs in words: totals, node count, the largest node."""
    total = ray.cluster_resources()
    nodes = _alive_nodes()
    text = f"{_n(total.get('CPU', 0))} CPUs and {_n(total.get('GPU', 0))} GPUs in all on {len(nodes)} node(s)"
    if len(nodes) > 1:
        big = max(nodes, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)))
        text += f" (the largest: {_n(big.get('CPU', 0))} CPUs, {_n(big.get('GPU', 0))} GPUs)"
    return text


def _actors_fitting(node: dict[str, float], cpu: float, gpu: float) -> float:
    """How many actors of (cpu, gpu) one node holds. A fractional GPU share must fit within
    one GPU, so a GPU holds floor(1 / share) actors."""
    counts = [math.inf]
    if cpu > 0:
        counts.append(math.floor(node.get("CPU", 0) / cpu + _EPS))
    if gpu > 0:
        gpus = node.get("GPU", 0)
        if gpu <= 1:
            counts.append(math.floor(gpus + _EPS) * math.floor(1 / gpu + _EPS))
        else:
            counts.append(math.floor(gpus / gpu + _EPS))
    return min(counts)


def choose_pool(cfg: RunConfig) -> tuple[int, str]:
    """(client actors, how they were chosen). ``runtime.num_actors: auto`` takes as many actors of
    the per-actor share (GPUs, or CPUs when the share has no GPU) as the cluster's nodes hold
    now, but no more than the passes of a round: more actors would sit idle holding a model."""
    rt = cfg.runtime
    if rt.num_actors != "auto":
        return int(rt.num_actors), "runtime.num_actors"
    cpu, gpu = rt.num_cpus_per_actor, rt.num_gpus_per_actor
    fits = sum(_actors_fitting(node, cpu, gpu) for node in _alive_nodes())
    passes = -(-cfg.federation.clients_per_round // rt.clients_per_pass)
    if fits == math.inf:
        raise ConfigError(
            "config field 'runtime.num_actors' = 'auto': the actors reserve no resources "
            "(runtime.num_cpus_per_actor = 0 and runtime.num_gpus_per_actor = 0), so there is no "
            "share to fill the cluster with; give a share or a number of actors"
        )
    if fits < 1:
        check_placement(dataclasses.replace(cfg, runtime=dataclasses.replace(rt, num_actors=1)))
    unit = f"{_n(gpu)} GPU" if gpu > 0 else f"{_n(cpu)} CPU"
    count = max(1, min(int(fits), passes))
    return count, (
        f"auto: the cluster ({cluster_has()}) holds {_n(fits)} actors of {unit}; a round has "
        f"{passes} passes (federation.clients_per_round={cfg.federation.clients_per_round}, "
        f"runtime.clients_per_pass={rt.clients_per_pass})"
    )


def pool_line(cfg: RunConfig, count: int, how: str) -> str:
    """The pool ``choose_pool`` chose, in one line, printed at start."""
    rt = cfg.runtime
    return (
        f"pool: {count} client actors x ({_n(rt.num_cpus_per_actor)} CPU, {_n(rt.num_gpus_per_actor)} GPU), "
        f"{rt.clients_per_pass} clients per pass, {rt.precision} ({how})"
    )


def check_placement(cfg: RunConfig) -> None:
    """On a cluster that cannot grow (a local one), fail before any work when the pool cannot
    be placed: the actors would wait forever. Checks the totals, one actor against the largest
    node, and how many actors the nodes hold together."""
    rt = cfg.runtime
    cpu, gpu, n = rt.num_cpus_per_actor, rt.num_gpus_per_actor, _actors(rt)
    total = ray.cluster_resources()
    if gpu > 0 and total.get("GPU", 0) == 0:
        raise ConfigError(
            f"config field 'runtime.num_gpus_per_actor' = {gpu}: the Ray cluster has no GPUs "
            f"({cluster_has()}); set it to 0 to run on CPUs"
        )
    short = [
        (what, field)
        for what, per, field in (
            ("CPU", cpu, "runtime.num_cpus_per_actor"),
            ("GPU", gpu, "runtime.num_gpus_per_actor"),
        )
        if n * per > total.get(what, 0) + _EPS
    ]
    if short:
        fields = " or ".join(["runtime.num_actors", *(f for _, f in short)])
        raise ConfigError(
            f"the pool needs {pool_needs(cfg)} but the Ray cluster has {cluster_has()}; lower {fields}"
        )
    nodes = _alive_nodes()
    fits = [_actors_fitting(node, cpu, gpu) for node in nodes]
    if not any(f >= 1 for f in fits):
        raise ConfigError(
            f"one client actor needs {_n(cpu)} CPUs (runtime.num_cpus_per_actor) and {_n(gpu)} GPUs "
            f"(runtime.num_gpus_per_actor), more than any single node of the Ray cluster holds "
            f"({cluster_has()}); lower runtime.num_cpus_per_actor or runtime.num_gpus_per_actor"
        )
    if sum(fits) < n:
        raise ConfigError(
            f"the pool needs {pool_needs(cfg)}; the Ray cluster has {cluster_has()}, but its nodes "
            f"hold only {_n(sum(fits))} such actors (an actor cannot span nodes, nor a GPU share "
            f"span GPUs); lower runtime.num_actors, runtime.num_cpus_per_actor or runtime.num_gpus_per_actor"
        )


def reserve_pool(cfg: RunConfig) -> PlacementGroup | None:
    """Reserve one bundle per client actor and wait, up to ``runtime.placement_timeout_s``, until
    the cluster has placed them all (an autoscaling cluster may add nodes meanwhile). Returns the
    placement group (the caller removes it), or None when the actors reserve nothing. On timeout
    the group is removed and ConfigError says what the pool needs and what the cluster has.

    Strategy PACK: it is soft (bundles go to other nodes when one node lacks room), so the group
    is placeable exactly when the actors are, and it packs the way Ray's default scheduler places
    the actors afterwards, asking an autoscaler for as few new nodes as possible."""
    rt = cfg.runtime
    bundle = _bundle(rt)
    if not bundle:
        return None
    pg = placement_group([dict(bundle) for _ in range(_actors(rt))], strategy="PACK")
    if pg.wait(timeout_seconds=rt.placement_timeout_s):
        return pg
    remove_placement_group(pg)
    free = ray.available_resources()
    raise ConfigError(
        f"the Ray cluster found no room for the client-actor pool within runtime.placement_timeout_s"
        f" = {rt.placement_timeout_s:g} s: the pool needs {pool_needs(cfg)}, one actor "
        f"{_n(rt.num_cpus_per_actor)} CPUs and {_n(rt.num_gpus_per_actor)} GPUs on a single node; "
        f"the cluster has {cluster_has()}, {_n(free.get('CPU', 0))} CPUs and "
        f"{_n(free.get('GPU', 0))} GPUs free now. Lower runtime.num_actors, "
        f"runtime.num_cpus_per_actor or runtime.num_gpus_per_actor, add nodes, or raise "
        f"runtime.placement_timeout_s if the cluster autoscales"
    )


def _started_here() -> bool:
    """Whether this process started the (local, never growing) Ray cluster it is connected to."""
    node = getattr(ray._private.worker, "_global_node", None)
    return bool(getattr(node, "head", False))


# --------------------------------------------------------------------------- running


def run_on_ray(
    cfg: RunConfig, run_dir: str | Path | None, resume: bool = False, data: ClientData | None = None
) -> dict[str, Any]:
    """Connect, make sure the pool fits (ConfigError otherwise, before any work), then run the
    job in a DriverActor on this node and return its summary. ``data``: the preflight's clients'
    data (read here when None). With ``resume`` the driver continues the run in ``run_dir`` from
    its newest checkpoint; with ``runtime.driver_restarts`` Ray restarts a killed driver, which
    then resumes by itself."""
    if data is None:
        data = check_data(cfg)
    started = connect(cfg)
    try:
        count, how = choose_pool(cfg)  # the cluster's size decides runtime.num_actors: auto
        sized = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, num_actors=count))
        if started or _started_here():
            check_placement(sized)  # a local cluster never grows: fail now
        if cfg.runtime.progress:
            print(pool_line(cfg, count, how), flush=True)
        pool = reserve_pool(sized)  # held for the run: the client actors live in its bundles
        try:
            from actors.driver import DriverActor

            # The driver writes the run directory, so it lives on this (the submitting) node.
            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
            path = None
            if run_dir:
                path = str(run_dir) if is_uri(str(run_dir)) else str(Path(run_dir).resolve())
            restarts = cfg.runtime.driver_restarts if path else 0  # a restart resumes from the run directory
            driver = DriverActor.options(  # type: ignore[attr-defined]
                scheduling_strategy=here, max_restarts=restarts, max_task_retries=restarts
            ).remote(cfg, path, resume, Pool(count, how, pool), data)
            try:
                return ray.get(driver.run.remote())
            finally:
                ray.kill(driver)
        finally:
            if pool is not None:
                remove_placement_group(pool)
    finally:
        if started:
            ray.shutdown()
