"""The Parquet schemas of a run's logs, declared once. They never change while a run goes on.

rounds.parquet: one row per finished round. clients.parquet: one row per participating client
per round (participation is a row's presence). profile.parquet: one row per client, written once
at the start: its drawn resources and the run's q_i and s_i. Units are in the column names or the
comments.
"""

import pyarrow as pa

# every table's first column: which run a row belongs to (log.run_id, or the run folder's name), so
# that the logs of a sweep read as one table
RUN_ID = pa.field("run_id", pa.string())

ROUNDS_SCHEMA = pa.schema(
    [
        RUN_ID,
        pa.field("round", pa.int32(), nullable=False),  # 1-based
        pa.field("sampled", pa.int32(), nullable=False),  # clients that took part
        pa.field("examples", pa.int64(), nullable=False),  # training examples they hold
        pa.field("train_loss", pa.float64()),  # data-weighted mean of local losses
        pa.field("test_accuracy", pa.float64()),  # null unless evaluated this round
        pa.field("test_loss", pa.float64()),
        pa.field("covariance", pa.float64()),  # seed (20)-(22), summed over modules
        pa.field("uplink_bits", pa.int64()),  # sum over sampled clients
        pa.field("kept_entries", pa.int64()),  # LoRA entries sent, summed over clients
        pa.field("keep_ratio", pa.float64()),  # rho (1 for an uncompressed upload)
        pa.field("orth_error_a", pa.float64()),  # ||offdiag(A A^T)|| / ||diag|| of the global A
        pa.field("orth_error_b", pa.float64()),  # same for B^T B; null while B is all zero
        pa.field("lora_rank", pa.int32()),
        pa.field("queue", pa.float64()),  # virtual queue Q(t) the round's choice was made with, in s
        pa.field("bound", pa.float64()),  # Phi(r, rho) of the chosen rho
        pa.field("upload_delay_s", pa.float64()),  # slowest upload: what the delay budget limits
        pa.field("round_delay_s", pa.float64()),  # slowest compute + upload: the clock's step
        pa.field("sim_time_s", pa.float64()),  # simulated clock: sum of round_delay_s
        pa.field("solve_seconds", pa.float64()),  # the controller's solve, wall clock
        pa.field("round_seconds", pa.float64()),  # wall clock of this round at the driver
        pa.field("client_seconds", pa.float64()),  # summed local compute of the clients
        pa.field("elapsed_seconds", pa.float64()),  # wall clock since the run started
        # docs/algorithms.md §7 at the run's q and s (FSLoRA payload model): rounds factor x E[round time]
        pa.field("objective", pa.float64()),
        pa.field("expected_round_s", pa.float64()),  # E[max_i T_i] of that objective, in s
        pa.field("rejected", pa.int32()),  # uploads left out for a NaN or inf (docs/algorithms.md §9)
        pa.field("retries", pa.int32()),  # clients trained again after their worker died
        pa.field("diverged", pa.bool_()),  # non-finite global factors or test loss (on_divergence=flag)
        # client-level DP (docs/algorithms.md §14): epsilon spent after this round at privacy.delta,
        # and the uploads clipped to privacy.clip_norm (central); null without privacy
        pa.field("dp_epsilon", pa.float64()),
        pa.field("dp_clipped", pa.int32()),
        # causal LMs (docs/algorithms.md §13): exp(test_loss), the token-weighted perplexity of the
        # held-out responses; and the share of generated answers equal to their reference
        pa.field("test_perplexity", pa.float64()),
        pa.field("exact_match", pa.float64()),
    ]
)

CLIENTS_SCHEMA = pa.schema(
    [
        RUN_ID,
        pa.field("round", pa.int32(), nullable=False),
        pa.field("client_id", pa.int32(), nullable=False),
        pa.field("examples", pa.int64(), nullable=False),
        pa.field("weight", pa.float64()),  # aggregation weight: p_i / sum_S p (uniform) or p_i / q_i
        pa.field("steps", pa.int32()),
        pa.field("local_loss", pa.float64()),  # mean training loss over the local steps
        pa.field("bits_sent", pa.int64()),  # sparse LoRA update (values + positions) + dense head
        pa.field("kept_entries", pa.int64()),  # LoRA entries sent
        pa.field("distortion", pa.float64()),  # ||U - C(U)||^2 / ||U||^2 of the compensated update
        pa.field("actor_id", pa.string()),  # which client actor trained it ('serial' if none)
        pa.field("train_seconds", pa.float64()),
        pa.field("channel_gain", pa.float64()),  # h_i = |g_i|^2 10^(-PL_i/10) this round
        pa.field("snr_db", pa.float64()),  # P h_i / (N0 Bw), in dB
        pa.field("bandwidth_share", pa.float64()),  # b_i
        pa.field("upload_s", pa.float64()),  # bits_sent / (b_i Bw log2(1 + SNR)), simulated
        pa.field("compute_s", pa.float64()),  # samples / speed x (omega + (1-omega) s_i); 0 if not modelled
        pa.field("sample_prob", pa.float64()),  # q_i (K / N under uniform sampling)
        pa.field("components", pa.int32()),  # rank components trained and sent: k_i, r_i or r
        pa.field("rejected", pa.bool_()),  # its upload held a NaN or inf and was left out
        pa.field("attempt", pa.int32()),  # 1; 2 and up when its worker died and it was trained again
    ]
)

PROFILE_SCHEMA = pa.schema(
    [
        RUN_ID,
        pa.field("client_id", pa.int32(), nullable=False),
        pa.field("examples", pa.int64(), nullable=False),
        pa.field("data_share", pa.float64()),  # p_i
        pa.field("distance_m", pa.float64()),
        pa.field("tx_power_w", pa.float64()),
        pa.field("mean_snr_db", pa.float64()),  # with E|g|^2 = 1
        pa.field("samples_per_s", pa.float64()),  # device speed (inf: compute not modelled)
        pa.field("compute_full_s", pa.float64()),  # tau_i: one round's compute at s = 1
        pa.field("upload_full_s", pa.float64()),  # u_i: full upload with a Bw / K share at mean SNR
        pa.field("sample_prob", pa.float64()),  # q_i
        pa.field("sketch_ratio", pa.float64()),  # s_i = components / r
        pa.field("components", pa.int32()),
    ]
)
