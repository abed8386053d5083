"""Many clients in one forward and backward pass on a single frozen base [ours;
docs/algorithms.md §12].

The base model is frozen and shared, so C clients' local steps can run as one: their batches are
concatenated along the batch dimension (each client a "slot" of equal height), every LoRA layer
and the head apply each slot's own factors with one stacked matmul, the loss is the sum of the
per-client mean losses (so each client's gradient is its own), and AdamW keeps its state and step
count per client. A client that has run out of batches leaves the pass. Dropout draws each
client's masks from its own stream, the same stream the one-client loop uses.

- ``layers``: the stacked factors and the LoRA layers and head that apply them;
- ``streams``: each client's dropout stream inside a shared forward;
- ``optim``: AdamW over stacked per-client parameters;
- ``loop``: the local training of a pass of clients.
"""
