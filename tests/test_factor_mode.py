"""The paper's literal protocol (``compression.target = factors``), error feedback per method and
FedLoDrop's rounding (docs/algorithms.md §2-3), against references written independently here in
numpy: the selections of SOFT, FLASC and HetLoRA, eq. (5) with an unsent entry counted as zero,
and the error memory of eqs. (10)-(12)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedlora_ray.algorithm.sampling import RoundWeights
from fedlora_ray.algorithm.schemes.base import LocalUpdate
from fedlora_ray.algorithm.schemes.fedavg import FedAvg
from fedlora_ray.algorithm.server_opt import ServerOptState, server_step
from fedlora_ray.compress import apply_payload, module_budget, upload_model
from fedlora_ray.compress.bits import payload_bits
from fedlora_ray.config import ConfigError
from fedlora_ray.engine.run import FederatedRun
from fedlora_ray.engine.serial import SerialBackend
from fedlora_ray.lora.adapter import Adapter
from fedlora_ray.preflight import check_upload_budget
from tests.conftest import tiny_config
from tests.test_batched import RTOL, STATE_RTOL, compare_passes

METHODS = ["soft", "flasc", "rlora", "hetlora", "fedlodrop"]
SHAPES = {"q": (20, 4, 14), "v": (9, 4, 25)}  # module -> (d, r, k)


# ---- the independent reference: flat layout [vec(B) row-major; vec(A) row-major]


def _component(d: int, r: int, k: int, j: int) -> list[int]:
    """Rank j's flat positions: B[i, j] for i = 0..d-1, then A[j, c] for c = 0..k-1."""
    return [i * r + j for i in range(d)] + [d * r + j * k + c for c in range(k)]


def _ref_counts(scores: np.ndarray, total: int, cap: int) -> list[int]:
    """Eq. (9) with a cap: water level by bisection, floor, then the largest remainders (ties to
    the higher score, then the lower rank), never above the cap."""
    s = np.clip(scores.astype(np.float64), 0, None)
    if not np.isfinite(s).all() or s.sum() <= 0:
        s = np.ones_like(s)
    lo, hi = 0.0, 1.0
    while np.minimum(cap, hi * s).sum() < total:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.minimum(cap, mid * s).sum() < total else (lo, mid)
    x = np.minimum(cap, hi * s)
    k = [min(cap, math.floor(v)) for v in x]
    order = sorted(range(len(s)), key=lambda j: (-(x[j] - k[j]), -s[j], j))
    for j in order:
        if sum(k) < total and k[j] < cap:
            k[j] += 1
    return k


def _ref_soft(ub: np.ndarray, ua: np.ndarray, sb: np.ndarray, sa: np.ndarray, budget: int) -> set[int]:
    """SOFT: scores s_j = ||b_j|| ||a_j|| of (sb, sa), counts by eq. (9), then rank j's k_j largest
    normalised entries |u| / ||u_half|| of (column j of ub, row j of ua)."""
    d, r = ub.shape
    k = ua.shape[1]
    scores = np.linalg.norm(sb.astype(np.float64), axis=0) * np.linalg.norm(sa.astype(np.float64), axis=1)
    counts = _ref_counts(scores, budget, d + k)
    kept: set[int] = set()
    for j in range(r):
        col, row = ub[:, j].astype(np.float64), ua[j].astype(np.float64)
        keys = np.concatenate([np.abs(col) / np.linalg.norm(col), np.abs(row) / np.linalg.norm(row)])
        ranked = sorted(range(d + k), key=lambda c: (-keys[c], c))
        pos = _component(d, r, k, j)
        kept |= {pos[c] for c in ranked[: counts[j]]}
    return kept


def _ref_flasc(ub: np.ndarray, ua: np.ndarray, budget: int) -> set[int]:
    vec = np.abs(np.concatenate([ub.reshape(-1), ua.reshape(-1)]))
    return set(sorted(range(len(vec)), key=lambda p: (-vec[p], p))[:budget])


def _ref_hetlora(d: int, r: int, k: int, budget: int) -> set[int]:
    order = [p for j in range(r) for p in _component(d, r, k, j)]
    return set(order[:budget])


