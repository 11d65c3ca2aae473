"""Issue 34's bit-exactness check: 26 configurations (each choice alone, GPT-2's and
nanochat's recipes, GQA with value embeddings, biases, layernorm) x float32/64 x AdamW/Muon x
dropout through the tensorgpt.py and microgpt.py of SRC_DIR: the first gradient of every
weight, the losses of a few steps, a sample, the KV cache's logits and a windows step, into an
npz; with `part1`, tensorgpt's Part I alone. Run it on the code before (e0f114a) and after,
then compare.py BEFORE.npz AFTER.npz counts the arrays that differ in any bit (0 of 2816, and
0 of 2766 for Part I alone, on the machine of README.md). It takes either code's Muon (a
state_dict before, the model after) and either name of the weights weight decay leaves alone.
usage: python dump.py SRC_DIR OUT.npz [part1]"""
import sys, random, importlib.util, numpy as np
src, out = sys.argv[1], sys.argv[2]
part1 = len(sys.argv) > 3
sys.path.insert(0, src)
if part1:
    text = open(f'{src}/tensorgpt.py').read()
    text = text[:text.index('# Part II: speed')].rsplit('# ====', 1)[0]
    tg = type(sys)('tg1'); exec(compile(text, 'tg1', 'exec'), tg.__dict__)
else:
    import tensorgpt as tg
import microgpt as mg

CHOICES = dict(
    ref={}, tie=dict(tie_lm_head=True), noin=dict(input_rmsnorm=False), relu2=dict(activation='relu2'),
    gelu=dict(activation='gelu'), fnorm=dict(final_norm=True), ln=dict(norm='layernorm'),
    lnf=dict(norm='layernorm', final_norm=True, input_rmsnorm=False, bias=True),
    eps=dict(norm_eps=2.0 ** -23), rope=dict(position='rope'), rope_b=dict(position='rope', rope_base=100000.0),
    nopos=dict(position='none'), qkn=dict(qk_norm=True), qks=dict(qk_scale=1.2), qkns=dict(qk_norm=True, qk_scale=1.2),
    cap=dict(softcap=15.0), bias=dict(bias=True), gqa=dict(n_kv_head=1), gqa2=dict(n_kv_head=2, bias=True),
    ve=dict(value_embeddings=True), ve_gqa=dict(value_embeddings=True, n_kv_head=2), rs=dict(residual_scalars=True),
    gpt2=dict(tie_lm_head=True, input_rmsnorm=False, activation='gelu', final_norm=True, norm='layernorm', bias=True, init='gpt2'),
    nano=dict(activation='relu2', final_norm=True, norm_eps=2.0 ** -23, position='rope', qk_norm=True, qk_scale=1.2,
              rope_base=100000.0, softcap=15.0, value_embeddings=True, residual_scalars=True, init='nanochat'),
    nano_gqa=dict(activation='relu2', final_norm=True, position='rope', qk_norm=True, qk_scale=1.2, softcap=15.0,
                  value_embeddings=True, residual_scalars=True, init='nanochat', n_kv_head=2, bias=True, norm='layernorm'),
)
docs = [[5, 0, 1, 2, 3, 5], [5, 2, 2, 5], [5, 4, 3, 2, 1, 0, 1, 5], [5, 1, 5]]
res = {}
for dtype in ('float32', 'float64'):
    for name, ch in CHOICES.items():
        for opt in ('adamw', 'muon'):
            if opt == 'muon' and name not in ('ref', 'nano', 'nano_gqa', 'gqa2', 'ln'):
                continue
            for drop in ((0.0, 0.3) if dtype == 'float32' and opt == 'adamw' else (0.0,)):
                c = tg.GPTConfig(6, n_embd=16, n_head=4, n_layer=3, block_size=8, dtype=dtype, dropout=drop, **ch)
                m = tg.GPT(c, random.Random(1))
                key = f'{dtype}-{name}-{opt}-{drop}'
                if opt == 'muon':
                    adam = tg.Muon(m if hasattr(m, 'table') else m.state_dict, 0.01, 0.02, 0.1)
                else:
                    adam = tg.Adam(m.params, weight_decay=0.1, no_decay=m.no_decay if hasattr(m, 'no_decay') else m.norm_weights)
                if adam is None:
                    import importlib; adam = sys.modules['models_hook'].optimizer(tg, m, opt)
                loss = m.loss(docs, training=True); loss.backward()
                for n, t in m.state_dict.items():
                    res[f'{key}-grad-{n}'] = t.grad.copy()
                adam.step(0.01, 1.0)
                losses = [v for _, v, _ in tg.train(m, docs, 4, batch_size=3, adam=adam, start_step=1,
                          schedule=lambda s: 0.01 * (1 - s / 4), grad_clip=0.5)]
                res[f'{key}-losses'] = np.array(losses)
                res[f'{key}-sample'] = np.array(tg.sample(m, random.Random(3), 5, 1.0))
                cache = m.kv_cache(2)
                res[f'{key}-next'] = m.next_logits(np.array([5, 1]), 0, cache)
                res[f'{key}-win'] = np.array([tg.train(m, lambda s: np.array([[0, 1, 2, 3, 4, 0, 1, 2, 3]] * 2), 1).__next__()[1]])
                if dtype == 'float64' and opt == 'adamw' and drop == 0 and not part1:
                    mc = dict(ch); mc.pop('dtype', None)
                    sm = mg.GPT(mg.GPTConfig(6, n_embd=16, n_head=4, n_layer=3, block_size=8, **mc), random.Random(1))
                    res[f'scalar-{name}-losses'] = np.array([v for _, v, _ in mg.train(sm, docs, 3)])
                    res[f'scalar-{name}-sample'] = np.array(mg.sample(sm, random.Random(3), 5, 1.0))
np.savez(out, **res)
print(len(res), 'arrays')
