"""PanGu-Sigma-style language model: embeddings -> dense/sparse blocks -> top query layer -> LayerNorm -> tied head.

The final LayerNorm sits after the (pre-LN) query layer, as in other pre-LN transformers; with it before the query
layer, as in PanGu-alpha's code, the unnormalised query-layer output fed the tied head and training diverged here.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, initializer
from mindspore.ops.auto_generate import MatMulExt

from locmoe_ms.config import Config
from locmoe_ms.model.blocks import DenseBlock, SparseBlock
from locmoe_ms.layers import DTYPES, matmul_in
from locmoe_ms.model.loss import CrossEntropy
from locmoe_ms.parallel.placement import Placement
from locmoe_ms.parallel.topology import Topology


class PanGuSigmaLM(nn.Cell):
    """construct(input_ids [B, S] int32, domain_ids [B] int32) ->
    (logits [B*S, V], aux_loss, locality_loss, tokens_per_group [L, G, E], dropped_share [L], local_share [L],
    bytes_sent [L, 3]) with L the number of sparse blocks. `batch_size` is the sequences this process computes
    per step; it fixes the MoE capacity."""

    def __init__(self, cfg: Config, placement: Placement, batch_size: int):
        super().__init__()
        m = cfg.model
        tokens = batch_size * m.seq_length
        self.hidden = m.hidden_size
        self.experts = cfg.moe_config.expert_num
        self.groups = placement.topology.token_groups
        self.word_embedding = Parameter(initializer(Normal(m.init_std), (m.vocab_size, m.hidden_size)),
                                        name="word_embedding")
        self.position_embedding = Parameter(initializer(Normal(m.init_std), (m.seq_length, m.hidden_size)),
                                            name="position_embedding")
        self.top_query_embedding = Parameter(initializer(Normal(m.init_std), (m.seq_length, m.hidden_size)),
                                             name="top_query_embedding")
        self.sparse_flags = tuple(i in m.sparse_layers for i in range(m.num_layers))
        self.blocks = nn.CellList([SparseBlock(cfg, placement, tokens) if sparse else DenseBlock(cfg)
                                   for sparse in self.sparse_flags])
        self.final_norm = nn.LayerNorm((m.hidden_size,), epsilon=m.layernorm_eps)
        self.query_layer = DenseBlock(cfg)
        self.num_sparse = len(m.sparse_layers)
        self.dtype = DTYPES[m.compute_dtype]
        self.logits_matmul = MatMulExt()  # ops.matmul's primitive, pinned by auto-parallel (apply.PRIMITIVE_OPS)
        self.embedding_gather = ops.Gather()  # ops.gather's, owned: auto mode splits the vocabulary over mp
        if m.recompute:  # activations of each block are recomputed in the backward pass instead of kept
            for block in self.blocks:
                block.recompute()
            self.query_layer.recompute()

    def construct(self, input_ids: Tensor, domain_ids: Tensor):
        b, s = input_ids.shape
        x = self.embedding_gather(self.word_embedding, input_ids, 0) + self.position_embedding[:s]
        token_ids = input_ids.reshape(-1)
        token_domains = ops.broadcast_to(domain_ids.reshape(b, 1), (b, s)).reshape(-1)
        aux = ops.zeros((), ms.float32)
        loc = ops.zeros((), ms.float32)
        loads, dropped, local, traffic = (), (), (), ()
        for i in range(len(self.sparse_flags)):
            if self.sparse_flags[i]:
                x, layer_aux, layer_loc, layer_load, layer_dropped, layer_local, layer_bytes = \
                    self.blocks[i](x, token_ids, token_domains)
                aux = aux + layer_aux
                loc = loc + layer_loc
                loads += (layer_load,)
                dropped += (layer_dropped,)
                local += (layer_local,)
                traffic += (layer_bytes,)
            else:
                x = self.blocks[i](x)
        x = self.final_norm(self.query_layer(x, self.top_query_embedding[:s]))
        logits = matmul_in(self.dtype, x.reshape(b * s, self.hidden), self.word_embedding.T,
                           self.logits_matmul)  # float32 for the loss
        if self.num_sparse == 0:
            return logits, aux, loc, ops.zeros((0, self.groups, self.experts), ms.float32), \
                ops.zeros((0,), ms.float32), ops.zeros((0,), ms.float32), ops.zeros((0, 3), ms.float32)
        return logits, aux, loc, ops.stack(loads), ops.stack(dropped), ops.stack(local), ops.stack(traffic)


class LanguageModelLoss(nn.Cell):
    """construct(tokens [B, S+1], domain_ids [B]) -> (loss = lm + aux + locality, lm_loss, aux_loss, locality_loss,
    tokens_per_expert, dropped_share, local_share, bytes_sent).

    Every value is that of the global batch: under msrun each rank holds its rows and the LM and locality losses
    are averaged over the ranks holding distinct tokens, so all ranks return the same loss (its gradient summed
    over ranks is world_size times the true one; the train step divides)."""

    # how each output combines over the micro-batches of a step (train.micro_batches): means, except the token
    # counts and the bytes, which add up
    MICRO_BATCH_SUMS = (False, False, False, False, True, False, False, True)

    def __init__(self, network: PanGuSigmaLM, placement: Placement):
        super().__init__()
        self.network = network
        self.cross_entropy = CrossEntropy()
        self.group_mean = placement.group_mean()

    def construct(self, tokens: Tensor, domain_ids: Tensor):
        logits, aux, loc, load, dropped, local, traffic = self.network(tokens[:, :-1], domain_ids)
        lm = self.group_mean(self.cross_entropy(logits, tokens[:, 1:].reshape(-1)))
        loc = self.group_mean(loc)
        return lm + aux + loc, lm, aux, loc, load, dropped, local, traffic


def build_model(cfg: Config, batch_size: int | None = None, placement: Placement | None = None) -> LanguageModelLoss:
    """The loss network for a config: one process emulating parallel_config's cluster, or one rank of it.

    `batch_size` is the global batch one call computes (default: the micro-batch, train.batch_size /
    train.micro_batches); a rank computes its share of it.
    """
    placement = placement or Placement(Topology.from_config(cfg))
    batch = batch_size or cfg.micro_batch_size
    local_batch = round(batch * placement.batch_share)
    return LanguageModelLoss(PanGuSigmaLM(cfg, placement, local_batch), placement)


def model_shapes(cfg: Config) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    """(name -> full shape of every parameter, names of the trainable ones) of the one-process model, built without
    allocating its initial values (MindSpore's no_init_parameters): a PanGu-Sigma config's 37.7B parameters would
    take 151 GB."""
    from mindspore.nn.utils import no_init_parameters

    with no_init_parameters():
        net = build_model(cfg)
    return ({p.name: tuple(p.shape) for p in net.get_parameters()}, {p.name for p in net.trainable_params()})
