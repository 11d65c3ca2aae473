"""The recipes against their authors' own code, in PyTorch, float64 (PyTorch is the yardstick,
never a dependency): the same weights give the same logits, and the optimizer the same step.

    python check.py NANOGPT_GIT NANOCHAT_GIT

with a Python that has torch, numpy and numba, and the two repositories as git directories
(the library's `fetch`: karpathy/nanoGPT at 3adf61e, karpathy/nanochat at 92d63d4). Their
files are read from git, never copied into this project.

- gpt2: nanoGPT's model.py (its GPT, bias=True), our weights loaded into it. nanoGPT's MLP
  uses nn.GELU() (the exact erf form); GPT-2 used the tanh form, as ours: the check swaps in
  nn.GELU(approximate='tanh'), and also reports the difference the erf form makes.
- nanochat: its gpt.py's GPT (GQA: n_kv_head 2 of 4 heads; value embeddings; residual and x0
  scalars; softcap 15; q, k times 1.2; rope base 100000), with its smear and backout turned
  off (their scalars 0: ours has neither), its rotary tables made in float64 (it makes them
  in float32) and its logits not cast to float32 before the softcap; its norms' eps is then
  float64's, so ours runs --norm-eps 2^-52 here.
- Muon: optim.py's muon_step_fused (eager; the norms it takes in float32 taken in float64),
  three steps of a tall, a wide and a square matrix, against ours; and setup_optimizer's
  AdamW groups (with base_train.py's learning rates).
"""
import os
import random
import subprocess
import sys
import tempfile

os.environ['TORCHDYNAMO_DISABLE'] = '1'  # torch.compile'd functions run as written
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
sys.path.insert(0, ROOT)
import tensorgpt as tg  # noqa: E402
from microgpt_lab import settings  # noqa: E402

torch.set_default_dtype(torch.float64)


def checkout(git, paths, into):
    """The files at `paths` of the git directory's HEAD, written under `into`; its commit."""
    for path in paths:
        os.makedirs(os.path.join(into, os.path.dirname(path)), exist_ok=True)
        with open(os.path.join(into, path), 'wb') as f:
            f.write(subprocess.run(['git', '--git-dir', git, 'show', f'HEAD:{path}'], check=True,
                                   capture_output=True).stdout)
    return subprocess.run(['git', '--git-dir', git, 'rev-parse', '--short', 'HEAD'], check=True,
                          capture_output=True, text=True).stdout.strip()


def ours(recipe, **more):
    c = dict(settings.RECIPES[recipe], **more)
    c = {k: v for k, v in c.items() if k != 'optimizer'}
    return tg.GPT(tg.GPTConfig(V, n_embd=C, n_head=H, n_layer=L, block_size=T, dtype='float64', **c),
                  random.Random(1))


def our_logits(model, idx):
    B, T = idx.shape
    return model.forward(idx.ravel(), np.tile(np.arange(T), B), np.arange(0, B * T + 1, T)).data.reshape(B, T, -1)