def _factors(rng: np.random.Generator, b_scale: float = 1e-2) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """LoRA-like scales: B's entries about 100 times smaller than A's."""
    return {
        m: (
            (b_scale * rng.standard_normal((d, r))).astype(np.float32),
            rng.standard_normal((r, k)).astype(np.float32),
        )
        for m, (d, r, k) in SHAPES.items()
    }


def _torch(f: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {m: (torch.from_numpy(b.copy()), torch.from_numpy(a.copy())) for m, (b, a) in f.items()}


def _mask(index: torch.Tensor | None, size: int) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    mask[slice(None) if index is None else index.numpy()] = True
    return mask


def _flat(b: np.ndarray, a: np.ndarray) -> np.ndarray:
    return np.concatenate([b.reshape(-1), a.reshape(-1)])


def _one_round(method: str, *overrides: str, clients: int = 4, memory: bool = True, seed: int = 0):  # type: ignore[no-untyped-def]
    """Each client uploads through FedAvg from its local factors X_i = G + change and its memory;
    the server averages with the round pipeline's pieces (apply_payload, the scheme's aggregate,
    the server step). Returns the inputs, the sent payloads, the new memories and the new G."""
    cfg = tiny_config(f"compression.method={method}", *overrides)
    scheme = FedAvg(cfg)
    rng = np.random.default_rng(seed)
    glob = _factors(rng)
    local = [{m: (b + 3e-3 * rng.standard_normal(b.shape).astype(np.float32),
                  a + 0.3 * rng.standard_normal(a.shape).astype(np.float32)) for m, (b, a) in glob.items()}
             for _ in range(clients)]  # fmt: skip
    mem = [_factors(rng, b_scale=3e-3) if memory else None for _ in range(clients)]
    sent, state = [], []
    for i in range(clients):
        delta = {m: (local[i][m][0] - glob[m][0], local[i][m][1] - glob[m][1]) for m in glob}
        st = {"error": _torch(mem[i])} if mem[i] is not None else {}
        out, new = scheme.upload(LocalUpdate(_torch(delta), _torch(local[i]), None, None, st, 1000 + i))
        sent.append(out)
        state.append(new)
    shares = rng.uniform(1, 3, clients)
    w = shares / shares.sum()
    g_adapter = Adapter(_torch(glob), {})
    held = [apply_payload(g_adapter, s.payload, {}) for s in sent]
    weights = RoundWeights(w, shares, None, 1.0)
    update = scheme.aggregate(g_adapter, held, weights, np.full(clients, 4))
    new_global, _ = server_step(cfg.algorithm, ServerOptState(), g_adapter, update)
    return glob, local, mem, w, sent, state, new_global


@pytest.mark.parametrize("method", [*METHODS, "none"])
def test_factor_mode_averages_the_sparsified_factors_with_zero_for_unsent_entries(method):
    """Eq. (5) with the sparsified factors: G <- sum_i w_i C(X_i + e_i), zero wherever client i
    did not send; the values sent are X_i + e_i at the chosen positions; the new memory is
    X_i + e_i - C(X_i + e_i) [paper: §III-B, eqs. (5), (10)-(12)]. SOFT, FLASC and HetLoRA must
    choose the reference's positions (SOFT scoring X_i + e_i itself); RLoRA and FedLoDrop draw
    theirs, so for them the reference checks the count and shape of the draw."""
    rho = 0.4  # FedLoDrop: 54 of 136 entries, one whole component of 34
    glob, local, mem, w, sent, state, new_global = _one_round(
        method, "compression.target=factors", f"compression.keep_ratio={rho}"
    )
    for m, (d, r, k) in SHAPES.items():
        size = r * (d + k)
        budget = module_budget(rho, d, k, r)
        want = np.zeros(size, dtype=np.float64)
        for i, out in enumerate(sent):
            ub, ua = local[i][m]
            if method != "none":  # a dense upload leaves nothing behind, so it keeps no memory
                ub, ua = ub + mem[i][m][0], ua + mem[i][m][1]  # float32, as the client adds them
            u = _flat(ub, ua)
            p = out.payload[m]
            assert p.factors
            got = _mask(p.index, size)
            if method == "soft":
                assert set(np.flatnonzero(got)) == _ref_soft(ub, ua, ub, ua, budget), (m, i)
            elif method == "flasc":
                assert set(np.flatnonzero(got)) == _ref_flasc(ub, ua, budget), (m, i)
            elif method == "hetlora":
                assert set(np.flatnonzero(got)) == _ref_hetlora(d, r, k, budget), (m, i)
            elif method == "rlora":
                assert got.sum() == budget
            elif method == "fedlodrop":
                ranks = {j for j in range(r) if got[_component(d, r, k, j)].all()}
                assert got.sum() == len(ranks) * (d + k) == budget // (d + k) * (d + k)
            else:
                assert got.all()
            assert np.array_equal(p.value.numpy(), u[got])  # the values themselves, bit for bit
            want += w[i] * np.where(got, u, 0.0)
            if method != "none":
                e_b, e_a = state[i]["error"][m]
                assert np.array_equal(
                    _flat(e_b.numpy(), e_a.numpy()), np.where(got, 0.0, u).astype(np.float32)
                )
        b, a = new_global.lora[m]
        np.testing.assert_allclose(_flat(b.numpy(), a.numpy()), want, rtol=1e-5, atol=1e-7)
        if method in ("flasc", "hetlora"):  # some entries nobody sent: the global is zero there
            nobody = np.all([~_mask(s.payload[m].index, size) for s in sent], axis=0)
            assert nobody.any() and not _flat(b.numpy(), a.numpy())[nobody].any()


@pytest.mark.parametrize("method", ["soft", "flasc", "rlora"])
def test_update_mode_keeps_the_global_value_and_sends_the_change(method):
    """The default: U = (X_i - G) + e_i, the server holds G + C(U) per client; the new G is
    G + sum_i w_i C(U_i) (an unsent entry keeps the global value)."""
    rho = 0.2
    glob, local, mem, w, sent, state, new_global = _one_round(method, f"compression.keep_ratio={rho}")
    for m, (d, r, k) in SHAPES.items():
        size = r * (d + k)
        g = _flat(*glob[m]).astype(np.float64)
        want = g.copy()
        for i, out in enumerate(sent):
            ub = local[i][m][0] - glob[m][0] + mem[i][m][0]
            ua = local[i][m][1] - glob[m][1] + mem[i][m][1]
            u = _flat(ub, ua)
            got = _mask(out.payload[m].index, size)
            assert not out.payload[m].factors
            if method == "soft":  # scores from the local factors, selection on the update
                assert set(np.flatnonzero(got)) == _ref_soft(
                    ub, ua, *local[i][m], module_budget(rho, d, k, r)
                )
            if method == "flasc":
                assert set(np.flatnonzero(got)) == _ref_flasc(ub, ua, module_budget(rho, d, k, r))
            want += w[i] * np.where(got, u, 0.0)
        np.testing.assert_allclose(
            _flat(*(t.numpy() for t in new_global.lora[m])), want, rtol=1e-5, atol=1e-7
        )


@pytest.mark.parametrize(
    ("target", "score", "scored_on_u"),
    [("update", "auto", False), ("update", "compressed", True), ("update", "local", False),
     ("factors", "auto", True), ("factors", "local", False), ("factors", "compressed", True)],
)  # fmt: skip
def test_soft_scores_the_object_compression_soft_score_names(target, score, scored_on_u):
    """With error memory, U differs from the local factors in both modes, so the per-rank
    counts tell which one was scored: 'auto' scores U in factor mode (eq. (10) applies all of
    SOFT to X + e) and the local factors in update mode (as before)."""
    rho = 0.3
    glob, local, mem, w, sent, state, _ = _one_round(
        "soft",
        f"compression.target={target}",
        f"compression.soft_score={score}",
        f"compression.keep_ratio={rho}",
    )
    for i, out in enumerate(sent):
        for m, (d, r, k) in SHAPES.items():
            base = (
                local[i][m]
                if target == "factors"
                else (local[i][m][0] - glob[m][0], local[i][m][1] - glob[m][1])
            )
            ub, ua = base[0] + mem[i][m][0], base[1] + mem[i][m][1]
            sb, sa = (ub, ua) if scored_on_u else local[i][m]
            want = _ref_soft(ub, ua, sb, sa, module_budget(rho, d, k, r))
            assert set(np.flatnonzero(_mask(out.payload[m].index, r * (d + k)))) == want, (i, m)


def test_the_two_score_objects_differ_on_these_inputs():
    """The premise of the test above: scoring U or the local factors gives other counts here."""
    _, _, _, _, by_u, _, _ = _one_round(
        "soft", "compression.soft_score=compressed", "compression.keep_ratio=0.3"
    )
    _, _, _, _, by_x, _, _ = _one_round("soft", "compression.soft_score=local", "compression.keep_ratio=0.3")
    pairs = [(a.payload[m].index, b.payload[m].index) for a, b in zip(by_u, by_x) for m in SHAPES]
    assert any(not torch.equal(x, y) for x, y in pairs)  # type: ignore[arg-type]


@pytest.mark.parametrize("target", ["update", "factors"])
def test_error_feedback_for_soft_only_keeps_budget_and_bits(target):
    """``error_feedback_scope = soft_only``: SOFT keeps its memory and sends exactly what it sends
    under 'all'; every baseline keeps none, and sends as many entries, at the same bits, as with
    error feedback (the paper's §III-C adds error feedback to SOFT only)."""
    for method in METHODS:
        runs = {
            scope: _one_round(
                method,
                f"compression.target={target}",
                f"compression.error_feedback_scope={scope}",
                "compression.keep_ratio=0.15",
            )
            for scope in ("all", "soft_only")
        }
        (*_, sent_all, state_all, _), (*_, sent_soft, state_soft, _) = runs["all"], runs["soft_only"]
        for a, b in zip(sent_all, sent_soft):
            assert a.kept == b.kept and a.bits == b.bits
        assert all("error" in s for s in state_all)
        if method == "soft":
            assert all(
                torch.equal(a.payload[m].value, b.payload[m].value)
                for a, b in zip(sent_all, sent_soft)
                for m in SHAPES
            )
            assert all("error" in s for s in state_soft)
        else:
            assert all(s == {} for s in state_soft)
    # the same budget for every method, and bits from the one payload model
    for method in ("soft", "flasc", "rlora", "hetlora"):
        *_, sent, _, _ = _one_round(
            method, "compression.error_feedback_scope=soft_only", "compression.keep_ratio=0.15"
        )
        budget = {m: module_budget(0.15, d, k, r) for m, (d, r, k) in SHAPES.items()}
        assert all(s.kept == sum(budget.values()) for s in sent)
        assert all(
            s.bits
            == sum(payload_bits(budget[m], r * (d + k), 32, dense=False) for m, (d, r, k) in SHAPES.items())
            for s in sent
        )


def test_fedlodrop_rounds_to_the_nearest_whole_component_on_request():
    """'floor' (default) keeps floor(K_m / c) components; 'nearest' K_m / c rounded to the
    nearest whole number, halves up; the payload model and the compressor agree."""
    for rho in (0.05, 0.1, 0.125, 0.2, 0.3, 0.37, 0.5, 0.62, 0.9, 1.0):
        for rounding in ("floor", "nearest"):
            *_, sent, _, _ = _one_round(
                "fedlodrop", f"compression.keep_ratio={rho}", f"compression.fedlodrop_rounding={rounding}",
                "compression.allow_empty_upload=true", clients=2,
            )  # fmt: skip
            cfg = tiny_config("compression.method=fedlodrop", f"compression.keep_ratio={rho}",
                              f"compression.fedlodrop_rounding={rounding}")  # fmt: skip
            model = upload_model(cfg.compression)
            for m, (d, r, k) in SHAPES.items():
                c = d + k
                exact = module_budget(rho, d, k, r) / c
                comps = math.floor(exact) if rounding == "floor" else min(r, math.floor(exact + 0.5))
                for s in sent:
                    assert len(s.payload[m].index) == comps * c, (rho, rounding, m)  # type: ignore[arg-type]
                assert model(d, k, r, r, rho, 32) == (
                    comps * c,
                    payload_bits(comps * c, r * c, 32, dense=False),
                )
    # the rank-8 case of the issue: 0.8 of a component, 0 by floor and 1 by nearest
    assert (
        upload_model(tiny_config("compression.method=fedlodrop").compression)(384, 384, 8, 8, 0.1, 32)[0] == 0
    )
    nearest = tiny_config("compression.method=fedlodrop", "compression.fedlodrop_rounding=nearest")
    assert upload_model(nearest.compression)(384, 384, 8, 8, 0.1, 32)[0] == 768


def test_the_empty_upload_check_follows_the_rounding():
    """MiniLM's shapes at r = 8: rho = 0.1 is 0.8 of a component, refused by floor and sent by
    nearest; nearest refuses below half a component and names the smallest ratio, 0.0625
    (K_m = 384 of 768: half, rounded up)."""
    dims = [(384, 384)]
    floor = tiny_config("compression.method=fedlodrop", "model.lora_rank=8")
    with pytest.raises(ConfigError, match="less than one whole rank component.*is 0.125"):
        check_upload_budget(floor, dims)
    nearest = tiny_config(
        "compression.method=fedlodrop", "model.lora_rank=8", "compression.fedlodrop_rounding=nearest"
    )
    check_upload_budget(nearest, dims)  # sends one component
    low = tiny_config(
        "compression.method=fedlodrop",
        "model.lora_rank=8",
        "compression.fedlodrop_rounding=nearest",
        "compression.keep_ratio=0.06",
    )
    with pytest.raises(ConfigError, match="less than half a rank component.*is 0.0625"):
        check_upload_budget(low, dims)


def test_factor_mode_is_refused_where_nothing_is_sparsified():
    with pytest.raises(ConfigError, match="'compression.target' = 'factors'.*algorithm.kind='fedavg' only"):
        tiny_config(
            "compression.target=factors", "algorithm.kind=fslora", "model.lora_rank=8", "model.lora_alpha=16"
        )
    with pytest.raises(ConfigError, match="'compression.error_feedback_scope' = 'soft'"):
        tiny_config("compression.error_feedback_scope=soft")
    with pytest.raises(ConfigError, match="'compression.fedlodrop_rounding' = 'ceil'"):
        tiny_config("compression.fedlodrop_rounding=ceil")


class _Recording(SerialBackend):
    """The serial backend, keeping each round's replies."""

    def train(self, global_adapter, tasks):  # type: ignore[no-untyped-def]
        self.replies = super().train(global_adapter, tasks)
        return self.replies


def test_a_factor_mode_round_is_eq_5_of_the_sparsified_factors():
    """A whole run's round: the new global factors are sum_i p_i C(U_i) / sum_j p_j over the
    round's clients, zero where no client sent (computed here from the replies and the clients'
    example counts), and the clients keep their memory for next time."""
    cfg = tiny_config("compression.method=flasc", "compression.target=factors", "compression.keep_ratio=0.1",
                      "federation.rounds=2")  # fmt: skip
    backend = _Recording(cfg)
    run = FederatedRun(cfg, backend, None)
    for _ in range(2):
        run.run_round()
        n = np.array([r.examples for r in backend.replies], dtype=np.float64)
        w = n / n.sum()
        for m, (b, a) in run.global_adapter.lora.items():
            size = b.numel() + a.numel()
            want = np.zeros(size)
            for wi, r in zip(w, backend.replies):
                want[r.payload[m].index.numpy()] += wi * r.payload[m].value.numpy()  # type: ignore[union-attr]
            got = torch.cat([b.reshape(-1), a.reshape(-1)]).numpy()
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8)
            assert (got == 0).mean() > 0.5  # at keep 0.1, most entries nobody sent are zero
    assert run.client_state and all("error" in s for s in run.client_state.values())


@pytest.mark.parametrize(
    "overrides",
    [
        ("compression.method=soft", "compression.keep_ratio=0.3"),
        ("compression.method=flasc", "compression.keep_ratio=0.3", "model.train_head=false"),
        (
            "compression.method=fedlodrop",
            "compression.keep_ratio=0.3",
            "compression.fedlodrop_rounding=nearest",
        ),
    ],
    ids=["soft", "flasc-head-frozen", "fedlodrop-nearest"],
)
def test_many_clients_per_pass_upload_the_same_factors(overrides):
    """docs/algorithms.md §12 in factor mode: each client's upload and error memory, trained in
    passes of 2, 3 and 4 clients, equal the one-client loop's within the batched tolerances; two
    rounds, so the second starts from the first's memory of model values."""
    worst = compare_passes(tiny_config(*overrides, "compression.target=factors"), rounds=2)
    assert worst["loss"] < RTOL and worst["upload"] < RTOL and worst["state"] < STATE_RTOL, worst