t = lambda a: torch.tensor(np.asarray(a, dtype=np.float64))
V, C, H, L, T = 11, 32, 4, 3, 8  # (nanochat's smear reads 24 channels)
idx = np.random.default_rng(0).integers(0, V, (3, T))
report = []
nanogpt_git, nanochat_git = sys.argv[1:3]
with tempfile.TemporaryDirectory() as tmp:
    # GPT-2's blocks: nanoGPT's model.py
    commit = checkout(nanogpt_git, ['model.py'], os.path.join(tmp, 'nanogpt'))
    sys.path.insert(0, os.path.join(tmp, 'nanogpt'))
    import model as nanogpt
    g = nanogpt.GPT(nanogpt.GPTConfig(block_size=T, vocab_size=V, n_layer=L, n_head=H, n_embd=C,
                                      dropout=0.0, bias=True))
    m = ours('gpt2', init='microgpt')  # random gains and biases below, so that all of them count
    w = {k: v.data + (np.random.default_rng(1).normal(0, 0.1, v.data.shape) if k.endswith(('_gain', '_bias')) else 0)
         for k, v in m.state_dict.items()}
    for k, v in w.items():
        m.state_dict[k].data[...] = v
    sd = {'transformer.wte.weight': w['wte'], 'transformer.wpe.weight': w['wpe'],
          'transformer.ln_f.weight': w['final_norm_gain'][0], 'transformer.ln_f.bias': w['final_norm_bias'][0]}
    for i in range(L):
        p, q = f'transformer.h.{i}.', f'layer{i}.'
        sd.update({p + 'ln_1.weight': w[q + 'attn_norm_gain'][0], p + 'ln_1.bias': w[q + 'attn_norm_bias'][0],
                   p + 'ln_2.weight': w[q + 'mlp_norm_gain'][0], p + 'ln_2.bias': w[q + 'mlp_norm_bias'][0],
                   p + 'attn.c_attn.weight': np.concatenate([w[q + f'attn_w{n}'] for n in 'qkv']),
                   p + 'attn.c_attn.bias': np.concatenate([w[q + f'attn_w{n}_bias'][0] for n in 'qkv']),
                   p + 'attn.c_proj.weight': w[q + 'attn_wo'], p + 'attn.c_proj.bias': w[q + 'attn_wo_bias'][0],
                   p + 'mlp.c_fc.weight': w[q + 'mlp_fc1'], p + 'mlp.c_fc.bias': w[q + 'mlp_fc1_bias'][0],
                   p + 'mlp.c_proj.weight': w[q + 'mlp_fc2'], p + 'mlp.c_proj.bias': w[q + 'mlp_fc2_bias'][0]})
    with torch.no_grad():
        for k, v in sd.items():
            g.get_parameter(k).copy_(t(v))
        erf, _ = g(torch.tensor(idx), targets=torch.tensor(idx))
        for block in g.transformer.h:
            block.mlp.gelu = torch.nn.GELU(approximate='tanh')
        theirs, _ = g(torch.tensor(idx), targets=torch.tensor(idx))
    diff = np.abs(theirs.numpy() - our_logits(m, idx)).max()
    report.append(f"gpt2 vs nanoGPT {commit} model.py (GELU's tanh form), {L} layers: max |logit difference| "
                  f"{diff:.1e} (with nanoGPT's own erf GELU: {np.abs(erf.numpy() - our_logits(m, idx)).max():.1e})")
    assert diff < 1e-12

    # nanochat's blocks: its gpt.py
    commit = checkout(nanochat_git, [f'nanochat/{f}.py' for f in ('__init__', 'common', 'optim', 'flash_attention',
                                                                   'gpt')], os.path.join(tmp, 'nanochat'))
    sys.path.insert(0, os.path.join(tmp, 'nanochat'))
    import nanochat.common
    nanochat.common.COMPUTE_DTYPE = torch.float64
    import nanochat.gpt as nc
    import nanochat.optim as nco
    K = 2
    n = nc.GPT(nc.GPTConfig(sequence_len=T, vocab_size=V, n_layer=L, n_head=H, n_kv_head=K, n_embd=C,
                            window_pattern='L'))
    n.init_weights()
    m = ours('nanochat', n_kv_head=K, norm_eps=float(np.finfo(np.float64).eps), init='microgpt')
    w = {k: v.data for k, v in m.state_dict.items()}
    with torch.no_grad():
        n.transformer.wte.weight[:V] = t(w['wte'])
        n.lm_head.weight[:V] = t(w['lm_head'])
        n.resid_lambdas.copy_(t(w['resid_lambdas'][0]))
        n.x0_lambdas.copy_(t(w['x0_lambdas'][0]))
        n.smear_lambda.zero_()
        n.backout_lambda.zero_()
        for i, block in enumerate(n.transformer.h):
            q = f'layer{i}.'
            for mod, name in ((block.attn.c_q, 'attn_wq'), (block.attn.c_k, 'attn_wk'), (block.attn.c_v, 'attn_wv'),
                              (block.attn.c_proj, 'attn_wo'), (block.mlp.c_fc, 'mlp_fc1'), (block.mlp.c_proj, 'mlp_fc2')):
                mod.weight.copy_(t(w[q + name]))
            if str(i) in n.value_embeds:
                n.value_embeds[str(i)].weight[:V] = t(w[q + 'value_embed'])
                block.attn.ve_gate.weight.copy_(t(w[q + 've_gate']))
            else:
                assert q + 'value_embed' not in w and block.attn.ve_gate is None
        D = C // H  # its rotary tables, as it makes them, in float64
        freqs = torch.outer(torch.arange(n.rotary_seq_len, dtype=torch.float64),
                            1.0 / (100000 ** (torch.arange(0, D, 2, dtype=torch.float64) / D)))
        n.cos, n.sin = freqs.cos()[None, :, None, :], freqs.sin()[None, :, None, :]
        to_float32, torch.Tensor.float = torch.Tensor.float, lambda self: self  # its softcap in float64 too
        try:
            theirs = n(torch.tensor(idx))
        finally:
            torch.Tensor.float = to_float32
    diff = np.abs(theirs.numpy()[..., :V] - our_logits(m, idx)).max()
    report.append(f"nanochat vs nanochat {commit} gpt.py, {L} layers, n_kv_head {K} of {H}, value embeddings "
                  f"at layers {sorted(map(int, n.value_embeds))}: max |logit difference| {diff:.1e}")
    assert diff < 1e-12

    # Muon's step, and the AdamW groups
    rng = np.random.default_rng(2)
    for rows, cols in ((12, 5), (5, 12), (8, 8)):
        p = rng.standard_normal((rows, cols))
        P, M = t(p)[None].clone(), torch.zeros(1, rows, cols)
        S = torch.zeros((1, rows, 1) if rows >= cols else (1, 1, cols))
        m_, v_ = np.zeros((rows, cols)), np.zeros((rows, cols))
        for step in range(3):
            g_ = rng.standard_normal((rows, cols))
            lr = 0.02 * max(1.0, rows / cols) ** 0.5  # as MuonAdamW._compute_muon scales it
            to_float32, torch.Tensor.float = torch.Tensor.float, lambda self: self  # its norms in float64
            try:
                nco.muon_step_fused(t(g_)[None].clone(), P, M, S, torch.tensor(0.95), torch.tensor(lr),
                                    torch.tensor(0.2), torch.tensor(0.9), 5, -1 if rows >= cols else -2)
            finally:
                torch.Tensor.float = to_float32
            tg.muon_update(p, g_.copy(), m_, v_, 0.02, 0.95, 0.9, 0.2)
        diff = np.abs(P[0].numpy() - p).max()
        report.append(f"Muon, a {rows}x{cols} matrix, 3 steps vs nanochat {commit} optim.py's muon_step_fused: "
                      f"max |weight difference| {diff:.1e}")
        assert diff < 1e-12
    groups = n.setup_optimizer(unembedding_lr=0.008, embedding_lr=0.3, matrix_lr=0.02, weight_decay=0.2,
                               scalar_lr=0.5).param_groups  # base_train.py's learning rates
    mine = tg.Muon(tg.GPT(tg.GPTConfig(V, n_embd=C, n_head=H, n_layer=L, value_embeddings=True,
                                       residual_scalars=True), random.Random(0)).state_dict, peak=1.0)
    theirs = sorted((round(gr['lr'], 12), tuple(gr['betas']), gr['eps'], gr['weight_decay'])
                    for gr in groups if gr['kind'] == 'adamw' and gr['lr'] != 0.2)  # (0.2: its smear group)
    ours_ = sorted((round(lr, 12), (a.beta1, a.beta2), a.eps, a.weight_decay) for lr, a in mine.adamw
                   if lr != 0.2)
    report.append(f"AdamW groups (lr, betas, eps, decay) vs nanochat's setup_optimizer: "
                  f"{'the same' if theirs == ours_ else 'DIFFERENT'}: {ours_}")
    assert theirs == ours_
print('\n'.join(report))
